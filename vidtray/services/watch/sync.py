"""One library write for everything a tick learned (imports, moves, missing files, sidecars), and noticing
entries that another program's unlocked write dropped a moment after we wrote them.

Used by the watcher's thread only.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from pathlib import Path

from vidtray.services.libdoc import Doc, doc_mark_missing, doc_upsert, listed_paths, merge_import, video_index
from vidtray.services.libitem import Fields, Item, abs_path
from vidtray.services.library import Change, Library
from vidtray.services.watch.files import Identity, Sig, file_sig, gone
from vidtray.services.watch.folders import Spellings

log = logging.getLogger("vidtray.watcher")

#: For this long after an import, an entry that vanishes from library.json while its file stays was lost
#: to another program's write (it read the file before ours landed): it is imported again.
LOST_WRITE_WINDOW_S = 120.0


@dataclass
class Findings:
    """What one tick (or one reconcile) learned, for one library write."""

    entries: list[tuple[Path, Fields]] = field(default_factory=list)  # probed cleanly: import or update
    moves: list[tuple[str, str]] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)
    gone_dirs: set[str] = field(default_factory=set)
    sidecars: dict[str, Fields] = field(default_factory=dict)  # video -> its sidecar's fields
    #: identity of each entry's file, to pair a move that inotify did not
    idents: dict[str, Identity] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.entries or self.moves or self.missing or self.gone_dirs or self.sidecars)

    def as_listed(self, spellings: Spellings, index: Container[str]) -> None:
        """These findings under the paths the library lists: an import updates the entry the file already
        has; a deletion marks every entry of the file."""
        self.entries = [(Path(spellings.preferred(os.fspath(p), index)[0]), f) for p, f in self.entries]
        self.moves = [(spellings.preferred(src, index)[0], dest) for src, dest in self.moves]
        self.missing = {a for k in self.missing for a, _ in spellings.all(k)}
        self.gone_dirs = {a for d in self.gone_dirs for a, _ in spellings.all(d)}
        self.sidecars = {spellings.preferred(k, index)[0]: f for k, f in self.sidecars.items()}


@dataclass
class _Counts:
    imported: int = 0
    updated: int = 0
    missing: int = 0


class LibrarySync:
    def __init__(self, lib: Library, spellings: Spellings, stats: dict[str, int]) -> None:
        self.lib = lib
        self.spellings = spellings
        self.stats = stats
        # (dev, inode, size, mtime_ns) -> path of every video this watcher has seen: a file that left
        # one path and turns up at another with the same identity was moved (the inotify pair can be
        # lost, e.g. into a folder created a moment before, or between two watch folders).
        self.identities: dict[Identity, str] = {}
        # path -> when this watcher wrote it to the library (see LOST_WRITE_WINDOW_S); the file's
        # (inode, size, mtime) right after our last write.
        self._recent: dict[str, float] = {}
        self._lib_sig: Sig | None = None

    def write(self, found: Findings) -> list[str]:
        """One read-modify-write of the library for ``found``. Returns the entries found lost meanwhile
        (``lost_entries``), for the caller to import again."""
        if not found:
            return []
        # A new path whose file was last seen at a path that is gone now: a move inotify did not pair.
        for key, ident in found.idents.items():
            old = self.identities.get(ident)
            if old is not None and old != key and gone(old):
                found.moves.append((old, key))
        counts = _Counts()
        lost: list[str] = []

        def apply(doc: Doc) -> Change[None]:
            changed = self._apply(doc, found, counts)
            lost[:] = self.lost_entries(listed_paths(doc))
            return Change(None, changed)

        change = self.lib.update(apply)
        for key, ident in found.idents.items():
            self.identities[ident] = key
        if change.changed:
            self.stats["writes"] += 1
            self.own_write()
        now = time.monotonic()
        for path, _ in found.entries:
            self._recent[os.fspath(abs_path(path))] = now
        self.stats["imported"] += counts.imported
        self.stats["updated"] += counts.updated
        self.stats["missing"] += counts.missing
        if counts.imported or counts.updated or counts.missing:
            log.info("library: %d imported, %d updated, %d missing", counts.imported, counts.updated,
                     counts.missing)
        return lost

    def _apply(self, doc: Doc, found: Findings, counts: _Counts) -> bool:
        index = video_index(doc)
        if self.spellings.overlap:
            found.as_listed(self.spellings, index)
        changed = _apply_moves(index, found.moves)
        before = len(index)
        known = {os.fspath(abs_path(p)) for p, _ in found.entries} & index.keys()
        _, upserted = doc_upsert(doc, found.entries, index)
        counts.imported = len(index) - before
        counts.updated = len(known)
        counts.missing = doc_mark_missing(doc, _missing(index, found.missing, found.gone_dirs))
        sidecars = _apply_sidecars(index, found.sidecars)
        return changed or upserted or bool(counts.missing) or sidecars

    # -- writes lost to other programs ---------------------------------------------------------------------
    def own_write(self) -> None:
        """library.json as we (or our thumbnail thread) just wrote it: only a change after this is foreign.
        The library's record of the bytes it wrote, not a stat now: another program's write that lands
        between ours and a stat would pass for ours and its loss would go unseen."""
        self._lib_sig = self.lib.written_sig

    def lost_entries(self, listed: Container[str]) -> list[str]:
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

    def check_lost_writes(self) -> list[str]:
        """Another program that writes library.json without the lock can drop what we just wrote (it read
        the file before our write landed): notice it when the file changes. Returns those entries."""
        if not self._recent:
            return []
        sig = file_sig(self.lib.path)
        if sig == self._lib_sig:
            self.lost_entries(())  # only ages the window
            return []
        self._lib_sig = sig
        return self.lost_entries(listed_paths(self.lib.document()))

    def forget(self, key: str) -> None:
        """``key`` is being imported again: its window starts over with that import."""
        self._recent.pop(key, None)


def _apply_moves(index: dict[str, Item], moves: list[tuple[str, str]]) -> bool:
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
    return changed


def _missing(index: dict[str, Item], missing: set[str], gone_dirs: set[str]) -> set[str]:
    """The listed paths now missing: ``missing``, and what was listed in folders that are gone."""
    out = set(missing)
    for folder in gone_dirs:
        if gone(folder):
            prefix = folder.rstrip(os.sep) + os.sep
            out.update(k for k in index if k.startswith(prefix) and gone(k))
    return out


def _apply_sidecars(index: dict[str, Item], sidecars: dict[str, Fields]) -> bool:
    changed = False
    for key, fields in sidecars.items():
        item = index.get(key)
        if item is not None and merge_import(item, fields, set_ready=False):
            changed = True
    return changed


def _removed_now(removed: Callable[[str, os.stat_result], bool], path: str) -> bool:
    try:
        return removed(path, os.lstat(path))
    except OSError:
        return False
