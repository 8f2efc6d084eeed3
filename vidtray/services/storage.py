"""What uses space, and safe deletion of it.

- Videos: finished videos under the videos folder (never through a symlink, never ``.partial/``).
- Model cache: Hugging Face's own cache, read and deleted through ``huggingface_hub``
  (``hub.scan_cache`` / ``hub.delete_revisions``); repos the scan reports as broken
  are still listed with their size on disk and can still be removed.
- Disk: free/total space of the volumes that hold them (measured by ``vidtray.paths``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from vidtray.errors import OperationFailed, UserError
from vidtray.paths import disk_usage, hf_cache_dir, nearest_existing
from vidtray.services import hub, trash
from vidtray.services.fsutil import VIDEO_EXTENSIONS, iter_videos, tree_size, video_name_problem, walk_stats

if TYPE_CHECKING:
    from vidtray.config import Config
    from vidtray.services.library import Library

log = logging.getLogger("vidtray.storage")

GB = 1024**3


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


# -- disk ----------------------------------------------------------------------------------


def space_status(free: int | None, min_free_gb: float, warn_free_gb: float) -> str:
    """'ok', 'warn' (below warn_free_gb), 'low' (below min_free_gb: generation refuses) or 'unknown'."""
    if free is None:
        return "unknown"
    if free < min_free_gb * GB:
        return "low"
    if free < warn_free_gb * GB:
        return "warn"
    return "ok"


@dataclass(frozen=True)
class VolumeReport:
    path: str
    roles: list[str]  # videos, models: what lies on this volume
    free_bytes: int | None
    total_bytes: int | None
    status: str  # space_status


@dataclass(frozen=True)
class DiskReport:
    free_bytes: int | None  # the least free on any volume
    min_free_gb: float
    warn_free_gb: float
    status: str  # the worst volume's
    volumes: list[VolumeReport]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def disk_report(places: Mapping[str, Path], min_free_gb: float, warn_free_gb: float) -> DiskReport:
    """Free/total space per volume; places on one volume are reported once with all their roles."""
    volumes: dict[int | tuple[str, str], VolumeReport] = {}
    for role, path in places.items():
        try:
            dev: int | tuple[str, str] = os.stat(nearest_existing(path)).st_dev
        except OSError:
            dev = ("?", role)
        if dev in volumes:
            volumes[dev].roles.append(role)
            continue
        usage = disk_usage(path)
        free, total = usage if usage else (None, None)
        volumes[dev] = VolumeReport(str(path), [role], free, total, space_status(free, min_free_gb, warn_free_gb))
    vols = list(volumes.values())
    frees = [v.free_bytes for v in vols if v.free_bytes is not None]
    return DiskReport(free_bytes=min(frees) if frees else None, min_free_gb=min_free_gb, warn_free_gb=warn_free_gb,
                      status=_worst(v.status for v in vols), volumes=vols)


def _worst(statuses: Iterable[str]) -> str:
    order = ["ok", "unknown", "warn", "low"]
    return max(statuses, key=order.index, default="unknown")


# -- videos --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartialReport:
    """In-progress files (``.partial/``)."""

    dir: str
    count: int
    size_bytes: int


@dataclass(frozen=True)
class VideosReport:
    dir: str
    count: int
    size_bytes: int
    oldest: str | None  # ISO-8601 mtimes
    newest: str | None
    partial: PartialReport
    folder_bytes: int = 0  # everything in the folder: videos, sidecars, in-progress files and latents, the rest

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def videos_report(videos_dir: Path, partial_dir: Path) -> VideosReport:
    """One walk of the videos folder, as du makes it (``fsutil.walk_stats``): the finished videos (the rule of
    ``fsutil.walk_videos``: not in a hidden folder, never through a symlink), the in-progress files in
    ``.partial/``, and the size of everything in it."""
    count = size = total = partial_count = partial_size = 0
    oldest = newest = float("nan")
    root, partial = os.path.normpath(videos_dir), os.path.normpath(partial_dir)
    inside = partial + os.sep

    def unlistable(exc: OSError) -> None:
        if not isinstance(exc, FileNotFoundError | NotADirectoryError):
            log.warning("cannot list %s: %s", exc.filename, exc.strerror or exc)

    for folder, files in walk_stats(root, unlistable):
        folder_bytes = sum(st.st_size for _, st in files)
        total += folder_bytes
        if folder == partial or folder.startswith(inside):
            partial_count += len(files)
            partial_size += folder_bytes
            continue
        if os.sep + "." in folder[len(root):]:
            continue  # a hidden folder: nothing in it is a finished video
        for name, st in files:
            # The extension first: most files here are sidecars, and this runs for every file.
            if name[name.rfind("."):].lower() in VIDEO_EXTENSIONS and video_name_problem(name) is None:
                count += 1
                size += st.st_size
                mtime = st.st_mtime
                if not oldest <= mtime:  # also true for the first (nan)
                    oldest = mtime
                if not newest >= mtime:
                    newest = mtime
    return VideosReport(str(videos_dir), count, size, iso(oldest) if count else None, iso(newest) if count else None,
                        PartialReport(str(partial_dir), partial_count, partial_size), total)


def parse_days(text: str) -> float:
    """'30' or '30d' -> 30.0 days: how a person gives an age (``--older-than``, the tray's days dialog).
    ValueError for anything else, a negative number included."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*d?\s*", text)
    if not m:
        raise ValueError(f"expected a number of days such as 30 or 30d, got {text!r}")
    return float(m.group(1))


