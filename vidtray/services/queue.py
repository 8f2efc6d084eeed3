"""The persistent queue of generation jobs: one JSON file per job under ``<data_dir>/queue/``.

Every change is a read-modify-write under one file lock (``queue/.lock``) and lands by atomic replace,
so the tray, ``vidtray watch`` and ``vidtray queue`` can all use it at once and a crash never leaves a
torn file. States: queued -> running -> done | failed | cancelled. A job whose owner process died while
running goes back to queued on the next start (a bounded number of times), so jobs survive restarts.
The pause flag ``paused.json`` (written by the disk-space job) stops new jobs from being claimed.

Jobs are :class:`~vidtray.services.jobrecord.Job` records. This module is the one reader of both kinds
of file: ``read_job`` (a file that is not a valid job -- ``Job.from_json`` refuses it, or its id is not
its name -- the queue sets aside; the tray, which only looks, skips it) and ``read_pause_flag``.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from vidtray.config import Config
from vidtray.errors import OperationFailed, UserError
from vidtray.paths import PAUSE_FILE
from vidtray.services.fsutil import atomic_write_text, private_dir
from vidtray.services.jobrecord import FINISHED, Executor, InvalidJob, Job, JobProgress, JobState
from vidtray.services.protocol import VideoResult
from vidtray.services.records import JsonObject

log = logging.getLogger("vidtray.queue")

MAX_ATTEMPTS = 3  # a job interrupted by a dying owner is retried at most this often
KEEP_FINISHED = 200  # finished jobs kept for `queue list`; older ones are pruned


def is_job_file(name: str) -> bool:
    """True for the name of a job file in the queue folder (``<id>.json``; not the pause flag)."""
    return name.endswith(".json") and name != PAUSE_FILE


def read_job(path: Path) -> tuple[Job | None, str | None]:
    """The one reader of a job file, changing nothing: (job, None) for a valid job, (None, why) for a file
    that is not one (``Job.from_json`` refuses it, it does not parse, or its id is not its file name),
    (None, None) for a file that is gone.

    The id must be the file's name: the queue writes a job back to ``<id>.json``, so a job whose id
    differs would be claimed from its old file again and again, for ever.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({exc})"
    try:
        job = Job.from_json(doc)
    except InvalidJob as exc:
        return None, str(exc)
    if job.id != path.stem:
        return None, f"its id {job.id!r} is not its file name {path.stem!r}"
    return job, None


#: The reason shown while a pause flag exists that cannot be read or parsed.
UNREADABLE_FLAG = "paused (unreadable pause flag)"


def read_pause_flag(path: Path) -> dict[str, Any] | None:
    """The one reader of the queue's pause flag: None while it does not exist, else its document with
    ``reason`` (text) and ``since`` always there. A flag that exists but cannot be read or parsed still
    pauses the queue (someone meant to stop it): its reason is UNREADABLE_FLAG."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"reason": UNREADABLE_FLAG, "since": None}
    if not isinstance(doc, dict):
        return {"reason": "paused", "since": None}
    reason = doc.get("reason")
    return {**doc, "reason": str(reason) if reason else "paused", "since": doc.get("since")}


def write_pause_flag(path: Path, doc: dict[str, Any]) -> None:
    """Pause the queue (atomically; OSError if the flag cannot be written)."""
    private_dir(path.parent)
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def remove_pause_flag(path: Path) -> None:
    """Resume the queue (OSError if the flag cannot be removed; gone already is fine)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    import psutil

    return bool(psutil.pid_exists(pid))


