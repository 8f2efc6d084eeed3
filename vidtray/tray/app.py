"""The tray: a pystray icon on the main thread, driving the headless services through ``ServiceLink``.

Threads and who touches what:

- main thread: pystray's loop (``icon.run``); menu callbacks run here and only post or start work;
- ``tray-ui``-side (see ``dispatch.py``): the only code that changes ``self.state`` and the icon;
- ``tray-monitor``: every few seconds reads job progress, queue pause flag, free space, library
  count and autostart status, and posts what changed;
- ``tray-storage``: runs ``vidtray storage --json`` in a child process (so the tray never imports
  huggingface_hub) at start, after deletions and finished jobs, and every half hour;
- ``tray-action``: one at a time, the slow menu actions (confirmation dialogs and ``vidtray
  clean`` children, autostart, pause, cancel);
- the Daemon's own threads (watcher, scheduler, supervisor), started and stopped through the link.

Torch never loads here: generation runs in the worker process the supervisor starts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from vidtray.config import Config, config_path, config_template
from vidtray.services.fsutil import human_size, plural
from vidtray.tray.backend import BackendChoice
from vidtray.tray.dispatch import Dispatcher
from vidtray.tray.state import StorageView, TrayState, icon_name, job_line, parse_storage_report, storage_lines, tooltip

log = logging.getLogger("vidtray.tray")

MONITOR_INTERVAL_S = 5.0
BUSY_INTERVAL_S = 1.0  # while a job runs, so "Generating 12/40" keeps up
AUTOSTART_EVERY = 12  # monitor ticks between autostart re-reads (a minute)
STORAGE_INTERVAL_S = 1800.0
CHILD_TIMEOUT_S = 600.0
QUIT_TIMEOUT_S = 30.0


def child_env() -> dict[str, str]:
    """Environment for our own child processes: they import this same vidtray, installed or not."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


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
        raise OSError(f"{opener} is not installed (Debian: xdg-utils)") from None


