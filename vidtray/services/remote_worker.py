"""A vidtray GPU server as a worker: the same interface as a worker process, so ``vidtray generate --on
remote`` and the :class:`~vidtray.services.supervisor.Supervisor` run remote jobs through the same
:class:`~vidtray.services.worker_process.JobDispatcher` as local ones (events in, one outcome per job).

:class:`RemoteWorker` runs its jobs one at a time on a thread of its own: it submits the request (with the
desktop's defaults filled in, so the server makes what this machine would), relays the server's events
(download, loading, progress, warnings) with this machine's job id, and turns the server's outcome into this
machine's: a finished video is downloaded into ``.partial/``, checked against the server's size and sha256,
given its sidecar (which says which server, slot and device made it), renamed into the videos folder and added
to the library -- the same end a local job has. The job is then deleted on the server.

What goes wrong on the way is retried, within bounds: a broken event stream is resumed where it stopped
(``after=N``), a server that cannot be reached is asked again with a growing pause for up to ``retry_s`` since
it last answered, and a job the server forgot (it restarted) is submitted again, at most ``max_submits`` times
in all. A refused token, a request the server refuses and a certificate the pinned CA did not sign are not
retried. Nothing here imports torch or Ray.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Literal, TypeVar

from vidtray import params
from vidtray.config import Config, Generation
from vidtray.errors import OperationFailed, UserError, first_line
from vidtray.services import generation as gen
from vidtray.services.protocol import (
    Cancelled,
    Done,
    Failed,
    Outcome,
    VideoResult,
    WarningEvent,
    WorkerEvent,
    WorkerExit,
)
from vidtray.services.records import JsonObject
from vidtray.services.remote import (
    BadRequest,
    Damaged,
    RemoteClient,
    RemoteError,
    RemoteJob,
    UnknownJob,
    Unreachable,
)
from vidtray.services.worker.partials import land
from vidtray.services.worker_process import EventSink

log = logging.getLogger("vidtray.remote")

#: How long a server may stay silent (unreachable, or its stream broken) before the job fails.
RETRY_S = 300.0
#: Submits of one job in all (the first and the ones after a restarted server forgot it), as the queue's
#: MAX_ATTEMPTS bounds a local job's tries.
MAX_SUBMITS = 3
BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
#: Events that matter on this side (the rest are the server's business).
RELAYED = ("download", "loading", "loaded", "job_started", "progress", "warning")


T = TypeVar("T")


class _Stopped(Exception):
    """The worker was stopped while a job waited on the server."""


def check_remote_request(request: gen.Request) -> None:
    """UserError for a request that cannot run on a server: a model that is a folder on this machine."""
    from vidtray.services.hub import looks_like_path

    if request.model and looks_like_path(request.model):
        raise UserError(f"--model {request.model}: a folder on this machine cannot be used on the server; "
                        "give a Hugging Face repo id (the server downloads it into its own cache)")


def remote_request(cfg: Config, request: JsonObject) -> JsonObject:
    """The request as this machine would run it: its model and the ``[generation]`` values its user changed
    (the server's own config would fill the rest otherwise), and no device (the server's slot decides)."""
    out = dict(request)
    if not out.get("model"):
        out["model"] = cfg.model
    builtin = Generation()
    for name in params.CONFIG_KEYS:
        configured = getattr(cfg.generation, name)
        # The same rule as generation.resolve_params: a [generation] value counts when it is not the default.
        if out.get(name) is None and configured != getattr(builtin, name):
            out[name] = configured
    out["device"] = None
    return out


class RemoteWorker:
    """The server as a worker (see the module docstring). ``on_event`` is called from this worker's thread,
    ending with ``WorkerExit`` after :meth:`stop`."""

    def __init__(self, on_event: EventSink, cfg: Config, *, client: RemoteClient | None = None,
                 retry_s: float = RETRY_S, max_submits: int = MAX_SUBMITS) -> None:
        self.on_event = on_event
        self.cfg = cfg
        self.client = client if client is not None else RemoteClient.from_config(cfg.remote)
        self.retry_s = retry_s
        self.max_submits = max_submits
        self._jobs: queue.Queue[tuple[str, JsonObject] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._mu = threading.Lock()
        self._cancelled: set[str] = set()
        self._current: str | None = None
        self._server_id: str | None = None

    # -- the worker interface
    @property
    def pid(self) -> int | None:
        return None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="remote-worker", daemon=True)
        self._thread.start()

    def submit(self, job_id: str, request: JsonObject, origin: Literal["cli"] | None = None) -> bool:
        if self._stopping.is_set():
            return False
        self._jobs.put((job_id, request))
        return True

    def cancel(self, job_id: str | None = None) -> bool:
        with self._mu:
            job_id = job_id or self._current
            if job_id is None:
                return False
            self._cancelled.add(job_id)
            server_id = self._server_id if job_id == self._current else None
        self._wake.set()
        if server_id is not None:
            # Now, not when the stream next speaks (a queued job on the server sends only keep-alives).
            threading.Thread(target=self._cancel_on_server, args=(server_id,), name="remote-cancel",
                             daemon=True).start()
        return True

    def ask_exit(self, cancel: bool = False) -> bool:
        """No more jobs: end after the ones submitted (``cancel``: cancel the running one first)."""
        if cancel:
            self.cancel()
        self._stopping.set()
        self._jobs.put(None)
        return True

    def interrupt(self) -> None:
        self.cancel()

    def kill(self) -> None:
        self.ask_exit(cancel=True)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Cancel the running job (on the server too) and end; its outcome comes first."""
        self.ask_exit(cancel=True)
        if self._thread is not None:
            self._thread.join(timeout)
        return 0

    def stderr_tail(self) -> list[str]:
        return []

    # -- the thread
    def _run(self) -> None:
        try:
            while True:
                item = self._jobs.get()
                if item is None:
                    if self._stopping.is_set():
                        break
                    continue
                job_id, request = item
                self.on_event(self._job(job_id, request))
        finally:
            self.client.close()
            self.on_event(WorkerExit(code=0, pid=None))

    def _job(self, job_id: str, request: JsonObject) -> Outcome:
        with self._mu:
            if job_id in self._cancelled:
                self._cancelled.discard(job_id)
                return Cancelled(job=job_id)
            self._current = job_id
        try:
            return self._attempts(job_id, remote_request(self.cfg, request))
        except _Stopped:
            return Cancelled(job=job_id)
        except (BadRequest, UserError) as exc:
            return Failed(job=job_id, error=str(exc), kind="user")
        except (RemoteError, OperationFailed) as exc:
            return Failed(job=job_id, error=str(exc), kind="failed")
        except Exception as exc:  # a bug: one line out, the traceback to the log
            log.exception("remote job %s failed", job_id)
            return Failed(job=job_id, error=f"remote generation failed: {type(exc).__name__}: {first_line(exc)}")
        finally:
            with self._mu:
                self._current = self._server_id = None
                self._cancelled.discard(job_id)

    def _attempts(self, job_id: str, request: JsonObject) -> Outcome:
        started = time.perf_counter()
        for attempt in range(1, self.max_submits + 1):
            key = f"{job_id}-{attempt}"
            server_job = self._retrying(job_id, lambda: self.client.submit(request, key=key))  # noqa: B023
            with self._mu:
                self._server_id = server_job.id
                cancelled = job_id in self._cancelled
            if cancelled:
                self._cancel_on_server(server_job.id)
            try:
                outcome = self._follow(job_id, server_job.id)
                if isinstance(outcome, Done):
                    outcome = self._fetch(job_id, server_job.id, outcome, started)
            except UnknownJob:
                log.warning("the server forgot job %s (server job %s; restarted?): submitting it again",
                            job_id, server_job.id)
                continue
            self._forget(server_job.id)
            return outcome
        return Failed(job=job_id, error=f"{self.client.url} lost the job {self.max_submits} times (it restarted "
                                        "while the job ran?)")

    def _follow(self, job_id: str, server_id: str) -> Outcome:
        """The server job's events, relayed, until its outcome (resuming a broken stream)."""
        after = 0
        last_contact = time.monotonic()
        failures = 0
        while True:
            try:
                for seq, event in self.client.events(server_id, after):
                    after, last_contact, failures = seq, time.monotonic(), 0
                    mine = _as_job(event, job_id)
                    if isinstance(mine, Done | Failed | Cancelled):
                        return mine
                    if mine.NAME in RELAYED:
                        self.on_event(mine)
                # The stream ended without an outcome (the server closed it): ask again, after a pause if
                # that keeps happening.
                raise Unreachable(f"{self.client.url} ended the event stream of job {server_id} early")
            except Unreachable as exc:
                if exc.certificate:
                    raise
                if self._given_up(job_id):
                    return Cancelled(job=job_id)
                failures = self._pause(exc, failures, last_contact)

    def _fetch(self, job_id: str, server_id: str, done: Done, started: float) -> Done:
        info = self._retrying(job_id, lambda: self.client.job(server_id), cancellable=False)
        result = place_video(self.cfg, self.client, info, done.result,
                             lambda message: self.on_event(WarningEvent(message=message, job=job_id)),
                             retry=lambda fn: self._retrying(job_id, fn, cancellable=False))
        result["seconds"] = round(time.perf_counter() - started, 3)
        return Done(job=job_id, result=result)

    # -- retrying
    def _retrying(self, job_id: str, fn: Callable[[], T], *, cancellable: bool = True) -> T:
        last_contact = time.monotonic()
        failures = 0
        while True:
            try:
                return fn()
            except Unreachable as exc:
                if exc.certificate:
                    raise
                if cancellable and self._given_up(job_id):
                    raise _Stopped() from None
                failures = self._pause(exc, failures, last_contact)

    def _pause(self, exc: Unreachable, failures: int, last_contact: float) -> int:
        silent = time.monotonic() - last_contact
        if silent > self.retry_s:
            raise Unreachable(f"{exc} (for {silent:.0f} s; giving up)") from None
        delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
        (log.info if failures == 0 else log.debug)("%s; trying again in %.1f s", exc, delay)
        self._wake.clear()
        self._wake.wait(delay)
        return failures + 1

    def _given_up(self, job_id: str) -> bool:
        """Whether to stop waiting for an absent server: this job was cancelled (the server, when it comes
        back, finishes or cancels the job, and drops it when it expires there)."""
        with self._mu:
            return job_id in self._cancelled

    def _cancel_on_server(self, server_id: str) -> None:
        try:
            self.client.cancel(server_id)
        except (RemoteError, OSError) as exc:
            log.info("could not cancel server job %s now: %s", server_id, exc)

    def _forget(self, server_id: str) -> None:
        """The server deletes the job and its files (it would after a day anyway)."""
        try:
            self.client.delete(server_id)
        except (RemoteError, OSError) as exc:
            log.info("could not delete server job %s: %s", server_id, exc)


