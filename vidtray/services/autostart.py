"""Start the tray on login: one small backend per OS, chosen once by :func:`backend_for`.

- Linux (and other XDG desktops): ``$XDG_CONFIG_HOME/autostart/<APP_ID>.desktop`` (the application
  entry's id) whose ``Exec`` and ``TryExec`` are absolute paths, so it works whatever ``PATH`` the
  session starts with; a system-wide entry of that id in ``$XDG_CONFIG_DIRS/autostart`` is honoured.
- Windows: the ``vidtray`` value under ``HKCU\\...\\CurrentVersion\\Run`` (a windowless launcher,
  so no console flashes at login). Task Manager's "Startup apps" switch lives apart, under
  ``...\\Explorer\\StartupApproved\\Run``; status reads it and enable clears a "disabled" there.
- macOS: ``~/Library/LaunchAgents/<LABEL>.plist`` with ``RunAtLoad`` (launchd reads it at login).

Every backend has the same three calls; all run on the caller's thread, touch only the user's
own files/registry, and never need admin rights. File writes are atomic.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, cast

from vidtray.errors import OperationFailed
from vidtray.services.desktop_entry import (  # noqa: F401  # desktop_exec/parse_desktop_exec: re-exported
    APP_NAME,
    DESKTOP_FILE,
    desktop_exec,
    entry_lines,
    parse_desktop_exec,
    read_desktop_entry,
    try_exec_missing,
    xdg_config_dirs,
    xdg_config_home,
)
from vidtray.services.fsutil import atomic_write_bytes, atomic_write_text

LEGACY_DESKTOP_FILE = "vidtray.desktop"  # the autostart file's name before it took the application id
LAUNCH_AGENT_LABEL = "io.github.vidtray.tray"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
APPROVED_KEY = r"Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run"
RUN_VALUE = "vidtray"


@dataclass(frozen=True)
class AutostartStatus:
    enabled: bool
    method: str  # "xdg" | "windows-run" | "launchagent"
    location: str  # the file, or the registry key\value
    command: list[str] | None  # what would start at login (None when nothing is registered)
    detail: str  # one line for a person

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class AutostartBackend(Protocol):
    def enable(self, command: Sequence[str]) -> AutostartStatus: ...
    def disable(self) -> AutostartStatus: ...
    def status(self) -> AutostartStatus: ...


# -- what to start ---------------------------------------------------------------------------


def launch_command(platform: str = sys.platform, executable: str = sys.executable) -> list[str]:
    """The absolute command that starts the tray without a console window.

    Prefer the ``vidtray-tray`` gui-script installed next to this interpreter (a venv's
    ``bin/`` or ``Scripts\\``), then one on PATH; else ``<python> -m vidtray tray``, with
    ``pythonw.exe`` on Windows so no console opens.
    """
    exe = Path(executable).absolute()
    if platform == "win32":
        candidates = [exe.parent / "vidtray-tray.exe", exe.parent / "Scripts" / "vidtray-tray.exe"]
    else:
        candidates = [exe.parent / "vidtray-tray"]
    for path in candidates:
        if path.is_file():
            return [str(path)]
    found = shutil.which("vidtray-tray")
    if found:
        return [str(Path(found).absolute())]
    python = exe
    if platform == "win32" and exe.name.lower() == "python.exe":
        pythonw = exe.with_name("pythonw.exe")
        if pythonw.is_file():
            python = pythonw
    return [str(python), "-m", "vidtray", "tray"]


def source_checkout() -> Path | None:
    """The checkout folder when vidtray runs from one that is not installed, else None.

    Asks this interpreter the way login will start it (home folder as working directory, no
    PYTHONPATH) whether it finds this vidtray; if not, ``python -m vidtray`` needs the checkout as
    its working directory.
    """
    here = Path(__file__).resolve().parent.parent  # the vidtray package
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = "import importlib.util as u; s = u.find_spec('vidtray'); print(s.origin if s and s.origin else '')"
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30,
                             cwd=Path.home(), env=env).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if out and Path(out).resolve().parent == here:
        return None
    return here.parent


# -- Linux / XDG -----------------------------------------------------------------------------


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise OperationFailed(f"cannot remove {path}: {exc.strerror or exc}") from exc


class XdgAutostart:
    """``<config_home>/autostart/<APP_ID>.desktop`` (freedesktop Desktop Application Autostart spec).

    The same file name as the application entry, so both map to one app. Per the spec a user file
    overrides a system-wide one of the same name in ``$XDG_CONFIG_DIRS/autostart``: ``status`` reads
    the user file first, then the system ones; ``disable`` with a system entry writes a user entry
    with ``Hidden=true`` (removing ours would not stop the system one). The old ``vidtray.desktop``
    is read when it is the only entry, and removed by ``enable`` and ``disable``.
    """

    method = "xdg"

    def __init__(self, config_home: Path | None = None, icon: Path | None = None,
                 workdir: Path | None = None, config_dirs: Sequence[Path] | None = None) -> None:
        folder = (config_home or xdg_config_home()) / "autostart"
        self.path = folder / DESKTOP_FILE
        self.legacy_path = folder / LEGACY_DESKTOP_FILE
        self.config_dirs = list(xdg_config_dirs() if config_dirs is None else config_dirs)
        self.icon = icon
        self.workdir = workdir

    def system_entry(self) -> Path | None:
        """The system-wide autostart entry of this id that applies (the first in XDG_CONFIG_DIRS order)."""
        for folder in self.config_dirs:
            path = folder / "autostart" / DESKTOP_FILE
            if path.is_file():
                return path
        return None

    def enable(self, command: Sequence[str]) -> AutostartStatus:
        lines = entry_lines(command, icon=str(self.icon) if self.icon is not None else None, workdir=self.workdir)
        lines.append("X-GNOME-Autostart-enabled=true")
        self._write(lines)
        _remove(self.legacy_path)
        return self.status()

    def disable(self) -> AutostartStatus:
        _remove(self.legacy_path)
        system = self.system_entry()
        if system is None:
            _remove(self.path)
            return self.status()
        # Shadow the system entry: a user entry of the same name with Hidden=true (spec, "Hidden").
        try:
            entry = read_desktop_entry(system.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            entry = {}
        self._write([
            "[Desktop Entry]",
            "Type=Application",
            f"Name={entry.get('Name') or APP_NAME}",
            f"Exec={entry.get('Exec') or 'vidtray-tray'}",
            "Hidden=true",
        ])
        return self.status()

    def _write(self, lines: Sequence[str]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, "\n".join(lines) + "\n")
        except OSError as exc:
            raise OperationFailed(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def status(self) -> AutostartStatus:
        candidates = [self.path]
        if not self.path.exists():
            candidates.append(self.legacy_path)
            system = self.system_entry()
            if system is not None:
                candidates.append(system)
        for path in candidates:
            if path.exists():
                return self._status_of(path)
        return AutostartStatus(False, self.method, str(self.path), None, "not enabled (no file)")

    def _status_of(self, path: Path) -> AutostartStatus:
        try:
            entry = read_desktop_entry(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            return AutostartStatus(False, self.method, str(path), None, f"unreadable: {exc}")
        command = parse_desktop_exec(entry.get("Exec", "")) or None
        # Desktops honour Hidden=true (spec) and GNOME's own switch as "turned off".
        if entry.get("Hidden", "").lower() == "true":
            return AutostartStatus(False, self.method, str(path), command, "turned off (Hidden=true)")
        if entry.get("X-GNOME-Autostart-enabled", "").lower() == "false":
            return AutostartStatus(False, self.method, str(path), command,
                                   "turned off in the desktop's startup settings")
        if not command:
            return AutostartStatus(False, self.method, str(path), None, "the file has no Exec line")
        missing = try_exec_missing(entry)
        if missing:
            return AutostartStatus(False, self.method, str(path), command,
                                   f"not started: {missing} is gone (TryExec); run: vidtray autostart enable")
        system_wide = "system-wide, " if path.parent != self.path.parent else ""
        return AutostartStatus(True, self.method, str(path), command, f"enabled ({system_wide}{path})")


# -- macOS -----------------------------------------------------------------------------------


class MacLaunchAgent:
    """``~/Library/LaunchAgents/<label>.plist`` with ``RunAtLoad`` (launchd loads it at login)."""

    method = "launchagent"

    def __init__(self, home: Path | None = None, log_dir: Path | None = None, workdir: Path | None = None) -> None:
        self.path = (home or Path.home()) / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"
        self.log_dir = log_dir
        self.workdir = workdir

    def enable(self, command: Sequence[str]) -> AutostartStatus:
        doc: dict[str, object] = {
            "Label": LAUNCH_AGENT_LABEL,
            "ProgramArguments": list(command),
            "RunAtLoad": True,
            # A tray the user quits must stay quit until the next login.
            "KeepAlive": False,
            # Interactive: launchd does not throttle it like a background daemon.
            "ProcessType": "Interactive",
            "LimitLoadToSessionType": "Aqua",
        }
        if self.workdir is not None:
            doc["WorkingDirectory"] = str(self.workdir)
        if self.log_dir is not None:
            doc["StandardOutPath"] = str(self.log_dir / "tray.out.log")
            doc["StandardErrorPath"] = str(self.log_dir / "tray.err.log")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, plistlib.dumps(doc, fmt=plistlib.FMT_XML))
        except OSError as exc:
            raise OperationFailed(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        return self.status()

    def disable(self) -> AutostartStatus:
        _remove(self.path)
        return self.status()

    def status(self) -> AutostartStatus:
        try:
            doc = plistlib.loads(self.path.read_bytes())
        except FileNotFoundError:
            return AutostartStatus(False, self.method, str(self.path), None, "not enabled (no file)")
        except (OSError, plistlib.InvalidFileException, ValueError) as exc:
            return AutostartStatus(False, self.method, str(self.path), None, f"unreadable: {exc}")
        args = doc.get("ProgramArguments")
        command = [str(a) for a in args] if isinstance(args, list) and args else None
        if doc.get("Disabled") is True:
            return AutostartStatus(False, self.method, str(self.path), command, "turned off (Disabled=true)")
        if doc.get("RunAtLoad") is not True or not command:
            return AutostartStatus(False, self.method, str(self.path), command,
                                   "the LaunchAgent does not run at load")
        return AutostartStatus(True, self.method, str(self.path), command, f"enabled ({self.path})")


# -- Windows ---------------------------------------------------------------------------------


def approved_enabled(data: bytes) -> bool:
    """Task Manager's StartupApproved bytes: an even first byte (02, 06) is enabled, odd (03) disabled."""
    return not data or data[0] % 2 == 0


