"""``vidtray library list [--json] | show ID | pin ID | unpin ID | remove ID | rescan [--include-removed]
| edit ID ... | serve [--port N] [--no-open]``. IDs may be shortened to a unique prefix, as queue ids."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING

from vidtray.commands import whole_number
from vidtray.config import LIBRARY_PORT
from vidtray.errors import UserError

if TYPE_CHECKING:
    from pathlib import Path

    from vidtray.cli import Context, Subparsers
    from vidtray.services.libitem import Item
    from vidtray.services.library import Library

_port = whole_number(0, 65535, "expected a port from 1 to 65535 (0: any free one), got {value}")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("library", help="list and edit the video library (library.json)")
    lsub = p.add_subparsers(dest="library_command", metavar="ACTION", required=True)

    ls = lsub.add_parser("list", help="list the videos in the library")
    ls.add_argument("--json", action="store_true", help="print one JSON document")
    ls.set_defaults(handler=_list)

    show = lsub.add_parser("show", help="show one item")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="print one JSON document")
    show.set_defaults(handler=_show)

    for name, value, text in (("pin", True, "never prune this video"),
                              ("unpin", False, "allow pruning again")):
        sp = lsub.add_parser(name, help=text)
        sp.add_argument("id")
        sp.add_argument("--json", action="store_true", help="print one JSON document")
        sp.set_defaults(handler=_pin, pinned=value)

    rm = lsub.add_parser("remove", help="remove an entry from the library (the video file stays, and stays "
                                        "out of later scans)")
    rm.add_argument("id")
    rm.add_argument("--json", action="store_true", help="print one JSON document")
    rm.set_defaults(handler=_remove)

    rs = lsub.add_parser("rescan", help="import the videos on disk and mark vanished ones missing")
    rs.add_argument("--include-removed", action="store_true",
                    help="also bring back videos removed with `library remove` (and forget that they were)")
    rs.add_argument("--json", action="store_true", help="print one JSON document")
    rs.set_defaults(handler=_rescan)

    ed = lsub.add_parser("edit", help="change an item's title, tags or schedule")
    ed.add_argument("id")
    ed.add_argument("--title", help="new title")
    ed.add_argument("--tags", metavar="A,B", help="comma-separated tags (replaces them; '' clears)")
    ed.add_argument("--schedule", metavar="ISO-8601|none",
                    help="publish date-time, e.g. 2030-05-01T09:00 or 2030-05-01T09:00:00+02:00; none clears")
    ed.add_argument("--json", action="store_true", help="print one JSON document")
    ed.set_defaults(handler=_edit)

    sv = lsub.add_parser("serve", help="show the library as a web page on this computer (127.0.0.1 only); "
                                       "the first line printed is its URL with the access key")
    sv.add_argument("--port", type=_port, metavar="N",
                    help=f"listen on this port (default: library_port, else {LIBRARY_PORT} or any free one)")
    sv.add_argument("--no-open", action="store_true", help="do not open the browser")
    # The tray's "Open library": stop after library_page_idle_s without a request.
    sv.add_argument("--idle-exit", action="store_true", help=argparse.SUPPRESS)
    sv.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.web.server import serve

    return serve(ctx.cfg, port=args.port, open_browser=not args.no_open, idle_exit=args.idle_exit)


def _library(ctx: Context) -> Library:
    from vidtray.services.library import open_library

    return open_library(ctx.cfg, on_corrupt=lambda moved: _corrupt_notice(ctx, moved))


def _corrupt_notice(ctx: Context, moved: Path) -> None:
    import sys

    print(f"vidtray: warning: the library could not be read; it was moved to {moved} and rebuilt "
          "from the videos folder", file=sys.stderr)


def _list(args: argparse.Namespace, ctx: Context) -> int:

    from vidtray.services.fsutil import plural

    lib = _library(ctx)
    items = lib.items()
    if args.json:
        ctx.print_json({"library": str(lib.path), "items": [item.as_dict() for item in items]})
        return 0
    if not items:
        print(f"no videos in {lib.path} (try `vidtray library rescan`)")
        return 0
    print(f"{'ID':<12}  {'STATUS':<7}  {'FLAGS':<5}  {'LENGTH':>6}  TITLE")
    for item in items:
        flags = ("P" if item.pinned else "-") + ("S" if item.scheduled else "-")
        # Another app may have put anything there (a text, 1e400): shown as unknown.
        length = "?" if item.duration_s is None else f"{item.duration_s:.1f}s"
        print(f"{item.id:<12}  {str(item.data.get('status', '?')):<7}  {flags:<5}  {length:>6}  "
              f"{item.data.get('title') or item.path}")
    s = lib.summary()
    print(f"{plural(s.items, 'item')}: {s.pinned} pinned, {s.scheduled} scheduled, {s.missing} missing "
          "(P = pinned, S = scheduled)")
    return 0


def _print_item(item: Item, ctx: Context, as_json: bool) -> None:
    if as_json:
        ctx.print_json(item)
        return
    width = max(len(str(k)) for k in item)
    for key, value in item.items():
        print(f"{key:<{width}}  {value if not isinstance(value, list) else ', '.join(map(str, value))}")


def _show(args: argparse.Namespace, ctx: Context) -> int:
    _print_item(_library(ctx).get(args.id).as_dict(), ctx, args.json)
    return 0


def _pin(args: argparse.Namespace, ctx: Context) -> int:
    item = _library(ctx).edit(args.id, pinned=args.pinned)
    if args.json:
        ctx.print_json(item)
    else:
        print(f"{'pinned' if args.pinned else 'unpinned'} {item['id']} ({item.get('title')})")
    return 0


def _remove(args: argparse.Namespace, ctx: Context) -> int:
    item = _library(ctx).remove(args.id)
    if args.json:
        ctx.print_json({"removed": item})
    else:
        print(f"removed {item['id']} from the library; the file stays at {item.get('path')} and later "
              "scans leave it out (`vidtray library rescan --include-removed` brings it back)")
    return 0


def parse_schedule(text: str) -> str | None:
    """``--schedule``: an ISO-8601 date-time (-> normalised string with offset) or ``none``."""
    if text.strip().lower() in ("none", "null", ""):
        return None
    value = text.strip()
    # A date alone is not a moment to publish at; ask for the time too.
    if len(value) <= 10 or value[10] not in "Tt ":
        raise UserError(f"--schedule: {text!r} is not an ISO-8601 date-time (e.g. 2030-05-01T09:00 or none)")
    try:
        when = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise UserError(
            f"--schedule: {text!r} is not an ISO-8601 date-time (e.g. 2030-05-01T09:00 or none)") from None
    if when.tzinfo is None:
        when = when.astimezone()  # the user's local time, stored with its offset so other apps agree
    return when.isoformat()


def _edit(args: argparse.Namespace, ctx: Context) -> int:
    changes: dict[str, object] = {}
    if args.title is not None:
        if not args.title.strip():
            raise UserError("--title must not be empty")
        changes["title"] = args.title
    if args.tags is not None:
        changes["tags"] = list(dict.fromkeys(t.strip() for t in args.tags.split(",") if t.strip()))
    if args.schedule is not None:
        changes["scheduled_at"] = parse_schedule(args.schedule)
    if not changes:
        raise UserError("library edit: nothing to change (give --title, --tags or --schedule)")
    item = _library(ctx).edit(args.id, **changes)
    if args.json:
        ctx.print_json(item)
    else:
        print(f"updated {item['id']}: " + ", ".join(f"{k}={item.get(k)!r}" for k in changes))
    return 0


def _rescan(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.services.fsutil import plural
    from vidtray.services.watcher import Watcher, watch_folders

    cfg = ctx.cfg
    folders = watch_folders(cfg)
    lib = _library(ctx)
    lib.ensure_writable()
    forgotten = lib.removed.forget() if args.include_removed and lib.removed is not None else []
    watcher = Watcher(lib, folders, thumbnails_dir=cfg.thumbnails_dir)
    folders = watcher.folders  # each real folder once (a watch_dirs symlink to the videos folder is not twice)
    report = watcher.reconcile()
    restored = sorted(set(report.imported) & {r["path"] for r in forgotten})
    if args.json:
        ctx.print_json({"library": str(lib.path), "folders": [str(f) for f in folders], **report.as_dict(),
                        "restored": restored})
        return 0
    print(f"rescanned {', '.join(str(f) for f in folders)}")
    print(f"  imported {len(report.imported)}, updated {len(report.updated)}, "
          f"marked missing {len(report.missing)}, skipped {len(report.skipped)}")
    for path in restored:
        print(f"  brought back: {path}")
    if report.removed:
        print(f"  left out {plural(len(report.removed), 'video')} you removed from the library "
              "(--include-removed brings them back)")
    for path in report.missing:
        print(f"  missing: {path}")
    for path, why in report.skipped:
        print(f"  skipped: {path}: {why}")
    for path in report.unavailable:
        print(f"  not available: {path}")
    for path in report.unreadable:
        print(f"  cannot list (its videos are left as they are): {path}")
    return 0
