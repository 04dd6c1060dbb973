"""What an operation accepts from a client, derived from its core function's signature.

A core function's keyword parameters and their type hints are the declaration:
`str`, `int`, `float`, `bool`, `list[str]`, each optionally `| None`, and
`Annotated[...]` for what a type alone cannot say (bounds, free text). Every
channel checks a request against it before anything runs, so a wrong type is
an `InvalidInput` (exit 2) here and never a TypeError deep in the core (exit 1).
Parameters of any other type (a connection, a store, a callback) are local to
the process and never come from a client.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from melange.errors import InvalidInput

# What a store column can hold: larger integers overflow the drivers (exit 1 otherwise).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# Given by `operations.run` itself, never by a client.
SUPPLIED = frozenset({"hold_seconds"})


class Bounds(NamedTuple):
    """`Annotated[int, Bounds(1, 10_000)]`: the smallest and largest value accepted."""

    low: int = INT_MIN
    high: int = INT_MAX


@dataclass(frozen=True)
class Document:
    """`Annotated[str, Document()]`: a whole file's content (an import), which may hold
    NUL characters for the parser to report with their line; a name or value never may."""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Each kind: what a value must be (for the message), and the test (bool is an int in
# Python, never in a request; a whole number is a number too).
_ACCEPTS: dict[type, tuple[str, Callable[[Any], bool]]] = {
    str: ("a string", lambda v: isinstance(v, str)),
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("a whole number", lambda v: _number(v) and isinstance(v, int)),
    float: ("a number", _number),
    list: ("a list of strings", lambda v: isinstance(v, list | tuple)
           and all(isinstance(item, str) for item in v)),
}  # fmt: skip


class Parameter(NamedTuple):
    name: str
    kind: type  # str, int, float, bool or list (of str)
    required: bool
    nullable: bool
    bounds: Bounds = Bounds()
    document: bool = False

    def check(self, operation: str, value: Any) -> None:
        """Raise InvalidInput unless `value` is what this parameter takes."""
        if value is None:
            if self.nullable:
                return
            raise InvalidInput(f"{operation}: parameter {self.name} cannot be null")
        what, accepts = _ACCEPTS[self.kind]
        if not accepts(value):
            raise InvalidInput(
                f"{operation}: parameter {self.name} must be {what}, not {_shown(value)}"
            )
        for text in value if self.kind is list else (value,) if self.kind is str else ():
            self._check_text(operation, text)
        if self.kind is int and not self.bounds.low <= value <= self.bounds.high:
            limits = (
                "a store can hold"
                if self.bounds == Bounds()
                else f"from {self.bounds.low} to {self.bounds.high}"
            )
            raise InvalidInput(
                f"{operation}: parameter {self.name} is out of range ({limits}): {_shown(value)}"
            )
        if self.kind is float and not math.isfinite(value):
            raise InvalidInput(f"{operation}: parameter {self.name} must be a finite number")

    def _check_text(self, operation: str, text: str) -> None:
        check_text(text, f"{operation}: parameter {self.name}", document=self.document)


def check_text(text: str, what: str, *, document: bool = False) -> None:
    """Text the store and the dnsmasq files can hold: UTF-8 (no lone surrogate from a
    JSON escape), and no NUL outside a document (PostgreSQL refuses it, even in a
    lookup). Parameters, and each field of an imported file, pass through here."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} holds a lone surrogate, not text") from None
    if not document and "\x00" in text:
        raise InvalidInput(f"{what} holds a NUL character")


_JSON_NAMES = {str: "a string", bool: "a boolean", int: "a number", float: "a number",
               list: "a list", tuple: "a list", dict: "an object"}  # fmt: skip


def _shown(value: Any) -> str:
    """A value for an error message: its JSON type, and the value when it is short."""
    name = _JSON_NAMES.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{name} {text}" if len(text) <= 40 else name


# The first parameter's hints, read as nothing (see `type_hints`).
_UNREAD = {"Connection": object, "Store": object}


def type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    """A core function's hints. The connection's is never read: a core module may name
    SQLAlchemy's Connection for type checkers only, and import no SQLAlchemy
    (melange.lean)."""
    return typing.get_type_hints(function, localns=_UNREAD, include_extras=True)


def derive(function: Callable[..., Any]) -> dict[str, Parameter]:
    """The client parameters of a core function (its first parameter, the connection or
    store, and the local ones left out). A hint of a kind not listed here is a bug in
    the declaration: TypeError, so the consistency test finds it.

    """
    hints = type_hints(function)
    found: dict[str, Parameter] = {}
    for parameter in list(inspect.signature(function).parameters.values())[1:]:
        if parameter.name in SUPPLIED:
            continue
        hint = hints.get(parameter.name)
        if hint is None:
            raise TypeError(f"{function.__qualname__}: parameter {parameter.name} has no hint")
        derived = _from_hint(parameter.name, hint, parameter.default is inspect.Parameter.empty)
        if derived is not None:
            found[parameter.name] = derived
    return found


def _from_hint(name: str, hint: Any, required: bool) -> Parameter | None:
    extras: tuple = ()
    if typing.get_origin(hint) is typing.Annotated:
        hint, *rest = typing.get_args(hint)
        extras = tuple(rest)
    members = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    nullable = type(None) in members
    kinds = {_kind(member) for member in members if member is not type(None)}
    if kinds == {None}:
        return None  # a callback or another in-process object
    kind = next(iter(kinds)) if len(kinds) == 1 else None
    if kind is None:
        raise TypeError(f"parameter {name}: a client cannot send {hint!r}")
    bounds = next((e for e in extras if isinstance(e, Bounds)), Bounds())
    document = any(isinstance(e, Document) for e in extras)
    return Parameter(name, kind, required, nullable, bounds, document)


def _kind(hint: Any) -> type | None:
    """str/int/float/bool; list for a list or tuple of strings; None for anything local."""
    if hint in (str, int, float, bool):
        return hint
    origin = typing.get_origin(hint)
    if origin in (list, tuple) and typing.get_args(hint)[:1] == (str,):
        return list
    return None


def check(operation: str, declared: dict[str, Parameter], params: dict[str, Any]) -> None:
    """Every name known, every required one present, every value of its declared type."""
    unknown = [key for key in params if key not in declared]
    if unknown:
        shown = ", ".join(sorted(repr(k)[:40] for k in unknown))
        raise InvalidInput(f"{operation} takes no parameter(s) {shown}")
    missing = [p.name for p in declared.values() if p.required and p.name not in params]
    if missing:
        raise InvalidInput(f"{operation} needs the parameter(s) {', '.join(missing)}")
    for key, value in params.items():
        declared[key].check(operation, value)
