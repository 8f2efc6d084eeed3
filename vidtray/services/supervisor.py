"""Feeds the persistent queue's jobs to a worker process and keeps it healthy.

:class:`Supervisor` feeds a :class:`~vidtray.services.worker_process.WorkerProcess` jobs from the queue one
at a time, reads its events through the shared :class:`~vidtray.services.worker_process.JobDispatcher`,
relays every event to ``on_event``, forwards cancel requests, marks the job of a crashed worker failed
(with the reason) and starts a new worker for the next job, at most ``max_restarts`` crashes in a row. The
worker exits by itself after ``keep_alive_s`` idle; the supervisor starts it again on demand.

An idle loop wakes every ``poll_s`` and reads only the queue's change key (``JobQueue.change_key``: no row);
a commit in this process wakes it at once. Only when the key moved does it look for finished batches (one
notification each, ``Notifier.batch_done``; a batch's jobs send none of their own), pauses and the next job.
Every ``RECOVER_EVERY_S`` it also takes back running jobs whose owner died (another tray or ``vidtray
watch`` killed mid-job).

A job whose executor is ``remote`` (``--on remote``, or ``executor = "remote"``) runs on the ``[remote]`` GPU
server through a :class:`~vidtray.services.remote_worker.RemoteWorker` instead, read by the same dispatcher.
A :class:`~vidtray.services.remote.RemoteMonitor` says whether the server answers; while it does not, remote
jobs wait in the queue (local ones behind them still run), or run here with ``remote_fallback = "local"``,
and one notification says so per outage. Nothing here imports torch.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from vidtray.config import Config
from vidtray.errors import UserError
from vidtray.services.backoff import Backoff
from vidtray.services.jobrecord import Executor, Job, JobProgress
from vidtray.services.protocol import (
    AnyEvent,
    Cancelled,
    Done,
    Failed,
    JobClaimed,
    JobQueued,
    JobRecovered,
    Outcome,
    Progress,
    QueuePaused,
    SupervisorError,
    SupervisorGaveUp,
    SupervisorRecovered,
    VideoResult,
    WarningEvent,
    WorkerExit,
    WorkerStarted,
)
from vidtray.services.queue import JobQueue
from vidtray.services.records import JsonObject
from vidtray.services.remote import RemoteMonitor
from vidtray.services.worker_process import EventSink, JobDispatcher, JobRunner, WorkerListener, WorkerProcess

log = logging.getLogger("vidtray.supervisor")

#: How often an idle supervisor looks for running jobs whose owner died (another tray or `vidtray watch`
#: that was killed): one indexed query.
RECOVER_EVERY_S = 30.0
#: What the loop's inbox holds: an event and the dispatcher of the worker that sent it, or None to wake.
_Inbox = tuple[JobDispatcher, AnyEvent] | None


class GenerationNotifier(Protocol):
    """The notifications the supervisor sends (``notify.Notifier`` has them)."""

    def video_ready(self, path: Path, prompt: str) -> object: ...

    def generation_failed(self, reason: str) -> object: ...

    def batch_done(self, done: int, failed: int, cancelled: int, error: str | None = None) -> object: ...

    def queue_corrupt(self, moved_to: Path) -> object: ...

    def generation_note(self, message: str) -> object: ...

    def server_unreachable(self, url: str, reason: str, fallback: str) -> object: ...


def _request_problem(job: Job) -> str | None:
    """Why a queued request cannot be run (None if it can): the same checks as ``vidtray queue add``,
    in a message that names the job."""
    from vidtray.errors import UserError
    from vidtray.params import Source
    from vidtray.services.generation import Request

    try:
        Request.from_dict(job.request, Source.job(job.id))
    except UserError as exc:
        return str(exc)
    return None


class Supervisor(WorkerListener):
    """Feeds queued jobs to a worker process, one at a time; see the module docstring."""

    def __init__(self, cfg: Config, *, on_event: EventSink | None = None, config_path: str | None = None,
                 notifier: GenerationNotifier | None = None, max_restarts: int = 3, poll_s: float = 0.5,
                 keep_alive_s: float | None = None, progress_write_s: float = 1.0,
                 worker_cmd: list[str] | None = None, remote_retry_s: float | None = None,
                 remote_check_s: float = 10.0) -> None:
        self.cfg = cfg
        # Another worker program (tests use a fake that speaks the same JSON lines); default: the real one.
        self.worker_cmd = worker_cmd
        self.queue = JobQueue(cfg.queue_dir, on_corrupt=self._queue_corrupt)
        self.on_event: EventSink = on_event or (lambda event: None)
        # The worker reads the same settings file (`vidtray --config X watch` included).
        if config_path is None and cfg.source not in ("defaults", "<string>") and Path(cfg.source).is_file():
            config_path = cfg.source
        self.config_path = config_path
        self.notifier = notifier
        self.max_restarts = max_restarts
        self.poll_s = poll_s
        self.keep_alive_s = cfg.keep_alive_s if keep_alive_s is None else keep_alive_s
        self.progress_write_s = progress_write_s
        #: The running workers by executor (a local worker process, the GPU server), each with its dispatcher.
        self.workers: dict[Executor, tuple[JobRunner, JobDispatcher]] = {}
        self.current: str | None = None
        self.current_executor: Executor | None = None
        self.remote_retry_s = remote_retry_s
        self.remote: RemoteMonitor | None = RemoteMonitor(cfg.remote, every_s=remote_check_s) \
            if cfg.remote.configured else None
        self._held_back = False  # a remote job waited this round because the server did not answer
        self._ran_here_instead = False  # a remote job ran here this round for the same reason
        self._outage_noted = False
        self.crashes = 0
        self.gave_up = False
        self._events: queue.Queue[_Inbox] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_start = 0.0
        self._last_progress_write = 0.0
        self._was_paused = False
        self._cancel_sent: set[str] = set()
        self._orphan: str | None = None
        # The queue's change key when the loop last found nothing to do (or last looked for a cancel): an
        # idle loop reads nothing more until it changes (a submit, a cancel, a pause, from any process).
        self._idle_key: tuple[object, ...] | None = None
        self._cancel_key: tuple[object, ...] | None = None
        self._next_recover = 0.0
        self._unlisten: Callable[[], None] | None = None

    # -- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        # A commit in this process (the popup's submit goes through another process: data_version) wakes it.
        self._unlisten = self.queue.listen(lambda: self._events.put(None))
        if self.remote is not None:
            self.remote.start()
        self._thread = threading.Thread(target=self._run, name="vidtray-supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop taking jobs; a running job is cancelled and goes back to the queue for next time."""
        if self._thread is None:
            return
        self._stop.set()
        self._events.put(None)
        self._thread.join(timeout + 5)
        self._thread = None
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        self.queue.close()
        if self.remote is not None:
            self.remote.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- API for the tray / daemon / tests
    def submit(self, request: JsonObject, executor: Executor | None = None) -> Job:
        """Queue a job (a ``generation.Request`` as a dict, already validated) and wake the loop. ``executor``:
        where it runs (default: the config's, recorded with the job)."""
        job = self.queue.submit(request, executor=executor or ("remote" if self.cfg.executor == "remote"
                                                                else "local"))
        self._relay(JobQueued(job=job.id, prompt=request.get("prompt")))
        self._events.put(None)
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.queue.cancel(job_id)
        self._events.put(None)
        return job

    # -- the loop (one thread owns all state below)
    def _run(self) -> None:
        # Whatever one round raises (a full disk under the queue, a locked or damaged database),
        # the loop goes on after a bounded backoff: a dead supervisor would leave jobs queued until a
        # restart. An event whose handling failed is handled again first, so a result is never lost.
        guard = Backoff(log, "the generation queue (supervisor loop)")
        redo: collections.deque[tuple[JobDispatcher, AnyEvent]] = collections.deque()
        try:
            while not self._stop.is_set():
                if time.monotonic() >= self._next_recover:
                    # Jobs a previous run (or another process that died) left "running": in the loop, so a
                    # full disk at start only delays it.
                    try:
                        self._recover()
                    except Exception as exc:
                        self._stop.wait(guard.failed(exc))
                        continue
                item = redo.popleft() if redo else self._next_event()
                try:
                    if item is not None:
                        self._handle(*item)
                    self._tick()
                except Exception as exc:
                    if item is not None:
                        redo.appendleft(item)
                    if not guard.failing:
                        self._relay(SupervisorError(error=str(exc)))
                    self._stop.wait(guard.failed(exc))
                else:
                    if guard.failing:
                        guard.succeeded()
                        self._relay(SupervisorRecovered())
            # Stopping: what could not be recorded yet gets one last try.
            for item in redo:
                with contextlib.suppress(Exception):
                    self._handle(*item)
        finally:
            self._shutdown()

    def _next_event(self) -> _Inbox:
        try:
            return self._events.get(timeout=self.poll_s)
        except queue.Empty:
            return None

    def _recover(self) -> None:
        for job in self.queue.recover_stale():
            self._relay(JobRecovered(job=job.id, state=job.state))
        self._next_recover = time.monotonic() + RECOVER_EVERY_S
        self._idle_key = None

    def _tick(self) -> None:
        key = self.queue.change_key()
        if self.current is not None:
            if key != self._cancel_key:
                self._forward_cancel()
                self._cancel_key = key
            return
        if key == self._idle_key:
            return  # nothing changed since the last look: no row is read
        self._announce_batches()
        paused = self.queue.paused()
        if paused is not None:
            if not self._was_paused:
                self._relay(QueuePaused(reason=str(paused.get("reason"))))
            self._was_paused = True
            self._idle_key = key
            return
        self._was_paused = False
        if self._orphan is not None:
            # Claimed but never handed to a worker (it could not start): back to the queue first.
            self.queue.requeue(self._orphan, "the worker could not be started")
            self._orphan = None
        if self.gave_up:
            self._idle_key = key
            return
        if time.monotonic() < self._next_start:
            return  # after a crash: the next look is due when the backoff ends, changed or not
        self._held_back = self._ran_here_instead = False
        job = self.queue.claim_next(os.getpid(), accept=self._accept)
        if job is not None:
            self._run_job(job)
        elif not self._held_back:
            # Nothing to run until the queue changes. A remote job held back while its server is away is
            # no change of the queue: look again at every tick until the server answers.
            self._idle_key = key
        self._note_outage()

    # -- where a job runs
    def _executor_of(self, job: Job) -> Executor:
        return job.executor or ("remote" if self.cfg.executor == "remote" else "local")

    def _accept(self, job: Job) -> bool:
        """Whether to start ``job`` now: a remote one waits while its server does not answer (unless it may
        run here instead)."""
        remote = self.remote
        if self._executor_of(job) == "local" or remote is None:
            return True  # (no [remote] settings: it runs, and fails saying so)
        if remote.state is not None and not remote.unreachable:
            return True  # it answers (or refused the token: it runs, and fails with the reason)
        if remote.unreachable and self.cfg.remote_fallback == "local":
            return True
        self._held_back = True
        return False

    def _note_outage(self) -> None:
        """One notification per outage of the server, when it keeps a job waiting (or running here)."""
        remote = self.remote
        if remote is None:
            return
        if not remote.unreachable:
            self._outage_noted = False
            return
        if not self._outage_noted and (self._held_back or self._ran_here_instead):
            self._outage_noted = True
            if self.notifier is not None:
                with contextlib.suppress(Exception):
                    self.notifier.server_unreachable(remote.url, remote.reason, self.cfg.remote_fallback)

    def _run_job(self, job: Job) -> None:
        problem = _request_problem(job)
        if problem is not None:
            # Another program queued a request the worker cannot run: fail it now, with the reason.
            log.warning("job %s cannot run: %s", job.id, problem)
            self.queue.finish(job.id, "failed", error=problem)
            self._relay(Failed(job=job.id, error=problem, kind="user"))
            return
        executor = self._executor_of(job)
        self._ran_here_instead = executor == "remote" and self.remote is not None and self.remote.unreachable
        if self._ran_here_instead:
            log.warning("job %s runs here: the GPU server does not answer (remote_fallback = local)", job.id)
            executor = "local"
        self.current, self.current_executor = job.id, executor
        try:
            worker, dispatcher = self._ensure_worker(executor)
        except UserError as exc:  # no usable [remote] settings: the job cannot run, say why
            self.current = self.current_executor = None
            self.queue.finish(job.id, "failed", error=str(exc))
            self._relay(Failed(job=job.id, error=str(exc), kind="user"))
            return
        except BaseException:
            self.current, self._orphan = None, job.id
            raise
        self._relay(JobClaimed(job=job.id, worker_pid=worker.pid))
        dispatcher.submitted(job.id)
        if not worker.submit(job.id, job.request):
            # Died between start and submit: its exit event marks the job failed.
            log.warning("could not hand job %s to worker %s", job.id, worker.pid)

    def _ensure_worker(self, executor: Executor) -> tuple[JobRunner, JobDispatcher]:
        entry = self.workers.get(executor)
        if entry is None or not entry[0].alive():
            # Each worker its own dispatcher: a worker that exits after its job (idle) while the next one
            # already runs a job fails nothing.
            dispatcher = JobDispatcher(self)

            def sink(event: AnyEvent) -> None:
                self._events.put((dispatcher, event))

            worker: JobRunner
            if executor == "remote":
                from vidtray.services.remote_worker import RETRY_S, RemoteWorker

                worker = RemoteWorker(sink, self.cfg, retry_s=self.remote_retry_s or RETRY_S)
            else:
                worker = WorkerProcess(sink, config_path=self.config_path, keep_alive_s=self.keep_alive_s,
                                       new_session=True, cmd=self.worker_cmd)
            worker.start()
            entry = self.workers[executor] = (worker, dispatcher)
            self._relay(WorkerStarted(pid=worker.pid))
        return entry

    def _forward_cancel(self) -> None:
        try:
            job = self.queue.get(self.current or "")
        except Exception:
            return
        entry = self.workers.get(self.current_executor) if self.current_executor else None
        if job.cancel_requested and job.id not in self._cancel_sent and entry is not None:
            if entry[0].cancel(job.id):
                self._cancel_sent.add(job.id)

    def _handle(self, dispatcher: JobDispatcher, event: AnyEvent) -> None:
        dispatcher.dispatch(event)
        if isinstance(event, WorkerExit):
            for executor, (_worker, mine) in list(self.workers.items()):
                if mine is dispatcher:
                    del self.workers[executor]
        self._relay(event)

    # -- what the dispatcher calls (on this loop's thread)
    def progress(self, event: Progress) -> None:
        now = time.monotonic()
        # Progress lands in the queue for `vidtray queue list` and the tray, at most once a second.
        if event.step == event.steps or now - self._last_progress_write >= self.progress_write_s:
            self._last_progress_write = now
            self.queue.set_progress(event.job, JobProgress(step=event.step, steps=event.steps, eta=event.eta))

    def outcome(self, outcome: Outcome, *, worker_died: bool) -> None:
        if worker_died:
            self._crashed(outcome.job, outcome.error if isinstance(outcome, Failed) else "")
            return
        match outcome:
            case Done(result=result):
                job = self.queue.finish(outcome.job, "done", result=result)
                self.crashes = 0
                if job.batch is None:  # a batch has one notification, when it is all done
                    self._notify_ready(result)
            case Failed(error=error):
                job = self.queue.finish(outcome.job, "failed", error=error)
                if job.batch is None:
                    self._notify_failed(error)
            case Cancelled():
                if self._stop.is_set():
                    self.queue.requeue(outcome.job, "vidtray stopped while it ran")
                else:
                    self.queue.finish(outcome.job, "cancelled", error="cancelled")
        if self.current == outcome.job:
            self.current = self.current_executor = None

    def warning(self, event: WarningEvent) -> None:
        """What the worker did that a person should know (ran with CPU offload after running out of GPU
        memory; the library was not updated): a notification."""
        if self.notifier is not None and event.job is not None:
            with contextlib.suppress(Exception):
                self.notifier.generation_note(event.message)

    def _crashed(self, job_id: str, reason: str) -> None:
        # The job stays current until its state is written (a full disk: the exit is handled again).
        if self._stop.is_set():
            self.queue.requeue(job_id, "vidtray stopped while it ran")
            self.current = self.current_executor = None
            return
        if self._resumable(job_id):
            # It died after denoising (the decode ran out of memory and the system killed it, or a crash):
            # the next attempt decodes the saved latents instead of starting over.
            job = self.queue.requeue(job_id, f"{reason}; resuming from its saved latents")
            log.warning("job %s: %s; queued again to resume from its saved latents", job_id, reason)
            self._relay(JobRecovered(job=job_id, state=job.state))
            self.current = self.current_executor = None
            self._count_crash(reason)
            return
        job = self.queue.finish(job_id, "failed", error=reason)
        self.current = self.current_executor = None
        log.error("job %s failed: %s (crash %d of %d allowed)", job_id, reason, self.crashes + 1, self.max_restarts)
        self._relay(Failed(job=job_id, error=reason, kind="crash"))
        if job.batch is None:
            self._notify_failed(reason)
        self._count_crash(reason)

    def _count_crash(self, reason: str) -> None:
        self.crashes += 1
        self._next_start = time.monotonic() + min(30.0, 2.0 ** (self.crashes - 1))
        if self.crashes > self.max_restarts:
            self.gave_up = True
            self._relay(SupervisorGaveUp(crashes=self.crashes, reason=reason))

    def _resumable(self, job_id: str) -> bool:
        """The job left latents to resume from and has attempts left (the queue's own limit)."""
        from vidtray.services.queue import MAX_ATTEMPTS
        from vidtray.services.worker import latents

        if not latents.exists(self.cfg.partial_dir, job_id):
            return False
        return self.queue.get(job_id).attempts < MAX_ATTEMPTS

    def _notify_ready(self, result: VideoResult) -> None:
        if self.notifier is not None:
            with contextlib.suppress(Exception):
                self.notifier.video_ready(Path(result.get("path", "")), _prompt_of(result))

    def _notify_failed(self, reason: str) -> None:
        if self.notifier is not None:
            with contextlib.suppress(Exception):
                self.notifier.generation_failed(reason)

    def _announce_batches(self) -> None:
        """One notification per batch whose jobs have all finished (here or in another process): "8 videos
        ready, 1 failed". A batch the user cancelled whole is not announced."""
        for batch in self.queue.finished_batches():
            log.info("batch %s finished: %s", batch.id, batch.counts)
            if self.notifier is not None and batch.done + batch.failed:
                with contextlib.suppress(Exception):
                    self.notifier.batch_done(batch.done, batch.failed, batch.cancelled, batch.error)

    def _queue_corrupt(self, moved_to: Path) -> None:
        if self.notifier is not None:
            with contextlib.suppress(Exception):
                self.notifier.queue_corrupt(moved_to)

    def _shutdown(self) -> None:
        workers, self.workers = list(self.workers.values()), {}
        for worker, _dispatcher in workers:
            worker.stop()
        if workers:
            # drain what the workers said on the way out (its job's "cancelled" -> requeued)
            while True:
                try:
                    item = self._events.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    self._handle(*item)
        if self.current is not None:
            with contextlib.suppress(Exception):
                self.queue.requeue(self.current, "vidtray stopped while it ran")
            self.current = self.current_executor = None

    def _relay(self, event: AnyEvent) -> None:
        try:
            self.on_event(event)
        except Exception:
            log.exception("on_event callback failed for %s", event.NAME)


def _prompt_of(result: VideoResult) -> str:
    sidecar = result.get("sidecar")
    try:
        doc = json.loads(Path(sidecar).read_text(encoding="utf-8")) if sidecar else {}
        return str(doc.get("prompt", ""))
    except (OSError, ValueError, AttributeError):
        return ""
