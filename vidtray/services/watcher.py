"""Watch folders -> finished videos -> library.json.

``Watcher`` wires the parts in ``vidtray.services.watch`` together and runs the ticks. Threads (all
named, none touches a UI):

* watchdog's observer threads only record what happened (``watch.intake``);
* ``vidtray-watcher`` reconciles with the disk on start (``watch.reconcile``), then every tick takes the
  files whose size and mtime stayed unchanged for the settle time (``watch.settle``), probes them in
  batches, and writes ONE library update for everything it learned in that tick (imports, deletions,
  moves, sidecars: ``watch.sync``); it also re-arms watch folders that vanished and came back
  (``watch.folders``);
* ``vidtray-thumbs`` makes thumbnails after the entries are in, so thumbnails never slow an import
  (``watch.thumbs``).

Nothing that failed for a reason that can pass is dropped: a tick whose library write failed (a full
disk, another program's bad item) puts everything it learned back and is retried with backoff; a file
that could not be read (permission, I/O) goes to a retry set with its own backoff; entries that another
program's unlocked write dropped a moment after they were imported are imported again. A folder that
cannot be listed is "unknown", never "empty": its videos are not marked missing. A file the user
removed from the library (``lib.removed``) stays out, on events and on reconcile alike.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vidtray.services.backoff import Backoff
from vidtray.services.fsutil import private_dir
from vidtray.services.library import Library
from vidtray.services.sidecar import sidecar_fields
from vidtray.services.watch.files import LogOnce, gone
from vidtray.services.watch.folders import FolderWatch, Spellings, distinct_folders
from vidtray.services.watch.intake import EventHandler, Intake, News
from vidtray.services.watch.reconcile import MAX_PROBE_PER_TICK, Reconciler, ScanReport
from vidtray.services.watch.settle import Probed, Settled, SettleQueue
from vidtray.services.watch.sync import Findings, LibrarySync
from vidtray.services.watch.thumbs import ThumbnailWorker

if TYPE_CHECKING:
    from vidtray.config import Config

__all__ = ["DEFAULT_SETTLE_S", "ScanReport", "Watcher", "watch_folders", "watcher_for"]

log = logging.getLogger("vidtray.watcher")

DEFAULT_SETTLE_S = 1.5
DEFAULT_FAST_SETTLE_S = 0.2
DEFAULT_RETRY_S = 5.0


class Watcher:
    """Imports finished videos from ``folders`` (recursively) into ``lib``."""

    def __init__(self, lib: Library, folders: Sequence[Path], *, thumbnails_dir: Path | None = None,
                 settle_s: float = DEFAULT_SETTLE_S, fast_settle_s: float | None = None,
                 retry_s: float = DEFAULT_RETRY_S) -> None:
        self.lib = lib
        # Absolute so event paths compare; one folder reached twice (a watch_dirs entry that is a symlink
        # to the videos folder) is watched once, under the spelling listed first.
        self.folders: list[Path] = distinct_folders(folders)
        self.thumbnails_dir = thumbnails_dir
        self.settle_s = float(settle_s)
        fast = DEFAULT_FAST_SETTLE_S if fast_settle_s is None else fast_settle_s
        self.fast_settle_s = min(self.settle_s, fast)
        self.retry_s = float(retry_s)
        self._tick = max(0.02, min(0.25, self.fast_settle_s / 2 if self.fast_settle_s else 0.05))
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        #: counters for tests, benchmarks and the log
        self.stats = {"imported": 0, "updated": 0, "missing": 0, "skipped": 0, "writes": 0}
        spellings = Spellings(self.folders)
        notes = LogOnce()
        self._settle = SettleQueue(self.settle_s, self.fast_settle_s, notes)
        self._intake = Intake(self.folders, self._settle, notes, on_news=self._idle.clear)
        self._sync = LibrarySync(lib, spellings, self.stats)
        self._reconciler = Reconciler(lib, spellings, self._settle, self._sync, notes, self.settle_s)
        self._watch = FolderWatch(self.folders, lambda root: EventHandler(self._intake, spellings, root),
                                  self.retry_s)
        self._notes = notes
        self._guard = Backoff(log, "the watcher")
        self._thread: threading.Thread | None = None
        self._thumbs: ThumbnailWorker | None = None
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Arm the observers, then reconcile and watch in the background. Returns at once."""
        if self._started:
            return
        self._started = True
        self._watch.start()
        if self.thumbnails_dir is not None:
            self._thumbs = ThumbnailWorker(self.lib, self.thumbnails_dir, on_write=self._sync.own_write)
            self._thumbs.start()
        self._thread = threading.Thread(target=self._run, name="vidtray-watcher", daemon=True)
        self._thread.start()
        log.info("watching %s (settle %.2f s)", ", ".join(map(str, self.folders)), self.settle_s)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching; what is already settled and probed is written first. Idempotent."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        self._wake.set()
        self._watch.stop()
        if self._thread is not None:
            self._thread.join(timeout)
        self._watch.join(timeout)
        if self._thumbs is not None:
            self._thumbs.stop(timeout)
        log.info("watcher stopped (%s)", self.stats)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing is pending (tests, benchmark). True if it got idle in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = self._intake.busy() or self._settle.busy()
            if not busy and self._idle.is_set() and (self._thumbs is None or self._thumbs.idle()):
                return True
            time.sleep(0.02)
        return False

    # -- reconcile ---------------------------------------------------------------------------------------
    def reconcile(self, folders: Iterable[Path] | None = None, *, queue_busy: bool = False) -> ScanReport:
        """Bring the library in line with the disk: import new/changed videos, mark vanished ones missing.

        ``queue_busy``: files modified within the settle time go to the watch queue (when watching).
        """
        roots = list(self.folders if folders is None else folders)
        done = self._reconciler.run(roots, every_folder=folders is None, watching=queue_busy)
        for path, root in done.busy:
            self._intake.candidate(path, root)
        self._reimport(done.lost)
        if queue_busy:
            self._watch.unlisted.update(done.report.unreadable)
        if done.thumbs:
            if self._thumbs is not None:
                self._thumbs.put(done.thumbs)
            elif self.thumbnails_dir is not None and not queue_busy:
                ThumbnailWorker(self.lib, self.thumbnails_dir).run_batch(done.thumbs)
        return done.report

    # -- the worker thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        # Never let a failure end the watcher: a library locked too long, a full disk, an item another
        # program wrote that makes the merge raise. A failed round is logged once and retried with backoff
        # (what it had taken is put back first); the start-up reconcile is retried the same way.
        reconciled = False
        next_check = time.monotonic() + self.retry_s
        while not self._stop.is_set():
            try:
                worked = False
                if not reconciled:
                    self.reconcile(queue_busy=True)
                    reconciled = worked = True
                worked = self._process_once() or worked
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.retry_s
                    self._check()
            except Exception as exc:
                self._stop.wait(self._guard.failed(exc))
                continue
            if worked:  # a round that only waited for files to settle proves nothing
                self._guard.succeeded()
            self._wake.wait(self._tick)
            self._wake.clear()
        try:
            self._process_once(final=True)
        except Exception:
            log.exception("final flush failed")
        self._idle.set()

    def _check(self) -> None:
        """Every ``retry_s``: the observer, folders that vanished or came back, writes lost to other
        programs, and sub-folders that could not be listed before."""
        self._watch.check_observer(self._stop.is_set())
        for folder in self._watch.check_folders():
            self.reconcile(folders=[folder], queue_busy=True)
        self._reimport(self._sync.check_lost_writes())
        for folder in self._watch.listable_again():
            self.reconcile(folders=[folder], queue_busy=True)

    def _process_once(self, final: bool = False) -> bool:
        """One round: probe what settled and write what was learned. True if it did that."""
        ready = self._settle.take_settled(time.monotonic(), MAX_PROBE_PER_TICK)
        news = self._intake.take()
        if not (news or ready or self._settle.busy()):
            self._idle.set()
            return False
        if ready and self.lib.removed is not None:
            ready = self._without_removed(ready)
        if not (news or ready):
            return False
        if final:
            log.info("flushing before stop")
        try:
            self._import(ready, news)
        except BaseException:
            # Nothing this tick took is dropped: it is all tried again (after the loop's backoff).
            self._intake.put_back(news)
            self._settle.requeue(ready)
            raise
        return True

    def _import(self, ready: list[Settled], news: News) -> None:
        probed = self._settle.probe(ready) if ready else Probed()
        self.stats["skipped"] += probed.broken
        # Only a sidecar that is vidtray's changes an item: another tool's clip.json never makes it generated
        # (nor takes that away from a clip whose recipe is in the file).
        sides = {k: side for k in news.sidecars if (side := sidecar_fields(Path(k))).get("source") == "generated"}
        found = Findings(entries=probed.entries, moves=list(news.moves), missing={k for k in news.deleted if gone(k)},
                         gone_dirs=set(news.gone_dirs), sidecars=sides, idents=probed.idents)
        self._reimport(self._sync.write(found))
        self._settle.imported([os.fspath(path) for path, _ in probed.entries])
        if self._thumbs is not None:
            self._thumbs.put(probed.thumbs)

    def _without_removed(self, ready: list[Settled]) -> list[Settled]:
        assert self.lib.removed is not None
        removed = self.lib.removed.matcher()
        keep = []
        for key, cand in ready:
            try:
                st = os.lstat(key)
            except OSError:
                continue
            if removed(key, st):
                self._notes(Path(key), "removed from the library by the user "
                                       "(`vidtray library rescan --include-removed` brings it back)")
                continue
            keep.append((key, cand))
        return keep

    def _reimport(self, lost: list[str]) -> None:
        """Entries another program's write dropped (``LibrarySync.lost_entries``): import them again."""
        if not lost:
            return
        log.warning("%d video(s) imported a moment ago vanished from %s while their files stayed (another "
                    "program wrote it without the lock?); importing them again", len(lost), self.lib.path)
        for key in lost:
            self._sync.forget(key)
            self._settle.forget_broken(key)
            root = self._intake.root_of(Path(key))
            if root is not None:
                self._intake.candidate(Path(key), root, fast=True)