#: How ``--older-than`` and the prune job measure a video's age (said in their output).
AGE_FROM = "max(added, mtime)"
AGE_TEXT = ("age counts from the later of when the library first listed the video (its 'added') and its "
            "last modification; a video not in the library yet counts as new")


class DeletedVideo(TypedDict):
    """A video a cleanup deletes (or, in a dry run, would), as ``--json`` shows it."""

    path: str
    size_bytes: int  # with its companions
    companions: list[str]  # the sidecar and thumbnail that go with it
    age_days: NotRequired[float]  # by AGE_FROM, where an age filter was given


class LeftAlone(TypedDict):
    """A file a cleanup does not delete, and why: ``kept`` (protected, or new to the library) or
    ``skipped`` (changed or gone since it was planned)."""

    path: str
    reason: str
    companion_of: NotRequired[str]  # the video it belongs to, for a sidecar or thumbnail


@dataclass(frozen=True)
class PlannedFile:
    """One file of a cleanup plan as it was when planned. Executing the plan deletes it only if the
    same file (device, inode, size, mtime) is still at its path, inside ``root``."""

    path: Path
    root: Path  # the real folder it must still be in (the videos folder, or the thumbnails folder)
    size: int
    mtime_ns: int
    dev: int
    ino: int

    @classmethod
    def of(cls, path: Path, root: Path, st: os.stat_result) -> PlannedFile:
        return cls(path, root, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)

    def why_not(self) -> str | None:
        """Why this file may not be deleted now; None when it is still the planned file."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return "gone since it was planned"
        except OSError as exc:
            return f"cannot check it: {exc.strerror or exc}"
        if not stat.S_ISREG(st.st_mode):
            return "no longer a plain file"
        if (st.st_dev, st.st_ino) != (self.dev, self.ino):
            return "replaced by another file since it was planned"
        if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
            return "changed since it was planned (size or modification time)"
        if not _inside(self.path, self.root):
            return f"no longer inside {self.root}"
        return None

    def still_there(self) -> bool:
        """True while this very file is at its path (after a delete: it did not go)."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: never claim it went
        # Size and mtime too: an unlinked file's inode may be reused at once by a new file.
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (self.dev, self.ino, self.size, self.mtime_ns)


@dataclass(frozen=True)
class PlannedVideo:
    video: PlannedFile
    companions: tuple[PlannedFile, ...]  # sidecar, thumbnail
    age_s: float | None = None  # by AGE_FROM; None without an age filter

    @property
    def size_bytes(self) -> int:
        return self.video.size + sum(c.size for c in self.companions)

    def as_dict(self) -> DeletedVideo:
        out: DeletedVideo = {"path": str(self.video.path), "size_bytes": self.size_bytes,
                             "companions": [str(c.path) for c in self.companions]}
        if self.age_s is not None:
            out["age_days"] = round(self.age_s / 86400, 2)
        return out


