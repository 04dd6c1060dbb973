"""Reading import files: a melange export (JSON or CSV) or NetBox CSV, as entities with
the line each starts on, so every problem an import finds names its line.

Nothing here looks at the store: a file that cannot be read is refused before
the import's transaction starts.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any

from melange.errors import InvalidInput, MelangeError
from melange.params import check_text
from melange.transfer_format import NAT_FIELDS

# (line, kind, fields) of one entity: a policy, a MAC range, a block (with its routes and
# addresses inside), an interface, or a NetBox prefix or address.
Entity = tuple[int, str, dict]
Fields = dict[str, str | None]  # one CSV row: an empty cell is None

BLOCK_FIELDS = ("network", "cidr", "name", "tenant", "type", "gateway", "policy", "parent",
                "generator", "domain")  # fmt: skip
ADDRESS_FIELDS = ("address", "mac", "hostname", "interface", "tenant", "state", "allocated_at",
                  "released_at", "held_until")  # fmt: skip
INTERFACE_FIELDS = ("vif_id", "network", "device", "tenant", "mac")
ALLOWED_IP_FIELDS = ("cidr", "address")


def read(pieces: Iterable[str], fmt: str = "melange") -> Parsed:
    """Every entity of a melange JSON/CSV or NetBox CSV file, read as its text arrives:
    the addresses into a spool on disk (they come last, and may be millions), the rest
    kept (each with its line); every text in them is text a parameter could be (no NUL,
    no lone surrogate). The spool is removed with `close`."""
    if fmt not in ("melange", "netbox-prefixes", "netbox-addresses"):
        raise InvalidInput(
            f"unknown import format {fmt!r} (melange, netbox-prefixes, netbox-addresses)"
        )
    parsed = Parsed()
    try:
        if fmt == "melange":
            first, pieces = _first_piece(pieces)
            if first.lstrip().startswith("{"):
                _read_json(pieces, parsed)
            else:
                _read_csv(pieces, parsed)
        else:
            _read_netbox(pieces, fmt, parsed)
        refuse(parsed.problems)
    except BaseException:
        parsed.close()
        raise
    return parsed


class Problems(list[str]):
    """The problems found: the first few kept (all that `refuse` shows), every one counted."""

    KEPT = 20

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def append(self, problem: str) -> None:
        self.total += 1
        if super().__len__() < self.KEPT:
            super().append(problem)

    def extend(self, problems: Iterable[str]) -> None:
        for one in problems:
            self.append(one)

    def __len__(self) -> int:
        return self.total

    def __bool__(self) -> bool:
        return self.total > 0


class Spool:
    """Rows of JSON kept in a temporary file, read back in order as often as needed (a
    retried transaction reads them again)."""

    def __init__(self) -> None:
        import tempfile

        self.file = tempfile.TemporaryFile("w+", encoding="utf-8")
        self.count = 0

    def add(self, row: list) -> None:
        self.file.write(json.dumps(row, separators=(",", ":")) + "\n")
        self.count += 1

    def __iter__(self) -> Iterator[Any]:
        self.file.flush()
        self.file.seek(0)
        for line in self.file:
            yield json.loads(line)

    def close(self) -> None:
        self.file.close()


class Parsed:
    """A file read: its entities but the addresses (line, kind, fields each, in the
    file's order), and its addresses spooled as (line, owner, fields): the owner the
    index of their block among the entities, -1 for a NetBox address (whose block the
    store names)."""

    def __init__(self) -> None:
        self.entities: list[Entity] = []
        self.addresses = Spool()
        self.problems = Problems()

    def entity(self, line: int, kind: str, item: dict) -> int:
        """Keep an entity (its text checked); its index."""
        self._check(line, item)
        for entry in _nested(item):
            self._check(entry.get("_line", line), entry)
        self.entities.append((line, kind, item))
        return len(self.entities) - 1

    def address(self, line: int, owner: int, entry: Any) -> None:
        if isinstance(entry, dict):
            self._check(line, entry)
        self.addresses.add([line, owner, entry])

    def _check(self, line: int, entry: dict) -> None:
        self.problems.extend(f"line {line}: {error.message}" for error in _text_problems(entry))

    def close(self) -> None:
        self.addresses.close()

    def __enter__(self) -> Parsed:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _first_piece(pieces: Iterable[str]) -> tuple[str, Iterable[str]]:
    """The text up to its first character that is not white space, and all the pieces."""
    taken: list[str] = []
    rest = iter(pieces)
    for piece in rest:
        taken.append(piece)
        if piece.strip():
            break
    return "".join(taken), chain(taken, rest)


def refuse(problems: list[str]) -> None:
    """One line naming the first 20 problems, each with its line; nothing is imported."""
    if problems:
        more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
        shown = "; ".join(problems[:20]) + more
        raise InvalidInput(f"nothing imported: {len(problems)} problem(s): {shown}")


# A rule broken, or an entity of the wrong shape (a field missing, a number where a
# list belongs): each a problem of its line, never an internal error.
MALFORMED = (MelangeError, KeyError, TypeError, ValueError, AttributeError)


def problem(line: int, kind: str, error: Exception) -> str:
    """What an import says about one entity it could not take."""
    if isinstance(error, MelangeError):
        return f"line {line}: {error.message}"
    return f"line {line}: malformed {kind} ({type(error).__name__}: {str(error)[:80]!r})"


def _nested(item: dict) -> list[dict]:
    """The addresses and routes listed inside a block, and the allowed IPs inside an
    interface (an address or allowed IP keeps its own line)."""
    return [
        entry
        for key in ("addresses", "routes", "allowed_ips")
        if isinstance(item.get(key), list)
        for entry in item[key]
        if isinstance(entry, dict)
    ]


def _text_problems(entry: dict) -> Iterator[InvalidInput]:
    """Each field of one entity whose text no command would take (its first problem)."""
    for key, value in entry.items():
        for text in value if isinstance(value, list) else (value,):
            if isinstance(text, str):
                try:
                    check_text(text, f"field {str(key)[:40]!r}")
                except InvalidInput as error:
                    yield error
                    break


# -- melange JSON


def _read_json(pieces: Iterable[str], parsed: Parsed) -> None:
    """The entities as melange.transfer_json reads them; an address belongs to the block
    read next (its addresses come inside it, before its other fields), in the NDJSON
    form to the block read last."""
    from melange.transfer_json import read as read_json

    last_block = -1
    for line, kind, item in read_json(pieces):
        if kind == "address":
            parsed.address(line, len(parsed.entities), item)
        elif kind == "block_address":  # NDJSON: of the block before it
            if last_block < 0:
                raise InvalidInput(f"line {line}: an address before any block")
            parsed.address(line, last_block, item)
        else:
            last_block = len(parsed.entities) if kind == "block" else last_block
            parsed.entity(line, kind, item)


# -- melange CSV


MAX_LINE = 1 << 20  # no row of these files is near this long: one that is would be held


def _lines(pieces: Iterable[str]) -> Iterator[str]:
    """The text's lines, each with its newline (a CR stays, for the csv module to read
    as `newline=""` would hand it over); InvalidInput for one over MAX_LINE."""
    rest: list[str] = []
    size = 0
    number = 0
    for piece in pieces:
        parts = piece.split("\n")
        for part in parts[:-1]:
            number += 1
            yield "".join(rest) + part + "\n"
            rest, size = [], 0
        rest.append(parts[-1])
        size += len(parts[-1])
        if size > MAX_LINE:
            raise InvalidInput(f"line {number + 1}: longer than {MAX_LINE >> 20} MiB")
    if size:
        yield "".join(rest)


def _csv_reader(pieces: Iterable[str]) -> csv.DictReader:
    """A reader whose header is read already: a csv.Error there (a bare CR in a quoted
    header, say) is the file's fault, exit 2, not a bug."""
    reader = csv.DictReader(_lines(pieces))
    try:
        reader.fieldnames  # noqa: B018  (reads the header line)
    except csv.Error as error:
        raise InvalidInput(f"line 1: not valid CSV ({error})") from None
    return reader


