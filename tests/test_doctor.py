from __future__ import annotations

import json
import os

import pytest


def test_doctor_json_reports_torch_ffmpeg_disk_and_paths(cli, cfg):
    res = cli("doctor", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["vidtray"] and doc["python"].startswith("3.")
    assert doc["ffmpeg"]["path"] and "version" in doc["ffmpeg"]
    assert doc["paths"]["videos_dir"] == str(cfg.videos_dir)
    assert doc["disk"]["volumes"] and doc["disk"]["free_bytes"] > 0
    assert "backend" in doc["notifications"]
    if not os.environ.get("DISPLAY"):
        assert doc["tray"]["backend"] == "none" and doc["tray"]["has_menu"] is False
    torch_info = doc["torch"]
    if torch_info["installed"]:  # CI installs the `gen` extra: the CPU build, no GPU
        assert doc["device"] in ("cuda", "mps", "cpu") and isinstance(torch_info["cuda"], bool)
    else:
        assert doc["device"] is None


@pytest.mark.gui
def test_doctor_sees_the_notification_daemon(cli, desktop):
    res = cli("doctor", env=desktop.env)
    assert res.returncode == 0, res.stderr
    assert "notifications:" in res.stdout and "dunst" in res.stdout
    assert "tray: gtk (with menu)" in res.stdout