@dataclass
class CleanPlan:
    """Exactly what a cleanup will delete, as seen when planned: the CLI shows it, asks, and executes this
    same plan (``execute_plan``), so a file that arrives or changes after the question is never touched."""

    root: Path
    videos: list[PlannedVideo] = field(default_factory=list)
    kept: list[LeftAlone] = field(default_factory=list)
    older_than_days: float | None = None

    @property
    def freed_bytes(self) -> int:
        return sum(v.size_bytes for v in self.videos)

    def preview(self, to_trash: bool = True) -> CleanResult:
        """The plan as a dry run's result."""
        return CleanResult(deleted=[v.as_dict() for v in self.videos], kept=list(self.kept),
                           freed_bytes=self.freed_bytes, dry_run=True, to_trash=to_trash,
                           older_than_days=self.older_than_days)


@dataclass
class CleanResult:
    deleted: list[DeletedVideo] = field(default_factory=list)
    kept: list[LeftAlone] = field(default_factory=list)
    skipped: list[LeftAlone] = field(default_factory=list)  # planned, but changed or gone: left alone
    freed_bytes: int = 0  # what left the videos folder (to the trash: still on the disk, see trashed_bytes)
    dry_run: bool = False
    to_trash: bool = True
    older_than_days: float | None = None
    trashed: list[PlannedFile] = field(default_factory=list, repr=False)  # what went to the trash (record)

    @property
    def trashed_bytes(self) -> int:
        """Of ``freed_bytes``, what is in the trash now: it frees the disk only when the trash is emptied."""
        return self.freed_bytes if self.to_trash else 0

    def as_dict(self) -> dict[str, object]:
        return {"deleted": self.deleted, "kept": self.kept, "skipped": self.skipped,
                "freed_bytes": self.freed_bytes, "dry_run": self.dry_run, "to_trash": self.to_trash,
                "older_than_days": self.older_than_days,
                "age_from": AGE_FROM if self.older_than_days is not None else None,
                "trashed_bytes": self.trashed_bytes}

    @property
    def deleted_paths(self) -> list[Path]:
        return [Path(d["path"]) for d in self.deleted]


def _companions(video: Path, root: Path, thumb: Path | None, thumbs_root: Path | None) -> tuple[PlannedFile, ...]:
    # The sidecar sits beside the video, in a real folder of the resolved videos folder; the thumbnail
    # must be inside the thumbnails folder. Only sidecars vidtray wrote go: another tool's clip.json stays.
    from vidtray.services.sidecar import owned_sidecars

    wanted = [(side, root) for side in owned_sidecars(video)]
    if thumb is not None and thumbs_root is not None:
        wanted.append((thumb, thumbs_root))
    out = []
    for path, where in wanted:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and (where is root or _inside(path, where)):
            out.append(PlannedFile.of(path, where, st))
    return tuple(out)


def _inside(path: Path, root: Path) -> bool:
    """True if ``path``'s real folder is ``root`` or below it (``path`` itself is not resolved)."""
    try:
        Path(os.path.realpath(path.parent)).relative_to(root)
    except ValueError:
        return False
    return True


