"""Reading import files: a melange export (JSON or CSV) or NetBox CSV, as entities with
the line each starts on, so every problem an import finds names its line.

Nothing here looks at the store: a file that cannot be read is refused before
the import's transaction starts.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator

from melange.errors import InvalidInput, MelangeError
from melange.params import check_text
from melange.transfer_format import FORMAT, NAT_FIELDS, SECTIONS, VERSION

# (line, kind, fields) of one entity: a policy, a MAC range, a block (with its routes and
# addresses inside), an interface, or a NetBox prefix or address.
Entity = tuple[int, str, dict]
Fields = dict[str, str | None]  # one CSV row: an empty cell is None

KIND_OF_SECTION = dict(
    zip(SECTIONS, ("policy", "mac_range", "block", "interface", "nat_mapping"), strict=True)
)
BLOCK_FIELDS = ("network", "cidr", "name", "tenant", "type", "gateway", "policy", "parent",
                "generator")  # fmt: skip
ADDRESS_FIELDS = ("address", "mac", "hostname", "interface", "tenant", "state", "allocated_at",
                  "released_at", "held_until")  # fmt: skip
INTERFACE_FIELDS = ("vif_id", "network", "device", "tenant", "mac")
ALLOWED_IP_FIELDS = ("cidr", "address")


def parse(text: str, fmt: str = "melange") -> list[Entity]:
    """(line, kind, fields) for every entity of a melange JSON/CSV or NetBox CSV file;
    every text in them is text a parameter could be (no NUL, no lone surrogate)."""
    if fmt == "melange":
        entities = _parse_json(text) if text.lstrip().startswith("{") else _parse_csv(text)
    elif fmt in ("netbox-prefixes", "netbox-addresses"):
        entities = _parse_netbox(text, fmt)
    else:
        raise InvalidInput(
            f"unknown import format {fmt!r} (melange, netbox-prefixes, netbox-addresses)"
        )
    problems = [
        f"line {entry.get('_line', line)}: {error.message}"
        for line, _, item in entities
        for entry in (item, *_nested(item))
        for error in _text_problems(entry)
    ]
    refuse(problems)
    return entities


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


def _parse_json(text: str) -> list[Entity]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"line {error.lineno}: not valid JSON ({error.msg})") from None
    except RecursionError:
        raise InvalidInput("not a melange export (its JSON is nested too deeply)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InvalidInput(f"not a melange export (its format is not {FORMAT!r})")
    if document.get("version") != VERSION:
        raise InvalidInput(f"unsupported export version {document.get('version')!r}")
    lines = _element_lines(text)
    entities: list[Entity] = []
    for section, kind in KIND_OF_SECTION.items():
        for index, item in enumerate(document.get(section) or []):
            line = lines.get((section, index), 0)
            if not isinstance(item, dict):
                raise InvalidInput(f"line {line}: a {kind} must be an object")
            entities.append((line, kind, item))
    return entities


def _element_lines(text: str) -> dict[tuple[str, int], int]:
    """The line each top-level array element starts on, whatever the formatting."""
    decoder = json.JSONDecoder()
    found: dict[tuple[str, int], int] = {}
    for section in SECTIONS:
        key = text.find(f'"{section}"')
        start = text.find("[", key) if key >= 0 else -1
        if start < 0:
            continue
        pos, index = start + 1, 0
        while True:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(text) or text[pos] == "]":
                break
            found[(section, index)] = text.count("\n", 0, pos) + 1
            try:
                _, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                break
            index += 1
    return found


# -- melange CSV


def _csv_reader(text: str) -> csv.DictReader:
    """A reader whose header is read already: a csv.Error there (a bare CR in a quoted
    header, say) is the file's fault, exit 2, not a bug."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        reader.fieldnames  # noqa: B018  (reads the header line)
    except csv.Error as error:
        raise InvalidInput(f"line 1: not valid CSV ({error})") from None
    return reader


def _parse_csv(text: str) -> list[Entity]:
    reader = _csv_reader(text)
    if not reader.fieldnames or "kind" not in reader.fieldnames:
        raise InvalidInput("line 1: a melange CSV export starts with a header that has `kind`")
    document = _CsvDocument()
    for line, fields in _csv_rows(reader):
        document.add(line, fields)
    return document.entities


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

    def __init__(self) -> None:
        self.entities: list[Entity] = []
        self._policies: dict[str | None, dict] = {}
        self._blocks: dict[tuple[str | None, str | None], dict] = {}
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
        self.entities.append((line, kind, item))

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
        self.entities.append((line, kind, {"cidr": fields.get("cidr")}))

    def _block(self, line: int, kind: str, fields: Fields) -> None:
        item: dict = {k: fields.get(k) for k in BLOCK_FIELDS}
        item["dns"] = (fields.get("dns") or "").split()
        item["routes"], item["addresses"] = [], []
        self._blocks[(item["network"], item["cidr"])] = item
        self.entities.append((line, kind, item))

    def _block_part(self, line: int, kind: str, fields: Fields) -> None:
        owner = self._blocks.get((fields.get("network"), fields.get("cidr")))
        if owner is None:
            raise InvalidInput(f"line {line}: {kind} for a block not listed before it")
        if kind == "route":
            owner["routes"].append(
                {"destination": fields.get("destination"), "gateway": fields.get("gateway")}
            )
        else:
            entry: dict = {k: fields.get(k) for k in ADDRESS_FIELDS}
            entry["_line"] = line
            owner["addresses"].append(entry)

    def _interface(self, line: int, kind: str, fields: Fields) -> None:
        item: dict = {k: fields.get(k) for k in INTERFACE_FIELDS}
        item["allowed_ips"] = []
        self._interfaces[item["vif_id"]] = item
        self.entities.append((line, kind, item))

    def _allowed_ip(self, line: int, kind: str, fields: Fields) -> None:
        owner = self._interfaces.get(fields.get("vif_id"))
        if owner is None:
            raise InvalidInput(f"line {line}: {kind} for an interface not listed before it")
        entry: dict = {k: fields.get(k) for k in ALLOWED_IP_FIELDS}
        entry["_line"] = line
        owner["allowed_ips"].append(entry)

    def _nat_mapping(self, line: int, kind: str, fields: Fields) -> None:
        self.entities.append((line, kind, {k: fields.get(k) for k in NAT_FIELDS}))

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


def _parse_netbox(text: str, fmt: str) -> list[Entity]:
    """NetBox's CSV exports: prefixes become blocks (nested ones subnets), addresses
    become allocations in the deepest block of their VRF that holds them."""
    reader = _csv_reader(text)
    column = "prefix" if fmt == "netbox-prefixes" else "address"
    if not reader.fieldnames or column not in reader.fieldnames:
        raise InvalidInput(f"line 1: a NetBox {column} export needs a `{column}` column")
    convert = _netbox_prefix if fmt == "netbox-prefixes" else _netbox_address
    try:
        return [(reader.line_num, *convert(row)) for row in reader]
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
