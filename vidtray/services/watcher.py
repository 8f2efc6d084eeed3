"""Watch folders -> finished videos -> library.json.

Threads (all named, none touches a UI):

* watchdog's observer threads only record what happened (``_Handler`` -> ``Watcher._note_*``);
* ``vidtray-watcher`` reconciles with the disk on start, then every tick takes the files whose size and
  mtime stayed unchanged for the settle time (a short one after a close-after-write or a rename into
  place), probes them in batches, and writes ONE library update for everything it learned in that tick
  (imports, deletions, moves, sidecars); it also re-arms watch folders that vanished and came back;
* ``vidtray-thumbs`` makes thumbnails after the entries are in, so thumbnails never slow an import.

A file is imported only if it probes cleanly (decodes to the end): a slow writer that pauses longer than
the settle time still is not imported early, because its partial file does not decode. A file the user
removed from the library (``lib.removed``) stays out, on events and on reconcile alike.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidtray.services import media
from vidtray.services.library import (
    UNCHANGED,
    Doc,
    Library,
    abs_path,
    doc_mark_missing,
    doc_upsert,
    is_video_item,
    is_video_name,
    merge_import,
    sidecar_fields,
    video_index,
)

log = logging.getLogger("vidtray.watcher")

DEFAULT_SETTLE_S = 1.5
DEFAULT_FAST_SETTLE_S = 0.2
DEFAULT_RETRY_S = 5.0
#: Names of files still being downloaded or written elsewhere.
TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download", ".temp", ".swp")
#: Most files probed per tick; the rest wait for the next one (keeps each library write bounded).
MAX_PROBE_PER_TICK = 512


def ignore_reason(path: Path, root: Path | None = None) -> str | None:
    """Why ``path`` is not a candidate video (None if it is one). Name-based only; no disk access."""
    rel = path
    if root is not None:
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = path
    name = path.name
    if any(part.startswith(".") for part in rel.parts):
        return "hidden or in-progress (dot-name or .partial/)"
    lower = name.lower()
    if name.startswith("~") or lower.endswith(TEMP_SUFFIXES):
        return "temporary name"
    if not is_video_name(path):
        return "not a video (extension)"
    text = os.fspath(path)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "control characters in the name"
    try:
        text.encode("utf-8")
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

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported, "updated": self.updated, "missing": self.missing,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "unavailable_folders": self.unavailable, "removed": self.removed,
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
        # Dedupe, keep order; absolute so event paths compare.
        self.folders: list[Path] = list(dict.fromkeys(abs_path(f) for f in folders))
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
            self._thumbs = _ThumbnailWorker(self.lib, self.thumbnails_dir)
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
            for ext in (".mp4", ".m4v", ".mov", ".webm", ".mkv"):
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
        try:
            self.reconcile(queue_busy=True)
        except Exception:
            log.exception("reconcile on start failed; watching for new files anyway")
        next_check = time.monotonic() + self.retry_s
        while not self._stop.is_set():
            self._wake.wait(self._tick)
            self._wake.clear()
            try:
                self._process_once()
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.retry_s
                    for folder in self._check_folders():
                        self.reconcile(folders=[folder], queue_busy=True)
            except Exception:
                # Never let one bad tick (a library that is locked too long, a disk error) end the watcher.
                log.exception("watcher tick failed; retrying")
                self._stop.wait(1.0)
        try:
            self._process_once(final=True)
        except Exception:
            log.exception("final flush failed")
        self._idle.set()

    def _process_once(self, final: bool = False) -> None:
        now = time.monotonic()
        with self._mu:
            moves, self._moves = self._moves, []
            deleted, self._deleted = self._deleted, set()
            gone_dirs, self._gone_dirs = self._gone_dirs, set()
            sidecars, self._sidecars = self._sidecars, set()
            ready: list[tuple[str, _Candidate]] = []
            for key, cand in list(self._pending.items()):
                try:
                    st = os.lstat(key)
                except OSError:
                    del self._pending[key]
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
            return
        if ready and self.lib.removed is not None:
            ready = self._without_removed(ready)
        if final:
            log.info("flushing before stop")
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
                    self._broken[key] = sig
                    self.stats["skipped"] += 1
                    log.info("not importing %s: %s (will look again if it changes)", key, result.error)
                    continue
                self._broken.pop(key, None)
                entries.append((Path(key), media.import_fields(Path(key), result)))
                idents[key] = _identity(st)
        missing_keys = {k for k in deleted if not os.path.lexists(k)}
        sidecar_fields_by_path = {k: sidecar_fields(Path(k)) for k in sidecars}
        summary = self._write(entries, moves, missing_keys, gone_dirs, sidecar_fields_by_path, idents)
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
            if old is not None and old != key and not os.path.lexists(old):
                moves.append((old, key))

        def apply(doc: Doc) -> Any:
            index = video_index(doc)
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
            counts["imported"] = len(index) - before
            counts["updated"] = len(known)
            changed = changed or upserted
            gone = set(missing)
            for d in gone_dirs:
                if not os.path.isdir(d):
                    prefix = d.rstrip(os.sep) + os.sep
                    gone.update(k for k in index if k.startswith(prefix) and not os.path.lexists(k))
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
        for k in ("imported", "updated", "missing"):
            self.stats[k] += counts[k]
        if any(counts.values()):
            log.info("library: %d imported, %d updated, %d missing", counts["imported"], counts["updated"],
                     counts["missing"])
        return True

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
        for root in available:
            for path, st in self._walk(root, report):
                found[os.fspath(path)] = (root, st)
                self._identities[_identity(st)] = os.fspath(path)
        doc = self.lib.document()
        index = video_index(doc)
        removed = self.lib.removed.matcher() if self.lib.removed is not None else None
        if removed is not None and folders is None and not report.unavailable:
            # Every folder was walked: forget removed files that are gone from all of them.
            self.lib.removed.prune(available, ((k, st) for k, (_, st) in found.items()))
        prefixes = tuple(os.fspath(r).rstrip(os.sep) + os.sep for r in available)
        missing = {k for k, item in index.items()
                   if k.startswith(prefixes) and k not in found and item.get("status") != "missing"
                   and not os.path.lexists(k)}
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
                    st = found[key][1]
                    self._broken[key] = (st.st_size, st.st_mtime_ns)
        report.missing = sorted(missing)
        self._write(entries, [], missing, set(), sidecars)
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
        def onerror(exc: OSError) -> None:
            log.warning("cannot list %s: %s", exc.filename, exc.strerror)

        # followlinks=False: a symlink loop (or a link to / ) is never descended into.
        for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                path = Path(dirpath, name)
                why = ignore_reason(path, root)
                if why is not None:
                    if why.startswith(("not a video", "control", "name is")) and not name.startswith("."):
                        self._log_once(path, why)
                        if not why.startswith("not a video") and path.suffix.lower() != ".json":
                            report.skipped.append((os.fspath(path), why))
                    continue
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    self._log_once(path, "symlink (not followed)")
                    report.skipped.append((os.fspath(path), "symlink (not followed)"))
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                yield path, st


class _Handler:
    """watchdog handler: classify the event and hand it to the Watcher (runs on the observer thread)."""

    def __init__(self, watcher: Watcher, root: Path) -> None:
        self.watcher = watcher
        self.root = root

    def dispatch(self, event: Any) -> None:
        try:
            self._dispatch(event)
        except Exception:  # an odd event must not kill watchdog's dispatcher thread
            log.exception("cannot handle %r", event)

    def _dispatch(self, event: Any) -> None:
        kind = event.event_type
        src = Path(os.fsdecode(event.src_path)) if event.src_path else None
        if event.is_directory:
            if kind == "deleted" and src is not None:
                self.watcher._note_dir_gone(src)
            elif kind == "moved" and src is not None:
                # A folder moved within the watched tree: its files arrive as their own move events.
                # Moved out of it: its entries are missing now.
                dest = Path(os.fsdecode(event.dest_path)) if event.dest_path else None
                if dest is None or self.watcher._root_of(dest) is None:
                    self.watcher._note_dir_gone(src)
            return
        if src is None and kind != "moved":
            return
        if kind in ("created", "modified"):
            self.watcher._note_candidate(src, self.root)
        elif kind == "closed":
            self.watcher._note_candidate(src, self.root, fast=True)
        elif kind == "deleted":
            self.watcher._note_deleted(src)
        elif kind == "moved":
            dest = Path(os.fsdecode(event.dest_path)) if event.dest_path else None
            if src is not None and dest is not None:
                self.watcher._note_moved(src, dest)
            elif dest is not None:
                self.watcher._note_candidate(dest, self.root, fast=True)
            elif src is not None:
                self.watcher._note_deleted(src)


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

    def __init__(self, lib: Library, thumbnails_dir: Path) -> None:
        self.lib = lib
        self.thumbnails_dir = thumbnails_dir
        self._queue: queue.Queue[tuple[Path, Any] | None] = queue.Queue()
        self._busy = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
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
            except Exception:
                log.exception("thumbnails failed for %d videos", len(batch))
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
            for item in doc["items"]:
                if is_video_item(item) and isinstance(item.get("path"), str):
                    thumb = by_path.get(item["path"])
                    if thumb is not None and item.get("thumbnail") != thumb:
                        item["thumbnail"] = thumb
                        changed = True
            return None if changed else UNCHANGED

        if self.lib.update(apply) is not UNCHANGED:
            self.writes += 1


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
        cfg.videos_dir.mkdir(parents=True, exist_ok=True)
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
