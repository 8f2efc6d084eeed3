"""What the user removed from the library (``vidtray library remove``): kept out of later imports.

The file stays on disk, so without a record the next reconcile (watcher start, ``library rescan``) or a
live event would import it again. The record is vidtray's own state (``<data_dir>/state/removed.json``),
not a key in library.json that other apps would see.

A record names the file by path *and* by what it is: (size, mtime_ns) at that path, or (dev, inode,
size, mtime_ns) anywhere. So a removed file that is renamed or moved inside the watched folders stays
out, while a new file written at the same path (other size or mtime) is imported as usual. A file
that is not there when it is removed (a drive unplugged) is recorded by path and the size the library
knew, and matched by those two alone.
``library rescan --include-removed`` forgets the records and imports those files again.

Writers hold the library's lock (``lock``; ``Library.remove`` writes the record inside its own update),
so a removal and its record land together; readers (the watcher) need no lock: writes are atomic replaces.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vidtray.services.fsutil import atomic_write_text

log = logging.getLogger("vidtray.removed")

VERSION = 1
Record = dict[str, Any]


def record_for(path: str, st: os.stat_result, item_id: str | None) -> Record:
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "dev": st.st_dev, "ino": st.st_ino,
            "id": item_id, "removed_at": datetime.now(UTC).isoformat(timespec="seconds")}


class RemovedFiles:
    """The records in one JSON file. ``load`` never raises: damaged state means "nothing removed"."""

    def __init__(self, path: Path, lock: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext) -> None:
        self.path = Path(path)
        self.lock = lock  # the library's (re-entrant) lock

    def load(self) -> list[Record]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return []
        files = doc.get("files") if isinstance(doc, dict) else None
        return [r for r in files or [] if isinstance(r, dict) and isinstance(r.get("path"), str)]

    def _save(self, records: list[Record]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"version": VERSION, "files": records}, indent=2) + "\n")

    def add(self, path: str, item_id: str | None, size: Any = None) -> bool:
        """Remember the file at ``path``. Absent now, it is remembered by path and ``size`` (the size the
        library knew); False when there is neither a file nor a size (nothing to recognise it by)."""
        try:
            st: os.stat_result | None = os.stat(path)
        except OSError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            return False
        if st is not None:
            record = record_for(path, st, item_id)
        elif isinstance(size, int) and not isinstance(size, bool):
            record = {"path": path, "size": size, "mtime_ns": None, "dev": None, "ino": None, "id": item_id,
                      "removed_at": datetime.now(UTC).isoformat(timespec="seconds")}
        else:
            return False
        with self.lock():
            records = [r for r in self.load() if not _same_file(r, path, st)]
            records.append(record)
            self._save(records)
        return True

    def matcher(self) -> Callable[[str, os.stat_result], bool]:
        """A fast test "was the file at this path, with this stat, removed by the user?"."""
        records = self.load()
        if not records:
            return _never
        by_path = {(r["path"], r.get("size"), r.get("mtime_ns")) for r in records}
        by_ident = {(r.get("dev"), r.get("ino"), r.get("size"), r.get("mtime_ns")) for r in records}
        loose = {(r["path"], r.get("size")) for r in records if r.get("mtime_ns") is None}

        def removed(path: str, st: os.stat_result) -> bool:
            return ((path, st.st_size, st.st_mtime_ns) in by_path
                    or (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) in by_ident
                    or (path, st.st_size) in loose)

        return removed

    def forget(self, keep: Callable[[Record], bool] | None = None) -> list[Record]:
        """Drop the records ``keep`` says no to (all without it); returns the dropped ones."""
        with self.lock():
            records = self.load()
            kept: list[Record] = []
            dropped: list[Record] = []
            for r in records:
                (kept if keep is not None and keep(r) else dropped).append(r)
            if dropped:
                self._save(kept)
        return dropped

    def prune(self, roots: Iterable[str], found: Iterable[tuple[str, os.stat_result]]) -> int:
        """Forget records under ``roots`` whose file is none of ``found`` (every file under them): it was
        deleted or moved away since, and what turns up later is the user's to import."""
        prefixes = tuple(os.fspath(r).rstrip(os.sep) + os.sep for r in roots)
        if not any(r["path"].startswith(prefixes) for r in self.load()):
            return 0
        sigs, idents, paths = set(), set(), set()
        for path, st in found:
            sigs.add((path, st.st_size, st.st_mtime_ns))
            idents.add((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
            paths.add((path, st.st_size))

        def keep(r: Record) -> bool:
            if not r["path"].startswith(prefixes):
                return True
            if r.get("mtime_ns") is None:
                return (r["path"], r.get("size")) in paths
            return ((r["path"], r.get("size"), r.get("mtime_ns")) in sigs
                    or (r.get("dev"), r.get("ino"), r.get("size"), r.get("mtime_ns")) in idents)

        return len(self.forget(keep))


def _same_file(record: Record, path: str, st: os.stat_result | None) -> bool:
    if record["path"] == path:
        return True
    return st is not None and (record.get("dev"), record.get("ino")) == (st.st_dev, st.st_ino)


def _never(path: str, st: os.stat_result) -> bool:
    return False
