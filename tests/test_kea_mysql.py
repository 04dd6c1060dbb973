"""The kea backend end to end with Kea's host database on MariaDB
(the cases are in tests/support/kea_cases.py)."""

from tests.support.kea_cases import *  # noqa: F403  (the cases, collected here)
from tests.support.kea_cases import kea_fixture

kea = kea_fixture("mysql")