class Registry(Protocol):
    """The part of the ``winreg`` module that :class:`WindowsRunKey` uses."""

    HKEY_CURRENT_USER: int
    KEY_READ: int
    KEY_SET_VALUE: int
    REG_SZ: int

    def OpenKey(self, key: int, sub_key: str, reserved: int, access: int, /) -> AbstractContextManager[object]:
        ...

    def CreateKeyEx(self, key: int, sub_key: str, reserved: int, access: int, /) -> AbstractContextManager[object]:
        ...

    def QueryValueEx(self, key: object, name: str, /) -> tuple[object, int]: ...
    def SetValueEx(self, key: object, name: str, reserved: int, type: int, value: str, /) -> None: ...
    def DeleteValue(self, key: object, name: str, /) -> None: ...


class WindowsRunKey:
    """The ``vidtray`` value under HKCU ``Run`` plus Task Manager's ``StartupApproved`` switch.

    ``registry`` is the ``winreg`` module; tests pass a fake with the same functions.
    """

    method = "windows-run"

    def __init__(self, registry: Registry | None = None) -> None:
        if registry is None:
            import winreg

            # A cast: off Windows, winreg's stubs are empty (and the import fails at run time).
            registry = cast(Registry, winreg)
        self.reg = registry
        self.location = rf"HKCU\{RUN_KEY}\{RUN_VALUE}"

    def _get(self, key_path: str, name: str) -> object:
        reg = self.reg
        try:
            with reg.OpenKey(reg.HKEY_CURRENT_USER, key_path, 0, reg.KEY_READ) as key:
                return reg.QueryValueEx(key, name)[0]
        except FileNotFoundError:
            return None

    def _delete(self, key_path: str, name: str) -> None:
        reg = self.reg
        try:
            with reg.OpenKey(reg.HKEY_CURRENT_USER, key_path, 0, reg.KEY_SET_VALUE) as key:
                reg.DeleteValue(key, name)
        except FileNotFoundError:
            pass

    def enable(self, command: Sequence[str]) -> AutostartStatus:
        reg = self.reg
        try:
            with reg.CreateKeyEx(reg.HKEY_CURRENT_USER, RUN_KEY, 0, reg.KEY_SET_VALUE) as key:
                reg.SetValueEx(key, RUN_VALUE, 0, reg.REG_SZ, subprocess.list2cmdline(list(command)))
            # Asking vidtray to start on login overrides an earlier "Disable" in Task Manager;
            # without the approval value Windows treats the entry as enabled.
            self._delete(APPROVED_KEY, RUN_VALUE)
        except OSError as exc:
            raise OperationFailed(f"cannot write {self.location}: {exc}") from exc
        return self.status()

    def disable(self) -> AutostartStatus:
        try:
            self._delete(RUN_KEY, RUN_VALUE)
            self._delete(APPROVED_KEY, RUN_VALUE)
        except OSError as exc:
            raise OperationFailed(f"cannot remove {self.location}: {exc}") from exc
        return self.status()

    def status(self) -> AutostartStatus:
        try:
            value = self._get(RUN_KEY, RUN_VALUE)
            approved = self._get(APPROVED_KEY, RUN_VALUE)
        except OSError as exc:
            return AutostartStatus(False, self.method, self.location, None, f"unreadable: {exc}")
        if not isinstance(value, str) or not value.strip():
            return AutostartStatus(False, self.method, self.location, None, "not enabled (no Run value)")
        command = split_windows_cmdline(value)
        if isinstance(approved, bytes | bytearray) and not approved_enabled(bytes(approved)):
            return AutostartStatus(False, self.method, self.location, command,
                                   "disabled in Task Manager (Startup apps)")
        return AutostartStatus(True, self.method, self.location, command, f"enabled ({self.location})")


