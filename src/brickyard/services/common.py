"""Small helpers shared by the services."""
from __future__ import annotations

import secrets
import time


def now_ms() -> int:
    return int(time.time() * 1000)


def new_numeric_id() -> int:
    """A random positive id of 15-16 digits, like Databricks' object and user ids."""
    return secrets.randbelow(9 * 10**15) + 10**15
