"""``vidtray generate PROMPT ...``: one video, made in a worker subprocess (this process never imports torch).

Shows a progress bar (step i of n, time left) on a terminal; ``--json`` prints one document. Ctrl-C
cancels within a step and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import sys
import time
from pathlib import Path
from typing import Any

from vidtray import params
from vidtray.errors import Interrupted, OperationFailed, UserError

CANCEL_WAIT_S = 60.0  # after Ctrl-C: how long the current step (and cleanup) may take before a hard kill


def add_generation_args(p: argparse.ArgumentParser) -> None:
    """The options that describe one video (shared with ``vidtray queue add``), from the
    generation-parameter schema: its limits are checked as argparse reads them."""
    prompt = params.FIELDS["prompt"]
    p.add_argument(prompt.name, metavar="PROMPT", help=prompt.help)
    for f in params.FIELDS.values():
        if f.flag is None:
            continue
        if f.kind == "choice":
            p.add_argument(f.flag, dest=f.name, choices=f.choices, help=f.describe())
        elif f.kind == "text":
            p.add_argument(f.flag, dest=f.name, metavar=f.metavar, help=f.describe())
        else:
            p.add_argument(f.flag, dest=f.name, type=params.argtype(f.name), metavar=f.metavar,
                           help=f.describe())


def request_from_args(args: argparse.Namespace) -> Any:
    """A validated ``generation.Request`` (UserError, exit 2, on bad input)."""
    from vidtray.services.generation import Request

    req = Request(**{name: getattr(args, name) for name in params.FIELDS})
    req.validate(params.Source.cli())
    return req


def check_before_worker(req: Any, cfg: Any) -> None:
    """Cheap refusals before paying for a worker (and torch), or before queueing: a bad model folder,
    offline without the model, and -- when the model's family is known here -- parameters (from the
    flags or the config) that the family cannot make. The worker checks again."""
    from vidtray.services import generation as gen
    from vidtray.services import hub

    source = hub.resolve_model(req.model or cfg.model)
    family = gen.family_for(source.class_name() or gen.known_pipeline(source.model))
    gen.resolve_params(req, cfg, family, params.Source.cli())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate a video from a prompt (in a worker process)",
                       description="Generate a video from a prompt. Runs the model in a worker process; "
                                   "Ctrl-C cancels within a step and leaves nothing behind.")
    add_generation_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON document when done")
    p.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace, ctx: Any) -> int:
    from vidtray.services import generation as gen

    req = request_from_args(args)
    cfg = ctx.cfg
    # The worker checks all this again (the tray path has no CLI in front of it).
    check_before_worker(req, cfg)
    gen.check_output_space(cfg)
    return run_in_worker(req, cfg, ctx, as_json=args.json)


class _Progress:
    """A tqdm bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.kind = ""

    def note(self, text: str) -> None:
        if self.enabled:
            self.close()
            print(text, file=sys.stderr, flush=True)

    def steps(self, step: int, total: int) -> None:
        if not self.enabled:
            return
        self._ensure("steps", total, "generating", "step", False)
        self.bar.n = step
        self.bar.refresh()

    def download(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        self._ensure("download", total, "downloading", "B", True)
        self.bar.n = done
        self.bar.refresh()

    def _ensure(self, kind: str, total: int, desc: str, unit: str, scale: bool) -> None:
        from tqdm import tqdm

        if self.bar is None or self.kind != kind:
            self.close()
            self.kind = kind
            self.bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=scale,
                            unit_divisor=1024 if scale else 1000, file=sys.stderr, dynamic_ncols=True,
                            leave=False)
        elif total and self.bar.total != total:
            self.bar.total = total

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.kind = ""


