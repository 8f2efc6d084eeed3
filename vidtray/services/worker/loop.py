"""The worker process's command loop: protocol commands on stdin -> jobs, one at a time; events on stdout.

It cancels on request, exits after ``keep_alive_s`` without work (so GPU memory is given back), when its
parent dies, on ``exit``, on SIGINT/SIGTERM, or when stdin closes.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import threading
import types
from typing import TextIO

from vidtray import __version__
from vidtray.config import Config, load_config
from vidtray.errors import UserError, VidtrayError, first_line
from vidtray.params import Source
from vidtray.services import generation as gen
from vidtray.services.protocol import (
    AnyEvent,
    CancelCommand,
    Cancelled,
    Done,
    ErrorEvent,
    ExitCommand,
    Exiting,
    Failed,
    Fatal,
    Hello,
    JobCommand,
    ProtocolError,
    parse_command,
)
from vidtray.services.worker import latents
from vidtray.services.worker.backend import JobCancelled
from vidtray.services.worker.partials import clean_stale_partials
from vidtray.services.worker.runner import Worker

log = logging.getLogger("vidtray.worker")

ASKED_TO_EXIT = "asked to exit"


class EventWriter:
    """Events as JSON lines on a private copy of stdout; fd 1 is pointed at stderr so stray prints (a
    library's) can't corrupt the protocol."""

    def __init__(self) -> None:
        fd = os.dup(sys.stdout.fileno())
        sys.stdout.flush()
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        self._out: TextIO = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def emit(self, event: AnyEvent) -> None:
        line = event.to_line()
        with self._lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the parent is gone; the watchdog ends us


class WorkerLoop:
    """stdin commands -> jobs, one at a time; cancel; keep-alive; parent watchdog; signals."""

    def __init__(self, cfg: Config, keep_alive_s: float, parent_pid: int, out: EventWriter, *,
                 library: bool = True) -> None:
        self.cfg = cfg
        self.keep_alive_s = keep_alive_s
        self.parent_pid = parent_pid
        self.out = out
        self.worker = Worker(cfg, out.emit, library=library)
        self.jobs: queue.Queue[JobCommand | None] = queue.Queue()
        self.cancelled_ids: set[str] = set()
        self.current: str | None = None
        # The current job was cancelled by a cancel command (a person), not by vidtray stopping: its saved
        # latents go (a job vidtray stops is queued again and resumes from them).
        self.cancelled_by_user = False
        self.cancel = threading.Event()
        self.stop = threading.Event()
        self.stop_reason = ""
        self._lock = threading.Lock()

    def request_stop(self, reason: str, cancel_current: bool) -> None:
        with self._lock:
            if not self.stop.is_set():
                self.stop_reason = reason
            self.stop.set()
            if cancel_current:
                self.cancel.set()
        self.jobs.put(None)

    def read_commands(self, stream: TextIO) -> None:
        for line in stream:
            line = line.strip()
            if line:
                self.on_line(line)
        # stdin closed: the parent is gone or done with us
        self.request_stop("stdin closed", cancel_current=True)

    def on_line(self, line: str) -> None:
        try:
            command = parse_command(line)
        except ProtocolError as exc:
            # A job that cannot be read still gets its answer, so nobody waits for it for ever.
            self.out.emit(ErrorEvent(message=str(exc)) if exc.job is None else
                          Failed(job=exc.job, error=str(exc), kind="failed"))
            return
        match command:
            case JobCommand():
                self.jobs.put(command)
            case CancelCommand(id=job):
                with self._lock:
                    if job is None or job == self.current:
                        self.cancel.set()
                        self.cancelled_by_user = True
                    if job is not None:
                        self.cancelled_ids.add(job)
            case ExitCommand(cancel=cancel):
                self.request_stop(ASKED_TO_EXIT, cancel_current=cancel)

    def watch_parent(self) -> None:
        while not self.stop.wait(1.0):
            if os.getppid() != self.parent_pid:
                log.warning("parent %d is gone; stopping", self.parent_pid)
                self.request_stop("parent process exited", cancel_current=True)
                return

    def on_signal(self, signum: int, _frame: types.FrameType | None) -> None:
        self.request_stop(f"signal {signal.Signals(signum).name}", cancel_current=True)
        # Inside a job the step callback (or the encoder) sees the flag within a step; elsewhere (idle,
        # loading the model) leave at once: there is nothing to clean up.
        if self.worker.phase in ("idle", "prepare"):
            raise KeyboardInterrupt

    def run(self) -> int:
        threading.Thread(target=self.read_commands, args=(sys.stdin,), name="worker-stdin",
                         daemon=True).start()
        threading.Thread(target=self.watch_parent, name="worker-parent-watch", daemon=True).start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.on_signal)
        self.out.emit(Hello(pid=os.getpid(), version=__version__, keep_alive_s=self.keep_alive_s))
        clean_stale_partials(self.cfg.partial_dir)
        latents.clean_orphans(self.cfg.partial_dir, jobs_keeping_latents(self.cfg))
        first = True
        try:
            while not self.stop.is_set():
                # The first job arrives right after start; never leave before it, even with keep-alive 0.
                timeout = max(self.keep_alive_s, 10.0) if first else self.keep_alive_s
                try:
                    item = self.jobs.get(timeout=timeout) if timeout > 0 else self.jobs.get_nowait()
                except queue.Empty:
                    self.stop_reason = f"idle for {self.keep_alive_s:g}s"
                    break
                if item is None:
                    continue
                first = False
                self.run_one(item)
        except KeyboardInterrupt:
            pass
        finally:
            self.worker.close()
            self.out.emit(Exiting(reason=self.stop_reason or "done"))
        return 0

    def run_one(self, command: JobCommand) -> None:
        job_id = command.id
        with self._lock:
            if job_id in self.cancelled_ids:
                self.out.emit(Cancelled(job=job_id))
                return
            self.current = job_id
            self.cancel.clear()
            self.cancelled_by_user = False
            if self.stop.is_set() and self.stop_reason != ASKED_TO_EXIT:
                self.cancel.set()
        self.out.emit(self._outcome(command))
        with self._lock:
            self.current = None

    def _outcome(self, command: JobCommand) -> Done | Failed | Cancelled:
        job_id = command.id
        named = Source.cli() if command.origin == "cli" else Source.job(job_id)
        try:
            request = gen.Request.from_dict(command.request, named)
            return Done(job=job_id, result=self.worker.run_job(job_id, request, self.cancel, named))
        except (JobCancelled, KeyboardInterrupt):
            if self.cancelled_by_user:
                latents.remove(self.cfg.partial_dir, job_id)
            return Cancelled(job=job_id)
        except VidtrayError as exc:
            return Failed(job=job_id, error=str(exc), kind="user" if isinstance(exc, UserError) else "failed")
        except Exception as exc:  # a bug or a library error: one line out, the traceback to the log
            log.exception("job %s crashed", job_id)
            return Failed(job=job_id, kind="failed",
                          error=f"generation failed: {type(exc).__name__}: {first_line(exc)}")


def jobs_keeping_latents(cfg: Config) -> set[str] | None:
    """The jobs whose saved latents stay: queued, running, or failed (a retry resumes from them). None when
    the queue cannot be read (then no latents go)."""
    from vidtray.services.queue import JobQueue

    if not cfg.queue_dir.is_dir():
        return set()
    try:
        with JobQueue(cfg.queue_dir) as queue:
            return {job.id for job in queue.list() if job.state in ("queued", "running", "failed")}
    except VidtrayError as exc:
        log.warning("cannot read the job queue, so no saved latents go: %s", exc)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidtray.services.worker")
    parser.add_argument("--config", help="config file (as for vidtray --config)")
    parser.add_argument("--keep-alive", type=float, default=None, help="seconds idle before exiting")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--no-library", action="store_true",
                        help="leave library.json and thumbnails alone (a GPU server's slot: a desktop adds the item)")
    args = parser.parse_args(argv)
    out = EventWriter()
    from vidtray.logs import setup_logging
    from vidtray.services.worker.diffusers_backend import quiet_libraries

    setup_logging()
    quiet_libraries()
    try:
        cfg = load_config(args.config)
    except VidtrayError as exc:
        out.emit(Fatal(error=str(exc), kind="user"))
        return 2
    keep_alive = cfg.keep_alive_s if args.keep_alive is None else args.keep_alive
    loop = WorkerLoop(cfg, keep_alive, args.parent_pid or os.getppid(), out, library=not args.no_library)
    return loop.run()
