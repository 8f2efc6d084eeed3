"""Which pystray backend the tray uses, chosen once before ``import pystray``.

pystray picks a backend at import time and, on Linux, prefers AppIndicator, which shows
nothing where no StatusNotifierWatcher is on the session bus (plain X11 trays, trayer, many
window managers); it also fails with ValueError, not ImportError, when the AppIndicator
typelib is missing, which aborts its own fallback. So we choose, set ``PYSTRAY_BACKEND`` and
import:

- Windows: win32; macOS: darwin (both have menus).
- Linux: AppIndicator only when a StatusNotifierWatcher owns its name on the session bus and an
  AppIndicator typelib is installed; else GTK (``Gtk.StatusIcon``, XEmbed: docks in any X11
  tray and has a menu); else the icon-only xorg backend, with a log line saying how to get a
  menu (the ``linux`` extra: PyGObject).

``tray_backend_info()`` reports the same choice for ``vidtray doctor`` without showing an icon.
Nothing here runs off the main thread.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

log = logging.getLogger("vidtray.tray")

SNI_WATCHER = "org.kde.StatusNotifierWatcher"
MENU_HINT = ("install the 'linux' extra for a tray menu: pip install 'vidtray[linux]' "
             "(builds PyGObject; Debian/Ubuntu need libgirepository1.0-dev libcairo2-dev pkg-config gir1.2-gtk-3.0)")
_HAS_MENU = {"appindicator": True, "gtk": True, "win32": True, "darwin": True, "xorg": False, "none": False}


@dataclass(frozen=True)
class BackendChoice:
    name: str  # appindicator | gtk | xorg | win32 | darwin | none
    has_menu: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gi_namespaces() -> dict[str, list[str]] | None:
    """Installed GObject typelibs we care about, or None without PyGObject."""
    try:
        import gi
    except ImportError:
        return None
    repo = gi.Repository.get_default()
    return {ns: list(repo.enumerate_versions(ns)) for ns in ("Gtk", "AppIndicator3", "AyatanaAppIndicator3")}


def sni_watcher_present(timeout_ms: int = 2000) -> bool:
    """True if a StatusNotifierWatcher (what AppIndicator icons register with) is on the session bus."""
    try:
        from gi.repository import Gio, GLib
    except ImportError:
        return False
    try:
        bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
        reply = bus.call_sync(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner",
            GLib.Variant("(s)", (SNI_WATCHER,)), GLib.VariantType("(b)"), Gio.DBusCallFlags.NONE, timeout_ms, None,
        )
    except Exception as exc:  # GLib.Error: no session bus, or it did not answer
        log.debug("cannot ask the session bus for %s: %s", SNI_WATCHER, exc)
        return False
    return bool(reply.unpack()[0])


def choose_backend(platform: str = sys.platform, env: MutableMapping[str, str] | None = None) -> BackendChoice:
    env = os.environ if env is None else env
    if platform == "win32":
        return BackendChoice("win32", True, "Windows notification area")
    if platform == "darwin":
        return BackendChoice("darwin", True, "macOS menu bar")
    forced = env.get("PYSTRAY_BACKEND")
    if forced:
        return BackendChoice(forced, _HAS_MENU.get(forced, False), "PYSTRAY_BACKEND is set")
    if not env.get("DISPLAY"):
        why = "only Wayland (no X display: DISPLAY is not set)" if env.get("WAYLAND_DISPLAY") else \
            "no display (DISPLAY is not set)"
        return BackendChoice("none", False, why)
    spaces = _gi_namespaces()
    if spaces is None:
        return BackendChoice("xorg", False, f"PyGObject is not installed; {MENU_HINT}")
    if (spaces["AppIndicator3"] or spaces["AyatanaAppIndicator3"]) and sni_watcher_present():
        return BackendChoice("appindicator", True, f"a StatusNotifierWatcher ({SNI_WATCHER}) is on the session bus")
    if "3.0" in spaces["Gtk"]:
        return BackendChoice("gtk", True, "no StatusNotifierWatcher on the session bus: GTK status icon (XEmbed)")
    return BackendChoice("xorg", False, f"the GTK 3 typelib is missing (Debian: gir1.2-gtk-3.0); {MENU_HINT}")


def prepare_env(choice: BackendChoice, env: MutableMapping[str, str] | None = None) -> None:
    """Environment for the chosen backend; must run before pystray (and GTK) are imported."""
    env = os.environ if env is None else env
    if choice.name in ("appindicator", "gtk", "xorg"):
        env["PYSTRAY_BACKEND"] = choice.name
    if choice.name == "gtk":
        # Gtk.StatusIcon is X11-only (XEmbed); under a Wayland session use XWayland.
        env["GDK_BACKEND"] = "x11"
    if choice.name in ("appindicator", "gtk"):
        # A tray icon draws no GL, but GDK probes GLX visuals at start, which maps Mesa (and LLVM)
        # into the process: about half of a bare GTK icon's resident memory. A user's own setting wins.
        env.setdefault("GDK_GL", "disable")


def load_pystray(choice: BackendChoice | None = None) -> tuple[ModuleType, BackendChoice]:
    """Import pystray with ``choice`` (default: :func:`choose_backend`), falling back to xorg.

    Raises RuntimeError when no backend can show an icon (no display at all).
    """
    choice = choice or choose_backend()
    if choice.name == "none":
        raise RuntimeError(f"cannot show a tray icon: {choice.reason}")
    prepare_env(choice)
    if choice.name in ("gtk", "appindicator"):
        _name_gtk_program()
    try:
        import pystray
    except Exception as exc:  # ImportError, ValueError (missing typelib), Xlib display errors
        if choice.name in ("xorg", "win32", "darwin"):
            raise RuntimeError(f"cannot show a tray icon ({choice.name} backend): {exc}") from exc
        _forget_pystray()
        fallback = BackendChoice("xorg", False, f"the {choice.name} backend failed ({exc}); {MENU_HINT}")
        log.warning("tray: %s backend failed (%s); falling back to the icon-only xorg backend: NO MENU, "
                    "a click opens the prompt popup. %s", choice.name, exc, MENU_HINT)
        prepare_env(fallback)
        try:
            import pystray
        except Exception as exc2:
            raise RuntimeError(f"cannot show a tray icon: {exc2}") from exc2
        return pystray, fallback
    if not choice.has_menu:
        log.warning("tray: %s backend has no menu (a click opens the prompt popup): %s", choice.name, choice.reason)
    return pystray, choice


def _name_gtk_program() -> None:
    """WM_CLASS "vidtray" for our windows (tray hosts and tests find the icon by it), before GTK starts."""
    try:
        from gi.repository import GLib

        GLib.set_prgname("vidtray")
        GLib.set_application_name("vidtray")
    except Exception as exc:  # cosmetic
        log.debug("cannot set the GTK program name: %s", exc)


def _forget_pystray() -> None:
    # A failed import leaves half-initialised modules behind; drop them so the retry starts clean.
    for name in [n for n in sys.modules if n == "pystray" or n.startswith("pystray.")]:
        del sys.modules[name]


def tray_backend_info() -> dict[str, Any]:
    """For ``vidtray doctor``: the backend ``vidtray tray`` would use here and whether it has a menu."""
    choice = choose_backend()
    doc = choice.as_dict()
    doc["backend"] = doc.pop("name")
    try:
        import gi

        doc["pygobject"] = gi.__version__
    except ImportError:
        doc["pygobject"] = None
    if sys.platform not in ("win32", "darwin"):
        doc["sni_watcher"] = sni_watcher_present() if doc["pygobject"] else None
        doc["display"] = os.environ.get("DISPLAY") or None
    return doc
