"""The headless host: what ``vidtray watch`` runs in the foreground and the tray runs beside its icon.

It owns the watcher (watch folders -> library.json); the scheduled jobs and the worker supervisor
join it here. ``start()`` checks everything it can up front (a missing watch folder is a UserError,
an unwritable library an OperationFailed) before any thread starts; ``stop()`` is idempotent and
flushes what the watcher has already settled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vidtray.config import Config
from vidtray.errors import UserError
from vidtray.services.jobrecord import Job
from vidtray.services.protocol import AnyEvent
from vidtray.services.records import JsonObject

if TYPE_CHECKING:
    from vidtray.services.jobs import JobScheduler
    from vidtray.services.library import Library
    from vidtray.services.notify import Notifier
    from vidtray.services.supervisor import Supervisor
    from vidtray.services.watcher import Watcher

log = logging.getLogger("vidtray.daemon")


class Daemon:
    #: The generation supervisor while the daemon runs.
    supervisor: Supervisor | None = None
    #: Called (on the supervisor's thread) with every generation event (``vidtray.services.protocol``):
    #: JobQueued, Progress, Done, Failed, Cancelled, WorkerExit... Set it before start(); the tray hands it
    #: to its UI queue.
    on_generation_event: Callable[[AnyEvent], None] | None = None

    def __init__(self, cfg: Config, notifier: Notifier | None = None, *, settle_s: float | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier
        self.settle_s = settle_s
        self.library: Library | None = None
        self.watcher: Watcher | None = None
        self.scheduler: JobScheduler | None = None
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        from vidtray.services.library import open_library
        from vidtray.services.watcher import watcher_for

        with self._lock:
            if self._started:
                return
            if self.cfg.library_file.is_dir():
                # Else every library write fails and the watcher would run on, importing nothing.
                raise UserError(f"the library {self.cfg.library_file} is a folder, not a file "
                                f"(library_path or data_dir in {self.cfg.source})")
            lib = open_library(self.cfg, on_corrupt=self._library_corrupt)
            lib.ensure_writable()
            watcher = watcher_for(self.cfg, lib, settle_s=self.settle_s)  # validates the watch folders
            self.library, self.watcher = lib, watcher
            watcher.start()
            try:
                self.scheduler = self._start_scheduler(lib)
            except BaseException:
                watcher.stop()
                raise
            self._started = True
            log.info("daemon started")
            self._start_generation()

    def stop(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
            if self.scheduler is not None:
                self.scheduler.stop()  # waits for a running job (a prune) to finish
            if self.watcher is not None:
                self.watcher.stop()
            if self.supervisor is not None:
                self.supervisor.stop()  # a running job is cancelled and queued again for next time
                self.supervisor = None
            log.info("daemon stopped")

    @property
    def running(self) -> bool:
        return self._started

    # -- pause watching (the tray's check item) ------------------------------------------------------
    # A paused daemon keeps its scheduler and worker; only the watcher stops (flushing what it settled).
    # Resuming starts a fresh watcher, whose start-up reconcile imports what arrived meanwhile.
    @property
    def watching_paused(self) -> bool:
        return self._started and self.watcher is None

    def pause_watching(self) -> None:
        with self._lock:
            if not self._started or self.watcher is None:
                return
            watcher, self.watcher = self.watcher, None
            watcher.stop()
            log.info("watching paused")

    def resume_watching(self) -> None:
        from vidtray.services.watcher import watcher_for

        with self._lock:
            if not self._started or self.watcher is not None or self.library is None:
                return
            watcher = watcher_for(self.cfg, self.library, settle_s=self.settle_s)
            watcher.start()
            self.watcher = watcher
            log.info("watching resumed")

    def _start_scheduler(self, lib: Library) -> JobScheduler:
        """Scheduled jobs (disk check, prune) on their own scheduler thread, sharing the library."""
        from vidtray.services.jobs import Jobs, JobScheduler
        from vidtray.services.notify import Notifier

        notifier = self.notifier if self.notifier is not None else Notifier(enabled=False)
        jobs = Jobs(self.cfg, notifier, library=lib)
        scheduler = JobScheduler(jobs)
        scheduler.start()
        return scheduler

    def _library_corrupt(self, moved_to: Path) -> None:
        if self.notifier is not None:
            self.notifier.library_corrupt(moved_to)

    # -- generation (the worker supervisor) -------------------------------------------------------------
    def _start_generation(self) -> None:
        """Start the supervisor: it takes queued jobs (also those left from the last run) one at a time and
        starts a worker process only when there is work. A failure here leaves watching running."""
        from vidtray.services.supervisor import Supervisor

        try:
            supervisor = Supervisor(self.cfg, on_event=self._generation_event, notifier=self.notifier)
            supervisor.start()
            self.supervisor = supervisor
        except Exception:
            log.exception("the generation queue could not start; watching goes on without it")

    def submit(self, request: JsonObject) -> Job:
        """Queue one video (a ``generation.Request`` as a dict); returns the job. Bad input is a UserError.
        Without a running daemon the job just waits in the queue for the next start."""
        from vidtray.services.generation import Request

        req = Request.from_dict(request)  # validates (UserError)
        if self.supervisor is not None:
            return self.supervisor.submit(req.as_dict())
        from vidtray.services.queue import open_queue

        with open_queue(self.cfg) as queue:
            return queue.submit(req.as_dict())

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job, or stop a running one within a step."""
        if self.supervisor is not None:
            return self.supervisor.cancel(job_id)
        from vidtray.services.queue import open_queue

        with open_queue(self.cfg) as queue:
            return queue.cancel(job_id)

    def _generation_event(self, event: AnyEvent) -> None:
        listener = self.on_generation_event
        if listener is not None:
            listener(event)
