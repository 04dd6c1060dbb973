"""The melanged command line (the daemon's watcher and socket come in later releases)."""

from __future__ import annotations

import sys


def main() -> None:
    """Refuse clearly until the daemon exists, rather than pretend to serve."""
    print(
        "Error: melanged is not available in this release; "
        "use `melange dhcp hosts` to render the dnsmasq hosts file",
        file=sys.stderr,
    )
    sys.exit(1)
