"""A queued generation job as a typed record (not the scheduled jobs of ``jobs.py``).

:class:`Job` is what the queue stores and hands out, whatever it stores it in: :meth:`Job.from_json`
checks a stored document (every field's type, the state, the request being a JSON object) and
:meth:`Job.to_json` writes one back. Keys this vidtray does not know are kept (``extra``) and written back
as they were. States: queued -> running -> done | failed | cancelled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, get_args

from vidtray.services.protocol import VideoResult
from vidtray.services.records import JsonObject, from_json, to_json

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
#: Where a job runs: this machine's worker, or the ``[remote]`` GPU server.
Executor = Literal["local", "remote"]
STATES: tuple[JobState, ...] = get_args(JobState)
FINISHED: tuple[JobState, ...] = ("done", "failed", "cancelled")
FORMAT_VERSION = 1


class InvalidJob(ValueError):
    """A stored document that is not a job (the message says why)."""


@dataclass(frozen=True)
class JobProgress:
    """Where a running job is, as its supervisor last wrote it (for ``vidtray queue list`` and the tray)."""

    step: int | None = None
    steps: int | None = None
    eta: float | None = None


@dataclass(frozen=True, kw_only=True)
class Job:
    version: int = FORMAT_VERSION
    id: str
    seq: int = 0
    state: JobState
    #: A ``generation.Request`` as a JSON object; checked when the job is claimed (a request the worker
    #: cannot run fails the job with the reason rather than hiding it).
    request: JsonObject
    created: str = ""
    started: str | None = None
    finished: str | None = None
    owner_pid: int | None = None
    #: When the owner process started (``psutil.Process.create_time()``): with ``owner_pid`` it names the
    #: owner exactly, so a PID the system gave to another process (after a reboot) owns nothing.
    owner_start: float | None = None
    #: The batch this job belongs to (``vidtray queue add --count/--seeds/--prompts-file``), else None.
    batch: str | None = None
    attempts: int = 0
    cancel_requested: bool = False
    progress: JobProgress | None = None
    result: VideoResult | None = None
    error: str | None = None
    history: tuple[JsonObject, ...] = ()
    updated: str | None = None
    #: Where it runs (``--on``); None: the config's ``executor`` when it is claimed (jobs from before).
    executor: Executor | None = None
    #: Keys of the stored document this version does not know, kept as they were.
    extra: JsonObject = field(default_factory=dict)

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED

    @property
    def prompt(self) -> str:
        return str(self.request.get("prompt", ""))

    @classmethod
    def from_json(cls, doc: object) -> Job:
        """The job ``doc`` holds; InvalidJob (saying why) if it is not one."""
        if not isinstance(doc, dict):
            raise InvalidJob("not a JSON object")
        if not isinstance(doc.get("id"), str):
            raise InvalidJob(f"its id {doc.get('id')!r} is not a string")
        if doc.get("state") not in STATES:
            raise InvalidJob(f"unknown state {doc.get('state')!r}")
        if not isinstance(doc.get("request"), dict):
            raise InvalidJob("its request is not a JSON object")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        # Older files and other writers leave attempts out or null: no attempt yet.
        values = {k: v for k, v in doc.items() if k in known and not (k == "attempts" and v is None)}
        try:
            job = from_json(cls, values)
        except ValueError as exc:
            raise InvalidJob(str(exc)) from None
        if job.seq < 0 or (job.owner_pid or 0) < 0 or job.attempts < 0:
            raise InvalidJob("seq, owner_pid or attempts is negative")
        return dataclasses.replace(job, extra={k: v for k, v in doc.items() if k not in known})

    def to_json(self) -> JsonObject:
        doc = to_json(self)
        extra = doc.pop("extra")
        if not self.history:
            del doc["history"]  # written from the first requeue on, as before
        if self.executor is None:
            del doc["executor"]
        return {**doc, **extra}

