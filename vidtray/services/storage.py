"""What uses space, and safe deletion of it.

- Videos: finished videos under the videos folder (never through a symlink, never ``.partial/``).
- Model cache: Hugging Face's own cache, read and deleted through ``huggingface_hub``
  (``scan_cache_dir`` / ``delete_revisions(...).execute()``); repos the scan reports as broken
  are still listed with their size on disk and can still be removed.
- Disk: free/total space of the volumes that hold them.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vidtray.errors import OperationFailed, UserError
from vidtray.services.fsutil import iter_videos, walk_videos

log = logging.getLogger("vidtray.storage")

GB = 1024**3


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


# -- disk ----------------------------------------------------------------------------------


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (a folder not created yet lives on its parent's volume)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def disk_usage(path: Path) -> tuple[int, int] | None:
    """(free, total) bytes of the volume holding ``path``; None when it cannot be read."""
    where = nearest_existing(path)
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        log.warning("cannot read free space of %s: %s", where, exc)
        return None
    return usage.free, usage.total


def free_bytes(path: Path) -> int | None:
    usage = disk_usage(path)
    return None if usage is None else usage[0]


def space_status(free: int | None, min_free_gb: float, warn_free_gb: float) -> str:
    """'ok', 'warn' (below warn_free_gb), 'low' (below min_free_gb: generation refuses) or 'unknown'."""
    if free is None:
        return "unknown"
    if free < min_free_gb * GB:
        return "low"
    if free < warn_free_gb * GB:
        return "warn"
    return "ok"


def disk_report(places: Mapping[str, Path], min_free_gb: float, warn_free_gb: float) -> dict[str, Any]:
    """Free/total space per volume; places on one volume are reported once with all their roles."""
    volumes: dict[Any, dict[str, Any]] = {}
    for role, path in places.items():
        try:
            dev = os.stat(nearest_existing(path)).st_dev
        except OSError:
            dev = ("?", role)
        if dev in volumes:
            volumes[dev]["roles"].append(role)
            continue
        usage = disk_usage(path)
        free, total = usage if usage else (None, None)
        volumes[dev] = {
            "path": str(path), "roles": [role], "free_bytes": free, "total_bytes": total,
            "status": space_status(free, min_free_gb, warn_free_gb),
        }
    vols = list(volumes.values())
    frees = [v["free_bytes"] for v in vols if v["free_bytes"] is not None]
    return {
        "free_bytes": min(frees) if frees else None,
        "min_free_gb": min_free_gb,
        "warn_free_gb": warn_free_gb,
        "status": _worst(v["status"] for v in vols),
        "volumes": vols,
    }


def _worst(statuses: Any) -> str:
    order = ["ok", "unknown", "warn", "low"]
    return max(statuses, key=order.index, default="unknown")


# -- videos --------------------------------------------------------------------------------


def _tree_size(folder: Path) -> tuple[int, int]:
    """(files, bytes) of regular files under ``folder``, symlinks not followed."""
    count = size = 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                try:
                    size += entry.stat(follow_symlinks=False).st_size
                    count += 1
                except OSError:
                    pass
    return count, size


def videos_report(videos_dir: Path, partial_dir: Path) -> dict[str, Any]:
    count = size = 0
    oldest = newest = None
    for _, st in walk_videos(str(videos_dir)):
        count += 1
        size += st.st_size
        oldest = st.st_mtime if oldest is None else min(oldest, st.st_mtime)
        newest = st.st_mtime if newest is None else max(newest, st.st_mtime)
    partial_count, partial_size = _tree_size(partial_dir)
    return {
        "dir": str(videos_dir), "count": count, "size_bytes": size,
        "oldest": iso(oldest), "newest": iso(newest),
        "partial": {"dir": str(partial_dir), "count": partial_count, "size_bytes": partial_size},
    }


@dataclass
class CleanResult:
    deleted: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    freed_bytes: int = 0
    dry_run: bool = False
    to_trash: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"deleted": self.deleted, "kept": self.kept, "freed_bytes": self.freed_bytes,
                "dry_run": self.dry_run, "to_trash": self.to_trash}

    @property
    def deleted_paths(self) -> list[Path]:
        return [Path(d["path"]) for d in self.deleted]


@dataclass
class _Victim:
    video: Path
    companions: list[Path]  # sidecar, thumbnail
    size: int


def _companions(video: Path, root: Path, thumb: Path | None, thumbnails_dir: Path | None) -> list[Path]:
    found = []
    sidecar = video.with_suffix(".json")
    if _is_plain_file(sidecar) and _inside(sidecar, root):
        found.append(sidecar)
    if thumb is not None and thumbnails_dir is not None and _is_plain_file(thumb) \
            and _inside(thumb, thumbnails_dir.resolve()):
        found.append(thumb)
    return found


def _is_plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _inside(path: Path, root: Path) -> bool:
    """True if ``path``'s real folder is ``root`` or below it (``path`` itself is not resolved)."""
    try:
        Path(os.path.realpath(path.parent)).relative_to(root)
    except ValueError:
        return False
    return True