def parse_time(value: object) -> float | None:
    """An ISO-8601 date-time from library.json as a timestamp (no offset: local time); None if unusable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return datetime.fromisoformat(value.strip()).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def plan_videos(videos_dir: Path, *, older_than_days: float | None, now: float,
                protected: Collection[Path] = (), first_seen: Mapping[Path, float] | None = None,
                thumbnails: Mapping[Path, Path] | None = None,
                thumbnails_dir: Path | None = None) -> CleanPlan:
    """Which finished videos a cleanup deletes: all, or those older than ``older_than_days``.

    Age is ``now - max(first listed, mtime)`` (AGE_FROM): ``first_seen`` maps a video to when the library
    first listed it (``-inf`` when its entry does not say: then mtime alone), and a video it does not
    list counts as first seen now, so a clip copied in with an old mtime (``cp -p``) is not old.
    ``protected`` paths (pinned or scheduled library items) are never planned and are listed in
    ``kept``, as are videos old by mtime but new to the library. ``thumbnails`` maps a video to its
    thumbnail, planned with it if it lies inside ``thumbnails_dir``.
    """
    if older_than_days is not None and older_than_days < 0:
        raise UserError(f"--older-than must be >= 0 days, got {older_than_days:g}")
    plan = CleanPlan(Path(videos_dir), older_than_days=older_than_days)
    if not plan.root.is_dir():
        return plan
    root = plan.root = plan.root.resolve()
    norm = _normalizer()
    guarded = {norm(p) for p in protected}
    listed = {norm(k): v for k, v in (first_seen or {}).items()}
    thumbs = {norm(k): Path(v) for k, v in (thumbnails or {}).items()}
    thumbs_root = Path(thumbnails_dir).resolve() if thumbnails_dir is not None else None
    cutoff = None if older_than_days is None else now - older_than_days * 86400
    # iter_videos walks the resolved root without following links: its paths are already normalised.
    for path, st in sorted(iter_videos(root)):
        if cutoff is not None and st.st_mtime > cutoff:
            continue
        if path in guarded:
            plan.kept.append({"path": str(path), "reason": "pinned or scheduled in the library"})
            continue
        age = None
        if cutoff is not None:
            since = max(listed.get(path, now), st.st_mtime)
            if since > cutoff:
                why = ("not in the library yet: its age counts from now" if path not in listed
                       else f"in the library only since {iso(since)}: its age counts from then")
                plan.kept.append({"path": str(path), "reason": why})
                continue
            age = now - since
        companions = _companions(path, root, thumbs.get(path), thumbs_root)
        plan.videos.append(PlannedVideo(PlannedFile.of(path, root, st), companions, age))
    return plan


def execute_plan(plan: CleanPlan, *, to_trash: bool = True, result: CleanResult | None = None) -> CleanResult:
    """Delete exactly what ``plan`` lists: each file only if it is still the one planned (same device,
    inode, size and mtime, a plain file inside its folder); anything else is ``skipped`` with why.

    A video that cannot go keeps its companions. To the trash unless ``to_trash`` is false; if the trash
    is not possible this raises OperationFailed and deletes nothing for good. ``deleted`` lists only what
    really went (checked after the delete): pass ``result`` to see that even when a later file fails.
    """
    if result is None:
        result = CleanResult()
    result.dry_run, result.to_trash, result.older_than_days = False, to_trash, plan.older_than_days
    result.kept.extend(plan.kept)
    for planned in plan.videos:
        if not _delete(planned.video, to_trash, result):
            continue
        went, freed = [], planned.video.size
        for companion in planned.companions:
            if _delete(companion, to_trash, result, companion_of=planned.video.path):
                went.append(str(companion.path))
                freed += companion.size
        done: DeletedVideo = {"path": str(planned.video.path), "size_bytes": freed, "companions": went}
        if planned.age_s is not None:
            done["age_days"] = round(planned.age_s / 86400, 2)
        result.deleted.append(done)
        result.freed_bytes += freed
    return result


def _delete(planned: PlannedFile, to_trash: bool, result: CleanResult, companion_of: Path | None = None) -> bool:
    """Delete one planned file after re-checking it; True only if it really went."""

    def skip(why: str) -> bool:
        entry: LeftAlone = {"path": str(planned.path), "reason": why}
        if companion_of is not None:
            entry["companion_of"] = str(companion_of)
        result.skipped.append(entry)
        log.warning("not deleting %s: %s", planned.path, why)
        return False

    why = planned.why_not()
    if why is not None:
        return skip(why)
    try:
        if to_trash:
            _send_to_trash(planned.path)
        else:
            os.unlink(planned.path)
    except OSError as exc:
        if not planned.still_there():
            return skip("gone before it could be deleted")  # someone else's delete won the race
        if to_trash:
            # send2trash's GIO backend hides GIO's reason ("Trashing on system internal mounts is not
            # supported") behind a bare "Permission denied"; the GLib error it came from says what happened.
            reason = getattr(exc.__cause__, "message", None) or exc
            raise OperationFailed(
                f"cannot move {planned.path} to the trash ({reason}); nothing was deleted for good. "
                "Use --permanent (or prune_to_trash = false) to delete without the trash") from exc
        raise OperationFailed(f"cannot delete {planned.path}: {exc.strerror or exc}") from exc
    if planned.still_there():
        return skip("still there after the delete")
    log.info("%s %s", "trashed" if to_trash else "deleted", planned.path)
    if to_trash:
        result.trashed.append(planned)
    return True


def _send_to_trash(path: Path) -> None:
    from send2trash import send2trash

    send2trash(str(path))


def _normalizer() -> Callable[[Path | str], Path]:
    """``path`` with its folder's symlinks resolved (not the name itself); one realpath per folder."""
    real_dirs: dict[str, str] = {}

    def norm(path: Path | str) -> Path:
        folder, name = os.path.split(os.path.abspath(os.fspath(path)))
        real = real_dirs.get(folder)
        if real is None:
            real = real_dirs[folder] = os.path.realpath(folder)
        return Path(real, name)

    return norm


