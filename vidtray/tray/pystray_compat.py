"""The one place that reaches into pystray's private API (pystray 0.19's names), so a pystray upgrade is
checked here and nowhere else.

``icon_class`` hardens pystray's Icon for the GTK-based backends (GTK status icon, AppIndicator):

- ``_initialize``: pystray's own version connects to the notification daemon (``_util.notify_dbus``) and
  raises when none answers, which would take the whole tray down (vidtray notifies through its own
  Notifier), and resets SIGINT to the default action, which would kill the tray without a quit
  (``signals.py`` handles SIGINT). Ours keeps pystray's notifier harmless and only marks the icon ready
  (``_mark_ready``);
- ``_update_title`` (GTK): pystray sets only the accessible title of ``_status_icon``; the tooltip is what
  a user hovers to read, so ours sets both.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

log = logging.getLogger("vidtray.tray")

GTK_BACKENDS = ("gtk", "appindicator")


class SafeNotifier:
    """pystray's own D-Bus notifier, made harmless: vidtray does not use it, but pystray's GTK base
    creates it at start and hides it at exit, and both raise when no notification daemon answers."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner

    def notify(self, *args: Any, **kwargs: Any) -> None:
        if self.inner is not None:
            try:
                self.inner.notify(*args, **kwargs)
            except Exception as exc:
                log.debug("pystray notification failed: %s", exc)

    def hide(self) -> None:
        if self.inner is not None:
            try:
                self.inner.hide()
            except Exception as exc:
                log.debug("pystray notification hide failed: %s", exc)


def icon_class(pystray: ModuleType, backend: str) -> type[Any]:
    """pystray's Icon, hardened for the GTK-based backends (see the module doc)."""
    base: type[Any] = pystray.Icon
    if backend not in GTK_BACKENDS:
        return base

    class Icon(base):  # type: ignore[misc]
        def _initialize(self) -> None:
            from pystray._util import notify_dbus

            try:
                self._notifier = SafeNotifier(notify_dbus.Notifier())
            except Exception as exc:
                log.warning("tray: no notification daemon for pystray (%s); the icon works without it", exc)
                self._notifier = SafeNotifier()
            self._mark_ready()

        if backend == "gtk":
            def _update_title(self) -> None:
                from gi.repository import GLib

                title = self.title

                def apply() -> bool:
                    self._status_icon.set_title(title)
                    self._status_icon.set_tooltip_text(title)
                    return False

                GLib.idle_add(apply)

    return Icon