def delete_videos(videos_dir: Path, *, older_than_days: float | None, now: float,
                  protected: Collection[Path] = (), to_trash: bool = True, dry_run: bool = False,
                  thumbnails: Mapping[Path, Path] | None = None,
                  thumbnails_dir: Path | None = None, result: CleanResult | None = None) -> CleanResult:
    """Delete finished videos (all, or modified more than ``older_than_days`` ago) with their sidecars.

    ``protected`` paths (pinned or scheduled library items) are never deleted and are listed in
    ``kept``. ``thumbnails`` maps a video to its thumbnail, deleted with it if it lies inside
    ``thumbnails_dir``. To the trash unless ``to_trash`` is false; if the trash is not possible
    this raises OperationFailed and deletes nothing for good. ``deleted`` lists only what was really
    deleted: pass ``result`` to see that even when a later file fails.
    """
    if older_than_days is not None and older_than_days < 0:
        raise UserError(f"--older-than must be >= 0 days, got {older_than_days:g}")
    if result is None:
        result = CleanResult()
    result.dry_run, result.to_trash = dry_run, to_trash
    root = Path(videos_dir)
    if not root.is_dir():
        return result
    root = root.resolve()
    guarded = {_norm(p) for p in protected}
    thumbs = {_norm(k): Path(v) for k, v in (thumbnails or {}).items()}
    cutoff = None if older_than_days is None else now - older_than_days * 86400
    victims = []
    for path, st in sorted(iter_videos(root)):
        if cutoff is not None and st.st_mtime > cutoff:
            continue
        if _norm(path) in guarded:
            result.kept.append({"path": str(path), "reason": "pinned or scheduled in the library"})
            continue
        companions = _companions(path, root, thumbs.get(_norm(path)), thumbnails_dir)
        size = st.st_size + sum(os.lstat(c).st_size for c in companions)
        victims.append(_Victim(path, companions, size))
    for victim in victims:
        if not dry_run and not _remove(victim, root, to_trash):
            continue
        result.deleted.append({"path": str(victim.video), "size_bytes": victim.size,
                               "companions": [str(c) for c in victim.companions]})
        result.freed_bytes += victim.size
    return result


def _norm(path: Path | str) -> Path:
    path = Path(path)
    return Path(os.path.realpath(path.parent)) / path.name


def _remove(victim: _Victim, root: Path, to_trash: bool) -> bool:
    """Delete the video, then its companions; False (nothing touched) if the video changed since the scan."""
    # Re-check right before acting: the tree may have changed since the scan.
    if not _is_plain_file(victim.video):
        log.warning("skipping %s: no longer a plain file", victim.video)
        return False
    if not _inside(victim.video, root):
        log.warning("skipping %s: no longer inside %s", victim.video, root)
        return False
    for path in (victim.video, *victim.companions):
        if path != victim.video and not _is_plain_file(path):
            log.warning("skipping %s: no longer a plain file", path)
            continue
        if to_trash:
            _trash(path)
        else:
            path.unlink(missing_ok=True)
        log.info("%s %s", "trashed" if to_trash else "deleted", path)
    return True


