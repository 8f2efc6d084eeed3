"""freedesktop ``.desktop`` files: the application entry, and the format both it and the autostart entry use.

One id names everything the desktop maps to vidtray: ``APP_ID`` is the file name of the application entry
(``$XDG_DATA_HOME/applications/<APP_ID>.desktop``: vidtray in the app menu), of the autostart entry
(``$XDG_CONFIG_HOME/autostart/<APP_ID>.desktop``), of the icon in the user's icon theme, and the
``desktop-entry`` hint every notification carries, so notification settings list vidtray by name and icon.

Everything here is plain file work on the caller's thread; writes are atomic. Linux and the BSDs only
(the callers check); nothing here needs a screen.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from vidtray.errors import OperationFailed
from vidtray.services.fsutil import atomic_write_bytes, atomic_write_text

APP_ID = "io.github.vidtray.Vidtray"
DESKTOP_FILE = f"{APP_ID}.desktop"
APP_NAME = "vidtray"
# The prompt popup's Tk class (vidtray.tray.popup.WINDOW_CLASS): the only window vidtray maps, so
# docks and task bars group it under this entry's name and icon.
WINDOW_CLASS = "VidtrayPopup"
ICON_SIZE = 64  # the shipped PNGs are 64x64


# -- XDG base directories ----------------------------------------------------------------------


def _abs_env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name, "")
    # The base-dir spec says a relative value is invalid and must be ignored.
    return Path(value) if value and os.path.isabs(value) else default


def xdg_config_home() -> Path:
    return _abs_env_path("XDG_CONFIG_HOME", Path.home() / ".config")


def xdg_data_home() -> Path:
    return _abs_env_path("XDG_DATA_HOME", Path.home() / ".local" / "share")


def xdg_config_dirs() -> list[Path]:
    """``$XDG_CONFIG_DIRS`` in order of importance (default ``/etc/xdg``); relative entries dropped."""
    value = os.environ.get("XDG_CONFIG_DIRS", "") or "/etc/xdg"
    return [Path(p) for p in value.split(":") if p and os.path.isabs(p)]


# -- the format ----------------------------------------------------------------------------------

_EXEC_RESERVED = set(' \t\n"\'\\><~|&;$*?#()`')
#: Runs the program when its path has a ``%``: see :func:`desktop_exec`.
ENV = "/usr/bin/env"


def desktop_exec(command: Sequence[str]) -> str:
    """Quote ``command`` for a .desktop ``Exec`` key (Desktop Entry spec, "The Exec key").

    An argument with reserved characters goes in double quotes with ``"`$\\`` escaped by a
    backslash; ``%`` is doubled (field codes); then the whole value gets the general string
    escaping, which doubles every backslash again.

    A program path with ``%`` in it is run through ``/usr/bin/env``: the spec wants ``%%`` there,
    but GLib (GNOME's menus and session) looks the program up in the value as written, without
    turning ``%%`` into ``%``, so it finds no program and drops the entry. As an argument of ``env``
    the path gets its ``%`` back when the entry is launched (GLib, KDE and desktop-file-validate agree).
    """
    parts = []
    for arg in ([ENV, *command] if command and "%" in command[0] else command):
        arg = arg.replace("%", "%%")
        if not arg or any(c in _EXEC_RESERVED for c in arg):
            escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
            arg = f'"{escaped}"'
        parts.append(arg)
    return escape_string(" ".join(parts))


def parse_desktop_exec(value: str) -> list[str]:
    """Inverse of :func:`desktop_exec` (enough for files we wrote, and for plain hand edits)."""
    value = unescape_string(value)
    args: list[str] = []
    cur: list[str] = []
    in_quotes = have_arg = False
    i = 0
    while i < len(value):
        c = value[i]
        if in_quotes:
            if c == "\\" and i + 1 < len(value):
                cur.append(value[i + 1])
                i += 1
            elif c == '"':
                in_quotes = False
            else:
                cur.append(c)
        elif c == '"':
            in_quotes = have_arg = True
        elif c in " \t":
            if have_arg:
                args.append("".join(cur))
                cur, have_arg = [], False
        else:
            cur.append(c)
            have_arg = True
        i += 1
    if have_arg:
        args.append("".join(cur))
    args = [a.replace("%%", "%") for a in args]
    # The env that desktop_exec puts before a program path with "%" is not part of the command.
    return args[1:] if len(args) > 1 and args[0] == ENV and "%" in args[1] else args


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_UNESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def escape_string(value: str) -> str:
    """The spec's escaping for string values ("Possible value types"): a path with a newline, tab or
    backslash stays one line and reads back the same; a space at either end is ``\\s``, since readers
    drop the blanks around a value."""
    text = "".join(_ESCAPES.get(c, c) for c in value)
    if text.startswith(" "):
        text = "\\s" + text[1:]
    if text.endswith(" "):
        text = text[:-1] + "\\s"
    return text


def unescape_string(value: str) -> str:
    """Inverse of :func:`escape_string` for any value (``\\s \\n \\t \\r \\\\``; other backslashes stay)."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value) and value[i + 1] in _UNESCAPES:
            out.append(_UNESCAPES[value[i + 1]])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def read_desktop_entry(text: str) -> dict[str, str]:
    """Keys of the ``[Desktop Entry]`` group (other groups and comments ignored)."""
    out: dict[str, str] = {}
    group = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1]
        elif group == "Desktop Entry" and "=" in line:
            key, _, val = line.partition("=")
            out[key.strip()] = val.strip()
    return out


