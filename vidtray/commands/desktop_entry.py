"""``vidtray desktop-entry install|remove|status [--json]``: vidtray in the application menu (Linux, BSD)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from vidtray.errors import UserError

if TYPE_CHECKING:
    from vidtray.cli import Context, Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser("desktop-entry", help="put vidtray in the application menu (Linux; install, remove, status)")
    dsub = p.add_subparsers(dest="desktop_entry_command", metavar="ACTION", required=True)
    for name, text in (
        ("install", "write the application entry and its icon for this user"),
        ("remove", "remove the application entry and its icon"),
        ("status", "say whether the application entry is installed"),
    ):
        action = dsub.add_parser(name, help=text)
        action.add_argument("--json", action="store_true", help="print one JSON document")
        action.set_defaults(handler=_run, action=name)


def _run(args: argparse.Namespace, ctx: Context) -> int:
    if sys.platform in ("win32", "darwin"):
        where = "Windows" if sys.platform == "win32" else "macOS"
        raise UserError(f"desktop-entry is for Linux and BSD desktops (freedesktop menus); on {where} "
                        "start vidtray with vidtray-tray, and use `vidtray autostart enable` to start it at login")
    from vidtray.services import autostart
    from vidtray.services.desktop_entry import AppEntry

    entry = AppEntry()
    if args.action == "install":
        from vidtray.icons import icon_path

        # --activate: picked from the menu while the tray runs, it opens the prompt window.
        st = entry.install([*autostart.launch_command(), "--activate"], icon_path("idle", "png"),
                           workdir=autostart.source_checkout())
    elif args.action == "remove":
        st = entry.remove()
    else:
        st = entry.status()
    if args.json:
        ctx.print_json(st.as_dict())
        return 0
    print(f"application menu entry: {'installed' if st.installed else 'not installed'} - {st.detail}")
    if st.installed and st.command:
        print(f"command: {' '.join(st.command)}")
    return 0