def _read_csv(pieces: Iterable[str], parsed: Parsed) -> None:
    reader = _csv_reader(pieces)
    if not reader.fieldnames or "kind" not in reader.fieldnames:
        raise InvalidInput("line 1: a melange CSV export starts with a header that has `kind`")
    document = _CsvDocument(parsed)
    for line, fields in _csv_rows(reader):
        document.add(line, fields)


def _csv_rows(reader: csv.DictReader) -> Iterator[tuple[int, Fields]]:
    """(line, fields) of each row: empty cells are None, cells beyond the header dropped.
    The line is where the row starts (a quoted newline in a cell continues it)."""
    try:
        for row in reader:
            fields = {k: (v if v != "" else None) for k, v in row.items() if k}
            inner = sum(v.count("\n") for v in fields.values() if isinstance(v, str))
            yield reader.line_num - inner, fields
    except csv.Error as error:
        raise InvalidInput(f"line {reader.line_num}: not valid CSV ({error})") from None


class _CsvDocument:
    """The CSV's flat rows nested back as the JSON export nests them: a policy's ranges
    and octets inside the policy, a block's routes and addresses inside the block, each
    under the row listed before it (so import handles both formats alike)."""

    def __init__(self, parsed: Parsed) -> None:
        self.parsed = parsed
        self._policies: dict[str | None, dict] = {}
        self._blocks: dict[tuple[str | None, str | None], tuple[dict, int]] = {}
        self._interfaces: dict[str | None, dict] = {}

    def add(self, line: int, fields: Fields) -> None:
        kind = fields.get("kind")
        handler = self._HANDLERS.get(kind)
        if handler is None:
            raise InvalidInput(f"line {line}: unknown kind {kind!r}")
        handler(self, line, str(kind), fields)

    def _policy(self, line: int, kind: str, fields: Fields) -> None:
        item: dict = {
            "name": fields.get("name"),
            "description": fields.get("description"),
            "unusable_ranges": [],
            "unusable_octets": [],
        }
        self._policies[fields.get("name")] = item
        self.parsed.entity(line, kind, item)

    def _policy_rule(self, line: int, kind: str, fields: Fields) -> None:
        target = self._policies.get(fields.get("name"))
        if target is None:
            raise InvalidInput(f"line {line}: {kind} for unknown policy {fields.get('name')!r}")
        if kind == "policy_range":
            target["unusable_ranges"].append(
                {"offset": fields.get("offset"), "length": fields.get("length")}
            )
        else:
            target["unusable_octets"].append(fields.get("octet"))

    def _mac_range(self, line: int, kind: str, fields: Fields) -> None:
        self.parsed.entity(line, kind, {"cidr": fields.get("cidr")})

    def _block(self, line: int, kind: str, fields: Fields) -> None:
        item: dict = {k: fields.get(k) for k in BLOCK_FIELDS}
        item["dns"] = (fields.get("dns") or "").split()
        item["routes"] = []
        self._blocks[(item["network"], item["cidr"])] = (item, len(self.parsed.entities))
        self.parsed.entity(line, kind, item)

    def _block_part(self, line: int, kind: str, fields: Fields) -> None:
        found = self._blocks.get((fields.get("network"), fields.get("cidr")))
        if found is None:
            raise InvalidInput(f"line {line}: {kind} for a block not listed before it")
        owner, index = found
        if kind == "route":
            route = {"destination": fields.get("destination"), "gateway": fields.get("gateway")}
            self.parsed.problems.extend(
                f"line {line}: {error.message}" for error in _text_problems(route)
            )
            owner["routes"].append(route)
        else:
            self.parsed.address(line, index, {k: fields.get(k) for k in ADDRESS_FIELDS})

    def _interface(self, line: int, kind: str, fields: Fields) -> None:
        item: dict = {k: fields.get(k) for k in INTERFACE_FIELDS}
        item["allowed_ips"] = []
        self._interfaces[item["vif_id"]] = item
        self.parsed.entity(line, kind, item)

    def _allowed_ip(self, line: int, kind: str, fields: Fields) -> None:
        owner = self._interfaces.get(fields.get("vif_id"))
        if owner is None:
            raise InvalidInput(f"line {line}: {kind} for an interface not listed before it")
        entry: dict = {k: fields.get(k) for k in ALLOWED_IP_FIELDS}
        self.parsed.problems.extend(
            f"line {line}: {error.message}" for error in _text_problems(entry)
        )
        entry["_line"] = line
        owner["allowed_ips"].append(entry)

    def _nat_mapping(self, line: int, kind: str, fields: Fields) -> None:
        self.parsed.entity(line, kind, {k: fields.get(k) for k in NAT_FIELDS})

    _HANDLERS: dict[str | None, Callable[[_CsvDocument, int, str, Fields], None]] = {
        "policy": _policy,
        "policy_range": _policy_rule,
        "policy_octet": _policy_rule,
        "mac_range": _mac_range,
        "block": _block,
        "route": _block_part,
        "address": _block_part,
        "interface": _interface,
        "allowed_ip": _allowed_ip,
        "nat_mapping": _nat_mapping,
    }


