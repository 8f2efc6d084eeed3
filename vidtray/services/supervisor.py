"""Runs generation in a separate worker process and keeps it healthy.

:class:`WorkerProcess` is one ``python -m vidtray.services.worker`` child spoken to in JSON lines (the CLI's
``vidtray generate`` uses it directly). :class:`Supervisor` feeds it jobs from the persistent queue one at
a time, relays its events to ``on_event``, forwards cancel requests, marks the job of a crashed worker
failed (with the reason) and starts a new worker for the next job, at most ``max_restarts`` crashes in a
row. The worker exits by itself after ``keep_alive_s`` idle; the supervisor starts it again on demand.
Nothing here imports torch.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidtray.config import Config
from vidtray.services.backoff import Backoff
from vidtray.services.childenv import child_env
from vidtray.services.queue import JobQueue

log = logging.getLogger("vidtray.supervisor")

EventSink = Callable[[dict[str, Any]], None]
WORKER_EXIT = "worker_exit"  # synthetic event: the child's stdout closed (it exited)


def worker_command(config_path: str | None = None, keep_alive_s: float | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "vidtray.services.worker", "--parent-pid", str(os.getpid())]
    if config_path:
        cmd += ["--config", str(config_path)]
    if keep_alive_s is not None:
        cmd += ["--keep-alive", f"{keep_alive_s:g}"]
    return cmd


class WorkerProcess:
    """One worker child. Events (dicts) go to ``on_event`` from a reader thread, ending with
    ``{"event": "worker_exit", "code": N, "stderr": [...]}`` when the child is gone."""

    def __init__(self, on_event: EventSink, *, config_path: str | None = None,
                 keep_alive_s: float | None = None, env: dict[str, str] | None = None,
                 new_session: bool = False, cmd: list[str] | None = None) -> None:
        self.on_event = on_event
        self.cmd = cmd or worker_command(config_path, keep_alive_s)
        self.env = env
        # new_session: keep terminal Ctrl-C away from the child (the supervisor decides); the CLI wants the
        # opposite (its child is cancelled by the same Ctrl-C, within a step).
        self.new_session = new_session
        self.proc: subprocess.Popen[str] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._send_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        # The worker imports this same vidtray (a source checkout not installed included).
        env = child_env(self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            encoding="utf-8", errors="replace", bufsize=1, env=env, start_new_session=self.new_session,
        )
        log.info("started worker pid %d", self.proc.pid)
        self._threads = [
            threading.Thread(target=self._read_stdout, name=f"worker-{self.proc.pid}-out", daemon=True),
            threading.Thread(target=self._read_stderr, name=f"worker-{self.proc.pid}-err", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def send(self, command: dict[str, Any]) -> bool:
        """Write one command line; False if the worker is gone."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            return False
        with self._send_lock:
            try:
                proc.stdin.write(json.dumps(command) + "\n")
                proc.stdin.flush()
                return True
            except (BrokenPipeError, OSError, ValueError):
                return False

    def submit(self, job_id: str, request: dict[str, Any], origin: str | None = None) -> bool:
        """Hand a job to the worker. ``origin="cli"``: its values came from flags, so an error names
        them (``--width``); otherwise it names the job (``job abc123: width ...``)."""
        command = {"cmd": "job", "id": job_id, "request": request}
        if origin is not None:
            command["origin"] = origin
        return self.send(command)

    def cancel(self, job_id: str | None = None) -> bool:
        return self.send({"cmd": "cancel", "id": job_id})

    def ask_exit(self, cancel: bool = False) -> bool:
        return self.send({"cmd": "exit", "cancel": cancel})

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def interrupt(self) -> None:
        """SIGINT (Ctrl-C) to the worker: it cancels within a step."""
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Ask the worker to exit (cancelling its job), then terminate, then kill."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self.ask_exit(cancel=True)
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for t in self._threads:
            t.join(5)
        return proc.returncode

    def stderr_tail(self) -> list[str]:
        return list(self._stderr)

    def _read_stdout(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                log.debug("worker %d said: %s", proc.pid, line)
                continue
            if isinstance(event, dict):
                self.on_event(event)
        code = proc.wait()
        # stderr may still be draining; give it a moment so the crash reason is complete
        if len(self._threads) > 1:
            self._threads[1].join(2)
        self.on_event({"event": WORKER_EXIT, "code": code, "pid": proc.pid, "stderr": self.stderr_tail()})

    def _read_stderr(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip()
            if line:
                self._stderr.append(line)
                log.debug("worker %d stderr: %s", proc.pid, line)


def _request_problem(job_id: str, request: Any) -> str | None:
    """Why a queued request cannot be run (None if it can): the same checks as ``vidtray queue add``,
    in a message that names the job."""
    from vidtray.errors import UserError
    from vidtray.params import Source
    from vidtray.services.generation import Request

    if not isinstance(request, dict):
        return f"job {job_id}: the request is not a JSON object"
    try:
        Request.from_dict(request, Source.job(job_id))
    except UserError as exc:
        return str(exc)
    return None


def crash_reason(code: int | None, stderr: list[str]) -> str:
    """One line: how the worker died and its last words."""
    if code is not None and code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    last = next((s.strip() for s in reversed(stderr) if s.strip() and not s.startswith(" ")), "")
    if code == -9 or code == 137:
        how += " (out of memory, or killed by hand)"
    return f"the worker process {how}" + (f": {last[:300]}" if last else "")


class Supervisor:
    """Feeds queued jobs to a worker process, one at a time; see the module docstring."""

    def __init__(self, cfg: Config, *, on_event: EventSink | None = None, config_path: str | None = None,
                 notifier: Any = None, max_restarts: int = 3, poll_s: float = 0.5,
                 keep_alive_s: float | None = None, progress_write_s: float = 1.0,
                 worker_cmd: list[str] | None = None) -> None:
        self.cfg = cfg
        # Another worker program (tests use a fake that speaks the same JSON lines); default: the real one.
        self.worker_cmd = worker_cmd
        self.queue = JobQueue(cfg.queue_dir)
        self.on_event = on_event or (lambda event: None)
        # The worker reads the same settings file (`vidtray --config X watch` included).
        if config_path is None and cfg.source not in ("defaults", "<string>") and Path(cfg.source).is_file():
            config_path = cfg.source
        self.config_path = config_path
        self.notifier = notifier
        self.max_restarts = max_restarts
        self.poll_s = poll_s
        self.keep_alive_s = cfg.keep_alive_s if keep_alive_s is None else keep_alive_s
        self.progress_write_s = progress_write_s
        self.worker: WorkerProcess | None = None
        self.current: str | None = None
        self.crashes = 0
        self.gave_up = False
        self._events: queue.Queue[tuple[WorkerProcess | None, dict[str, Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_start = 0.0
        self._last_progress_write = 0.0
        self._was_paused = False
        self._cancel_sent: set[str] = set()
        self._orphan: str | None = None

    # -- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vidtray-supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop taking jobs; a running job is cancelled and goes back to the queue for next time."""
        if self._thread is None:
            return
        self._stop.set()
        self._events.put((None, {"event": "_wake"}))
        self._thread.join(timeout + 5)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- API for the tray / daemon / tests
    def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        """Queue a job (a ``generation.Request`` as a dict, already validated) and wake the loop."""
        job = self.queue.submit(request)
        self._relay({"event": "job_queued", "job": job["id"], "prompt": request.get("prompt")})
        self._events.put((None, {"event": "_wake"}))
        return job

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.queue.cancel(job_id)
        self._events.put((None, {"event": "_wake"}))
        return job

    # -- the loop (one thread owns all state below)
    def _run(self) -> None:
        # Whatever one round raises (a full disk under the queue, a job file another program mangled),
        # the loop goes on after a bounded backoff: a dead supervisor would leave jobs queued until a
        # restart. An event whose handling failed is handled again first, so a result is never lost.
        guard = Backoff(log, "the generation queue (supervisor loop)")
        redo: collections.deque[tuple[WorkerProcess | None, dict[str, Any]]] = collections.deque()
        recovered = False
        try:
            while not self._stop.is_set():
                if not recovered:
                    # Jobs a previous run left "running": in the loop, so a full disk at start only delays it.
                    try:
                        for job in self.queue.recover_stale():
                            self._relay({"event": "job_recovered", "job": job["id"], "state": job["state"]})
                        recovered = True
                    except Exception as exc:
                        self._stop.wait(guard.failed(exc))
                        continue
                if redo:
                    source, event = redo.popleft()
                else:
                    try:
                        source, event = self._events.get(timeout=self.poll_s)
                    except queue.Empty:
                        source, event = None, None
                try:
                    if event is not None and event.get("event") != "_wake":
                        self._handle(source, event)
                    self._tick()
                except Exception as exc:
                    if event is not None and event.get("event") != "_wake":
                        redo.appendleft((source, event))
                    if not guard.failing:
                        self._relay({"event": "supervisor_error", "error": str(exc)})
                    self._stop.wait(guard.failed(exc))
                else:
                    if guard.failing:
                        guard.succeeded()
                        self._relay({"event": "supervisor_recovered"})
            # Stopping: what could not be recorded yet gets one last try.
            for source, event in redo:
                with contextlib.suppress(Exception):
                    self._handle(source, event)
        finally:
            self._shutdown()

    def _tick(self) -> None:
        if self.current is not None:
            self._forward_cancel()
            return
        paused = self.queue.paused()
        if paused is not None:
            if not self._was_paused:
                self._relay({"event": "queue_paused", "reason": paused.get("reason")})
            self._was_paused = True
            return
        self._was_paused = False
        if self._orphan is not None:
            # Claimed but never handed to a worker (it could not start): back to the queue first.
            self.queue.requeue(self._orphan, "the worker could not be started")
            self._orphan = None
        if self.gave_up or time.monotonic() < self._next_start:
            return
        job = self.queue.claim_next(os.getpid())
        if job is None:
            return
        problem = _request_problem(job["id"], job.get("request"))
        if problem is not None:
            # Another program queued a request the worker cannot run: fail it now, with the reason.
            log.warning("job %s cannot run: %s", job["id"], problem)
            self.queue.finish(job["id"], "failed", error=problem)
            self._relay({"event": "failed", "job": job["id"], "error": problem})
            return
        self.current = job["id"]
        try:
            worker = self._ensure_worker()
        except BaseException:
            self.current, self._orphan = None, job["id"]
            raise
        self._relay({"event": "job_claimed", "job": job["id"], "worker_pid": worker.pid})
        if not worker.submit(job["id"], job["request"]):
            # Died between start and submit: the exit event marks the job failed.
            log.warning("could not hand job %s to worker %s", job["id"], worker.pid)

    def _ensure_worker(self) -> WorkerProcess:
        if self.worker is None or not self.worker.alive():
            holder: list[WorkerProcess] = []

            def sink(event: dict[str, Any]) -> None:
                self._events.put((holder[0] if holder else None, event))

            worker = WorkerProcess(sink, config_path=self.config_path, keep_alive_s=self.keep_alive_s,
                                   new_session=True, cmd=self.worker_cmd)
            holder.append(worker)
            worker.start()
            self.worker = worker
            self._relay({"event": "worker_started", "pid": worker.pid})
        return self.worker

    def _forward_cancel(self) -> None:
        try:
            job = self.queue.get(self.current or "")
        except Exception:
            return
        if job.get("cancel_requested") and job["id"] not in self._cancel_sent and self.worker is not None:
            if self.worker.cancel(job["id"]):
                self._cancel_sent.add(job["id"])

    def _handle(self, source: WorkerProcess | None, event: dict[str, Any]) -> None:
        kind = event.get("event")
        job_id = event.get("job")
        if kind == WORKER_EXIT:
            self._on_worker_exit(source, event)
            return
        if kind == "progress" and job_id:
            now = time.monotonic()
            # Progress lands in the job file for `vidtray queue list`, at most once a second.
            last = event.get("step") == event.get("steps")
            if last or now - self._last_progress_write >= self.progress_write_s:
                self._last_progress_write = now
                self.queue.set_progress(job_id, {k: event.get(k) for k in ("step", "steps", "eta")})
        elif kind == "done" and job_id:
            self.queue.finish(job_id, "done", result=event.get("result"))
            self.crashes = 0
            self._finished(job_id)
            if self.notifier is not None:
                result = event.get("result") or {}
                with contextlib.suppress(Exception):
                    self.notifier.video_ready(Path(result.get("path", "")), self._prompt_of(result))
        elif kind == "failed" and job_id:
            self.queue.finish(job_id, "failed", error=event.get("error"))
            self._finished(job_id)
            if self.notifier is not None:
                with contextlib.suppress(Exception):
                    self.notifier.generation_failed(str(event.get("error")))
        elif kind == "cancelled" and job_id:
            if self._stop.is_set():
                self.queue.requeue(job_id, "vidtray stopped while it ran")
            else:
                self.queue.finish(job_id, "cancelled", error="cancelled")
            self._finished(job_id)
        self._relay(event)

    def _prompt_of(self, result: dict[str, Any]) -> str:
        sidecar = result.get("sidecar")
        try:
            doc = json.loads(Path(sidecar).read_text(encoding="utf-8")) if sidecar else {}
            return str(doc.get("prompt", ""))
        except (OSError, ValueError):
            return ""

    def _finished(self, job_id: str) -> None:
        if self.current == job_id:
            self.current = None

    def _on_worker_exit(self, source: WorkerProcess | None, event: dict[str, Any]) -> None:
        code = event.get("code")
        if source is not None and source is self.worker:
            self.worker = None
        if self.current is not None:
            reason = crash_reason(code, event.get("stderr") or [])
            job_id = self.current
            # The job stays ours until its state is written (a full disk: this event is handled again).
            if self._stop.is_set():
                self.queue.requeue(job_id, "vidtray stopped while it ran")
                self.current = None
            else:
                self.queue.finish(job_id, "failed", error=reason)
                self.current = None
                self.crashes += 1
                delay = min(30.0, 2.0 ** (self.crashes - 1))
                self._next_start = time.monotonic() + delay
                log.error("job %s failed: %s (crash %d of %d allowed)", job_id, reason, self.crashes,
                          self.max_restarts)
                self._relay({"event": "failed", "job": job_id, "error": reason, "kind": "crash"})
                if self.notifier is not None:
                    with contextlib.suppress(Exception):
                        self.notifier.generation_failed(reason)
                if self.crashes > self.max_restarts:
                    self.gave_up = True
                    self._relay({"event": "supervisor_gave_up", "crashes": self.crashes, "reason": reason})
        self._relay({"event": WORKER_EXIT, "code": code, "pid": event.get("pid")})

    def _shutdown(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop()
            # drain what the worker said on the way out (its job's "cancelled" -> requeued)
            while True:
                try:
                    source, event = self._events.get_nowait()
                except queue.Empty:
                    break
                if event.get("event") != "_wake":
                    self._handle(source, event)
        if self.current is not None:
            with contextlib.suppress(Exception):
                self.queue.requeue(self.current, "vidtray stopped while it ran")
            self.current = None

    def _relay(self, event: dict[str, Any]) -> None:
        try:
            self.on_event(event)
        except Exception:
            log.exception("on_event callback failed for %s", event.get("event"))
