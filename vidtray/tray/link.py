"""The tray's link to the headless services: the same Daemon ``vidtray watch`` runs (watcher, scheduled
jobs, and the worker supervisor), plus cheap reads of the job queue, its pause flag and the library for
the tooltip and the menu.

Which thread calls it: ``start``/``stop`` from the tray's start and quit threads, ``snapshot`` from
``tray-monitor``, ``cancel``/``set_watching_paused`` from ``tray-action``. Nothing here touches the icon.

The queue is read from its files, not from supervisor events: the tray then shows the same thing
whichever process (this tray, ``vidtray watch``, ``vidtray queue``) changed it, and a poll re-reads
only the job files whose size or mtime changed since the last one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from vidtray.config import Config
from vidtray.services.jobrecord import Job
from vidtray.services.protocol import AnyEvent
from vidtray.services.queue import is_job_file, read_job, read_pause_flag
from vidtray.tray.state import JobView

log = logging.getLogger("vidtray.tray")


class Services(Protocol):
    """What the tray asks of the services (``ServiceLink``; a test may give a stand-in)."""

    on_event: Callable[[AnyEvent], None] | None

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...

    def cancel(self, job_id: str) -> None: ...

    def set_watching_paused(self, paused: bool) -> None: ...


class ServiceLink:
    def __init__(self, cfg: Config, notifier: Any, *, on_event: Callable[[AnyEvent], None] | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier
        self.on_event = on_event  # the Daemon's generation events (called on the supervisor's thread)
        self.daemon: Any = None
        self._library_key: tuple[int, int] | None = None
        self._library_count: int | None = None
        self._jobs: dict[str, tuple[tuple[int, int], Job | None]] = {}
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

    # -- reads (tray-monitor) ---------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._read_lock:
            out: dict[str, Any] = {"queue_paused": self.queue_paused(), "videos": self.video_count()}
            out.update(self.jobs())
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
        """{"job": the running job or None, "queued": jobs waiting} from the queue's job files."""
        seen: set[str] = set()
        try:
            entries = list(os.scandir(self.cfg.queue_dir))
        except OSError:
            entries = []
        for entry in entries:
            if not is_job_file(entry.name):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            key = (st.st_mtime_ns, st.st_size)
            seen.add(entry.name)
            cached = self._jobs.get(entry.name)
            if cached is None or cached[0] != key:
                # The queue's own reader, so the tray shows exactly the jobs the queue would run; a file
                # that is not one is skipped here (the queue itself sets it aside).
                self._jobs[entry.name] = (key, read_job(Path(entry.path))[0])
        for name in set(self._jobs) - seen:
            del self._jobs[name]
        jobs = [job for _key, job in self._jobs.values() if job is not None]
        running = sorted((j for j in jobs if j.state == "running"), key=lambda j: j.seq)
        queued = sum(1 for j in jobs if j.state == "queued")
        return {"job": _job_view(running[0]) if running else None, "queued": queued}

    # -- actions (tray-action) --------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        """Cancel a queued job, or ask the worker to stop the running one within a step."""
        if self.daemon is not None:
            self.daemon.cancel(job_id)
        else:
            from vidtray.services.queue import open_queue

            open_queue(self.cfg).cancel(job_id)

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
    if job.cancel_requested:
        phase = "cancelling"
    elif not total:
        phase = "queued"
    elif step is not None and step >= total:
        phase = "saving"
    else:
        phase = "running"
    return JobView(job.id, " ".join(prompt.split()), step, total, phase)
