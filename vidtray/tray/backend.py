"""Which pystray backend the tray uses, and whether a tray host is there to show it.

pystray picks a backend at import time and, on Linux, prefers AppIndicator, which shows nothing
where no StatusNotifierWatcher is on the session bus; its xorg backend docks but ignores clicks
and has no menu (pystray issue #151); and ``import pystray`` raises (not ImportError) without a
display. So the tray never lets pystray choose. It asks :func:`choose_backend` what the desktop
offers *now*:

- Windows: win32; macOS: darwin (both have menus and always a place for the icon).
- Linux: AppIndicator when a StatusNotifierWatcher owns its name on the session bus and an
  AppIndicator typelib is installed; else GTK (``Gtk.StatusIcon``, XEmbed) when an XEmbed tray
  manager owns ``_NET_SYSTEM_TRAY_S<screen>``; else no icon *yet* (``wait``): the tray runs its
  services, says once what to install, and asks again every couple of seconds, because at login
  the panel often starts after vidtray.
- Never the xorg backend: an icon that cannot be clicked is worse than none. Without PyGObject
  (or GTK 3's typelib) there is no icon at all, and the reason names the package.

``tray_backend_info()`` reports the same for ``vidtray doctor``. Nothing here runs off the main thread
except the probes, which only read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

log = logging.getLogger("vidtray.tray")

SNI_WATCHER = "org.kde.StatusNotifierWatcher"
PYGOBJECT_HINT = ("install PyGObject: pip install 'vidtray[linux]' (builds it; Debian/Ubuntu need "
                  "libgirepository1.0-dev libcairo2-dev pkg-config gir1.2-gtk-3.0), or for the system "
                  "Python: Debian/Ubuntu python3-gi gir1.2-gtk-3.0, Fedora python3-gobject gtk3")
GTK_HINT = "install GTK 3's typelib (Debian/Ubuntu: gir1.2-gtk-3.0, Fedora: gtk3)"
NO_HOST_HINT = ("on GNOME install and enable the AppIndicator extension (Debian/Ubuntu: "
                "gnome-shell-extension-appindicator); other desktops need their panel's system tray running")
APPINDICATOR_HINT = ("install the AppIndicator typelib (Debian/Ubuntu: gir1.2-ayatanaappindicator3-0.1, "
                     "Fedora: libayatana-appindicator-gtk3)")
_ICON_BACKENDS = ("appindicator", "gtk", "win32", "darwin")


@dataclass(frozen=True)
class BackendChoice:
    name: str  # appindicator | gtk | win32 | darwin | none
    has_menu: bool
    reason: str
    hint: str = ""  # what to install or start, when there is no icon
    wait: bool = False  # "none" only: a tray host may still appear, so keep asking
    fatal: bool = False  # "none" only: nothing graphical at all (no display): `vidtray tray` refuses to start

    @property
    def shows_icon(self) -> bool:
        return self.name in _ICON_BACKENDS

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Probe:
    """What the desktop offers; each a function so tests and doctor can ask a real or a given desktop."""

    gi_namespaces: Callable[[], dict[str, list[str]] | None]
    sni_watcher: Callable[[], bool]
    xembed_manager: Callable[[str], bool | None]  # None: cannot tell (no libX11)


def _gi_namespaces() -> dict[str, list[str]] | None:
    """Installed GObject typelibs we care about, or None without PyGObject."""
    try:
        import gi
    except ImportError:
        return None
    repo = gi.Repository.get_default()
    return {ns: list(repo.enumerate_versions(ns)) for ns in ("Gtk", "AppIndicator3", "AyatanaAppIndicator3")}


NO_BUS_RETRY_S = 60.0
_no_bus_since: float | None = None


def sni_watcher_present(timeout_ms: int = 2000) -> bool:
    """True if a StatusNotifierWatcher (what AppIndicator icons register with) is on the session bus."""
    global _no_bus_since
    try:
        from gi.repository import Gio, GLib
    except ImportError:
        return False
    # Without a session bus GIO tries to start one (dbus-launch) on every call: not every 1.5 s.
    if _no_bus_since is not None and time.monotonic() - _no_bus_since < NO_BUS_RETRY_S:
        return False
    try:
        bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
    except Exception as exc:  # GLib.Error
        log.debug("no session bus to ask for %s: %s", SNI_WATCHER, exc)
        _no_bus_since = time.monotonic()
        return False
    _no_bus_since = None
    try:
        reply = bus.call_sync(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner",
            GLib.Variant("(s)", (SNI_WATCHER,)), GLib.VariantType("(b)"), Gio.DBusCallFlags.NONE, timeout_ms, None,
        )
    except Exception as exc:  # GLib.Error: the bus did not answer
        log.debug("cannot ask the session bus for %s: %s", SNI_WATCHER, exc)
        return False
    return bool(reply.unpack()[0])


class _LibX11:
    """Three calls of libX11 through ctypes: the tray asks "is there an XEmbed tray?" every couple of
    seconds while it waits, and libX11 is the library GTK maps anyway, whereas python-xlib would add
    ~3 MB of modules to a process that idles for days."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libX11.so.6")  # the SONAME everywhere; find_library would run ldconfig
        except OSError:
            lib = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so")
        lib.XOpenDisplay.restype = ctypes.c_void_p
        lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        lib.XDefaultScreen.argtypes = [ctypes.c_void_p]
        lib.XInternAtom.restype = ctypes.c_ulong
        lib.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.XGetSelectionOwner.restype = ctypes.c_ulong
        lib.XGetSelectionOwner.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        lib.XCloseDisplay.argtypes = [ctypes.c_void_p]
        self.lib = lib

    def selection_owned(self, display: str) -> bool | None:
        dpy = self.lib.XOpenDisplay(display.encode())
        if not dpy:
            return False  # the display cannot be reached (yet): no tray there either
        try:
            # A connection to ":0" may name another screen (":0.1"): the tray of *that* screen counts.
            screen = self.lib.XDefaultScreen(dpy)
            atom = self.lib.XInternAtom(dpy, f"_NET_SYSTEM_TRAY_S{screen}".encode(), 0)
            return bool(self.lib.XGetSelectionOwner(dpy, atom))
        finally:
            self.lib.XCloseDisplay(dpy)


