"""The tray under Xvfb with a real tray host (trayer), a private session bus and dunst: it docks, its
GTK menu works with the mouse and keyboard, the popup it opens queues a job, a second copy refuses to
start, a bad config is one notification and exit 2, and Quit stops everything. Without a tray host it
runs its services, says so once and docks when trayer comes; SIGTERM and SIGINT end it in every phase;
a missing Tk or xdg-open is one notification naming the package."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import gen_fixtures
import pytest
from conftest import run_cli
from hf_cache import make_repo
from media_helpers import write_mp4
from tray_desktop import TrayProcess, docked_icons, open_menus, start_trayer, wait_until

from vidtray.config import Config
from vidtray.paths import tray_lock_dir
from vidtray.services.library import Library, open_library
from vidtray.services.queue import open_queue
from vidtray.services.storage import iso
from vidtray.tray.backend import xembed_manager_present
from vidtray.tray.instance import single_instance

pytestmark = pytest.mark.gui
tiny_pipeline = gen_fixtures.tiny_pipeline  # the generation tests' session-scoped tiny pipeline


@pytest.fixture
def tray_host(desktop):  # type: ignore[no-untyped-def]
    """The desktop with trayer running: a place for the icon to dock."""
    start_trayer(desktop)
    return desktop


def _log(isolated_env: dict[str, Path]) -> str:
    path = Path(isolated_env["VIDTRAY_LOG_DIR"]) / "vidtray.log"
    return path.read_text() if path.exists() else ""


def test_icon_docks_and_a_second_tray_refuses_to_start(tray_host, cli, isolated_env) -> None:  # type: ignore[no-untyped-def]
    tray = TrayProcess(tray_host)
    icon = tray.wait_icon()
    assert icon.width >= 16 and icon.height >= 16 and icon.wm_class[0] == "vidtray"
    wait_until(lambda: tray.title(icon) == "Idle - 0 videos", 15, "the idle tooltip")

    second = cli("tray", env={"DISPLAY": tray_host.display.name})
    assert second.returncode == 1
    assert second.stderr == (f"vidtray: error: vidtray tray is already running (pid {tray.proc.pid}); "
                             "quit it from its menu, or with `vidtray tray --quit`\n")
    assert tray.proc.poll() is None and len(docked_icons(tray_host.display.name)) == 1

    # The application menu's entry (`--activate`): a second start opens the running tray's prompt window.
    third = cli("tray", "--activate", env={"DISPLAY": tray_host.display.name})
    assert third.returncode == 0 and third.stderr == ""
    popup = wait_until(lambda: tray_host.run(["xdotool", "search", "--onlyvisible", "--class",
                                              "VidtrayPopup"]).stdout.split(), 30, "the prompt popup")
    tray_host.run(["xdotool", "windowclose", popup[0]])
    assert tray.proc.poll() is None and len(docked_icons(tray_host.display.name)) == 1

    assert tray.stop() == 0  # SIGTERM: a clean quit
    log = _log(isolated_env)
    assert "tray icon (backend gtk, menu yes): an XEmbed system tray manages" in log
    assert "daemon stopped" in log and "tray stopped" in log


def test_menu_start_on_login_and_pause_watching(tray_host, isolated_env) -> None:  # type: ignore[no-untyped-def]
    desktop_file = isolated_env["XDG_CONFIG_HOME"] / "autostart" / "io.github.vidtray.Vidtray.desktop"
    tray = TrayProcess(tray_host)
    icon = tray.wait_icon()

    tray.pick(icon, "Start on login")
    wait_until(desktop_file.exists, 10, "the autostart entry")
    assert "Exec=" in desktop_file.read_text()
    tray.pick(icon, "Start on login")  # the check item now reads "on": picking it turns it off
    wait_until(lambda: not desktop_file.exists(), 10, "the autostart entry to go")

    tray.pick(icon, "Pause watching")
    wait_until(lambda: "Watching paused" in tray.title(icon), 10, "the paused tooltip")
    tray.pick(icon, "Pause watching")
    wait_until(lambda: "Watching paused" not in tray.title(icon), 10, "watching to resume")

    # The queue's Pause/Resume item: the user's pause, in the database `vidtray queue` reads too.
    tray.pick(icon, "Pause queue")
    wait_until(lambda: "(queue paused)" in tray.title(icon), 10, "the queue's paused tooltip")
    listed = run_cli("queue", "list")
    assert listed.returncode == 0 and "queue paused by you" in listed.stdout
    tray.pick(icon, "Pause queue")  # its label reads "Resume queue" now, at the same place
    wait_until(lambda: "(queue paused)" not in tray.title(icon), 10, "the queue to resume")
    assert "queue paused" not in run_cli("queue", "list").stdout
    assert tray.stop() == 0
    log = _log(isolated_env)
    assert "watching paused" in log and "watching resumed" in log
    assert "queue paused by the user" in log and "queue resumed by the user" in log


def test_left_click_opens_the_popup_and_its_job_is_queued(tray_host, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "TextToVideoSDPipeline"}))
    config = tmp_path / "config.toml"
    # A model folder no worker can load: the job is queued, then fails in the worker; this test is
    # about the way from the icon to the queue.
    config.write_text(f'model = "{pipe}"\n')
    tray = TrayProcess(tray_host, ["--config", str(config)])
    icon = tray.wait_icon()

    tray.click(icon, 1)  # the default action: Generate video...
    wait_until(lambda: tray_host.run(["xdotool", "search", "--onlyvisible", "--class", "VidtrayPopup"]).stdout,
               30, "the prompt popup")
    time.sleep(1.0)  # the popup focuses its prompt field once mapped
    tray.xdotool("type", "--delay", "20", "a lighthouse in a storm")
    tray.xdotool("key", "Return")
    queue = open_queue(Config.from_path(config))
    job = wait_until(lambda: next(iter(queue.list()), None), 30, "the job in the queue")
    assert job.request["prompt"] == "a lighthouse in a storm" and job.request["model"] == str(pipe)
    assert tray.stop() == 0


def test_tooltip_shows_low_disk_paused_queue_and_a_deleted_videos_folder(  # type: ignore[no-untyped-def]
        tray_host, tmp_path: Path, isolated_env) -> None:
    config = tmp_path / "config.toml"
    config.write_text("warn_free_gb = 1000000\nmin_free_gb = 0\n")  # any real disk is "low" against this
    cfg = Config.from_path(config)
    tray = TrayProcess(tray_host, ["--config", str(config)])
    icon = tray.wait_icon()
    wait_until(lambda: tray.title(icon).startswith("Low disk: "), 15, "the low-disk tooltip")
    assert tray.title(icon).endswith(" GiB free\nIdle - 0 videos")

    cfg.queue_dir.mkdir(parents=True, exist_ok=True)  # (the disk check makes it when it writes the flag)
    (cfg.queue_dir / "paused.json").write_text(json.dumps({"reason": "only 0.4 GB free", "since": "now"}))
    wait_until(lambda: "Queue paused: only 0.4 GB free" in tray.title(icon), 15, "the paused-queue tooltip")

    for path in sorted(cfg.videos_dir.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    cfg.videos_dir.rmdir()
    wait_until(lambda: "Videos folder missing" in tray.title(icon), 15, "the missing-folder tooltip")
    assert tray.proc.poll() is None
    assert tray.stop() == 0


def test_quit_from_the_menu_stops_services_then_the_icon(tray_host, isolated_env) -> None:  # type: ignore[no-untyped-def]
    tray = TrayProcess(tray_host)
    icon = tray.wait_icon()
    wait_until(lambda: "daemon started" in _log(isolated_env), 15, "the services to start")
    tray.pick(icon, "Quit")
    assert tray.proc.wait(30) == 0
    log = _log(isolated_env)
    assert log.index("daemon stopped") < log.index("tray stopped")
    assert not docked_icons(tray_host.display.name)


def test_bad_config_is_one_notification_and_exit_2(tray_host, cli, tmp_path: Path, isolated_env) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config.toml"
    config.write_text("warn_free_gb = -3\n")
    r = cli("--config", str(config), "tray", env=tray_host.env)
    assert r.returncode == 2
    assert r.stderr == f"vidtray: error: {config}: warn_free_gb: must be >= 0, got -3\n"
    note = tray_host.dunst.wait_for(lambda n: "warn_free_gb" in n.summary)
    assert note.summary == "vidtray did not start: fix warn_free_gb"
    assert str(config) in note.body and "must be >= 0" in note.body
    time.sleep(0.5)
    assert len(tray_host.dunst.notifications) == 1
    assert not docked_icons(tray_host.display.name)
    assert f"tray not started: {config}: warn_free_gb" in _log(isolated_env)


def test_tray_runs_without_a_notification_daemon(desktop_no_daemon, isolated_env) -> None:  # type: ignore[no-untyped-def]
    # pystray's GTK backend dies at start when no notification daemon answers; the tray must not.
    start_trayer(desktop_no_daemon)
    tray = TrayProcess(desktop_no_daemon)
    icon = tray.wait_icon()
    wait_until(lambda: tray.title(icon) == "Idle - 0 videos", 15, "the idle tooltip")
    assert tray.stop() == 0, tray.output + _log(isolated_env)
    log = _log(isolated_env)
    assert "tray stopped" in log and "unexpected error" not in log and "Traceback" not in log


def _dialog(desk, timeout: float = 30.0) -> str:  # type: ignore[no-untyped-def]
    return wait_until(lambda: desk.run(["xdotool", "search", "--onlyvisible", "--class", "VidtrayDialog"]).stdout,
                      timeout, "the confirmation dialog")


def test_storage_menu_deletes_old_videos_after_asking(tray_host, cfg: Config, isolated_env,  # type: ignore[no-untyped-def]
                                                       tmp_path: Path) -> None:
    old = write_mp4(cfg.videos_dir / "old_20240101-000000_aaaaaaaa.mp4")
    new = write_mp4(cfg.videos_dir / "new_20240101-000000_bbbbbbbb.mp4")
    month_ago = time.time() - 40 * 86400
    os.utime(old, (month_ago, month_ago))
    # Imported when it was made: old by its library "added" date too (age counts from the later of both).
    open_library(cfg).add_video(old, added=iso(month_ago))
    config = tmp_path / "config.toml"
    config.write_text("prune_after_days = 0\n")  # the scheduled prune would otherwise beat the menu to it
    tray = TrayProcess(tray_host, ["--config", str(config)])
    icon = tray.wait_icon()
    wait_until(lambda: "Idle - 2 videos" in tray.title(icon), 20, "the watcher to import both videos")

    tray.pick_in_storage(icon, 2)  # "Delete videos older than N days..."
    _dialog(tray_host)  # how many days? (30 is filled in)
    time.sleep(0.5)
    tray.xdotool("key", "Return")
    wait_until(lambda: not tray_host.run(["xdotool", "search", "--onlyvisible", "--class", "VidtrayDialog"]).stdout,
               15, "the days dialog to close")
    _dialog(tray_host)  # "Delete 1 generated video older than 30 days (...) to the trash?"
    time.sleep(0.5)
    tray.xdotool("key", "Return")
    note = tray_host.dunst.wait_for("Videos deleted", timeout=30)
    assert note.body.startswith("1 video, ") and note.body.endswith("(frees when the trash is emptied)")
    assert not old.exists() and new.exists()
    trash = isolated_env["XDG_DATA_HOME"] / "Trash" / "files"
    assert (trash / old.name).exists()  # to the trash, not for good
    assert tray.stop() == 0


def test_storage_menu_deletes_exactly_the_videos_the_dialog_named(tray_host, cfg: Config, isolated_env,  # type: ignore[no-untyped-def]
                                                                   tmp_path: Path) -> None:
    named = [write_mp4(cfg.videos_dir / f"v{n}_20240101-000000_aaaaaaa{n}.mp4") for n in (1, 2)]
    late = write_mp4(tmp_path / "late_20240101-000000_cccccccc.mp4")
    config = tmp_path / "config.toml"
    config.write_text("prune_after_days = 0\n")
    tray = TrayProcess(tray_host, ["--config", str(config)])
    icon = tray.wait_icon()
    wait_until(lambda: "Idle - 2 videos" in tray.title(icon), 20, "the watcher to import both videos")

    tray.pick_in_storage(icon, 1)  # "Delete generated videos..."
    _dialog(tray_host)  # "Delete 2 generated videos (...) to the trash?"
    # A third video arrives while the question is open: the answer was not about it.
    arrived = shutil.copy2(late, cfg.videos_dir / late.name)
    time.sleep(0.5)
    tray.xdotool("key", "Return")
    note = tray_host.dunst.wait_for("Videos deleted", timeout=30)
    assert note.body.startswith("2 videos, ")
    assert not any(p.exists() for p in named) and Path(arrived).exists()
    assert tray.stop() == 0


def test_storage_menu_deletes_a_cached_model_after_asking(tray_host, isolated_env) -> None:  # type: ignore[no-untyped-def]
    cache = isolated_env["HF_HOME"] / "hub"
    repo = make_repo(cache, "org/tiny-video", {"model_index.json": b"{}", "unet/weights.bin": b"x" * 4096})
    tray = TrayProcess(tray_host)
    icon = tray.wait_icon()
    # The sizes arrive from a `vidtray storage --json` child a moment after start.
    wait_until(lambda: "(1 models)" in _log(isolated_env), 60, "the storage sizes")
    tray.pick_in_storage(icon, 3)  # the first "Delete <model>..." after Free space and the two video actions
    _dialog(tray_host)
    time.sleep(0.5)
    tray.xdotool("key", "Escape")  # changed my mind: nothing is deleted
    time.sleep(1.0)
    assert repo.exists()
    tray.pick_in_storage(icon, 3)
    _dialog(tray_host)
    time.sleep(0.5)
    tray.xdotool("key", "Return")
    note = tray_host.dunst.wait_for("Model deleted", timeout=30)
    assert note.body.startswith("org/tiny-video: ")
    assert not repo.exists()
    assert tray.stop() == 0


def test_free_space_shows_the_plan_and_frees_it_after_asking(tray_host, cfg: Config, isolated_env,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    from hf_cache import age_repo

    old = write_mp4(cfg.videos_dir / "old_20240101-000000_aaaaaaaa.mp4")
    month_ago = time.time() - 40 * 86400
    os.utime(old, (month_ago, month_ago))
    open_library(cfg).add_video(old, added=iso(month_ago))
    repo = age_repo(make_repo(isolated_env["HF_HOME"] / "hub", "org/unused", {"w.bin": b"w" * 4096}), 100)
    config = tmp_path / "config.toml"
    # Over any budget; the scheduled check only says so (budget_action = "notify"), the menu item asks.
    config.write_text("prune_after_days = 0\nstorage_budget_gb = 0.000001\n")
    tray = TrayProcess(tray_host, ["--config", str(config)])
    icon = tray.wait_icon()
    wait_until(lambda: "Idle - 1 video" in tray.title(icon), 20, "the watcher to import the video")
    note = tray_host.dunst.wait_for(lambda n: "over the budget" in n.summary, timeout=30)
    assert "org/unused" in note.body and old.name in note.body and old.exists()

    tray.pick_in_storage(icon, 0)  # "Free space..."
    _dialog(tray_host)  # the plan, in order, and the question
    time.sleep(0.5)
    tray.xdotool("key", "Escape")  # not now: nothing goes
    time.sleep(1.0)
    assert old.exists() and repo.exists()
    tray.pick_in_storage(icon, 0)
    _dialog(tray_host)
    time.sleep(0.5)
    tray.xdotool("key", "Return")
    done = tray_host.dunst.wait_for("Space freed", timeout=60)
    assert done.body.startswith("Freed ") and "frees when it is emptied" in done.body
    assert not old.exists() and not repo.exists()
    assert (isolated_env["XDG_DATA_HOME"] / "Trash" / "files" / old.name).exists()
    assert tray.stop() == 0


@pytest.mark.gen
@pytest.mark.slow
def test_a_job_from_the_popup_ends_in_a_video_ready_notification(  # type: ignore[no-untyped-def]
        tray_host, tiny_pipeline: Path, tmp_path: Path, isolated_env) -> None:
    config = tmp_path / "config.toml"
    gen = gen_fixtures.SMALL
    config.write_text(f'model = "{tiny_pipeline}"\ndevice = "cpu"\nkeep_alive_s = 5\n[generation]\n'
                      + "".join(f"{k} = {v}\n" for k, v in gen.items()))
    tray = TrayProcess(tray_host, ["--config", str(config)])
    icon = tray.wait_icon()

    tray.click(icon, 1)
    wait_until(lambda: tray_host.run(["xdotool", "search", "--onlyvisible", "--class", "VidtrayPopup"]).stdout,
               30, "the prompt popup")
    time.sleep(1.0)
    tray.xdotool("type", "--delay", "20", "a tiny red fox")
    tray.xdotool("key", "Return")

    # The tray shows the job while the worker (its own process, with torch) runs it...
    wait_until(lambda: tray.title(icon).startswith(("Starting generation", "Generating", "Saving")), 60,
               "the busy tooltip")
    note = tray_host.dunst.wait_for("Video ready", timeout=120)
    assert note.body.startswith("a tiny red fox\n") and note.body.endswith(".mp4")
    video = Config.from_path(config).videos_dir / note.body.splitlines()[1]
    assert video.is_file() and video.stat().st_size > 0
    # ...and goes back to idle with the new video counted once the watcher imported it.
    wait_until(lambda: tray.title(icon) == "Idle - 1 video", 30, "the idle tooltip with the new video")
    maps = Path(f"/proc/{tray.proc.pid}/maps").read_text()
    assert "torch" not in maps  # generation ran in the worker, never in the tray
    assert tray.stop() == 0


# -- no tray host, a late one, signals, a lock left behind ------------------------------------------------

NO_ICON = "vidtray: no tray icon"
WAITING = "no tray icon yet: no system tray found"


def _lock_is_free() -> bool:
    from vidtray.tray.instance import AlreadyRunning

    try:
        with single_instance(tray_lock_dir()):
            return True
    except AlreadyRunning:
        return False


def test_without_a_tray_host_the_services_run_and_one_notification_says_why(  # type: ignore[no-untyped-def]
        desktop, cli, cfg: Config, isolated_env) -> None:
    assert xembed_manager_present(desktop.display.name) is False
    doctor = cli("doctor", env=desktop.env)
    assert "tray: none (no icon) - no system tray found (no XEmbed tray manager on" in doctor.stdout
    assert "gnome-shell-extension-appindicator" in doctor.stdout

    tray = TrayProcess(desktop)
    note = desktop.dunst.wait_for(NO_ICON, timeout=30)
    assert note.body.startswith(f"No system tray found (no XEmbed tray manager on {desktop.display.name}, "
                                "no StatusNotifierWatcher on the session bus). On GNOME install and enable the "
                                "AppIndicator extension (Debian/Ubuntu: gnome-shell-extension-appindicator)")
    assert note.body.endswith("the icon appears as soon as a tray does; quit it with `vidtray tray --quit`.")
    # The services run without an icon: a finished video is imported into the library.
    video = write_mp4(cfg.videos_dir / "no_icon_20240101-000000_dddddddd.mp4")
    wait_until(lambda: Library(cfg.library_file).find_by_path(video) is not None, 30, "the watcher to import it")
    assert tray.proc.poll() is None and not docked_icons(desktop.display.name)
    assert f"WARNING [MainProcess/MainThread] vidtray.tray: no tray icon: {note.body}" in _log(isolated_env)

    quit_ = cli("tray", "--quit", env=desktop.env)
    assert (quit_.returncode, quit_.stdout) == (0, f"vidtray tray (pid {tray.proc.pid}) has quit\n")
    assert tray.proc.wait(10) == 0  # the lock is free; the process may take a moment more to exit
    tray.stop()
    assert desktop.dunst.count(NO_ICON) == 1  # said once, not every time it looked again


def test_the_icon_docks_when_a_tray_host_appears_after_the_tray(desktop, isolated_env) -> None:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    tray = TrayProcess(desktop)
    wait_until(lambda: WAITING in _log(isolated_env), 30, "the tray to wait for a host")
    time.sleep(max(0.0, 3.0 - (time.monotonic() - start)))  # the panel comes 3 s after the tray
    start_trayer(desktop)
    assert xembed_manager_present(desktop.display.name) is True
    icon = tray.wait_icon(timeout=20)
    tray.click(icon, 3)  # a working icon: the menu opens
    wait_until(lambda: open_menus(desktop.display.name), 10, "the tray menu to open")
    tray.xdotool("key", "Escape")
    assert tray.stop() == 0
    assert "a system tray is there now (an XEmbed system tray manages" in _log(isolated_env)


SIGTERM_RUNS = 20


def test_sigterm_ends_a_docked_tray_every_time(tray_host, isolated_env) -> None:  # type: ignore[no-untyped-def]
    for run in range(SIGTERM_RUNS):
        tray = TrayProcess(tray_host)
        tray.wait_icon()
        time.sleep((run % 4) * 0.15)  # early runs catch the services still starting
        began = time.monotonic()
        tray.proc.send_signal(signal.SIGTERM)
        code = tray.proc.wait(10)  # one signal: TrayProcess.stop() would send a second
        took = time.monotonic() - began
        tray.stop()
        assert code == 0, f"run {run}: exit {code}\n{tray.output}"
        assert took < 5, f"run {run}: {took:.1f} s"
        assert _lock_is_free(), f"run {run}: the lock is still held"
    assert _log(isolated_env).count("SIGTERM: quitting") == SIGTERM_RUNS


def test_sigterm_ends_a_tray_waiting_for_a_host_every_time(desktop, isolated_env) -> None:  # type: ignore[no-untyped-def]
    for run in range(SIGTERM_RUNS):
        tray = TrayProcess(desktop)
        wait_until(lambda n=run: _log(isolated_env).count(WAITING) > n, 30, "the tray to wait for a host")
        time.sleep((run % 4) * 0.15)
        began = time.monotonic()
        tray.proc.send_signal(signal.SIGTERM)
        code = tray.proc.wait(10)  # one signal: TrayProcess.stop() would send a second
        took = time.monotonic() - began
        tray.stop()
        assert code == 0, f"run {run}: exit {code}\n{tray.output}"
        assert took < 5, f"run {run}: {took:.1f} s"
        assert _lock_is_free(), f"run {run}: the lock is still held"


def test_sigint_ends_the_tray_with_and_without_an_icon(desktop, isolated_env) -> None:  # type: ignore[no-untyped-def]
    waiting = TrayProcess(desktop)
    wait_until(lambda: WAITING in _log(isolated_env), 30, "the tray to wait for a host")
    waiting.proc.send_signal(signal.SIGINT)
    assert waiting.proc.wait(5) == 0
    waiting.stop()
    start_trayer(desktop)
    docked = TrayProcess(desktop)
    docked.wait_icon()
    docked.proc.send_signal(signal.SIGINT)
    assert docked.proc.wait(5) == 0
    docked.stop()
    assert _log(isolated_env).count("SIGINT: quitting") == 2 and _lock_is_free()


def test_a_killed_tray_never_blocks_the_next_one(tray_host) -> None:  # type: ignore[no-untyped-def]
    first = TrayProcess(tray_host)
    first.wait_icon()
    first.proc.kill()  # no clean-up at all: the pid file stays, the OS lock goes with the process
    assert first.stop() == -signal.SIGKILL
    assert (tray_lock_dir() / "tray.pid").read_text().strip() == str(first.proc.pid)
    second = TrayProcess(tray_host)
    second.wait_icon()
    assert second.stop() == 0


# -- missing parts ---------------------------------------------------------------------------------------


def test_without_tk_a_left_click_says_which_package_to_install(tray_host, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                isolated_env) -> None:
    shim = tmp_path / "no-tk"
    shim.mkdir()
    (shim / "tkinter.py").write_text("raise ModuleNotFoundError(\"No module named 'tkinter'\", name='tkinter')\n")
    tray = TrayProcess(tray_host, env={"PYTHONPATH": f"{shim}{os.pathsep}{Path(__file__).resolve().parent.parent}"})
    icon = tray.wait_icon()
    tray.click(icon, 1)
    note = tray_host.dunst.wait_for("Cannot open the prompt window", timeout=30)
    assert note.body == ("The prompt window needs Tk (tkinter), which is not installed "
                         "(Debian/Ubuntu: python3-tk, Fedora: python3-tkinter, Arch: tk)")
    assert f"WARNING [MainProcess/tray-popup] vidtray.tray: prompt window: {note.body}" in _log(isolated_env)
    assert tray.stop() == 0


def test_without_xdg_open_opening_a_folder_says_which_package_to_install(  # type: ignore[no-untyped-def]
        tray_host, tmp_path: Path, cfg: Config, cli) -> None:
    # A PATH with what the tray uses from it (notify-send for notifications) and no xdg-open.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("notify-send", "gdbus"):
        (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    env = {"PATH": str(bin_dir)}
    doctor = cli("doctor", env={**tray_host.env, **env})
    assert "xdg-open: MISSING - the tray cannot open the videos folder, library, settings or log (package: " \
           "xdg-utils)" in doctor.stdout
    tray = TrayProcess(tray_host, env=env)
    icon = tray.wait_icon()
    tray.pick(icon, "Open videos folder")
    note = tray_host.dunst.wait_for(lambda n: n.summary.startswith("Could not open"), timeout=30)
    assert note.summary == f"Could not open {cfg.videos_dir}"
    assert note.body == "xdg-open is not installed (package: xdg-utils)"
    time.sleep(0.5)
    assert len([n for n in tray_host.dunst.notifications if n.summary.startswith("Could not open")]) == 1
    assert tray.stop() == 0
