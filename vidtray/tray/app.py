"""The tray: a pystray icon on the main thread, driving the headless services through ``ServiceLink``.

``TrayApp`` holds the state and the icon and runs the main thread; its rooms: ``menu`` (the menu from the
state), ``monitor`` (the status and storage reads), ``actions`` (what menu items do), ``children`` (popup,
dialogs, CLI children), and ``pystray_compat`` (the one module that touches pystray's private API).

The services start at once; the icon when there is a place for it (see ``backend.py``). Until a
tray host is there (the panel often starts after vidtray at login), or for good where no icon can
be shown (no PyGObject), the main thread waits in a small loop of its own, asks again every
couple of seconds, and says once (a notification and a log line) what is missing.

Threads and who touches what:

- main thread: the waiting loop, then pystray's loop (``icon.run``); menu callbacks run here and
  only post or start work; signals arrive here as bytes on a socket (``signals.py``), never as
  work done inside a signal handler;
- ``tray-ui``-side (see ``dispatch.py``): the only code that changes ``self.state`` and the icon;
- ``tray-monitor`` and ``tray-storage`` (``monitor.py``): read the status and the sizes, and post what
  changed;
- ``tray-action`` (``actions.py``): one at a time, the slow menu actions (confirmation dialogs and
  ``vidtray clean`` children, autostart, pause, cancel);
- the Daemon's own threads (watcher, scheduler, supervisor), started and stopped through the link;
- ``tray-quit`` and ``tray-deadline``: Quit (menu, SIGTERM, SIGINT, SIGHUP) stops the services
  (``SERVICES_STOP_S`` at most), then the icon; whatever still hangs, the process ends
  ``QUIT_DEADLINE_S`` after the quit began, and the OS lock goes with it.

Torch never loads here: generation runs in the worker process the supervisor starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from vidtray.config import Config
from vidtray.services.protocol import AnyEvent, Progress
from vidtray.tray.actions import Actions
from vidtray.tray.backend import BackendChoice, Probe, choose_backend, load_pystray
from vidtray.tray.children import Children
from vidtray.tray.dispatch import Dispatcher
from vidtray.tray.menu import MenuBuilder
from vidtray.tray.monitor import StatusMonitor
from vidtray.tray.pystray_compat import GTK_BACKENDS, icon_class
from vidtray.tray.signals import SignalPipe
from vidtray.tray.state import TrayState, icon_name, tooltip

if TYPE_CHECKING:
    from vidtray.services.notify import Notifier
    from vidtray.tray.link import Services

log = logging.getLogger("vidtray.tray")

SERVICES_STOP_S = 8.0  # a quit waits this long for the watcher, scheduler and worker...
QUIT_DEADLINE_S = 10.0  # ...and the process ends this long after the quit began, whatever still runs
HOST_POLL_S = 1.5  # while no tray host is there: how often to look again
NO_HOST_GRACE_S = 5.0  # at login the panel may come a moment after us: say "no tray" only after this
QUIT_HINT = "quit it with `vidtray tray --quit`"


class TrayApp:
    def __init__(self, cfg: Config, *, link: Services, notifier: Notifier, config_arg: str | None = None,
                 probe: Probe | None = None) -> None:
        self.cfg = cfg
        self.ps: ModuleType | None = None  # pystray, once a backend is chosen
        self.choice: BackendChoice | None = None
        self.probe = probe
        self.link = link
        self.notifier = notifier
        self.config_arg = config_arg
        self.state = TrayState(warn_free_gb=cfg.warn_free_gb)
        self.dispatcher = Dispatcher()
        self._signals = SignalPipe()
        self._stop = threading.Event()
        self._services_stopped = threading.Event()
        self._clean_stop = False  # the services stopped within SERVICES_STOP_S
        self._threads: list[threading.Thread] = []
        self._started = threading.Event()
        self.children = Children(config_arg, self._stop)
        self.monitor = StatusMonitor(cfg, link, self.children, state=self._current, post=self.post_state,
                                     stopping=self._stop)
        self.actions = Actions(cfg, link, notifier, self.children, state=self._current, post=self.post_state,
                               refresh_storage=self.monitor.refresh_storage, spawn=self._spawn, stopping=self._stop,
                               config_arg=config_arg)
        self.images = self._load_images()
        self.icon: Any = None  # the pystray icon, once there is a tray host for it
        link.on_event = self._on_generation_event

    def _current(self) -> TrayState:
        # The state is replaced, never mutated: reading the reference from any thread is safe.
        return self.state

    # -- icon -------------------------------------------------------------------------------
    def _load_images(self) -> dict[str, Any]:
        from PIL import Image

        from vidtray.icons import NAMES, icon_path

        images = {}
        for name in NAMES:
            with Image.open(icon_path(name, "png")) as img:
                images[name] = img.convert("RGBA")
        return images

    def _make_icon(self) -> Any:
        assert self.ps is not None and self.choice is not None
        menu = MenuBuilder(self.ps, self.cfg, self.actions, state=self._current,
                           refresh_storage=self.monitor.refresh_storage, quit=self.quit)
        cls = icon_class(self.ps, self.choice.name)
        return cls("vidtray", self.images[icon_name(self.state)], tooltip(self.state), menu=menu.menu())

    # -- state (UI side only) ---------------------------------------------------------------
    def post_state(self, **changes: Any) -> None:
        """Any thread: change the state; the UI side applies it and refreshes what changed."""
        self.dispatcher.post(lambda: self._apply(changes))

    def _apply(self, changes: dict[str, Any]) -> None:
        old = self.state
        new = old.with_(**changes)
        if new == old:
            return
        self.state = new
        if self.icon is None:  # no tray host yet: the icon starts from this state when it comes
            return
        if icon_name(new) != icon_name(old):
            self.icon.icon = self.images[icon_name(new)]
        if tooltip(new) != tooltip(old):
            self.icon.title = tooltip(new)
        self.icon.update_menu()

    def _on_generation_event(self, event: AnyEvent) -> None:
        """The supervisor's thread: a job was queued, claimed, progressed or ended; the monitor reads it now
        (progress events come every step, the monitor reads at most once a second while busy)."""
        if not isinstance(event, Progress):
            self.monitor.wake()

    # -- run --------------------------------------------------------------------------------
    def run(self, first: BackendChoice | None = None) -> int:
        """Main thread: block until Quit, SIGTERM, SIGINT or SIGHUP; 0 once everything stopped,
        1 when the services had to be left behind (see ``QUIT_DEADLINE_S``).

        ``first``: the backend choice the caller already made (it is made again while waiting)."""
        self._signals.install()
        self.actions.start()
        log.info("tray starting")
        self._spawn("tray-start", self._start_services)
        try:
            if self._wait_for_host(first or self._choose()):
                self._run_icon()
                if not self._stop.is_set():
                    log.warning("the icon's loop ended without a quit; quitting")
                    self.quit()
            # The services are stopping on `tray-quit` (after the icon, they have already stopped).
            while not self._services_stopped.is_set():
                self._wait_main(0.5)
        finally:
            # The signal handlers stay: a second signal (logout sends SIGHUP and SIGTERM) on the way
            # out must not kill the process with the default action instead of letting it finish.
            self._shutdown_threads()
        log.info("tray stopped")
        return 0 if self._clean_stop else 1

    def _choose(self) -> BackendChoice:
        return choose_backend(probe=self.probe)

    def _wait_for_host(self, choice: BackendChoice) -> bool:
        """Main thread, before any icon: True once pystray is loaded for a tray host that is there,
        False when the tray quits first. Meanwhile the services run and the UI queue is drained here."""
        self.dispatcher.use_wake(self._signals.wake)
        began = time.monotonic()
        announced = waiting_logged = False
        while not self._stop.is_set():
            if choice.shows_icon:
                choice, loaded = self._load(choice)
                if loaded:
                    if waiting_logged:
                        log.info("a system tray is there now (%s): showing the icon", choice.reason)
                    return True
            if not waiting_logged:
                log.info("no tray icon yet: %s; %s", choice.reason,
                         f"looking again every {HOST_POLL_S:g} s" if choice.wait else "the services run without one")
                waiting_logged = True
            if not announced and (not choice.wait or time.monotonic() - began >= NO_HOST_GRACE_S):
                self._announce_no_icon(choice)
                announced = True
            self._wait_main(HOST_POLL_S if choice.wait else None)
            if choice.wait and not self._stop.is_set():
                choice = self._choose()
        return False

    def _load(self, choice: BackendChoice) -> tuple[BackendChoice, bool]:
        """pystray for ``choice``: (the choice it was loaded with, True), or ("none" with why, False)."""
        try:
            self.ps, self.choice = load_pystray(choice)
        except RuntimeError as exc:
            log.error("tray icon: %s", exc)
            return BackendChoice("none", False, str(exc).removeprefix("cannot show a tray icon: ")), False
        return self.choice, True

    def _wait_main(self, timeout: float | None) -> None:
        """Main thread without an icon: wait for a signal, a UI post or the timeout; handle what came."""
        received = self._signals.wait(timeout)
        if received:
            self._on_signals(received)
        self.dispatcher.drain()

    def _announce_no_icon(self, choice: BackendChoice) -> None:
        """Once per start: the log line and the notification that say why there is no icon."""
        what = ("the watcher, scheduled jobs and generation queue run, and the icon appears as soon as a tray "
                "does" if choice.wait else "the watcher, scheduled jobs and generation queue run without it")
        parts = [choice.reason, choice.hint, f"meanwhile {what}; {QUIT_HINT}"]
        text = " ".join(f"{p[:1].upper()}{p[1:]}." for p in parts if p)
        log.warning("no tray icon: %s", text)
        self.notifier.send("vidtray: no tray icon", text)

    def _run_icon(self) -> None:
        """Main thread: show the icon and run pystray's loop until the icon stops."""
        assert self.choice is not None
        self.icon = self._make_icon()
        if self.choice.name in GTK_BACKENDS:
            self.dispatcher.use_glib()
            self._signals.watch_glib(self._on_signals)
        else:
            self.dispatcher.use_thread("tray-ui")
        log.info("tray icon (backend %s, menu %s): %s", self.choice.name, "yes" if self.choice.has_menu else "no",
                 self.choice.reason)
        self.icon.run(self._setup)

    def _setup(self, icon: Any) -> None:
        # pystray's setup thread: return quickly, the icon's stop() joins it.
        icon.visible = True
        icon.title = tooltip(self.state)  # GTK shows no tooltip until the title is set once
        assert self.choice is not None
        if self.choice.name not in GTK_BACKENDS:
            # Loops without a hook (win32, darwin) hear signals on a thread, now that stop() can end them.
            self._signals.watch_thread(self._on_signals)

    def _start_services(self) -> None:
        try:
            self.link.start()
        except Exception as exc:
            log.exception("services did not start")
            self.monitor.problems = (f"Services failed: {exc}",)
        self._started.set()
        self._check_notification_daemon()
        _release_startup_memory()
        _dump_modules()
        self._spawn("tray-monitor", self.monitor.run_status)
        self._spawn("tray-storage", self.monitor.run_storage)

    def _check_notification_daemon(self) -> None:
        """A log line when nothing on the session bus would show our notifications (doctor says it too)."""
        if not self.notifier.enabled or sys.platform in ("win32", "darwin") or os.path.isdir("/app"):
            return
        from vidtray.services.notify import query_notification_daemon

        answer = query_notification_daemon()
        if answer.get("reached") is False:
            log.warning("no notification daemon answers on the session bus (%s): vidtray's notifications will "
                        "not show; desktops bring their own, else install one (for example dunst)",
                        answer.get("detail"))

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _on_signals(self, received: list[int]) -> None:
        """Main thread (``tray-signals`` on win32/darwin)."""
        names = ", ".join(dict.fromkeys(SignalPipe.name(s) for s in received))  # C and Python both write it
        if self._stop.is_set():
            log.info("%s while quitting: the quit goes on (at most %g s in all)", names, QUIT_DEADLINE_S)
            return
        log.info("%s: quitting", names)
        self.quit()

    # -- quit -------------------------------------------------------------------------------
    def quit(self) -> None:
        """Main thread: stop the services (watcher, scheduler, worker), then the icon, within the deadline."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.monitor.stop()
        _start_deadline(self)
        self.post_state(quitting=True)
        self.children.end_windows()
        threading.Thread(target=self._stop_all, name="tray-quit", daemon=True).start()

    def _stop_all(self) -> None:
        started = time.monotonic()
        self.children.end_reports()
        stopper = threading.Thread(target=self._stop_services, name="tray-stop-services", daemon=True)
        stopper.start()
        stopper.join(SERVICES_STOP_S)
        if stopper.is_alive():
            log.error("services did not stop within %g s; quitting anyway", SERVICES_STOP_S)
        else:
            self._clean_stop = True
            log.info("services stopped in %.1f s", time.monotonic() - started)
        self._services_stopped.set()
        if self.icon is not None:
            self.dispatcher.post(self.icon.stop)
        else:
            self._signals.wake()

    def _stop_services(self) -> None:
        if not self._started.wait(SERVICES_STOP_S):
            return  # still starting: the deadline takes it down with the process
        try:
            self.link.stop()
        except Exception:
            log.exception("stopping the services failed")

    def _shutdown_threads(self) -> None:
        self._stop.set()
        self.monitor.stop()
        self.actions.close()
        self.dispatcher.close()
        self.children.end_windows()

    @property
    def clean_stop(self) -> bool:
        """The services stopped within ``SERVICES_STOP_S`` of the quit."""
        return self._clean_stop

    def hard_exit(self, code: int) -> None:
        """End the process now (the OS lock goes with it): the last resort of a quit that hangs."""
        from vidtray.tray.instance import forget_pid

        forget_pid()
        for handler in logging.getLogger("vidtray").handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(code)


def _start_deadline(app: TrayApp) -> None:
    """From the quit on, the process has ``QUIT_DEADLINE_S``: a service that will not stop, a GTK loop that
    will not end or a thread that keeps the interpreter from exiting cannot keep the tray (and its lock)."""

    def expire() -> None:
        time.sleep(QUIT_DEADLINE_S)
        code = 0 if app.clean_stop else 1
        log.error("the tray did not end within %g s of the quit; exiting now (status %d)", QUIT_DEADLINE_S, code)
        app.hard_exit(code)

    threading.Thread(target=expire, name="tray-deadline", daemon=True).start()


def _release_startup_memory() -> None:
    """Hand the heap that start-up used and freed (imports, scans) back to the OS: a tray idles for days."""
    import gc

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass


def _dump_modules() -> None:
    """Debug hook for benchmarks and tests: ``VIDTRAY_DEBUG_MODULES=<file>`` gets the loaded module names."""
    target = os.environ.get("VIDTRAY_DEBUG_MODULES")
    if target:
        try:
            Path(target).write_text("\n".join(sorted(sys.modules)) + "\n", encoding="utf-8")
        except OSError as exc:
            log.warning("cannot write the module list to %s: %s", target, exc)
