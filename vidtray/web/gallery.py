"""The page's view of the library: a snapshot of library.json's usable video items, made once per change of
the file (10,000 items are parsed once, not on every request), searched, filtered, sorted and paged; and the
page's writes, each through the library and storage services (lock, atomic replace, other apps' keys kept).

Every use of ``vidtray.services.library`` by the page is in this module.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from vidtray.config import Config
from vidtray.errors import UserError
from vidtray.services import storage
from vidtray.services.fsutil import VIDEO_EXTENSIONS
from vidtray.services.libitem import Item, is_pinned, is_scheduled, names_a_file, video_items
from vidtray.services.library import Library, open_library

SORTS = ("newest", "oldest", "largest", "longest")
SOURCES = ("generated", "imported")
#: Cards per page: one screen and a bit on a laptop; more come as the user scrolls.
PAGE = 60
MAX_PAGE = 500
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif"})


class Conflict(UserError):
    """The request is fine but the item's state refuses it (pinned, scheduled, outside the videos folder)."""


class NotFound(UserError):
    """No item with that id."""


# -- one item ---------------------------------------------------------------------------------------------


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _timestamp(value: object) -> float | None:
    return storage.parse_time(value)


@dataclass(frozen=True, slots=True)
class Row:
    """One usable video item as the page shows, searches and sorts it; ``item`` is the item as in the file."""

    id: str
    item: Item = field(repr=False)
    title: str
    prompt: str
    model: str
    source: str
    tags: tuple[str, ...]
    when: float | None  # created, else added: when the video was made (newest first)
    size: float | None
    duration: float | None
    pinned: bool
    scheduled: bool
    missing: bool
    haystack: str = field(repr=False)  # lower-case prompt, title, tags and model: what the search box matches

    @classmethod
    def of(cls, item: Item) -> Row:
        prompt, model = _text(item.get("prompt")), _text(item.get("model"))
        tags = tuple(t for t in item.get("tags") or () if isinstance(t, str)) \
            if isinstance(item.get("tags"), list) else ()
        title = _text(item.get("title")).strip() or " ".join(prompt.split())[:80] or Path(item["path"]).name
        when = _timestamp(item.get("created"))
        return cls(
            id=item["id"], item=item, title=title, prompt=prompt, model=model, source=_text(item.get("source")),
            tags=tags, when=when if when is not None else _timestamp(item.get("added")),
            size=_number(item.get("size_bytes")), duration=_number(item.get("duration_s")),
            pinned=is_pinned(item), scheduled=is_scheduled(item), missing=item.get("status") == "missing",
            haystack="\n".join((prompt, title, *tags, model)).casefold(),
        )

    @property
    def path(self) -> str:
        return str(self.item["path"])

    @property
    def has_thumbnail(self) -> bool:
        thumb = self.item.get("thumbnail")
        return isinstance(thumb, str) and bool(thumb)

    @property
    def scheduled_at(self) -> str:
        return _text(self.item.get("scheduled_at"))

    @property
    def date(self) -> datetime | None:
        return None if self.when is None else datetime.fromtimestamp(self.when).astimezone()


# -- a query ----------------------------------------------------------------------------------------------


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "on", "true", "yes")