def run_in_worker(req: Any, cfg: Any, ctx: Any, *, as_json: bool) -> int:
    """Start a worker, give it the job, show its progress, map its outcome to an exit code."""
    from vidtray.services.supervisor import WORKER_EXIT, WorkerProcess, crash_reason

    events: queue.Queue[dict[str, Any]] = queue.Queue()
    worker = WorkerProcess(events.put, config_path=ctx.config_arg, keep_alive_s=0)
    progress = _Progress(sys.stderr.isatty())
    job_id = f"cli-{int(time.time())}"
    started = time.perf_counter()
    worker.start()
    worker.submit(job_id, req.as_dict(), origin="cli")
    outcome: dict[str, Any] | None = None
    cancelling = False
    try:
        progress.note("starting the worker…")
        while True:
            try:
                event = events.get(timeout=0.5)
            except queue.Empty:
                continue
            kind = event.get("event")
            if kind == "progress":
                progress.steps(int(event.get("step", 0)), int(event.get("steps", 0)))
            elif kind == "download":
                progress.download(int(event.get("done", 0)), int(event.get("total", 0)))
            elif kind == "loading":
                progress.note(f"loading {event.get('model')} on {event.get('device')}…")
            elif kind == "warning":
                progress.close()
                print(f"vidtray: warning: {event.get('message')}", file=sys.stderr)
            elif kind in ("done", "failed", "cancelled") and event.get("job") == job_id:
                outcome = event
            elif kind == "fatal":
                outcome = {"event": "failed", "kind": event.get("kind"), "error": event.get("error")}
            elif kind == WORKER_EXIT:
                if outcome is None:
                    outcome = {"event": "failed", "kind": "crash",
                               "error": crash_reason(event.get("code"), event.get("stderr") or [])}
                break
    except KeyboardInterrupt:
        cancelling = True
        progress.close()
        print("vidtray: cancelling… (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        outcome = _cancel(worker, events, job_id)
    finally:
        progress.close()
        worker.stop(timeout=5)
        _remove_partials(cfg.partial_dir, worker.pid)

    kind = outcome.get("event") if outcome else None
    if kind == "done":
        result = dict(outcome["result"])  # type: ignore[index]
        result["seconds"] = round(time.perf_counter() - started, 3)
        if as_json:
            keys = ("path", "sidecar", "seed", "seconds", "model", "device", "dtype", "revision", "frames",
                    "width", "height", "fps", "steps", "library_id")
            ctx.print_json({k: result.get(k) for k in keys})
        else:
            print(result["path"])
            if sys.stderr.isatty():
                size = f"{result['width']}x{result['height']}"
                print(f"seed {result['seed']}, {result['frames']} frames {size} on {result['device']} "
                      f"in {result['seconds']:.1f}s", file=sys.stderr)
        return 0
    if kind == "cancelled" or cancelling:
        raise Interrupted("generation cancelled; nothing was written")
    assert outcome is not None
    error = str(outcome.get("error") or "generation failed")
    if outcome.get("kind") == "user":
        raise UserError(error)
    raise OperationFailed(error)


def _cancel(worker: Any, events: queue.Queue[dict[str, Any]], job_id: str) -> dict[str, Any]:
    """After Ctrl-C: ask the worker to cancel and wait for it (a second Ctrl-C kills it)."""
    from vidtray.services.supervisor import WORKER_EXIT

    worker.cancel(job_id)
    worker.ask_exit(cancel=True)
    deadline = time.monotonic() + CANCEL_WAIT_S
    outcome: dict[str, Any] = {"event": "cancelled"}
    try:
        while time.monotonic() < deadline:
            try:
                event = events.get(timeout=0.5)
            except queue.Empty:
                continue
            if event.get("event") == "done" and event.get("job") == job_id:
                outcome = event  # finished before the cancel arrived: the video is there, report it
            if event.get("event") == WORKER_EXIT:
                return outcome
    except KeyboardInterrupt:
        pass
    if worker.proc is not None and worker.alive():
        worker.proc.kill()
    return outcome


def _remove_partials(partial_dir: Path, pid: int | None) -> None:
    """A worker killed hard cannot clean up: remove its in-progress files (named ``*.<pid>.mp4``)."""
    if pid is None or not partial_dir.is_dir():
        return
    for path in partial_dir.glob(f"*.{pid}.mp4"):
        with contextlib.suppress(OSError):
            path.unlink()
