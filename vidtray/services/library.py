"""library.json: the content library that vidtray shares with other apps.

Other programs read and edit this file, so:

* keys and items vidtray does not know are kept exactly (values round-trip through JSON unchanged);
* every change is read-modify-write of the whole document under a lock file beside it
  (``library.json.lock``) and lands by atomic replace (``fsutil.atomic_write_bytes``);
* a file that does not parse is moved aside byte for byte (``library.json.corrupt-<timestamp>``),
  never overwritten, and the library is rebuilt from the videos and sidecars on disk;
* an older schema (a bare list of items, or a document without ``version``) is upgraded on read.

Items are keyed by absolute path: ``add_video`` is an idempotent upsert that keeps what the user (or the
other app) edited on an existing entry (title, tags, pinned, scheduled_at, and any foreign key). A new
item's title is the start of its prompt for a generated video, else the file name without extension.
The CLI addresses items by id or a unique id prefix (``find_item``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import filelock

try:  # fast JSON writer; the stdlib takes over where it is missing or refuses a value
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    _orjson = None  # type: ignore[assignment]

from vidtray.errors import OperationFailed, UserError
from vidtray.services.fsutil import VIDEO_EXTENSIONS, atomic_write_bytes, iter_videos, private_dir
from vidtray.services.removed import RemovedFiles

log = logging.getLogger("vidtray.library")

SCHEMA_VERSION = 1
#: Keys a person (or the other app) edits; an import never overwrites them on an existing entry.
USER_KEYS = frozenset({"id", "added", "title", "tags", "pinned", "scheduled_at"})
#: Keys an import may set from the file, the probe and the sidecar.
IMPORT_KEYS = frozenset({
    "prompt", "model", "seed", "created", "size_bytes", "duration_s", "fps", "width", "height", "codec",
    "thumbnail", "source", "status", "error",
})
STATUSES = ("ready", "missing", "broken")
LOCK_TIMEOUT_S = 30.0
#: A title made from a prompt is cut on a word boundary near this many characters.
TITLE_CHARS = 60

T = TypeVar("T")
Doc = dict[str, Any]
Item = dict[str, Any]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def abs_path(path: str | os.PathLike[str]) -> Path:
    """The key of an item: absolute and normalised, but symlinks are not resolved (the user's path)."""
    return Path(os.path.abspath(os.fspath(path)))


def item_id_for(path: Path) -> str:
    """A stable id from the path, so a rebuilt library gives a file the id it had before."""
    return hashlib.sha1(os.fsencode(str(path))).hexdigest()[:12]


def is_video_name(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def protected_paths(items: Iterable[Item]) -> set[Path]:
    """Paths of the items that must never be pruned: pinned, or with ``scheduled_at`` set."""
    return {
        Path(item["path"]) for item in items
        if isinstance(item.get("path"), str) and (item.get("pinned") is True or item.get("scheduled_at"))
    }


def is_video_item(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "video"


def sidecar_path(video: Path) -> Path:
    return video.with_suffix(".json")


def read_sidecar(video: Path) -> dict[str, Any] | None:
    """The generation sidecar ``<stem>.json`` beside a video, or None if absent or unusable."""
    side = sidecar_path(video)
    try:
        raw = side.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as exc:
        log.warning("cannot read sidecar %s: %s", side, exc)
        return None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        log.warning("ignoring sidecar %s: not valid JSON (%s)", side, exc)
        return None
    if not isinstance(doc, dict):
        log.warning("ignoring sidecar %s: not a JSON object", side)
        return None
    return doc


def sidecar_fields(video: Path) -> dict[str, Any]:
    """Item fields from the sidecar: prompt/model/seed/created and ``source: generated``; else imported."""
    doc = read_sidecar(video)
    if doc is None:
        return {"source": "imported"}
    out: dict[str, Any] = {"source": "generated"}
    for key in ("prompt", "model", "seed", "created"):
        if key in doc:
            out[key] = doc[key]
    return out


def prompt_title(prompt: str, limit: int = TITLE_CHARS) -> str:
    """The start of a prompt as a title: whitespace collapsed, cut on a word boundary with "…"."""
    text = " ".join(prompt.split())
    if len(text) <= limit:
        return text
    cut = text[:limit + 1]
    space = cut.rfind(" ")
    # A word boundary in the second half; a very long first word is cut where it is.
    head = cut[:space] if space > limit // 2 else text[:limit]
    return head.rstrip(" ,;:.-–—") + "…"


def default_title(path: Path, fields: dict[str, Any]) -> str:
    """A new item's title: the start of the prompt for a generated video, else the file's stem."""
    prompt = fields.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return prompt_title(prompt)
    return path.stem


def find_item(items: Iterable[Item], item_id: str) -> Item:
    """The video item with this id, or the only one whose id starts with it (like queue ids).

    UserError (exit 2) when none matches or several do; the message lists the candidates.
    """
    key = item_id.strip()
    if not key:
        raise UserError("a library id is needed (see `vidtray library list`)")
    matches: list[Item] = []
    for item in items:
        if not is_video_item(item):
            continue
        found = item.get("id")
        if found == key:
            return item
        if isinstance(found, str) and found.startswith(key):
            matches.append(item)
    if not matches:
        raise UserError(f"no library item with id {item_id!r} (see `vidtray library list`)")
    if len(matches) > 1:
        shown = ", ".join(str(m["id"]) for m in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise UserError(f"library id {item_id!r} is ambiguous: {len(matches)} items start with it ({shown}); "
                        "give more characters")
    return matches[0]


def empty_document() -> Doc:
    return {"version": SCHEMA_VERSION, "items": []}


def new_item(path: Path, fields: dict[str, Any], taken_ids: set[str] | dict[str, Any] | None = None) -> Item:
    item_id = item_id_for(path)
    if taken_ids is not None and item_id in taken_ids:
        item_id = uuid.uuid4().hex[:12]
    try:
        st = path.stat()
        created = datetime.fromtimestamp(st.st_mtime, UTC).isoformat(timespec="seconds")
        size = st.st_size
    except OSError:
        created, size = None, None
    item: Item = {
        "id": item_id, "type": "video", "path": str(path), "title": default_title(path, fields),
        "prompt": None, "model": None, "seed": None, "created": created, "added": now_iso(),
        "size_bytes": size, "duration_s": None, "fps": None, "width": None, "height": None, "codec": None,
        "thumbnail": None, "source": "imported", "pinned": False, "scheduled_at": None, "tags": [],
        "status": "ready",
    }
    for key, value in fields.items():
        if key not in ("id", "type", "path"):
            item[key] = value
    return item


def merge_import(item: Item, fields: dict[str, Any], *, set_ready: bool = True) -> bool:
    """Apply fields from a (re-)import to an existing item, keeping user edits; True if anything changed.

    ``set_ready``: the file was just probed and is fine, so a ``missing`` entry is ``ready`` again.
    """
    changed = False
    prompt = fields.get("prompt")
    if (isinstance(prompt, str) and prompt.strip() and item.get("prompt") != prompt
            and isinstance(item.get("path"), str) and item.get("title") == Path(item["path"]).stem):
        # A sidecar that arrived after the video: the title was the stem default, not the user's.
        item["title"] = prompt_title(prompt)
        changed = True
    for key, value in fields.items():
        if key in USER_KEYS or key in ("type", "path"):
            continue
        if item.get(key, _MISSING) != value:
            item[key] = value
            changed = True
    if set_ready and "status" not in fields and item.get("status") != "ready":
        item["status"] = "ready"
        changed = True
    if item.get("status") == "ready" and "error" in item and "error" not in fields:
        del item["error"]
        changed = True
    return changed


def video_index(doc: Doc) -> dict[str, Item]:
    """path -> video item of a document (a dict, so a batch into 50,000 items stays linear)."""
    return {item["path"]: item for item in doc["items"]
            if is_video_item(item) and isinstance(item.get("path"), str)}


def doc_upsert(doc: Doc, entries: Iterable[tuple[Path, dict[str, Any]]],
               index: dict[str, Item] | None = None) -> tuple[list[Item], bool]:
    """Upsert videos into ``doc`` in place; returns (the items, anything changed?)."""
    items = doc["items"]
    by_path = video_index(doc) if index is None else index
    # Only string ids can clash with ours; another app's item may hold anything (a list would not hash).
    ids = {item.get("id") for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)}
    out: list[Item] = []
    changed = False
    for path, fields in entries:
        key = abs_path(path)
        item = by_path.get(str(key))
        if item is None:
            item = new_item(key, dict(fields), ids)
            items.append(item)
            by_path[str(key)] = item
            ids.add(item["id"])
            changed = True
        else:
            changed = merge_import(item, dict(fields)) or changed
        out.append(item)
    return out, changed


def doc_mark_missing(doc: Doc, keys: set[str]) -> int:
    """``status: missing`` on the video items at these absolute path strings; returns how many changed."""
    n = 0
    for item in doc["items"]:
        path = item.get("path") if is_video_item(item) else None
        if isinstance(path, str) and path in keys and item.get("status") != "missing":
            item["status"] = "missing"
            n += 1
    return n


_MISSING = object()


# -- (de)serialisation -----------------------------------------------------------------------------------


def dumps(doc: Doc, *, nonfinite: bool = False) -> bytes:
    """The document as UTF-8 JSON, indented by 2 (as ``JSON.stringify(doc, null, 2)`` writes it).

    orjson writes a 50,000-item library in ~0.1 s (the stdlib needs ~1 s with an indent). It refuses
    what JSON text can hold but it cannot (integers beyond 64 bits, lone surrogates) and would turn
    NaN/Infinity (``nonfinite``: the file had them) into null; those documents take the stdlib path.
    """
    if _orjson is not None and not nonfinite:
        try:
            return _orjson.dumps(doc, option=_orjson.OPT_INDENT_2) + b"\n"
        except (_orjson.JSONEncodeError, TypeError):
            pass
    try:
        return _dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (legal as a JSON \\u escape, not as UTF-8): keep it as an escape.
        return _dumps(doc, ensure_ascii=True).encode("ascii")


def _dumps(doc: Doc, *, ensure_ascii: bool) -> str:
    """Stdlib fallback: one item per line, so each item goes through the C encoder (no indent)."""
    encode = json.JSONEncoder(ensure_ascii=ensure_ascii, allow_nan=True).encode
    parts = []
    for key, value in doc.items():
        if key == "items" and isinstance(value, list) and value:
            body = "[\n    " + ",\n    ".join(map(encode, value)) + "\n  ]"
        else:
            body = encode(value)
        parts.append(f"  {encode(key)}: {body}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


class _Corrupt(Exception):
    """The bytes are not a library document."""


def parse(data: bytes) -> tuple[Doc, bool, bool]:
    """Bytes -> (version-1 document, upgraded?, has NaN/Infinity?). _Corrupt if it is not a library."""
    nonfinite = False

    def constant(name: str) -> float:
        nonlocal nonfinite
        nonfinite = True
        return float(name.replace("Infinity", "inf"))

    # The stdlib reader, not orjson's: orjson turns integers beyond 64 bits into floats.
    try:
        raw = json.loads(data, parse_constant=constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Corrupt(f"not valid JSON: {exc}") from None
    doc, upgraded = upgrade(raw)
    return doc, upgraded, nonfinite


def upgrade(raw: Any) -> tuple[Doc, bool]:
    """Bring an older document to schema 1; foreign keys stay where they are."""
    upgraded = False
    if isinstance(raw, list):
        # Before versioning the file was a bare list of items.
        raw = {"version": SCHEMA_VERSION, "items": raw}
        upgraded = True
    if not isinstance(raw, dict):
        raise _Corrupt(f"top level is a JSON {type(raw).__name__}, not an object")
    version = raw.get("version")
    if version is None:
        raw = {"version": SCHEMA_VERSION, **raw}
        upgraded = True
    elif isinstance(version, bool) or not isinstance(version, int):
        raise _Corrupt(f"'version' is {version!r}, not an integer")
    items = raw.get("items")
    if items is None:
        raw["items"] = items = []
        upgraded = True
    elif not isinstance(items, list):
        raise _Corrupt(f"'items' is a JSON {type(items).__name__}, not a list")
    if upgraded:
        for item in items:
            # Unversioned files held only videos and did not say so.
            if isinstance(item, dict) and "type" not in item and isinstance(item.get("path"), str):
                item["type"] = "video"
    ids = {item.get("id") for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)}
    for item in items:
        if is_video_item(item) and not isinstance(item.get("id"), str):
            # The CLI needs an id to address an item; give one to entries another tool added without.
            path = item.get("path")
            new = item_id_for(abs_path(path)) if isinstance(path, str) else uuid.uuid4().hex[:12]
            if new in ids:
                new = uuid.uuid4().hex[:12]
            item["id"] = new
            ids.add(new)
            upgraded = True
    return raw, upgraded


# -- the store ---------------------------------------------------------------------------------------------


class Library:
    """library.json at ``path``. Thread- and process-safe; every method reads the file fresh.

    ``removed_file``: where ``remove`` remembers what the user removed, so imports keep it out
    (``vidtray.services.removed``); without it a removed file may come back with the next rescan.
    """

    def __init__(self, path: Path, *, videos_dir: Path | None = None,
                 on_corrupt: Callable[[Path], None] | None = None, removed_file: Path | None = None) -> None:
        self.path = abs_path(path)
        self.videos_dir = abs_path(videos_dir) if videos_dir is not None else None
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.on_corrupt = on_corrupt
        self._lock = filelock.FileLock(str(self.lock_path), timeout=LOCK_TIMEOUT_S)
        self.removed = RemovedFiles(removed_file, self._locked) if removed_file is not None else None
        # The last document this object wrote or read under the lock, with the digest of its bytes: if
        # the file still holds those bytes, the next update skips json.loads (50,000 items: ~0.3 s).
        self._cache: _Cached | None = None

    def __repr__(self) -> str:
        return f"Library({str(self.path)!r})"

    # -- reading ---------------------------------------------------------------------------------------
    def document(self) -> Doc:
        """The whole document (a fresh copy). A corrupt file is set aside and rebuilt (under the lock)."""
        data = self._read_bytes()
        if data is None:
            return empty_document()
        try:
            return parse(data)[0]
        except _Corrupt:
            # Maybe another program is writing it in place right now: decide under the lock, after retries.
            return self.update(lambda doc: copy.deepcopy(doc), write=False)

    def items(self) -> list[Item]:
        """Video items (fresh copies), in file order."""
        return [item for item in self.document()["items"] if is_video_item(item)]

    def get(self, item_id: str) -> Item:
        """An item by id or unique id prefix (UserError if none or several match)."""
        return find_item(self.items(), item_id)

    def find_by_path(self, path: Path) -> Item | None:
        key = str(abs_path(path))
        for item in self.items():
            if item.get("path") == key:
                return item
        return None

    def protected_paths(self) -> set[Path]:
        """Absolute paths of items that must never be pruned: pinned, or with ``scheduled_at`` set."""
        return protected_paths(self.items())

    def summary(self) -> dict[str, int]:
        items = self.items()
        return {
            "items": len(items),
            "pinned": sum(1 for i in items if i.get("pinned") is True),
            "scheduled": sum(1 for i in items if i.get("scheduled_at")),
            "missing": sum(1 for i in items if i.get("status") == "missing"),
        }

    # -- writing ---------------------------------------------------------------------------------------
    def update(self, fn: Callable[[Doc], T], *, write: bool = True) -> T:
        """Read-modify-write of the whole document under the lock; ``fn`` mutates it in place.

        ``fn`` may return the sentinel ``Library.UNCHANGED`` (or a tuple whose first element is it)
        to skip the write. Returns what ``fn`` returned.
        """
        with self._locked():
            doc = self._load_locked()
            try:
                result = fn(doc)
            except BaseException:
                self._cache = None  # fn may have half-mutated the cached document
                raise
            unchanged = result is UNCHANGED or (
                isinstance(result, tuple) and result and result[0] is UNCHANGED)
            if write and not unchanged:
                self._write_locked(doc)
            return result

    def ensure_writable(self) -> None:
        """Fail now (OperationFailed, one clear line) if the library's folder cannot be written."""
        folder = self.path.parent
        try:
            private_dir(folder)
            with self._locked():
                probe = folder / f".{self.path.name}.{os.getpid()}.write-test"
                probe.write_bytes(b"")
                probe.unlink()
        except OSError as exc:
            raise OperationFailed(
                f"cannot write the library in {folder}: {exc.strerror or exc} (check library_path)") from None

    def add_video(self, path: Path, **fields: Any) -> Item:
        """Upsert the video at ``path`` (absolute path is the key). Keeps user edits on an existing entry."""
        return self.add_videos([(path, fields)])[0]

    def add_videos(self, entries: Sequence[tuple[Path, dict[str, Any]]]) -> list[Item]:
        """Upsert many videos with one read and one write of the file (watcher bursts, rescans)."""
        if not entries:
            return []

        def apply(doc: Doc) -> Any:
            items, changed = doc_upsert(doc, entries)
            out = copy.deepcopy(items)
            return out if changed else (UNCHANGED, out)

        result = self.update(apply)
        return result[1] if isinstance(result, tuple) else result

    def mark_missing(self, paths: Iterable[Path]) -> int:
        """Set ``status: missing`` on the items at these paths (entries and their edits stay)."""
        keys = {str(abs_path(p)) for p in paths}
        if not keys:
            return 0

        def apply(doc: Doc) -> Any:
            n = doc_mark_missing(doc, keys)
            return n if n else UNCHANGED

        result = self.update(apply)
        return 0 if result is UNCHANGED else int(result)

    def edit(self, item_id: str, **changes: Any) -> Item:
        """Set fields on one item (pin/unpin/title/tags/schedule). UserError if the id matches none or several."""

        def apply(doc: Doc) -> Item:
            item = find_item(doc["items"], item_id)
            item.update(changes)
            return copy.deepcopy(item)

        return self.update(apply)

    def remove(self, item_id: str) -> Item:
        """Remove one entry, not the file, and remember that the user did (imports then keep the file out).

        UserError if the id matches none or several."""

        def apply(doc: Doc) -> Item:
            items = doc["items"]
            item = find_item(items, item_id)
            if self.removed is not None and isinstance(item.get("path"), str):
                # Under the library lock: the watcher cannot import the file between the two writes.
                try:
                    self.removed.add(item["path"], item.get("id"), item.get("size_bytes"))
                except OSError as exc:
                    raise OperationFailed(f"cannot record the removal in {self.removed.path}: "
                                          f"{exc.strerror or exc}; the item stays") from None
            del items[next(n for n, other in enumerate(items) if other is item)]
            return item

        return self.update(apply)

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

        def apply(doc: Doc) -> Any:
            before = len(doc["items"])
            doc["items"][:] = [item for item in doc["items"] if not (
                is_video_item(item) and isinstance(item.get("path"), str) and real(item["path"]) in keys)]
            n = before - len(doc["items"])
            return n if n else UNCHANGED

        result = self.update(apply)
        return 0 if result is UNCHANGED else int(result)

    # -- internals -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self):  # -> Iterator[None]
        try:
            private_dir(self.path.parent)
            self._lock.acquire()
        except filelock.Timeout:
            raise OperationFailed(
                f"the library {self.path} is locked by another program (waited {LOCK_TIMEOUT_S:.0f} s "
                f"for {self.lock_path})") from None
        except OSError as exc:
            raise OperationFailed(
                f"cannot lock the library in {self.path.parent}: {exc.strerror or exc} "
                "(check library_path)") from None
        try:
            yield
        finally:
            self._lock.release()

    def _read_bytes(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise OperationFailed(f"the library path {self.path} is a folder, not a file") from None
        except OSError as exc:
            raise OperationFailed(f"cannot read the library {self.path}: {exc.strerror or exc}") from None

    def _load_locked(self) -> Doc:
        data = self._read_bytes()
        if data is None:
            self._cache = None
            return empty_document()
        digest = _digest(data)
        if self._cache is not None and self._cache.digest == digest:
            return self._cache.doc
        self._cache = None
        try:
            doc, _, nonfinite = parse(data)
        except _Corrupt as exc:
            # Another program may be writing it in place without our lock: give it a moment first.
            for _ in range(3):
                time.sleep(0.1)
                again = self._read_bytes()
                if again is None:
                    return empty_document()
                try:
                    doc, _, nonfinite = parse(again)
                    break
                except _Corrupt:
                    data = again
            else:
                return self._set_aside_and_rebuild(data, str(exc))
            digest = _digest(again)
        self._cache = _Cached(digest, doc, nonfinite)
        return doc

    def _set_aside_and_rebuild(self, data: bytes, why: str) -> Doc:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        moved = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while moved.exists():
            moved = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            # A rename keeps every byte; the original is never rewritten.
            os.replace(self.path, moved)
        except OSError as exc:
            raise OperationFailed(
                f"the library {self.path} is corrupt ({why}) and cannot be moved aside: "
                f"{exc.strerror or exc}") from None
        log.error("library %s is corrupt (%s): moved it to %s and rebuilt it from %s",
                  self.path, why, moved, self.videos_dir)
        doc = empty_document()
        doc["items"] = self._rebuild_items()
        self._write_locked(doc)
        if self.on_corrupt is not None:
            try:
                self.on_corrupt(moved)
            except Exception:  # the user still has the log line; a broken notifier must not stop the library
                log.exception("on_corrupt callback failed")
        return doc

    def _rebuild_items(self) -> list[Item]:
        """Items for the videos (and sidecars) in ``videos_dir``; files that do not decode are left out."""
        if self.videos_dir is None or not self.videos_dir.is_dir():
            return []
        removed = self.removed.matcher() if self.removed is not None else None
        paths = sorted(path for path, st in iter_videos(self.videos_dir)
                       if removed is None or not removed(str(abs_path(path)), st))
        from vidtray.services import media

        entries, skipped = media.import_entries(paths)
        for path, why in skipped:
            log.warning("rebuild: left out %s: %s", path, why)
        items: list[Item] = []
        ids: set[str] = set()
        for path, fields in entries:
            item = new_item(abs_path(path), fields, ids)
            ids.add(item["id"])
            items.append(item)
        log.info("rebuilt %d library items from %s", len(items), self.videos_dir)
        return items

    def _remove_stale_temps(self) -> None:
        """Temp files of writers that were killed mid-write; under the lock no live writer of ours has one."""
        prefix = f".{self.path.name}."
        try:
            with os.scandir(self.path.parent) as entries:
                stale = [e.path for e in entries if e.name.startswith(prefix) and e.name.endswith(".tmp")]
        except OSError:
            return
        for name in stale:
            with contextlib.suppress(OSError):
                os.unlink(name)
                log.info("removed %s, left by a writer that did not finish", name)

    def _write_locked(self, doc: Doc) -> None:
        version = doc.get("version")
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise OperationFailed(
                f"the library {self.path} has schema version {version}, newer than this vidtray "
                f"understands ({SCHEMA_VERSION}); not changing it")
        nonfinite = self._cache.nonfinite if self._cache is not None and self._cache.doc is doc else False
        data = dumps(doc, nonfinite=nonfinite)
        self._remove_stale_temps()
        try:
            atomic_write_bytes(self.path, data)
        except OSError as exc:
            self._cache = None
            raise OperationFailed(f"cannot write the library {self.path}: {exc.strerror or exc}") from None
        self._cache = _Cached(_digest(data), doc, nonfinite)


@dataclass
class _Cached:
    digest: bytes
    doc: Doc
    nonfinite: bool


def _digest(data: bytes) -> bytes:
    return hashlib.sha1(data, usedforsecurity=False).digest()


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()
Library.UNCHANGED = UNCHANGED  # type: ignore[attr-defined]


def open_library(cfg: Any, on_corrupt: Callable[[Path], None] | None = None) -> Library:
    """The library of a Config (``cfg.library_file``, rebuilt from ``cfg.videos_dir`` if corrupt), with
    what the user removed remembered in ``<state_dir>/removed.json``."""
    return Library(cfg.library_file, videos_dir=cfg.videos_dir, on_corrupt=on_corrupt,
                   removed_file=cfg.paths.removed_file)


def _real(path: Path | str) -> str:
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(os.path.realpath(folder), name)
