"""Small helpers shared by tests."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(cond: Callable[[], object], timeout: float = 20.0, interval: float = 0.05) -> bool:
    """Poll ``cond`` until it is truthy or ``timeout`` seconds pass; returns its last truth value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())
