"""Scheduled jobs: the disk check, the prune and the storage budget, as plain functions of ``now``.

``Jobs`` holds the little state the jobs need (which volumes were already warned about, where
the last prune time is kept, which budget plan was last announced) and has no scheduler inside, so tests
call ``check_disk(now)``, ``prune(now)`` and ``enforce_budget(now)`` with a fake clock and a fake free-space
function. ``JobScheduler`` wires them to an
APScheduler 3.x ``BackgroundScheduler`` (the daemon owns one).

Which thread calls it: the scheduler's single worker thread ("vidtray-jobs"); the two jobs never
run at the same time. Notifications go through the Notifier, which is thread-safe.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from vidtray.errors import OperationFailed
from vidtray.paths import free_bytes, hf_cache_dir, mount_point
from vidtray.services.backoff import Backoff
from vidtray.services.fsutil import atomic_write_text, gib, human_size, plural, private_dir
from vidtray.services.queue import UNREADABLE_FLAG, read_pause_flag, remove_pause_flag, write_pause_flag

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

    from vidtray.config import Config
    from vidtray.services.budget import BudgetPlan
    from vidtray.services.library import Library
    from vidtray.services.notify import Notifier

log = logging.getLogger("vidtray.jobs")

GiB = 1024**3
# A warning (or a pause) is re-armed only once free space is this much above the threshold, so a
# disk that hovers at the edge does not produce a notification at every check.
REARM_FRACTION = 0.05
STATE_VERSION = 1
PAUSED_BY = "disk_check"


FreeBytes = Callable[[Path], "int | None"]


# -- disk check ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """Free space of one volume, and what vidtray keeps there."""

    key: str  # the mount point: stable across checks, shared by paths on the same volume
    where: str  # "/home (videos, model cache)"
    free_bytes: int | None  # None: could not be measured (volume gone, permission)


@dataclass
class DiskReport:
    readings: list[Reading]
    warned: list[str] = field(default_factory=list)  # keys warned about in this check
    paused: bool = False  # the queue pause flag exists (ours or someone else's) after this check
    changed: str | None = None  # "paused" / "resumed" when this check changed it


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).astimezone().isoformat(timespec="seconds")


# -- prune state -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetOutcome:
    action: str  # none | notified | applied | unchanged (already announced) | failed
    items: int = 0  # in the plan
    freed_bytes: int = 0  # applied: what left the budget
    trashed_bytes: int = 0  # of which in the trash (frees when it is emptied)
    trash_emptied_bytes: int = 0  # vidtray's own trash emptied (low_disk_empty_trash)
    reason: str = ""


@dataclass(frozen=True)
class PruneOutcome:
    deleted: int
    freed_bytes: int
    kept: int
    skipped: str | None = None  # why nothing was attempted


class Jobs:
    """The scheduled work. Every public method takes ``now`` (seconds since the epoch)."""

    def __init__(
        self,
        cfg: Config,
        notifier: Notifier,
        *,
        free_bytes: FreeBytes | None = None,
        cache_dir: Callable[[], Path] = hf_cache_dir,
        library: Library | None = None,
    ) -> None:
        self.cfg = cfg
        self.notifier = notifier
        self._free_bytes = free_bytes
        self._cache_dir = cache_dir
        self._lib = library  # the daemon shares its own; else opened on first prune
        # Volumes (by mount point) already warned about and not yet back above the threshold.
        self.low: set[str] = set()
        # Places whose free space could not be read, so that is logged once, not every check.
        self._unreadable: set[str] = set()
        # The budget plan last announced (its id, when), so "notify" says it once, not at every check.
        self._announced: tuple[str, float] | None = None

    # -- disk ----------------------------------------------------------------------------------
    def watched_places(self) -> list[tuple[str, Path]]:
        places: list[tuple[str, Path]] = [("videos", self.cfg.videos_dir)]
        try:
            places.append(("model cache", self._cache_dir()))
        except Exception as exc:  # a broken huggingface_hub install must not stop the videos check
            log.warning("cannot locate the model cache: %s", exc)
        return places

    def measure(self) -> list[Reading]:
        """One reading per volume; paths on the same volume are measured once."""
        measure = self._free_bytes or free_bytes
        groups: dict[str, list[tuple[str, Path]]] = {}
        for label, path in self.watched_places():
            try:
                key = str(mount_point(path))
            except OSError as exc:
                key = str(path)
                log.debug("no mount point for %s: %s", path, exc)
            groups.setdefault(key, []).append((label, path))
        readings = []
        for key, members in groups.items():
            where = f"{key} ({', '.join(label for label, _ in members)})"
            try:
                free = measure(members[0][1])
            except OSError as exc:  # a volume that disappears between the two calls
                log.debug("free space of %s: %s", key, exc)
                free = None
            if free is None:
                if key not in self._unreadable:
                    log.warning("cannot read the free space of %s; skipping it until it is back", where)
                    self._unreadable.add(key)
            elif key in self._unreadable:
                log.info("free space of %s is readable again", where)
                self._unreadable.discard(key)
            readings.append(Reading(key, where, free))
        return readings

    def check_disk(self, now: float) -> DiskReport:
        """Warn once per crossing below ``warn_free_gb``; pause the queue below ``min_free_gb``."""
        report = DiskReport(self.measure())
        warn = self.cfg.warn_free_gb * GiB
        for r in report.readings:
            if r.free_bytes is None:
                continue  # unknown: neither a new warning nor a re-arm
            if r.free_bytes < warn:
                if r.key not in self.low:
                    log.warning("low disk space: %s free on %s", human_size(r.free_bytes), r.where)
                    self.notifier.low_disk(r.free_bytes, r.where, self.cfg.warn_free_gb)
                    self.low.add(r.key)
                    report.warned.append(r.key)
            elif r.free_bytes >= warn * (1 + REARM_FRACTION):
                self.low.discard(r.key)
        self._update_pause(report, now)
        return report

    def _update_pause(self, report: DiskReport, now: float) -> None:
        minimum = self.cfg.min_free_gb * GiB
        known = [r for r in report.readings if r.free_bytes is not None]
        short = [r for r in known if r.free_bytes is not None and r.free_bytes < minimum]
        flag_path = self.cfg.paths.pause_flag
        flag = read_pause_flag(flag_path)
        if flag is not None and flag["reason"] == UNREADABLE_FLAG:
            log.warning("cannot read the queue pause flag %s: the queue stays paused until it is removed",
                        flag_path)
        ours = flag is not None and flag.get("by") == PAUSED_BY
        if short and flag is None:
            worst = min(short, key=lambda r: r.free_bytes or 0)
            reason = (f"Only {human_size(worst.free_bytes or 0)} free on {worst.where}; new generations "
                      f"wait until {gib(self.cfg.min_free_gb)} is free (min_free_gb).")
            doc = {"reason": reason, "since": _iso(now), "by": PAUSED_BY}
            try:
                write_pause_flag(flag_path, doc)
            except OSError as exc:
                # The same full disk can make this write fail; say so, the check runs again.
                log.error("cannot write the queue pause flag: %s", exc)
                report.paused = False
                return
            log.warning("generation queue paused: %s", reason)
            self.notifier.queue_paused(reason)
            report.changed = "paused"
            flag, ours = doc, True
        elif ours and not short:
            # Resume only once every readable volume is clearly above the minimum (hysteresis) and
            # none is unreadable: an unknown volume may still be full.
            clear = len(known) == len(report.readings) and all(
                (r.free_bytes or 0) >= minimum * (1 + REARM_FRACTION) for r in known
            )
            if clear:
                try:
                    remove_pause_flag(flag_path)
                except OSError as exc:
                    log.error("cannot remove the queue pause flag: %s", exc)
                    report.paused = True
                    return
                free = ", ".join(f"{human_size(r.free_bytes or 0)} on {r.where}" for r in known)
                log.info("generation queue resumed: %s free", free)
                self.notifier.queue_resumed(f"Free space is back: {free}.")
                report.changed = "resumed"
                flag = None
        report.paused = flag is not None

    # -- prune ---------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.cfg.paths.jobs_state_file

    def last_prune(self) -> float | None:
        try:
            doc = json.loads(self.state_file.read_text(encoding="utf-8"))
            value = doc["last_prune_ts"]
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            raise ValueError("last_prune_ts is not a number")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Our own small state, not user data: a damaged file means "never pruned".
            log.warning("ignoring unreadable %s: %s", self.state_file, exc)
            return None

    def _record_prune(self, now: float) -> None:
        doc = {"version": STATE_VERSION, "last_prune": _iso(now), "last_prune_ts": now}
        try:
            private_dir(self.state_file.parent)
            atomic_write_text(self.state_file, json.dumps(doc, indent=2) + "\n")
        except OSError as exc:
            log.error("cannot record the prune time in %s: %s", self.state_file, exc)

    def prune_due(self, now: float) -> bool:
        if self.cfg.prune_after_days <= 0:
            return False
        last = self.last_prune()
        interval = self.cfg.prune_interval_s
        # A last run "in the future" beyond one interval means the clock was wrong then: run.
        return last is None or now - last >= interval or last - now > interval

    def next_prune_at(self, now: float) -> float:
        """When the prune should run next: now if overdue, else one interval after the last run."""
        last = self.last_prune()
        if self.prune_due(now) or last is None:
            return now
        return last + self.cfg.prune_interval_s

    def prune(self, now: float) -> PruneOutcome:
        """Delete finished videos older than ``prune_after_days`` (never pinned or scheduled).

        Age counts as for ``clean videos --older-than`` (``storage.AGE_FROM``): from the later of when the
        library first listed the video and its mtime, so a clip copied in with an old mtime is new. One
        plan, executed at once, with each file re-checked against it just before it goes.
        """
        if self.cfg.prune_after_days <= 0:
            return PruneOutcome(0, 0, 0, skipped="prune_after_days = 0")
        videos = self.cfg.videos_dir
        if not videos.is_dir():
            log.info("prune: %s does not exist; nothing to prune", videos)
            self._record_prune(now)
            return PruneOutcome(0, 0, 0, skipped="no videos folder")
        from vidtray.services.storage import clean_videos

        lib = self._library()
        try:
            result = clean_videos(self.cfg, lib, older_than_days=self.cfg.prune_after_days, now=now,
                                  to_trash=self.cfg.prune_to_trash, dry_run=False)
        except OperationFailed as exc:
            log.error("prune failed: %s", exc)
            self.notifier.prune_failed(str(exc))
            return PruneOutcome(0, 0, 0, skipped=str(exc))
        deleted = result.deleted_paths
        if result.skipped:
            log.info("prune: left %s alone (changed or gone since the plan)",
                     plural(len(result.skipped), "file"))
        if deleted:
            log.info("pruned %s older than %g days, %s (%s)", plural(len(deleted), "video"),
                     self.cfg.prune_after_days, human_size(result.freed_bytes),
                     "to the trash" if self.cfg.prune_to_trash else "permanently")
            self.notifier.prune_summary(len(deleted), result.freed_bytes, to_trash=self.cfg.prune_to_trash)
        else:
            log.info("prune: nothing older than %g days", self.cfg.prune_after_days)
        self._record_prune(now)
        return PruneOutcome(len(deleted), result.freed_bytes, len(result.kept))

    # -- storage budget ------------------------------------------------------------------------
    def enforce_budget(self, now: float) -> BudgetOutcome:
        """Over the storage budget, or below ``warn_free_gb``: the budget plan (``services.budget``), and one
        notification saying what would go (``budget_action = "notify"``, once until the plan changes, at
        most once per ``prune_interval_s``) or what went (``"apply"``). Below ``min_free_gb`` with
        ``low_disk_empty_trash``, what vidtray itself put in the trash is emptied first."""
        cfg = self.cfg
        emptied = self._empty_own_trash(now)
        need = self._disk_need()
        if cfg.storage_budget_gb <= 0 and need <= 0:
            self._announced = None
            return BudgetOutcome("none", trash_emptied_bytes=emptied)
        from vidtray.services import budget

        lib = self._library()
        plan = budget.plan(cfg, lib, budget_bytes=int(cfg.storage_budget_gb * GiB), now=now, disk_need_bytes=need)
        if not plan.over_bytes and need <= 0:
            self._announced = None
            return BudgetOutcome("none", trash_emptied_bytes=emptied)
        headline = self._headline(plan)
        if not plan.items:
            if not plan.over_bytes:  # low on disk, but nothing vidtray may free (the disk check warned)
                return BudgetOutcome("none", reason="nothing vidtray may free", trash_emptied_bytes=emptied)
            return self._announce(now, plan, headline, plan.cannot_meet()[:1].upper() + plan.cannot_meet()[1:],
                                  emptied)
        if cfg.budget_action != "apply":
            text = "vidtray would free, in order (vidtray clean --to-budget, or the tray's Free space...):\n"
            return self._announce(now, plan, headline, text + budget.summary(plan), emptied)
        try:
            result = budget.execute(cfg, lib, plan)
        except OperationFailed as exc:
            log.error("freeing space for the budget failed: %s", exc)
            self.notifier.budget_applied("Freeing space failed", str(exc))
            return BudgetOutcome("failed", len(plan.items), reason=str(exc), trash_emptied_bytes=emptied)
        went = "; ".join(f"{d['kind']} {Path(d['name']).name if d['kind'] == 'video' else d['name']}"
                         for d in result.deleted[:8])
        body = f"Freed {human_size(result.freed_bytes)}: {went}" + ("..." if len(result.deleted) > 8 else "")
        if result.trashed_bytes:
            body += f". Videos moved to the trash: {human_size(result.trashed_bytes)} frees when it is emptied"
        log.info("budget: %s", body)
        self.notifier.budget_applied(headline, body)
        self._announced = None
        return BudgetOutcome("applied", len(plan.items), result.freed_bytes, result.trashed_bytes, emptied)

    def _disk_need(self) -> int:
        """Bytes to free so the fullest volume is back above ``warn_free_gb`` (0 when it is)."""
        frees = [r.free_bytes for r in self.measure() if r.free_bytes is not None]
        if not frees:
            return 0
        return max(0, int(self.cfg.warn_free_gb * GiB * (1 + REARM_FRACTION)) - min(frees)) \
            if min(frees) < self.cfg.warn_free_gb * GiB else 0

    def _empty_own_trash(self, now: float) -> int:
        if not self.cfg.low_disk_empty_trash:
            return 0
        frees = [r.free_bytes for r in self.measure() if r.free_bytes is not None]
        if not frees or min(frees) >= self.cfg.min_free_gb * GiB:
            return 0
        from vidtray.services import trash

        files, size = trash.empty_own(self.cfg.paths.trash_record_file, now)
        if files:
            log.warning("below min_free_gb: emptied %s vidtray had moved to the trash (%s)", plural(files, "file"),
                        human_size(size))
            self.notifier.trash_emptied(files, size)
        return size

    def _headline(self, plan: BudgetPlan) -> str:
        if plan.over_bytes:
            return f"Storage {human_size(plan.over_bytes)} over the budget ({gib(self.cfg.storage_budget_gb)})"
        return f"vidtray can free {human_size(plan.total_bytes)} (low disk space)"

    def _announce(self, now: float, plan: BudgetPlan, headline: str, body: str, emptied: int) -> BudgetOutcome:
        last = self._announced
        if last is not None and (last[0] == plan.plan_id or now - last[1] < self.cfg.prune_interval_s):
            return BudgetOutcome("unchanged", len(plan.items), trash_emptied_bytes=emptied)
        log.info("budget: %s: %s", headline, body.replace("\n", "; "))
        self.notifier.budget_plan(headline, body)
        self._announced = (plan.plan_id, now)
        return BudgetOutcome("notified", len(plan.items), trash_emptied_bytes=emptied)

    def _library(self) -> Library:
        if self._lib is None:
            from vidtray.services.library import open_library

            self._lib = open_library(self.cfg, on_corrupt=self._library_corrupt)
        return self._lib

    def _library_corrupt(self, moved_to: Path) -> None:
        self.notifier.library_corrupt(moved_to)


# -- scheduler wiring -----------------------------------------------------------------------------------


class JobScheduler:
    """Runs ``Jobs`` on an APScheduler 3.x ``BackgroundScheduler``. ``start``/``stop`` are idempotent.

    Settings chosen for a laptop that sleeps: ``misfire_grace_time=None`` runs a job however late
    it is (the default of one second would skip the prune that was due while the lid was shut),
    ``coalesce=True`` makes several missed runs one run, and the prune's first run is "now" when
    the persisted last run is older than ``prune_interval_s``. The frequent disk check also wakes
    the scheduler's loop, so a run that fell due during a suspend starts within one check interval.
    """

    def __init__(self, jobs: Jobs, clock: Callable[[], float] = time.time) -> None:
        self.jobs = jobs
        self.clock = clock
        self._scheduler: BackgroundScheduler | None = None
        self._lock = threading.Lock()
        self._guards: dict[str, Backoff] = {}

    @property
    def running(self) -> bool:
        return self._scheduler is not None

    def start(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        with self._lock:
            if self._scheduler is not None:
                return
            cfg = self.jobs.cfg
            scheduler = BackgroundScheduler(
                timezone=UTC,
                # One worker: the jobs never overlap, and a slow prune only delays a disk check.
                executors={"default": ThreadPoolExecutor(max_workers=1)},
                job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
            )
            now = self.clock()
            scheduler.add_job(
                self._guarded, IntervalTrigger(seconds=cfg.disk_check_interval_s, timezone=UTC),
                args=("disk_check", self.jobs.check_disk), id="disk_check", name="disk check",
                next_run_time=_dt(now),
            )
            if cfg.prune_after_days > 0:
                first = self.jobs.next_prune_at(now)
                scheduler.add_job(
                    self._guarded,
                    IntervalTrigger(seconds=cfg.prune_interval_s, start_date=_dt(first), timezone=UTC),
                    args=("prune", self.jobs.prune), id="prune", name="prune", next_run_time=_dt(first),
                )
                log.info("prune scheduled every %gs, next at %s", cfg.prune_interval_s, _iso(first))
            else:
                log.info("prune off (prune_after_days = 0)")
            # After the disk check (same interval, one worker): over the budget or low on disk, the plan.
            scheduler.add_job(
                self._guarded, IntervalTrigger(seconds=cfg.disk_check_interval_s, timezone=UTC),
                args=("budget", self.jobs.enforce_budget), id="budget", name="storage budget",
                next_run_time=_dt(now + 1),
            )
            scheduler.start()
            self._scheduler = scheduler
            log.info("scheduler started (disk check every %gs)", cfg.disk_check_interval_s)

    def stop(self, wait: bool = True) -> None:
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        with contextlib.suppress(Exception):  # already shut down by someone else
            scheduler.shutdown(wait=wait)
        log.info("scheduler stopped")

    def _guarded(self, name: str, job: Callable[[float], object]) -> None:
        """Run one job; whatever it raises is logged here (with our logger) and the schedule goes on.

        A job that keeps failing (a disk that stays full) is logged once, with its traceback, and once
        more when it works again; its schedule is its retry."""
        threading.current_thread().name = "vidtray-jobs"
        guard = self._guards.setdefault(name, Backoff(log, f"the {name} job"))
        try:
            job(self.clock())
        except Exception as exc:
            guard.failed(exc)
        else:
            guard.succeeded()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
