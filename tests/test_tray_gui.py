"""The tray under Xvfb with a real tray host (trayer), a private session bus and dunst: it docks, its
GTK menu works with the mouse and keyboard, the popup it opens queues a job, a second copy refuses to
start, a bad config is one notification and exit 2, and Quit stops everything."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import gen_fixtures
import pytest
from hf_cache import make_repo
from media_helpers import write_mp4
from tray_desktop import TrayProcess, docked_icons, start_trayer, wait_until

from vidtray.config import Config
from vidtray.services.library import open_library
from vidtray.services.queue import open_queue
from vidtray.services.storage import iso

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
                             "use its icon, or quit it from its menu first\n")
    assert tray.proc.poll() is None and len(docked_icons(tray_host.display.name)) == 1

    assert tray.stop() == 0  # SIGTERM: a clean quit
    log = _log(isolated_env)
    assert "tray starting (backend gtk, menu yes)" in log
    assert "daemon stopped" in log and "tray stopped" in log


def test_menu_start_on_login_and_pause_watching(tray_host, isolated_env) -> None:  # type: ignore[no-untyped-def]
    desktop_file = isolated_env["XDG_CONFIG_HOME"] / "autostart" / "vidtray.desktop"
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
    assert tray.stop() == 0
    log = _log(isolated_env)
    assert "watching paused" in log and "watching resumed" in log


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
    assert job["request"]["prompt"] == "a lighthouse in a storm" and job["request"]["model"] == str(pipe)
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

    tray.pick_in_storage(icon, 1)  # "Delete videos older than N days..."
    _dialog(tray_host)  # how many days? (30 is filled in)
    time.sleep(0.5)
    tray.xdotool("key", "Return")
    wait_until(lambda: not tray_host.run(["xdotool", "search", "--onlyvisible", "--class", "VidtrayDialog"]).stdout,
               15, "the days dialog to close")
    _dialog(tray_host)  # "Delete 1 generated video older than 30 days (...) to the trash?"
    time.sleep(0.5)
    tray.xdotool("key", "Return")
    note = tray_host.dunst.wait_for("Videos deleted", timeout=30)
    assert note.body.startswith("1 video, ")
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

    tray.pick_in_storage(icon, 0)  # "Delete generated videos..."
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
    tray.pick_in_storage(icon, 2)  # the first "Delete <model>..." after the two video actions
    _dialog(tray_host)
    time.sleep(0.5)
    tray.xdotool("key", "Escape")  # changed my mind: nothing is deleted
    time.sleep(1.0)
    assert repo.exists()
    tray.pick_in_storage(icon, 2)
    _dialog(tray_host)
    time.sleep(0.5)
    tray.xdotool("key", "Return")
    note = tray_host.dunst.wait_for("Model deleted", timeout=30)
    assert note.body.startswith("org/tiny-video: ")
    assert not repo.exists()
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
