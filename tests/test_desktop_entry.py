"""The application entry (``vidtray desktop-entry``): real files in a temp ``XDG_DATA_HOME``, checked with
``desktop-file-validate``; it and the autostart entry share one id and one command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from desktop import validate_desktop_file

from vidtray import cli as vidtray_cli
from vidtray.icons import icon_path
from vidtray.services.desktop_entry import APP_ID, AppEntry, read_desktop_entry


def test_install_writes_a_valid_entry_and_the_icon_and_remove_takes_both(cli, isolated_env: dict[str, Path]) -> None:
    entry = isolated_env["XDG_DATA_HOME"] / "applications" / f"{APP_ID}.desktop"
    icon = isolated_env["XDG_DATA_HOME"] / "icons" / "hicolor" / "64x64" / "apps" / f"{APP_ID}.png"
    assert json.loads(cli("desktop-entry", "status", "--json").stdout)["installed"] is False

    r = cli("desktop-entry", "install")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("application menu entry: installed")
    keys = read_desktop_entry(entry.read_text())
    assert keys["Name"] == "vidtray" and keys["Type"] == "Application" and keys["Terminal"] == "false"
    assert keys["Icon"] == APP_ID and icon.read_bytes() == icon_path("idle").read_bytes()
    assert "AudioVideo" in keys["Categories"].split(";")
    assert keys["StartupWMClass"] == "VidtrayPopup"  # the popup's Tk class: its window groups under this entry
    assert Path(keys["TryExec"]).is_absolute() and keys["Exec"].strip('"').startswith(keys["TryExec"])
    validate_desktop_file(entry)

    doc = json.loads(cli("desktop-entry", "status", "--json").stdout)
    assert doc["installed"] is True and doc["path"] == str(entry) and doc["icon"] == str(icon)

    r = cli("autostart", "enable")
    assert r.returncode == 0, r.stderr
    auto = isolated_env["XDG_CONFIG_HOME"] / "autostart" / f"{APP_ID}.desktop"
    # One app to the desktop: the same file name, the same program; from the menu it also opens the
    # prompt window of a tray that already runs (--activate), at login it just starts the tray.
    assert read_desktop_entry(auto.read_text())["Exec"] + " --activate" == keys["Exec"]

    r = cli("desktop-entry", "remove")
    assert r.returncode == 0 and r.stdout.startswith("application menu entry: not installed")
    assert not entry.exists() and not icon.exists()
    assert cli("desktop-entry", "remove").returncode == 0  # idempotent


def test_status_calls_an_entry_whose_program_is_gone_stale(tmp_path: Path) -> None:
    tool = tmp_path / "venv" / "bin" / "vidtray-tray"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    app = AppEntry(data_home=tmp_path / "share")
    assert app.install([str(tool)], icon_path("idle")).installed is True
    tool.unlink()
    st = app.status()
    assert st.installed is False and st.detail.startswith("stale:") and str(tool) in st.detail


def test_install_into_an_unwritable_place_is_one_error_line(cli, isolated_env: dict[str, Path]) -> None:
    (isolated_env["XDG_DATA_HOME"] / "applications").write_text("")  # a file where the folder goes
    r = cli("desktop-entry", "install")
    assert r.returncode == 1
    assert r.stderr.startswith("vidtray: error: cannot write the application entry") and r.stderr.count("\n") == 1


@pytest.mark.parametrize(("platform", "name"), [("darwin", "macOS"), ("win32", "Windows")])
def test_other_systems_get_a_clear_message(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                           isolated_env: dict[str, Path], platform: str, name: str) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    assert vidtray_cli.main(["desktop-entry", "install"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vidtray: error: desktop-entry is for Linux and BSD desktops (freedesktop menus); on {name}")
    assert not (isolated_env["XDG_DATA_HOME"] / "applications").exists()