# -- NetBox CSV


def _read_netbox(pieces: Iterable[str], fmt: str, parsed: Parsed) -> None:
    """NetBox's CSV exports: prefixes become blocks (nested ones subnets), addresses
    become allocations in the deepest block of their VRF that holds them."""
    reader = _csv_reader(pieces)
    column = "prefix" if fmt == "netbox-prefixes" else "address"
    if not reader.fieldnames or column not in reader.fieldnames:
        raise InvalidInput(f"line 1: a NetBox {column} export needs a `{column}` column")
    try:
        for row in reader:
            if fmt == "netbox-prefixes":
                parsed.entity(reader.line_num, *_netbox_prefix(row))
            else:
                parsed.address(reader.line_num, -1, _netbox_address(row)[1])
    except csv.Error as error:
        raise InvalidInput(f"line {reader.line_num}: not valid CSV ({error})") from None


def _netbox_prefix(row: dict) -> tuple[str, dict]:
    return "netbox_prefix", {
        "cidr": (row.get("prefix") or "").strip(),
        "network": _tag(row.get("vrf")),
        "tenant": _token(row.get("tenant")),
        "status": row.get("status"),
    }


def _netbox_address(row: dict) -> tuple[str, dict]:
    return "netbox_address", {
        "address": (row.get("address") or "").strip(),
        "network": _tag(row.get("vrf")),
        "tenant": _token(row.get("tenant")),
        "hostname": (row.get("dns_name") or "").strip() or None,
    }


def _tag(cell: str | None) -> str | None:
    """A NetBox VRF name as a melange network name (dnsmasq tag characters only)."""
    name = (cell or "").strip()
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:63].strip("-") or None


def _token(cell: str | None) -> str | None:
    """A NetBox tenant name as a melange name (one safe token)."""
    name = (cell or "").strip()
    return re.sub(r"[^A-Za-z0-9_.@:-]", "-", name)[:255].strip("-") or None
