"""How a long-lived loop (supervisor, watcher, thumbnails, scheduled jobs) lives through failures.

A loop that stops on the first exception silently stops a service (a full disk once killed the queue
until a restart). Each loop keeps one :class:`Backoff`: it says so once when the loop starts failing
(with the traceback), stays quiet while the same trouble lasts, says so once more when the loop works
again, and tells the loop how long to wait before the next try (doubling, bounded).
"""

from __future__ import annotations

import logging

FIRST_S = 1.0
MAX_S = 60.0


class Backoff:
    def __init__(self, log: logging.Logger, what: str, *, first_s: float = FIRST_S, max_s: float = MAX_S) -> None:
        self.log = log
        self.what = what
        self.first_s = first_s
        self.max_s = max_s
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def delay(self) -> float:
        """Seconds to wait before the next try: first_s after the first failure, doubling up to max_s."""
        if not self.failures:
            return 0.0
        return min(self.max_s, self.first_s * 2.0 ** min(self.failures - 1, 30))

    def failed(self, exc: BaseException) -> float:
        """Record a failure (call from an ``except`` block); returns the delay before the next try."""
        self.failures += 1
        if self.failures == 1:
            self.log.error("%s failed: %s; it goes on, retrying with backoff (up to every %g s)",
                           self.what, _one_line(exc), self.max_s, exc_info=exc)
        else:
            self.log.debug("%s failed again (%d in a row): %s", self.what, self.failures, _one_line(exc))
        return self.delay()

    def succeeded(self) -> None:
        """Record a success; logs once if it ends a run of failures."""
        if self.failures:
            self.log.info("%s works again (after %d failed attempt%s)", self.what, self.failures,
                          "" if self.failures == 1 else "s")
            self.failures = 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
