"""The worker protocol: every command a worker reads and every event a worker or its supervisor reports.

The one place that names them. One JSON object per line; commands go to the worker's stdin::

    {"cmd": "job", "id": "…", "request": {…}, "origin": "cli" | null}
    {"cmd": "cancel", "id": "…" | null}            null: whatever runs now
    {"cmd": "exit", "cancel": false}

and events come back on its stdout as ``{"event": NAME, …fields}`` (:data:`WORKER_EVENTS`). The parent
side adds events of its own (:data:`SUPERVISOR_EVENTS`: ``worker_exit`` when the child is gone, and the
supervisor's queue news); listeners (the daemon, the tray, ``vidtray generate``) get all of them as
these same types.

Reading is tolerant: a line that is not JSON, an unknown event, a missing or mistyped field is logged and
skipped (:func:`parse_event` returns None), so a newer, older or broken worker never crashes its parent.
Fields a reader does not know are ignored. A command that cannot be read raises :class:`ProtocolError`,
naming its job when it has one, so the worker can answer that job instead of leaving it unanswered.

Standard library only: the CLI and the tray import it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal, TypedDict

from vidtray.services.records import JsonObject, from_json, to_json

log = logging.getLogger("vidtray.protocol")

#: Why a job failed: bad input (exit 2 in the CLI), an operation that failed, or its worker died.
FailureKind = Literal["user", "failed", "crash"]

EVENT_KEY = "event"
COMMAND_KEY = "cmd"


class ProtocolError(ValueError):
    """A command line that cannot be read; ``job`` is its job id when it named one."""

    def __init__(self, message: str, job: str | None = None) -> None:
        super().__init__(message)
        self.job = job


class VideoResult(TypedDict, total=False):
    """What a finished job reports (the worker fills every key; a stand-in worker may send fewer)."""

    path: str
    sidecar: str
    seed: int
    seconds: float
    model: str
    revision: str | None
    device: str
    dtype: str
    frames: int
    height: int
    width: int
    fps: float
    steps: int
    library_id: str | None
    timings: dict[str, float]
    pipeline_reused: bool
    #: decoded from the latents an earlier attempt of the job saved (no denoising this time)
    resumed_from_latents: bool


@dataclass(frozen=True)
class Message:
    """A command or an event: ``NAME`` on the wire under ``KEY``, then the dataclass fields."""

    KEY: ClassVar[str]
    NAME: ClassVar[str]

    def to_json(self) -> JsonObject:
        return {self.KEY: self.NAME, **to_json(self)}

    def to_line(self) -> str:
        """One line of JSON, no newline (``default=str``: a stray Path in a result still goes out)."""
        return json.dumps(self.to_json(), ensure_ascii=False, default=str)


# -- commands (parent -> worker) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Command(Message):
    KEY: ClassVar[str] = COMMAND_KEY


@dataclass(frozen=True)
class JobCommand(Command):
    """Run one job. ``origin="cli"``: its values came from flags, so an error names them (``--width``);
    otherwise it names the job (``job abc123: width …``)."""

    NAME: ClassVar[str] = "job"
    id: str
    request: JsonObject
    origin: Literal["cli"] | None = None


@dataclass(frozen=True)
class CancelCommand(Command):
    """Cancel a job (a queued one before it starts, the running one within a step); None: the running one."""

    NAME: ClassVar[str] = "cancel"
    id: str | None = None


@dataclass(frozen=True)
class ExitCommand(Command):
    """Leave after the current job, or cancel it first."""

    NAME: ClassVar[str] = "exit"
    cancel: bool = False


AnyCommand = JobCommand | CancelCommand | ExitCommand
COMMANDS: dict[str, type[AnyCommand]] = {c.NAME: c for c in (JobCommand, CancelCommand, ExitCommand)}


# -- events (worker -> parent) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Event(Message):
    KEY: ClassVar[str] = EVENT_KEY


@dataclass(frozen=True)
class Hello(Event):
    """The worker is up (torch imported, its parent watchdog running)."""

    NAME: ClassVar[str] = "hello"
    pid: int
    version: str = ""
    keep_alive_s: float | None = None


@dataclass(frozen=True)
class JobStarted(Event):
    """The model is loaded and denoising begins, with every parameter resolved."""

    NAME: ClassVar[str] = "job_started"
    job: str
    params: JsonObject
    device: str
    steps: int


@dataclass(frozen=True)
class Download(Event):
    """Bytes of a model download (``total`` 0 while unknown)."""

    NAME: ClassVar[str] = "download"
    job: str
    model: str
    done: int
    total: int


@dataclass(frozen=True)
class Loading(Event):
    NAME: ClassVar[str] = "loading"
    job: str
    model: str
    device: str


@dataclass(frozen=True)
class Loaded(Event):
    NAME: ClassVar[str] = "loaded"
    job: str
    model: str
    device: str
    dtype: str
    pipeline: str
    memory: JsonObject
    seconds: float


@dataclass(frozen=True)
class Progress(Event):
    """Step ``step`` of ``steps`` is done; ``eta``: seconds left for the whole job (the steps left at this pace,
    then decode and encode as this install's past runs took them)."""

    NAME: ClassVar[str] = "progress"
    job: str
    step: int
    steps: int
    elapsed: float | None = None
    eta: float | None = None


@dataclass(frozen=True)
class Done(Event):
    NAME: ClassVar[str] = "done"
    job: str
    result: VideoResult


@dataclass(frozen=True)
class Failed(Event):
    NAME: ClassVar[str] = "failed"
    job: str
    error: str
    kind: FailureKind = "failed"


@dataclass(frozen=True)
class Cancelled(Event):
    NAME: ClassVar[str] = "cancelled"
    job: str


@dataclass(frozen=True)
class WarningEvent(Event):
    """Something a person should know that did not stop the job (the library was not updated)."""

    NAME: ClassVar[str] = "warning"
    message: str
    job: str | None = None


@dataclass(frozen=True)
class ErrorEvent(Event):
    """The worker could not read a command (and it named no job to fail)."""

    NAME: ClassVar[str] = "error"
    message: str


@dataclass(frozen=True)
class Fatal(Event):
    """The worker cannot run at all (its config does not load); it exits next."""

    NAME: ClassVar[str] = "fatal"
    error: str
    kind: FailureKind = "failed"


@dataclass(frozen=True)
class Exiting(Event):
    """The worker is leaving, and why (``idle for 300s``, ``asked to exit``, ``parent process exited``)."""

    NAME: ClassVar[str] = "exit"
    reason: str


# -- events the parent side adds --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerExit(Event):
    """The worker process is gone (its stdout closed): exit code (negative: the signal) and its last
    stderr lines."""

    NAME: ClassVar[str] = "worker_exit"
    code: int | None
    pid: int | None
    stderr: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkerStarted(Event):
    NAME: ClassVar[str] = "worker_started"
    pid: int | None


@dataclass(frozen=True)
class JobQueued(Event):
    NAME: ClassVar[str] = "job_queued"
    job: str
    prompt: str | None = None


@dataclass(frozen=True)
class JobClaimed(Event):
    """The supervisor took the job from the queue and handed it to worker ``worker_pid``."""

    NAME: ClassVar[str] = "job_claimed"
    job: str
    worker_pid: int | None


@dataclass(frozen=True)
class JobRecovered(Event):
    """A job a previous run left running: queued again, or failed/cancelled (``state``)."""

    NAME: ClassVar[str] = "job_recovered"
    job: str
    state: str


@dataclass(frozen=True)
class QueuePaused(Event):
    NAME: ClassVar[str] = "queue_paused"
    reason: str


@dataclass(frozen=True)
class SupervisorError(Event):
    """A round of the supervisor's loop failed (a full disk); it retries after a backoff."""

    NAME: ClassVar[str] = "supervisor_error"
    error: str


@dataclass(frozen=True)
class SupervisorRecovered(Event):
    NAME: ClassVar[str] = "supervisor_recovered"


@dataclass(frozen=True)
class SupervisorGaveUp(Event):
    """Too many crashes in a row: no new worker until the next start; the queue keeps the jobs."""

    NAME: ClassVar[str] = "supervisor_gave_up"
    crashes: int
    reason: str


WorkerEvent = (Hello | JobStarted | Download | Loading | Loaded | Progress | Done | Failed | Cancelled
               | WarningEvent | ErrorEvent | Fatal | Exiting)
AnyEvent = (WorkerEvent | WorkerExit | WorkerStarted | JobQueued | JobClaimed | JobRecovered | QueuePaused
            | SupervisorError | SupervisorRecovered | SupervisorGaveUp)
#: How a job ended: the one event each job gets at its end.
Outcome = Done | Failed | Cancelled

#: What a worker may say on its stdout.
WORKER_EVENTS: dict[str, type[WorkerEvent]] = {c.NAME: c for c in (
    Hello, JobStarted, Download, Loading, Loaded, Progress, Done, Failed, Cancelled, WarningEvent, ErrorEvent,
    Fatal, Exiting)}
#: What only the parent side says (a worker that sends one of these is not believed).
SUPERVISOR_EVENTS: dict[str, type[AnyEvent]] = {c.NAME: c for c in (
    WorkerExit, WorkerStarted, JobQueued, JobClaimed, JobRecovered, QueuePaused, SupervisorError,
    SupervisorRecovered, SupervisorGaveUp)}


# -- reading -------------------------------------------------------------------------------------------


def parse_event(line: str, accept: Mapping[str, type[WorkerEvent]] = WORKER_EVENTS) -> WorkerEvent | None:
    """One line a worker wrote, as its event; None (logged) for anything else."""
    doc = _load(line)
    if doc is None:
        log.debug("not a protocol line: %.200s", line)
        return None
    name = doc.get(EVENT_KEY)
    cls = accept.get(name) if isinstance(name, str) else None
    if cls is None:
        log.warning("skipping an unknown worker event %r", name)
        return None
    try:
        return from_json(cls, doc)
    except ValueError as exc:
        log.warning("skipping a malformed %r event: %s", name, exc)
        return None


def parse_command(line: str) -> AnyCommand:
    """One command line; ProtocolError (naming the job when it has one) if it is not a command."""
    doc = _load(line)
    if doc is None:
        raise ProtocolError(f"bad command line: {line[:200]}")
    name = doc.get(COMMAND_KEY)
    cls = COMMANDS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ProtocolError(f"unknown command {name!r}")
    job = doc.get("id")
    try:
        return from_json(cls, doc)
    except ValueError as exc:
        raise ProtocolError(f"bad {name!r} command: {exc}", job if isinstance(job, str) else None) from None


def _load(line: str) -> JsonObject | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