@dataclass(frozen=True)
class Query:
    """What the search box, the filters and the sort ask for; read from (and written to) the URL, so a
    search can be bookmarked. Unknown values count as not given."""

    q: str = ""
    pinned: bool = False
    scheduled: bool = False
    missing: bool = False
    source: str = ""
    model: str = ""
    sort: str = "newest"

    @classmethod
    def of(cls, params: Mapping[str, str]) -> Query:
        source, sort = params.get("source", ""), params.get("sort", "newest")
        return cls(q=params.get("q", "").strip()[:500], pinned=_flag(params.get("pinned")),
                   scheduled=_flag(params.get("scheduled")), missing=_flag(params.get("missing")),
                   source=source if source in SOURCES else "", model=params.get("model", "")[:500],
                   sort=sort if sort in SORTS else "newest")

    def params(self) -> dict[str, str]:
        """The query's non-default values, for a URL."""
        out: dict[str, str] = {}
        if self.q:
            out["q"] = self.q
        for name in ("pinned", "scheduled", "missing"):
            if getattr(self, name):
                out[name] = "1"
        if self.source:
            out["source"] = self.source
        if self.model:
            out["model"] = self.model
        if self.sort != "newest":
            out["sort"] = self.sort
        return out

    @property
    def words(self) -> list[str]:
        return self.q.casefold().split()

    def keep(self) -> Callable[[Row], bool]:
        """The filter: every word of the search box somewhere in prompt, title, tags or model (case-insensitive
        substrings), and every ticked filter."""
        words = self.words

        def keep(row: Row) -> bool:
            if self.pinned and not row.pinned or self.scheduled and not row.scheduled:
                return False
            if self.missing and not row.missing:
                return False
            if self.source and row.source != self.source or self.model and row.model != self.model:
                return False
            return all(word in row.haystack for word in words)

        return keep


def _sort_key(sort: str) -> tuple[Callable[[Row], Any], bool]:
    """(key, reverse) for a sort; unknown values last whichever way it goes."""
    if sort == "largest":
        return (lambda r: (r.size is not None, r.size or 0, r.when or 0)), True
    if sort == "longest":
        return (lambda r: (r.duration is not None, r.duration or 0, r.when or 0)), True
    if sort == "oldest":
        return (lambda r: (r.when is None, r.when or 0)), False
    return (lambda r: (r.when is not None, r.when or 0)), True


@dataclass
class Snapshot:
    """The library's usable items at one version of the file."""

    version: str
    rows: list[Row]
    by_id: dict[str, Row]
    _sorted: dict[str, list[Row]] = field(default_factory=dict)
    _paths: dict[str, Row] | None = None
    _mu: threading.Lock = field(default_factory=threading.Lock)

    def sorted(self, sort: str) -> list[Row]:
        with self._mu:
            rows = self._sorted.get(sort)
            if rows is None:
                key, reverse = _sort_key(sort)
                rows = self._sorted[sort] = sorted(self.rows, key=key, reverse=reverse)
            return rows

    def select(self, query: Query, offset: int = 0, limit: int = PAGE) -> tuple[list[Row], int]:
        """(the rows of one page, how many match in all)."""
        keep = query.keep()
        matched = [row for row in self.sorted(query.sort) if keep(row)]
        offset = max(0, offset)
        return matched[offset:offset + max(1, min(limit, MAX_PAGE))], len(matched)

    def at_path(self, path: str) -> Row | None:
        with self._mu:
            if self._paths is None:
                self._paths = {row.path: row for row in self.rows}
            return self._paths.get(path)

    def models(self) -> list[str]:
        return sorted({row.model for row in self.rows if row.model}, key=str.casefold)

    def counts(self) -> dict[str, int]:
        return {"items": len(self.rows), "pinned": sum(r.pinned for r in self.rows),
                "scheduled": sum(r.scheduled for r in self.rows), "missing": sum(r.missing for r in self.rows)}


# -- the store --------------------------------------------------------------------------------------------


def file_version(path: Path) -> str:
    """A cheap version of a file: inode, size and modification time change with every write (an atomic
    replace gives a new inode; another app's in-place edit a new mtime). "0" when there is no file."""
    try:
        st = os.stat(path)
    except OSError:
        return "0"
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


