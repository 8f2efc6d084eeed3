"""``vidtray clean videos|model|models``: free space safely (to the trash by default, asked first)."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from vidtray.errors import UserError

if TYPE_CHECKING:
    from vidtray.cli import Context, Subparsers


def _days(text: str) -> float:
    """``--older-than``: ``storage.parse_days``; anything else, or a negative number, is a usage error."""
    from vidtray.services.storage import parse_days

    try:
        return parse_days(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: Subparsers) -> None:
    p = sub.add_parser("clean", help="delete generated videos or cached models")
    csub = p.add_subparsers(dest="clean_command", metavar="WHAT", required=True)

    v = csub.add_parser("videos", help="delete finished videos (with sidecars and thumbnails)")
    v.add_argument("--older-than", metavar="DAYS", type=_days,
                   help="only videos older than DAYS (30 or 30d); age counts from the later of when the library "
                        "first listed the video ('added') and its last modification, so a video not in the "
                        "library yet, or copied in with an old date, counts as new")
    v.add_argument("--permanent", action="store_true", help="delete for good instead of moving to the trash")
    _common(v)
    v.set_defaults(handler=clean_videos)

    m = csub.add_parser("model", help="delete one model from the Hugging Face cache (for good)")
    m.add_argument("repo_id", metavar="REPO_ID")
    _common(m)
    m.set_defaults(handler=clean_model)

    a = csub.add_parser("models", help="delete every repo in the Hugging Face cache (token and settings stay)")
    a.add_argument("--all", action="store_true", required=True, help="required: yes, every cached repo")
    _common(a)
    a.set_defaults(handler=clean_model, repo_id=None)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="show what would be deleted, delete nothing")
    p.add_argument("--yes", action="store_true", help="do not ask (required when there is no terminal)")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def clean_videos(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.services import storage
    from vidtray.services.fsutil import human_size, plural
    from vidtray.services.library import open_library

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
        result = storage.execute_clean(lib, plan, to_trash=to_trash)
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
        print(f"{verb} {plural(len(result.deleted), 'video')}, {human_size(result.freed_bytes)}.")
    return 0


def clean_model(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.services import storage
    from vidtray.services.fsutil import human_size, plural

    plan = storage.plan_model_cleanup(args.repo_id)
    doc = {"cache_dir": str(plan.cache_dir), "dry_run": args.dry_run,
           "repos": [{"repo_id": t["repo_id"], "repo_type": t["repo_type"], "size_bytes": t["size_bytes"],
                      "broken": t["broken"]} for t in plan.targets],
           "expected_freed_bytes": plan.expected_freed_bytes, "freed_bytes": 0}
    if plan.targets and not args.dry_run:
        what = args.repo_id or ("the one cached repo" if len(plan.targets) == 1
                                else f"all {plural(len(plan.targets), 'cached repo')}")
        if not ctx.confirm(f"Delete {what} ({human_size(plan.expected_freed_bytes)}) from the model cache? "
                           "It will download again when needed.", args.yes):
            raise UserError("nothing deleted (not confirmed)")
        doc["freed_bytes"] = storage.execute_model_cleanup(plan)
    if args.json:
        ctx.print_json(doc)
        return 0
    verb = "Would delete" if args.dry_run else "Deleted"
    for t in plan.targets:
        print(f"{verb}: {t['repo_id']}{' (broken)' if t['broken'] else ''} ({human_size(t['size_bytes'])})")
    if not plan.targets:
        print("The model cache is empty.")
    elif args.dry_run:
        print(f"Would free {human_size(plan.expected_freed_bytes)}.")
    else:
        print(f"Freed {human_size(doc['freed_bytes'])}.")
    return 0
