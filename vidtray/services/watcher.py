"""Watch folders -> finished videos -> library.json.

Threads (all named, none touches a UI):

* watchdog's observer threads only record what happened (``_Handler`` -> ``Watcher._note_*``);
* ``vidtray-watcher`` reconciles with the disk on start, then every tick takes the files whose size and
  mtime stayed unchanged for the settle time (a short one after a close-after-write or a rename into
  place), probes them in batches, and writes ONE library update for everything it learned in that tick
  (imports, deletions, moves, sidecars); it also re-arms watch folders that vanished and came back;
* ``vidtray-thumbs`` makes thumbnails after the entries are in, so thumbnails never slow an import.

A file is imported only if it probes cleanly (decodes to the end): a slow writer that pauses longer than
the settle time still is not imported early, because its partial file does not decode.

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
import queue
import stat
import threading
import time
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidtray.services import media
from vidtray.services.backoff import Backoff
from vidtray.services.fsutil import (
    HIDDEN,
    NOT_A_VIDEO,
    SYMLINK,
    VIDEO_EXTENSIONS,
    private_dir,
    video_name_problem,
    walk_videos,
)
from vidtray.services.library import (
    UNCHANGED,
    Doc,
    Library,
    abs_path,
    doc_mark_missing,
    doc_upsert,
    is_video_name,
    listed_paths,
    merge_import,
    sidecar_fields,
    video_index,
    video_items,
)

log = logging.getLogger("vidtray.watcher")

DEFAULT_SETTLE_S = 1.5
DEFAULT_FAST_SETTLE_S = 0.2
DEFAULT_RETRY_S = 5.0
#: Most files probed per tick; the rest wait for the next one (keeps each library write bounded).
MAX_PROBE_PER_TICK = 512
#: A file that could not be read is tried again after this long, doubling up to RETRY_MAX_S.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
#: For this long after an import, an entry that vanishes from library.json while its file stays was lost
#: to another program's write (it read the file before ours landed): it is imported again.
LOST_WRITE_WINDOW_S = 120.0
#: A batch of thumbnails whose write failed is tried this many times before the next reconcile's turn.
THUMB_ATTEMPTS = 4


def ignore_reason(path: Path, root: Path | None = None) -> str | None:
    """Why ``path`` is not a candidate video (None if it is one). Name-based only; no disk access.

    The finished-video rule (``fsutil.video_name_problem``) for the name and every folder below ``root``,
    plus what library.json needs: a name it can hold as text."""
    rel = path
    if root is not None:
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = path
    if any(part.startswith(".") for part in rel.parts[:-1]):
        return HIDDEN
    return video_name_problem(path.name) or _unencodable(path)


def _unencodable(path: Path) -> str | None:
    # Newlines and tabs are fine (JSON holds them); bytes that are not UTF-8 have no faithful JSON text,
    # so other apps could not find the file by the path in library.json.
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    return None


@dataclass
class ScanReport:
    """What one reconcile found (``vidtray library rescan`` prints it)."""

    imported: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # the user removed them from the library: kept out
    #: folders that could not be listed: what they hold is unknown, so nothing in them is marked missing
    unreadable: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported, "updated": self.updated, "missing": self.missing,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "unavailable_folders": self.unavailable, "unreadable_folders": self.unreadable,
            "removed": self.removed,
        }


@dataclass
class _Candidate:
    root: Path
    size: int = -1
    mtime_ns: int = -1
    stable_since: float = 0.0
    fast: bool = False  # closed after write, or renamed into place: a short settle is enough


class Watcher:
    """Imports finished videos from ``folders`` (recursively) into ``lib``."""

    def __init__(self, lib: Library, folders: Sequence[Path], *, thumbnails_dir: Path | None = None,
                 settle_s: float = DEFAULT_SETTLE_S, fast_settle_s: float | None = None,
                 retry_s: float = DEFAULT_RETRY_S) -> None:
        self.lib = lib
        # Absolute so event paths compare; one folder reached twice (a watch_dirs entry that is a symlink
        # to the videos folder) is watched once, under the spelling listed first.
        self.folders: list[Path] = distinct_folders(folders)
        self._spellings = _Spellings(self.folders)
        self.thumbnails_dir = thumbnails_dir
        self.settle_s = float(settle_s)
        fast = DEFAULT_FAST_SETTLE_S if fast_settle_s is None else fast_settle_s
        self.fast_settle_s = min(self.settle_s, fast)
        self.retry_s = float(retry_s)
        self._tick = max(0.02, min(0.25, self.fast_settle_s / 2 if self.fast_settle_s else 0.05))
        self._mu = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._pending: dict[str, _Candidate] = {}
        self._deleted: set[str] = set()
        self._gone_dirs: set[str] = set()
        self._moves: list[tuple[str, str]] = []
        self._sidecars: set[str] = set()
        self._broken: dict[str, tuple[int, int]] = {}
        # Files to probe again later (could not be read, or their tick's library write failed):
        # path -> (when, root); and the current backoff of each, kept until it gets in or is dropped.
        self._retry_due: dict[str, tuple[float, Path]] = {}
        self._retry_delay: dict[str, float] = {}
        # path -> when this watcher wrote it to the library (see LOST_WRITE_WINDOW_S); the file's
        # (inode, size, mtime) right after our last write.
        self._recent: dict[str, float] = {}
        self._lib_sig: tuple[int, int, int] | None = None
        self._guard = Backoff(log, "the watcher")
        # sub-folders the last reconcile could not list: reconciled again once they can be
        self._unlisted: set[str] = set()
        # (dev, inode, size, mtime_ns) -> path of every video this watcher has seen: a file that left
        # one path and turns up at another with the same identity was moved (the inotify pair can be
        # lost, e.g. into a folder created a moment before, or between two watch folders).
        self._identities: dict[tuple[int, int, int, int], str] = {}
        self._logged: set[tuple[str, str]] = set()
        self._observer: Any = None
        self._watches: dict[Path, tuple[Any, tuple[int, int]]] = {}
        self._down: set[Path] = set()
        self._thread: threading.Thread | None = None
        self._thumbs: _ThumbnailWorker | None = None
        self._started = False
        #: counters for tests, benchmarks and the log
        self.stats = {"imported": 0, "updated": 0, "missing": 0, "skipped": 0, "writes": 0}

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Arm the observers, then reconcile and watch in the background. Returns at once."""
        if self._started:
            return
        self._started = True
        self._observer = _make_observer()
        for folder in self.folders:
            self._arm(folder)
        self._observer.start()
        if self.thumbnails_dir is not None:
            self._thumbs = _ThumbnailWorker(self.lib, self.thumbnails_dir, on_write=self._own_write)
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
        if self._observer is not None:
            self._observer.stop()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._observer is not None:
            self._observer.join(timeout)
        if self._thumbs is not None:
            self._thumbs.stop(timeout)
        log.info("watcher stopped (%s)", self.stats)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing is pending (tests, benchmark). True if it got idle in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._mu:
                busy = bool(self._pending or self._deleted or self._moves or self._sidecars
                            or self._gone_dirs)
            if not busy and self._idle.is_set() and (self._thumbs is None or self._thumbs.idle()):
                return True
            time.sleep(0.02)
        return False

    # -- observers ---------------------------------------------------------------------------------------
    def _arm(self, folder: Path) -> bool:
        from watchdog.events import (
            DirDeletedEvent,
            DirMovedEvent,
            FileClosedEvent,
            FileCreatedEvent,
            FileDeletedEvent,
            FileModifiedEvent,
            FileMovedEvent,
        )

        try:
            st = os.stat(folder)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(f"{folder} is not a folder")
            watch = self._observer.schedule(
                _Handler(self, folder), os.fspath(folder), recursive=True,
                # No open/close-without-write events: our own probes read every file.
                event_filter=[FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent,
                              FileDeletedEvent, DirDeletedEvent, DirMovedEvent],
            )
        except OSError as exc:
            if folder not in self._down:
                log.warning("watch folder %s is not available (%s); retrying every %.0f s",
                            folder, exc.strerror or exc, self.retry_s)
            self._down.add(folder)
            return False
        self._watches[folder] = (watch, (st.st_dev, st.st_ino))
        if folder in self._down:
            log.info("watch folder %s is back", folder)
        self._down.discard(folder)
        return True

    def _check_observer(self) -> None:
        """watchdog's observer thread should never end while we run; if it did, start a new one (the
        folders are re-armed and reconciled by ``_check_folders``, so what happened meanwhile comes in)."""
        if self._observer is None or self._observer.is_alive() or self._stop.is_set():
            return
        log.warning("the file-system observer stopped; starting a new one")
        self._watches.clear()
        self._observer = _make_observer()
        self._observer.start()

    def _check_folders(self) -> list[Path]:
        """Notice folders that vanished (unplugged drive) or came back; returns the ones re-armed."""
        back: list[Path] = []
        for folder in self.folders:
            try:
                st = os.stat(folder)
                ident = (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
            except OSError:
                ident = None
            armed = self._watches.get(folder)
            if armed is not None and ident == armed[1] and _emitter_alive(self._observer, armed[0]):
                continue
            if armed is not None:
                # Gone, replaced, or its inotify watch died with the old folder: drop the stale watch.
                self._watches.pop(folder, None)
                try:
                    self._observer.unschedule(armed[0])
                except Exception:  # watchdog raises KeyError/OSError for a watch whose emitter already ended
                    log.debug("unschedule %s", folder, exc_info=True)
                if ident is None:
                    log.warning("watch folder %s vanished; the watcher keeps running and retries "
                                "every %.0f s", folder, self.retry_s)
                    self._down.add(folder)
            if ident is not None and self._arm(folder):
                back.append(folder)
        return back

    # -- event intake (observer threads) -----------------------------------------------------------------
    def _root_of(self, path: Path) -> Path | None:
        for folder in self.folders:
            if path == folder or folder in path.parents:
                return folder
        return None

    def _note_candidate(self, path: Path, root: Path, *, fast: bool = False) -> None:
        why = ignore_reason(path, root)
        if why is not None:
            if path.suffix.lower() == ".json" and not path.name.startswith("."):
                self._note_sidecar(path)
            else:
                self._log_once(path, why)
            return
        key = os.fspath(path)
        with self._mu:
            self._retry_due.pop(key, None)
            cand = self._pending.get(key)
            if cand is None:
                self._pending[key] = _Candidate(root, stable_since=time.monotonic(), fast=fast)
            elif fast:
                cand.fast = True
            else:
                cand.stable_since = time.monotonic()
        self._idle.clear()

    def _note_sidecar(self, sidecar: Path) -> None:
        with self._mu:
            for ext in VIDEO_EXTENSIONS:
                video = sidecar.with_suffix(ext)
                if os.path.lexists(video):
                    self._sidecars.add(os.fspath(video))
        self._idle.clear()

    def _note_deleted(self, path: Path) -> None:
        if is_video_name(path):
            with self._mu:
                self._deleted.add(os.fspath(path))
                self._pending.pop(os.fspath(path), None)
            self._idle.clear()

    def _note_moved(self, src: Path, dest: Path) -> None:
        src_root, dest_root = self._root_of(src), self._root_of(dest)
        if is_video_name(src) and ignore_reason(src, src_root) is None:
            if dest_root is not None and ignore_reason(dest, dest_root) is None:
                with self._mu:
                    self._moves.append((os.fspath(src), os.fspath(dest)))
            else:
                self._note_deleted(src)
        if dest_root is not None:
            self._note_candidate(dest, dest_root, fast=True)

    def _note_dir_gone(self, path: Path) -> None:
        if path in self.folders:
            return  # the folder itself: handled (and retried) by _check_folders, entries stay as they are
        with self._mu:
            self._gone_dirs.add(os.fspath(path))
        self._idle.clear()

    def _log_once(self, path: Path, why: str) -> None:
        key = (os.fspath(path), why)
        if key in self._logged:
            return
        if len(self._logged) > 10_000:
            self._logged.clear()
        self._logged.add(key)
        level = logging.DEBUG if why.startswith(("hidden", "temporary")) else logging.INFO
        log.log(level, "ignoring %s: %s", path, why)

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
                    self._check_observer()
                    for folder in self._check_folders():
                        self.reconcile(folders=[folder], queue_busy=True)
                    self._check_lost_writes()
                    self._check_unlisted()
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

    def _process_once(self, final: bool = False) -> bool:
        """One round: probe what settled and write what was learned. True if it did that."""
        now = time.monotonic()
        with self._mu:
            for key, (due, root) in list(self._retry_due.items()):
                if due <= now and key not in self._pending:
                    del self._retry_due[key]
                    self._pending[key] = _Candidate(root, fast=True)
            moves, self._moves = self._moves, []
            deleted, self._deleted = self._deleted, set()
            gone_dirs, self._gone_dirs = self._gone_dirs, set()
            sidecars, self._sidecars = self._sidecars, set()
            ready: list[tuple[str, _Candidate]] = []
            for key, cand in list(self._pending.items()):
                try:
                    st = os.lstat(key)
                except OSError as exc:
                    del self._pending[key]
                    if not _is_gone_error(exc):
                        self._schedule_retry(key, cand.root, exc.strerror or str(exc))
                    else:
                        self._retry_delay.pop(key, None)
                    continue
                if not stat.S_ISREG(st.st_mode):
                    del self._pending[key]
                    self._log_once(Path(key), "symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file")
                    continue
                if (st.st_size, st.st_mtime_ns) != (cand.size, cand.mtime_ns):
                    cand.size, cand.mtime_ns, cand.stable_since = st.st_size, st.st_mtime_ns, now
                    continue
                wait = self.fast_settle_s if cand.fast else self.settle_s
                if now - cand.stable_since < wait:
                    continue
                del self._pending[key]
                if st.st_size == 0:
                    self._log_once(Path(key), "empty file (0 bytes)")
                    continue
                if self._broken.get(key) == (st.st_size, st.st_mtime_ns):
                    continue  # probed before, unchanged since: still broken
                ready.append((key, cand))
                if len(ready) >= MAX_PROBE_PER_TICK:
                    break
            idle = not (moves or deleted or gone_dirs or sidecars or ready or self._pending)
        if idle:
            self._idle.set()
            return False
        if ready and self.lib.removed is not None:
            ready = self._without_removed(ready)
        if not (moves or deleted or gone_dirs or sidecars or ready):
            return False
        if final:
            log.info("flushing before stop")
        try:
            self._import(ready, moves, deleted, gone_dirs, sidecars)
        except BaseException:
            # Nothing this tick took is dropped: it is all tried again (after the loop's backoff).
            with self._mu:
                self._moves[:0] = moves
                self._deleted |= deleted
                self._gone_dirs |= gone_dirs
                self._sidecars |= sidecars
                for key, cand in ready:
                    self._pending.setdefault(key, _Candidate(cand.root, fast=True))
            raise
        return True

    def _import(self, ready: list[tuple[str, _Candidate]], moves: list[tuple[str, str]], deleted: set[str],
                gone_dirs: set[str], sidecars: set[str]) -> None:
        entries: list[tuple[Path, dict[str, Any]]] = []
        idents: dict[str, tuple[int, int, int, int]] = {}
        if ready:
            keys = [k for k, _ in ready]
            results = media.probe_many([Path(k) for k in keys])
            for (key, cand), result in zip(ready, results, strict=True):
                try:
                    st = os.lstat(key)
                    sig = (st.st_size, st.st_mtime_ns)
                except OSError:
                    continue
                if sig != (cand.size, cand.mtime_ns):
                    # It changed while we probed: a writer is still at it. Look again after it settles.
                    with self._mu:
                        self._pending.setdefault(key, _Candidate(cand.root, stable_since=time.monotonic()))
                    continue
                if not result.ok:
                    if result.transient:
                        with self._mu:
                            self._schedule_retry(key, cand.root, result.error)
                        continue
                    self._broken[key] = sig
                    self._retry_delay.pop(key, None)
                    self.stats["skipped"] += 1
                    log.info("not importing %s: %s (will look again if it changes)", key, result.error)
                    continue
                self._broken.pop(key, None)
                entries.append((Path(key), media.import_fields(Path(key), result)))
                idents[key] = _identity(st)
        missing_keys = {k for k in deleted if _gone(k)}
        sidecar_fields_by_path = {k: sidecar_fields(Path(k)) for k in sidecars}
        summary = self._write(entries, moves, missing_keys, gone_dirs, sidecar_fields_by_path, idents)
        for path, _ in entries:
            self._retry_delay.pop(os.fspath(path), None)
        if summary and self._thumbs is not None:
            self._thumbs.put([(p, f.get("duration_s")) for p, f in entries])

    def _without_removed(self, ready: list[tuple[str, _Candidate]]) -> list[tuple[str, _Candidate]]:
        assert self.lib.removed is not None
        removed = self.lib.removed.matcher()
        keep = []
        for key, cand in ready:
            try:
                st = os.lstat(key)
            except OSError:
                continue
            if removed(key, st):
                self._log_once(Path(key), "removed from the library by the user "
                                          "(`vidtray library rescan --include-removed` brings it back)")
                continue
            keep.append((key, cand))
        return keep

    def _schedule_retry(self, key: str, root: Path, why: str | None) -> None:
        """Probe ``key`` again later, with backoff (call with ``_mu`` held)."""
        delay = self._retry_delay.get(key)
        delay = RETRY_FIRST_S if delay is None else min(RETRY_MAX_S, delay * 2)
        if key not in self._retry_delay and why is not None:
            log.info("cannot import %s yet: %s; trying again (with backoff, up to every %.0f s)",
                     key, why, RETRY_MAX_S)
        self._retry_delay[key] = delay
        self._retry_due[key] = (time.monotonic() + delay, root)

    def _write(self, entries: list[tuple[Path, dict[str, Any]]], moves: list[tuple[str, str]],
               missing: set[str], gone_dirs: set[str], sidecars: dict[str, dict[str, Any]],
               idents: dict[str, tuple[int, int, int, int]] | None = None) -> bool:
        """One read-modify-write of the library for everything one tick learned."""
        if not (entries or moves or missing or gone_dirs or sidecars):
            return False
        counts = {"imported": 0, "updated": 0, "missing": 0}
        idents = idents or {}
        # A new path whose file was last seen at a path that is gone now: a move inotify did not pair.
        for key, ident in idents.items():
            old = self._identities.get(ident)
            if old is not None and old != key and _gone(old):
                moves.append((old, key))
        lost: list[str] = []

        def apply(doc: Doc) -> Any:
            nonlocal missing, gone_dirs, sidecars
            index = video_index(doc)
            if self._spellings.overlap:
                missing, gone_dirs, sidecars = self._spellings.as_listed(index, entries, moves, missing,
                                                                         gone_dirs, sidecars)
            changed = False
            for src, dest in moves:
                item = index.get(src)
                if item is not None and dest not in index:
                    # A move keeps the entry (id, tags, pins, an edited title) under its new path.
                    item["path"] = dest
                    if item.get("title") == Path(src).stem:
                        item["title"] = Path(dest).stem
                    del index[src]
                    index[dest] = item
                    changed = True
            before = len(index)
            known = {os.fspath(abs_path(p)) for p, _ in entries} & index.keys()
            _, upserted = doc_upsert(doc, entries, index)
            lost[:] = self._lost_entries(listed_paths(doc))
            counts["imported"] = len(index) - before
            counts["updated"] = len(known)
            changed = changed or upserted
            gone = set(missing)
            for d in gone_dirs:
                if _gone(d):
                    prefix = d.rstrip(os.sep) + os.sep
                    gone.update(k for k in index if k.startswith(prefix) and _gone(k))
            counts["missing"] = doc_mark_missing(doc, gone)
            changed = changed or bool(counts["missing"])
            for key, fields in sidecars.items():
                item = index.get(key)
                if item is not None and merge_import(item, fields, set_ready=False):
                    changed = True
            return None if changed else UNCHANGED

        result = self.lib.update(apply)
        for key, ident in idents.items():
            self._identities[ident] = key
        if result is not UNCHANGED:
            self.stats["writes"] += 1
            self._own_write()
        now = time.monotonic()
        for path, _ in entries:
            self._recent[os.fspath(abs_path(path))] = now
        self._reimport(lost)
        for k in ("imported", "updated", "missing"):
            self.stats[k] += counts[k]
        if any(counts.values()):
            log.info("library: %d imported, %d updated, %d missing", counts["imported"], counts["updated"],
                     counts["missing"])
        return True

    def _check_unlisted(self) -> None:
        """A folder that could not be listed (permission) and can be now: import what it holds."""
        for folder in sorted(self._unlisted):
            try:
                os.scandir(folder).close()
            except OSError as exc:
                if _is_gone_error(exc):
                    self._unlisted.discard(folder)
                continue
            self._unlisted.discard(folder)
            log.info("folder %s can be listed again", folder)
            self.reconcile(folders=[Path(folder)], queue_busy=True)

    # -- writes lost to other programs ------------------------------------------------------------------
    def _own_write(self) -> None:
        """library.json as we (or our thumbnail thread) just wrote it: only a change after this is foreign.
        The library's record of the bytes it wrote, not a stat now: another program's write that lands
        between ours and a stat would pass for ours and its loss would go unseen."""
        self._lib_sig = self.lib.written_sig

    def _lost_entries(self, listed: Container[str]) -> list[str]:
        """Videos this watcher wrote a moment ago that the library no longer lists (``listed``: every path
        its video entries hold, unusable ones included) although their files are still there."""
        if not self._recent:
            return []
        now = time.monotonic()
        for key in [k for k, t in self._recent.items() if now - t > LOST_WRITE_WINDOW_S]:
            del self._recent[key]
        lost = [k for k in self._recent if k not in listed and os.path.lexists(k)]
        if lost and self.lib.removed is not None:
            # Gone from the library because the user removed it (`vidtray library remove`), not lost.
            removed = self.lib.removed.matcher()
            for key in [k for k in lost if _removed_now(removed, k)]:
                del self._recent[key]
                lost.remove(key)
        return lost

    def _check_lost_writes(self) -> None:
        """Another program that writes library.json without the lock can drop what we just wrote (it read
        the file before our write landed): notice it when the file changes, and import those again."""
        if not self._recent:
            return
        sig = _file_sig(self.lib.path)
        if sig == self._lib_sig:
            self._lost_entries(())  # only ages the window
            return
        self._lib_sig = sig
        self._reimport(self._lost_entries(listed_paths(self.lib.document())))

    def _reimport(self, lost: list[str]) -> None:
        if not lost:
            return
        log.warning("%d video(s) imported a moment ago vanished from %s while their files stayed (another "
                    "program wrote it without the lock?); importing them again", len(lost), self.lib.path)
        for key in lost:
            self._recent.pop(key, None)
            self._broken.pop(key, None)
            root = self._root_of(Path(key))
            if root is not None:
                self._note_candidate(Path(key), root, fast=True)

    # -- reconcile ---------------------------------------------------------------------------------------
    def reconcile(self, folders: Iterable[Path] | None = None, *, queue_busy: bool = False) -> ScanReport:
        """Bring the library in line with the disk: import new/changed videos, mark vanished ones missing.

        ``queue_busy``: files modified within the settle time go to the watch queue (when watching).
        """
        report = ScanReport()
        roots = list(self.folders if folders is None else folders)
        available: list[Path] = []
        for root in roots:
            if os.path.isdir(root):
                available.append(root)
            else:
                report.unavailable.append(os.fspath(root))
        found: dict[str, tuple[Path, os.stat_result]] = {}
        doc = self.lib.document()
        index = video_index(doc)
        overlap = self._spellings.overlap
        for root in available:
            for path, st in self._walk(root, report):
                key = os.fspath(path)
                if overlap:
                    # One file under two watch folders (a symlink to the videos folder): one entry, under
                    # the path the library already lists it by, else under the first folder's.
                    key, root_of_key = self._spellings.preferred(key, index)
                    if key in found:
                        continue
                    found[key] = (root_of_key, st)
                else:
                    found[key] = (root, st)
                self._identities[_identity(st)] = key
        removed = self.lib.removed.matcher() if self.lib.removed is not None else None
        if removed is not None and folders is None and not report.unavailable:
            # Every folder was walked: forget removed files that are gone from all of them.
            self.lib.removed.prune(available, ((k, st) for k, (_, st) in found.items()))
        prefixes = tuple(os.fspath(r).rstrip(os.sep) + os.sep for r in available)
        # What a folder we could not list holds is unknown: none of it is "missing".
        unknown = tuple(d.rstrip(os.sep) + os.sep for d in report.unreadable)
        missing = {k for k, item in index.items()
                   if k.startswith(prefixes) and k not in found and item.get("status") != "missing"
                   and not (unknown and k.startswith(unknown)) and _gone(k)}
        now = time.time()
        to_probe: list[str] = []
        sidecars: dict[str, dict[str, Any]] = {}
        thumbs: list[tuple[Path, Any]] = []
        for key, (root, st) in found.items():
            item = index.get(key)
            if item is None and removed is not None and removed(key, st):
                report.removed.append(key)
                continue
            if item is not None and item.get("status") == "ready" and item.get("size_bytes") == st.st_size:
                side = sidecar_fields(Path(key))
                if side.get("source") == "generated" and any(item.get(k) != v for k, v in side.items()):
                    sidecars[key] = side
                if not _thumbnail_ok(item):
                    thumbs.append((Path(key), item.get("duration_s")))
                continue
            if st.st_size == 0:
                report.skipped.append((key, "empty file (0 bytes)"))
                continue
            if queue_busy and now - st.st_mtime < self.settle_s:
                # Modified just now: let the watch queue see it settle. A one-shot rescan relies on the
                # probe alone (a file still being written does not decode to the end).
                self._note_candidate(Path(key), root)
                continue
            to_probe.append(key)
        entries: list[tuple[Path, dict[str, Any]]] = []
        for start in range(0, len(to_probe), MAX_PROBE_PER_TICK):
            chunk = to_probe[start:start + MAX_PROBE_PER_TICK]
            for key, result in zip(chunk, media.probe_many([Path(k) for k in chunk]), strict=True):
                if result.ok:
                    entries.append((Path(key), media.import_fields(Path(key), result)))
                    (report.updated if key in index else report.imported).append(key)
                    thumbs.append((Path(key), result.duration_s))
                else:
                    report.skipped.append((key, result.error or "does not decode"))
                    if result.transient:
                        if queue_busy:
                            with self._mu:
                                self._schedule_retry(key, found[key][0], result.error)
                        continue
                    st = found[key][1]
                    self._broken[key] = (st.st_size, st.st_mtime_ns)
        report.missing = sorted(missing)
        self._write(entries, [], missing, set(), sidecars)
        if queue_busy:
            self._unlisted.update(report.unreadable)
        for key, why in report.skipped:
            log.info("rescan: not importing %s: %s", key, why)
        log.info("reconciled %s: %d imported, %d updated, %d missing, %d skipped, %d kept out (removed)",
                 ", ".join(map(os.fspath, available)) or "(no folder available)", len(report.imported),
                 len(report.updated), len(report.missing), len(report.skipped), len(report.removed))
        if thumbs:
            if self._thumbs is not None:
                self._thumbs.put(thumbs)
            elif self.thumbnails_dir is not None and not queue_busy:
                _ThumbnailWorker(self.lib, self.thumbnails_dir).run_batch(thumbs)
        return report

    def _walk(self, root: Path, report: ScanReport) -> Iterable[tuple[Path, os.stat_result]]:
        """The finished videos under ``root`` (``fsutil.walk_videos``: no symlinks followed, no hidden
        folders), each with a name library.json can hold; what is passed over is logged once and, if a
        person would look for it in the library, listed in ``report.skipped``."""

        def onerror(exc: OSError) -> None:
            if _is_gone_error(exc):
                return  # removed while we walked
            log.warning("cannot list %s: %s; its videos are left as they are", exc.filename, exc.strerror)
            report.unreadable.append(os.fspath(exc.filename))

        def passed_over(path: str, why: str) -> None:
            if why in (NOT_A_VIDEO, SYMLINK):
                self._log_once(Path(path), why)
            if why == SYMLINK:
                report.skipped.append((path, why))

        for name, st in walk_videos(os.fspath(root), on_error=onerror, on_skip=passed_over):
            path = Path(name)
            why = _unencodable(path)
            if why is not None:
                self._log_once(path, why)
                report.skipped.append((name, why))
                continue
            yield path, st


class _Handler:
    """watchdog handler: classify the event and hand it to the Watcher (runs on the observer thread)."""

    def __init__(self, watcher: Watcher, root: Path) -> None:
        self.watcher = watcher
        self.root = root

    def _canon(self, raw: Any) -> Path | None:
        """The event's path as the watcher names that file (where watch folders overlap, two observers
        report one file under two paths: both become the first folder's)."""
        if not raw:
            return None
        path = os.fsdecode(raw)
        return Path(self.watcher._spellings.canonical(path) if self.watcher._spellings.overlap else path)

    def _root_for(self, path: Path | None) -> Path:
        if path is None or not self.watcher._spellings.overlap:
            return self.root
        return self.watcher._spellings.root_of(os.fspath(path)) or self.root

    def dispatch(self, event: Any) -> None:
        try:
            self._dispatch(event)
        except Exception:  # an odd event must not kill watchdog's dispatcher thread
            log.exception("cannot handle %r", event)

    def _dispatch(self, event: Any) -> None:
        kind = event.event_type
        src = self._canon(event.src_path)
        root = self._root_for(src)
        if event.is_directory:
            if kind == "deleted" and src is not None:
                self.watcher._note_dir_gone(src)
            elif kind == "moved" and src is not None:
                # A folder moved within the watched tree: its files arrive as their own move events.
                # Moved out of it: its entries are missing now.
                dest = self._canon(event.dest_path)
                if dest is None or self.watcher._root_of(dest) is None:
                    self.watcher._note_dir_gone(src)
            return
        if src is None and kind != "moved":
            return
        if kind in ("created", "modified"):
            self.watcher._note_candidate(src, root)
        elif kind == "closed":
            self.watcher._note_candidate(src, root, fast=True)
        elif kind == "deleted":
            self.watcher._note_deleted(src)
        elif kind == "moved":
            dest = self._canon(event.dest_path)
            if src is not None and dest is not None:
                self.watcher._note_moved(src, dest)
            elif dest is not None:
                self.watcher._note_candidate(dest, self._root_for(dest), fast=True)
            elif src is not None:
                self.watcher._note_deleted(src)


def _is_gone_error(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError | NotADirectoryError)


def _gone(path: str) -> bool:
    """True only if ``path`` is known not to exist: a path we may not look at (permission, I/O error) is
    unknown, and an unknown video is never marked missing."""
    try:
        os.lstat(path)
    except OSError as exc:
        return _is_gone_error(exc)
    return False


def _file_sig(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _removed_now(removed: Any, path: str) -> bool:
    try:
        return bool(removed(path, os.lstat(path)))
    except OSError:
        return False


def distinct_folders(folders: Iterable[Path]) -> list[Path]:
    """``folders`` as absolute paths (not resolved), each real folder once: a later entry that is the same
    folder as an earlier one (a symlink to it, the same path spelled otherwise, a bind mount) is dropped."""
    out: list[Path] = []
    seen: set[Any] = set()
    for folder in folders:
        path = abs_path(folder)
        keys: list[Any] = [os.path.realpath(path)]
        try:
            st = os.stat(path)
            keys.append((st.st_dev, st.st_ino))
        except OSError:
            pass  # not there (yet): its resolved path is all we can compare
        if any(k in seen for k in keys):
            first = next((f for f in out if os.path.realpath(f) == keys[0] or _same_dir(f, keys[1:])), None)
            log.info("watch folder %s is the same folder as %s; watching it once", path, first)
            continue
        seen.update(keys)
        out.append(path)
    return out


def _same_dir(folder: Path, idents: list[Any]) -> bool:
    try:
        st = os.stat(folder)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) in idents


def _under(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder`` ('' for the folder itself), or None when it is not inside it."""
    if path == folder:
        return ""
    prefix = folder.rstrip(os.sep) + os.sep
    return path[len(prefix):] if path.startswith(prefix) else None


class _Spellings:
    """Paths of one file under overlapping watch folders.

    A watch folder inside another through a symlink (``watch_dirs = ["~/clips"]`` where ``~/clips`` links
    to the data folder that holds the videos folder) shows each file there under two paths. The watcher
    names such a file by the path the library already lists it under, else by the first watch folder's
    path (the videos folder comes first), so existing entries keep their paths and nothing is listed twice.
    Computed from the folders' resolved paths alone (walks and inotify never follow a symlink below a
    watch folder), so a path costs no system call.
    """

    def __init__(self, folders: Sequence[Path]) -> None:
        self.roots = [(os.fspath(f), os.path.realpath(f), f) for f in folders]
        reals = [real for _, real, _ in self.roots]
        self.overlap = any(i != j and _under(a, b) is not None
                           for i, a in enumerate(reals) for j, b in enumerate(reals))

    def all(self, path: str) -> list[tuple[str, Path]]:
        """(path, watch folder) for every watch folder that sees this file, in folder order."""
        real = self._real(path)
        out: list[tuple[str, Path]] = []
        if real is not None:
            for spelled, resolved, folder in self.roots:
                rel = _under(real, resolved)
                # A folder sees what is in it, except below hidden folders (never walked, never imported).
                if rel is None or any(part.startswith(".") for part in rel.split(os.sep)[:-1]):
                    continue
                alias = os.path.join(spelled, rel) if rel else spelled
                if all(alias != a for a, _ in out):
                    out.append((alias, folder))
        if not any(a == path for a, _ in out):
            root = self.root_of(path)
            out.append((path, root if root is not None else Path(path).parent))
        return out

    def canonical(self, path: str) -> str:
        return self.all(path)[0][0]

    def preferred(self, path: str, index: dict[str, Any]) -> tuple[str, Path]:
        """The path the library lists this file under (the first such), else the canonical one."""
        spellings = self.all(path)
        return next((s for s in spellings if s[0] in index), spellings[0])

    def root_of(self, path: str) -> Path | None:
        best: tuple[str, Path] | None = None
        for spelled, _, folder in self.roots:
            if _under(path, spelled) is not None and (best is None or len(spelled) > len(best[0])):
                best = (spelled, folder)
        return None if best is None else best[1]

    def _real(self, path: str) -> str | None:
        best: tuple[str, str] | None = None
        for spelled, resolved, _ in self.roots:
            if _under(path, spelled) is not None and (best is None or len(spelled) > len(best[0])):
                best = (spelled, resolved)
        if best is None:
            return None
        rel = _under(path, best[0])
        return os.path.join(best[1], rel) if rel else best[1]

    def as_listed(self, index: dict[str, Any], entries: list[tuple[Path, dict[str, Any]]],
                  moves: list[tuple[str, str]], missing: set[str], gone_dirs: set[str],
                  sidecars: dict[str, dict[str, Any]]) -> tuple[set[str], set[str], dict[str, dict[str, Any]]]:
        """One tick's findings under the paths the library lists (``entries`` and ``moves`` in place): an
        import updates the entry the file already has; a deletion marks every entry of the file."""
        entries[:] = [(Path(self.preferred(os.fspath(p), index)[0]), f) for p, f in entries]
        moves[:] = [(self.preferred(src, index)[0], dest) for src, dest in moves]
        missing = {a for k in missing for a, _ in self.all(k)}
        gone_dirs = {a for d in gone_dirs for a, _ in self.all(d)}
        sidecars = {self.preferred(k, index)[0]: f for k, f in sidecars.items()}
        return missing, gone_dirs, sidecars


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """Same inode, size and mtime (to the nanosecond): the same file, even under another name.
    Size and mtime guard against a new file that reuses a deleted file's inode."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _make_observer() -> Any:
    """inotify with full move events where there is one: a file moved in from outside the watched
    folders then arrives as a move (a completion signal, short settle) instead of a plain create."""
    try:
        from watchdog.observers.inotify import InotifyObserver

        observer = InotifyObserver(generate_full_events=True)
    except (ImportError, OSError):
        from watchdog.observers import Observer

        observer = Observer()
    observer.name = "vidtray-observer"
    return observer


def _emitter_alive(observer: Any, watch: Any) -> bool:
    """watchdog stops a folder's emitter when the folder itself is deleted; notice that."""
    try:
        emitter = observer._emitter_for_watch.get(watch)  # no public accessor in watchdog 7
    except AttributeError:
        return True
    return emitter is not None and emitter.is_alive()


def _thumbnail_ok(item: dict[str, Any]) -> bool:
    thumb = item.get("thumbnail")
    return isinstance(thumb, str) and bool(thumb) and os.path.isfile(thumb)


class _ThumbnailWorker:
    """Makes thumbnails in its own thread and records them in one library write per batch."""

    def __init__(self, lib: Library, thumbnails_dir: Path, on_write: Any = None) -> None:
        self.lib = lib
        self.thumbnails_dir = thumbnails_dir
        self.on_write = on_write
        self._queue: queue.Queue[tuple[Path, Any] | None] = queue.Queue()
        self._busy = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._guard = Backoff(log, "making thumbnails")
        self.writes = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vidtray-thumbs", daemon=True)
        self._thread.start()

    def put(self, videos: Iterable[tuple[Path, Any]]) -> None:
        for v in videos:
            self._busy.set()
            self._queue.put(v)

    def idle(self) -> bool:
        return self._queue.empty() and not self._busy.is_set()

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None or self._stopping.is_set():
                return
            self._busy.set()
            batch = [first]
            while len(batch) < 256:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._stopping.set()
                    break
                batch.append(nxt)
            try:
                self.run_batch(batch)
            except Exception as exc:
                # A full disk or a library another program holds locked: wait, then try the batch again
                # (a few times; the next reconcile makes what is still missing).
                delay = self._guard.failed(exc)
                if self._guard.failures <= THUMB_ATTEMPTS and not self._stopping.wait(delay):
                    for video in batch:
                        self._queue.put(video)
                    continue
                log.warning("gave up on %d thumbnails for now; the next rescan makes them", len(batch))
            else:
                self._guard.succeeded()
            if self._queue.empty():
                self._busy.clear()
            if self._stopping.is_set():
                return

    def run_batch(self, batch: list[tuple[Path, Any]]) -> None:
        made = media.make_thumbnails(
            [(p, d if isinstance(d, int | float) else None) for p, d in dict(batch).items()],
            self.thumbnails_dir)
        if not made:
            return
        by_path = {os.fspath(abs_path(v)): os.fspath(t) for v, t in made.items()}

        def apply(doc: Doc) -> Any:
            changed = False
            for item in video_items(doc["items"]):  # items vidtray cannot use are never changed
                thumb = by_path.get(item["path"])
                if thumb is not None and item.get("thumbnail") != thumb:
                    item["thumbnail"] = thumb
                    changed = True
            return None if changed else UNCHANGED

        if self.lib.update(apply) is not UNCHANGED:
            self.writes += 1
            if self.on_write is not None:
                self.on_write()


def watch_folders(cfg: Any) -> list[Path]:
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


def watcher_for(cfg: Any, lib: Library, *, settle_s: float | None = None) -> Watcher:
    """A Watcher for a Config. ``VIDTRAY_WATCH_SETTLE_S`` overrides the settle time (tests, slow disks)."""
    if settle_s is None:
        env = os.environ.get("VIDTRAY_WATCH_SETTLE_S")
        try:
            settle_s = float(env) if env else DEFAULT_SETTLE_S
        except ValueError:
            log.warning("ignoring VIDTRAY_WATCH_SETTLE_S=%r: not a number", env)
            settle_s = DEFAULT_SETTLE_S
    return Watcher(lib, watch_folders(cfg), thumbnails_dir=cfg.thumbnails_dir, settle_s=settle_s)