def split_windows_cmdline(value: str) -> list[str]:
    """Split a command line the way ``subprocess.list2cmdline`` builds it (MS C runtime rules)."""
    args: list[str] = []
    cur: list[str] = []
    in_quotes = have_arg = False
    backslashes = 0
    for c in value:
        if c == "\\":
            backslashes += 1
            continue
        if c == '"':
            cur.append("\\" * (backslashes // 2))
            if backslashes % 2:
                cur.append('"')
            else:
                in_quotes = not in_quotes
            have_arg = True
            backslashes = 0
            continue
        if backslashes:
            cur.append("\\" * backslashes)
            have_arg = True
            backslashes = 0
        if c in " \t" and not in_quotes:
            if have_arg:
                args.append("".join(cur))
            cur, have_arg = [], False
        else:
            cur.append(c)
            have_arg = True
    cur.append("\\" * backslashes)
    if have_arg or backslashes:
        args.append("".join(cur))
    return args


# -- choice ----------------------------------------------------------------------------------


def backend_for(platform: str = sys.platform, workdir: Path | None = None) -> AutostartBackend:
    """The backend for this OS (chosen once per call site; tests build the classes directly).

    ``workdir`` is what ``enable`` writes as the working directory (a checkout that is not installed).
    """
    if platform == "win32":
        return WindowsRunKey()
    if platform == "darwin":
        from vidtray.logs import log_file

        return MacLaunchAgent(log_dir=log_file().parent, workdir=workdir)
    from vidtray.icons import icon_path

    return XdgAutostart(icon=icon_path("idle", "png"), workdir=workdir)


def enable() -> AutostartStatus:
    # Run from a checkout (not installed), `python -m vidtray` needs that folder as its working directory.
    return backend_for(workdir=source_checkout()).enable(launch_command())


def disable() -> AutostartStatus:
    return backend_for().disable()


def status() -> AutostartStatus:
    return backend_for().status()