_x11: _LibX11 | None = None


def xembed_manager_present(display: str) -> bool | None:
    """True if an XEmbed tray manager owns ``_NET_SYSTEM_TRAY_S<screen>`` on ``display``; None if we
    cannot ask (no libX11)."""
    global _x11
    if not display:
        return False
    if _x11 is None:
        try:
            _x11 = _LibX11()
        except (OSError, AttributeError) as exc:
            log.debug("libX11 not loadable: %s", exc)
            return None
    return _x11.selection_owned(display)


REAL_PROBE = Probe(_gi_namespaces, sni_watcher_present, xembed_manager_present)


def choose_backend(platform: str = sys.platform, env: MutableMapping[str, str] | None = None,
                   probe: Probe | None = None) -> BackendChoice:
    """The backend to show an icon with now, or "none" with the reason, what to install, and whether to wait."""
    env = os.environ if env is None else env
    probe = probe or REAL_PROBE
    if platform == "win32":
        return BackendChoice("win32", True, "Windows notification area")
    if platform == "darwin":
        return BackendChoice("darwin", True, "macOS menu bar")
    display, wayland = env.get("DISPLAY", ""), env.get("WAYLAND_DISPLAY", "")
    if not display and not wayland:
        return BackendChoice("none", False, "no display (DISPLAY is not set)", fatal=True)
    spaces = probe.gi_namespaces()
    if spaces is None:
        return BackendChoice("none", False, "the tray icon needs PyGObject, which is not installed", PYGOBJECT_HINT)
    if "3.0" not in spaces["Gtk"]:
        return BackendChoice("none", False, "the tray icon needs GTK 3's typelib, which is missing", GTK_HINT)
    # A preference only: vidtray never shows the xorg backend's dead icon, whatever PYSTRAY_BACKEND says.
    prefer = env.get("PYSTRAY_BACKEND", "")
    has_indicator = bool(spaces["AppIndicator3"] or spaces["AyatanaAppIndicator3"])
    sni = probe.sni_watcher()
    if sni and has_indicator and prefer != "gtk":
        return BackendChoice("appindicator", True, f"a StatusNotifierWatcher ({SNI_WATCHER}) is on the session bus")
    xembed = probe.xembed_manager(display) if display else False
    if xembed is None and display:
        # libX11 would not load: we cannot look, so try GTK, which docks by itself once a tray is there.
        return BackendChoice("gtk", True, f"cannot check for an XEmbed tray on {display} (libX11 not loadable)")
    if xembed and prefer != "appindicator":
        return BackendChoice("gtk", True, f"an XEmbed system tray manages {display}: GTK status icon")
    if sni and not has_indicator:
        return BackendChoice("none", False, "the desktop's tray speaks only StatusNotifierItem (a "
                             f"StatusNotifierWatcher is on the session bus, no XEmbed tray on {display or 'X'}) "
                             "and no AppIndicator typelib is installed", APPINDICATOR_HINT, wait=True)
    where = f"no XEmbed tray manager on {display}" if display else "no X display for an XEmbed tray"
    return BackendChoice("none", False, f"no system tray found ({where}, no StatusNotifierWatcher on the "
                         "session bus)", NO_HOST_HINT, wait=True)