def delete_videos(videos_dir: Path, *, older_than_days: float | None, now: float,
                  protected: Collection[Path] = (), first_seen: Mapping[Path, float] | None = None,
                  to_trash: bool = True, dry_run: bool = False, thumbnails: Mapping[Path, Path] | None = None,
                  thumbnails_dir: Path | None = None, result: CleanResult | None = None) -> CleanResult:
    """Plan (``plan_videos``) and, unless ``dry_run``, execute at once (``execute_plan``)."""
    plan = plan_videos(videos_dir, older_than_days=older_than_days, now=now, protected=protected,
                       first_seen=first_seen, thumbnails=thumbnails, thumbnails_dir=thumbnails_dir)
    if dry_run:
        return plan.preview(to_trash)
    return execute_plan(plan, to_trash=to_trash, result=result)


def first_seen(items: Iterable[object]) -> dict[Path, float]:
    """When the library first listed each video (its ``added``), by path with folder symlinks resolved.

    An entry without a usable ``added`` (written by another app) maps to ``-inf``: its age is then its
    mtime alone. Several entries for one file (two spellings of its path): the latest.
    """
    norm = _normalizer()
    out: dict[Path, float] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        path = item.get("path")
        if not isinstance(path, str):
            continue
        added = parse_time(item.get("added"))
        value = float("-inf") if added is None else added
        key = norm(path)
        out[key] = max(out.get(key, value), value)
    return out


def plan_clean(cfg: Config, lib: Library, *, older_than_days: float | None, now: float) -> CleanPlan:
    """The plan that ``vidtray clean videos``, the tray and the prune job share: pinned or scheduled
    library items are protected, age counts by AGE_FROM, thumbnails go with their videos."""
    from vidtray.services.libitem import protected_paths, thumbnail_paths

    # One read of library.json for all three (it can hold tens of thousands of items). Every item, also
    # those vidtray cannot use: a pinned one still protects its file.
    items = lib.document()["items"]
    thumbnails = thumbnail_paths(items)
    return plan_videos(cfg.videos_dir, older_than_days=older_than_days, now=now,
                       protected=protected_paths(items), first_seen=first_seen(items),
                       thumbnails=thumbnails, thumbnails_dir=cfg.thumbnails_dir)


def execute_clean(lib: Library, plan: CleanPlan, *, to_trash: bool,
                  trash_record: Path | None = None) -> CleanResult:
    """Execute ``plan``; what really went leaves the library (deleted on purpose, so not ``missing``),
    also when a later file fails. What went to the trash is added to ``trash_record`` (``services.trash``)."""
    result = CleanResult()
    try:
        execute_plan(plan, to_trash=to_trash, result=result)
    finally:
        if result.deleted:
            lib.remove_paths(result.deleted_paths)
        if trash_record is not None and result.trashed:
            trash.record_trashed(trash_record, result.trashed)
    return result


def clean_videos(cfg: Config, lib: Library, *, older_than_days: float | None, now: float, to_trash: bool,
                 dry_run: bool) -> CleanResult:
    """Plan and execute at once (the prune job; the CLI and the tray ask in between)."""
    plan = plan_clean(cfg, lib, older_than_days=older_than_days, now=now)
    if dry_run:
        return plan.preview(to_trash)
    return execute_clean(lib, plan, to_trash=to_trash, trash_record=cfg.paths.trash_record_file)


# -- model cache -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PartialDownloadReport:
    """An interrupted download (``blobs/<etag>.incomplete``): a pull resumes it."""

    path: str
    size_bytes: int
    modified: str | None


@dataclass(frozen=True)
class RepoReport:
    """A complete repo in the model cache."""

    repo_id: str
    repo_type: str  # model | dataset | space
    path: str
    size_bytes: int
    files: int
    revisions: list[str]
    refs: list[str]
    last_accessed: str | None  # ISO-8601 (access times are unreliable: see last_used)
    last_modified: str | None
    incomplete_bytes: int  # its partial downloads
    frees_bytes: int = 0  # what deleting it frees (blobs it shares with other repos stay)
    shared_bytes: int = 0  # of size_bytes, what lies in huggingface_hub's shared blob store
    last_used: str | None = None  # when vidtray's worker last used it (services.modeluse); None: never
    partial_downloads: list[PartialDownloadReport] = field(default_factory=list)


