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
    assert doc["tk"]["available"] is True and doc["tk"]["version"]  # python3-tk is installed for the tests
    assert doc["xdg_open"] is None or "path" in doc["xdg_open"]


@pytest.mark.gui
def test_doctor_sees_the_notification_daemon_and_the_tray_host(cli, desktop):
    from tray_desktop import start_trayer

    res = cli("doctor", env=desktop.env)
    assert res.returncode == 0, res.stderr
    assert "notifications:" in res.stdout and "dunst" in res.stdout
    # No panel yet: no icon, and what to do about it.
    assert (f"tray: none (no icon) - no system tray found (no XEmbed tray manager on {desktop.display.name}, "
            "no StatusNotifierWatcher on the session bus); on GNOME install and enable the AppIndicator extension "
            "(Debian/Ubuntu: gnome-shell-extension-appindicator)") in res.stdout
    assert "`vidtray tray` runs its services meanwhile and shows the icon once a tray is there" in res.stdout
    assert "tk: 8.6 (prompt window and dialogs)" in res.stdout
    start_trayer(desktop)
    res = cli("doctor", "--json", env=desktop.env)
    tray = json.loads(res.stdout)["tray"]
    assert (tray["backend"], tray["has_menu"], tray["xembed_tray"], tray["sni_watcher"]) == ("gtk", True, True, False)
    assert "tray: gtk (with menu) - an XEmbed system tray manages" in cli("doctor", env=desktop.env).stdout


@pytest.mark.gui
def test_doctor_says_when_no_notification_daemon_answers(cli, desktop_no_daemon):
    res = cli("doctor", env=desktop_no_daemon.env)
    line = next(line for line in res.stdout.splitlines() if line.startswith("notifications:"))
    assert "no notification daemon answered" in line
    assert line.endswith("vidtray's notifications will not show: start the desktop's notification daemon, or "
                         "install one (for example dunst)")
