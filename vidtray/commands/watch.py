"""``vidtray watch``: the headless host in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vidtray.cli import Context, Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser("watch", help="headless: watcher, scheduled jobs and generation queue, until stopped")
    p.set_defaults(handler=_watch)


def _watch(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.services.daemon import Daemon
    from vidtray.services.notify import make_notifier

    cfg = ctx.cfg
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    notifier = make_notifier(cfg)
    daemon = Daemon(cfg, notifier)
    try:
        daemon.start()
        assert daemon.watcher is not None  # start() armed it (or raised)
        folders = ", ".join(str(f) for f in daemon.watcher.folders)
        print(f"vidtray: watching {folders}; library {cfg.library_file} (Ctrl+C stops)", flush=True)
        # A timed wait so the main thread runs the Python-level signal handler promptly.
        while not stop.wait(0.5):
            pass
        print("vidtray: stopping", file=sys.stderr, flush=True)
    finally:
        daemon.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
