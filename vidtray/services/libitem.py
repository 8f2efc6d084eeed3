"""One library item: its key, whether vidtray can use it, whether it is protected, and the typed view
that readers use.

The one place that decides what vidtray understands of an item another program may have written:

* ``item_problem``: an item whose path or id is not a usable string is kept in the file as it is, skipped
  by every reader (``video_items``) and logged once;
* ``is_pinned`` / ``is_scheduled``: any truthy ``pinned`` and any ``scheduled_at`` protect, also on an item
  vidtray cannot otherwise use (``protected_paths``);
* ``LibraryItem``: a usable item as readers see it, with typed fields for what vidtray reads and ``data``,
  the item exactly as in the file (foreign keys and exact numbers included) for what is shown as it is.
  Writers change the document's dicts, never a view, so nothing a view leaves out is ever lost.

It imports no other part of the library (``media``, ``sidecar`` and ``libdoc`` import it), so the store can
use ``media`` for a rebuild without a cycle.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from vidtray.errors import UserError
from vidtray.services import exactjson
from vidtray.services.fsutil import VIDEO_EXTENSIONS

log = logging.getLogger("vidtray.library")

#: An item as it is in library.json: a JSON object whose values another program may have written.
Item = dict[str, Any]
#: Fields an import writes to an item (from the probe and the sidecar).
Fields = dict[str, Any]


def abs_path(path: str | os.PathLike[str]) -> Path:
    """The key of an item: absolute and normalised, but symlinks are not resolved (the user's path)."""
    return Path(os.path.abspath(os.fspath(path)))


def item_id_for(path: Path) -> str:
    """A stable id from the path, so a rebuilt library gives a file the id it had before."""
    return hashlib.sha1(os.fsencode(str(path))).hexdigest()[:12]


def is_video_name(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def is_video_item(item: object) -> TypeGuard[Item]:
    return isinstance(item, dict) and item.get("type") == "video"


# -- what vidtray understands of an item (the one place that decides) ---------------------------------------


def item_problem(item: Item) -> str | None:
    """Why vidtray cannot use this video item, or None. Such an item stays in the file as it is; every
    reader skips it (``video_items``) and it is logged once. Other fields of the wrong type (a numeric
    title, ``"thumbnail": 3``) do not make an item unusable: each reader checks the fields it needs."""
    path = item.get("path")
    if not isinstance(path, str) or not path:
        return f"its path is {shown(path)}, not a file path"
    if not names_a_file(path):
        return f"its path {shown(path)} cannot name a file (a NUL or a lone surrogate in it)"
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id:
        return f"its id is {shown(item_id)}, not a text"
    return None


def video_items(items: Iterable[object]) -> Iterator[Item]:
    """The video items vidtray can use, in file order; the others are logged once and skipped.

    The document's own dicts, for writers that change them in place; readers take ``library_items``."""
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
                log_skipped(item, why)


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


def protected_paths(items: Iterable[object]) -> set[Path]:
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
                log_skipped(item, "a protected item whose path is not a string: protecting "
                                   + ", ".join(candidates[:3]))
        out.update(Path(c) for c in candidates if names_a_file(c))
    return out


def thumbnail_paths(items: Iterable[object]) -> dict[Path, Path]:
    """video -> thumbnail of the usable items whose ``thumbnail`` is a path (else they have none)."""
    return {Path(view.path): Path(view.thumbnail) for view in library_items(items) if view.thumbnail is not None}


def find_item(items: Iterable[object], item_id: str) -> Item:
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


# -- the typed view ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LibraryItem:
    """A video item vidtray can use, as readers see it.

    ``id`` and ``path`` are what ``item_problem`` checked; the other fields are read from ``data`` when
    asked for, each None when the file holds something of another type there (another program may have
    written anything). ``data`` is the item exactly as in the file, every key and number included, for
    showing or printing it as it is. Made by ``library_items``; never written back.
    """

    id: str
    path: str
    data: Item = field(compare=False, repr=False)

    @classmethod
    def of(cls, item: Item) -> LibraryItem:
        """The view of a usable item (one ``video_items`` yields). ``item`` becomes the view's ``data``:
        pass one that nothing changes afterwards (a freshly read document's, or a clone)."""
        return cls(item["id"], item["path"], item)

    @property
    def title(self) -> str | None:
        value = self.data.get("title")
        return value if isinstance(value, str) else None

    @property
    def status(self) -> str | None:
        value = self.data.get("status")
        return value if isinstance(value, str) else None

    @property
    def pinned(self) -> bool:
        return is_pinned(self.data)

    @property
    def scheduled(self) -> bool:
        return is_scheduled(self.data)

    @property
    def protected(self) -> bool:
        """Pinned or scheduled: never pruned."""
        return is_protected(self.data)

    @property
    def duration_s(self) -> float | None:
        """The length in seconds, when the file holds a finite number there."""
        value = self.data.get("duration_s")
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return None

    @property
    def thumbnail(self) -> str | None:
        """The thumbnail's path, when the file holds one that can name a file."""
        value = self.data.get("thumbnail")
        return value if isinstance(value, str) and names_a_file(value) else None

    def as_dict(self) -> Item:
        """The item as in the file (this view's own dict)."""
        return self.data


def library_items(items: Iterable[object]) -> list[LibraryItem]:
    """Typed views of the usable video items, in file order (the others are logged once and skipped)."""
    return [LibraryItem.of(item) for item in video_items(items)]


# -- log lines about items vidtray cannot use ----------------------------------------------------------------


def _strings(value: object, limit: int = 100) -> list[str]:
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


def shown(value: object) -> str:
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


def log_skipped(item: Item, why: str) -> None:
    """Logged once per (item, reason) per process: readers run often (every watcher tick, every list)."""
    who = f"id {shown(item.get('id'))}, path {shown(item.get('path'))}"
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

