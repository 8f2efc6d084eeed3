"""What the Tk children (the prompt popup, the confirmation dialogs) share: saying that Tk is missing,
and where a window opens.

Debian and Ubuntu ship Tk apart from Python (``python3-tk``), so a child that cannot import tkinter
exits with ``EXIT_MISSING_TK`` and one ``vidtray: error:`` line naming the package; the tray turns
that into a notification and a log line (a click that does nothing would say nothing).

Without a window manager, or with one that leaves placement to the app, a new Tk window lands at
0,0. The tray's windows open next to the pointer, which is where the user just clicked the icon or
the menu, kept on the screen; without a pointer position, centred.
"""

from __future__ import annotations

import sys
from typing import Any

EXIT_MISSING_TK = 3
TK_PACKAGES = "Debian/Ubuntu: python3-tk, Fedora: python3-tkinter, Arch: tk"
EDGE_MARGIN = 8  # px kept free at the screen's edges
POINTER_GAP = 32  # px between the pointer and the window: clears a tray panel up to ~60 px high


def missing_tk_message(what: str) -> str:
    return f"{what} needs Tk (tkinter), which is not installed ({TK_PACKAGES})"


def exit_missing_tk(what: str) -> int:
    """Say on stderr, in one line, that ``what`` needs Tk; the exit status for the tray to recognise."""
    print(f"vidtray: error: {missing_tk_message(what)}", file=sys.stderr, flush=True)
    return EXIT_MISSING_TK


def placement(pointer: tuple[int, int] | None, size: tuple[int, int],
              screen: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner for a window of ``size``: centred under (or above) the pointer, on the screen."""
    w, h = size
    sw, sh = screen
    if pointer is None or not (0 <= pointer[0] < sw and 0 <= pointer[1] < sh):
        return max(0, (sw - w) // 2), max(0, (sh - h) // 2)
    px, py = pointer
    x = px - w // 2
    # Below the pointer when it is in the upper half (a top panel), above it otherwise.
    y = py + POINTER_GAP if py < sh / 2 else py - POINTER_GAP - h
    return _clamp(x, w, sw), _clamp(y, h, sh)


def _clamp(pos: int, length: int, total: int) -> int:
    if length + 2 * EDGE_MARGIN >= total:
        return max(0, (total - length) // 2)
    return min(max(pos, EDGE_MARGIN), total - length - EDGE_MARGIN)


def place_window(root: Any) -> tuple[int, int]:
    """Open a Tk toplevel at :func:`placement`; returns the position."""
    root.withdraw()  # computing the size runs Tk's idle tasks, which would map it at 0,0 first
    root.update_idletasks()  # the requested size, from the widgets' geometry
    size = (root.winfo_reqwidth(), root.winfo_reqheight())
    screen = (root.winfo_screenwidth(), root.winfo_screenheight())
    px, py = root.winfo_pointerxy()  # -1, -1 when the pointer is on another screen
    x, y = placement((px, py) if px >= 0 and py >= 0 else None, size, screen)
    root.geometry(f"+{x}+{y}")
    root.deiconify()
    return x, y
