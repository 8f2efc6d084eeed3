"""The application entry (``vidtray desktop-entry``): real files in a temp ``XDG_DATA_HOME``, checked with
``desktop-file-validate``; it and the autostart entry share one id and one command."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from desktop import skip_or_fail, skip_without, validate_desktop_file

from vidtray import cli as vidtray_cli
from vidtray.icons import icon_path
from vidtray.services.autostart import XdgAutostart
from vidtray.services.desktop_entry import APP_ID, AppEntry, escape_string, read_desktop_entry, unescape_string


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


# -- paths with odd characters, read back by GLib (what GNOME's menus and session use) -----------------

ODD_NAMES = ["100% done", "%d%U%%", "trailing space ", " leading space", 'quo"te', "apo'strophe", "back\\slash",
             "dollar$HOME`tick`", "ünïcødé ✓", "tab\there", "new\nline"]

# Loads each entry with GLib's own parser (GKeyFile, GDesktopAppInfo) and launches it.
GLIB_PROBE = r"""
import json, sys
from gi.repository import Gio, GLib
out = []
for path in sys.argv[1:]:
    keys = GLib.KeyFile()
    keys.load_from_file(path, GLib.KeyFileFlags.NONE)
    values = {k: keys.get_string("Desktop Entry", k) for k in keys.get_keys("Desktop Entry")[0]}
    try:
        info = Gio.DesktopAppInfo.new_from_filename(path)
    except TypeError:  # GLib refused the entry (for one, it found no program to run)
        info = None
    launched = bool(info is not None and info.launch([], Gio.AppLaunchContext()))
    out.append({"keys": values, "loaded": info is not None, "launched": launched})
print(json.dumps(out))
"""


def system_gi_python() -> str:
    """Debian's /usr/bin/python3 with PyGObject (python3-gi, which .ci/run installs)."""
    python = "/usr/bin/python3"
    probe = "from gi.repository import Gio"
    if not Path(python).exists() or subprocess.run([python, "-c", probe], capture_output=True).returncode:
        skip_or_fail("needs /usr/bin/python3 with PyGObject (Debian: python3-gi; .ci/run installs it)")
    return python


def test_string_escaping_round_trips_and_marks_blanks_at_the_ends() -> None:
    assert escape_string(" a\\b\tc\nd ") == "\\sa\\\\b\\tc\\nd\\s"
    for text in ("", " ", "  two  ", "a\\sb", "\\", "x\r\ny", "ünï ✓"):
        assert unescape_string(escape_string(text)) == text


@pytest.mark.parametrize("name", ODD_NAMES, ids=ascii)
def test_odd_paths_give_valid_entries_that_glib_launches(tmp_path: Path, name: str) -> None:
    skip_without(("desktop-file-validate",), packages="desktop-file-utils")
    python = system_gi_python()
    folder = tmp_path / name  # the working directory (Path=) ends with the name: "trailing space " too
    folder.mkdir()
    record = tmp_path / "launched"
    # What the launched program saw: its working directory and arguments, NUL-separated.
    prog = folder / "vidtray-tray"
    prog.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$(pwd -P)\" \"$@\" > {shlex.quote(str(record))}.tmp && "
                    f"mv {shlex.quote(str(record))}.tmp {shlex.quote(str(record))}\n")
    prog.chmod(0o755)
    icon = shutil.copyfile(icon_path("idle"), folder / "icon.png")

    app = AppEntry(data_home=tmp_path / "share")
    assert app.install([str(prog), "--activate"], icon, workdir=folder).command == [str(prog), "--activate"]
    assert app.status().installed is True  # TryExec read back: the program is there
    auto = XdgAutostart(config_home=tmp_path / "config", icon=icon, workdir=folder)
    st = auto.enable([str(prog)])
    assert st.enabled is True and st.command == [str(prog)]

    for path, args in ((app.path, ["--activate"]), (auto.path, [])):
        validate_desktop_file(path)
        # Our reader (and KDE's) drops blanks at the ends of a value; the escaping keeps them.
        assert unescape_string(read_desktop_entry(path.read_text())["Path"]) == str(folder)
        record.unlink(missing_ok=True)
        res = subprocess.run([python, "-c", GLIB_PROBE, str(path)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        (doc,) = json.loads(res.stdout)
        assert doc["loaded"] and doc["launched"], (path.read_text(), res.stderr)
        assert doc["keys"]["TryExec"] == str(prog) and doc["keys"]["Path"] == str(folder)
        if path == auto.path:
            assert doc["keys"]["Icon"] == str(icon)
        deadline = time.monotonic() + 30
        while not record.exists():
            assert time.monotonic() < deadline, "the launched program never ran"
            time.sleep(0.05)
        assert record.read_text().split("\0")[:-1] == [str(folder), *args]
