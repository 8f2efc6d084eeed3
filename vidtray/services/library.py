"""library.json: the content library that vidtray shares with other apps.

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
  every reader and logged once (``item_problem``); any truthy ``pinned`` and any ``scheduled_at`` protect;
* an older schema (a bare list of items, or a document without ``version``) is upgraded on read.

Items are keyed by absolute path: ``add_video`` is an idempotent upsert that keeps what the user (or the
other app) edited on an existing entry (title, tags, pinned, scheduled_at, and any foreign key). A new
item's title is the start of its prompt for a generated video, else the file name without extension.
The CLI addresses items by id or a unique id prefix (``find_item``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import filelock

from vidtray.errors import OperationFailed, UserError
from vidtray.services import exactjson
from vidtray.services.fsutil import (
    VIDEO_EXTENSIONS,
    atomic_write_bytes,
    iter_videos,
    private_dir,
    remove_stale_temps,
)
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
#: A file that does not parse is called corrupt only once it has not changed for this long: another program
#: may be rewriting it in place (truncate, then chunks) without our lock.
SETTLE_S = 2.0
#: ... and if it is still changing after this long, the operation fails and nothing is set aside.
WRITER_WAIT_S = 15.0
POLL_S = 0.1
#: vidtray's own temp files of a writer that may still be alive are removed only when older than this.
STALE_TEMP_S = 600.0
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


def is_video_item(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "video"


# -- what vidtray understands of an item (the one place that decides) ---------------------------------------


def item_problem(item: Item) -> str | None:
    """Why vidtray cannot use this video item, or None. Such an item stays in the file as it is; every
    reader skips it (``video_items``) and it is logged once. Other fields of the wrong type (a numeric
    title, ``"thumbnail": 3``) do not make an item unusable: each reader checks the fields it needs."""
    path = item.get("path")
    if not isinstance(path, str) or not path:
        return f"its path is {_shown(path)}, not a file path"
    if not names_a_file(path):
        return f"its path {_shown(path)} cannot name a file (a NUL or a lone surrogate in it)"
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id:
        return f"its id is {_shown(item_id)}, not a text"
    return None


def video_items(items: Iterable[Any]) -> Iterable[Item]:
    """The video items vidtray can use, in file order; the others are logged once and skipped."""
    for item in items:
        if isinstance(item, dict) and item.get("type") == "video":
            # item_problem's checks, inlined for the common case: this runs over 50,000 items per write.
            path, item_id = item.get("path"), item.get("id")
            if (type(path) is str and type(item_id) is str and path and item_id and path.isascii()
                    and "\0" not in path):
                yield item
            elif (why := item_problem(item)) is None:
                yield item
            else:
                _log_skipped(item, why)


def names_a_file(path: str) -> bool:
    """True if the OS can take this string as a path (no NUL; a lone surrogate from a JSON escape can
    not be encoded to a file name, except the ones Python itself uses for undecodable bytes)."""
    if not path or "\0" in path:
        return False
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        return False
    return True


def is_pinned(item: Item) -> bool:
    """Any truthy ``pinned`` (``true``, ``1``, ``"yes"``) pins: when in doubt, keep the video."""
    value = item.get("pinned")
    return value is not None and value is not False and value != 0 and value != ""


def is_scheduled(item: Item) -> bool:
    """Any ``scheduled_at`` but null, false or empty: a date vidtray cannot read still protects."""
    value = item.get("scheduled_at")
    return value is not None and value is not False and value != ""


def is_protected(item: Item) -> bool:
    return is_pinned(item) or is_scheduled(item)


def protected_paths(items: Iterable[Any]) -> set[Path]:
    """Paths of the video items that must never be pruned: pinned, or with ``scheduled_at`` set.

    Pass every item (``doc["items"]``), not only the usable ones: an item vidtray cannot use still
    protects its file. When its path is not a string, every absolute path found inside the value (a
    list, an object) is protected, as it may be the one meant.
    """
    out: set[Path] = set()
    for item in items:
        if not is_video_item(item) or not is_protected(item):
            continue
        path = item.get("path")
        if isinstance(path, str):
            candidates = [path]
        else:
            candidates = [s for s in _strings(path) if os.path.isabs(s)]
            if candidates:
                _log_skipped(item, "a protected item whose path is not a string: protecting "
                                   + ", ".join(candidates[:3]))
        out.update(Path(c) for c in candidates if names_a_file(c))
    return out


def thumbnail_paths(items: Iterable[Any]) -> dict[Path, Path]:
    """video -> thumbnail of the usable items whose ``thumbnail`` is a path (else they have none)."""
    return {Path(item["path"]): Path(thumb) for item in video_items(items)
            if isinstance(thumb := item.get("thumbnail"), str) and names_a_file(thumb)}


def _strings(value: Any, limit: int = 100) -> list[str]:
    out: list[str] = []
    work = [value]
    while work and len(out) < limit:
        v = work.pop()
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            work.extend(v.values())
        elif isinstance(v, list):
            work.extend(v)
    return out


def _shown(value: Any) -> str:
    """A value from the file, for a log line: its JSON kind and (the start of) its text."""
    if value is None:
        return "missing or null"
    kind = "object" if isinstance(value, dict) else "list" if isinstance(value, list) else \
        "text" if isinstance(value, str) else "boolean" if isinstance(value, bool) else "number"
    return f"the {kind} {exactjson.preview(value)}"


_skipped_lock = threading.Lock()
_skipped_logged: set[tuple[str, str]] = set()
#: Distinct (item, reason) lines logged per process; beyond it one line says that more were not.
SKIPPED_LOG_LIMIT = 50


def _log_skipped(item: Item, why: str) -> None:
    """Logged once per (item, reason) per process: readers run often (every watcher tick, every list)."""
    who = f"id {_shown(item.get('id'))}, path {_shown(item.get('path'))}"
    key = (who, why)
    with _skipped_lock:
        if key in _skipped_logged or len(_skipped_logged) > SKIPPED_LOG_LIMIT:
            return
        _skipped_logged.add(key)
        last = len(_skipped_logged) > SKIPPED_LOG_LIMIT
    if last:
        log.warning("more library items are kept as they are but not used; not logging each of them")
    else:
        log.warning("library item (%s) is kept as it is but not used: %s", who, why)


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
    for item in video_items(items):
        found = item["id"]
        if found == key:
            return item
        if found.startswith(key):
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
    """path -> usable video item of a document (a dict, so a batch into 50,000 items stays linear)."""
    return {item["path"]: item for item in video_items(doc["items"])}


def listed_paths(doc: Doc) -> set[str]:
    """Every path a video entry of ``doc`` holds, those of items vidtray cannot use included."""
    return {item["path"] for item in doc["items"]
            if isinstance(item, dict) and item.get("type") == "video" and isinstance(item.get("path"), str)}


def doc_upsert(doc: Doc, entries: Iterable[tuple[Path, dict[str, Any]]],
               index: dict[str, Item] | None = None) -> tuple[list[Item], bool]:
    """Upsert videos into ``doc`` in place; returns (the items, anything changed?).

    A path that an item vidtray cannot use holds (its id is not a string) is left to that item: no
    second entry is made and the path is not in the result."""
    items = doc["items"]
    by_path = video_index(doc) if index is None else index
    ids: set[str] = set()
    claimed: dict[str, Item] = {}  # path -> an item vidtray cannot use that holds it
    for item in items:
        if isinstance(item, dict):
            item_id = item.get("id")
            if isinstance(item_id, str) and item_id:
                ids.add(item_id)
            elif item.get("type") == "video" and isinstance(item.get("path"), str):
                claimed[item["path"]] = item
    out: list[Item] = []
    changed = False
    for path, fields in entries:
        key = abs_path(path)
        item = by_path.get(str(key))
        if item is None and str(key) in claimed:
            _log_skipped(claimed[str(key)], "not updated from its file (an item vidtray cannot use holds the path)")
            continue
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
    for item in video_items(doc["items"]):
        if item["path"] in keys and item.get("status") != "missing":
            item["status"] = "missing"
            n += 1
    return n


def _taken_ids(items: Iterable[Any]) -> set[str]:
    # Only string ids can clash with ours; another app's item may hold anything (a list would not hash).
    return {i["id"] for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)}


_MISSING = object()


# -- (de)serialisation -----------------------------------------------------------------------------------


def dumps(doc: Doc) -> bytes:
    """The document as UTF-8 JSON, indented by 2 (as ``JSON.stringify(doc, null, 2)`` writes it), every
    foreign number exactly as it was written (``exactjson.dumps``: orjson, ~0.1 s for 50,000 items)."""
    return exactjson.dumps(doc)


class _Corrupt(Exception):
    """The bytes are not a library document."""


def parse(data: bytes) -> tuple[Doc, bool]:
    """Bytes -> (version-1 document, upgraded?). _Corrupt if it is not a library.

    The stdlib reader, not orjson's (orjson turns integers beyond 64 bits into floats), with every number
    whose text a writer would not give back kept as its text (``exactjson.loads``). Nesting deeper than
    the parser goes (about 1,000 levels) is a corrupt file too, not a crash.
    """
    try:
        raw = exactjson.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise _Corrupt(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise _Corrupt("nested too deeply to read (about 1,000 levels or more)") from None
    return upgrade(raw)


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
        raise _Corrupt(f"'version' is {_shown(version)}, not an integer")
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
    ids = _taken_ids(items)
    for item in items:
        if is_video_item(item) and item.get("id") is None:
            # The CLI needs an id to address an item; give one to entries another tool added without.
            # An id of another type is the other tool's value: kept, and the item is not used.
            path = item.get("path")
            new = item_id_for(abs_path(path)) if isinstance(path, str) else uuid.uuid4().hex[:12]
            if new in ids:
                new = uuid.uuid4().hex[:12]
            item["id"] = new
            ids.add(new)
            upgraded = True
    return raw, upgraded


def _salvaged(data: bytes) -> Doc | None:
    """The library document made of what still decodes in damaged bytes, or None."""
    try:
        raw = exactjson.salvage(data)
    except Exception:  # a bug here must not stop the rebuild: there is still the last good copy
        log.exception("could not salvage anything from the damaged library")
        return None
    if isinstance(raw, dict):
        version = raw.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            del raw["version"]
        if "items" in raw and not isinstance(raw["items"], list):
            del raw["items"]
    try:
        return upgrade(raw)[0] if raw is not None else None
    except _Corrupt:
        return None


def _merge(newer: Doc | None, older: Doc | None) -> Doc:
    """A rebuilt document: ``newer`` (what still decodes in the damaged file) completed from ``older`` (the
    last good copy): its top-level keys and items ``newer`` lacks, and its protection: an item pinned or
    scheduled in either stays so. A deletion made after the last good copy may come back; nothing is lost."""
    if newer is None or older is None:
        return newer or older or empty_document()
    doc = dict(newer)
    for key, value in older.items():
        doc.setdefault(key, value)
    items = list(newer["items"])
    by_id = {i["id"]: i for i in reversed(items) if isinstance(i, dict) and isinstance(i.get("id"), str)}
    by_path = {i["path"]: i for i in reversed(items) if is_video_item(i) and isinstance(i.get("path"), str)}
    seen = {exactjson.dumps(i) for i in items if not (isinstance(i, dict) and isinstance(i.get("id"), str))}
    for item in older["items"]:
        twin = None
        if isinstance(item, dict):
            if isinstance(item.get("id"), str):
                twin = by_id.get(item["id"])
            if twin is None and is_video_item(item) and isinstance(item.get("path"), str):
                twin = by_path.get(item["path"])
        if twin is None:
            if (isinstance(item, dict) and isinstance(item.get("id"), str)) or exactjson.dumps(item) not in seen:
                items.append(item)
            continue
        if is_video_item(item) and is_video_item(twin):
            if is_pinned(item) and not is_pinned(twin):
                twin["pinned"] = item["pinned"]
            if is_scheduled(item) and not is_scheduled(twin):
                twin["scheduled_at"] = item["scheduled_at"]
    doc["items"] = items
    return doc


# -- the store ---------------------------------------------------------------------------------------------


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
        self._held = threading.local()  # .target: the file this thread holds the lock of
        self.removed = RemovedFiles(removed_file, self._locked) if removed_file is not None else None
        # The last document this object wrote or read under the lock, with the digest of its bytes: if
        # the file still holds those bytes, the next update skips json.loads (50,000 items: ~0.3 s).
        self._cache: _Cached | None = None
        #: (inode, size, mtime_ns) of the bytes this object last wrote (None before its first write)
        self.written_sig: tuple[int, int, int] | None = None
        # (inode, size, mtime_ns) of the library when the last good copy was known to hold its bytes.
        self._good_sig: tuple[int, int, int] | None = None
        self._loaded: tuple[Path, bytes, tuple[int, int, int]] | None = None  # by the current update
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
        except _Corrupt:
            # Maybe another program is writing it in place right now: decide under the lock, after waiting.
            return self.update(exactjson.clone, write=False)
        self._note_good(data, sig)
        return doc

    def items(self) -> list[Item]:
        """The video items vidtray can use (fresh copies), in file order (see ``item_problem``)."""
        return list(video_items(self.document()["items"]))

    def get(self, item_id: str) -> Item:
        """An item by id or unique id prefix (UserError if none or several match)."""
        return find_item(self.items(), item_id)

    def find_by_path(self, path: Path) -> Item | None:
        key = str(abs_path(path))
        for item in self.items():
            if item["path"] == key:
                return item
        return None

    def protected_paths(self) -> set[Path]:
        """Absolute paths of items that must never be pruned: pinned, or with ``scheduled_at`` set."""
        return protected_paths(self.document()["items"])

    def summary(self) -> dict[str, int]:
        items = self.items()
        return {
            "items": len(items),
            "pinned": sum(1 for i in items if is_pinned(i)),
            "scheduled": sum(1 for i in items if is_scheduled(i)),
            "missing": sum(1 for i in items if i.get("status") == "missing"),
        }

    # -- writing ---------------------------------------------------------------------------------------
    def update(self, fn: Callable[[Doc], T], *, write: bool = True) -> T:
        """Read-modify-write of the whole document under the lock; ``fn`` mutates it in place.

        ``fn`` may return the sentinel ``Library.UNCHANGED`` (or a tuple whose first element is it)
        to skip the write. Returns what ``fn`` returned.
        """
        with self._locked():
            self._loaded = None
            try:
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
                elif self._loaded is not None:
                    self._keep_good(*self._loaded)  # the bytes just read parsed: the last good ones now
                return result
            finally:
                self._loaded = None

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
        """Upsert the video at ``path`` (absolute path is the key). Keeps user edits on an existing entry."""
        items = self.add_videos([(path, fields)])
        if not items:
            raise OperationFailed(f"the library entry for {abs_path(path)} is one vidtray cannot use (see the "
                                  "log); it was left as it is")
        return items[0]

    def add_videos(self, entries: Sequence[tuple[Path, dict[str, Any]]]) -> list[Item]:
        """Upsert many videos with one read and one write of the file (watcher bursts, rescans)."""
        if not entries:
            return []

        def apply(doc: Doc) -> Any:
            items, changed = doc_upsert(doc, entries)
            out = exactjson.clone(items)
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
            return exactjson.clone(item)

        return self.update(apply)

    def remove(self, item_id: str) -> Item:
        """Remove one entry, not the file, and remember that the user did (imports then keep the file out).

        UserError if the id matches none or several."""

        def apply(doc: Doc) -> Item:
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
            gone = {id(item) for item in video_items(doc["items"]) if real(item["path"]) in keys}
            if not gone:
                return UNCHANGED
            doc["items"][:] = [item for item in doc["items"] if id(item) not in gone]
            return len(gone)

        result = self.update(apply)
        return 0 if result is UNCHANGED else int(result)

    # -- internals -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[Path]:
        """Hold the lock of the library's target; yields the target. Re-entrant within a thread."""
        held = getattr(self._held, "target", None)
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

    def _read(self, path: Path) -> tuple[bytes, tuple[int, int, int]] | None:
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

    def _load_locked(self) -> Doc:
        target = self._held.target
        read = self._read(target)
        if read is None:
            self._cache = None
            return empty_document()
        data, sig = read
        digest = _digest(data)
        if self._cache is not None and self._cache.digest == digest:
            return self._cache.doc
        self._cache = None
        try:
            doc = parse(data)[0]
        except _Corrupt as exc:
            settled = self._wait_for_writer(target, data, sig, str(exc))
            if settled is None:
                return empty_document()
            data, sig, parsed, why = settled
            if parsed is None:
                return self._set_aside_and_rebuild(target, data, why)
            doc, digest = parsed, _digest(data)
        self._cache = _Cached(digest, doc)
        self._loaded = (target, data, sig)
        return doc

    def _wait_for_writer(self, target: Path, data: bytes, sig: tuple[int, int, int], why: str,
                         ) -> tuple[bytes, tuple[int, int, int], Doc | None, str] | None:
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
                except _Corrupt as exc:
                    why = str(exc)
            elif now - changed >= self.settle_s:
                return data, sig, None, why
            if now - start >= self.writer_wait_s:
                raise OperationFailed(
                    f"the library {target} does not parse ({why}) and was still changing after "
                    f"{self.writer_wait_s:.0f} s: another program seems to be writing it. Nothing was "
                    "changed; try again")

    # -- the last good copy ----------------------------------------------------------------------------
    def _note_good(self, data: bytes, sig: tuple[int, int, int]) -> None:
        """After a read without the lock: refresh the last good copy if the lock is free right now (a
        reader never waits for it; the next locked read refreshes it otherwise)."""
        if sig == self._good_sig:
            return
        held = getattr(self._held, "target", None)
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

    def _keep_good(self, target: Path, data: bytes, sig: tuple[int, int, int], *, known_new: bool = False,
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
        except _Corrupt as exc:
            log.warning("the last good copy of the library %s does not parse either (%s)", good, exc)
            return None

    # -- corrupt file ----------------------------------------------------------------------------------
    def _set_aside_and_rebuild(self, target: Path, data: bytes, why: str) -> Doc:
        """Move the unreadable file aside (every byte kept) and write a rebuilt one: what still decodes
        in it, completed from the last good copy (protection included), plus the videos on disk."""
        salvaged, good = _salvaged(data), self._read_last_good(target)
        doc = _merge(salvaged, good)
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
        sources = [f"{len(salvaged['items'])} items still readable in it" if salvaged else "nothing readable in it",
                   f"the last good copy ({len(good['items'])} items)" if good else "no last good copy",
                   f"{imported} more videos from {self.videos_dir}"]
        log.error("library %s is corrupt (%s): moved it to %s and rebuilt it from %s", target, why, moved,
                  ", ".join(sources))
        self._write_locked(doc)
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
        known = {i["path"] for i in doc["items"] if is_video_item(i) and isinstance(i.get("path"), str)}
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

    def _write_locked(self, doc: Doc) -> None:
        target = self._held.target
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


@dataclass
class _Cached:
    digest: bytes
    doc: Doc


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