def _as_job(event: WorkerEvent, job_id: str) -> WorkerEvent:
    """The server's event about its job, as one about this machine's job."""
    if getattr(event, "job", None) is not None:
        changed: WorkerEvent = dataclasses.replace(event, job=job_id)  # type: ignore[arg-type]
        return changed
    return event


# -- the finished video on this machine ---------------------------------------------------------------------


def _params_of(doc: JsonObject, result: VideoResult) -> gen.Params:
    """The parameters the server's sidecar records (its result where the sidecar has none)."""
    merged: dict[str, object] = {**result, **doc}

    def text(key: str) -> str:
        value = merged.get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"no {key}")
        return value

    def number(key: str) -> float:
        value = merged.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key} is not a number")
        return value

    negative = merged.get("negative_prompt")
    try:
        return gen.Params(prompt=text("prompt"), negative_prompt=negative if isinstance(negative, str) and negative
                          else None, model=text("model"), frames=int(number("frames")), steps=int(number("steps")),
                          height=int(number("height")), width=int(number("width")), fps=float(number("fps")),
                          seed=int(number("seed")))
    except ValueError as exc:
        raise OperationFailed(f"the server's sidecar is not a vidtray server's ({exc})") from None


def place_video(cfg: Config, client: RemoteClient, job: RemoteJob, result: VideoResult,
                warn: Callable[[str], None], retry: Callable[[Callable[[], None]], None] | None = None) -> VideoResult:
    """Download a finished server job into ``.partial/``, check it, write its sidecar, rename it into the
    videos folder and add it to the library; this machine's result. Nothing is left in the videos folder
    when it fails."""
    files = job.files
    if "video" not in files:
        raise OperationFailed(f"the server has no video for job {job.id}")
    doc: JsonObject = {}
    if "sidecar" in files:
        raw = client.fetch_bytes(job.id, "sidecar", files["sidecar"])
        loaded = json.loads(raw)
        doc = loaded if isinstance(loaded, dict) else {}
    p = _params_of(doc, result)
    raw_slot = job.doc.get("slot")
    slot: JsonObject = raw_slot if isinstance(raw_slot, dict) else {}
    doc = {**doc, "remote": {"server": client.url, "job": job.id, **{k: v for k, v in slot.items() if k != "server"}}}
    stem = gen.video_stem(p, datetime.now().astimezone().timestamp(), cfg.videos_dir)

    def fetch(partial: Path) -> None:
        for attempt in (1, 2):
            try:
                (retry or (lambda fn: fn()))(lambda: client.download(job.id, "video", partial, files["video"]))
                return
            except Damaged as exc:  # once more from the start (the damaged file is gone)
                if attempt == 2:
                    raise
                log.warning("%s; fetching it again", exc)

    final, side, _ = land(cfg.partial_dir, cfg.videos_dir, stem, fetch, lambda: doc)
    library_id = add_to_library(cfg, final, doc, p, warn)
    out: VideoResult = {**result, "path": str(final), "sidecar": str(side), "seed": p.seed, "model": p.model,
                        "frames": p.frames, "height": p.height, "width": p.width, "fps": p.fps, "steps": p.steps,
                        "library_id": library_id}
    return out


def add_to_library(cfg: Config, video: Path, doc: JsonObject, p: gen.Params, warn: Callable[[str], None]) -> str | None:
    """The library item for a video fetched from a server (a thumbnail made from the file); its id. A failure is
    a warning, not fatal: the video and its sidecar are in place for the watcher."""
    try:
        from vidtray.services.library import open_library
        from vidtray.services.media import make_thumbnail

        duration = round(p.frames / p.fps, 3)
        thumb = make_thumbnail(video, cfg.thumbnails_dir, duration)
        item = open_library(cfg).add_video(
            video, prompt=p.prompt, model=p.model, seed=p.seed, created=doc.get("created"), source="generated",
            fps=p.fps, width=p.width, height=p.height, duration_s=duration, size_bytes=video.stat().st_size,
            codec="h264", thumbnail=str(thumb) if thumb else None, status="ready")
        item_id = item.get("id") if isinstance(item, dict) else None
        return item_id if isinstance(item_id, str) else None
    except Exception as exc:
        log.warning("could not add %s to the library: %s", video, exc, exc_info=True)
        warn(f"video saved, but library.json was not updated: {first_line(exc)}")
        return None
