"""A melange JSON export read as its text arrives, each entity with the line it starts on
(the whole document, or its NDJSON form: an entity a line, as GET /v1/export sends it).

`json.loads` needs the whole text and makes the whole document: a million addresses
are 40 MB of text and ten times that of objects. Here only the document's frame is
walked (the top object, its sections' arrays, a block's `addresses` array), and each
entity and address is decoded alone by the standard library's decoder
(`raw_decode`), so one of them is in memory at a time. Streaming parsers (ijson)
report no positions, and every problem an import finds is named by its line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from melange.errors import InvalidInput
from melange.transfer_format import FORMAT, SECTIONS, VERSION

KIND_OF_SECTION = dict(
    zip(SECTIONS, ("policy", "mac_range", "block", "interface", "nat_mapping"), strict=True)
)
_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
# A value the decoder found cut short within this many characters of the text read so
# far may go on in the next piece: read more and decode it again.
_CUT = 16
# No entity or address is near this long: one that is would be held whole.
MAX_VALUE = 16 << 20


class Cursor:
    """The text read so far (from the last value on), and the line of any position."""

    def __init__(self, pieces: Iterable[str]) -> None:
        self._pieces = iter(pieces)
        self.text = ""
        self.pos = 0
        self._line = 1  # the line of self._counted
        self._counted = 0
        self._ended = False

    def line(self) -> int:
        """The line `pos` is on (counted on from the last call: linear in the text)."""
        self._line += self.text.count("\n", self._counted, self.pos)
        self._counted = self.pos
        return self._line

    def _more(self, double: bool = False) -> bool:
        """Append the next piece of text, dropping what was read; False at the end.
        `double`: pieces until the unread text is twice as long (a value cut short is
        decoded again, so a long one read in small pieces costs linear time, not more)."""
        wanted = len(self.text) - self.pos if double else 1
        taken: list[str] = []
        size = 0
        for piece in self._pieces:
            taken.append(piece)
            size += len(piece)
            if size >= wanted:
                break
        else:
            self._ended = True
        if not size:
            return False
        self.line()
        self.text = self.text[self.pos :] + "".join(taken)
        self.pos = self._counted = 0
        return True

    def peek(self) -> str:
        """The next character that is not white space ('' at the end of the text)."""
        while True:
            match = _SPACE.match(self.text, self.pos)
            self.pos = match.end() if match else self.pos
            if self.pos < len(self.text):
                return self.text[self.pos]
            if self._ended or not self._more():
                return ""

    def take(self, expected: str) -> None:
        if self.peek() != expected:
            self.fail(f"Expecting {expected!r}")
        self.pos += 1

    def value(self) -> Any:
        """The JSON value at `pos` (read further when the text so far cuts it)."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as error:
                cut = error.pos >= len(self.text) - _CUT or error.msg.startswith("Unterminated")
                if cut and not self._ended and self._longer():
                    continue
                self.pos = max(self.pos, min(error.pos, len(self.text)))
                self.fail(error.msg)
            except RecursionError:
                raise InvalidInput("not a melange export (its JSON is nested too deeply)") from None
            if end == len(self.text) and not self._ended and self._longer():
                continue  # a number or a word may go on in the next piece
            self.pos = end
            return value

    def _longer(self) -> bool:
        """More text for a value cut short; InvalidInput past MAX_VALUE."""
        if len(self.text) - self.pos > MAX_VALUE:
            raise InvalidInput(f"line {self.line()}: an entity longer than {MAX_VALUE >> 20} MiB")
        return self._more(double=True)

    def fail(self, message: str) -> None:
        raise InvalidInput(f"line {self.line()}: not valid JSON ({message})")


def members(cursor: Cursor) -> Iterator[str]:
    """An object's keys, each once its colon is read (the caller reads its value)."""
    cursor.take("{")
    if cursor.peek() == "}":
        cursor.pos += 1
        return
    while True:
        if cursor.peek() != '"':
            cursor.fail("Expecting property name enclosed in double quotes")
        key = cursor.value()
        cursor.take(":")
        yield key
        following = cursor.peek()
        if following == "}":
            cursor.pos += 1
            return
        cursor.take(",")