def watch_folders(cfg: Config) -> list[Path]:
    """The folders ``vidtray watch`` watches: the videos folder (created if needed) and ``watch_dirs``.

    A configured watch folder that does not exist or is a file is a UserError (exit 2) at start.
    """
    from vidtray.errors import OperationFailed, UserError

    for d in cfg.watch_dirs:
        p = Path(d)
        if not p.exists():
            raise UserError(f"watch folder {p} does not exist (watch_dirs in {cfg.source})")
        if not p.is_dir():
            raise UserError(f"watch folder {p} is not a folder (watch_dirs in {cfg.source})")
    try:
        private_dir(cfg.videos_dir)
    except OSError as exc:
        raise OperationFailed(
            f"cannot create the videos folder {cfg.videos_dir}: {exc.strerror or exc}") from None
    return [cfg.videos_dir, *cfg.watch_dirs]


def watcher_for(cfg: Config, lib: Library, *, settle_s: float | None = None) -> Watcher:
    """A Watcher for a Config. ``VIDTRAY_WATCH_SETTLE_S`` overrides the settle time (tests, slow disks)."""
    if settle_s is None:
        env = os.environ.get("VIDTRAY_WATCH_SETTLE_S")
        try:
            settle_s = float(env) if env else DEFAULT_SETTLE_S
        except ValueError:
            log.warning("ignoring VIDTRAY_WATCH_SETTLE_S=%r: not a number", env)
            settle_s = DEFAULT_SETTLE_S
    return Watcher(lib, watch_folders(cfg), thumbnails_dir=cfg.thumbnails_dir, settle_s=settle_s)
