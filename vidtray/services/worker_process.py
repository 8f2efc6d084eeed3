"""The parent's side of one worker process: start it, speak the protocol to it, and read what it says as
one outcome per job. Nothing here imports torch.

:class:`WorkerProcess` is one ``python -m vidtray.services.worker`` child spoken to in JSON lines
(:mod:`vidtray.services.protocol`); its events go to ``on_event`` from a reader thread, ending with
:class:`~vidtray.services.protocol.WorkerExit` when the child is gone.

:class:`JobDispatcher` is the one reading of those events, shared by ``vidtray generate`` (progress bar,
Ctrl-C) and the :class:`~vidtray.services.supervisor.Supervisor` (queue, restarts, notifications): it calls
a :class:`WorkerListener` for progress, downloads, loading and warnings, and gives each job exactly one
outcome (Done, Failed or Cancelled), a Failed with :func:`crash_reason` when the worker dies during it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from vidtray.services.childenv import child_env
from vidtray.services.protocol import (
    AnyCommand,
    AnyEvent,
    CancelCommand,
    Cancelled,
    Done,
    Download,
    ExitCommand,
    Failed,
    Fatal,
    JobCommand,
    Loading,
    Outcome,
    Progress,
    WarningEvent,
    WorkerExit,
    parse_event,
)
from vidtray.services.records import JsonObject

log = logging.getLogger("vidtray.supervisor")

EventSink = Callable[[AnyEvent], None]


def worker_command(config_path: str | None = None, keep_alive_s: float | None = None, *,
                   library: bool = True) -> list[str]:
    cmd = [sys.executable, "-m", "vidtray.services.worker", "--parent-pid", str(os.getpid())]
    if config_path:
        cmd += ["--config", str(config_path)]
    if keep_alive_s is not None:
        cmd += ["--keep-alive", f"{keep_alive_s:g}"]
    if not library:
        cmd.append("--no-library")
    return cmd


def crash_reason(code: int | None, stderr: Sequence[str]) -> str:
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


class WorkerProcess:
    """One worker child. Events go to ``on_event`` from a reader thread, ending with ``WorkerExit`` (exit
    code and the last stderr lines) when the child is gone."""

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

    def send(self, command: AnyCommand) -> bool:
        """Write one command line; False if the worker is gone."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            return False
        with self._send_lock:
            try:
                proc.stdin.write(command.to_line() + "\n")
                proc.stdin.flush()
                return True
            except (BrokenPipeError, OSError, ValueError):
                return False

    def submit(self, job_id: str, request: JsonObject, origin: Literal["cli"] | None = None) -> bool:
        """Hand a job to the worker (see :class:`~vidtray.services.protocol.JobCommand` for ``origin``)."""
        return self.send(JobCommand(id=job_id, request=request, origin=origin))

    def cancel(self, job_id: str | None = None) -> bool:
        return self.send(CancelCommand(id=job_id))

    def ask_exit(self, cancel: bool = False) -> bool:
        return self.send(ExitCommand(cancel=cancel))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def interrupt(self) -> None:
        """SIGINT (Ctrl-C) to the worker: it cancels within a step."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Ask the worker to exit (cancelling its job), then terminate, then kill."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self.ask_exit(cancel=True)
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
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
            if line:
                event = parse_event(line)
                if event is not None:
                    self.on_event(event)
        code = proc.wait()
        # stderr may still be draining; give it a moment so the crash reason is complete
        if len(self._threads) > 1:
            self._threads[1].join(2)
        self.on_event(WorkerExit(code=code, pid=proc.pid, stderr=tuple(self.stderr_tail())))

    def _read_stderr(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip()
            if line:
                self._stderr.append(line)
                log.debug("worker %d stderr: %s", proc.pid, line)


class JobRunner(Protocol):
    """What runs jobs for a :class:`JobDispatcher`: a :class:`WorkerProcess`, or a GPU server
    (:class:`~vidtray.services.remote_worker.RemoteWorker`). Events go to the sink it was made with."""

    @property
    def pid(self) -> int | None: ...

    def start(self) -> None: ...

    def submit(self, job_id: str, request: JsonObject, origin: Literal["cli"] | None = None) -> bool: ...

    def cancel(self, job_id: str | None = None) -> bool: ...

    def ask_exit(self, cancel: bool = False) -> bool: ...

    def alive(self) -> bool: ...

    def kill(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> int | None: ...


class WorkerListener:
    """What a :class:`JobDispatcher` calls, on the thread that dispatches. Each does nothing here;
    override what you show or record."""

    def progress(self, event: Progress) -> None:
        """A denoising step is done."""

    def download(self, event: Download) -> None:
        """Model bytes arrived."""

    def loading(self, event: Loading) -> None:
        """The model is being loaded (seconds to minutes)."""

    def warning(self, event: WarningEvent) -> None:
        """Something a person should know that did not stop the job."""

    def outcome(self, outcome: Outcome, *, worker_died: bool) -> None:
        """How a job ended, once per job. ``worker_died``: the worker process ended during the job (a
        crash, a kill, or a worker that could not start); the Failed then says why."""


class JobDispatcher:
    """One worker's events -> a listener's calls. It knows the job its worker runs (``submitted``), so a
    worker that dies during a job still gives that job its one outcome.

    The listener may raise (a full disk while recording an outcome): the job then stays current, and the
    same event dispatched again is handled again.
    """

    def __init__(self, listener: WorkerListener) -> None:
        self.listener = listener
        self.current: str | None = None
        self.exit: WorkerExit | None = None
        self._fatal: Fatal | None = None

    def submitted(self, job_id: str) -> None:
        self.current = job_id

    def dispatch(self, event: AnyEvent) -> None:
        match event:
            case Progress():
                self.listener.progress(event)
            case Download():
                self.listener.download(event)
            case Loading():
                self.listener.loading(event)
            case WarningEvent():
                self.listener.warning(event)
            case Done() | Failed() | Cancelled():
                self._end(event, worker_died=False)
            case Fatal():
                self._fatal = event
            case WorkerExit():
                if self.current is not None:
                    self._end(self._death(event), worker_died=True)
                self.exit = event
            case _:
                pass

    def _end(self, outcome: Outcome, *, worker_died: bool) -> None:
        self.listener.outcome(outcome, worker_died=worker_died)
        if outcome.job == self.current:
            self.current = None

    def _death(self, event: WorkerExit) -> Failed:
        assert self.current is not None
        if self._fatal is not None:  # it said why before it went
            return Failed(job=self.current, error=self._fatal.error, kind=self._fatal.kind)
        return Failed(job=self.current, error=crash_reason(event.code, event.stderr), kind="crash")
