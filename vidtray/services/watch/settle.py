"""Files waiting to settle, files to try again later, and probing the ones that settled.

A candidate is taken once its size and mtime stayed unchanged for the settle time (a short one after a
close-after-write or a rename into place). It is imported only if it then probes cleanly (decodes to the
end), so a slow writer that pauses longer than the settle time is still not imported early: its partial
file does not decode. A file that could not be read (permission, I/O) goes to the retry set, tried again
with backoff; a file that probed broken is not probed again until it changes.

Observer threads add candidates; the watcher's thread takes and probes them. One lock guards it all.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from vidtray.services import media
from vidtray.services.libitem import Fields
from vidtray.services.watch.files import Identity, LogOnce, identity, is_gone_error
from vidtray.services.watch.thumbs import ThumbJob

log = logging.getLogger("vidtray.watcher")

#: A file that could not be read is tried again after this long, doubling up to RETRY_MAX_S.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


@dataclass
class Candidate:
    root: Path
    size: int = -1
    mtime_ns: int = -1
    stable_since: float = 0.0
    fast: bool = False  # closed after write, or renamed into place: a short settle is enough


#: (path, its candidate record) of a file that settled
Settled = tuple[str, Candidate]


@dataclass
class Probed:
    """What probing the settled files gave: the entries to import (with each file's identity and what its
    thumbnail needs), and how many files were found broken."""

    entries: list[tuple[Path, Fields]] = field(default_factory=list)
    idents: dict[str, Identity] = field(default_factory=dict)
    thumbs: list[ThumbJob] = field(default_factory=list)
    broken: int = 0


class SettleQueue:
    def __init__(self, settle_s: float, fast_settle_s: float, notes: LogOnce) -> None:
        self.settle_s = settle_s
        self.fast_settle_s = fast_settle_s
        self.notes = notes
        self._mu = threading.Lock()
        self._pending: dict[str, Candidate] = {}
        # Files to probe again later (could not be read, or their tick's library write failed):
        # path -> (when, root); and the current backoff of each, kept until it gets in or is dropped.
        self._retry_due: dict[str, tuple[float, Path]] = {}
        self._retry_delay: dict[str, float] = {}
        # path -> (size, mtime_ns) of a file that probed broken: not probed again until it changes
        self._broken: dict[str, tuple[int, int]] = {}

    # -- any thread ----------------------------------------------------------------------------------------
    def add(self, key: str, root: Path, *, fast: bool = False) -> None:
        """A file was written (``fast``: closed after writing, or renamed into place)."""
        with self._mu:
            self._retry_due.pop(key, None)
            cand = self._pending.get(key)
            if cand is None:
                self._pending[key] = Candidate(root, stable_since=time.monotonic(), fast=fast)
            elif fast:
                cand.fast = True
            else:
                cand.stable_since = time.monotonic()

    def discard(self, key: str) -> None:
        with self._mu:
            self._pending.pop(key, None)

    def busy(self) -> bool:
        """Files are waiting to settle (the retry set does not count: it waits for the clock)."""
        with self._mu:
            return bool(self._pending)

    def retry_later(self, key: str, root: Path, why: str | None) -> None:
        """Probe ``key`` again later, with backoff."""
        with self._mu:
            self._retry_later(key, root, why)

    def forget_broken(self, key: str) -> None:
        with self._mu:
            self._broken.pop(key, None)

    def mark_broken(self, key: str, st: os.stat_result) -> None:
        with self._mu:
            self._broken[key] = (st.st_size, st.st_mtime_ns)

    # -- the watcher's thread ------------------------------------------------------------------------------
    def take_settled(self, now: float, limit: int) -> list[Settled]:
        """The files that settled (at most ``limit``); they leave the queue. Retries that are due join it."""
        with self._mu:
            for key, (due, root) in list(self._retry_due.items()):
                if due <= now and key not in self._pending:
                    del self._retry_due[key]
                    self._pending[key] = Candidate(root, fast=True)
            ready: list[Settled] = []
            for key, cand in list(self._pending.items()):
                if self._settled(key, cand, now):
                    ready.append((key, cand))
                    if len(ready) >= limit:
                        break
            return ready

    def requeue(self, settled: list[Settled]) -> None:
        """Their tick failed (its library write): look at them again soon."""
        with self._mu:
            for key, cand in settled:
                self._pending.setdefault(key, Candidate(cand.root, fast=True))

    def probe(self, settled: list[Settled]) -> Probed:
        """Probe the settled files in batches; a file that changed meanwhile waits to settle again, one that
        could not be read goes to the retry set, one that does not decode is remembered as broken."""
        out = Probed()
        results = media.probe_many([Path(k) for k, _ in settled])
        for (key, cand), result in zip(settled, results, strict=True):
            try:
                st = os.lstat(key)
            except OSError:
                continue
            with self._mu:
                if (st.st_size, st.st_mtime_ns) != (cand.size, cand.mtime_ns):
                    # It changed while we probed: a writer is still at it. Look again after it settles.
                    self._pending.setdefault(key, Candidate(cand.root, stable_since=time.monotonic()))
                    continue
                if result.ok:
                    self._broken.pop(key, None)
                elif result.transient:
                    self._retry_later(key, cand.root, result.error)
                    continue
                else:
                    self._broken[key] = (st.st_size, st.st_mtime_ns)
                    self._retry_delay.pop(key, None)
            if not result.ok:
                out.broken += 1
                log.info("not importing %s: %s (will look again if it changes)", key, result.error)
                continue
            out.entries.append((Path(key), media.import_fields(Path(key), result)))
            out.idents[key] = identity(st)
            out.thumbs.append((Path(key), result.duration_s))
        return out

    def imported(self, keys: list[str]) -> None:
        """These files are in the library: their backoff ends."""
        with self._mu:
            for key in keys:
                self._retry_delay.pop(key, None)

    # -- with the lock held --------------------------------------------------------------------------------
    def _settled(self, key: str, cand: Candidate, now: float) -> bool:
        """True when ``key`` settled and is to be probed (it leaves the queue). False while it waits, or when
        it left the queue for good: gone, not a plain file, empty, or still the file that probed broken."""
        try:
            st = os.lstat(key)
        except OSError as exc:
            del self._pending[key]
            if is_gone_error(exc):
                self._retry_delay.pop(key, None)
            else:
                self._retry_later(key, cand.root, exc.strerror or str(exc))
            return False
        if not stat.S_ISREG(st.st_mode):
            del self._pending[key]
            self.notes(Path(key), "symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file")
            return False
        if (st.st_size, st.st_mtime_ns) != (cand.size, cand.mtime_ns):
            cand.size, cand.mtime_ns, cand.stable_since = st.st_size, st.st_mtime_ns, now
            return False
        if now - cand.stable_since < (self.fast_settle_s if cand.fast else self.settle_s):
            return False
        del self._pending[key]
        if st.st_size == 0:
            self.notes(Path(key), "empty file (0 bytes)")
            return False
        return self._broken.get(key) != (st.st_size, st.st_mtime_ns)  # probed before and unchanged: broken

    def _retry_later(self, key: str, root: Path, why: str | None) -> None:
        delay = self._retry_delay.get(key)
        delay = RETRY_FIRST_S if delay is None else min(RETRY_MAX_S, delay * 2)
        if key not in self._retry_delay and why is not None:
            log.info("cannot import %s yet: %s; trying again (with backoff, up to every %.0f s)",
                     key, why, RETRY_MAX_S)
        self._retry_delay[key] = delay
        self._retry_due[key] = (time.monotonic() + delay, root)
