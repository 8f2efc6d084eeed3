"""``vidtray config show [--json] | path``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from vidtray.config import config_path

if TYPE_CHECKING:
    from vidtray.cli import Context, Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser("config", help="show the settings or the config file's path")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser("show", help="print the effective settings")
    show.add_argument("--json", action="store_true", help="print one JSON document")
    show.set_defaults(handler=_show)
    path = csub.add_parser("path", help="print the config file that is (or would be) read")
    path.set_defaults(handler=_path)


def _show(args: argparse.Namespace, ctx: Context) -> int:
    doc = ctx.cfg.as_dict()
    if args.json:
        ctx.print_json(doc)
        return 0
    for key, value in doc.items():
        if isinstance(value, dict):
            for k, v in value.items():
                print(f"{key}.{k} = {v}")
        else:
            print(f"{key} = {value}")
    return 0


def _path(args: argparse.Namespace, ctx: Context) -> int:
    print(config_path(ctx.config_arg))
    return 0