@dataclass(frozen=True)
class BrokenRepoReport:
    """A repo folder huggingface_hub cannot read: still shown with its size, and still removable."""

    repo_id: str
    repo_type: str
    path: str
    size_bytes: int
    files: int
    reason: str
    modified: str | None = None  # the newest file in it (an interrupted download's age)


@dataclass(frozen=True)
class ModelsReport:
    cache_dir: str
    size_bytes: int
    repos: list[RepoReport]
    broken: list[BrokenRepoReport]
    incomplete_bytes: int
    shared_store_bytes: int = 0  # the shared blob store, each payload once (within size_bytes)
    unreferenced_shared_bytes: int = 0  # payloads no repo links to any more (`hf cache prune` removes them)
    xet_dir: str = ""  # hf_xet's chunk cache beside the hub cache (not within size_bytes)
    xet_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def models_report(cache_dir: Path | None = None, *, last_used: Mapping[str, float] | None = None,
                  scan: hub.CacheScan | None = None, xet_dir: Path | None = None) -> ModelsReport:
    """The model cache for ``vidtray storage --json``: the hub cache scan (``hub.scan_cache``), vidtray's
    record of when it used each model, and the size of the Xet cache."""
    from vidtray.paths import hf_xet_dir

    scan = scan if scan is not None else hub.scan_cache(cache_dir)
    used = last_used or {}
    xet = xet_dir if xet_dir is not None else hf_xet_dir()
    return ModelsReport(
        cache_dir=str(scan.cache_dir), size_bytes=scan.size_bytes,
        repos=[RepoReport(r.repo_id, r.repo_type, str(r.path), r.size_bytes, r.files, list(r.revisions),
                          list(r.refs), iso(r.last_accessed), iso(r.last_modified), r.incomplete_bytes,
                          r.frees_bytes, r.shared_bytes,
                          iso(used.get(r.repo_id)) if r.repo_type == "model" else None,
                          [PartialDownloadReport(str(p.path), p.size_bytes, iso(p.mtime)) for p in r.partials])
               for r in scan.repos],
        broken=[BrokenRepoReport(b.repo_id, b.repo_type, str(b.path), b.size_bytes, b.files, b.reason,
                                 iso(b.modified) if b.modified else None)
                for b in scan.broken],
        incomplete_bytes=scan.incomplete_bytes, shared_store_bytes=scan.shared_store_bytes,
        unreferenced_shared_bytes=scan.unreferenced_shared_bytes, xet_dir=str(xet), xet_bytes=tree_size(xet)[1],
    )


@dataclass(frozen=True)
class LibraryReport:
    path: str
    items: int
    pinned: int
    scheduled: int
    missing: int


@dataclass(frozen=True)
class BudgetReport:
    """What the storage budget (``storage_budget_gb``) covers, and how much of it is used."""

    budget_bytes: int  # 0: no budget
    used_bytes: int
    over_bytes: int  # 0 when under the budget (or none is set)
    videos_bytes: int  # the videos folder: videos, sidecars, in-progress files and kept latents
    thumbnails_bytes: int
    cache_bytes: int  # the hub cache: repos, shared blobs, partial downloads
    xet_bytes: int


def budget_report(budget_gb: float, videos: VideosReport, thumbnails_bytes: int, models: ModelsReport) -> BudgetReport:
    budget = int(budget_gb * GB)
    used = videos.folder_bytes + thumbnails_bytes + models.size_bytes + models.xet_bytes
    return BudgetReport(budget, used, max(0, used - budget) if budget else 0, videos.folder_bytes,
                        thumbnails_bytes, models.size_bytes, models.xet_bytes)


@dataclass(frozen=True)
class KeptLatentsReport:
    """One job's denoised latents, kept in ``.partial/`` until its video lands."""

    job: str
    path: str
    size_bytes: int
    modified: str | None  # ISO-8601
    age_s: float
    #: The job's state in the queue (queued, running, failed: kept for its retry); None when the queue has
    #: no such job (an orphan: removed once older than ``orphan_age_s``).
    state: str | None


@dataclass(frozen=True)
class LatentsReport:
    """The latents kept in ``.partial/`` (``worker.latents``): part of the in-progress files."""

    dir: str
    count: int
    size_bytes: int
    oldest_age_s: float | None
    orphan_age_s: float
    files: list[KeptLatentsReport] = field(default_factory=list)


