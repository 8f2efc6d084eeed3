"""Small Tk dialogs for the tray's destructive actions, each run as its own process.

The tray's main thread belongs to pystray's loop and Tk wants a main thread of its own, so a
confirmation is a child process: ``python -m vidtray.tray.dialog confirm|days ...``; the tray
waits for it on an action thread. Exit 0 = confirmed (``days`` prints the number), 1 = cancelled,
2 = the window could not open, 3 = Tk is not installed (``tkhelp.EXIT_MISSING_TK``); for 2 and 3 one
``vidtray: error:`` line says why. Enter confirms, Esc cancels.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vidtray.config import MAX_DAYS
from vidtray.services import storage
from vidtray.tray import tkhelp

try:
    import tkinter as tk
    from tkinter import ttk
except ImportError as exc:  # Debian/Ubuntu ship Tk apart (python3-tk): main() says so in one line
    _TK_MISSING: ImportError | None = exc
else:
    _TK_MISSING = None

WINDOW_CLASS = "VidtrayDialog"


def parse_days(text: str) -> float | None:
    """The days field: ``storage.parse_days``, more than 0 (the menu has its own "delete all") and at most
    MAX_DAYS; None when it is not such a number."""
    try:
        value = storage.parse_days(text)
    except ValueError:
        return None
    return value if 0 < value <= MAX_DAYS else None


class Dialog:
    """A message, an optional days field, Cancel and an action button. ``result`` after mainloop."""

    def __init__(self, master: tk.Tk, title: str, message: str, ok: str, days: float | None = None) -> None:
        self.master = master
        self.result: float | bool | None = None
        master.title(title)
        master.resizable(False, False)
        frame = ttk.Frame(master, padding=14)
        frame.grid()
        ttk.Label(frame, text=message, wraplength=380, justify="left").grid(row=0, column=0, columnspan=3,
                                                                           sticky="w")
        self.days_var: tk.StringVar | None = None
        self.error = ttk.Label(frame, text="", foreground="#b00020")
        if days is not None:
            ttk.Label(frame, text="Older than (days):").grid(row=1, column=0, sticky="w", pady=(10, 0))
            self.days_var = tk.StringVar(master, value=f"{days:g}")
            entry = ttk.Entry(frame, textvariable=self.days_var, width=8)
            entry.grid(row=1, column=1, sticky="w", pady=(10, 0))
            entry.focus_set()
            entry.select_range(0, "end")
            self.days_var.trace_add("write", lambda *_: self._check())
            self.error.grid(row=2, column=0, columnspan=3, sticky="w")
        buttons = ttk.Frame(frame)
        buttons.grid(row=3, column=0, columnspan=3, sticky="e", pady=(12, 0))
        ttk.Button(buttons, text="Cancel", command=self.cancel).grid(row=0, column=0, padx=(0, 8))
        self.ok_button = ttk.Button(buttons, text=ok, command=self.confirm)
        self.ok_button.grid(row=0, column=1)
        if days is None:
            self.ok_button.focus_set()
        master.bind("<Return>", lambda _e: self.confirm())
        master.bind("<KP_Enter>", lambda _e: self.confirm())
        master.bind("<Escape>", lambda _e: self.cancel())
        master.protocol("WM_DELETE_WINDOW", self.cancel)

    def _check(self) -> float | None:
        assert self.days_var is not None
        value = parse_days(self.days_var.get())
        self.error.configure(text="" if value is not None else "A number of days, more than 0")
        return value

    def confirm(self) -> None:
        if self.days_var is not None:
            value = self._check()
            if value is None:
                return
            self.result = value
        else:
            self.result = True
        self.master.destroy()

    def cancel(self) -> None:
        self.result = None
        self.master.destroy()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidtray.tray.dialog")
    parser.add_argument("kind", choices=("confirm", "days"))
    parser.add_argument("--title", default="vidtray")
    parser.add_argument("--message", required=True)
    parser.add_argument("--ok", default="OK")
    parser.add_argument("--default", type=float, default=30.0)
    args = parser.parse_args(argv)
    if _TK_MISSING is not None:
        return tkhelp.exit_missing_tk("The confirmation dialog")
    try:
        root = tk.Tk(className=WINDOW_CLASS)
    except tk.TclError as exc:
        print(f"vidtray: error: cannot open a dialog: {exc}", file=sys.stderr)
        return 2
    dialog = Dialog(root, args.title, args.message, args.ok, args.default if args.kind == "days" else None)
    tkhelp.place_window(root)
    root.lift()
    root.attributes("-topmost", True)
    root.focus_force()
    root.mainloop()
    if dialog.result is None:
        return 1
    if args.kind == "days":
        print(f"{dialog.result:g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
