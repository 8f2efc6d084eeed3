"""``vidtray clean videos|model|models`` and ``vidtray clean --to-budget``: free space safely (videos to the
trash by default, asked first; the plan that was shown is the plan that is carried out)."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from vidtray.errors import OperationFailed, UserError

if TYPE_CHECKING:
    from vidtray.cli import Context, Subparsers
    from vidtray.config import Config
    from vidtray.services.storage import ModelCleanPlan


def _days(text: str) -> float:
    """``--older-than``: ``storage.parse_days``; anything else, or a negative number, is a usage error."""
    from vidtray.services.storage import parse_days

    try:
        return parse_days(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: Subparsers) -> None:
    from vidtray.commands.storage import budget_gb

    p = sub.add_parser("clean", help="delete generated videos or cached models, or free space to meet the budget",
                       description="Delete what WHAT names, or (--to-budget) what `vidtray storage plan` lists.")
    p.add_argument("--to-budget", action="store_true",
                   help="free what `vidtray storage plan` lists, in its order, to get under storage_budget_gb")
    p.add_argument("--budget", metavar="GB", type=budget_gb, help="with --to-budget: this budget instead")
    p.add_argument("--plan-id", metavar="ID",
                   help="with --to-budget: carry the plan out only if it is still the one with this id "
                        "(`--dry-run --json` shows it); else delete nothing (exit 1)")
    # Also before WHAT (`clean --dry-run videos`): each WHAT's own copies leave these alone when not given.
    _common(p, suppress=False)
    p.set_defaults(handler=clean_to_budget)
    csub = p.add_subparsers(dest="clean_command", metavar="WHAT")

    v = csub.add_parser("videos", help="delete finished videos (with sidecars and thumbnails)")
    v.add_argument("--older-than", metavar="DAYS", type=_days,
                   help="only videos older than DAYS (30 or 30d); age counts from the later of when the library "
                        "first listed the video ('added') and its last modification, so a video not in the "
                        "library yet, or copied in with an old date, counts as new")
    v.add_argument("--permanent", action="store_true", help="delete for good instead of moving to the trash")
    _common(v, suppress=True)
    v.set_defaults(handler=clean_videos)

    m = csub.add_parser("model", help="delete one model from the Hugging Face cache (for good)")
    m.add_argument("repo_id", metavar="REPO_ID")
    _common(m, suppress=True)
    m.set_defaults(handler=clean_model)

    a = csub.add_parser("models", help="delete every repo, or the models not used for N days, from the Hugging "
                                       "Face cache (token and settings stay)")
    which = a.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every cached repo")
    which.add_argument("--unused-days", metavar="N", type=_days,
                       help="models vidtray has not used for N days (30 or 30d) that no queued job needs")
    _common(a, suppress=True)
    a.set_defaults(handler=clean_model, repo_id=None)


def _common(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    # SUPPRESS on the WHAT parsers: argparse copies a sub-parser's defaults over the values given before
    # WHAT, so `clean --dry-run videos` would otherwise lose its --dry-run.
    default: Any = argparse.SUPPRESS if suppress else False
    p.add_argument("--dry-run", action="store_true", default=default,
                   help="show what would be deleted, delete nothing")
    p.add_argument("--yes", action="store_true", default=default,
                   help="do not ask (required when there is no terminal)")
    p.add_argument("--json", action="store_true", default=default, help="print one JSON document")


def _no_budget_options(args: argparse.Namespace) -> None:
    if args.to_budget:
        raise UserError(f"--to-budget frees what the budget plan lists: it takes no WHAT (got {args.clean_command})")
    if args.budget is not None or args.plan_id is not None:
        raise UserError("--budget and --plan-id go with --to-budget")


def clean_videos(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.services import storage
    from vidtray.services.fsutil import human_size, plural
    from vidtray.services.library import open_library

    _no_budget_options(args)
    cfg = ctx.cfg
    to_trash = cfg.prune_to_trash and not args.permanent
    lib = open_library(cfg)
    plan = storage.plan_clean(cfg, lib, older_than_days=args.older_than, now=time.time())
    result = plan.preview(to_trash)
    if plan.videos and not args.dry_run:
        where = "to the trash" if to_trash else "for good"
        if not ctx.confirm(f"Delete {plural(len(plan.videos), 'video')} ({human_size(plan.freed_bytes)}) {where}?",
                           args.yes):
            raise UserError("nothing deleted (not confirmed)")
        # The plan the user just confirmed, not a new scan: what arrived or changed since stays.
        result = storage.execute_clean(lib, plan, to_trash=to_trash, trash_record=cfg.paths.trash_record_file)
    if args.json:
        ctx.print_json(result.as_dict())
        return 0
    verb = "Would delete" if result.dry_run else ("Moved to trash" if to_trash else "Deleted")
    for item in result.deleted:
        print(f"{verb}: {item['path']} ({human_size(item['size_bytes'])})")
    for left in result.kept:
        print(f"Kept: {left['path']} ({left['reason']})")
    for left in result.skipped:
        print(f"Left alone: {left['path']} ({left['reason']})")
    if args.older_than is not None:
        print(f"Older than {args.older_than:g} days: {storage.AGE_TEXT}.")
    if not result.deleted:
        print("Nothing to delete." if result.dry_run or not result.skipped else "Nothing deleted.")
    else:
        print(f"{verb} {plural(len(result.deleted), 'video')}, {human_size(result.freed_bytes)}."
              + (f" {trash_note(result.freed_bytes)}" if to_trash else ""))
    return 0


def trash_note(size: int) -> str:
    """What a person must know about a move to the trash: the trash is on the same disk."""
    from vidtray.services.fsutil import human_size

    return f"They are in the trash: {human_size(size)} frees when the trash is emptied."


def _unused_models_plan(cfg: Config, days: float) -> tuple[ModelCleanPlan, dict[str, str]]:
    from vidtray.services import budget, hub, modeluse, storage

    scan = hub.scan_cache()
    items = budget.model_candidates(scan, time.time(), unused_days=days, keep_partial_days=cfg.partial_keep_days,
                                    needed=budget.queued_models(cfg),
                                    last_used=modeluse.read_use(cfg.paths.model_use_file))
    return (storage.model_clean_plan(scan, [i.repo for i in items if i.repo is not None]),
            {i.name: i.why for i in items})


def clean_model(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.services import storage
    from vidtray.services.fsutil import human_size, plural

    _no_budget_options(args)
    unused = getattr(args, "unused_days", None)
    why: dict[str, str] = {}
    if unused is not None:
        plan, why = _unused_models_plan(ctx.cfg, unused)
    else:
        plan = storage.plan_model_cleanup(args.repo_id)
    doc = {"cache_dir": str(plan.cache_dir), "dry_run": args.dry_run,
           "repos": [{"repo_id": t["repo_id"], "repo_type": t["repo_type"], "size_bytes": t["size_bytes"],
                      "broken": t["broken"], "frees_bytes": t["frees_bytes"], "why": why.get(t["repo_id"])}
                     for t in plan.targets],
           "expected_freed_bytes": plan.expected_freed_bytes, "freed_bytes": 0, "unused_days": unused}
    if plan.targets and not args.dry_run:
        what = args.repo_id or ("the one cached repo" if len(plan.targets) == 1
                                else f"{plural(len(plan.targets), 'cached repo')}")
        if not ctx.confirm(f"Delete {what} ({human_size(plan.expected_freed_bytes)}) from the model cache? "
                           "It will download again when needed.", args.yes):
            raise UserError("nothing deleted (not confirmed)")
        doc["freed_bytes"] = storage.execute_model_cleanup(plan)
    if args.json:
        ctx.print_json(doc)
        return 0
    verb = "Would delete" if args.dry_run else "Deleted"
    for t in plan.targets:
        reason = f": {why[t['repo_id']]}" if t["repo_id"] in why else ""
        print(f"{verb}: {t['repo_id']}{' (broken)' if t['broken'] else ''} ({human_size(t['frees_bytes'])}){reason}")
    if not plan.targets:
        print(f"No model unused for {unused:g} days." if unused is not None else "The model cache is empty.")
    elif args.dry_run:
        print(f"Would free {human_size(plan.expected_freed_bytes)}.")
    else:
        print(f"Freed {human_size(doc['freed_bytes'])}.")
    return 0


def clean_to_budget(args: argparse.Namespace, ctx: Context) -> int:
    """``vidtray clean --to-budget``: the budget plan (``services.budget``), asked about, then carried out."""
    from vidtray.services import budget
    from vidtray.services.library import open_library

    if not args.to_budget:
        raise UserError("say what to clean: videos, model REPO_ID, models --all|--unused-days N, or --to-budget")
    cfg = ctx.cfg
    lib = open_library(cfg)
    plan = budget.plan(cfg, lib, budget_bytes=budget.budget_bytes_from(cfg, args.budget), now=time.time())
    doc: dict[str, Any] = {"dry_run": args.dry_run, **plan.as_dict(), "result": None}
    if plan.over_bytes and not plan.items:
        raise OperationFailed(plan.cannot_meet())  # nothing can go: nothing deleted, exit 1
    if args.plan_id is not None and args.plan_id != plan.plan_id:
        raise OperationFailed(f"the plan changed since it was shown (it is {plan.plan_id} now, not {args.plan_id}); "
                              "nothing deleted: look at it again")
    if plan.items and not args.dry_run:
        if not ctx.confirm(_question(plan), args.yes):
            raise UserError("nothing deleted (not confirmed)")
        doc["result"] = budget.execute(cfg, lib, plan).as_dict()
    if args.json:
        ctx.print_json(doc)
    else:
        _print_budget_result(plan, doc["result"])
    return 0


def _question(plan: Any) -> str:
    from vidtray.services.fsutil import human_size, plural

    kinds = Counter(i.kind for i in plan.items)
    parts = [plural(n, k if k != "partial" else "partial download") for k, n in kinds.items()]
    where = " (videos to the trash)" if plan.to_trash and kinds["video"] else ""
    return f"Free {human_size(plan.total_bytes)}: delete {', '.join(parts)}{where}?"


def _print_budget_result(plan: Any, result: dict[str, Any] | None) -> None:
    from vidtray.services import budget
    from vidtray.services.fsutil import human_size

    if result is None:
        print("\n".join(budget.render_plan(plan)))
        if plan.items:
            print("Nothing deleted (dry run).")
        return
    for d in result["deleted"]:
        verb = "Moved to the trash" if d["kind"] == "video" and plan.to_trash else "Deleted"
        print(f"{verb}: {d['kind']} {d['name']} ({human_size(d['size_bytes'])})")
    for s in result["skipped"]:
        print(f"Left alone: {s['kind']} {s['name']} ({s['reason']})")
    print(f"Freed {human_size(result['freed_bytes'])} of the budget."
          + (f" {trash_note(result['trashed_bytes'])}" if result["trashed_bytes"] else ""))
    if not plan.meets_budget:
        print(plan.cannot_meet()[:1].upper() + plan.cannot_meet()[1:] + ".")
