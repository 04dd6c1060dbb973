"""Settings: where the store is and how long released addresses are held.

The order is the contract's: --db, MELANGE_DB, the config file's
[melange] db, then the per-user default under $XDG_DATA_HOME.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path

from melange.errors import InvalidInput

DEFAULT_CONFIG = Path("/etc/melange/melange.conf")
DEFAULT_RELEASE_HOLD = "48h"


@dataclass
class Settings:
    db_url: str
    release_hold: int
    # Named by --db, MELANGE_DB or the config file, not the per-user default: a read
    # must not create such a store (a typo would silently answer from an empty one).
    db_named: bool = False
    config_path: Path | None = None
    parser: configparser.ConfigParser = field(default_factory=configparser.ConfigParser)

    def section(self, name: str) -> dict[str, str]:
        return dict(self.parser[name]) if self.parser.has_section(name) else {}


def read_config(path: str | os.PathLike | None) -> tuple[configparser.ConfigParser, Path | None]:
    """Read the INI file; one given explicitly must exist, the default may not."""
    parser = configparser.ConfigParser(interpolation=None)
    if path:
        chosen = Path(path)
        if not chosen.is_file():
            raise InvalidInput(f"config file {str(chosen)!r} does not exist")
    elif DEFAULT_CONFIG.is_file():
        chosen = DEFAULT_CONFIG
    else:
        return parser, None
    try:
        parser.read(chosen)
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInput(f"cannot read config file {str(chosen)!r}: {first}") from None
    return parser, chosen


def default_db_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "melange" / "melange.db"


def db_url_from(text: str) -> str:
    """A SQLAlchemy URL, or a plain path meaning an SQLite file."""
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().absolute()}"


def load_settings(db: str | None = None, config: str | None = None) -> Settings:
    """Resolve the settings one command runs with (`db` is --db or MELANGE_DB)."""
    parser, path = read_config(config)
    section = parser["melange"] if parser.has_section("melange") else {}
    if db:
        url = db_url_from(db)
    elif section.get("db"):
        url = db_url_from(section["db"])
    else:
        url = db_url_from(str(default_db_path()))
    from melange.validate import parse_duration  # netaddr: not for `melange --url`'s config

    hold = parse_duration(section.get("release_hold", DEFAULT_RELEASE_HOLD))
    named = bool(db or section.get("db"))
    return Settings(db_url=url, release_hold=hold, db_named=named, config_path=path, parser=parser)