def prepare_env(choice: BackendChoice, env: MutableMapping[str, str] | None = None) -> None:
    """Environment for the chosen backend; must run before pystray (and GTK) are imported."""
    env = os.environ if env is None else env
    if choice.name in ("appindicator", "gtk"):
        env["PYSTRAY_BACKEND"] = choice.name
    if choice.name == "gtk":
        # Gtk.StatusIcon is X11-only (XEmbed); under a Wayland session use XWayland.
        env["GDK_BACKEND"] = "x11"
    if choice.name in ("appindicator", "gtk"):
        # A tray icon draws no GL, but GDK probes GLX visuals at start, which maps Mesa (and LLVM)
        # into the process: about half of a bare GTK icon's resident memory. A user's own setting wins.
        env.setdefault("GDK_GL", "disable")


def load_pystray(choice: BackendChoice) -> tuple[ModuleType, BackendChoice]:
    """Import pystray with ``choice``; AppIndicator that fails to load falls back to GTK.

    Raises RuntimeError when the backend cannot be loaded (the message says why); never falls
    back to the xorg backend.
    """
    if not choice.shows_icon:
        raise RuntimeError(f"cannot show a tray icon: {choice.reason}")
    prepare_env(choice)
    if choice.name in ("gtk", "appindicator"):
        _name_gtk_program()
    try:
        import pystray
    except Exception as exc:  # ImportError, ValueError (missing typelib), GTK that cannot open the display
        _forget_pystray()
        if choice.name != "appindicator":
            raise RuntimeError(f"cannot show a tray icon ({choice.name} backend): {exc}") from exc
        log.warning("tray: the AppIndicator backend failed (%s); trying the GTK status icon", exc)
        fallback = BackendChoice("gtk", True, f"the AppIndicator backend failed ({exc})")
        prepare_env(fallback)
        try:
            import pystray
        except Exception as exc2:
            _forget_pystray()
            raise RuntimeError(f"cannot show a tray icon: {exc2}") from exc2
        return pystray, fallback
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
    # A failed import leaves half-initialised modules behind; drop them so a retry starts clean.
    for name in [n for n in sys.modules if n == "pystray" or n.startswith("pystray.")]:
        del sys.modules[name]


def tray_backend_info(probe: Probe | None = None) -> dict[str, Any]:
    """For ``vidtray doctor``: the backend ``vidtray tray`` would use here now, or why there is no icon."""
    probe = probe or REAL_PROBE
    choice = choose_backend(probe=probe)
    doc = choice.as_dict()
    doc["backend"] = doc.pop("name")
    try:
        import gi

        doc["pygobject"] = gi.__version__
    except ImportError:
        doc["pygobject"] = None
    if sys.platform not in ("win32", "darwin"):
        display = os.environ.get("DISPLAY") or None
        doc["display"] = display
        doc["sni_watcher"] = probe.sni_watcher() if doc["pygobject"] else None
        doc["xembed_tray"] = probe.xembed_manager(display) if display else None
    return doc
