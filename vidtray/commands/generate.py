"""``vidtray generate PROMPT ...``: one video, made in a worker subprocess (this process never imports torch),
or on the ``[remote]`` GPU server (``--on remote``).

``--from ID_OR_PATH`` makes a video again from its recipe (a library item, or any video that carries one),
``--vary-seed`` with a new seed; any other option overrides the recipe's value. Shows a progress bar (step
i of n, time left) on a terminal; ``--json`` prints one document. Ctrl-C cancels within a step and leaves
nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import sys
import time
from typing import TYPE_CHECKING, NoReturn

from vidtray import params
from vidtray.config import EXECUTORS, Config
from vidtray.errors import Interrupted, OperationFailed, UserError
from vidtray.services.protocol import (
    AnyEvent,
    Cancelled,
    Done,
    Download,
    Failed,
    Loading,
    Outcome,
    Progress,
    VideoResult,
    WarningEvent,
)
from vidtray.services.worker_process import WorkerListener

if TYPE_CHECKING:
    from tqdm import tqdm

    from vidtray.cli import Context
    from vidtray.services.generation import Request
    from vidtray.services.worker_process import JobDispatcher, JobRunner

CANCEL_WAIT_S = 60.0  # after Ctrl-C: how long the current step (and cleanup) may take before a hard kill


def add_generation_args(p: argparse.ArgumentParser, *, prompt_as: str = "required", recipe: bool = False) -> None:
    """The options that describe one video (shared with ``vidtray queue add`` and ``queue edit``), from the
    generation-parameter schema: its limits are checked as argparse reads them. ``prompt_as``: the PROMPT
    argument ``required``, ``optional`` (another option may give prompts), or a ``--prompt`` ``flag``.
    ``recipe``: also ``--from`` / ``--vary-seed``, which start from a video's recipe."""
    prompt = params.FIELDS["prompt"]
    if prompt_as == "flag":
        p.add_argument("--prompt", dest=prompt.name, metavar="TEXT", help=prompt.help)
    else:
        text = f"{prompt.help} (with --from: replaces the recipe's prompt)" if recipe else prompt.help
        p.add_argument(prompt.name, metavar="PROMPT", help=text, nargs="?" if prompt_as == "optional" else None)
    if recipe:
        p.add_argument("--from", dest="from_source", metavar="ID_OR_PATH",
                       help="start from the recipe of a library item (id or unique prefix) or of a video file "
                            "(its sidecar, or the recipe inside it); the other options override its values")
        p.add_argument("--vary-seed", action="store_true",
                       help="with --from: the same recipe with a new random seed")
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


def add_executor_arg(p: argparse.ArgumentParser) -> None:
    """``--on local|remote`` (shared with ``vidtray queue add``)."""
    p.add_argument("--on", dest="executor", choices=EXECUTORS,
                   help="where it runs: local (this machine) or remote (the [remote] GPU server); "
                        "default: the config's executor")


def request_from_args(args: argparse.Namespace, cfg: Config | None = None) -> Request:
    """A validated ``generation.Request`` from the flags, or from ``--from``'s recipe with the flags over
    it (then ``cfg`` is needed, for the library). UserError (exit 2) on bad input."""
    from vidtray.services.generation import Request

    source = getattr(args, "from_source", None)
    vary = getattr(args, "vary_seed", False)
    if vary and args.seed is not None:
        raise UserError("--seed and --vary-seed exclude each other")
    if source is not None:
        if cfg is None:
            raise UserError("--from is not available here")
        return request_from_recipe(source, args, cfg, vary_seed=vary)
    if vary:
        raise UserError("--vary-seed needs --from ID_OR_PATH (the video whose recipe to vary)")
    if args.prompt is None:
        raise UserError("give a PROMPT, or --from ID_OR_PATH to make a video again from its recipe")
    req = Request(**{name: getattr(args, name) for name in params.FIELDS})
    req.validate(params.Source.cli())
    return req


def request_from_recipe(source: str, args: argparse.Namespace, cfg: Config, *, vary_seed: bool) -> Request:
    """``--from``: the recipe of a library item or a video, with the given flags over it. Says on stderr,
    before anything runs, when the frames may not come out the same (other torch, diffusers or model
    revision; a recipe that is only a library item's prompt)."""
    from vidtray.services import hub, recipe

    found = recipe.load_from(source, cfg)
    req = found.request({name: getattr(args, name) for name in params.FIELDS}, vary_seed=vary_seed)
    model = req.model or cfg.model
    if found.partial:
        _warn(f"{found.where} has only a prompt, model and seed; the other settings are today's defaults")
        return req
    try:
        here = hub.resolve_model(model).revision
    except UserError:
        return req  # check_before_worker says what is wrong with the model
    if model != found.doc.get("model"):
        here = found.doc.get("revision")  # another model: its revision is not comparable
    notes = found.differences(here, req.device or cfg.device)
    if notes:
        _warn("this may not give the recipe's frames: " + ", ".join(notes))
    return req