class TrayApp:
    def __init__(self, cfg: Config, *, pystray: ModuleType, choice: BackendChoice, link: Any, notifier: Any,
                 config_arg: str | None = None) -> None:
        self.cfg = cfg
        self.ps = pystray
        self.choice = choice
        self.link = link
        self.notifier = notifier
        self.config_arg = config_arg
        self.state = TrayState(warn_free_gb=cfg.warn_free_gb)
        self.dispatcher = Dispatcher()
        self.actions = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tray-action")
        self._stop = threading.Event()
        self._wake = threading.Event()  # a generation event: read the status now
        self._storage_due = threading.Event()
        self._popup: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._started = threading.Event()
        self._reports: set[subprocess.Popen[str]] = set()  # running read-only children
        self._service_problems: tuple[str, ...] = ()  # set once at start; the monitor adds live ones
        self.images = self._load_images()
        self.icon = self._make_icon()
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
        cls = _icon_class(self.ps, self.choice.name)
        return cls("vidtray", self.images["idle"], tooltip(self.state), menu=self._menu())

    def _menu(self) -> Any:
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
        if icon_name(new) != icon_name(old):
            self.icon.icon = self.images[icon_name(new)]
        if tooltip(new) != tooltip(old):
            self.icon.title = tooltip(new)
        self.icon.update_menu()

    # -- run --------------------------------------------------------------------------------
    def run(self) -> None:
        """Block on the main thread until Quit (or SIGTERM/SIGINT/SIGHUP)."""
        if self.choice.name in ("gtk", "appindicator"):
            self.dispatcher.use_glib()
        else:
            self.dispatcher.use_thread()
            self._python_signals()
        log.info("tray starting (backend %s, menu %s)", self.choice.name, "yes" if self.choice.has_menu else "no")
        try:
            self.icon.run(self._setup)
        finally:
            self._shutdown_threads()
        log.info("tray stopped")

    def _setup(self, icon: Any) -> None:
        # pystray's setup thread: return quickly, the icon's stop() joins it.
        icon.visible = True
        icon.title = tooltip(self.state)  # GTK shows no tooltip until the title is set once
        if self.choice.name in ("gtk", "appindicator"):
            self._glib_signals()
        self._spawn("tray-start", self._start_services)

    def _start_services(self) -> None:
        try:
            self.link.start()
        except Exception as exc:
            log.exception("services did not start")
            self._service_problems = (f"Services failed: {exc}",)
        self._started.set()
        _release_startup_memory()
        _dump_modules()
        self._spawn("tray-monitor", self._monitor)
        self._spawn("tray-storage", self._storage_loop)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _glib_signals(self) -> None:
        from gi.repository import GLib

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, self._on_signal, sig)

    def _python_signals(self) -> None:
        for name in ("SIGTERM", "SIGINT", "SIGHUP"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), lambda signum, _frame: self._on_signal(signum))

    def _on_signal(self, signum: int) -> bool:
        log.info("signal %s: quitting", signum)
        self.quit()
        return False  # GLib: remove the source; a second signal falls back to the default action

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

    def _on_generation_event(self, event: dict[str, Any]) -> None:
        """The supervisor's thread: a job was queued, claimed, progressed or ended; the monitor reads it now
        (progress events come every step, the monitor reads at most once a second while busy)."""
        if event.get("event") != "progress":
            self._wake.set()

    def _read_status(self, tick: int) -> dict[str, Any]:
        from vidtray.services import storage

        changes: dict[str, Any] = dict(self.link.snapshot())
        changes["free_bytes"] = storage.free_bytes(self.cfg.videos_dir)
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
        """A Tk dialog child; its stdout when confirmed, None when cancelled (or it could not open)."""
        argv = [sys.executable, "-m", "vidtray.tray.dialog", kind, "--title", "vidtray", "--message", message,
                "--ok", ok]
        if default is not None:
            argv += ["--default", f"{default:g}"]
        proc = subprocess.run(argv, capture_output=True, text=True, env=child_env(), stdin=subprocess.DEVNULL)
        if proc.returncode == 2:
            log.warning("dialog failed: %s", proc.stderr.strip())
        return proc.stdout.strip() if proc.returncode == 0 else None

    # -- menu actions (main thread: post or hand off, never block) --------------------------
    def _on_generate(self) -> None:
        if self._popup is not None and self._popup.poll() is None:
            log.info("the prompt popup is already open")
            return
        argv = [sys.executable, "-m", "vidtray.tray.popup"]
        if self.config_arg:
            argv += ["--config", str(Path(self.config_arg).expanduser().absolute())]
        try:
            self._popup = subprocess.Popen(argv, env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        except OSError as exc:
            log.error("cannot open the prompt popup: %s", exc)
            self.notifier.send("Cannot open the prompt window", str(exc))
            return
        self._spawn("tray-popup", lambda p=self._popup: self._wait_popup(p))

    def _wait_popup(self, proc: subprocess.Popen[bytes]) -> None:
        out, _ = proc.communicate()
        if proc.returncode == 0:
            log.info("popup queued: %s", out.decode(errors="replace").strip())
            self.post_state(**self.link.snapshot())

    def _on_cancel(self) -> None:
        job = self.state.job
        if job is not None:
            def work() -> None:
                self.link.cancel(job.id)
                self.post_state(**self.link.snapshot())

            self.actions.submit(self._guard, "cancel the job", work)

    def _open(self, path: Path, create: bool = False) -> None:
        def work() -> None:
            if create:
                path.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                raise OSError(f"{path} does not exist yet")
            open_path(path)

        self.actions.submit(self._guard, f"open {path}", work)

    def _on_settings(self) -> None:
        def work() -> None:
            path = config_path(self.config_arg)
            if not path.exists():
                from vidtray.services.fsutil import atomic_write_text

                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, config_template())
            open_path(path)

        self.actions.submit(self._guard, "open the settings", work)

    def _on_open_log(self) -> None:
        from vidtray.logs import log_file

        self._open(log_file())

    def _on_pause_watching(self) -> None:
        paused = not self.state.watching_paused

        def work() -> None:
            self.link.set_watching_paused(paused)
            self.post_state(watching_paused=paused)

        self.actions.submit(self._guard, "pause watching" if paused else "resume watching", work)

    def _on_autostart(self) -> None:
        enable = not self.state.autostart

        def work() -> None:
            from vidtray.services import autostart

            st = autostart.enable() if enable else autostart.disable()
            log.info("start on login: %s", st.detail)
            self.post_state(autostart=st.enabled)

        self.actions.submit(self._guard, "change start on login", work)

    def _on_delete_videos(self) -> None:
        self.actions.submit(self._guard, "delete videos", lambda: self._delete_videos(None))

    def _on_delete_older(self) -> None:
        def work() -> None:
            default = self.cfg.prune_after_days or 30
            answer = self._dialog("days", "Delete generated videos older than how many days?\n"
                                          "Pinned and scheduled videos are kept.", "Next", default)
            if answer is not None:
                self._delete_videos(float(answer))

        self.actions.submit(self._guard, "delete old videos", work)

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

        self.actions.submit(self._guard, f"delete {repo}", work)

    def _guard(self, what: str, work: Callable[[], None]) -> None:
        """Run an action; a failure is logged and shown, never raised into pystray."""
        try:
            work()
        except Exception as exc:
            log.warning("could not %s: %s", what, exc, exc_info=True)
            self.notifier.send(f"Could not {what}", str(exc))

    def _on_quit(self) -> None:
        self.quit()

    # -- quit -------------------------------------------------------------------------------
    def quit(self) -> None:
        """Any thread: stop the services (watcher, scheduler, worker), then the icon."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._storage_due.set()
        self.post_state(quitting=True)
        threading.Thread(target=self._stop_all, name="tray-quit", daemon=True).start()

    def _stop_all(self) -> None:
        started = time.monotonic()
        for proc in list(self._reports):
            proc.terminate()
        stopper = threading.Thread(target=self._stop_services, name="tray-stop-services", daemon=True)
        stopper.start()
        stopper.join(QUIT_TIMEOUT_S)
        if stopper.is_alive():
            log.error("services did not stop within %.0f s; quitting anyway", QUIT_TIMEOUT_S)
        log.info("services stopped in %.1f s", time.monotonic() - started)
        self.dispatcher.post(self.icon.stop)

    def _stop_services(self) -> None:
        self._started.wait(QUIT_TIMEOUT_S)
        try:
            self.link.stop()
        except Exception:
            log.exception("stopping the services failed")

    def _shutdown_threads(self) -> None:
        self._stop.set()
        self._storage_due.set()
        self.actions.shutdown(wait=False, cancel_futures=True)
        self.dispatcher.close()
        if self._popup is not None and self._popup.poll() is None:
            self._popup.terminate()


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
            # pystray's GTK base connects to the notification daemon here and raises if none
            # answers, which would take the whole tray down; vidtray notifies through its own Notifier.
            try:
                super()._initialize()
            except Exception as exc:
                log.warning("tray: no notification daemon for pystray (%s); the icon works without it", exc)
                self._notifier = _SafeNotifier()
                self._mark_ready()
            else:
                self._notifier = _SafeNotifier(self._notifier)

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