def latents_report(partial_dir: Path, job_states: Callable[[], Mapping[str, str] | None],
                   now: float) -> LatentsReport:
    """The latents in ``partial_dir``, oldest first, each with its job's state (``job_states()``: job id ->
    state, asked only when latents are kept; None when the queue could not be read: every state is None)."""
    from vidtray.services.worker import latents

    kept = latents.list_kept(partial_dir)
    states = (job_states() if kept else None) or {}
    files = [KeptLatentsReport(k.job, k.path, k.size_bytes, iso(k.modified), round(k.age_s(now), 1),
                               states.get(k.job)) for k in kept]
    return LatentsReport(str(partial_dir), len(files), sum(f.size_bytes for f in files),
                         files[0].age_s if files else None, latents.ORPHAN_AGE_S, files)


@dataclass(frozen=True)
class StorageReport:
    """``vidtray storage --json`` (the tray reads it: ``tray.state.parse_storage_report``; the library page
    too). Keys are only ever added."""

    library: LibraryReport
    videos: VideosReport
    models: ModelsReport
    disk: DiskReport
    trash: trash.TrashReport | None = None  # how much of the trash is vidtray's own
    budget: BudgetReport | None = None
    latents: LatentsReport | None = None  # denoised latents kept in .partial/ until their videos land

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelCleanPlan:
    cache_dir: Path
    targets: list[dict[str, Any]]  # repo_id, repo_type, path, size_bytes, frees_bytes, broken
    revisions: list[str]
    broken_paths: list[Path]
    frees: int = 0  # what deleting them together frees (a blob shared only among them counted once)

    @property
    def expected_freed_bytes(self) -> int:
        return self.frees


def model_clean_plan(scan: hub.CacheScan, repos: Iterable[hub.CachedRepo | hub.BrokenRepo]) -> ModelCleanPlan:
    """Delete these repos of ``scan``: complete ones through huggingface_hub, broken ones as folders."""
    chosen = list(repos)
    targets: list[dict[str, Any]] = []
    revisions: list[str] = []
    broken: list[Path] = []
    for repo in chosen:
        is_broken = isinstance(repo, hub.BrokenRepo)
        targets.append({"repo_id": repo.repo_id, "repo_type": repo.repo_type, "path": str(repo.path),
                        "size_bytes": repo.size_bytes, "frees_bytes": scan.frees([repo.path]),
                        "broken": is_broken})
        if isinstance(repo, hub.CachedRepo) and repo.revisions:
            revisions.extend(repo.revisions)
        else:  # nothing for huggingface_hub to delete: remove the folder
            broken.append(repo.path)
    return ModelCleanPlan(scan.cache_dir, targets, revisions, broken, scan.frees(r.path for r in chosen))


def plan_model_cleanup(repo_id: str | None, cache_dir: Path | None = None) -> ModelCleanPlan:
    """What removing one model repo (``repo_id``) or every cached repo (None) would delete."""
    cache_dir = Path(cache_dir) if cache_dir is not None else hf_cache_dir()
    if repo_id is not None:
        hub.check_repo_id(repo_id)
    scan = hub.scan_cache(cache_dir)
    chosen = [r for r in scan.folders()
              if repo_id is None or (r.repo_type == "model" and r.repo_id == repo_id)]
    if repo_id is not None and not chosen:
        raise UserError(f"{repo_id} is not in the model cache ({cache_dir})")
    return model_clean_plan(scan, chosen)


def execute_model_cleanup(plan: ModelCleanPlan) -> int:
    """Delete what ``plan`` names (for good: the cache is re-downloadable); returns bytes really freed."""
    before = _cache_bytes(plan.cache_dir)
    root = plan.cache_dir.resolve()
    for path in plan.broken_paths:
        # huggingface_hub cannot read a broken repo, so it cannot delete it: remove the folder ourselves,
        # but only a real (non-symlink) repo folder directly inside the cache. First, so that its links into
        # the shared blob store are gone when huggingface_hub collects the payloads after the rest.
        if path.parent.resolve() == root and not path.is_symlink() and path.is_dir():
            shutil.rmtree(path)
            log.info("deleted broken cache repo %s", path)
    hub.delete_revisions(plan.cache_dir, plan.revisions)
    # Incomplete blobs of a deleted repo go with its folder; re-scan for what was really freed.
    return max(0, before - _cache_bytes(plan.cache_dir))


def _cache_bytes(cache_dir: Path) -> int:
    return hub.scan_cache(cache_dir).size_bytes
