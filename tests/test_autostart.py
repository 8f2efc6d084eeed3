"""Start-on-login writers: real files for XDG and LaunchAgent, a fake registry (the edge) for Windows."""

from __future__ import annotations

import configparser
import json
import os
import plistlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
from desktop import validate_desktop_file
from hypothesis import given
from hypothesis import strategies as st

from vidtray.services import autostart
from vidtray.services.autostart import (
    APPROVED_KEY,
    RUN_KEY,
    MacLaunchAgent,
    WindowsRunKey,
    XdgAutostart,
    desktop_exec,
    launch_command,
    parse_desktop_exec,
    split_windows_cmdline,
)
from vidtray.services.desktop_entry import APP_ID

ROOT = Path(__file__).resolve().parent.parent
ENTRY = f"{APP_ID}.desktop"

# -- Linux ----------------------------------------------------------------------------------


def _tool(folder: Path, name: str = "vidtray-tray") -> str:
    """An executable file (the entries' TryExec must exist for the entry to count)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_xdg_enable_writes_a_valid_desktop_entry_with_absolute_exec(tmp_path: Path) -> None:
    backend = XdgAutostart(config_home=tmp_path / "cfg", icon=Path("/opt/icons/idle.png"), config_dirs=[])
    assert backend.status().enabled is False

    command = [_tool(tmp_path / "my venv" / "bin")]
    st = backend.enable(command)

    # The application entry's id, so the desktop sees one app (menu, autostart, notifications).
    path = tmp_path / "cfg" / "autostart" / ENTRY
    assert st.enabled and st.location == str(path) and st.command == command
    # Any INI reader sees a [Desktop Entry] group with the keys the spec requires.
    ini = configparser.ConfigParser(interpolation=None)
    ini.optionxform = str  # type: ignore[assignment,method-assign]
    ini.read(path, encoding="utf-8")
    entry = ini["Desktop Entry"]
    assert entry["Type"] == "Application" and entry["Name"] == "vidtray"
    assert entry["Exec"] == f'"{command[0]}"' and entry["TryExec"] == command[0]
    assert entry["Terminal"] == "false" and entry["Icon"] == "/opt/icons/idle.png"
    assert not list(path.parent.glob(".*tmp")), "atomic write left a temp file"
    validate_desktop_file(path)


def test_xdg_disable_removes_the_file_and_is_idempotent(tmp_path: Path) -> None:
    backend = XdgAutostart(config_home=tmp_path, config_dirs=[])
    backend.enable([_tool(tmp_path / "bin")])
    assert backend.disable().enabled is False
    assert not (tmp_path / "autostart" / ENTRY).exists()
    assert backend.disable().enabled is False


def test_xdg_enable_and_disable_replace_the_old_vidtray_desktop(tmp_path: Path) -> None:
    tool = _tool(tmp_path / "bin")
    legacy = tmp_path / "cfg" / "autostart" / "vidtray.desktop"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(f"[Desktop Entry]\nType=Application\nName=vidtray\nExec={tool}\n")
    backend = XdgAutostart(config_home=tmp_path / "cfg", config_dirs=[])
    # An install from before the rename still reads as on (the desktop still starts it)...
    st = backend.status()
    assert st.enabled and st.location == str(legacy) and st.command == [tool]
    # ... and enabling moves it to the new name, so the tray never starts twice.
    assert backend.enable([tool]).location == str(backend.path)
    assert not legacy.exists()
    legacy.write_text(f"[Desktop Entry]\nType=Application\nName=vidtray\nExec={tool}\n")
    assert backend.disable().enabled is False
    assert not legacy.exists() and not backend.path.exists()


def test_xdg_disable_hides_a_system_wide_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = _tool(tmp_path / "usr" / "bin")
    system = tmp_path / "etc" / "xdg" / "autostart" / ENTRY
    system.parent.mkdir(parents=True)
    system.write_text(f"[Desktop Entry]\nType=Application\nName=vidtray\nExec={tool}\nTryExec={tool}\n")
    monkeypatch.setenv("XDG_CONFIG_DIRS", f"{tmp_path / 'none'}:relative:{tmp_path / 'etc' / 'xdg'}")
    backend = XdgAutostart(config_home=tmp_path / "cfg")

    st = backend.status()
    assert st.enabled and st.location == str(system) and "system-wide" in st.detail

    # Removing a user file cannot stop a system entry: the user file of the same name says Hidden=true.
    st = backend.disable()
    assert st.enabled is False and st.location == str(backend.path) and "Hidden=true" in st.detail
    assert "Hidden=true" in backend.path.read_text() and system.exists()
    validate_desktop_file(backend.path)

    # Enabling again overrides the system entry with an ordinary user entry; disabling hides it again.
    assert backend.enable([tool]).enabled and "Hidden" not in backend.path.read_text()
    assert backend.disable().enabled is False and "Hidden=true" in backend.path.read_text()


def test_xdg_status_takes_the_first_system_entry_in_config_dirs_order(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, state in ((first, "false"), (second, "true")):
        (folder / "autostart").mkdir(parents=True)
        (folder / "autostart" / ENTRY).write_text(
            f"[Desktop Entry]\nType=Application\nName=vidtray\nExec={_tool(folder)}\n"
            f"X-GNOME-Autostart-enabled={state}\n")
    st = XdgAutostart(config_home=tmp_path / "cfg", config_dirs=[first, second]).status()
    assert st.enabled is False and st.location == str(first / "autostart" / ENTRY)
    st = XdgAutostart(config_home=tmp_path / "cfg", config_dirs=[second, first]).status()
    assert st.enabled is True and st.location == str(second / "autostart" / ENTRY)


def test_xdg_status_says_when_the_program_is_gone(tmp_path: Path) -> None:
    backend = XdgAutostart(config_home=tmp_path, config_dirs=[])
    tool = _tool(tmp_path / "venv" / "bin")
    backend.enable([tool])
    Path(tool).unlink()  # vidtray uninstalled: the desktop skips the entry (TryExec)
    st = backend.status()
    assert st.enabled is False and tool in st.detail and "vidtray autostart enable" in st.detail


@pytest.mark.parametrize(
    ("extra", "detail"),
    [("Hidden=true", "Hidden=true"), ("X-GNOME-Autostart-enabled=false", "startup settings")],
)
def test_xdg_status_honours_the_desktops_off_switches(tmp_path: Path, extra: str, detail: str) -> None:
    backend = XdgAutostart(config_home=tmp_path, config_dirs=[])
    tool = _tool(tmp_path / "bin")
    backend.enable([tool])
    text = backend.path.read_text().replace("X-GNOME-Autostart-enabled=true\n", "") + extra + "\n"
    backend.path.write_text(text)
    st = backend.status()
    assert st.enabled is False and detail in st.detail and st.command == [tool]


def test_xdg_uses_xdg_config_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "x"))
    assert XdgAutostart().path == tmp_path / "x" / "autostart" / ENTRY
    # A relative value is invalid per the XDG spec and ignored.
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative")
    assert XdgAutostart().path == Path.home() / ".config" / "autostart" / ENTRY
    monkeypatch.delenv("XDG_CONFIG_DIRS", raising=False)
    assert XdgAutostart().config_dirs == [Path("/etc/xdg")]


def test_desktop_exec_quotes_reserved_characters() -> None:
    assert desktop_exec(["/usr/bin/python3", "-m", "vidtray", "tray"]) == "/usr/bin/python3 -m vidtray tray"
    # Inner escapes: \$ \" \` \\ ; then every backslash doubled again by the string escaping.
    assert desktop_exec(['/a b/$HOME"x`\\y', "100%"]) == r'"/a b/\\$HOME\\"x\\`\\\\y" 100%%'


def test_desktop_exec_runs_a_program_path_with_percent_through_env() -> None:
    # GLib looks the program up without turning %% into %; env gets the path as an argument, which it does.
    assert desktop_exec(["/opt/100%/bin/vidtray-tray", "--activate"]) == \
        "/usr/bin/env /opt/100%%/bin/vidtray-tray --activate"
    assert parse_desktop_exec("/usr/bin/env /opt/100%%/bin/vidtray-tray --activate") == \
        ["/opt/100%/bin/vidtray-tray", "--activate"]
    # Someone else's env line is theirs.
    assert parse_desktop_exec("/usr/bin/env FOO=1 vidtray-tray") == ["/usr/bin/env", "FOO=1", "vidtray-tray"]


def test_desktop_exec_keeps_control_characters_on_one_line() -> None:
    value = desktop_exec(["/a\nb/tool", "x\ty"])
    assert "\n" not in value and "\t" not in value and value == '"/a\\nb/tool" "x\\ty"'


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters="\n\t\r"),
                        max_size=12), min_size=1, max_size=4))
def test_desktop_exec_round_trips(args: list[str]) -> None:
    value = desktop_exec(args)
    assert "\n" not in value and parse_desktop_exec(value) == args


# -- macOS ----------------------------------------------------------------------------------


def test_launch_agent_plist_runs_at_load(tmp_path: Path) -> None:
    backend = MacLaunchAgent(home=tmp_path, log_dir=tmp_path / "logs")
    assert backend.status().enabled is False
    command = ["/Users/me/.local/bin/vidtray-tray"]
    st = backend.enable(command)

    path = tmp_path / "Library" / "LaunchAgents" / "io.github.vidtray.tray.plist"
    assert st.enabled and st.location == str(path)
    doc = plistlib.loads(path.read_bytes())
    assert doc["Label"] == "io.github.vidtray.tray"
    assert doc["ProgramArguments"] == command
    assert doc["RunAtLoad"] is True and doc["KeepAlive"] is False
    assert doc["StandardErrorPath"] == str(tmp_path / "logs" / "tray.err.log")
    assert path.read_bytes().startswith(b"<?xml"), "launchd wants an XML (or binary) plist"

    doc["Disabled"] = True
    path.write_bytes(plistlib.dumps(doc))
    assert backend.status().enabled is False

    assert backend.disable().enabled is False and not path.exists()


def test_launch_agent_status_survives_a_broken_plist(tmp_path: Path) -> None:
    backend = MacLaunchAgent(home=tmp_path)
    backend.path.parent.mkdir(parents=True)
    backend.path.write_bytes(b"not a plist")
    st = backend.status()
    assert st.enabled is False and st.detail.startswith("unreadable")


# -- Windows (fake registry: the only fake here) --------------------------------------------


class FakeWinreg:
    """The subset of ``winreg`` the backend uses, over a dict {key path: {name: (value, type)}}."""

    HKEY_CURRENT_USER = "HKCU"
    KEY_READ = 0x20019
    KEY_SET_VALUE = 0x0002
    REG_SZ = 1
    REG_BINARY = 3

    class _Key:
        def __init__(self, path: str) -> None:
            self.path = path

        def __enter__(self) -> FakeWinreg._Key:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, tuple[Any, int]]] = {}

    def OpenKey(self, root: str, path: str, reserved: int = 0, access: int = KEY_READ) -> _Key:  # noqa: N802
        assert root == self.HKEY_CURRENT_USER, "vidtray must only touch HKCU"
        if path not in self.keys:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return self._Key(path)

    def CreateKeyEx(self, root: str, path: str, reserved: int = 0, access: int = 0) -> _Key:  # noqa: N802
        assert root == self.HKEY_CURRENT_USER
        self.keys.setdefault(path, {})
        return self._Key(path)

    def QueryValueEx(self, key: _Key, name: str) -> tuple[Any, int]:  # noqa: N802
        try:
            return self.keys[key.path][name]
        except KeyError:
            raise FileNotFoundError(2, "The system cannot find the file specified") from None

    def SetValueEx(self, key: _Key, name: str, reserved: int, typ: int, value: Any) -> None:  # noqa: N802
        assert typ in (self.REG_SZ, self.REG_BINARY)
        self.keys[key.path][name] = (value, typ)

    def DeleteValue(self, key: _Key, name: str) -> None:  # noqa: N802
        try:
            del self.keys[key.path][name]
        except KeyError:
            raise FileNotFoundError(2, "The system cannot find the file specified") from None


def test_windows_run_value_is_a_quoted_windowless_command() -> None:
    reg = FakeWinreg()
    backend = WindowsRunKey(registry=reg)
    assert backend.status().enabled is False

    command = [r"C:\Users\Me\AppData\Local\Programs\Python\Python311\pythonw.exe", "-m", "vidtray", "tray"]
    st = backend.enable(command)

    value, typ = reg.keys[RUN_KEY]["vidtray"]
    assert typ == reg.REG_SZ
    assert value == r"C:\Users\Me\AppData\Local\Programs\Python\Python311\pythonw.exe -m vidtray tray"
    assert st.enabled and st.command == command

    spaced = [r"C:\Users\Jane Doe\pipx\venvs\vidtray\Scripts\vidtray-tray.exe"]
    backend.enable(spaced)
    assert reg.keys[RUN_KEY]["vidtray"][0] == '"' + spaced[0] + '"'
    assert backend.status().command == spaced


def test_windows_reads_task_manager_state_and_enable_clears_it() -> None:
    reg = FakeWinreg()
    backend = WindowsRunKey(registry=reg)
    backend.enable([r"C:\vidtray\vidtray-tray.exe"])

    # What Task Manager writes when the user clicks "Disable": 03 + 11 bytes (a FILETIME).
    reg.keys.setdefault(APPROVED_KEY, {})["vidtray"] = (bytes([3]) + bytes(11), reg.REG_BINARY)
    st = backend.status()
    assert st.enabled is False and "Task Manager" in st.detail

    reg.keys[APPROVED_KEY]["vidtray"] = (bytes([2]) + bytes(11), reg.REG_BINARY)
    assert backend.status().enabled is True

    reg.keys[APPROVED_KEY]["vidtray"] = (bytes([3]) + bytes(11), reg.REG_BINARY)
    assert backend.enable([r"C:\vidtray\vidtray-tray.exe"]).enabled is True
    assert "vidtray" not in reg.keys[APPROVED_KEY]

    st = backend.disable()
    assert st.enabled is False and "vidtray" not in reg.keys[RUN_KEY]
    assert backend.disable().enabled is False  # idempotent


@given(st.lists(st.text(alphabet=st.sampled_from(list('ab \\"\tC:')), max_size=8), min_size=1, max_size=4))
def test_windows_cmdline_round_trips(args: list[str]) -> None:
    assert split_windows_cmdline(subprocess.list2cmdline(args)) == args


# -- what to start --------------------------------------------------------------------------


def test_launch_command_prefers_the_gui_script_next_to_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(autostart.shutil, "which", lambda name: None)
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").touch()
    python = str(bin_dir / "python")
    assert launch_command("linux", python) == [python, "-m", "vidtray", "tray"]
    (bin_dir / "vidtray-tray").touch()
    assert launch_command("linux", str(bin_dir / "python")) == [str(bin_dir / "vidtray-tray")]


def test_launch_command_on_windows_uses_pythonw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autostart.shutil, "which", lambda name: None)
    (tmp_path / "python.exe").touch()
    (tmp_path / "pythonw.exe").touch()
    assert launch_command("win32", str(tmp_path / "python.exe")) == [
        str(tmp_path / "pythonw.exe"), "-m", "vidtray", "tray"]
    (tmp_path / "Scripts").mkdir()
    (tmp_path / "Scripts" / "vidtray-tray.exe").touch()
    script = str(tmp_path / "Scripts" / "vidtray-tray.exe")
    assert launch_command("win32", str(tmp_path / "python.exe")) == [script]


def test_launch_command_falls_back_to_this_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autostart.shutil, "which", lambda name: None)
    assert launch_command("linux", "/usr/bin/python3") == ["/usr/bin/python3", "-m", "vidtray", "tray"]


# -- the command ----------------------------------------------------------------------------


def test_cli_enable_status_disable(cli, isolated_env: dict[str, Path]) -> None:
    desktop = isolated_env["XDG_CONFIG_HOME"] / "autostart" / ENTRY
    r = cli("autostart", "status", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["enabled"] is False

    r = cli("autostart", "enable")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("start on login: on")
    lines = desktop.read_text().splitlines()
    command = parse_desktop_exec(next(x for x in lines if x.startswith("Exec="))[len("Exec="):])
    assert Path(command[0]).is_absolute()
    # Login starts it from the home folder without PYTHONPATH. An installed vidtray (CI installs it
    # editable) needs nothing more; a checkout that is not installed is named as the working directory.
    workdir = next((x[len("Path="):] for x in lines if x.startswith("Path=")), None)
    assert workdir in (None, str(ROOT))
    # What it registered really starts vidtray's tray command there: ask it for its help instead.
    probe = [*command, "--help"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cwd = workdir or isolated_env["HOME"]
    out = subprocess.run(probe, capture_output=True, text=True, cwd=cwd, env=env).stdout
    assert out.startswith("usage: vidtray tray")
    validate_desktop_file(desktop)

    doc = json.loads(cli("autostart", "status", "--json").stdout)
    assert doc["enabled"] is True and doc["method"] == "xdg" and doc["location"] == str(desktop)

    r = cli("autostart", "disable")
    assert r.returncode == 0 and r.stdout.startswith("start on login: off")
    assert not desktop.exists()


def test_cli_enable_reports_an_unwritable_autostart_folder(cli, isolated_env: dict[str, Path]) -> None:
    # A file where the folder should be: the write fails, one error line, exit 1.
    (isolated_env["XDG_CONFIG_HOME"] / "autostart").write_text("")
    r = cli("autostart", "enable")
    assert r.returncode == 1
    assert r.stderr.startswith("vidtray: error: cannot write") and r.stderr.count("\n") == 1
