"""``vidtray tray``: the tray icon with the watcher, scheduler and worker supervisor behind it.

Also the ``vidtray-tray`` gui-script (no console on Windows). Exit status: 0 after Quit,
1 when another tray of this user already runs (or no tray can be shown), 2 for a bad config:
then one desktop notification names the file and the key, since at login nobody reads stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger("vidtray.tray")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tray", help="run the tray icon (and the watcher, scheduler and worker behind it)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx) -> int:
    from vidtray.errors import ConfigError, OperationFailed

    try:
        cfg = ctx.cfg
    except ConfigError as exc:
        notify_bad_config(exc)
        raise
    from vidtray.tray.backend import choose_backend, load_pystray
    from vidtray.tray.instance import single_instance

    # The lock first: a second tray says "already running" whatever else is wrong with this start.
    with single_instance():
        choice = choose_backend()
        if choice.name == "none":
            raise OperationFailed(f"cannot show a tray icon: {choice.reason}; "
                                  "`vidtray watch` runs the same services without one")
        try:
            pystray, choice = load_pystray(choice)
        except RuntimeError as exc:
            raise OperationFailed(str(exc)) from exc
        from vidtray.services.notify import make_notifier
        from vidtray.tray.app import TrayApp
        from vidtray.tray.link import ServiceLink

        config_arg = str(Path(ctx.config_arg).expanduser().absolute()) if ctx.config_arg else None
        if config_arg:
            # Every child (the worker, the popup, dialogs, `vidtray clean`) reads the same settings.
            os.environ["VIDTRAY_CONFIG"] = config_arg
        notifier = make_notifier(cfg)
        app = TrayApp(cfg, pystray=pystray, choice=choice, link=ServiceLink(cfg, notifier), notifier=notifier,
                      config_arg=config_arg)
        app.run()
    return 0


def notify_bad_config(exc: Exception) -> None:
    """One notification (and a log line) for a config the tray cannot start with."""
    from vidtray.services.notify import Notifier

    log.error("tray not started: %s", exc)
    key = getattr(exc, "key", None)
    source = getattr(exc, "source", "the config file")
    title = f"vidtray did not start: fix {key}" if key else "vidtray did not start: config error"
    Notifier().send(title, f"{exc}\nFile: {source}")
