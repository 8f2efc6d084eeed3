""""Show in folder": the desktop's file manager with the video selected where the platform allows it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

SHOW_ITEMS_TIMEOUT_S = 5.0


def reveal(path: Path) -> None:
    """Show ``path`` in the file manager: selected (macOS Finder, Windows Explorer, and on Linux any file
    manager that implements freedesktop's FileManager1 on the session bus), else its folder opened with
    ``xdg-open``. OSError when nothing can show it."""
    if sys.platform == "darwin":
        _start(["open", "-R", str(path)])
    elif sys.platform == "win32":
        _start(["explorer", f"/select,{path}"])
    elif not _show_items(path):
        _start(["xdg-open", str(path.parent)], package="xdg-utils")


def _show_items(path: Path) -> bool:
    gdbus = shutil.which("gdbus")
    if gdbus is None:
        return False
    uri = "file://" + quote(str(path))
    try:
        done = subprocess.run(
            [gdbus, "call", "--session", "--dest", "org.freedesktop.FileManager1", "--object-path",
             "/org/freedesktop/FileManager1", "--method", "org.freedesktop.FileManager1.ShowItems", f"['{uri}']",
             ""], stdin=subprocess.DEVNULL, capture_output=True, timeout=SHOW_ITEMS_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _start(argv: list[str], package: str = "") -> None:
    try:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    except FileNotFoundError:
        raise OSError(f"{argv[0]} is not installed" + (f" (package: {package})" if package else "")) from None