def entry_lines(command: Sequence[str], *, icon: str | None = None, workdir: Path | None = None) -> list[str]:
    """The keys the application entry and the autostart entry share (the autostart one adds its own).

    ``TryExec`` names the program itself: a desktop skips (and menus hide) an entry whose program is
    gone, so an uninstalled vidtray leaves no broken launcher behind.
    """
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.4",
        f"Name={APP_NAME}",
        "GenericName=AI Video Generator",
        "Comment=Generate videos with local AI models from the tray",
        f"TryExec={escape_string(command[0])}",
        f"Exec={desktop_exec(command)}",
        "Terminal=false",
        "Categories=AudioVideo;Video;",
        "Keywords=AI;video;generation;diffusers;text-to-video;",
        "StartupNotify=false",
        f"StartupWMClass={WINDOW_CLASS}",
    ]
    if icon:
        lines.append(f"Icon={escape_string(icon)}")
    if workdir is not None:
        lines.append(f"Path={escape_string(str(workdir))}")
    return lines


def try_exec_missing(entry: dict[str, str]) -> str | None:
    """The ``TryExec`` program when it is not there (desktops then skip the entry), else None."""
    value = unescape_string(entry.get("TryExec", ""))
    if not value:
        return None
    found = Path(value).is_file() and os.access(value, os.X_OK) if os.path.isabs(value) else shutil.which(value)
    return None if found else value


# -- the application entry -------------------------------------------------------------------------


@dataclass(frozen=True)
class AppEntryStatus:
    installed: bool
    path: str  # the .desktop file
    icon: str | None  # the icon file in the user's icon theme
    command: list[str] | None
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class AppEntry:
    """``<data_home>/applications/<APP_ID>.desktop`` plus the icon in ``<data_home>/icons/hicolor``."""

    def __init__(self, data_home: Path | None = None) -> None:
        home = data_home or xdg_data_home()
        self.path = home / "applications" / DESKTOP_FILE
        self.icon_path = home / "icons" / "hicolor" / f"{ICON_SIZE}x{ICON_SIZE}" / "apps" / f"{APP_ID}.png"

    def install(self, command: Sequence[str], icon_source: Path, workdir: Path | None = None) -> AppEntryStatus:
        try:
            self.icon_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.icon_path, Path(icon_source).read_bytes())
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The icon by its theme name: menus pick it up from hicolor like any installed app's.
            atomic_write_text(self.path, "\n".join(entry_lines(command, icon=APP_ID, workdir=workdir)) + "\n")
        except OSError as exc:
            raise OperationFailed(f"cannot write the application entry: {exc.strerror or exc}"
                                  f"{f' ({exc.filename})' if exc.filename else ''}") from exc
        return self.status()

    def remove(self) -> AppEntryStatus:
        for path in (self.path, self.icon_path):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise OperationFailed(f"cannot remove {path}: {exc.strerror or exc}") from exc
        return self.status()

    def status(self) -> AppEntryStatus:
        icon = str(self.icon_path) if self.icon_path.is_file() else None
        try:
            entry = read_desktop_entry(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return AppEntryStatus(False, str(self.path), icon, None, "not installed")
        except (OSError, UnicodeDecodeError) as exc:
            return AppEntryStatus(False, str(self.path), icon, None, f"unreadable: {exc}")
        command = parse_desktop_exec(entry.get("Exec", "")) or None
        missing = try_exec_missing(entry)
        if missing:
            return AppEntryStatus(False, str(self.path), icon, command,
                                  f"stale: {missing} is gone (reinstall, or: vidtray desktop-entry remove)")
        return AppEntryStatus(True, str(self.path), icon, command, f"installed ({self.path})")
