"""``vidtray watch`` end to end: the real CLI in its own process, the real scheduler with tiny
intervals, the real disk (thresholds set above its real free space, so the real check fires),
real videos, the real trash, and the notifications read back from dunst."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from desktop import Desktop
from helpers import wait_for
from media_helpers import write_mp4

from vidtray.config import Config
from vidtray.services.jobs import GiB
from vidtray.services.library import Change, open_library
from vidtray.services.storage import iso

DAY = 86400.0


def _aged(path: Path, days: float) -> Path:
    t = time.time() - days * DAY
    os.utime(path, (t, t))
    return path


def _start_watch(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "vidtray", "--config", str(config), "watch"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )


def _stop_watch(proc: subprocess.Popen[bytes], log: Path) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise AssertionError(f"vidtray watch did not stop on SIGTERM:\n{log.read_text(errors='replace')}") from None



@pytest.mark.gui
@pytest.mark.slow
def test_watch_warns_once_pauses_and_prunes(desktop: Desktop, tmp_path: Path,
                                            isolated_env: dict[str, Path]) -> None:
    data = isolated_env["VIDTRAY_DATA_DIR"]
    free_gib = shutil.disk_usage(data).free / GiB
    # Above the real free space: the real check must fire (and pause the queue).
    threshold = round(free_gib + 20, 1)
    config = tmp_path / "config.toml"
    config.write_text(
        f'data_dir = "{data}"\n'
        f"warn_free_gb = {threshold}\nmin_free_gb = {threshold}\n"
        "disk_check_interval_s = 0.3\nprune_after_days = 30\nprune_interval_s = 3600\n"
        "prune_to_trash = true\nnotifications = true\n"
    )
    cfg = Config.from_path(config)
    videos = cfg.videos_dir
    sample = write_mp4(tmp_path / "sample.mp4")
    videos.mkdir(parents=True)
    old = _aged(shutil.copyfile(sample, videos / "zeroscope_20240101-000000_aaaaaaaa.mp4"), 45)
    new = _aged(shutil.copyfile(sample, videos / "zeroscope_20240301-000000_bbbbbbbb.mp4"), 1)
    pinned = _aged(shutil.copyfile(sample, videos / "keeper.mp4"), 400)
    lib = open_library(cfg)
    lib.add_video(old, added=iso(time.time() - 45 * DAY))  # imported when it was made
    pinned_item = lib.add_video(pinned)
    lib.update(lambda doc: _pin(doc, str(pinned)))

    log = tmp_path / "watch.log"
    proc = _start_watch(config, {**desktop.env, "VIDTRAY_CONFIG": str(config)}, log)
    try:
        low = desktop.dunst.wait_for("Low disk space", timeout=30)
        assert f"free on {_mount(data)} (videos" in low.body
        paused = desktop.dunst.wait_for("Video generation paused", timeout=10)
        assert f"{threshold:g} GiB" in paused.body
        pruned = desktop.dunst.wait_for("Old videos pruned", timeout=20)
        assert pruned.body.startswith("Pruned 1 video (") and "frees when the trash is emptied" in pruned.body
        assert all(n.appname == "vidtray" for n in desktop.dunst.notifications)
        # Many more checks run; still one warning and one pause.
        time.sleep(2.0)
        assert proc.poll() is None, log.read_text(errors="replace")
        assert desktop.dunst.count("Low disk space") == 1
        assert desktop.dunst.count("Video generation paused") == 1
        assert desktop.dunst.count("Old videos pruned") == 1
        flag = json.loads(cfg.paths.pause_flag.read_text())
        assert flag["reason"] == paused.body and flag["since"]
    finally:
        rc = _stop_watch(proc, log)
    assert rc == 0, log.read_text(errors="replace")
    assert not old.exists() and new.exists() and pinned.exists()
    trash = isolated_env["XDG_DATA_HOME"] / "Trash" / "files"
    assert (trash / old.name).exists()
    lib = open_library(cfg)
    assert str(old) not in {i.path for i in lib.items()}  # pruned on purpose: it left the library
    assert lib.get(pinned_item["id"]).pinned is True


def _pin(doc: dict, path: str) -> Change[None]:
    for item in doc["items"]:
        if item["path"] == path:
            item["pinned"] = True
    return Change(None, True)


def _mount(path: Path) -> str:
    from vidtray.paths import mount_point

    return str(mount_point(path))


@pytest.mark.gui
@pytest.mark.slow
def test_watch_prunes_after_a_suspend(desktop: Desktop, tmp_path: Path, isolated_env: dict[str, Path]) -> None:
    """A prune that fell due while the process was frozen (SIGSTOP, like a laptop lid) runs on
    wake-up, not one interval later: APScheduler's default misfire grace of 1 s would skip it."""
    data = isolated_env["VIDTRAY_DATA_DIR"]
    interval = 60
    config = tmp_path / "config.toml"
    config.write_text(
        f'data_dir = "{data}"\nwarn_free_gb = 0\nmin_free_gb = 0\n'
        f"disk_check_interval_s = 3600\nprune_after_days = 30\nprune_interval_s = {interval}\n"
    )
    cfg = Config.from_path(config)
    cfg.videos_dir.mkdir(parents=True)
    # Last prune almost one interval ago: the next one is due 2 s after start.
    cfg.state_dir.mkdir(parents=True)
    last = time.time() - interval + 2
    (cfg.state_dir / "jobs.json").write_text(json.dumps({"version": 1, "last_prune_ts": last}))
    log = tmp_path / "watch.log"
    proc = _start_watch(config, {**desktop.env, "VIDTRAY_CONFIG": str(config)}, log)
    try:
        assert wait_for(lambda: "scheduler started" in _read(log) or "scheduler started" in _logfile(isolated_env),
                     timeout=20), _read(log)
        # The library has listed it for 40 days (the file was away, on an unplugged drive): old by
        # both dates, so the late prune takes it.
        open_library(cfg).add_video(cfg.videos_dir / "old.mp4", added=iso(time.time() - 40 * DAY))
        old = _aged(write_mp4(cfg.videos_dir / "old.mp4"), 40)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(5)  # the due time passes while frozen
        proc.send_signal(signal.SIGCONT)
        woke = time.monotonic()
        assert wait_for(lambda: not old.exists(), timeout=15), _logfile(isolated_env)
        # Well before the next interval: it ran because it was late, not on the next schedule.
        assert time.monotonic() - woke < interval / 4
        desktop.dunst.wait_for("Old videos pruned")
    finally:
        rc = _stop_watch(proc, log)
    assert rc == 0


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _logfile(isolated_env: dict[str, Path]) -> str:
    return _read(isolated_env["VIDTRAY_LOG_DIR"] / "vidtray.log")