def elements(cursor: Cursor) -> Iterator[int]:
    """An array's elements: the line each starts on (the caller reads the element)."""
    cursor.take("[")
    if cursor.peek() == "]":
        cursor.pos += 1
        return
    while True:
        cursor.peek()
        yield cursor.line()
        following = cursor.peek()
        if following == "]":
            cursor.pos += 1
            return
        cursor.take(",")


Read = tuple[int, str, Any]  # (line, kind, item): an entity, or ("address", entry)


def read(pieces: Iterable[str]) -> Iterator[Read]:
    """Every entity of a melange JSON export in the file's order, as (line, kind, item);
    a block's addresses as (line, "address", entry) each, just before their block (whose
    fields may follow its addresses: an export writes "addresses" first)."""
    cursor = Cursor(pieces)
    header: dict[str, Any] = {}
    sections = False
    for key in members(cursor):
        kind = KIND_OF_SECTION.get(key)
        if kind is None:
            header[key] = value = cursor.value()
            if key in ("format", "version"):
                _check_header(key, value)
            continue
        sections = True
        if cursor.peek() != "[":
            line = cursor.line()
            if cursor.value() is not None:
                raise InvalidInput(f"line {line}: {key} must be a list")
            continue
        for line in elements(cursor):
            if kind == "block" and cursor.peek() == "{":
                yield from _block(cursor, line)
                continue
            item = cursor.value()
            if not isinstance(item, dict):
                raise InvalidInput(f"line {line}: a {kind} must be an object")
            yield line, kind, item
    if cursor.peek() == "{" and not sections and header.keys() == {"format", "version"}:
        yield from _ndjson(cursor)
    elif cursor.peek():
        cursor.fail("Extra data")
    _check_header("format", header.get("format"))
    _check_header("version", header.get("version"))


ENTITY_KINDS = frozenset(KIND_OF_SECTION.values())


def _ndjson(cursor: Cursor) -> Iterator[Read]:
    """The NDJSON form of an export (GET /v1/export's, melange.transfer_stream) after its
    header line: an entity a line, a block's addresses after it (as "block_address"), and
    the end line, which counts the lines before it (so a file cut short is refused)."""
    count = 1
    ended = False
    while cursor.peek():
        line = cursor.line()
        value = cursor.value()
        count += 1
        if ended or not isinstance(value, dict) or len(value) != 1:
            raise InvalidInput(f"line {line}: not one entity, or after the end line")
        ((kind, item),) = value.items()
        if kind == "end":
            ended = isinstance(item, dict) and item.get("lines") == count - 1
            if not ended:
                raise InvalidInput(f"line {line}: the end line counts {count - 1} lines")
        elif kind in ENTITY_KINDS or kind == "address":
            if not isinstance(item, dict):
                raise InvalidInput(f"line {line}: a {kind} must be an object")
            yield line, "block_address" if kind == "address" else kind, item
        else:
            raise InvalidInput(f"line {line}: unknown entity {kind[:40]!r}")
    if not ended:
        raise InvalidInput("the export ended early (no end line): nothing imported")


def _block(cursor: Cursor, line: int) -> Iterator[Read]:
    """One block: its addresses as they come, then its other fields."""
    item: dict[str, Any] = {}
    for key in members(cursor):
        if key == "addresses" and cursor.peek() == "[":
            for at in elements(cursor):
                yield at, "address", cursor.value()
        else:
            item[key] = cursor.value()
    yield line, "block", item


def _check_header(key: str, value: Any) -> None:
    if key == "format" and value != FORMAT:
        raise InvalidInput(f"not a melange export (its format is not {FORMAT!r})")
    if key == "version" and value != VERSION:
        raise InvalidInput(f"unsupported export version {value!r}")