class LibraryStore:
    """The page's access to library.json: snapshots for reading, the library service for every write."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.lib: Library = open_library(cfg)
        self._snapshot: Snapshot | None = None
        self._mu = threading.Lock()
        self.roots = allowed_roots(cfg)

    def version(self) -> str:
        return file_version(self.cfg.library_file)

    def snapshot(self) -> Snapshot:
        """The items as the file holds them now (parsed again only when the file changed)."""
        with self._mu:
            version = self.version()
            snap = self._snapshot
            if snap is None or snap.version != version:
                doc = self.lib.document()
                rows = [Row.of(item) for item in video_items(doc["items"])]
                # The version from before the read: a write that lands meanwhile makes the next call read again.
                snap = self._snapshot = Snapshot(version, rows, {row.id: row for row in rows})
            return snap

    def row(self, item_id: str) -> Row:
        """The item with exactly this id (the page never guesses from a prefix)."""
        row = self.snapshot().by_id.get(item_id)
        if row is None:
            raise NotFound(f"no library item with id {item_id!r}")
        return row

    # -- writes (each through the library service) ---------------------------------------------------
    def edit(self, item_id: str, changes: Mapping[str, object]) -> Item:
        self.row(item_id)
        return self.lib.edit(item_id, **changes)

    def remove_entry(self, item_id: str) -> Item:
        """The entry goes (and stays out of later scans); the file stays: ``vidtray library remove``."""
        self.row(item_id)
        return self.lib.remove(item_id)

    def delete(self, item_id: str, *, now: float | None = None) -> storage.CleanResult:
        """Delete one item's video (with its sidecar and thumbnail) as ``vidtray clean videos`` deletes: to
        the trash unless ``prune_to_trash = false``, never a pinned or scheduled one, only inside the videos
        folder; the entry leaves the library when the file really went."""
        row = self.row(item_id)
        if row.pinned or row.scheduled:
            raise Conflict(f"{row.title!r} is {'pinned' if row.pinned else 'scheduled'}: unpin it or clear its "
                           "schedule first (cleanup never deletes those)")
        plan = storage.plan_clean(self.cfg, self.lib, older_than_days=None, now=time.time() if now is None else now)
        wanted = _real_path(row.path)
        mine = [v for v in plan.videos if v.video.path == wanted]
        if not mine:
            kept = next((k["reason"] for k in plan.kept if k["path"] == str(wanted)), None)
            if kept is not None:
                raise Conflict(f"{row.title!r} is kept: {kept}")
            raise Conflict(f"{row.title!r} is not a video file in the videos folder ({self.cfg.videos_dir}); "
                           "only those are deleted. Remove it from the library instead (the file stays)")
        return storage.execute_clean(self.lib, dataclasses.replace(plan, videos=mine, kept=[]),
                                     to_trash=self.cfg.prune_to_trash)

    # -- files ---------------------------------------------------------------------------------------
    def media_file(self, item_id: str, kind: str) -> Path | None:
        """The video (``kind`` "video") or thumbnail ("thumb") of an item, resolved, when it may be served:
        a regular file with a video's (or an image's) extension inside the videos folder, a watch folder or
        the thumbnails folder after resolving every symlink. None otherwise: a path from library.json (which
        other programs write) that points anywhere else is never served."""
        row = self.row(item_id)
        raw = row.item.get("path" if kind == "video" else "thumbnail")
        return servable(raw, self.roots, VIDEO_EXTENSIONS if kind == "video" else IMAGE_EXTENSIONS)


def allowed_roots(cfg: Config) -> tuple[Path, ...]:
    """The folders files are served from, resolved: videos, every watch folder, thumbnails."""
    return tuple(Path(os.path.realpath(p)) for p in (cfg.videos_dir, *cfg.watch_dirs, cfg.thumbnails_dir))


def servable(raw: object, roots: tuple[Path, ...], extensions: frozenset[str]) -> Path | None:
    """``raw`` (a path from library.json) resolved, if it is a regular file with one of ``extensions`` inside
    one of ``roots``; else None."""
    if not isinstance(raw, str) or not names_a_file(raw) or not os.path.isabs(raw):
        return None
    real = Path(os.path.realpath(raw))
    if real.suffix.lower() not in extensions or not any(real.is_relative_to(root) for root in roots):
        return None
    return real if real.is_file() else None


def _real_path(path: str) -> Path:
    """``path`` with its folder's symlinks resolved (not the name): how cleanup plans name a video."""
    folder, name = os.path.split(os.path.abspath(path))
    return Path(os.path.realpath(folder), name)
