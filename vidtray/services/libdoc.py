"""The library document (library.json as data): its schema, reading and writing its bytes, and the edits an
import makes. No files and no locks here: ``vidtray.services.library.Library`` holds the file.

A document is the parsed JSON object itself (``Doc``), so every key and item vidtray does not know, and
every foreign number's spelling (``exactjson``), survive a read-modify-write. Its version-1 shape::

    {"version": 1, "items": [{"id": "...", "type": "video", "path": "/abs/path.mp4", ...}, ...]}

An older schema (a bare list of items, or a document without ``version``) is upgraded on read. Items are
keyed by absolute path (``libitem.abs_path``): ``doc_upsert`` is an idempotent upsert that keeps what the
user (or the other app) edited on an existing entry (title, tags, pinned, scheduled_at, and any foreign
key). A new item's title is the start of its prompt for a generated video, else the file name without
extension.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Container, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vidtray.services import exactjson
from vidtray.services.libitem import (
    Fields,
    Item,
    abs_path,
    is_pinned,
    is_scheduled,
    is_video_item,
    item_id_for,
    log_skipped,
    shown,
    video_items,
)

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
#: A title made from a prompt is cut on a word boundary near this many characters.
TITLE_CHARS = 60

#: library.json as parsed: every key and value kept as the file has them.
Doc = dict[str, Any]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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


def default_title(path: Path, fields: Fields) -> str:
    """A new item's title: the start of the prompt for a generated video, else the file's stem."""
    prompt = fields.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return prompt_title(prompt)
    return path.stem


def empty_document() -> Doc:
    return {"version": SCHEMA_VERSION, "items": []}


def new_item(path: Path, fields: Fields, taken_ids: Container[str] | None = None) -> Item:
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


def merge_import(item: Item, fields: Fields, *, set_ready: bool = True) -> bool:
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


def doc_upsert(doc: Doc, entries: Iterable[tuple[Path, Fields]],
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
            log_skipped(claimed[str(key)], "not updated from its file (an item vidtray cannot use holds the path)")
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


def _taken_ids(items: Iterable[object]) -> set[str]:
    # Only string ids can clash with ours; another app's item may hold anything (a list would not hash).
    return {i["id"] for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)}


_MISSING = object()


# -- (de)serialisation -----------------------------------------------------------------------------------


def dumps(doc: Doc) -> bytes:
    """The document as UTF-8 JSON, indented by 2 (as ``JSON.stringify(doc, null, 2)`` writes it), every
    foreign number exactly as it was written (``exactjson.dumps``: orjson, ~0.1 s for 50,000 items)."""
    return exactjson.dumps(doc)


class Corrupt(Exception):
    """The bytes are not a library document."""


def parse(data: bytes) -> tuple[Doc, bool]:
    """Bytes -> (version-1 document, upgraded?). ``Corrupt`` if it is not a library.

    The stdlib reader, not orjson's (orjson turns integers beyond 64 bits into floats), with every number
    whose text a writer would not give back kept as its text (``exactjson.loads``). Nesting deeper than
    the parser goes (about 1,000 levels) is a corrupt file too, not a crash.
    """
    try:
        raw = exactjson.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise Corrupt(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise Corrupt("nested too deeply to read (about 1,000 levels or more)") from None
    return upgrade(raw)


def upgrade(raw: object) -> tuple[Doc, bool]:
    """Bring an older document to schema 1; foreign keys stay where they are."""
    upgraded = False
    if isinstance(raw, list):
        # Before versioning the file was a bare list of items.
        raw = {"version": SCHEMA_VERSION, "items": raw}
        upgraded = True
    if not isinstance(raw, dict):
        raise Corrupt(f"top level is a JSON {type(raw).__name__}, not an object")
    version = raw.get("version")
    if version is None:
        raw = {"version": SCHEMA_VERSION, **raw}
        upgraded = True
    elif isinstance(version, bool) or not isinstance(version, int):
        raise Corrupt(f"'version' is {shown(version)}, not an integer")
    items = raw.get("items")
    if items is None:
        raw["items"] = items = []
        upgraded = True
    elif not isinstance(items, list):
        raise Corrupt(f"'items' is a JSON {type(items).__name__}, not a list")
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


def salvaged(data: bytes) -> Doc | None:
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
    except Corrupt:
        return None


def merged(newer: Doc | None, older: Doc | None) -> Doc:
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
