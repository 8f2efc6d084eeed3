"""The tray's link to the headless services: the same Daemon ``vidtray watch`` runs (watcher, scheduled
jobs, and the worker supervisor), plus cheap reads of the job queue, its pause flag and the library for
the tooltip and the menu.

Which thread calls it: ``start``/``stop`` from the tray's start and quit threads, ``snapshot`` from
``tray-monitor``, ``cancel``/``set_watching_paused`` from ``tray-action``. Nothing here touches the icon.

The queue is read from its database, not from supervisor events: the tray then shows the same thing
whichever process (this tray, ``vidtray watch``, ``vidtray queue``) changed it, and a poll reads rows
only when the queue's change key moved since the last one (and then only the running jobs and a count).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vidtray.config import Config
from vidtray.errors import VidtrayError
from vidtray.services.jobrecord import Job
from vidtray.services.protocol import AnyEvent
from vidtray.services.queue import JobQueue, open_queue, read_pause_flag
from vidtray.tray.state import JobView

log = logging.getLogger("vidtray.tray")


@dataclass(frozen=True)
class Work:
    """The running job and the jobs waiting behind it (in the order they will run): what the monitor
    estimates the queue's done time from. Not tray state: the monitor takes it out of the snapshot."""

    jobs: tuple[Job, ...] = ()


class Services(Protocol):
    """What the tray asks of the services (``ServiceLink``; a test may give a stand-in)."""

    on_event: Callable[[AnyEvent], None] | None

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...

    def cancel(self, job_id: str) -> None: ...

    def set_watching_paused(self, paused: bool) -> None: ...

    def set_queue_paused(self, paused: bool) -> None: ...


class ServiceLink:
    def __init__(self, cfg: Config, notifier: Any, *, on_event: Callable[[AnyEvent], None] | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier
        self.on_event = on_event  # the Daemon's generation events (called on the supervisor's thread)
        self.daemon: Any = None
        self._library_key: tuple[int, int] | None = None
        self._library_count: int | None = None
        self._queue: JobQueue | None = None
        self._jobs_key: tuple[object, ...] | None = None
        self._jobs: dict[str, Any] = {"job": None, "queued": 0, "queue_user_paused": False}
        self._work = Work()
        self._queue_failing = False
        self._read_lock = threading.Lock()  # snapshot() is called from the monitor and from actions

    # -- life -------------------------------------------------------------------------------
    def start(self) -> None:
        from vidtray.services.daemon import Daemon

        self.cfg.videos_dir.mkdir(parents=True, exist_ok=True)
        daemon = Daemon(self.cfg, self.notifier)
        daemon.on_generation_event = self.on_event
        daemon.start()
        self.daemon = daemon

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()  # watcher, scheduler, and the supervisor (a running job is queued again)
        if self._queue is not None:
            self._queue.close()

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:
            self._queue = open_queue(self.cfg, on_corrupt=self.notifier.queue_corrupt)
        return self._queue

    # -- reads (tray-monitor) ---------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The tray state's fields, plus ``work`` (:class:`Work`, for the monitor)."""
        with self._read_lock:
            out: dict[str, Any] = {"queue_paused": self.queue_paused(), "videos": self.video_count()}
            out.update(self.jobs())
            out["work"] = self._work
        out["watching_paused"] = bool(getattr(self.daemon, "watching_paused", False))
        problem = self.remote_problem()
        if problem is not None:
            out["problems"] = (problem,)
        return out

    def remote_problem(self) -> str | None:
        """A short line when the ``[remote]`` GPU server does not answer (or refuses us), as the supervisor's
        monitor last found; None while it answers, or when none is configured."""
        supervisor = getattr(self.daemon, "supervisor", None)
        remote = getattr(supervisor, "remote", None)
        state = getattr(remote, "state", None)
        if state in (None, "ok"):
            return None
        return {"unreachable": "GPU server unreachable", "refused": "GPU server refused the token"}.get(
            str(state), "GPU server settings incomplete")

    def queue_paused(self) -> str | None:
        """The pause reason while the queue's pause flag exists (``queue.read_pause_flag``), else None."""
        flag = read_pause_flag(self.cfg.paths.pause_flag)
        return None if flag is None else flag["reason"]

    def video_count(self) -> int | None:
        """Items in library.json; re-read only when the file changed."""
        path = self.cfg.library_file
        try:
            st = path.stat()
        except FileNotFoundError:
            return 0
        except OSError:
            return self._library_count
        key = (st.st_mtime_ns, st.st_size)
        if key != self._library_key:
            from vidtray.services.library import Library

            try:
                self._library_count = Library(path).summary().items
            except Exception as exc:  # shown as unknown; the library's own code reports corruption
                log.warning("cannot count library items: %s", exc)
                self._library_count = None
            self._library_key = key
        return self._library_count

    def jobs(self) -> dict[str, Any]:
        """{"job": the running job or None, "queued": jobs waiting, "queue_user_paused": bool} from the queue;
        rows are read only when the queue changed since the last call."""
        try:
            key = self.queue.change_key()
            if key != self._jobs_key:
                active = self.queue.active()
                running = [job for job in active if job.state == "running"]
                self._jobs = {"job": _job_view(running[0]) if running else None,
                              "queued": self.queue.count("queued"),
                              "queue_user_paused": self.queue.user_pause() is not None}
                self._work = Work(tuple(active))
                self._jobs_key = key
        except VidtrayError as exc:  # a locked or unusable queue: the last reading stays, said once
            if not self._queue_failing:
                log.warning("cannot read the job queue: %s", exc)
            self._queue_failing = True
            return dict(self._jobs)
        if self._queue_failing:
            log.info("the job queue can be read again")
            self._queue_failing = False
        return dict(self._jobs)

    # -- actions (tray-action) --------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        """Cancel a queued job, or ask the worker to stop the running one within a step."""
        if self.daemon is not None:
            self.daemon.cancel(job_id)
        else:
            self.queue.cancel(job_id)

    def set_queue_paused(self, paused: bool) -> None:
        """The user's pause of the queue (a running job finishes); the low-disk pause is the disk check's."""
        if paused:
            self.queue.pause()
        else:
            self.queue.resume()

    def set_watching_paused(self, paused: bool) -> None:
        if self.daemon is None:
            raise RuntimeError("the services are not running")
        if paused:
            self.daemon.pause_watching()
        else:
            self.daemon.resume_watching()


def _job_view(job: Job) -> JobView:
    prompt = job.prompt
    step, total = (job.progress.step, job.progress.steps) if job.progress is not None else (None, None)
    eta = job.progress.eta if job.progress is not None else None
    if job.cancel_requested:
        phase = "cancelling"
    elif not total:
        phase = "queued"
    elif step is not None and step >= total:
        phase = "saving"
    else:
        phase = "running"
    return JobView(job.id, " ".join(prompt.split()), step, total, phase, eta)
