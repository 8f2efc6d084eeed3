"""Tray test helpers on top of ``desktop.py``: a real tray host (``trayer``), ``vidtray tray`` as a child,
the docked icon found in the X window tree, and the GTK menu driven with xdotool like a person would.

Usable from tests (``tray_host`` fixture) and from ``benchmarks/tray_idle.py``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAYER = ["trayer", "--edge", "top", "--align", "right", "--widthtype", "request", "--height", "32",
          "--SetDockType", "true", "--transparent", "false"]
ICON_SETTLE_READS = 4  # reads 0.1 s apart with the same geometry: trayer is done placing the icon
# Visible menu items of an idle tray, top to bottom (separators are skipped by the keyboard).
MENU = ["Generate video...", "Open videos folder", "Open library", "Storage", "Pause queue", "Pause watching",
        "Start on login", "Settings", "Open log", "Quit"]


@contextlib.contextmanager
def x_connection(display: str) -> Iterator[object]:
    from Xlib import display as xdisplay

    d = xdisplay.Display(display)
    try:
        yield d
    finally:
        d.close()


def tray_manager_present(display: str) -> bool:
    with x_connection(display) as d:
        atom = d.intern_atom("_NET_SYSTEM_TRAY_S0")  # type: ignore[attr-defined]
        return bool(d.get_selection_owner(atom))  # type: ignore[attr-defined]


def wait_until(check, timeout: float, what: str, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class XWin:
    id: int
    name: str
    wm_class: tuple[str, ...]
    ancestors: tuple[str, ...]  # names of the parents, nearest first
    width: int
    height: int
    x: int  # position on the screen (root coordinates)
    y: int
    viewable: bool
    override_redirect: bool


def windows(display: str) -> list[XWin]:
    """Every window in the tree with its WM_NAME, WM_CLASS and the names of its ancestors."""
    from Xlib import X, error

    out: list[XWin] = []
    with x_connection(display) as d:
        root = d.screen().root  # type: ignore[attr-defined]

        def walk(win, ancestors: tuple[str, ...], ox: int, oy: int) -> None:  # type: ignore[no-untyped-def]
            try:
                children = win.query_tree().children
            except error.XError:
                return
            for child in children:
                try:
                    name = child.get_wm_name() or ""
                    cls = child.get_wm_class() or ()
                    attrs = child.get_attributes()
                    geo = child.get_geometry()
                except error.XError:
                    continue  # gone meanwhile
                name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
                x, y = ox + geo.x + geo.border_width, oy + geo.y + geo.border_width
                out.append(XWin(child.id, name, tuple(cls), ancestors, geo.width, geo.height, x, y,
                                attrs.map_state == X.IsViewable, bool(attrs.override_redirect)))
                walk(child, (name, *ancestors), x, y)

        walk(root, (), 0, 0)
    return out


def docked_icons(display: str, wm_class: str = "vidtray") -> list[XWin]:
    """Viewable windows of ``wm_class`` embedded in trayer's panel (an XEmbed tray icon)."""
    return [w for w in windows(display)
            if w.viewable and wm_class in w.wm_class and "panel" in w.ancestors]


def open_menus(display: str, wm_class: str = "vidtray") -> list[XWin]:
    """Popup menus (override-redirect, viewable) of ``wm_class``."""
    return [w for w in windows(display)
            if w.viewable and w.override_redirect and wm_class in w.wm_class and w.height > 40]


class TrayProcess:
    """``python -m vidtray [ARGS] tray`` in a desktop, with its output in files."""

    def __init__(self, desk, args: Sequence[str] = (), env: Mapping[str, str] | None = None,  # type: ignore[no-untyped-def]
                 logs: Path | None = None) -> None:
        self.desk = desk
        self.display = desk.display.name
        self.env = {**desk.env, "PYTHONPATH": str(ROOT), **(env or {})}
        folder = logs or Path(desk.folder)
        self.out_path = folder / f"tray-{time.monotonic_ns()}.out"
        self._out = open(self.out_path, "wb")  # noqa: SIM115  # closed in stop()
        self.proc = desk.spawn([sys.executable, "-m", "vidtray", *args, "tray"], env=self.env, cwd=ROOT,
                               stdout=self._out, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.out_path.read_text(errors="replace")

    def wait_icon(self, timeout: float = 30.0) -> XWin:
        """The docked icon once trayer has finished laying it out, so a click lands on it.

        trayer maps a new icon 1 px wide, then sizes it, and with ``--widthtype request`` the panel
        grows and moves left meanwhile: a click aimed at the icon while that settles can hit the bare
        panel (the icon once caught at 16x30 on its way to 32x30 took a right click that opened no
        menu). So: square or wider than tall, and at the same place and size over a few reads.
        """
        seen: list[tuple[int, int, int, int, int]] = []

        def settled() -> XWin | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"tray exited with {self.proc.returncode}: {self.output[-2000:]}")
            icons = [i for i in docked_icons(self.display) if i.width >= 16 and i.width >= i.height]
            if not icons:
                seen.clear()
                return None
            icon = icons[0]
            seen.append((icon.id, icon.x, icon.y, icon.width, icon.height))
            return icon if len(seen) >= ICON_SETTLE_READS and len(set(seen[-ICON_SETTLE_READS:])) == 1 else None

        return wait_until(settled, timeout, "the tray icon to dock in trayer")

    def xdotool(self, *args: str) -> None:
        subprocess.run(["xdotool", *args], env=self.desk.env, check=True, timeout=30)  # not the tray's env (PATH)

    def click(self, icon: XWin, button: int) -> None:
        self.xdotool("mousemove", "--window", str(icon.id), str(icon.width // 2), str(icon.height // 2),
                     "click", str(button))

    def pick(self, icon: XWin, item: str, timeout: float = 10.0) -> None:
        """Right-click the icon, walk the menu with the arrow keys to ``item``, press Enter."""
        self.click(icon, 3)
        wait_until(lambda: open_menus(self.display), timeout, "the tray menu to open")
        for _ in range(MENU.index(item) + 1):
            self.xdotool("key", "Down")
        self.xdotool("key", "Return")
        wait_until(lambda: not open_menus(self.display), timeout, "the tray menu to close")

    def pick_in_storage(self, icon: XWin, position: int, timeout: float = 10.0) -> None:
        """Open Storage and press Enter on its ``position``-th action (0 = the first enabled item)."""
        self.click(icon, 3)
        wait_until(lambda: open_menus(self.display), timeout, "the tray menu to open")
        for _ in range(MENU.index("Storage") + 1):
            self.xdotool("key", "Down")
        self.xdotool("key", "Right")  # opens the submenu on its first enabled item
        wait_until(lambda: len(open_menus(self.display)) >= 2, timeout, "the Storage submenu")
        for _ in range(position):
            self.xdotool("key", "Down")
        self.xdotool("key", "Return")
        wait_until(lambda: not open_menus(self.display), timeout, "the tray menu to close")

    def title(self, icon: XWin) -> str:
        """The icon's title as the tray host sees it (GTK sets it with the tooltip)."""
        for w in windows(self.display):
            if w.id == icon.id:
                return w.name
        raise AssertionError("the icon window is gone")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout)
        finally:
            self._out.close()
        return code


def start_trayer(desk, timeout: float = 15.0) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    proc = desk.spawn(TRAYER, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: tray_manager_present(desk.display.name), timeout, "trayer to own the system tray")
    return proc
