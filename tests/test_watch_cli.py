"""``vidtray watch`` as a real process: bad folders at start, import while running, clean stop on signals."""

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
from media_helpers import write_mp4

from vidtray.config import Config


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_missing_watch_folder_is_exit_2(cli, cfg: Config, tmp_path: Path) -> None:
    config = _config(tmp_path, f'watch_dirs = ["{tmp_path / "absent"}"]\n')
    r = cli("--config", str(config), "watch", timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("vidtray: error: watch folder") and "does not exist" in r.stderr


def test_a_library_path_that_is_a_folder_is_exit_2_not_an_idle_watcher(cli, cfg: Config, tmp_path: Path) -> None:
    (tmp_path / "libdir").mkdir()
    config = _config(tmp_path, f'library_path = "{tmp_path / "libdir"}"\n')
    r = cli("--config", str(config), "watch", timeout=60)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"vidtray: error: the library {tmp_path / 'libdir'} is a folder, not a file "
                                      f"(library_path or data_dir in {config})"]


def test_watch_folder_that_is_a_file_is_exit_2(cli, cfg: Config, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    config = _config(tmp_path, f'watch_dirs = ["{tmp_path / "file"}"]\n')
    r = cli("--config", str(config), "watch", timeout=60)
    assert r.returncode == 2 and "is not a folder" in r.stderr


def test_unwritable_library_folder_is_exit_1(cli, cfg: Config, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the library folder should be")
    config = _config(tmp_path, f'library_path = "{blocker / "sub" / "library.json"}"\n')
    r = cli("--config", str(config), "watch", timeout=60)
    assert r.returncode == 1
    assert r.stderr.startswith("vidtray: error: cannot") and "library" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_watch_imports_then_stops_cleanly_on_signal(cfg: Config, tmp_path: Path, sig: signal.Signals) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    config = _config(tmp_path, f'watch_dirs = ["{downloads}"]\n')
    early = write_mp4(cfg.videos_dir / "while-down.mp4")
    old = time.time() - 60
    os.utime(early, (old, old))
    out = tmp_path / "watch.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidtray", "--config", str(config), "watch"], cwd=ROOT,
        env={**os.environ, "VIDTRAY_WATCH_SETTLE_S": "0.3"}, stdin=subprocess.DEVNULL,
        stdout=out.open("wb"), stderr=subprocess.STDOUT,
    )
    try:
        staged = write_mp4(tmp_path / "staged.mp4")
        deadline = time.monotonic() + 30
        while "watching" not in out.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, out.read_text()
            time.sleep(0.1)
        shutil.move(staged, downloads / "dl.mp4")
        names: set[str] = set()
        while time.monotonic() < deadline:
            if cfg.library_file.exists():
                names = {Path(i["path"]).name for i in json.loads(cfg.library_file.read_bytes())["items"]}
                if {"while-down.mp4", "dl.mp4"} <= names:
                    break
            time.sleep(0.1)
        assert {"while-down.mp4", "dl.mp4"} <= names, out.read_text()
        proc.send_signal(sig)
        assert proc.wait(30) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.read_text()
    assert "Traceback" not in text and "stopping" in text