def _trash(path: Path) -> None:
    from send2trash import send2trash
    from send2trash.exceptions import TrashPermissionError

    try:
        send2trash(str(path))
    except (TrashPermissionError, OSError) as exc:
        raise OperationFailed(
            f"cannot move {path} to the trash ({exc}); nothing was deleted for good. "
            "Use --permanent (or prune_to_trash = false) to delete without the trash"
        ) from exc


def clean_videos(cfg: Any, lib: Any, *, older_than_days: float | None, now: float, to_trash: bool,
                 dry_run: bool) -> CleanResult:
    """The cleanup that ``vidtray clean videos`` and the prune job share.

    Pinned or scheduled library items are protected, thumbnails go with their videos, and what
    was really deleted leaves the library (deleted on purpose, so not ``missing``), also when a later
    file fails (``lib`` is a ``vidtray.services.library.Library``).
    """
    from vidtray.services.library import protected_paths, thumbnail_paths

    # One read of library.json for both (it can hold tens of thousands of items). Every item, also those
    # vidtray cannot use: a pinned one still protects its file.
    items = lib.document()["items"]
    thumbnails = thumbnail_paths(items)
    result = CleanResult()
    try:
        delete_videos(cfg.videos_dir, older_than_days=older_than_days, now=now,
                      protected=protected_paths(items), to_trash=to_trash, dry_run=dry_run,
                      thumbnails=thumbnails, thumbnails_dir=cfg.thumbnails_dir, result=result)
    finally:
        if result.deleted and not dry_run:
            lib.remove_paths(result.deleted_paths)
    return result


