"""``vidtray autostart enable|disable|status [--json]``: start the tray on login."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vidtray.cli import Context, Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser("autostart", help="start the tray on login (enable, disable, status)")
    asub = p.add_subparsers(dest="autostart_command", metavar="ACTION", required=True)
    for name, text in (
        ("enable", "start the tray at every login"),
        ("disable", "stop starting the tray at login"),
        ("status", "say whether the tray starts at login"),
    ):
        action = asub.add_parser(name, help=text)
        action.add_argument("--json", action="store_true", help="print one JSON document")
        action.set_defaults(handler=_run, action=name)


def _run(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.services import autostart

    st = {"enable": autostart.enable, "disable": autostart.disable, "status": autostart.status}[args.action]()
    if args.json:
        ctx.print_json(st.as_dict())
        return 0
    print(f"start on login: {'on' if st.enabled else 'off'} - {st.detail}")
    if st.enabled and st.command:
        print(f"command: {' '.join(st.command)}")
    return 0
