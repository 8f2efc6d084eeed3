"""The headless host: checks before it starts anything, runs the watcher, stops idempotently."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from media_helpers import write_mp4

from vidtray.config import Config
from vidtray.errors import OperationFailed, UserError
from vidtray.services.daemon import Daemon
from vidtray.services.library import open_library


class CorruptRecorder:
    """The notifier edge: records the one call the watcher side makes."""

    def __init__(self) -> None:
        self.moved: list[Path] = []

    def library_corrupt(self, moved_to: Path) -> None:
        self.moved.append(moved_to)


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_missing_watch_folder_fails_before_any_thread_starts(tmp_path: Path, isolated_env) -> None:
    cfg = Config.from_mapping({"watch_dirs": [str(tmp_path / "gone")]}, "<test>")
    before = _threads()
    with pytest.raises(UserError, match="does not exist"):
        Daemon(cfg).start()
    assert _threads() == before


def test_unwritable_library_is_operation_failed(tmp_path: Path, isolated_env) -> None:
    (tmp_path / "file").write_text("x")
    cfg = Config.from_mapping({"library_path": str(tmp_path / "file" / "library.json")}, "<test>")
    with pytest.raises(OperationFailed, match="cannot"):
        Daemon(cfg).start()


def test_daemon_imports_reports_a_corrupt_library_and_stops_idempotently(cfg: Config, tmp_path: Path) -> None:
    clip = write_mp4(tmp_path / "clip.mp4")
    shutil.copyfile(clip, cfg.videos_dir / "old.mp4")
    cfg.library_file.write_bytes(b"not json at all")
    notifier = CorruptRecorder()
    daemon = Daemon(cfg, notifier, settle_s=0.2)
    daemon.start()
    daemon.start()  # second start is a no-op
    try:
        assert "vidtray-watcher" in _threads() and daemon.running
        deadline = time.monotonic() + 20
        while not notifier.moved and time.monotonic() < deadline:
            time.sleep(0.05)
        [moved] = notifier.moved
        assert moved.read_bytes() == b"not json at all"
        shutil.copyfile(clip, cfg.videos_dir / "new.mp4")
        lib = open_library(cfg)
        while time.monotonic() < deadline:
            if {Path(i.path).name for i in lib.items()} == {"old.mp4", "new.mp4"}:
                break
            time.sleep(0.05)
        assert {Path(i.path).name for i in lib.items()} == {"old.mp4", "new.mp4"}
    finally:
        daemon.stop()
        daemon.stop()
    assert not daemon.running
    assert "vidtray-watcher" not in _threads() and "vidtray-thumbs" not in _threads()