# -- model cache -----------------------------------------------------------------------------


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache in use (HF_HUB_CACHE / HF_HOME respected by huggingface_hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


_REPO_PREFIXES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def _scan(cache_dir: Path):  # -> HFCacheInfo | None
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        return scan_cache_dir(cache_dir)
    except CacheNotFound:
        return None
    except ValueError as exc:  # the cache path is a file
        raise OperationFailed(f"cannot read the model cache {cache_dir}: {exc}") from exc


def _repo_folders(cache_dir: Path) -> dict[Path, tuple[str, str]]:
    """Repo folders in the cache (``models--org--name``) -> (repo_type, repo_id)."""
    out = {}
    try:
        entries = list(os.scandir(cache_dir))
    except OSError:
        return out
    for entry in entries:
        prefix, sep, rest = entry.name.partition("--")
        if sep and prefix in _REPO_PREFIXES and entry.is_dir(follow_symlinks=False):
            out[Path(entry.path)] = (_REPO_PREFIXES[prefix], rest.replace("--", "/"))
    return out


def models_report(cache_dir: Path | None = None) -> dict[str, Any]:
    cache_dir = Path(cache_dir) if cache_dir is not None else hf_cache_dir()
    report: dict[str, Any] = {"cache_dir": str(cache_dir), "size_bytes": 0, "repos": [], "broken": [],
                              "incomplete_bytes": 0}
    # No repo folders, nothing to scan: skip importing the scanner (~0.1 s) for a cache with no models.
    info = _scan(cache_dir) if _repo_folders(cache_dir) else None
    if info is None:
        return report
    root = Path(info.cache_dir)
    incomplete: dict[Path, int] = {}
    for f in info.incomplete_files:
        incomplete[f.file_path.parent.parent] = incomplete.get(f.file_path.parent.parent, 0) + f.size_on_disk
    good = set()
    for repo in sorted(info.repos, key=lambda r: (r.repo_type, r.repo_id)):
        good.add(repo.repo_path)
        report["repos"].append({
            "repo_id": repo.repo_id, "repo_type": repo.repo_type, "path": str(repo.repo_path),
            "size_bytes": repo.size_on_disk, "files": repo.nb_files,
            "revisions": sorted(r.commit_hash for r in repo.revisions),
            "refs": sorted(ref for r in repo.revisions for ref in r.refs),
            "last_accessed": iso(repo.last_accessed), "last_modified": iso(repo.last_modified),
            "incomplete_bytes": incomplete.get(repo.repo_path, 0),
        })
    reasons = {str(w): w for w in info.warnings}
    for path, (repo_type, repo_id) in sorted(_repo_folders(root).items()):
        if path in good:
            continue
        files, size = _tree_size(path)
        reason = next((r for r in reasons if str(path) in r), "not a complete cached repo")
        report["broken"].append({"repo_id": repo_id, "repo_type": repo_type, "path": str(path),
                                 "size_bytes": size, "files": files, "reason": reason})
    report["incomplete_bytes"] = sum(f.size_on_disk for f in info.incomplete_files)
    report["size_bytes"] = info.size_on_disk + sum(b["size_bytes"] for b in report["broken"]) + \
        sum(v for k, v in incomplete.items() if k in good)
    return report


def validate_repo_id(repo_id: str) -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hf_validate

    try:
        hf_validate(repo_id)
    except HFValidationError:
        raise UserError(f"{repo_id!r} is not a valid repo id (expected 'org/name')") from None
    return repo_id


@dataclass
class ModelCleanPlan:
    cache_dir: Path
    targets: list[dict[str, Any]]  # repo_id, repo_type, path, size_bytes, broken
    revisions: list[str]
    broken_paths: list[Path]

    @property
    def expected_freed_bytes(self) -> int:
        return sum(t["size_bytes"] for t in self.targets)


def plan_model_cleanup(repo_id: str | None, cache_dir: Path | None = None) -> ModelCleanPlan:
    """What removing one model repo (``repo_id``) or every cached repo (None) would delete."""
    cache_dir = Path(cache_dir) if cache_dir is not None else hf_cache_dir()
    if repo_id is not None:
        validate_repo_id(repo_id)
    report = models_report(cache_dir)
    targets, revisions, broken = [], [], []
    for repo in report["repos"]:
        if repo_id is None or (repo["repo_type"] == "model" and repo["repo_id"] == repo_id):
            targets.append({**repo, "broken": False})
            revisions.extend(repo["revisions"])
            if not repo["revisions"]:  # nothing for huggingface_hub to delete: remove the empty folder
                broken.append(Path(repo["path"]))
    for repo in report["broken"]:
        if repo_id is None or (repo["repo_type"] == "model" and repo["repo_id"] == repo_id):
            targets.append({**repo, "broken": True})
            broken.append(Path(repo["path"]))
    if repo_id is not None and not targets:
        raise UserError(f"{repo_id} is not in the model cache ({cache_dir})")
    return ModelCleanPlan(cache_dir, targets, revisions, broken)


def execute_model_cleanup(plan: ModelCleanPlan) -> int:
    """Delete what ``plan`` names (for good: the cache is re-downloadable); returns bytes really freed."""
    before = _cache_bytes(plan.cache_dir)
    info = _scan(plan.cache_dir)
    if info is not None and plan.revisions:
        info.delete_revisions(*plan.revisions).execute()
    root = plan.cache_dir.resolve()
    for path in plan.broken_paths:
        # huggingface_hub cannot read a broken repo, so it cannot delete it: remove the folder
        # ourselves, but only a real (non-symlink) repo folder directly inside the cache.
        if path.parent.resolve() == root and not path.is_symlink() and path.is_dir():
            shutil.rmtree(path)
            log.info("deleted broken cache repo %s", path)
    # Incomplete blobs of a deleted repo go with its folder; re-scan for what was really freed.
    return max(0, before - _cache_bytes(plan.cache_dir))


def _cache_bytes(cache_dir: Path) -> int:
    return models_report(cache_dir)["size_bytes"]