def _warn(text: str) -> None:
    print(f"vidtray: warning: {text}", file=sys.stderr, flush=True)


def check_before_worker(req: Request, cfg: Config, executor: str = "local") -> None:
    """Cheap refusals before paying for a worker (and torch), or before queueing: a bad model folder,
    offline without the model, and -- when the model's family is known here -- parameters (from the
    flags or the config) that the family cannot make. The worker checks again. A remote job is checked by
    its server (the model lives there); here only that it can go there."""
    from vidtray.services import generation as gen
    from vidtray.services import hub

    if executor == "remote":
        from vidtray.services.remote_worker import check_remote_request

        if not cfg.remote.configured:
            raise UserError("--on remote: no server configured; set [remote] url, token_file and ca_file in "
                            f"{cfg.source}")
        check_remote_request(req)
        return

    source = hub.resolve_model(req.model or cfg.model)
    family = gen.family_for(source.class_name() or gen.known_pipeline(source.model))
    gen.resolve_params(req, cfg, family, params.Source.cli())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("generate", help="generate a video from a prompt (in a worker process)",
                       description="Generate a video from a prompt, or again from a video's recipe (--from). "
                                   "Runs the model in a worker process; Ctrl-C cancels within a step and "
                                   "leaves nothing behind.")
    add_generation_args(p, prompt_as="optional", recipe=True)
    add_executor_arg(p)
    p.add_argument("--estimate", action="store_true",
                   help="make nothing: say how long the job would take (load, steps, decode, encode), its "
                        "peak GPU memory and video size, from this install's past runs or, without them, a "
                        "guess from the memory planner")
    p.add_argument("--json", action="store_true", help="print one JSON document when done")
    p.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.services import generation as gen

    cfg = ctx.cfg
    req = request_from_args(args, cfg)
    if args.estimate:
        return _estimate(req, cfg, ctx, as_json=args.json)
    executor = args.executor or cfg.executor
    # The worker checks all this again (the tray path has no CLI in front of it).
    check_before_worker(req, cfg, executor)
    gen.check_output_space(cfg)
    return run_in_worker(req, cfg, ctx, as_json=args.json, remote=executor == "remote")


def _estimate(req: Request, cfg: Config, ctx: Context, *, as_json: bool) -> int:
    """``--estimate``: nothing runs, nothing is downloaded (a fresh worker loads the model: the load counts)."""
    from vidtray.services import estimate
    from vidtray.services.fsutil import human_size
    from vidtray.services.jobestimate import Estimator

    found = Estimator(cfg).for_request(req)
    if as_json:
        ctx.print_json(found.as_dict())
        return 0
    est, job = found.estimate, found.job
    print(f"about {estimate.duration(est.seconds)} for {job.frames} frames {job.width}x{job.height}, "
          f"{job.steps} steps on {job.device}")
    parts = ([f"load {estimate.duration(est.load_s)}"] if est.load_s else []) + [
        f"{job.steps} steps {estimate.duration(est.denoise_s)}", f"decode {estimate.duration(est.decode_s)}",
        f"encode {estimate.duration(est.encode_s)}"]
    print("  " + ", ".join(parts))
    if est.peak_gpu_bytes:
        print(f"  peak GPU memory about {human_size(est.peak_gpu_bytes)}")
    if est.output_bytes:
        print(f"  video about {human_size(est.output_bytes)}")
    print(f"  {est.note}")
    return 0


class _Progress:
    """A tqdm bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm[NoReturn] | None = None
        self.kind = ""

    def note(self, text: str) -> None:
        if self.enabled:
            self.close()
            print(text, file=sys.stderr, flush=True)

    def steps(self, step: int, total: int) -> None:
        if self.enabled:
            self._ensure("steps", total, "generating", "step", False).n = step
            self._refresh()

    def download(self, done: int, total: int) -> None:
        if self.enabled:
            self._ensure("download", total, "downloading", "B", True).n = done
            self._refresh()

    def _ensure(self, kind: str, total: int, desc: str, unit: str, scale: bool) -> tqdm[NoReturn]:
        from tqdm import tqdm

        if self.bar is None or self.kind != kind:
            self.close()
            self.kind = kind
            self.bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=scale,
                            unit_divisor=1024 if scale else 1000, file=sys.stderr, dynamic_ncols=True,
                            leave=False)
        elif total and self.bar.total != total:
            self.bar.total = total
        return self.bar

    def _refresh(self) -> None:
        if self.bar is not None:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.kind = ""


class _Terminal(WorkerListener):
    """What ``vidtray generate`` shows of its worker's events, and the outcome of its one job."""

    def __init__(self, job_id: str, bar: _Progress) -> None:
        self.job_id = job_id
        self.bar = bar
        self.outcome_event: Outcome | None = None

    def progress(self, event: Progress) -> None:
        self.bar.steps(event.step, event.steps)

    def download(self, event: Download) -> None:
        self.bar.download(event.done, event.total)

    def loading(self, event: Loading) -> None:
        self.bar.note(f"loading {event.model} on {event.device}…")

    def warning(self, event: WarningEvent) -> None:
        self.bar.close()
        print(f"vidtray: warning: {event.message}", file=sys.stderr)

    def outcome(self, outcome: Outcome, *, worker_died: bool) -> None:
        if outcome.job == self.job_id:
            self.outcome_event = outcome


