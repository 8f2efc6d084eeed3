"""Where the trash is not possible, the error says GIO's real reason (a fresh process: send2trash's
default backend, GIO when PyGObject is installed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tmpfs
from conftest import run_cli
from media_helpers import write_mp4
from tmpfs import SmallDisk

small_disk = tmpfs.small_disk  # the fixture


def test_the_trash_refusal_names_gios_reason(small_disk: SmallDisk, tmp_path: Path) -> None:
    pytest.importorskip("gi", reason="GIO's reasons need PyGObject (the linux extra)")
    data = small_disk.root / "data"
    video = write_mp4(data / "generated" / "videos" / "clip.mp4")
    old = video.stat().st_mtime - 90 * 86400
    os.utime(video, (old, old))
    res = run_cli("clean", "videos", "--yes", env={"VIDTRAY_DATA_DIR": str(data)})
    assert res.returncode == 1, res
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"vidtray: error: cannot move {video} to the trash (")
    # GIO refuses a tmpfs mount outside the home as a "system internal mount"; whatever GIO's words,
    # they are there instead of a bare "Permission denied".
    assert "Permission denied" not in line and "not supported" in line, line
    assert video.exists()