@pytest.mark.gui
@pytest.mark.slow
def test_watch_without_a_notification_daemon_keeps_working(desktop_no_daemon: Desktop, tmp_path: Path,
                                                          isolated_env: dict[str, Path]) -> None:
    """No daemon on the bus, then the videos folder deleted under it: logged, nothing stops."""
    data = isolated_env["VIDTRAY_DATA_DIR"]
    threshold = round(shutil.disk_usage(data).free / GiB + 20, 1)
    config = tmp_path / "config.toml"
    config.write_text(
        f'data_dir = "{data}"\nwarn_free_gb = {threshold}\nmin_free_gb = 0\n'
        "disk_check_interval_s = 0.3\nprune_after_days = 30\nprune_interval_s = 3600\n"
    )
    cfg = Config.from_path(config)
    old = _aged(write_mp4(cfg.videos_dir / "old.mp4"), 40)
    open_library(cfg).add_video(old, added=iso(time.time() - 40 * DAY))  # imported when it was made
    log = tmp_path / "watch.log"
    proc = _start_watch(config, {**desktop_no_daemon.env, "VIDTRAY_CONFIG": str(config)}, log)
    try:
        assert wait_for(lambda: not old.exists()), _logfile(isolated_env)
        assert wait_for(lambda: "not getting through" in _logfile(isolated_env))
        shutil.rmtree(cfg.videos_dir)
        time.sleep(1.5)  # several disk checks with the folder gone
        assert proc.poll() is None, _read(log)
    finally:
        rc = _stop_watch(proc, log)
    assert rc == 0, _read(log)
    text = _logfile(isolated_env)
    assert text.count("not getting through") == 1
    assert text.count("low disk space:") == 1
    assert "Traceback" not in text and "job failed" not in text


@pytest.mark.parametrize("line, key", [("disk_check_interval_s = 0", "disk_check_interval_s"),
                                       ("prune_interval_s = -1", "prune_interval_s"),
                                       ("prune_after_days = -2", "prune_after_days"),
                                       ("warn_free_gb = -1", "warn_free_gb")])
def test_watch_refuses_bad_job_settings(cli, tmp_path: Path, isolated_env: dict[str, Path],  # type: ignore[no-untyped-def]
                                        line: str, key: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(line + "\n")
    out = cli("--config", str(config), "watch", timeout=30)
    assert out.returncode == 2
    [err] = out.stderr.strip().splitlines()
    assert err.startswith("vidtray: error:") and key in err and str(config) in err
    assert not any(isolated_env["VIDTRAY_DATA_DIR"].iterdir())
