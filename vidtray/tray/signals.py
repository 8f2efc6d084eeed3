"""SIGTERM, SIGINT and SIGHUP as bytes on a socket that the tray's main loop watches.

A Python signal handler runs on the main thread between two bytecodes, wherever that thread is:
inside ``Event.wait``, a logging call, a menu callback. Quitting from there (locks, threads) can
deadlock, and while GTK's loop or a C call holds the main thread the handler may not run at all.
So the handler only writes the signal number to a socket (and ``signal.set_wakeup_fd`` does the same
from C, before any Python runs); the main loop reads it where quitting is safe:

- no icon yet (waiting for a tray host): ``wait()``, a ``select`` with a timeout;
- GTK / AppIndicator: ``watch_glib()``, a GLib IO watch on the main loop;
- win32 / darwin (loops without a hook): ``watch_thread()``, a named thread that reads the socket.

Other threads wake the waiting loop with ``wake()`` (a zero byte, never a signal number).
"""

from __future__ import annotations

import contextlib
import logging
import select
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("vidtray.tray")

NAMES = ("SIGTERM", "SIGINT", "SIGHUP")


class SignalPipe:
    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        for sock in (self._r, self._w):
            sock.setblocking(False)
            sock.set_inheritable(False)

    def install(self) -> None:
        """Main thread only (Python's rule for signal handlers). For the rest of the process's life."""
        for name in NAMES:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), self._handler)
        signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)

    def _handler(self, signum: int, _frame: Any) -> None:
        # Also written here (not only by set_wakeup_fd): GLib's Python bindings swap in their own
        # wakeup fd while their main loop runs, and then only this handler reaches our socket.
        self._send(bytes([signum]))

    def wake(self) -> None:
        """Any thread: make ``wait()`` return now."""
        self._send(b"\0")

    def _send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # full (the reader is behind anyway) or closed at exit
            self._w.send(data)

    def read(self) -> list[int]:
        """The signal numbers received since the last read (wake-ups dropped)."""
        got = b""
        while True:
            try:
                chunk = self._r.recv(256)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        return [b for b in got if b]

    def wait(self, timeout: float | None) -> list[int]:
        """Block until a signal, a ``wake()`` or the timeout; the signals received."""
        with contextlib.suppress(OSError, ValueError):
            select.select([self._r], [], [], timeout)
        return self.read()

    def watch_glib(self, on_signals: Callable[[list[int]], None]) -> int:
        """Call ``on_signals`` on the GLib main loop whenever signals arrive; returns the source id."""
        from gi.repository import GLib

        def ready(_fd: int, _cond: Any) -> bool:
            received = self.read()
            if received:
                on_signals(received)
            return True

        return int(GLib.io_add_watch(self._r.fileno(), GLib.PRIORITY_HIGH, GLib.IOCondition.IN, ready))

    def watch_thread(self, on_signals: Callable[[list[int]], None]) -> threading.Thread:
        """Call ``on_signals`` on a named daemon thread (for loops without a hook: win32, darwin)."""

        def loop() -> None:
            while True:
                received = self.wait(None)
                if received:
                    on_signals(received)

        thread = threading.Thread(target=loop, name="tray-signals", daemon=True)
        thread.start()
        return thread

    @staticmethod
    def name(signum: int) -> str:
        try:
            return signal.Signals(signum).name
        except ValueError:
            return str(signum)
