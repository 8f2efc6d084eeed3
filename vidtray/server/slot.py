"""One slot of a GPU server: one GPU (or one CPU slot) running today's worker process as its child.

:class:`Slot` is a plain class; :mod:`vidtray.server.service` makes it a Ray actor (``num_gpus=1`` for a GPU,
restarted when its process dies; threaded, so ``cancel`` and ``info`` answer while ``run`` streams). The
worker child is the same ``python -m vidtray.services.worker`` a desktop runs, spoken to through the same
:class:`~vidtray.services.worker_process.WorkerProcess` and :class:`~vidtray.services.worker_process.JobDispatcher`,
so it keeps the model loaded between jobs, unloads after ``keep_alive_s`` idle, reports progress and cancels
within a step. It runs with ``--no-library`` in the slot's own work folder: the server keeps each finished
video and its sidecar only until a desktop fetched them.

A GPU slot sees only its GPU (Ray sets ``CUDA_VISIBLE_DEVICES`` for the actor, and the worker inherits it),
so the worker's ``cuda`` is that card. Nothing here imports Ray or torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vidtray.paths import Paths, disk_usage, hf_cache_dir
from vidtray.services.fsutil import atomic_write_text, private_dir
from vidtray.services.protocol import (
    AnyEvent,
    Cancelled,
    Done,
    Download,
    Failed,
    Loading,
    Outcome,
    Progress,
    WarningEvent,
)
from vidtray.services.records import JsonObject
from vidtray.services.worker.partials import remove_partials_of
from vidtray.services.worker_process import JobDispatcher, WorkerListener, WorkerProcess, worker_command

log = logging.getLogger("vidtray.server")

CHUNK = 1 << 20
MODELS_TTL_S = 60.0


@dataclass(frozen=True)
class SlotSpec:
    """What a slot needs to know, made by ``vidtray server up`` (picklable: it travels to the actor)."""

    index: int
    #: What the worker is told to use: ``cuda`` (this slot's GPU) or ``cpu``.
    device: str
    #: The slot's own folder: its worker's data folder (videos until fetched) and settings file.
    work_dir: str
    #: The worker's settings (TOML): the server config's model, offload and disk limits.
    config_text: str
    keep_alive_s: float
    #: Environment for the worker on top of the actor's (the server's Hugging Face cache, ...).
    env: tuple[tuple[str, str], ...] = ()
    #: Another worker program that speaks the protocol (tests: the fake worker); default the real one.
    worker_cmd: tuple[str, ...] | None = None


class _Relay(WorkerListener):
    """The dispatcher's calls -> the slot's event queue (on the worker's reader thread)."""

    def __init__(self, out: queue.Queue[AnyEvent]) -> None:
        self.out = out

    def progress(self, event: Progress) -> None:
        self.out.put(event)

    def download(self, event: Download) -> None:
        self.out.put(event)

    def loading(self, event: Loading) -> None:
        self.out.put(event)

    def warning(self, event: WarningEvent) -> None:
        self.out.put(event)

    def outcome(self, outcome: Outcome, *, worker_died: bool) -> None:
        self.out.put(outcome)


class Slot:
    """Runs one job at a time on its worker child; see the module docstring."""

    def __init__(self, spec: SlotSpec) -> None:
        self.spec = spec
        os.environ.update(dict(spec.env))  # this process is the slot's own: its cache is the worker's
        self.work = private_dir(Path(spec.work_dir))
        self.data_dir = self.work / "data"
        self.paths = Paths.of(self.data_dir)
        self.config_file = self.work / "worker.toml"
        atomic_write_text(self.config_file, spec.config_text)
        self.node = socket.gethostname()
        self.device_name = _device_name(spec.device)
        self.current: str | None = None
        self.jobs_done = 0
        self._events: queue.Queue[AnyEvent] = queue.Queue()
        self._worker: WorkerProcess | None = None
        self._dispatcher: JobDispatcher | None = None
        self._cancelled: set[str] = set()
        self._run_lock = threading.Lock()  # one job at a time
        self._mu = threading.Lock()
        self._models: tuple[float, list[str]] | None = None
        log.info("slot %d ready on %s (%s, %s)", spec.index, self.node, spec.device, self.device_name)

    # -- jobs
    def run(self, job_id: str, request: JsonObject) -> Iterator[JsonObject]:
        """Run one job; yields its events as JSON (the protocol's), the last one its outcome. A Done carries
        ``files`` (each file's path, size and sha256) and ``slot`` (where it ran)."""
        with self._run_lock:
            with self._mu:
                if job_id in self._cancelled:
                    self._cancelled.discard(job_id)
                    yield Cancelled(job=job_id).to_json()
                    return
                self.current = job_id
            try:
                yield from self._run(job_id, request)
            finally:
                with self._mu:
                    self.current = None
                    self._cancelled.discard(job_id)
                self.jobs_done += 1

    def _run(self, job_id: str, request: JsonObject) -> Iterator[JsonObject]:
        while not self._events.empty():  # what an earlier worker said after its last job (its exit)
            self._events.get_nowait()
        worker, dispatcher = self._ensure_worker()
        dispatcher.submitted(job_id)
        # Where a job runs is the server's choice: this slot's device, whatever the desktop had.
        worker.submit(job_id, {**request, "device": self.spec.device})  # a dead worker: its exit fails the job
        with self._mu:
            if job_id in self._cancelled:  # cancelled while its worker was starting
                worker.cancel(job_id)
        while True:
            event = self._events.get()
            if isinstance(event, Done | Failed | Cancelled):
                if event.job != job_id:
                    continue
                if isinstance(event, Failed) and event.kind == "crash":
                    remove_partials_of(self.paths.partial_dir, worker.pid)
                yield self._outcome(event)
                return
            if getattr(event, "job", None) == job_id:
                yield event.to_json()

    def cancel(self, job_id: str) -> bool:
        """Cancel ``job_id``: the running one within a step; one not started yet when it arrives."""
        with self._mu:
            worker = self._worker
            if self.current == job_id and worker is not None:
                return worker.cancel(job_id)
            self._cancelled.add(job_id)
            return False

    def _ensure_worker(self) -> tuple[WorkerProcess, JobDispatcher]:
        if self._worker is not None and self._dispatcher is not None and self._worker.alive():
            return self._worker, self._dispatcher
        dispatcher = JobDispatcher(_Relay(self._events))
        env = {**os.environ, "VIDTRAY_DATA_DIR": str(self.data_dir)}
        env.pop("VIDTRAY_CONFIG", None)
        cmd = list(self.spec.worker_cmd) if self.spec.worker_cmd else \
            worker_command(str(self.config_file), self.spec.keep_alive_s, library=False)
        worker = WorkerProcess(dispatcher.dispatch, cmd=cmd, env=env, new_session=True)
        worker.start()
        with self._mu:
            self._worker, self._dispatcher = worker, dispatcher
        return worker, dispatcher

    def _outcome(self, event: Outcome) -> JsonObject:
        doc = event.to_json()
        if isinstance(event, Done):
            files: JsonObject = {}
            for name, key in (("video", "path"), ("sidecar", "sidecar")):
                raw = event.result.get(key)
                path = self._inside(str(raw)) if raw else None
                if path is not None and path.is_file():
                    files[name] = {"path": str(path), **_size_and_hash(path)}
            doc["files"] = files
            doc["slot"] = self.describe()
        return doc

    # -- files
    def read(self, path: str, offset: int, size: int = CHUNK) -> bytes:
        """``size`` bytes of a file in this slot's folder from ``offset`` (b"" at its end)."""
        file = self._inside(path)
        if file is None:
            raise PermissionError(f"{path} is not a slot file")
        with file.open("rb") as fh:
            fh.seek(offset)
            return fh.read(min(size, CHUNK))

    def remove(self, paths: list[str]) -> int:
        """Delete finished files of this slot (a job the desktop fetched, cancelled or forgot)."""
        removed = 0
        for raw in paths:
            file = self._inside(raw)
            if file is not None:
                with contextlib.suppress(FileNotFoundError):
                    file.unlink()
                    removed += 1
        return removed

    def _inside(self, path: str) -> Path | None:
        """``path`` when it is a file under this slot's data folder (after resolving links), else None."""
        try:
            real = Path(path).resolve()
            real.relative_to(self.data_dir.resolve())
        except (ValueError, OSError):
            return None
        return real

    # -- state
    def describe(self) -> JsonObject:
        return {"index": self.spec.index, "device": self.spec.device, "device_name": self.device_name,
                "node": self.node}

    def info(self, detail: bool = False) -> JsonObject:
        worker = self._worker
        out: JsonObject = {**self.describe(), "job": self.current, "jobs_done": self.jobs_done,
                           "worker_pid": worker.pid if worker is not None and worker.alive() else None}
        if detail:
            out["models"] = self._cached_models()
            out["disk"] = {role: _free(path) for role, path in (("work", self.work), ("models", hf_cache_dir()))}
        return out

    def _cached_models(self) -> list[str]:
        import time

        now = time.monotonic()
        if self._models is None or now - self._models[0] > MODELS_TTL_S:
            from vidtray.services.hub import cached_pipelines

            repos, _warnings = cached_pipelines(hf_cache_dir())
            self._models = (now, [r.repo_id for r in repos])
        return self._models[1]

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(timeout=10)


def _size_and_hash(path: Path) -> JsonObject:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def _free(path: Path) -> JsonObject:
    usage = disk_usage(path)
    return {"path": str(path), "free_bytes": usage[0] if usage else None, "total_bytes": usage[1] if usage else None}


def _device_name(device: str) -> str:
    """The GPU's name (``nvidia-smi``, which sees only this slot's card), else the device itself."""
    if device != "cuda":
        return device
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return device
    try:
        out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10, check=False).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return device
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    # nvidia-smi lists every card; the first visible one is this slot's.
    index = int(visible.split(",")[0]) if visible.split(",")[0].isdigit() else 0
    return out[index].strip() if index < len(out) else (out[0].strip() if out else device)
