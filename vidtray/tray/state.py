"""What the tray shows, as plain data: state in, tooltip text and icon name out.

No pystray, no threads: the app keeps one ``TrayState`` that only the UI thread changes (other
threads post changes to the dispatcher), and derives the tooltip, the icon and the menu from
it. Tests check the words and the icon choice here without a display.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from vidtray.services.estimate import clock, duration
from vidtray.services.fsutil import human_size, plural

GB = 1024**3
TOOLTIP_MAX = 120  # Windows cuts tooltips at 127 characters


@dataclass(frozen=True)
class JobView:
    """The job the worker is on, as the tray shows it."""

    id: str
    prompt: str
    step: int | None = None
    total: int | None = None
    phase: str = "running"  # queued (claimed, no step yet) | loading | running | saving | cancelling
    eta: float | None = None  # seconds left for the whole job, as its last progress event said


@dataclass(frozen=True)
class StorageView:
    """Sizes for the Storage submenu (from ``vidtray storage --json``)."""

    videos_count: int = 0
    videos_bytes: int = 0
    models: tuple[tuple[str, int, bool], ...] = ()  # (repo_id, bytes, broken), model repos only
    models_bytes: int = 0
    error: str | None = None
    last_used: tuple[tuple[str, str], ...] = ()  # (repo_id, ISO date) of the models vidtray has used
    budget_bytes: int = 0  # storage_budget_gb (0: none)
    budget_used_bytes: int = 0


@dataclass(frozen=True)
class TrayState:
    job: JobView | None = None
    queued: int = 0  # waiting behind the current job
    free_bytes: int | None = None
    warn_free_gb: float = 5.0
    queue_paused: str | None = None  # the low-disk pause's reason, while <queue_dir>/paused.json exists
    queue_user_paused: bool = False  # the user paused the queue (menu, `vidtray queue pause`)
    videos: int | None = None  # library items (None until first read)
    watching_paused: bool = False
    autostart: bool = False
    problems: tuple[str, ...] = ()  # short, user-facing ("Videos folder missing")
    storage: StorageView | None = None
    quitting: bool = False
    #: When the running job and the jobs waiting behind it should all be done (epoch seconds, from the
    #: estimates); None while unknown or while no job runs.
    queue_done: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def with_(self, **changes: Any) -> TrayState:
        return replace(self, **changes)

    @property
    def low_disk(self) -> bool:
        return self.free_bytes is not None and self.free_bytes < self.warn_free_gb * GB


def job_line(job: JobView) -> str:
    if job.phase == "loading":
        return "Loading model"
    if job.phase == "saving":
        return "Saving video"
    if job.phase == "cancelling":
        return "Cancelling"
    if job.phase == "queued" or job.step is None or not job.total:
        return "Starting generation"
    return f"Generating {job.step}/{job.total}"


def time_left(job: JobView) -> str:
    """', about 3 min left' while the job denoises or saves and its worker said how long; else ''."""
    if job.eta is None or job.phase not in ("running", "saving"):
        return ""
    return f", about {duration(job.eta)} left"


def tooltip(state: TrayState) -> str:
    """'Generating 12/40, about 3 min left (+2 queued); queue done about 14:20', 'Low disk: 0.8 GiB free',
    'Idle - 14 videos', '3 queued (paused)' (most urgent first). The user's pause shows beside the count it
    holds back; the low-disk pause has its own line. A paused queue has no done time."""
    if state.quitting:
        return "vidtray - quitting"
    lines: list[str] = []
    if state.job is not None:
        line = job_line(state.job) + time_left(state.job)
        if state.queued:
            line += f" (+{state.queued} queued{', paused' if state.queue_user_paused else ''})"
            if state.queue_done is not None and not state.queue_user_paused and not state.queue_paused:
                line += f"; queue done about {clock(state.queue_done)}"
        lines.append(line)
    if state.low_disk:
        assert state.free_bytes is not None
        lines.append(f"Low disk: {state.free_bytes / GB:.1f} GiB free")
    if state.queue_paused:
        lines.append(f"Queue paused: {state.queue_paused}")
    lines.extend(state.problems)
    if state.watching_paused:
        lines.append("Watching paused")
    if state.job is None:
        count = "" if state.videos is None else f" - {plural(state.videos, 'video')}"
        if state.queued:
            waiting = f"{state.queued} queued" + (" (paused)" if state.queue_user_paused else "")
        else:
            waiting = "Idle (queue paused)" if state.queue_user_paused else "Idle"
        lines.append(waiting + count)
    text = "\n".join(lines)
    return text if len(text) <= TOOLTIP_MAX else text[: TOOLTIP_MAX - 1] + "…"


def icon_name(state: TrayState) -> str:
    """warning when something needs the user (low disk, paused queue, a problem), else busy/idle."""
    if state.low_disk or state.queue_paused or state.problems:
        return "warning"
    return "busy" if state.job is not None else "idle"


def storage_lines(view: StorageView | None, free_bytes: int | None) -> list[str]:
    """The informational lines at the top of the Storage submenu."""
    if view is None:
        lines = ["Sizes: checking..."]
    elif view.error:
        lines = [f"Sizes unknown: {view.error}"]
    else:
        lines = [f"Videos: {view.videos_count}, {human_size(view.videos_bytes)}",
                 f"Model cache: {human_size(view.models_bytes)}"]
        used = dict(view.last_used)
        lines += [f"    {repo}{' (broken)' if broken else ''}: {human_size(size)}"
                  + (f", used {used[repo][:10]}" if repo in used else "")
                  for repo, size, broken in view.models]
        if view.budget_bytes:
            over = view.budget_used_bytes > view.budget_bytes
            lines.append(f"Budget: {human_size(view.budget_used_bytes)} of {human_size(view.budget_bytes)}"
                         + (" (over)" if over else ""))
    lines.append(f"Free: {'unknown' if free_bytes is None else human_size(free_bytes)}")
    return lines


def parse_storage_report(doc: dict[str, Any]) -> StorageView:
    """``vidtray storage --json`` -> StorageView (model repos only: datasets are not ours to show)."""
    videos = doc.get("videos", {})
    models = doc.get("models", {})
    repos = [(r["repo_id"], int(r.get("size_bytes", 0)), False) for r in models.get("repos", [])
             if r.get("repo_type", "model") == "model"]
    repos += [(b["repo_id"], int(b.get("size_bytes", 0)), True) for b in models.get("broken", [])
              if b.get("repo_type", "model") == "model"]
    budget = doc.get("budget") or {}
    return StorageView(
        videos_count=int(videos.get("count", 0)),
        videos_bytes=int(videos.get("size_bytes", 0)),
        models=tuple(sorted(repos, key=lambda r: -r[1])),
        models_bytes=int(models.get("size_bytes", 0)),
        last_used=tuple((r["repo_id"], str(r["last_used"])) for r in models.get("repos", []) if r.get("last_used")),
        budget_bytes=int(budget.get("budget_bytes", 0)),
        budget_used_bytes=int(budget.get("used_bytes", 0)),
    )