def _pump(events: queue.Queue[AnyEvent], dispatcher: JobDispatcher, deadline: float | None = None) -> None:
    """Dispatch the worker's events on this (the main) thread until it has exited, or until ``deadline``
    (``time.monotonic()``); Ctrl-C arrives here as KeyboardInterrupt."""
    while dispatcher.exit is None and (deadline is None or time.monotonic() < deadline):
        try:
            dispatcher.dispatch(events.get(timeout=0.5))
        except queue.Empty:
            continue


def run_in_worker(req: Request, cfg: Config, ctx: Context, *, as_json: bool, remote: bool = False) -> int:
    """Start a worker (or reach the GPU server), give it the job, show its progress, map its outcome to an
    exit code."""
    from vidtray.services.worker.partials import remove_partials_of
    from vidtray.services.worker_process import JobDispatcher, WorkerProcess

    events: queue.Queue[AnyEvent] = queue.Queue()
    worker: JobRunner
    if remote:
        from vidtray.services.remote_worker import RemoteWorker

        worker = RemoteWorker(events.put, cfg)
    else:
        worker = WorkerProcess(events.put, config_path=ctx.config_arg, keep_alive_s=0)
    job_id = f"cli-{int(time.time())}"
    terminal = _Terminal(job_id, _Progress(sys.stderr.isatty()))
    dispatcher = JobDispatcher(terminal)
    started = time.perf_counter()
    worker.start()
    dispatcher.submitted(job_id)
    worker.submit(job_id, req.as_dict(), origin="cli")
    if remote:
        worker.ask_exit()  # after this one job (a local worker started with keep-alive 0 leaves by itself)
    cancelling = False
    try:
        terminal.bar.note(f"sending the job to {cfg.remote.url}…" if remote else "starting the worker…")
        _pump(events, dispatcher)
    except KeyboardInterrupt:
        cancelling = True
        terminal.bar.close()
        print("vidtray: cancelling… (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        _cancel(worker, job_id, events, dispatcher)
    finally:
        terminal.bar.close()
        worker.stop(timeout=5)
        remove_partials_of(cfg.partial_dir, worker.pid if not remote else os.getpid())
    outcome = terminal.outcome_event
    if isinstance(outcome, Done):
        # Finished before a cancel arrived: the video is there, report it.
        return _report(outcome.result, time.perf_counter() - started, ctx, as_json)
    if cancelling or isinstance(outcome, Cancelled):
        raise Interrupted("generation cancelled; nothing was written")
    error = outcome.error if isinstance(outcome, Failed) else "generation failed"
    if isinstance(outcome, Failed) and outcome.kind == "user":
        raise UserError(error)
    raise OperationFailed(error or "generation failed")


def _cancel(worker: JobRunner, job_id: str, events: queue.Queue[AnyEvent], dispatcher: JobDispatcher) -> None:
    """After Ctrl-C: ask the worker to cancel and wait for it (a second Ctrl-C kills it)."""
    worker.cancel(job_id)
    worker.ask_exit(cancel=True)
    with contextlib.suppress(KeyboardInterrupt):
        _pump(events, dispatcher, deadline=time.monotonic() + CANCEL_WAIT_S)
    if dispatcher.exit is None:
        worker.kill()


def _report(result: VideoResult, seconds: float, ctx: Context, as_json: bool) -> int:
    result = {**result, "seconds": round(seconds, 3)}
    if as_json:
        keys = ("path", "sidecar", "seed", "seconds", "model", "device", "dtype", "revision", "frames",
                "width", "height", "fps", "steps", "library_id")
        ctx.print_json({k: result.get(k) for k in keys})
        return 0
    print(result["path"])
    if sys.stderr.isatty():
        size = f"{result['width']}x{result['height']}"
        print(f"seed {result['seed']}, {result['frames']} frames {size} on {result['device']} "
              f"in {result['seconds']:.1f}s", file=sys.stderr)
    return 0
