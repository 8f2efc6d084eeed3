"""``vidtray queue``: the persistent generation queue that the tray and ``vidtray watch`` work through.

``list | add PROMPT [--count N | --seeds 1,5,9] [--prompts-file FILE] | cancel ID | pause | resume |
move ID --first|--before ID | edit ID [--prompt TEXT] [...] | retry ID | clear --finished``.

``queue add``'s requests are built by :func:`batch_from_args` (one request per prompt and seed, every
one checked like ``vidtray generate``'s) and queued by :func:`submit_batch`: other commands that queue
videos call these two.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from vidtray import params
from vidtray.commands import whole_number
from vidtray.commands.generate import (
    add_executor_arg,
    add_generation_args,
    check_before_worker,
    request_from_args,
)
from vidtray.config import Config
from vidtray.errors import UserError
from vidtray.services.jobrecord import Executor, Job

if TYPE_CHECKING:
    from vidtray.cli import Context, Subparsers
    from vidtray.services.generation import Request
    from vidtray.services.queue import BatchSummary, JobQueue
    from vidtray.services.tokens import TokenLimit

#: The most jobs one `queue add` queues (the same as the queue's MAX_BATCH, without importing it here).
MAX_BATCH = 1000


def register(sub: Subparsers) -> None:
    p = sub.add_parser("queue", help="list, add, cancel, pause, reorder or edit queued generation jobs")
    qsub = p.add_subparsers(dest="queue_command", metavar="ACTION", required=True)

    def command(name: str, help: str, handler: object, *, json_help: str = "print one JSON document",
                job_id: bool = False) -> argparse.ArgumentParser:
        c = qsub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".")
        if job_id:
            c.add_argument("job_id", metavar="ID", help="job id (a unique prefix is enough)")
        c.add_argument("--json", action="store_true", help=json_help)
        c.set_defaults(handler=handler)
        return c

    command("list", "jobs in the queue, newest last (a batch grouped)", _list)
    command("cancel", "cancel a queued job, or stop a running one within a step", _cancel, job_id=True,
            json_help="print the job as one JSON document")
    add = command("add", "queue videos for the tray / `vidtray watch` to generate", _add,
                  json_help="print the job (a batch: {batch, jobs}) as one JSON document")
    add_generation_args(add, prompt_as="optional", recipe=True)
    add_batch_args(add)
    add_executor_arg(add)
    command("pause", "stop starting new jobs (a running one finishes) until `queue resume`", _pause)
    command("resume", "start jobs again after `queue pause`", _resume)
    move = command("move", "change when a queued job runs", _move, job_id=True)
    where = move.add_mutually_exclusive_group(required=True)
    where.add_argument("--first", action="store_true", help="run it next")
    where.add_argument("--before", metavar="ID", help="run it just before this queued job")
    edit = command("edit", "change a queued job (not a running or finished one)", _edit, job_id=True)
    add_generation_args(edit, prompt_as="flag")
    command("retry", "queue a failed or cancelled job again, at the end", _retry, job_id=True)
    clear = command("clear", "remove finished jobs from the queue (their videos stay)", _clear)
    clear.add_argument("--finished", action="store_true", required=True,
                       help="every done, failed and cancelled job")


# -- batches ------------------------------------------------------------------------------------------
_count = whole_number(1, MAX_BATCH, f"must be between 1 and {MAX_BATCH}, got {{value}}")


def add_batch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=_count, metavar="N",
                   help=f"queue N videos of each prompt (1-{MAX_BATCH}): seeds S, S+1, ... from --seed S, "
                        "else random ones (all recorded in the jobs)")
    p.add_argument("--seeds", type=_seeds, metavar="1,5,9", help="one video of each prompt per seed")
    p.add_argument("--prompts-file", metavar="FILE",
                   help="one prompt a line (blank lines and lines starting with # are skipped); with PROMPT too")


def _seeds(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        value, problem = params.parse_problem("seed", part)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem.text())
        assert isinstance(value, int)
        seeds.append(value)
    if len(seeds) > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"at most {MAX_BATCH} seeds, got {len(seeds)}")
    return seeds


@dataclasses.dataclass(frozen=True)
class Batch:
    """What one ``queue add`` queues: its requests in order, and whether they form a batch (one id, one
    notification when all are done) -- any of --count, --seeds and --prompts-file asks for one."""

    requests: list[Request]
    is_batch: bool
    #: Where they run (``--on``, else the config's ``executor``).
    executor: Executor = "local"


def read_prompts_file(name: str) -> list[tuple[params.Source, str]]:
    """The prompts of a prompts file, each with its ``FILE:LINE`` (UserError, exit 2: missing, a folder,
    not UTF-8, or nothing but comments and blank lines)."""
    path = Path(name).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"--prompts-file: no such file: {name}") from None
    except IsADirectoryError:
        raise UserError(f"--prompts-file: {name} is a folder, not a file") from None
    except OSError as exc:
        raise UserError(f"--prompts-file: cannot read {name}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{name}:{line}: not UTF-8 text") from None
    prompts = []
    for number, raw in enumerate(text.split("\n"), 1):
        prompt = raw.strip()
        if prompt and not prompt.startswith("#"):
            prompts.append((params.Source.named(f"{name}:{number}"), prompt))
    if not prompts:
        raise UserError(f"{name}: no prompts in it (one a line; blank lines and lines starting with # are skipped)")
    return prompts


def _seed_list(args: argparse.Namespace, batch: bool) -> list[int | None]:
    from vidtray.services.generation import new_seed

    if args.seeds is not None:
        if args.count is not None or args.seed is not None:
            raise UserError("--seeds: use it alone, not with --count or --seed")
        return list(args.seeds)
    if args.count is None:
        # One video per prompt: the given seed, or -- in a batch, so that it is recorded -- a random one.
        return [args.seed if args.seed is not None or not batch else new_seed()]
    if args.seed is None:
        return [new_seed() for _ in range(args.count)]
    last = args.seed + args.count - 1
    if last > params.MAX_SEED:
        raise UserError(f"--count: --seed {args.seed} and --count {args.count} go past the largest seed "
                        f"(2^63-1)")
    return list(range(args.seed, last + 1))


def batch_from_args(args: argparse.Namespace, cfg: Config) -> Batch:
    """The requests ``queue add`` queues: every prompt (PROMPT, then the prompts file's) with every seed,
    checked as ``vidtray generate`` checks one (the schema's limits, the model's family, the prompt's
    tokens where the model's tokenizer is here); a bad one is a UserError that names its flag or
    ``FILE:LINE``."""
    batch = args.count is not None or args.seeds is not None or args.prompts_file is not None
    recipe = getattr(args, "from_source", None) is not None
    prompts: list[tuple[params.Source, str]] = []
    if args.prompt is not None:
        prompts.append((params.Source.cli(), args.prompt))
    if args.prompts_file is not None:
        prompts += read_prompts_file(args.prompts_file)
    if not prompts and not recipe:
        raise UserError("a PROMPT, --prompts-file or --from is needed")
    for source, prompt in prompts:
        params.check("prompt", prompt, source)
    per_prompt = len(args.seeds) if args.seeds is not None else args.count or 1
    if max(1, len(prompts)) * per_prompt > MAX_BATCH:
        raise UserError(f"that is {len(prompts) * per_prompt} jobs ({len(prompts)} prompts x {per_prompt} each); "
                        f"one `queue add` queues at most {MAX_BATCH}")
    # Drawn per prompt: random seeds differ from one prompt to the next.
    seeds = [_seed_list(args, batch) for _ in range(max(1, len(prompts)))]
    # With --from, the recipe is the base (its prompt and seed unless given); PROMPT / the file replace it.
    # A batch's seeds are drawn above (random unless given): they vary already.
    vary = bool(getattr(args, "vary_seed", False)) and seeds[0][0] is None
    first = request_from_args(_with(args, prompt=prompts[0][1] if prompts else None, seed=seeds[0][0],
                                    vary_seed=vary), cfg)
    if not prompts:
        prompts = [(params.Source.named("the recipe"), first.prompt)]
    executor: Executor = "remote" if (getattr(args, "executor", None) or cfg.executor) == "remote" else "local"
    check_before_worker(first, cfg, executor)
    limit = _token_limit(first, cfg)
    if limit is not None:
        for source, prompt in prompts:
            problem = limit.problem(prompt)
            if problem is not None:
                raise source.general(problem) if source.kind == "named" else UserError(problem)
        if first.negative_prompt and (problem := limit.problem(first.negative_prompt, "negative prompt")):
            raise UserError(f"--negative: {problem}")
    requests = [dataclasses.replace(first, prompt=prompt, seed=first.seed if seed is None else seed)
                for (_source, prompt), row in zip(prompts, seeds, strict=True) for seed in row]
    return Batch(requests, batch, executor)


def _with(args: argparse.Namespace, **changes: object) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def _token_limit(req: Request, cfg: Config) -> TokenLimit | None:
    """The model's prompt limit in tokens, where it can be counted here (see ``services.tokens``)."""
    from vidtray.services import generation as gen
    from vidtray.services import hub
    from vidtray.services.tokens import token_limit

    source = hub.resolve_model(req.model or cfg.model)
    family = gen.family_for(source.class_name() or gen.known_pipeline(source.model))
    return token_limit(source.folder, family.name)


def submit_batch(queue: JobQueue, batch: Batch) -> tuple[list[Job], str | None]:
    """Queue a batch's requests in one transaction (all or none); returns the jobs and the batch id."""
    from vidtray.services.queue import new_batch_id

    batch_id = new_batch_id() if batch.is_batch else None
    jobs = queue.submit_many([req.as_dict() for req in batch.requests], batch=batch_id, executor=batch.executor)
    return jobs, batch_id


# -- the commands ---------------------------------------------------------------------------------------


def _queue(ctx: Context) -> JobQueue:
    from vidtray.services.queue import open_queue

    return open_queue(ctx.cfg, on_corrupt=_corrupt_notice)


def _corrupt_notice(moved: Path) -> None:
    print(f"vidtray: warning: the job queue could not be read; it was moved to {moved} and the queue starts "
          "empty (finished videos are not affected)", file=sys.stderr)


def _summary(job: Job, indent: str = "", left: float | None = None, guess: bool = False) -> str:
    state: str = job.state
    prog = job.progress
    if state == "running" and prog is not None and prog.steps:
        state = f"running {prog.step or 0}/{prog.steps}"
    if job.cancel_requested and job.state == "running":
        state += " (cancelling)"
    prompt = job.prompt.replace("\n", " ")
    if len(prompt) > 48:
        prompt = prompt[:47] + "…"
    seed = job.request.get("seed")
    if job.batch is not None and seed is not None:
        prompt += f"  [seed {seed}]"
    tail = ""
    if left is not None:
        from vidtray.services.estimate import duration

        words = f"about {duration(left)}" + (" left" if job.state == "running" else "")
        tail = f"  ({words}{', a guess' if guess else ''})"
    elif job.state == "done" and job.result:
        tail = f"  -> {job.result.get('path')}"
    elif job.state in ("failed", "cancelled") and job.error:
        tail = f"  ({job.error})"
    return f"{indent}{job.id}  {state:<16} {job.created[:19]}  {prompt}{tail}"


def _batch_line(summary: BatchSummary) -> str:
    order = ("running", "queued", "done", "failed", "cancelled")
    counts = ", ".join(f"{summary.counts[s]} {s}" for s in order if summary.counts.get(s))
    return f"batch {summary.id}: {summary.size} jobs ({counts})"


def _list(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.services import estimate
    from vidtray.services.jobestimate import Estimator, timeline

    with _queue(ctx) as q:
        jobs = q.list()
        low_disk, user = q.low_disk_pause(), q.user_pause()
        batches = q.batches()
    times = timeline(Estimator(ctx.cfg), jobs)
    if args.json:
        paused = {**low_disk, "kind": "low_disk"} if low_disk else {**user, "kind": "user"} if user else None
        estimates = {job_id: {"seconds_left": None if left is None else round(left, 1),
                              **(times.estimates[job_id].as_dict() if job_id in times.estimates else {})}
                     for job_id, left in times.left_s.items()}
        done_at = None if times.done_at is None else \
            datetime.fromtimestamp(times.done_at).astimezone().isoformat(timespec="seconds")
        ctx.print_json({"paused": paused, "pauses": {"user": user, "low_disk": low_disk},
                        "jobs": [job.to_json() for job in jobs],
                        "batches": [dataclasses.asdict(b) for b in batches.values()],
                        "estimates": estimates, "queue_done": done_at})
        return 0

    def line(job: Job, indent: str = "") -> str:
        one = times.estimates.get(job.id)
        return _summary(job, indent, times.left_s.get(job.id), one is not None and one.estimate.guess)

    if user is not None:
        print(f"queue paused by you (since {user.get('since')}); `vidtray queue resume` resumes it")
    if low_disk is not None:
        print(f"queue paused: {low_disk.get('reason')} (since {low_disk.get('since')})")
    if not jobs:
        print("no jobs")
    shown: set[str] = set()
    for job in jobs:
        if job.batch is None:
            print(line(job))
        elif job.batch not in shown:
            # A batch is listed where its first job is, all its jobs together under one line.
            shown.add(job.batch)
            print(_batch_line(batches[job.batch]))
            for member in jobs:
                if member.batch == job.batch:
                    print(line(member, "  "))
    if times.done_at is not None:
        held = " if resumed now" if user is not None or low_disk is not None else ""
        print(f"queue done about {estimate.clock(times.done_at)}{held}")
    return 0


def _cancel(args: argparse.Namespace, ctx: Context) -> int:
    with _queue(ctx) as q:
        job = q.cancel(args.job_id)
    if args.json:
        ctx.print_json(job.to_json())
    elif job.state == "cancelled":
        print(f"cancelled job {job.id}")
    else:
        print(f"asked running job {job.id} to stop; its worker stops within a step")
    return 0


def _add(args: argparse.Namespace, ctx: Context) -> int:
    batch = batch_from_args(args, ctx.cfg)
    with _queue(ctx) as q:
        jobs, batch_id = submit_batch(q, batch)
    if args.json:
        ctx.print_json({"batch": batch_id, "jobs": [j.to_json() for j in jobs]} if batch_id else jobs[0].to_json())
    elif batch_id is None:
        print(f"queued job {jobs[0].id}; the tray or `vidtray watch` generates it")
    else:
        seeds = [str(j.request.get("seed")) for j in jobs[:6]]
        more = ", …" if len(jobs) > 6 else ""
        print(f"queued {len(jobs)} jobs as batch {batch_id} (seeds {', '.join(seeds)}{more}); the tray or "
              "`vidtray watch` generates them, with one notification when all are done")
    return 0


def _pause(args: argparse.Namespace, ctx: Context) -> int:
    with _queue(ctx) as q:
        doc = q.pause()
        low_disk = q.low_disk_pause()
    if args.json:
        ctx.print_json({"paused": True, "user_pause": doc})
        return 0
    print("queue paused: no new job starts until `vidtray queue resume` (a running job finishes)")
    if low_disk is not None:
        print(f"(it is also paused for low disk: {low_disk.get('reason')})")
    return 0


def _resume(args: argparse.Namespace, ctx: Context) -> int:
    with _queue(ctx) as q:
        was = q.resume()
        low_disk = q.low_disk_pause()
    if args.json:
        ctx.print_json({"resumed": was, "low_disk_pause": low_disk})
        return 0
    print("queue resumed" if was else "the queue was not paused by you")
    if low_disk is not None:
        print(f"it stays paused for low disk until space returns: {low_disk.get('reason')}")
    return 0


def _move(args: argparse.Namespace, ctx: Context) -> int:
    with _queue(ctx) as q:
        job = q.move(args.job_id, before=None if args.first else args.before)
        ahead = q.place(job.id)
    if args.json:
        ctx.print_json(job.to_json())
    else:
        print(f"job {job.id} is now {'next' if ahead == 0 else f'number {ahead + 1}'} in the queue")
    return 0


def _edit(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.services.generation import Request

    changes = {name: getattr(args, name) for name in params.FIELDS if getattr(args, name) is not None}
    if not changes:
        raise UserError("nothing to change: give --prompt or another option (see `vidtray queue edit --help`)")
    with _queue(ctx) as q:
        job = q.get(args.job_id)
        if job.state != "queued":
            raise UserError(f"job {job.id} is {job.state}: only queued jobs can be edited")
        req = Request.from_dict({**job.request, **changes}, params.Source.cli())
        check_before_worker(req, ctx.cfg)
        limit = _token_limit(req, ctx.cfg)
        for label, text in (("prompt", req.prompt), ("negative prompt", req.negative_prompt)):
            problem = limit.problem(text, label) if limit is not None and text else None
            if problem is not None:
                raise UserError(problem)
        edited = q.edit(job.id, req.as_dict(), expected=job.request)
    if args.json:
        ctx.print_json(edited.to_json())
    else:
        print(f"changed job {edited.id}: {', '.join(sorted(changes))}")
    return 0


def _retry(args: argparse.Namespace, ctx: Context) -> int:
    with _queue(ctx) as q:
        job = q.retry(args.job_id)
    if args.json:
        ctx.print_json(job.to_json())
    else:
        print(f"queued job {job.id} again")
    return 0


def _clear(args: argparse.Namespace, ctx: Context) -> int:
    with _queue(ctx) as q:
        removed = q.clear_finished()
    if args.json:
        ctx.print_json({"removed": removed})
    else:
        print(f"removed {removed} finished job{'' if removed == 1 else 's'} (their videos stay)")
    return 0
