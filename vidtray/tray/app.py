"""The tray: a pystray icon on the main thread, driving the headless services through ``ServiceLink``.

The services start at once; the icon when there is a place for it (see ``backend.py``). Until a
tray host is there (the panel often starts after vidtray at login), or for good where no icon can
be shown (no PyGObject), the main thread waits in a small loop of its own, asks again every
couple of seconds, and says once (a notification and a log line) what is missing.

Threads and who touches what:

- main thread: the waiting loop, then pystray's loop (``icon.run``); menu callbacks run here and
  only post or start work; signals arrive here as bytes on a socket (``signals.py``), never as
  work done inside a signal handler;
- ``tray-ui``-side (see ``dispatch.py``): the only code that changes ``self.state`` and the icon;
- ``tray-monitor``: every few seconds reads job progress, queue pause flag, free space, library
  count and autostart status, and posts what changed;
- ``tray-storage``: runs ``vidtray storage --json`` in a child process (so the tray never imports
  huggingface_hub) at start, after deletions and finished jobs, and every half hour;
- ``tray-action``: one at a time, the slow menu actions (confirmation dialogs and ``vidtray
  clean`` children, autostart, pause, cancel);
- the Daemon's own threads (watcher, scheduler, supervisor), started and stopped through the link;
- ``tray-quit`` and ``tray-deadline``: Quit (menu, SIGTERM, SIGINT, SIGHUP) stops the services
  (``SERVICES_STOP_S`` at most), then the icon; whatever still hangs, the process ends
  ``QUIT_DEADLINE_S`` after the quit began, and the OS lock goes with it.

Torch never loads here: generation runs in the worker process the supervisor starts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from vidtray.config import Config, config_path, config_template
from vidtray.services.childenv import child_env
from vidtray.services.fsutil import human_size, plural
from vidtray.services.protocol import AnyEvent, Progress
from vidtray.tray import tkhelp
from vidtray.tray.backend import BackendChoice, Probe, choose_backend, load_pystray
from vidtray.tray.dispatch import Dispatcher
from vidtray.tray.signals import SignalPipe
from vidtray.tray.state import StorageView, TrayState, icon_name, job_line, parse_storage_report, storage_lines, tooltip

log = logging.getLogger("vidtray.tray")

MONITOR_INTERVAL_S = 5.0
BUSY_INTERVAL_S = 1.0  # while a job runs, so "Generating 12/40" keeps up
AUTOSTART_EVERY = 12  # monitor ticks between autostart re-reads (a minute)
STORAGE_INTERVAL_S = 1800.0
CHILD_TIMEOUT_S = 600.0
SERVICES_STOP_S = 8.0  # a quit waits this long for the watcher, scheduler and worker...
QUIT_DEADLINE_S = 10.0  # ...and the process ends this long after the quit began, whatever still runs
HOST_POLL_S = 1.5  # while no tray host is there: how often to look again
NO_HOST_GRACE_S = 5.0  # at login the panel may come a moment after us: say "no tray" only after this
QUIT_HINT = "quit it with `vidtray tray --quit`"


def open_path(path: Path) -> None:
    """Open a file or folder with the desktop's default application. Raises OSError on failure."""
    if sys.platform == "win32":
        os.startfile(str(path))  # type: ignore[attr-defined]
        return
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    try:
        subprocess.Popen([opener, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except FileNotFoundError:
        raise OSError(f"{opener} is not installed (package: xdg-utils)") from None


class TrayApp:
    def __init__(self, cfg: Config, *, link: Any, notifier: Any, config_arg: str | None = None,
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
        self.actions = Dispatcher()  # the slow menu actions, one at a time on `tray-action`
        self._signals = SignalPipe()
        self._stop = threading.Event()
        self._wake = threading.Event()  # a generation event: read the status now
        self._storage_due = threading.Event()
        self._services_stopped = threading.Event()
        self._clean_stop = False  # the services stopped within SERVICES_STOP_S
        self._popup: subprocess.Popen[bytes] | None = None
        self._dialogs: set[subprocess.Popen[str]] = set()
        self._threads: list[threading.Thread] = []
        self._started = threading.Event()
        self._reports: set[subprocess.Popen[str]] = set()  # running read-only children
        self._service_problems: tuple[str, ...] = ()  # set once at start; the monitor adds live ones
        self.images = self._load_images()
        self.icon: Any = None  # the pystray icon, once there is a tray host for it
        link.on_event = self._on_generation_event

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
        cls = _icon_class(self.ps, self.choice.name)
        return cls("vidtray", self.images[icon_name(self.state)], tooltip(self.state), menu=self._menu())

    def _menu(self) -> Any:
        assert self.ps is not None
        menu, item = self.ps.Menu, self.ps.MenuItem

        def when_job(_item: Any) -> bool:
            return self.state.job is not None

        return menu(
            item("Generate video...", self._on_generate, default=True),
            item(lambda _i: self._job_text(), None, enabled=False, visible=when_job),
            item("Cancel current job", self._on_cancel, visible=when_job),
            menu.SEPARATOR,
            item("Open videos folder", lambda: self._open(self.cfg.videos_dir, create=True)),
            item("Open library", lambda: self._open(self.cfg.library_file)),
            item("Storage", menu(self._storage_items)),
            menu.SEPARATOR,
            item("Pause watching", self._on_pause_watching, checked=lambda _i: self.state.watching_paused),
            item("Start on login", self._on_autostart, checked=lambda _i: self.state.autostart),
            item("Settings", self._on_settings),
            item("Open log", self._on_open_log),
            menu.SEPARATOR,
            item("Quit", self._on_quit),
        )

    def _job_text(self) -> str:
        job = self.state.job
        if job is None:
            return ""
        prompt = job.prompt if len(job.prompt) <= 40 else job.prompt[:39] + "…"
        return f"{job_line(job)}: {prompt}"

    def _storage_items(self) -> Any:
        assert self.ps is not None
        item, sep = self.ps.MenuItem, self.ps.Menu.SEPARATOR
        for line in storage_lines(self.state.storage, self.state.free_bytes):
            yield item(line, None, enabled=False)
        yield sep
        yield item("Delete generated videos...", self._on_delete_videos)
        yield item("Delete videos older than N days...", self._on_delete_older)
        view = self.state.storage
        for repo, size, broken in view.models if view else ():
            label = f"Delete {repo}{' (broken)' if broken else ''} ({human_size(size)})..."
            yield item(label, self._delete_model_action(repo, size))
        yield sep
        yield item("Refresh sizes", lambda: self._storage_due.set())

    def _delete_model_action(self, repo: str, size: int) -> Callable[[], None]:
        # pystray counts a callback's parameters (defaults included), so bind through a closure.
        return lambda: self._on_delete_model(repo, size)

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

    # -- run --------------------------------------------------------------------------------
    def run(self, first: BackendChoice | None = None) -> int:
        """Main thread: block until Quit, SIGTERM, SIGINT or SIGHUP; 0 once everything stopped,
        1 when the services had to be left behind (see ``QUIT_DEADLINE_S``).

        ``first``: the backend choice the caller already made (it is made again while waiting)."""
        self._signals.install()
        self.actions.use_thread("tray-action")
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
                try:
                    self.ps, self.choice = load_pystray(choice)
                except RuntimeError as exc:
                    log.error("tray icon: %s", exc)
                    choice = BackendChoice("none", False, str(exc).removeprefix("cannot show a tray icon: "))
                else:
                    if waiting_logged:
                        log.info("a system tray is there now (%s): showing the icon", self.choice.reason)
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
        if self.choice.name in ("gtk", "appindicator"):
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
        if self.choice.name not in ("gtk", "appindicator"):
            # Loops without a hook (win32, darwin) hear signals on a thread, now that stop() can end them.
            self._signals.watch_thread(self._on_signals)

    def _start_services(self) -> None:
        try:
            self.link.start()
        except Exception as exc:
            log.exception("services did not start")
            self._service_problems = (f"Services failed: {exc}",)
        self._started.set()
        self._check_notification_daemon()
        _release_startup_memory()
        _dump_modules()
        self._spawn("tray-monitor", self._monitor)
        self._spawn("tray-storage", self._storage_loop)

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

    # -- background loops -------------------------------------------------------------------
    def _monitor(self) -> None:
        tick = 0
        while not self._stop.is_set():
            try:
                changes = self._read_status(tick)
            except Exception:  # a read that fails now may work next time; the tray stays up
                log.exception("status read failed")
                changes = {}
            if changes:
                self.post_state(**changes)
            tick += 1
            # The state is replaced, never mutated: reading the reference from this thread is safe.
            self._wake.wait(BUSY_INTERVAL_S if self.state.job is not None else MONITOR_INTERVAL_S)
            self._wake.clear()

    def _on_generation_event(self, event: AnyEvent) -> None:
        """The supervisor's thread: a job was queued, claimed, progressed or ended; the monitor reads it now
        (progress events come every step, the monitor reads at most once a second while busy)."""
        if not isinstance(event, Progress):
            self._wake.set()

    def _read_status(self, tick: int) -> dict[str, Any]:
        from vidtray.paths import free_bytes

        changes: dict[str, Any] = dict(self.link.snapshot())
        changes["free_bytes"] = free_bytes(self.cfg.videos_dir)
        problems = [*self._service_problems, *changes.pop("problems", ())]
        if not self.cfg.videos_dir.is_dir():
            problems.append("Videos folder missing")
        changes["problems"] = tuple(problems)
        if tick % AUTOSTART_EVERY == 0:
            changes["autostart"] = self._autostart_enabled()
        # A finished job or new videos change the sizes in the Storage menu.
        if changes.get("videos") != self.state.videos and self.state.videos is not None:
            self._storage_due.set()
        return changes

    @staticmethod
    def _autostart_enabled() -> bool:
        from vidtray.services import autostart

        try:
            return autostart.status().enabled
        except Exception:
            log.exception("autostart status failed")
            return False

    def _storage_loop(self) -> None:
        self._storage_due.set()
        while not self._stop.is_set():
            if self._storage_due.wait(STORAGE_INTERVAL_S) and self._stop.is_set():
                return
            self._storage_due.clear()
            self.post_state(storage=self._read_storage())

    def _read_storage(self) -> StorageView:
        try:
            out = self.run_cli(["storage", "--json"], timeout=300, read_only=True)
        except Exception as exc:
            (log.debug if self._stop.is_set() else log.warning)("storage report failed: %s", exc)
            return StorageView(error=str(exc))
        view = parse_storage_report(json.loads(out))
        log.info("storage sizes: %d videos (%s), model cache %s (%d models)", view.videos_count,
                 human_size(view.videos_bytes), human_size(view.models_bytes), len(view.models))
        return view

    def run_cli(self, args: Sequence[str], timeout: float = CHILD_TIMEOUT_S, *, read_only: bool = False) -> str:
        """Run ``vidtray ARGS`` (this vidtray, this config) in a child; its stdout, or RuntimeError.

        A ``read_only`` child (a report) is stopped when the tray quits; one that deletes is left to finish.
        """
        argv = [sys.executable, "-m", "vidtray"]
        if self.config_arg:
            argv += ["--config", str(Path(self.config_arg).expanduser().absolute())]
        argv += list(args)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                                stdin=subprocess.DEVNULL)
        if read_only:
            self._reports.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError(f"`vidtray {' '.join(args)}` took longer than {timeout:.0f} s") from None
        finally:
            self._reports.discard(proc)
        if proc.returncode != 0:
            if self._stop.is_set():
                raise RuntimeError("stopped: the tray is quitting")
            lines = err.strip().splitlines()
            message = lines[-1] if lines else f"exit status {proc.returncode}"
            raise RuntimeError(message.removeprefix("vidtray: error: "))
        return out

    def _dialog(self, kind: str, message: str, ok: str, default: float | None = None) -> str | None:
        """A Tk dialog child (``tray-action``): its stdout when confirmed, None when cancelled;
        RuntimeError, saying why, when it could not open (Tk missing, no display)."""
        argv = [sys.executable, "-m", "vidtray.tray.dialog", kind, "--title", "vidtray", "--message", message,
                "--ok", ok]
        if default is not None:
            argv += ["--default", f"{default:g}"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                                stdin=subprocess.DEVNULL)
        self._dialogs.add(proc)
        try:
            out, err = proc.communicate()
        finally:
            self._dialogs.discard(proc)
        if proc.returncode == 0:
            return out.strip()
        if proc.returncode == 1 or self._stop.is_set():
            return None
        raise RuntimeError(_child_error(err, proc.returncode, "the confirmation dialog"))

    # -- menu actions (main thread: post or hand off, never block) --------------------------
    def _on_generate(self) -> None:
        if self._popup is not None and self._popup.poll() is None:
            log.info("the prompt popup is already open")
            return
        argv = [sys.executable, "-m", "vidtray.tray.popup"]
        if self.config_arg:
            argv += ["--config", str(Path(self.config_arg).expanduser().absolute())]
        try:
            self._popup = subprocess.Popen(argv, env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE)
        except OSError as exc:
            log.error("cannot open the prompt popup: %s", exc)
            self.notifier.send("Cannot open the prompt window", str(exc))
            return
        self._spawn("tray-popup", lambda p=self._popup: self._wait_popup(p))

    def _wait_popup(self, proc: subprocess.Popen[bytes]) -> None:
        out, err = proc.communicate()
        if proc.returncode == 0:
            log.info("popup queued: %s", out.decode(errors="replace").strip())
            self.post_state(**self.link.snapshot())
            return
        text = err.decode(errors="replace")
        # 1 without a word: closed without queueing. Anything else is something the user must hear
        # about, or the click that opened nothing would say nothing.
        if self._stop.is_set() or (proc.returncode == 1 and "vidtray: error:" not in text):
            return
        reason = _child_error(text, proc.returncode, "the prompt window")
        log.warning("prompt window: %s", reason)
        self.notifier.send("Cannot open the prompt window", reason)

    def _on_cancel(self) -> None:
        job = self.state.job
        if job is not None:
            def work() -> None:
                self.link.cancel(job.id)
                self.post_state(**self.link.snapshot())

            self._act("cancel the job", work)

    def _open(self, path: Path, create: bool = False) -> None:
        def work() -> None:
            if create:
                path.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                raise OSError(f"{path} does not exist yet")
            open_path(path)

        self._act(f"open {path}", work)

    def _on_settings(self) -> None:
        def work() -> None:
            path = config_path(self.config_arg)
            if not path.exists():
                from vidtray.services.fsutil import atomic_write_text

                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, config_template())
            open_path(path)

        self._act("open the settings", work)

    def _on_open_log(self) -> None:
        from vidtray.logs import log_file

        self._open(log_file())

    def _on_pause_watching(self) -> None:
        paused = not self.state.watching_paused

        def work() -> None:
            self.link.set_watching_paused(paused)
            self.post_state(watching_paused=paused)

        self._act("pause watching" if paused else "resume watching", work)

    def _on_autostart(self) -> None:
        enable = not self.state.autostart

        def work() -> None:
            from vidtray.services import autostart

            st = autostart.enable() if enable else autostart.disable()
            log.info("start on login: %s", st.detail)
            self.post_state(autostart=st.enabled)

        self._act("change start on login", work)

    def _on_delete_videos(self) -> None:
        self._act("delete videos", lambda: self._delete_videos(None))

    def _on_delete_older(self) -> None:
        def work() -> None:
            default = self.cfg.prune_after_days or 30
            answer = self._dialog("days", "Delete generated videos older than how many days?\n"
                                          "Pinned and scheduled videos are kept.", "Next", default)
            if answer is not None:
                self._delete_videos(float(answer))

        self._act("delete old videos", work)

    def _delete_videos(self, older_than: float | None) -> None:
        # In this process, not through `vidtray clean` children: the dialog asks about one plan and
        # exactly that plan is executed, so a video that arrives while the dialog is open stays.
        # (storage and library import no huggingface_hub or torch.)
        from vidtray.services import storage
        from vidtray.services.library import open_library

        lib = open_library(self.cfg)
        plan = storage.plan_clean(self.cfg, lib, older_than_days=older_than, now=time.time())
        count = len(plan.videos)
        scope = "" if older_than is None else f" older than {older_than:g} days"
        if not count:
            self.notifier.send("Nothing to delete", f"No generated videos{scope} to delete.")
            return
        where = "to the trash" if self.cfg.prune_to_trash else "for good (prune_to_trash is off)"
        pinned = sum(1 for k in plan.kept if k["reason"].startswith("pinned"))
        kept = f"\n{plural(pinned, 'pinned or scheduled video')} kept." if pinned else ""
        if len(plan.kept) > pinned:
            kept += f"\n{plural(len(plan.kept) - pinned, 'video')} new to the library kept."
        message = f"Delete {plural(count, 'generated video')}{scope} " \
                  f"({human_size(plan.freed_bytes)}) {where}?{kept}"
        if self._dialog("confirm", message, "Delete") is None:
            log.info("delete videos: not confirmed")
            return
        result = storage.execute_clean(lib, plan, to_trash=self.cfg.prune_to_trash)
        body = f"{plural(len(result.deleted), 'video')}, {human_size(result.freed_bytes)} freed"
        if result.skipped:
            body += f"; {plural(len(result.skipped), 'file')} changed since you confirmed, left alone"
        self.notifier.send("Videos deleted", body)
        self._storage_due.set()

    def _on_delete_model(self, repo: str, size: int) -> None:
        def work() -> None:
            message = f"Delete {repo} ({human_size(size)}) from the model cache?\n" \
                      "It downloads again the next time it is used."
            if self._dialog("confirm", message, "Delete") is None:
                return
            result = json.loads(self.run_cli(["clean", "model", repo, "--yes", "--json"]))
            self.notifier.send("Model deleted", f"{repo}: {human_size(result['freed_bytes'])} freed")
            self._storage_due.set()

        self._act(f"delete {repo}", work)

    def _act(self, what: str, work: Callable[[], None]) -> None:
        """Main thread: run a slow action on ``tray-action``, after the ones before it."""
        self.actions.post(lambda: self._guard(what, work))

    def _guard(self, what: str, work: Callable[[], None]) -> None:
        """Run an action; a failure is logged and shown, never raised into pystray."""
        try:
            work()
        except Exception as exc:
            if self._stop.is_set():
                log.info("%s: stopped by the quit (%s)", what, exc)
                return
            log.warning("could not %s: %s", what, exc, exc_info=True)
            self.notifier.send(f"Could not {what}", str(exc))

    def _on_quit(self) -> None:
        self.quit()

    # -- quit -------------------------------------------------------------------------------
    def quit(self) -> None:
        """Main thread: stop the services (watcher, scheduler, worker), then the icon, within the deadline."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._storage_due.set()
        _start_deadline(self)
        self.post_state(quitting=True)
        self._end_children()
        threading.Thread(target=self._stop_all, name="tray-quit", daemon=True).start()

    def _stop_all(self) -> None:
        started = time.monotonic()
        for proc in list(self._reports):
            proc.terminate()
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

    def _end_children(self) -> None:
        """The Tk children (prompt window, dialogs) go with the tray; `vidtray clean` children finish."""
        for proc in [self._popup, *self._dialogs]:
            if proc is not None and proc.poll() is None:
                proc.terminate()

    def _shutdown_threads(self) -> None:
        self._stop.set()
        self._storage_due.set()
        self.actions.close()
        self.dispatcher.close()
        self._end_children()

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
        code = 0 if app._clean_stop else 1
        log.error("the tray did not end within %g s of the quit; exiting now (status %d)", QUIT_DEADLINE_S, code)
        app.hard_exit(code)

    threading.Thread(target=expire, name="tray-deadline", daemon=True).start()


def _child_error(stderr: str, code: int | None, what: str) -> str:
    """The reason a Tk child gave (its ``vidtray: error:`` line), or what is known without one."""
    lines = [line for line in stderr.strip().splitlines() if line.startswith("vidtray: error: ")]
    if lines:
        return lines[-1].removeprefix("vidtray: error: ")
    if code == tkhelp.EXIT_MISSING_TK:
        return tkhelp.missing_tk_message(what[:1].upper() + what[1:])
    tail = stderr.strip().splitlines()
    return f"{what} exited with status {code}" + (f": {tail[-1]}" if tail else "")


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


class _SafeNotifier:
    """pystray's own D-Bus notifier, made harmless: vidtray does not use it, but pystray's GTK base
    creates it at start and hides it at exit, and both raise when no notification daemon answers."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner

    def notify(self, *args: Any, **kwargs: Any) -> None:
        if self.inner is not None:
            try:
                self.inner.notify(*args, **kwargs)
            except Exception as exc:
                log.debug("pystray notification failed: %s", exc)

    def hide(self) -> None:
        if self.inner is not None:
            try:
                self.inner.hide()
            except Exception as exc:
                log.debug("pystray notification hide failed: %s", exc)


def _icon_class(pystray: ModuleType, backend: str) -> type:
    """pystray's Icon, hardened for the GTK-based backends."""
    base = pystray.Icon
    if backend not in ("gtk", "appindicator"):
        return base

    class Icon(base):  # type: ignore[misc,valid-type]
        def _initialize(self) -> None:
            # pystray's own version (a) connects to the notification daemon and raises if none answers,
            # which would take the whole tray down (vidtray notifies through its own Notifier), and
            # (b) resets SIGINT to the default action, which would kill the tray without a quit.
            from pystray._util import notify_dbus

            try:
                self._notifier = _SafeNotifier(notify_dbus.Notifier())
            except Exception as exc:
                log.warning("tray: no notification daemon for pystray (%s); the icon works without it", exc)
                self._notifier = _SafeNotifier()
            self._mark_ready()

        if backend == "gtk":
            def _update_title(self) -> None:
                # pystray sets only the accessible title; the tooltip is what a user hovers to read.
                from gi.repository import GLib

                title = self.title

                def apply() -> bool:
                    self._status_icon.set_title(title)
                    self._status_icon.set_tooltip_text(title)
                    return False

                GLib.idle_add(apply)

    return Icon