class JobQueue:
    def __init__(self, queue_dir: Path, *, lock_timeout: float = 30.0) -> None:
        self.dir = Path(queue_dir)
        self._lock = FileLock(str(self.dir / ".lock"), timeout=lock_timeout)
        self._bad: set[tuple[str, str]] = set()

    # -- locking and files
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        try:
            private_dir(self.dir)
            self._lock.acquire()
        except TimeoutError as exc:  # filelock.Timeout subclasses TimeoutError
            raise OperationFailed(
                f"the job queue is locked by another process ({self.dir / '.lock'})") from exc
        except OSError as exc:
            raise OperationFailed(f"cannot use the job queue in {self.dir}: {exc.strerror or exc}") from exc
        try:
            yield
        finally:
            self._lock.release()

    def _path(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.json"

    def _read(self, path: Path) -> Job | None:
        """A job file through ``read_job``: a file that is not a valid job is set aside (never run, never
        fatal to the queue or to ``queue list``); None for it and for a file that is gone."""
        job, problem = read_job(path)
        if problem is not None:
            self._set_aside(path, problem)
        return job

    def _set_aside(self, path: Path, why: str) -> None:
        # A job file another program mangled: moved aside (kept for a person to look at), once.
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return
        except OSError as exc:
            key = (os.fspath(path), why)
            if key not in self._bad:
                self._bad.add(key)
                log.warning("job file %s is not a valid job (%s) and cannot be moved aside (%s); skipping it",
                            path, why, exc.strerror or exc)
            return
        log.warning("job file %s is not a valid job (%s); moved it to %s", path, why, aside.name)

    def _write(self, job: Job) -> Job:
        job = dataclasses.replace(job, updated=now_iso())
        path = self._path(job.id)
        try:
            atomic_write_text(path, json.dumps(job.to_json(), indent=2, ensure_ascii=False) + "\n")
        except OSError as exc:
            raise OperationFailed(f"cannot write the job queue in {self.dir}: {exc.strerror or exc}") from exc
        return job

    def _all(self) -> list[Job]:
        if not self.dir.is_dir():
            return []
        jobs = [j for p in self.dir.glob("*.json") if is_job_file(p.name) and (j := self._read(p))]
        return sorted(jobs, key=lambda j: (j.seq, j.created, j.id))

    # -- reading
    def list(self) -> list[Job]:
        """All jobs, oldest first."""
        return self._all()

    def get(self, job_id: str) -> Job:
        """A job by id or unique id prefix (UserError if none or several match)."""
        job_id = job_id.strip()
        if not job_id:
            raise UserError("a job id is needed (see `vidtray queue list`)")
        exact = self._read(self._path(job_id)) if "/" not in job_id and "\\" not in job_id else None
        if exact is not None:
            return exact
        matches = [j for j in self._all() if j.id.startswith(job_id)]
        if not matches:
            raise UserError(f"no job {job_id!r} in the queue (see `vidtray queue list`)")
        if len(matches) > 1:
            raise UserError(f"job id {job_id!r} is ambiguous: {', '.join(j.id for j in matches[:5])}")
        return matches[0]

    def paused(self) -> dict[str, Any] | None:
        """The pause flag's content while it exists (``{"reason", "since", ...}``), else None."""
        return read_pause_flag(self.dir / PAUSE_FILE)

    # -- changing
    def submit(self, request: JsonObject, *, executor: Executor | None = None) -> Job:
        """Add a job (the request is a ``generation.Request`` as a dict) and return it. ``executor``: where
        it runs (None: the config's ``executor`` when it is claimed)."""
        with self.locked():
            seq = max((j.seq for j in self._all()), default=0) + 1
            job = self._write(Job(id=uuid.uuid4().hex[:12], seq=seq, state="queued", request=request,
                                  created=now_iso(), executor=executor))
            self._prune()
        log.info("queued job %s", job.id)
        return job

    def claim_next(self, owner_pid: int | None = None, accept: Callable[[Job], bool] | None = None) -> Job | None:
        """Take the oldest queued job (state -> running, owned by ``owner_pid``), unless paused. ``accept``
        may pass over a job for now (a remote job while its server cannot be reached)."""
        with self.locked():
            if self.paused() is not None:
                return None
            for job in self._all():
                if job.state == "queued" and (accept is None or accept(job)):
                    return self._write(dataclasses.replace(
                        job, state="running", owner_pid=owner_pid or os.getpid(), started=now_iso(),
                        attempts=job.attempts + 1, progress=None, error=None))
        return None

    def update(self, job_id: str, fn: Callable[[Job], Job]) -> Job:
        """Read-modify-write one job under the lock: ``fn`` returns the changed job."""
        with self.locked():
            job = self._read(self._path(job_id))
            if job is None:
                raise UserError(f"no job {job_id!r} in the queue")
            return self._write(fn(job))

    def set_progress(self, job_id: str, progress: JobProgress) -> None:
        with contextlib.suppress(UserError):
            self.update(job_id, lambda job: dataclasses.replace(job, progress=progress))

    def finish(self, job_id: str, state: JobState, *, result: VideoResult | None = None,
               error: str | None = None) -> Job:
        if state not in FINISHED:
            raise ValueError(f"not a final state: {state}")
        return self.update(job_id, lambda job: dataclasses.replace(
            job, state=state, finished=now_iso(), result=result, error=error, owner_pid=None))

    def requeue(self, job_id: str, reason: str) -> Job:
        """Put a running job back (its owner stopped before finishing it)."""
        return self.update(job_id, lambda job: dataclasses.replace(
            _requeued(job, reason), cancel_requested=False, error=None))

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now; ask a running one to stop (its owner sees ``cancel_requested``)."""
        job_id = self.get(job_id).id  # an unknown id fails before anything is created or locked
        with self.locked():
            job = self.get(job_id)
            if job.is_finished:
                raise UserError(f"job {job.id} is already {job.state}")
            if job.state == "queued":
                job = dataclasses.replace(job, state="cancelled", finished=now_iso(),
                                          error="cancelled before it started")
            else:
                job = dataclasses.replace(job, cancel_requested=True)
            return self._write(job)

    def recover_stale(self, alive: Callable[[int | None], bool] = pid_alive) -> builtins.list[Job]:
        """Running jobs whose owner is gone: back to queued, or failed after MAX_ATTEMPTS tries."""
        changed: builtins.list[Job] = []
        with self.locked():
            for job in self._all():
                if job.state != "running" or alive(job.owner_pid):
                    continue
                if job.cancel_requested:
                    job = dataclasses.replace(job, state="cancelled", finished=now_iso(), owner_pid=None,
                                              error="cancelled (its worker had stopped)")
                elif job.attempts >= MAX_ATTEMPTS:
                    job = dataclasses.replace(
                        job, state="failed", finished=now_iso(), owner_pid=None,
                        error=f"interrupted {job.attempts} times (vidtray stopped or crashed)")
                else:
                    job = _requeued(job, "owner process gone")
                changed.append(self._write(job))
        for job in changed:
            log.info("recovered job %s -> %s", job.id, job.state)
        return changed

    def _prune(self) -> None:
        finished = [j for j in self._all() if j.is_finished]
        for job in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            with contextlib.suppress(FileNotFoundError):
                self._path(job.id).unlink()


def _requeued(job: Job, reason: str) -> Job:
    return dataclasses.replace(job, state="queued", owner_pid=None, started=None, progress=None,
                               history=(*job.history, {"at": now_iso(), "requeued": reason}))


def open_queue(cfg: Config) -> JobQueue:
    return JobQueue(cfg.queue_dir)
