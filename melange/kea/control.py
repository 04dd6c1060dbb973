"""Kea's control channel: one JSON command on kea-dhcp4's Unix socket.

kea-dhcp4 answers each command on its own connection and closes it (no
control agent needed). Two commands are used: `config-reload` (the subnets or
their options changed) and `lease4-del` (the `lease_cmds` hook, in Debian's
package: a stale lease forgotten so its address can go to its new owner).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from melange.errors import StoreUnavailable

TIMEOUT = 30.0  # a config-reload with many subnets takes a while
RESULT_OK = 0
RESULT_EMPTY = 3  # "no lease found": nothing to forget


def command(path: Path, name: str, arguments: dict | None = None) -> dict:
    """Send `name` and return Kea's answer ({"result": N, "text": ...})."""
    request: dict = {"command": name}
    if arguments is not None:
        request["arguments"] = arguments
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode())
            answer = _read_answer(sock)
    except OSError as error:
        raise StoreUnavailable(f"Kea's control socket {path} does not answer: {error}") from None
    if isinstance(answer, list):  # the control agent's form: one answer per service
        answer = answer[0]
    return answer


def _read_answer(sock: socket.socket) -> dict:
    """Read until the answer parses as JSON (or Kea closes the connection)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if chunk:
            data += chunk
        try:
            return json.loads(data)
        except ValueError:
            if not chunk:
                raise OSError(f"a truncated answer ({len(data)} bytes)") from None


def reload(path: Path) -> None:
    """`config-reload`: Kea reads its configuration file (with melange's fragment) again."""
    answer = command(path, "config-reload")
    if answer.get("result") != RESULT_OK:
        raise StoreUnavailable(f"Kea refused config-reload: {answer.get('text')}")


def forget_lease(path: Path, address: str) -> bool:
    """`lease4-del`: True when Kea had a lease on `address` and dropped it."""
    answer = command(path, "lease4-del", {"ip-address": address})
    result = answer.get("result")
    if result not in (RESULT_OK, RESULT_EMPTY):
        raise StoreUnavailable(f"Kea refused lease4-del {address}: {answer.get('text')}")
    return result == RESULT_OK


def leases(path: Path) -> list[dict]:
    """`lease4-get-all`: every lease Kea holds."""
    answer = command(path, "lease4-get-all")
    if answer.get("result") not in (RESULT_OK, RESULT_EMPTY):
        raise StoreUnavailable(f"Kea refused lease4-get-all: {answer.get('text')}")
    return list((answer.get("arguments") or {}).get("leases", []))
