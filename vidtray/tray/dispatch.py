"""The one place other threads hand UI work to: ``Dispatcher.post(fn)``.

Threads (monitor, storage refresh, actions, the daemon's callbacks) never touch the icon; they
post a function, and the UI side runs posted functions one at a time, in order:

- GTK / AppIndicator: on the GLib main loop (the main thread), woken with ``GLib.idle_add``;
- before there is an icon (no tray host yet): on the main thread's waiting loop, which ``use_wake``
  wakes and which calls ``drain``;
- other backends: on one named consumer thread (``tray-ui``), because pystray's win32 and darwin
  loops offer no hook; pystray's own calls are safe from a single foreign thread there.

The tray's slow menu actions use a second Dispatcher on its own thread (``tray-action``): one at a
time, in order, and a daemon thread, so an action still waiting for a dialog never holds up the exit.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("vidtray.tray")

_STOP = object()


class Dispatcher:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | object] = queue.SimpleQueue()
        self._wake: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self.ui_thread: int | None = None

    # -- wiring (before the icon runs; the waiting loop's wake may be replaced by the icon's) ---
    def use_wake(self, wake: Callable[[], None]) -> None:
        """Someone calls ``drain`` on their thread; ``wake`` (any thread) tells them there is work."""
        self._wake = wake
        wake()

    def use_glib(self) -> None:
        """Run posted work on the GLib main loop (GTK-based pystray backends)."""
        from gi.repository import GLib

        def wake() -> None:
            GLib.idle_add(self._drain_idle)

        self._wake = wake
        wake()  # anything posted before wiring

    def use_thread(self, name: str = "tray-ui") -> None:
        """Run posted work on one consumer thread (backends without a main-loop hook, slow actions)."""
        self._wake = None
        self._thread = threading.Thread(target=self._consume, name=name, daemon=True)
        self._thread.start()

    # -- producer side (any thread) ------------------------------------------------------------
    def post(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)
        if self._wake is not None:
            self._wake()

    def close(self) -> None:
        self._queue.put(_STOP)
        if self._wake is not None:
            self._wake()

    # -- consumer side -------------------------------------------------------------------------
    def drain(self) -> int:
        """Run everything posted so far on the calling (UI) thread; returns how many ran."""
        self.ui_thread = threading.get_ident()
        ran = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return ran
            if item is _STOP:
                continue
            self._run(item)  # type: ignore[arg-type]
            ran += 1

    def _drain_idle(self) -> bool:
        self.drain()
        return False  # GLib: do not call again until the next wake

    def _consume(self) -> None:
        self.ui_thread = threading.get_ident()
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            self._run(item)  # type: ignore[arg-type]

    @staticmethod
    def _run(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # one bad update must not stop the UI from taking the next
            log.exception("UI update failed")
