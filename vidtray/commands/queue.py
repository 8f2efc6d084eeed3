"""``vidtray queue list [--json] | cancel ID | add PROMPT ...``: the persistent generation queue that the
tray and ``vidtray watch`` work through."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from vidtray.commands.generate import add_executor_arg, add_generation_args, check_before_worker, request_from_args
from vidtray.services.jobrecord import Executor, Job

if TYPE_CHECKING:
    from vidtray.cli import Context, Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser("queue", help="list, add or cancel queued generation jobs")
    qsub = p.add_subparsers(dest="queue_command", metavar="ACTION", required=True)
    ls = qsub.add_parser("list", help="jobs in the queue, newest last")
    ls.add_argument("--json", action="store_true", help="print one JSON document")
    ls.set_defaults(handler=_list)
    cancel = qsub.add_parser("cancel", help="cancel a queued job, or stop a running one within a step")
    cancel.add_argument("job_id", metavar="ID", help="job id (a unique prefix is enough)")
    cancel.add_argument("--json", action="store_true", help="print the job as one JSON document")
    cancel.set_defaults(handler=_cancel)
    add = qsub.add_parser("add", help="queue a video for the tray / `vidtray watch` to generate")
    add_generation_args(add)
    add_executor_arg(add)
    add.add_argument("--json", action="store_true", help="print the job as one JSON document")
    add.set_defaults(handler=_add)


def _summary(job: Job) -> str:
    state: str = job.state
    prog = job.progress
    if state == "running" and prog is not None and prog.steps:
        state = f"running {prog.step or 0}/{prog.steps}"
    if job.cancel_requested and job.state == "running":
        state += " (cancelling)"
    prompt = job.prompt.replace("\n", " ")
    if len(prompt) > 48:
        prompt = prompt[:47] + "…"
    tail = ""
    if job.state == "done" and job.result:
        tail = f"  -> {job.result.get('path')}"
    elif job.state in ("failed", "cancelled") and job.error:
        tail = f"  ({job.error})"
    return f"{job.id}  {state:<16} {job.created[:19]}  {prompt}{tail}"


def _list(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.services.queue import open_queue

    q = open_queue(ctx.cfg)
    jobs = q.list()
    paused = q.paused()
    if args.json:
        ctx.print_json({"paused": paused, "jobs": [job.to_json() for job in jobs]})
        return 0
    if paused is not None:
        print(f"queue paused: {paused.get('reason')} (since {paused.get('since')})")
    if not jobs:
        print("no jobs")
    for job in jobs:
        print(_summary(job))
    return 0


def _cancel(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.services.queue import open_queue

    job = open_queue(ctx.cfg).cancel(args.job_id)
    if args.json:
        ctx.print_json(job.to_json())
    elif job.state == "cancelled":
        print(f"cancelled job {job.id}")
    else:
        print(f"asked running job {job.id} to stop; its worker stops within a step")
    return 0


def _add(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.services.queue import open_queue

    req = request_from_args(args)
    remote = (args.executor or ctx.cfg.executor) == "remote"
    executor: Executor = "remote" if remote else "local"
    check_before_worker(req, ctx.cfg, executor)
    job = open_queue(ctx.cfg).submit(req.as_dict(), executor=executor)
    if args.json:
        ctx.print_json(job.to_json())
    else:
        print(f"queued job {job.id}; the tray or `vidtray watch` generates it")
    return 0
