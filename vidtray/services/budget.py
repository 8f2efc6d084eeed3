"""The storage budget: one plan of what to free, over videos, models and downloads, to get under it.

The budget (``storage_budget_gb``) covers the videos folder (videos, sidecars, in-progress files and the
latents vidtray keeps there), the thumbnails, the Hugging Face hub cache (repos, the shared blob store,
partial downloads) and the Xet cache. The plan lists, in this order, what would go until the goal is met:

1. unpinned, unscheduled videos, oldest first (age as the cleanup counts it: ``storage.AGE_FROM``), each
   with its sidecar and thumbnail;
2. model repos vidtray has not used for ``model_unused_days`` (``services.modeluse``; a download or update
   counts as a use) that no queued or running job needs, least recently used first;
3. partial downloads (``.incomplete`` blobs, repos interrupted before their first snapshot) older than
   ``partial_keep_days``, oldest first.

Never in it: pinned or scheduled videos, a model a queued job needs (the default model for a job that names
none), a partial download younger than ``partial_keep_days`` (a pull resumes it) or a model still being
downloaded, the login token, anything outside the videos, thumbnails and cache folders. Executing deletes
exactly what was planned, each thing re-checked just before it goes; the cache is scanned again after.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from vidtray.errors import OperationFailed, UserError
from vidtray.paths import hf_xet_dir
from vidtray.services import hub, modeluse, storage
from vidtray.services.fsutil import human_size, plural, tree_size

if TYPE_CHECKING:
    from vidtray.config import Config
    from vidtray.services.library import Library

log = logging.getLogger("vidtray.budget")

DAY = 86400.0
GB = storage.GB
Kind = Literal["video", "model", "partial"]


def queued_models(cfg: Config) -> set[str] | None:
    """The models queued or running jobs need (the queue's ``models_in_use``: their own ``model``, else the
    default; a row it cannot read counts too). None when the queue cannot be read, and then no model may go."""
    from vidtray.services.queue import open_queue

    try:
        with open_queue(cfg) as queue:
            return queue.models_in_use(default=cfg.model)
    except OperationFailed as exc:
        log.warning("cannot read the job queue, so no model may go: %s", exc)
        return None


@dataclass(frozen=True)
class PlanItem:
    kind: Kind
    name: str  # the video's path, the repo id, or the partial download's path
    size_bytes: int  # what leaves the budget when it goes
    why: str
    key: str  # what it is exactly (path, size, time): the plan's identity
    video: storage.PlannedVideo | None = None
    repo: hub.CachedRepo | hub.BrokenRepo | None = None  # a model, or a broken repo (a partial download)
    partial: storage.PlannedFile | None = None  # an .incomplete blob
    used: float | None = None  # a model's last use as planned

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "name": self.name, "size_bytes": self.size_bytes,
                               "why": self.why}
        if self.repo is not None:
            out["path"] = str(self.repo.path)
            out["repo_type"] = self.repo.repo_type
        elif self.video is not None:
            out["companions"] = [str(c.path) for c in self.video.companions]
        return out


@dataclass
class BudgetPlan:
    budget_bytes: int  # 0: no budget (a disk goal only)
    used_bytes: int
    to_trash: bool  # videos go to the trash: they leave the budget but free the disk only when it is emptied
    items: list[PlanItem] = field(default_factory=list)
    disk_need_bytes: int = 0  # free this much of the disk too (the scheduled check below warn_free_gb)
    candidates_bytes: int = 0  # all that the rules let go (the plan takes what it needs of it)
    kept: list[dict[str, Any]] = field(default_factory=list)  # what may not go: {what, size_bytes}
    videos_root: Path = Path()
    cache_dir: Path = Path()
    rules: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(i.size_bytes for i in self.items)

    @property
    def trashed_bytes(self) -> int:
        """Of the total, the videos that go to the trash: still on the disk until it is emptied."""
        return sum(i.size_bytes for i in self.items if i.kind == "video") if self.to_trash else 0

    @property
    def over_bytes(self) -> int:
        return max(0, self.used_bytes - self.budget_bytes) if self.budget_bytes else 0

    @property
    def after_bytes(self) -> int:
        return self.used_bytes - self.total_bytes

    @property
    def meets_budget(self) -> bool:
        return not self.budget_bytes or self.after_bytes <= self.budget_bytes

    @property
    def kept_bytes(self) -> int:
        """What the rules keep: pinned or in use."""
        return max(0, self.used_bytes - self.candidates_bytes)

    @property
    def plan_id(self) -> str:
        """Names exactly this plan: a plan asked about (``--plan-id``) is executed only if it is unchanged."""
        return hashlib.sha256("\n".join(i.key for i in self.items).encode()).hexdigest()[:16]

    def cannot_meet(self) -> str:
        """Why the budget cannot be met (one line)."""
        parts = ", ".join(f"{k['what']} {human_size(k['size_bytes'])}" for k in self.kept if k["size_bytes"])
        return (f"the budget cannot be met: {human_size(self.kept_bytes)} are pinned or in use"
                + (f" ({parts})" if parts else ""))

    def as_dict(self) -> dict[str, Any]:
        return {"budget_bytes": self.budget_bytes, "used_bytes": self.used_bytes, "over_bytes": self.over_bytes,
                "disk_need_bytes": self.disk_need_bytes, "items": [i.as_dict() for i in self.items],
                "total_bytes": self.total_bytes, "after_bytes": self.after_bytes,
                "meets_budget": self.meets_budget, "to_trash": self.to_trash, "trashed_bytes": self.trashed_bytes,
                "kept_bytes": self.kept_bytes, "kept": self.kept, "plan_id": self.plan_id, "rules": self.rules}


@dataclass
class _Usage:
    videos: int
    thumbnails: int
    cache: int
    xet: int

    @property
    def total(self) -> int:
        return self.videos + self.thumbnails + self.cache + self.xet


def plan(cfg: Config, lib: Library, *, budget_bytes: int, now: float, disk_need_bytes: int = 0,
         unused_days: float | None = None) -> BudgetPlan:
    """What to free, in order, to get the covered places under ``budget_bytes`` (0: no budget goal) and, with
    ``disk_need_bytes``, to free that much of the disk (videos going to the trash do not count for that)."""
    scan = hub.scan_cache()
    videos = storage.videos_report(cfg.videos_dir, cfg.partial_dir)
    usage = _Usage(videos.folder_bytes, tree_size(cfg.thumbnails_dir)[1], scan.size_bytes, tree_size(hf_xet_dir())[1])
    unused = cfg.model_unused_days if unused_days is None else unused_days
    out = BudgetPlan(budget_bytes, usage.total, cfg.prune_to_trash, disk_need_bytes=disk_need_bytes,
                     cache_dir=scan.cache_dir,
                     rules={"age_from": storage.AGE_FROM, "model_unused_days": unused,
                            "partial_keep_days": cfg.partial_keep_days})
    vids = video_candidates(cfg, lib, now, out)
    needed = queued_models(cfg)
    models = model_candidates(scan, now, unused_days=unused, keep_partial_days=cfg.partial_keep_days,
                              needed=needed, last_used=modeluse.read_use(cfg.paths.model_use_file))
    partials = partial_candidates(scan, now, keep_days=cfg.partial_keep_days,
                                  skip_repos={m.repo.path for m in models if m.repo is not None})
    _take(out, scan, [*vids, *models, *partials])
    model_bytes = scan.frees(i.repo.path for i in (*models, *partials) if i.repo is not None) + \
        sum(i.size_bytes for i in partials if i.partial is not None)
    video_bytes = sum(i.size_bytes for i in vids)
    out.candidates_bytes = video_bytes + model_bytes
    models_kept = (f"models used in the last {unused:g} days or needed by a queued job, fresh downloads"
                   if needed is not None else "models (the job queue could not be read)")
    out.kept = [
        {"what": "pinned, scheduled or in-progress videos", "size_bytes": max(0, usage.videos + usage.thumbnails
                                                                              - video_bytes)},
        {"what": models_kept, "size_bytes": max(0, usage.cache - model_bytes)},
        {"what": "the Xet cache (xet/)", "size_bytes": usage.xet},
    ]
    return out


def video_candidates(cfg: Config, lib: Library, now: float, out: BudgetPlan) -> list[PlanItem]:
    """Every unpinned, unscheduled finished video, oldest first (``storage.plan_clean``'s rules)."""
    cplan = storage.plan_clean(cfg, lib, older_than_days=0, now=now)
    out.videos_root = cplan.root
    items = []
    for v in sorted(cplan.videos, key=lambda v: (-(v.age_s or 0.0), str(v.video.path))):
        age = (v.age_s or 0.0) / DAY
        extra = _companions(v)
        why = (f"unpinned, unscheduled, {_days(age)} old{extra}" if age >= 1
               else f"unpinned, unscheduled, new (the newest go last){extra}")
        key = f"video {v.video.path} {v.video.size} {v.video.mtime_ns} {v.video.ino} " + \
            " ".join(f"{c.path}:{c.size}:{c.mtime_ns}" for c in v.companions)
        items.append(PlanItem("video", str(v.video.path), v.size_bytes, why, key, video=v))
    return items


def _days(days: float) -> str:
    return plural(round(days), "day")


def _companions(v: storage.PlannedVideo) -> str:
    if not v.companions:
        return ""
    names = ["thumbnail" if c.root != v.video.root else "sidecar" for c in v.companions]
    return ", with its " + " and ".join(sorted(set(names)))


def model_candidates(scan: hub.CacheScan, now: float, *, unused_days: float, keep_partial_days: float,
                     needed: Collection[str] | None, last_used: Mapping[str, float]) -> list[PlanItem]:
    """Model repos not used for ``unused_days`` that no queued job needs, least recently used first. A
    download or update (the repo's newest file, a partial download) counts as a use."""
    if needed is None:
        return []
    items = []
    for repo in scan.repos:
        if repo.repo_type != "model" or repo.repo_id in needed:
            continue
        if any(now - p.mtime < keep_partial_days * DAY for p in repo.partials):
            continue  # still being downloaded, or resumable
        recorded = last_used.get(repo.repo_id)
        used = max(recorded or float("-inf"), repo.last_modified)
        if now - used < unused_days * DAY:
            continue
        days = (now - used) / DAY
        date = (storage.iso(used) or "")[:10]
        why = (f"last used by vidtray {_days(days)} ago ({date})"
               if recorded is not None and recorded >= repo.last_modified
               else f"not used by vidtray since it was downloaded {_days(days)} ago ({date})")
        why += "; no queued job needs it"
        key = f"model {repo.path} {','.join(repo.revisions)} {repo.own_bytes}"
        items.append(PlanItem("model", repo.repo_id, repo.frees_bytes, why, key, repo=repo, used=used))
    items.sort(key=lambda i: (i.used or 0.0, i.name))
    return items


def partial_candidates(scan: hub.CacheScan, now: float, *, keep_days: float,
                       skip_repos: Collection[Path] = ()) -> list[PlanItem]:
    """Partial downloads older than ``keep_days``, oldest first: ``.incomplete`` blobs of complete repos
    (not those of ``skip_repos``, which go whole) and repo folders interrupted before their first snapshot."""
    found: list[tuple[float, PlanItem]] = []
    for repo in scan.repos:
        if repo.path in skip_repos:
            continue
        for p in repo.partials:
            if now - p.mtime >= keep_days * DAY:
                why = f"interrupted download of {repo.repo_id}, {_days((now - p.mtime) / DAY)} old"
                planned = storage.PlannedFile(p.path, p.path.parent, p.size_bytes, p.mtime_ns, p.dev, p.ino)
                key = f"partial {p.path} {p.size_bytes} {p.mtime_ns}"
                found.append((p.mtime, PlanItem("partial", str(p.path), p.size_bytes, why, key, partial=planned)))
    for broken in scan.broken:
        if now - broken.modified >= keep_days * DAY:
            age = _days((now - broken.modified) / DAY)
            why = (f"download interrupted before its first snapshot, {age} old"
                   if broken.reason.startswith("Snapshots dir doesn't exist")
                   else f"broken repo, unchanged for {age}: {broken.reason}")
            key = f"broken {broken.path} {broken.size_bytes} {broken.modified}"
            found.append((broken.modified, PlanItem("partial", broken.repo_id, scan.frees([broken.path]), why, key,
                                                    repo=broken)))
    found.sort(key=lambda f: (f[0], f[1].name))
    return [item for _, item in found]


def _take(out: BudgetPlan, scan: hub.CacheScan, candidates: Iterable[PlanItem]) -> None:
    """Take candidates in order until the budget (and the disk goal) is met. A model's size is what it frees
    with those taken before it (a blob only they share goes with the last of them)."""
    budget_left = out.used_bytes - out.budget_bytes if out.budget_bytes else 0
    disk_left = out.disk_need_bytes
    repos: list[Path] = []
    for item in candidates:
        if budget_left <= 0 and disk_left <= 0:
            break
        frees_disk = item.kind != "video" or not out.to_trash
        if budget_left <= 0 and not frees_disk:
            continue  # only the disk goal is left, and this would only move to the trash
        if item.repo is not None:
            size = scan.frees([*repos, item.repo.path]) - scan.frees(repos)
            repos.append(item.repo.path)
            item = PlanItem(item.kind, item.name, size, item.why, item.key, item.video, item.repo, item.partial,
                            item.used)
        out.items.append(item)
        budget_left -= item.size_bytes
        if frees_disk:
            disk_left -= item.size_bytes


# -- carrying it out ---------------------------------------------------------------------------------


@dataclass
class BudgetResult:
    videos: storage.CleanResult
    deleted: list[dict[str, Any]] = field(default_factory=list)  # kind, name, size_bytes
    skipped: list[dict[str, Any]] = field(default_factory=list)  # kind, name, reason
    freed_bytes: int = 0  # what left the budget (videos: to the trash unless to_trash is false)
    trashed_bytes: int = 0  # of which in the trash: frees the disk when the trash is emptied

    def as_dict(self) -> dict[str, Any]:
        return {"deleted": self.deleted, "skipped": self.skipped, "freed_bytes": self.freed_bytes,
                "trashed_bytes": self.trashed_bytes}


def execute(cfg: Config, lib: Library, budget_plan: BudgetPlan) -> BudgetResult:
    """Delete exactly what ``budget_plan`` lists, re-checking each thing first: a video that changed, a model
    used or needed since, a download that moved on stay (``skipped``, with why). Videos go to the trash unless
    ``prune_to_trash`` is false (if the trash is not possible this stops: OperationFailed)."""
    vplan = storage.CleanPlan(budget_plan.videos_root,
                              videos=[i.video for i in budget_plan.items if i.video is not None])
    videos = storage.execute_clean(lib, vplan, to_trash=budget_plan.to_trash,
                                   trash_record=cfg.paths.trash_record_file)
    result = BudgetResult(videos)
    for d in videos.deleted:
        result.deleted.append({"kind": "video", "name": d["path"], "size_bytes": d["size_bytes"]})
    result.skipped += [{"kind": "video", "name": s["path"], "reason": s["reason"]} for s in videos.skipped]
    result.freed_bytes = result.trashed_bytes = videos.freed_bytes
    if not budget_plan.to_trash:
        result.trashed_bytes = 0
    _execute_cache(cfg, budget_plan, result)
    order = {(i.kind, i.name): n for n, i in enumerate(budget_plan.items)}
    result.deleted.sort(key=lambda d: order.get((d["kind"], d["name"]), len(order)))
    return result


def _execute_cache(cfg: Config, budget_plan: BudgetPlan, result: BudgetResult) -> None:
    items = [i for i in budget_plan.items if i.kind != "video"]
    if not items:
        return
    needed = queued_models(cfg)
    used = modeluse.read_use(cfg.paths.model_use_file)
    scan = hub.scan_cache(budget_plan.cache_dir)
    current = {r.path: r for r in scan.folders()}
    repos: list[hub.CachedRepo | hub.BrokenRepo] = []
    partial_bytes = 0
    for item in items:
        why = _why_not(item, current, needed, used)
        if why is not None:
            result.skipped.append({"kind": item.kind, "name": item.name, "reason": why})
            log.info("not deleting %s: %s", item.name, why)
        elif item.partial is not None:
            partial_bytes += _delete_partial(item, item.partial, result)
        elif item.repo is not None:
            repos.append(current[item.repo.path])
    freed = 0
    if repos:
        mplan = storage.model_clean_plan(scan, repos)
        freed = storage.execute_model_cleanup(mplan)
        for repo in repos:
            if not os.path.lexists(repo.path):
                kind: Kind = "partial" if isinstance(repo, hub.BrokenRepo) else "model"
                result.deleted.append({"kind": kind, "name": repo.repo_id, "size_bytes": scan.frees([repo.path])})
            else:
                result.skipped.append({"kind": "model", "name": repo.repo_id, "reason": "still there after the delete"})
    result.freed_bytes += freed + partial_bytes


def _why_not(item: PlanItem, current: Mapping[Path, hub.CachedRepo | hub.BrokenRepo],
             needed: Collection[str] | None, used: Mapping[str, float]) -> str | None:
    """Why a planned model or download may not go now; None when it still may."""
    if item.partial is not None:
        return item.partial.why_not()
    assert item.repo is not None
    now_repo = current.get(item.repo.path)
    if now_repo is None:
        return "gone since it was planned"
    if isinstance(now_repo, hub.BrokenRepo) and isinstance(item.repo, hub.BrokenRepo):
        return None if now_repo.modified <= item.repo.modified else "the download went on since it was planned"
    if not isinstance(now_repo, hub.CachedRepo) or not isinstance(item.repo, hub.CachedRepo):
        return "changed since it was planned"
    if needed is None or item.name in needed:
        return "a queued job needs it now"
    if used.get(item.name, float("-inf")) > (item.used or float("-inf")) or \
            now_repo.last_modified > item.repo.last_modified:
        return "used or updated since it was planned"
    return None


def _delete_partial(item: PlanItem, planned: storage.PlannedFile, result: BudgetResult) -> int:
    try:
        os.unlink(planned.path)
    except FileNotFoundError:
        result.skipped.append({"kind": "partial", "name": item.name, "reason": "gone before it could be deleted"})
        return 0
    except OSError as exc:
        raise OperationFailed(f"cannot delete {planned.path}: {exc.strerror or exc}") from exc
    log.info("deleted partial download %s", planned.path)
    result.deleted.append({"kind": "partial", "name": item.name, "size_bytes": planned.size})
    return planned.size


# -- what a person reads --------------------------------------------------------------------------------


def budget_bytes_from(cfg: Config, budget_gb: float | None) -> int:
    """``--budget GB`` if given, else ``storage_budget_gb``; UserError when neither sets one."""
    gb = cfg.storage_budget_gb if budget_gb is None else budget_gb
    if gb <= 0:
        raise UserError(f"no storage budget: set storage_budget_gb in {cfg.source} or pass --budget GB")
    return int(gb * GB)


def render_plan(p: BudgetPlan) -> list[str]:
    lines = [f"Storage budget {human_size(p.budget_bytes)}: {human_size(p.used_bytes)} used"
             + (f", {human_size(p.over_bytes)} over." if p.over_bytes else ", under the budget.")]
    if p.items:
        lines.append("Plan, in order:")
        width = max(len(human_size(i.size_bytes)) for i in p.items)
        for n, item in enumerate(p.items, 1):
            lines.append(f"  {n:>3}. {item.kind:<7} {human_size(item.size_bytes):>{width}}  {item.name}")
            lines.append(f"       {'':<7} {'':>{width}}  {item.why}")
        lines.append(f"Total {human_size(p.total_bytes)}: {human_size(p.after_bytes)} used after it"
                     + ("." if p.meets_budget else f", still {human_size(p.after_bytes - p.budget_bytes)} over."))
    if p.trashed_bytes:
        lines.append(f"Videos move to the trash: {human_size(p.trashed_bytes)} frees when the trash is emptied.")
    if not p.meets_budget:
        lines.append(p.cannot_meet()[:1].upper() + p.cannot_meet()[1:] + ".")
    return lines


def summary(p: BudgetPlan, limit: int = 6) -> str:
    """A few lines for a notification or a dialog: the first items, the total, the trash note."""
    lines = [f"{item.kind} {item.name if item.kind != 'video' else Path(item.name).name} "
             f"({human_size(item.size_bytes)})" for item in p.items[:limit]]
    if len(p.items) > limit:
        lines.append(f"and {plural(len(p.items) - limit, 'more item')}")
    lines.append(f"Total {human_size(p.total_bytes)}.")
    if p.trashed_bytes:
        lines.append(f"Videos move to the trash: {human_size(p.trashed_bytes)} frees when the trash is emptied.")
    return "\n".join(lines)
