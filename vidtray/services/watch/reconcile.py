"""The library brought in line with the disk: import new and changed videos, mark vanished ones missing.

Runs when the watcher starts, when a watch folder comes back or a folder can be listed again, and for
``vidtray library rescan``. A folder that cannot be listed is "unknown", never "empty": its videos are not
marked missing. A file the user removed from the library (``lib.removed``) stays out.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vidtray.services import media
from vidtray.services.fsutil import NOT_A_VIDEO, SYMLINK, walk_videos
from vidtray.services.libdoc import video_index
from vidtray.services.libitem import Fields, Item, LibraryItem
from vidtray.services.library import Library
from vidtray.services.sidecar import sidecar_fields
from vidtray.services.watch.files import LogOnce, gone, identity, is_gone_error, unencodable
from vidtray.services.watch.folders import Spellings
from vidtray.services.watch.settle import SettleQueue
from vidtray.services.watch.sync import Findings, LibrarySync
from vidtray.services.watch.thumbs import ThumbJob

log = logging.getLogger("vidtray.watcher")

#: Most files probed per batch (and per watcher tick): keeps each library write bounded.
MAX_PROBE_PER_TICK = 512


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

    def as_dict(self) -> dict[str, object]:
        return {
            "imported": self.imported, "updated": self.updated, "missing": self.missing,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "unavailable_folders": self.unavailable, "unreadable_folders": self.unreadable,
            "removed": self.removed,
        }


@dataclass
class Reconciled:
    report: ScanReport
    thumbs: list[ThumbJob] = field(default_factory=list)  # entries without a usable thumbnail
    #: (file, its watch folder) modified within the settle time: for the watch queue (when watching)
    busy: list[tuple[Path, Path]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # see LibrarySync.lost_entries


#: path -> (its watch folder, its stat) of every finished video found on disk
_Found = dict[str, tuple[Path, os.stat_result]]


class Reconciler:
    def __init__(self, lib: Library, spellings: Spellings, settle: SettleQueue, sync: LibrarySync,
                 notes: LogOnce, settle_s: float) -> None:
        self.lib = lib
        self.spellings = spellings
        self.settle = settle
        self.sync = sync
        self.notes = notes
        self.settle_s = settle_s

    def run(self, roots: Sequence[Path], *, every_folder: bool, watching: bool) -> Reconciled:
        """Reconcile ``roots`` (``every_folder``: they are all the watch folders).

        ``watching``: files modified within the settle time go to the watch queue (``Reconciled.busy``)
        and files that could not be read to the retry set; a one-shot rescan relies on the probe alone (a
        file still being written does not decode to the end)."""
        out = Reconciled(ScanReport())
        report = out.report
        available = [root for root in roots if os.path.isdir(root)]
        report.unavailable = [os.fspath(root) for root in roots if root not in available]
        index = video_index(self.lib.document())
        found = self._scan(available, index, report)
        removed = self.lib.removed.matcher() if self.lib.removed is not None else None
        if self.lib.removed is not None and every_folder and not report.unavailable:
            # Every folder was walked: forget removed files that are gone from all of them.
            self.lib.removed.prune([os.fspath(r) for r in available], ((k, st) for k, (_, st) in found.items()))
        missing = _missing(index, found, available, report.unreadable)
        to_probe, sidecars = self._sort(found, index, removed, out, watching)
        found_now = Findings(missing=missing, sidecars=sidecars)
        found_now.entries = self._probe(to_probe, found, index, out, watching)
        report.missing = sorted(missing)
        out.lost = self.sync.write(found_now)
        for key, why in report.skipped:
            log.info("rescan: not importing %s: %s", key, why)
        log.info("reconciled %s: %d imported, %d updated, %d missing, %d skipped, %d kept out (removed)",
                 ", ".join(map(os.fspath, available)) or "(no folder available)", len(report.imported),
                 len(report.updated), len(report.missing), len(report.skipped), len(report.removed))
        return out

    def _scan(self, available: list[Path], index: dict[str, Item], report: ScanReport) -> _Found:
        found: _Found = {}
        for root in available:
            for path, st in self._walk(root, report):
                key = os.fspath(path)
                if self.spellings.overlap:
                    # One file under two watch folders (a symlink to the videos folder): one entry, under
                    # the path the library already lists it by, else under the first folder's.
                    key, root_of_key = self.spellings.preferred(key, index)
                    if key in found:
                        continue
                    found[key] = (root_of_key, st)
                else:
                    found[key] = (root, st)
                self.sync.identities[identity(st)] = key
        return found

    def _sort(self, found: _Found, index: dict[str, Item], removed: Callable[[str, os.stat_result], bool] | None,
              out: Reconciled, watching: bool) -> tuple[list[str], dict[str, Fields]]:
        """Which found files to probe; on the way, the sidecars that changed, the thumbnails to make, the
        files kept out (removed) or skipped (empty), and the busy ones."""
        now = time.time()
        to_probe: list[str] = []
        sidecars: dict[str, Fields] = {}
        for key, (root, st) in found.items():
            item = index.get(key)
            if item is None and removed is not None and removed(key, st):
                out.report.removed.append(key)
            elif item is not None and item.get("status") == "ready" and item.get("size_bytes") == st.st_size:
                side = sidecar_fields(Path(key))
                if side.get("source") == "generated" and any(item.get(k) != v for k, v in side.items()):
                    sidecars[key] = side
                view = LibraryItem.of(item)
                if view.thumbnail is None or not os.path.isfile(view.thumbnail):
                    out.thumbs.append((Path(key), view.duration_s))
            elif st.st_size == 0:
                out.report.skipped.append((key, "empty file (0 bytes)"))
            elif watching and now - st.st_mtime < self.settle_s:
                out.busy.append((Path(key), root))
            else:
                to_probe.append(key)
        return to_probe, sidecars

    def _probe(self, to_probe: list[str], found: _Found, index: dict[str, Item], out: Reconciled,
               watching: bool) -> list[tuple[Path, Fields]]:
        entries: list[tuple[Path, Fields]] = []
        for start in range(0, len(to_probe), MAX_PROBE_PER_TICK):
            chunk = to_probe[start:start + MAX_PROBE_PER_TICK]
            for key, result in zip(chunk, media.probe_many([Path(k) for k in chunk]), strict=True):
                if result.ok:
                    entries.append((Path(key), media.import_fields(Path(key), result)))
                    (out.report.updated if key in index else out.report.imported).append(key)
                    out.thumbs.append((Path(key), result.duration_s))
                    continue
                out.report.skipped.append((key, result.error or "does not decode"))
                root, st = found[key]
                if not result.transient:
                    self.settle.mark_broken(key, st)
                elif watching:
                    self.settle.retry_later(key, root, result.error)
        return entries

    def _walk(self, root: Path, report: ScanReport) -> Iterator[tuple[Path, os.stat_result]]:
        """The finished videos under ``root`` (``fsutil.walk_videos``: no symlinks followed, no hidden
        folders), each with a name library.json can hold; what is passed over is logged once and, if a
        person would look for it in the library, listed in ``report.skipped``."""

        def onerror(exc: OSError) -> None:
            if is_gone_error(exc):
                return  # removed while we walked
            log.warning("cannot list %s: %s; its videos are left as they are", exc.filename, exc.strerror)
            report.unreadable.append(os.fspath(exc.filename))

        def passed_over(path: str, why: str) -> None:
            if why in (NOT_A_VIDEO, SYMLINK):
                self.notes(Path(path), why)
            if why == SYMLINK:
                report.skipped.append((path, why))

        for name, st in walk_videos(os.fspath(root), on_error=onerror, on_skip=passed_over):
            path = Path(name)
            why = unencodable(path)
            if why is not None:
                self.notes(path, why)
                report.skipped.append((name, why))
                continue
            yield path, st


def _missing(index: dict[str, Item], found: _Found, available: list[Path], unreadable: list[str]) -> set[str]:
    """Listed videos in the walked folders that are not on disk (known gone, not merely unreadable)."""
    prefixes = tuple(os.fspath(r).rstrip(os.sep) + os.sep for r in available)
    # What a folder we could not list holds is unknown: none of it is "missing".
    unknown = tuple(d.rstrip(os.sep) + os.sep for d in unreadable)
    return {k for k, item in index.items()
            if k.startswith(prefixes) and k not in found and item.get("status") != "missing"
            and not (unknown and k.startswith(unknown)) and gone(k)}
