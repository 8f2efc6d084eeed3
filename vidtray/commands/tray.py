"""``vidtray tray``: the tray icon with the watcher, scheduler and worker supervisor behind it.

Also the ``vidtray-tray`` gui-script (no console on Windows). Exit status: 0 after Quit (menu,
SIGTERM, SIGINT, SIGHUP or ``vidtray tray --quit``), 1 when another tray of this user already runs,
when there is no display at all, or when a quit had to leave the services behind; 2 for a bad
config: then one desktop notification names the file and the key, since at login nobody reads stderr.

Where a display is there but no icon can be shown yet (no tray host, no PyGObject) the tray still
starts: the services run, one notification says what is missing, and the icon comes with the host.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vidtray.cli import Context, Subparsers

log = logging.getLogger("vidtray.tray")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("tray", help="run the tray icon (and the watcher, scheduler and worker behind it)")
    p.add_argument("--quit", action="store_true",
                   help="ask the running tray to quit (one without an icon too) and wait until it has")
    p.add_argument("--activate", action="store_true",
                   help="if a tray already runs, open its prompt window instead of saying so (the app menu's entry)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.errors import ConfigError, OperationFailed

    if args.quit:
        return quit_running()
    try:
        cfg = ctx.cfg
    except ConfigError as exc:
        notify_bad_config(exc)
        raise
    from vidtray.tray.backend import choose_backend
    from vidtray.tray.instance import AlreadyRunning, single_instance

    # The lock first: a second tray says "already running" whatever else is wrong with this start.
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(single_instance())
        except AlreadyRunning:
            if not args.activate:
                raise
            # Started from the application menu while the tray runs: the person wants to make a video.
            open_popup(ctx.config_arg)
            return 0
        choice = choose_backend()
        if choice.fatal:
            raise OperationFailed(f"cannot show a tray icon: {choice.reason}; "
                                  "`vidtray watch` runs the same services without one")
        from vidtray.services.notify import make_notifier
        from vidtray.tray.app import TrayApp
        from vidtray.tray.link import ServiceLink

        config_arg = str(Path(ctx.config_arg).expanduser().absolute()) if ctx.config_arg else None
        if config_arg:
            # Every child (the worker, the popup, dialogs, `vidtray clean`) reads the same settings.
            os.environ["VIDTRAY_CONFIG"] = config_arg
        notifier = make_notifier(cfg)
        app = TrayApp(cfg, link=ServiceLink(cfg, notifier), notifier=notifier, config_arg=config_arg)
        return app.run(choice)


def open_popup(config_arg: str | None) -> None:
    """The prompt window as its own process, detached: this command returns at once."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "vidtray.tray.popup"]
    if config_arg:
        argv += ["--config", str(Path(config_arg).expanduser().absolute())]
    # Detached, pipes included: a caller reading our output must not wait for the window to close.
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    log.info("a tray already runs: opened its prompt window")


def quit_running() -> int:
    from vidtray.tray.app import QUIT_DEADLINE_S
    from vidtray.tray.instance import stop_running

    pid = stop_running(timeout=QUIT_DEADLINE_S + 5)
    print("no vidtray tray is running" if pid is None else f"vidtray tray (pid {pid}) has quit")
    return 0


def notify_bad_config(exc: Exception) -> None:
    """One notification (and a log line) for a config the tray cannot start with."""
    from vidtray.services.notify import Notifier

    log.error("tray not started: %s", exc)
    key = getattr(exc, "key", None)
    source = getattr(exc, "source", "the config file")
    title = f"vidtray did not start: fix {key}" if key else "vidtray did not start: config error"
    Notifier().send(title, f"{exc}\nFile: {source}")
