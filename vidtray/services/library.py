"""library.json: the content library that vidtray shares with other apps (the file; the document model is
``libdoc``, what vidtray understands of an item ``libitem``).

Other programs read and edit this file, so:

* keys and items vidtray does not know are kept exactly: every foreign number keeps its spelling
  (``1e400``, ``1.50``, ``-0``, big integers; see ``vidtray.services.exactjson``);
* every change is read-modify-write of the whole document under a lock file beside it
  (``library.json.lock``) and lands by atomic replace (``fsutil.atomic_write_bytes``); a symlinked
  library is written through the link: lock, temp file and copies live beside its target;
* a file that does not parse is read again while it keeps changing (another program may be rewriting it
  in place, without our lock) and is only called corrupt once it has stayed the same for ``SETTLE_S``;
  then it is moved aside byte for byte (``library.json.corrupt-<timestamp>``), never overwritten, and
  rebuilt from what can be carried over: the last good copy (``.library.json.vidtray-last-good``, the
  exact bytes of the last document vidtray wrote or read), whatever still decodes in the damaged file,
  and the videos (and sidecars) on disk. Protection is never lost: an item pinned or scheduled in either
  stays so;
* an item vidtray cannot understand (a path or id that is not a string, ...) is kept as it is, skipped by
  every reader and logged once (``libitem.item_problem``); any truthy ``pinned`` and any ``scheduled_at``
  protect;
* an older schema (a bare list of items, or a document without ``version``) is upgraded on read.

Readers get typed views (``libitem.LibraryItem``); writers change the document's dicts in place inside
``Library.update`` and say whether they changed anything (``Change``). The CLI addresses items by id or a
unique id prefix (``libitem.find_item``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import filelock

from vidtray.errors import OperationFailed
from vidtray.services import exactjson
from vidtray.services.fsutil import atomic_write_bytes, iter_videos, private_dir, remove_stale_temps
from vidtray.services.libdoc import (
    SCHEMA_VERSION,
    Corrupt,
    Doc,
    doc_mark_missing,
    doc_upsert,
    dumps,
    empty_document,
    listed_paths,
    merged,
    parse,
    salvaged,
)
from vidtray.services.libitem import (
    Fields,
    Item,
    LibraryItem,
    abs_path,
    find_item,
    library_items,
    protected_paths,
    video_items,
)
from vidtray.services.removed import RemovedFiles

if TYPE_CHECKING:
    from vidtray.config import Config

log = logging.getLogger("vidtray.library")

LOCK_TIMEOUT_S = 30.0
#: A file that does not parse is called corrupt only once it has not changed for this long: another program
#: may be rewriting it in place (truncate, then chunks) without our lock.
SETTLE_S = 2.0
#: ... and if it is still changing after this long, the operation fails and nothing is set aside.
WRITER_WAIT_S = 15.0
POLL_S = 0.1
#: vidtray's own temp files of a writer that may still be alive are removed only when older than this.
STALE_TEMP_S = 600.0

T = TypeVar("T")
#: (inode, size, mtime_ns) of the library file
Sig = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Change(Generic[T]):
    """What a ``Library.update`` function returns: its result, and whether it changed the document (only
    then is the file written)."""

    value: T
    changed: bool


@dataclass(frozen=True, slots=True)
class Summary:
    """Counts of the usable video items (``vidtray storage``, ``library list``, the tray's tooltip)."""

    items: int
    pinned: int
    scheduled: int
    missing: int

    def as_dict(self) -> dict[str, int]:
        return {"items": self.items, "pinned": self.pinned, "scheduled": self.scheduled, "missing": self.missing}


class Library:
    """library.json at ``path``. Thread- and process-safe; every method reads the file fresh.

    ``removed_file``: where ``remove`` remembers what the user removed, so imports keep it out
    (``vidtray.services.removed``); without it a removed file may come back with the next rescan.

    A symlinked ``path`` is followed at every lock (``target``): the lock file, temp files, the last good
    copy and a corrupt file set aside all live beside the file it points to, so another program writing
    that file directly shares the lock, and the link stays a link.
    """

    #: See SETTLE_S and WRITER_WAIT_S; per instance, so a test about something else may shorten them.
    settle_s = SETTLE_S
    writer_wait_s = WRITER_WAIT_S

    def __init__(self, path: Path, *, videos_dir: Path | None = None,
                 on_corrupt: Callable[[Path], None] | None = None, removed_file: Path | None = None) -> None:
        self.path = abs_path(path)
        self.videos_dir = abs_path(videos_dir) if videos_dir is not None else None
        self.on_corrupt = on_corrupt
        self._locks: dict[Path, filelock.FileLock] = {}
        self._locks_mu = threading.Lock()
        self._held = _Held()
        self.removed = RemovedFiles(removed_file, self._locked) if removed_file is not None else None
        # The last document this object wrote or read under the lock, with the digest of its bytes: if
        # the file still holds those bytes, the next update skips json.loads (50,000 items: ~0.3 s).
        self._cache: _Cached | None = None
        #: (inode, size, mtime_ns) of the bytes this object last wrote (None before its first write)
        self.written_sig: Sig | None = None
        # (inode, size, mtime_ns) of the library when the last good copy was known to hold its bytes.
        self._good_sig: Sig | None = None
        self._good_failing = False

    def __repr__(self) -> str:
        return f"Library({str(self.path)!r})"

    @property
    def target(self) -> Path:
        """The file that is the library: ``path``, or the file its symlink(s) lead to now."""
        return Path(os.path.realpath(self.path))

    @property
    def lock_path(self) -> Path:
        return _lock_path(self.target)

    @property
    def last_good_path(self) -> Path:
        return _last_good_path(self.target)

    # -- reading ---------------------------------------------------------------------------------------
    def document(self) -> Doc:
        """The whole document (a fresh copy). A file that does not parse is waited for and, if it stays
        so, set aside and rebuilt (under the lock)."""
        read = self._read(self.path)
        if read is None:
            return empty_document()
        data, sig = read
        try:
            doc = parse(data)[0]
        except Corrupt:
            # Maybe another program is writing it in place right now: decide under the lock, after waiting.
            return self.update(lambda locked: Change(exactjson.clone(locked), changed=False)).value
        self._note_good(data, sig)
        return doc

    def items(self) -> list[LibraryItem]:
        """The video items vidtray can use, in file order (see ``libitem.item_problem``)."""
        return library_items(self.document()["items"])

    def get(self, item_id: str) -> LibraryItem:
        """An item by id or unique id prefix (UserError if none or several match)."""
        return LibraryItem.of(find_item(self.document()["items"], item_id))

    def find_by_path(self, path: Path) -> LibraryItem | None:
        key = str(abs_path(path))
        return next((item for item in self.items() if item.path == key), None)

    def protected_paths(self) -> set[Path]:
        """Absolute paths of items that must never be pruned: pinned, or with ``scheduled_at`` set."""
        return protected_paths(self.document()["items"])

    def summary(self) -> Summary:
        items = self.items()
        return Summary(items=len(items), pinned=sum(1 for i in items if i.pinned),
                       scheduled=sum(1 for i in items if i.scheduled),
                       missing=sum(1 for i in items if i.status == "missing"))

    # -- writing ---------------------------------------------------------------------------------------
    def update(self, fn: Callable[[Doc], Change[T]]) -> Change[T]:
        """Read-modify-write of the whole document under the lock: ``fn`` changes it in place and says
        whether it did; the file is written only then. Returns what ``fn`` returned."""
        with self._locked() as target:
            doc, loaded = self._load_locked(target)
            try:
                change = fn(doc)
            except BaseException:
                self._cache = None  # fn may have half-mutated the cached document
                raise
            if change.changed:
                self._write_locked(target, doc)
            elif loaded is not None:
                self._keep_good(*loaded)  # the bytes just read parsed: the last good ones now
            return change

    def ensure_writable(self) -> None:
        """Fail now (OperationFailed, one clear line) if the library's folder cannot be written."""
        target = self.target
        try:
            with self._locked():
                probe = target.parent / f".{target.name}.{os.getpid()}.write-test"
                probe.write_bytes(b"")
                probe.unlink()
        except OSError as exc:
            raise OperationFailed(f"cannot write the library in {target.parent}: {exc.strerror or exc} "
                                  "(check library_path)") from None

    def add_video(self, path: Path, **fields: Any) -> Item:
        """Upsert the video at ``path`` (absolute path is the key). Keeps user edits on an existing entry.
        Returns the item as written (a copy)."""
        items = self.add_videos([(path, fields)])
        if not items:
            raise OperationFailed(f"the library entry for {abs_path(path)} is one vidtray cannot use (see the "
                                  "log); it was left as it is")
        return items[0]

    def add_videos(self, entries: Sequence[tuple[Path, Fields]]) -> list[Item]:
        """Upsert many videos with one read and one write of the file (watcher bursts, rescans)."""
        if not entries:
            return []

        def apply(doc: Doc) -> Change[list[Item]]:
            items, changed = doc_upsert(doc, entries)
            return Change(exactjson.clone(items), changed)

        return self.update(apply).value

    def mark_missing(self, paths: Iterable[Path]) -> int:
        """Set ``status: missing`` on the items at these paths (entries and their edits stay)."""
        keys = {str(abs_path(p)) for p in paths}
        if not keys:
            return 0

        def apply(doc: Doc) -> Change[int]:
            n = doc_mark_missing(doc, keys)
            return Change(n, n > 0)

        return self.update(apply).value

    def edit(self, item_id: str, **changes: Any) -> Item:
        """Set fields on one item (pin/unpin/title/tags/schedule); returns it as written (a copy).
        UserError if the id matches none or several."""

        def apply(doc: Doc) -> Change[Item]:
            item = find_item(doc["items"], item_id)
            item.update(changes)
            return Change(exactjson.clone(item), True)

        return self.update(apply).value

    def remove(self, item_id: str) -> Item:
        """Remove one entry, not the file, and remember that the user did (imports then keep the file out).
        Returns the entry. UserError if the id matches none or several."""

        def apply(doc: Doc) -> Change[Item]:
            items = doc["items"]
            item = find_item(items, item_id)
            if self.removed is not None:
                # Under the library lock: the watcher cannot import the file between the two writes.
                try:
                    self.removed.add(item["path"], item["id"], item.get("size_bytes"))
                except OSError as exc:
                    raise OperationFailed(f"cannot record the removal in {self.removed.path}: "
                                          f"{exc.strerror or exc}; the item stays") from None
            del items[next(n for n, other in enumerate(items) if other is item)]
            return Change(item, True)

        return self.update(apply).value

    def remove_paths(self, paths: Iterable[Path]) -> int:
        """Remove the entries of files vidtray itself deleted (clean, prune); returns how many went.

        Paths compare with their folders' symlinks resolved, as the cleanup walks the real folder.
        """
        keys = {_real(p) for p in paths}
        if not keys:
            return 0
        real_dirs: dict[str, str] = {}

        def real(path: str) -> str:
            folder, name = os.path.split(path)
            if folder not in real_dirs:
                real_dirs[folder] = os.path.realpath(folder)
            return os.path.join(real_dirs[folder], name)

        def apply(doc: Doc) -> Change[int]:
            gone = {id(item) for item in video_items(doc["items"]) if real(item["path"]) in keys}
            if gone:
                doc["items"][:] = [item for item in doc["items"] if id(item) not in gone]
            return Change(len(gone), bool(gone))

        return self.update(apply).value

    # -- internals -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[Path]:
        """Hold the lock of the library's target; yields the target. Re-entrant within a thread."""
        held = self._held.target
        if held is not None:  # this thread holds it already (RemovedFiles writes inside an update)
            yield held
            return
        target = self.target
        lock = self._lock_for(target)
        try:
            private_dir(target.parent)
            lock.acquire()
        except filelock.Timeout:
            raise OperationFailed(
                f"the library {self.path} is locked by another program (waited {LOCK_TIMEOUT_S:.0f} s "
                f"for {lock.lock_file})") from None
        except OSError as exc:
            raise OperationFailed(
                f"cannot lock the library in {target.parent}: {exc.strerror or exc} "
                "(check library_path)") from None
        self._held.target = target
        try:
            yield target
        finally:
            self._held.target = None
            lock.release()

    def _lock_for(self, target: Path) -> filelock.FileLock:
        path = _lock_path(target)
        with self._locks_mu:
            lock = self._locks.get(path)
            if lock is None:
                lock = self._locks[path] = filelock.FileLock(str(path), timeout=LOCK_TIMEOUT_S)
            return lock

    def _read(self, path: Path) -> tuple[bytes, Sig] | None:
        """(bytes, (inode, size, mtime_ns) from before reading them), or None if there is no file."""
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                data = fh.read()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise OperationFailed(f"the library path {self.path} is a folder, not a file") from None
        except OSError as exc:
            raise OperationFailed(f"cannot read the library {path}: {exc.strerror or exc}") from None
        return data, (st.st_ino, st.st_size, st.st_mtime_ns)

    def _load_locked(self, target: Path) -> tuple[Doc, tuple[Path, bytes, Sig] | None]:
        """The document, and (target, bytes, signature) when those bytes were just read and parsed."""
        read = self._read(target)
        if read is None:
            self._cache = None
            return empty_document(), None
        data, sig = read
        digest = _digest(data)
        if self._cache is not None and self._cache.digest == digest:
            return self._cache.doc, None
        self._cache = None
        try:
            doc = parse(data)[0]
        except Corrupt as exc:
            settled = self._wait_for_writer(target, data, sig, str(exc))
            if settled is None:
                return empty_document(), None
            data, sig, parsed, why = settled
            if parsed is None:
                return self._set_aside_and_rebuild(target, data, why), None
            doc, digest = parsed, _digest(data)
        self._cache = _Cached(digest, doc)
        return doc, (target, data, sig)

    def _wait_for_writer(self, target: Path, data: bytes, sig: Sig, why: str,
                         ) -> tuple[bytes, Sig, Doc | None, str] | None:
        """Read a file that does not parse again until it does, or until it has stopped changing for
        ``settle_s`` (then it is corrupt: the Doc is None). None if the file went away meanwhile.

        Another program may be rewriting it in place without our lock (truncate, then chunks): while its
        bytes or (inode, size, mtime) keep changing, a writer is at work. If that goes on past
        ``writer_wait_s``, OperationFailed: nothing is set aside while a writer may still be writing.
        """
        log.info("library %s does not parse (%s); waiting for it to settle", target, why)
        start = changed = time.monotonic()
        while True:
            time.sleep(POLL_S)
            now = time.monotonic()
            read = self._read(target)
            if read is None:
                return None
            if read != (data, sig):
                data, sig = read
                changed = now
                try:
                    return data, sig, parse(data)[0], why
                except Corrupt as exc:
                    why = str(exc)
            elif now - changed >= self.settle_s:
                return data, sig, None, why
            if now - start >= self.writer_wait_s:
                raise OperationFailed(
                    f"the library {target} does not parse ({why}) and was still changing after "
                    f"{self.writer_wait_s:.0f} s: another program seems to be writing it. Nothing was "
                    "changed; try again")

    # -- the last good copy ----------------------------------------------------------------------------
    def _note_good(self, data: bytes, sig: Sig) -> None:
        """After a read without the lock: refresh the last good copy if the lock is free right now (a
        reader never waits for it; the next locked read refreshes it otherwise)."""
        if sig == self._good_sig:
            return
        held = self._held.target
        if held is not None:
            self._keep_good(held, data, sig)
            return
        target = self.target
        lock = self._lock_for(target)
        try:
            lock.acquire(timeout=0)
        except (filelock.Timeout, OSError):
            return
        self._held.target = target
        try:
            try:
                now = os.stat(target)
            except OSError:
                return
            if (now.st_ino, now.st_size, now.st_mtime_ns) == sig:  # still the bytes we read
                self._keep_good(target, data, sig)
        finally:
            self._held.target = None
            lock.release()

    def _keep_good(self, target: Path, data: bytes, sig: Sig, *, known_new: bool = False,
                   ) -> None:
        """Make the last good copy hold ``data`` (bytes that parsed, read or written under the lock)."""
        if sig == self._good_sig:
            return
        good = _last_good_path(target)
        if not known_new:
            try:
                if good.stat().st_size == len(data) and good.read_bytes() == data:
                    self._good_sig = sig
                    return
            except OSError:
                pass
        try:
            # Not fsynced: a power cut may lose this copy, never the library (fsynced) it copies.
            atomic_write_bytes(good, data, sync=False)
        except OSError as exc:
            if not self._good_failing:  # a full disk: said once, and once more when it works again
                log.warning("cannot keep the last good copy of the library at %s: %s", good, exc.strerror or exc)
            self._good_failing = True
            return
        if self._good_failing:
            log.info("the last good copy of the library is kept again at %s", good)
        self._good_failing = False
        self._good_sig = sig

    def _read_last_good(self, target: Path) -> Doc | None:
        good = _last_good_path(target)
        try:
            data = good.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the last good copy of the library %s: %s", good, exc.strerror or exc)
            return None
        try:
            return parse(data)[0]
        except Corrupt as exc:
            log.warning("the last good copy of the library %s does not parse either (%s)", good, exc)
            return None

    # -- corrupt file ----------------------------------------------------------------------------------
    def _set_aside_and_rebuild(self, target: Path, data: bytes, why: str) -> Doc:
        """Move the unreadable file aside (every byte kept) and write a rebuilt one: what still decodes
        in it, completed from the last good copy (protection included), plus the videos on disk."""
        salvage, good = salvaged(data), self._read_last_good(target)
        doc = merged(salvage, good)
        version = doc.get("version")
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise OperationFailed(
                f"the library {target} does not parse ({why}), and it is of schema version {version}, newer "
                f"than this vidtray understands ({SCHEMA_VERSION}): it was left as it is")
        imported = self._import_disk_videos(doc)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        moved = target.with_name(f"{target.name}.corrupt-{stamp}")
        n = 1
        while moved.exists():
            moved = target.with_name(f"{target.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            # A rename keeps every byte; the original is never rewritten.
            os.replace(target, moved)
        except OSError as exc:
            raise OperationFailed(
                f"the library {target} is corrupt ({why}) and cannot be moved aside: "
                f"{exc.strerror or exc}") from None
        sources = [f"{len(salvage['items'])} items still readable in it" if salvage else "nothing readable in it",
                   f"the last good copy ({len(good['items'])} items)" if good else "no last good copy",
                   f"{imported} more videos from {self.videos_dir}"]
        log.error("library %s is corrupt (%s): moved it to %s and rebuilt it from %s", target, why, moved,
                  ", ".join(sources))
        self._write_locked(target, doc)
        if self.on_corrupt is not None:
            try:
                self.on_corrupt(moved)
            except Exception:  # the user still has the log line; a broken notifier must not stop the library
                log.exception("on_corrupt callback failed")
        return doc

    def _import_disk_videos(self, doc: Doc) -> int:
        """Add the videos (and sidecars) in ``videos_dir`` that ``doc`` does not list; files that do not
        decode, and files the user removed from the library, are left out. Returns how many were added."""
        if self.videos_dir is None or not self.videos_dir.is_dir():
            return 0
        known = listed_paths(doc)
        removed = self.removed.matcher() if self.removed is not None else None
        paths = sorted(path for path, st in iter_videos(self.videos_dir)
                       if (key := str(abs_path(path))) not in known and (removed is None or not removed(key, st)))
        if not paths:
            return 0
        from vidtray.services import media

        entries, skipped = media.import_entries(paths)
        for path, why in skipped:
            log.warning("rebuild: left out %s: %s", path, why)
        items, _ = doc_upsert(doc, entries)
        return len(items)

    def _write_locked(self, target: Path, doc: Doc) -> None:
        version = doc.get("version")
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise OperationFailed(
                f"the library {self.path} has schema version {version}, newer than this vidtray "
                f"understands ({SCHEMA_VERSION}); not changing it")
        data = dumps(doc)
        for leftover in (*remove_stale_temps(target, STALE_TEMP_S),
                         *remove_stale_temps(_last_good_path(target), STALE_TEMP_S)):
            log.info("removed %s, left by a writer that did not finish", leftover)
        try:
            st = atomic_write_bytes(target, data)
        except OSError as exc:
            self._cache = None
            raise OperationFailed(f"cannot write the library {target}: {exc.strerror or exc}") from None
        self._cache = _Cached(_digest(data), doc)
        # What this object last wrote, as (inode, size, mtime_ns) of those very bytes: a later change of the
        # file is another writer's, even one that lands before we could look at the file again.
        self.written_sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        self._keep_good(target, data, self.written_sig, known_new=True)


def _lock_path(target: Path) -> Path:
    return target.with_name(target.name + ".lock")


def _last_good_path(target: Path) -> Path:
    """Hidden, beside the library: every process and Library object shares it whatever its config, it
    travels with the folder, and has the folder's permissions."""
    return target.with_name(f".{target.name}.vidtray-last-good")


class _Held(threading.local):
    """Per thread: the library file this thread holds the lock of (None: it holds none)."""

    target: Path | None = None


@dataclass
class _Cached:
    digest: bytes
    doc: Doc


def _digest(data: bytes) -> bytes:
    return hashlib.sha1(data, usedforsecurity=False).digest()


def open_library(cfg: Config, on_corrupt: Callable[[Path], None] | None = None) -> Library:
    """The library of a Config (``cfg.library_file``, rebuilt from ``cfg.videos_dir`` if corrupt), with
    what the user removed remembered in ``<state_dir>/removed.json``."""
    return Library(cfg.library_file, videos_dir=cfg.videos_dir, on_corrupt=on_corrupt,
                   removed_file=cfg.paths.removed_file)


def _real(path: Path | str) -> str:
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(os.path.realpath(folder), name)
