"""The jobs of a GPU server: a queue over its slots, each job's events kept for a resumable stream, and its
files until a desktop fetched them.

:class:`JobBoard` is a plain class; :mod:`vidtray.server.service` makes it an async Ray actor that the HTTPS
ingress calls. A job lives here, not in an HTTP request: a desktop that loses its connection (which cancels a
Serve request) reconnects and reads the events it missed (``events(after=N)``); a job whose desktop never
comes back is removed with its files after ``keep_finished_s``.

Every method takes ``owner`` (the name of the token the request came with): a job is seen, cancelled, fetched
and deleted only by the token that submitted it (anyone else gets "unknown job", as for an id that never was).
Jobs wait in submission order for the first free slot; one slot runs one job at a time (its worker keeps the
model loaded for the next).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from vidtray import __version__
from vidtray.params import Source
from vidtray.services.protocol import Cancelled, Failed
from vidtray.services.records import JsonObject

log = logging.getLogger("vidtray.server")

FINAL = ("done", "failed", "cancelled")
OUTCOMES = {"done": "done", "failed": "failed", "cancelled": "cancelled"}


class UnknownJob(KeyError):
    """No such job for this owner."""


class TooManyJobs(Exception):
    """The owner has too many unfinished jobs."""


@dataclass
class ServerJob:
    id: str
    owner: str
    key: str
    request: JsonObject
    created: float = field(default_factory=time.time)
    state: str = "queued"
    started: float | None = None
    slot: int | None = None
    slot_info: JsonObject | None = None
    files: dict[str, JsonObject] = field(default_factory=dict)
    error: str | None = None
    finished: float | None = None
    cancel_requested: bool = False
    delete_requested: bool = False
    events: list[JsonObject] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def public(self) -> JsonObject:
        """What a desktop sees (no server paths)."""
        return {"id": self.id, "state": self.state, "created": self.created, "started": self.started,
                "finished": self.finished,
                "slot": self.slot_info, "error": self.error, "events": len(self.events),
                "files": {name: {"size": f["size"], "sha256": f["sha256"]} for name, f in self.files.items()}}


class JobBoard:
    """See the module docstring. ``slot_names``: the slot actors' names in ``namespace``, in index order."""

    def __init__(self, slot_names: list[str], namespace: str, *, label: str = "", max_unfinished: int = 100,
                 keep_finished_s: float = 86400.0) -> None:
        import ray

        # By name, not by handle: a restarted board finds them again (handles would be arguments Ray must keep).
        self.slots: list[Any] = [ray.get_actor(name, namespace=namespace) for name in slot_names]
        self.label = label
        self.max_unfinished = max_unfinished
        self.keep_finished_s = keep_finished_s
        self.jobs: dict[str, ServerJob] = {}
        self._free: list[int] = list(range(len(self.slots)))
        self._waiting: collections.deque[ServerJob] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_sweep = time.monotonic()

    # -- the API the ingress calls
    async def submit(self, owner: str, key: str, request: JsonObject) -> JsonObject:
        """Queue a job (202 for the ingress). The same ``key`` from the same owner returns the job it made
        before (a retried submit after a lost answer runs once). UserError for a request the schema refuses."""
        from vidtray.services.generation import Request

        self._sweep()
        for job in self.jobs.values():
            if key and job.owner == owner and job.key == key:
                return job.public()
        job_id = uuid.uuid4().hex
        checked = Request.from_dict(request, Source.job(job_id[:12])).as_dict()
        unfinished = sum(1 for j in self.jobs.values() if j.owner == owner and j.state not in FINAL)
        if unfinished >= self.max_unfinished:
            raise TooManyJobs(f"{owner} has {unfinished} unfinished jobs here (at most {self.max_unfinished})")
        job = ServerJob(id=job_id, owner=owner, key=key, request=checked)
        self.jobs[job.id] = job
        self._waiting.append(job)
        log.info("job %s from %s queued (%d waiting)", job.id, owner, len(self._waiting))
        self._dispatch()
        return job.public()

    async def status(self, owner: str, job_id: str) -> JsonObject:
        return self._get(owner, job_id).public()

    async def events(self, owner: str, job_id: str, after: int, wait_s: float) -> tuple[list[JsonObject], bool]:
        """The job's events after seq ``after`` (waiting up to ``wait_s`` for one), and whether the stream is
        complete (its outcome is among what was sent)."""
        job = self._get(owner, job_id)
        if len(job.events) <= after and job.state not in FINAL and wait_s > 0:
            job.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.changed.wait(), wait_s)
        batch = job.events[max(0, after):]
        return batch, job.state in FINAL and after + len(batch) >= len(job.events)

    async def cancel(self, owner: str, job_id: str) -> JsonObject:
        job = self._get(owner, job_id)
        await self._cancel(job)
        return job.public()

    async def delete(self, owner: str, job_id: str) -> None:
        """Forget the job and remove its files (a running one is cancelled first; it goes when it ends)."""
        job = self._get(owner, job_id)
        if job.state in FINAL:
            await self._forget(job)
        else:
            job.delete_requested = True
            await self._cancel(job)

    async def file(self, owner: str, job_id: str, which: str) -> JsonObject:
        """{size, sha256} of a finished job's file (UnknownJob when it has none)."""
        job = self._get(owner, job_id)
        info = job.files.get(which)
        if job.state != "done" or info is None:
            raise UnknownJob(f"job {job_id} has no {which}")
        return {"size": info["size"], "sha256": info["sha256"]}

    async def read(self, owner: str, job_id: str, which: str, offset: int, size: int) -> bytes:
        job = self._get(owner, job_id)
        info = job.files.get(which)
        if job.state != "done" or info is None or job.slot is None:
            raise UnknownJob(f"job {job_id} has no {which}")
        data: bytes = await self.slots[job.slot].read.remote(info["path"], offset, size)
        return data

    async def health(self, detail: bool = False) -> JsonObject:
        async def one(index: int, slot: Any) -> JsonObject:
            try:
                info: JsonObject = await asyncio.wait_for(slot.info.remote(detail), 10.0)
                return info
            except Exception as exc:  # a slot restarting after its process died
                return {"index": index, "state": "unavailable", "error": f"{type(exc).__name__}: {exc}"[:300]}

        slots = await asyncio.gather(*(one(i, s) for i, s in enumerate(self.slots)))
        return {"ok": True, "version": __version__, "server": self.label, "slots": list(slots),
                "queued": len(self._waiting),
                "running": sum(1 for j in self.jobs.values() if j.state == "running"),
                "jobs": len(self.jobs)}

    # -- running jobs
    def _dispatch(self) -> None:
        while self._free and self._waiting:
            job = self._waiting.popleft()
            slot = self._free.pop(0)
            job.state, job.slot, job.started = "running", slot, time.time()
            task = asyncio.get_running_loop().create_task(self._run(job, slot), name=f"job-{job.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job: ServerJob, slot: int) -> None:
        import ray.exceptions

        try:
            stream = self.slots[slot].run.options(num_returns="streaming").remote(job.id, job.request)
            async for ref in stream:
                self._append(job, await ref)
        except ray.exceptions.RayActorError as exc:
            log.error("slot %d died during job %s: %s", slot, job.id, exc)
            self._append(job, Failed(job=job.id, kind="crash",
                                     error=f"the server's slot {slot} died during the job (it restarts): "
                                           f"{str(exc).splitlines()[0][:200]}").to_json())
        except Exception as exc:
            log.exception("job %s failed on slot %d", job.id, slot)
            self._append(job, Failed(job=job.id, error=f"the server failed: {type(exc).__name__}: {exc}"[:400]
                                     ).to_json())
        finally:
            if job.state not in FINAL:
                self._append(job, Failed(job=job.id, error="the slot ended the job without an outcome").to_json())
            self._free.append(slot)
            self._free.sort()
            if job.delete_requested:
                await self._forget(job)
            self._dispatch()

    async def _cancel(self, job: ServerJob) -> None:
        if job.state in FINAL:
            return
        job.cancel_requested = True
        if job.state == "queued":
            with contextlib.suppress(ValueError):
                self._waiting.remove(job)
            self._append(job, Cancelled(job=job.id).to_json())
            if job.delete_requested:
                await self._forget(job)
        elif job.slot is not None:
            with contextlib.suppress(Exception):
                await self.slots[job.slot].cancel.remote(job.id)

    def _append(self, job: ServerJob, doc: JsonObject) -> None:
        if job.state in FINAL:
            return  # one outcome per job
        name = doc.get("event")
        if name in OUTCOMES:
            files = doc.pop("files", None)
            slot_info = doc.pop("slot", None)
            if isinstance(files, dict):
                job.files = {k: v for k, v in files.items() if isinstance(v, dict)}
            if isinstance(slot_info, dict):
                job.slot_info = {**slot_info, "server": self.label}
            if name == "done" and "video" not in job.files:
                name, doc = "failed", Failed(job=job.id, error="the worker reported a video the server cannot "
                                                               "find").to_json()
            job.state = OUTCOMES[str(name)]
            job.error = doc.get("error") if name == "failed" else None
            job.finished = time.time()
        doc["seq"] = len(job.events) + 1
        job.events.append(doc)
        job.changed.set()

    async def _forget(self, job: ServerJob) -> None:
        self.jobs.pop(job.id, None)
        paths = [f["path"] for f in job.files.values() if isinstance(f.get("path"), str)]
        if paths and job.slot is not None:
            with contextlib.suppress(Exception):
                await self.slots[job.slot].remove.remote(paths)
        job.files = {}
        job.changed.set()

    def _sweep(self) -> None:
        """Finished jobs nobody fetched within ``keep_finished_s`` go, with their files."""
        now = time.monotonic()
        if now - self._last_sweep < 60:
            return
        self._last_sweep = now
        cutoff = time.time() - self.keep_finished_s
        for job in [j for j in self.jobs.values() if j.finished is not None and j.finished < cutoff]:
            log.info("job %s of %s was never fetched; removing it", job.id, job.owner)
            task = asyncio.get_running_loop().create_task(self._forget(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _get(self, owner: str, job_id: str) -> ServerJob:
        job = self.jobs.get(job_id)
        if job is None or job.owner != owner:
            raise UnknownJob(f"no job {job_id} here (a restarted server forgets its jobs)")
        return job

