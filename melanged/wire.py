"""What the socket server and its front (melanged.front) share: the protocol's version,
a request's deadline, a peer, an error answer. A module of its own so that the front
needs nothing of the server's and the two do not import each other."""

from __future__ import annotations

import os
from dataclasses import dataclass

from melange.errors import MelangeError

PROTOCOL_VERSION = 1
REQUEST_DEADLINE = 10.0  # seconds for a whole request line, however it trickles in


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    user: str
    groups: frozenset[str]

    @property
    def privileged(self) -> bool:
        """root, or the user melanged runs as: nothing melanged does exceeds their powers."""
        return self.uid in (0, os.geteuid())


def error_response(error: MelangeError, request_id=None) -> dict:
    return {
        "version": PROTOCOL_VERSION,
        "id": request_id,
        "ok": False,
        "error": {"code": error.code, "message": error.message, "exit_code": error.exit_code},
    }
