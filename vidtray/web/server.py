"""Running the library page: ``vidtray library serve``.

Binds 127.0.0.1 only (any other address is refused before a socket exists), on ``--port``, else
``library_port``, else vidtray's fixed default (``config.LIBRARY_PORT``); when that is taken it says so and
takes a free one (an explicit ``--port`` that is taken is an error instead). The first line on stdout is the
URL with the access token, flushed at once, so a launcher can read it. While it runs, a small state file
(``page-server.json`` in the state folder, 0600) says where it is, so a second "Open library" reuses it.

SIGINT and SIGTERM stop it cleanly (requests in flight finish, the state file goes). Started by the tray
(``--idle-exit``), it also stops after ``library_page_idle_s`` without a request; an open page asks every
couple of seconds while it is visible, so that means nobody is looking.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from vidtray.config import LIBRARY_PORT, Config
from vidtray.errors import OperationFailed, UserError
from vidtray.services import statefile
from vidtray.web import token as tokens

log = logging.getLogger("vidtray.web")

HOST = "127.0.0.1"
#: How often the idle exit looks at the clock (and at most how late it stops).
IDLE_CHECK_S = 5.0


def check_loopback(host: str) -> str:
    """``host`` if it is a loopback address (127.0.0.0/8, ::1); UserError for anything else: the page can
    delete files, so it never listens where another machine could reach it."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise UserError(f"the library page listens only on the loopback address (127.0.0.1), not {host!r}") from None
    if not address.is_loopback:
        raise UserError(f"the library page listens only on the loopback address (127.0.0.1), not {host}")
    return host


def bind(host: str, port: int | None, configured: int) -> tuple[socket.socket, str | None]:
    """A listening socket on ``host`` (loopback only) and a note for the user when the port is not the one
    asked for. ``port``: the user's ``--port`` (must be free); else ``configured`` (``library_port``) or the
    default, falling back to any free port."""
    check_loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port is not None:
        try:
            return _listen(family, host, port), None
        except OSError as exc:
            raise OperationFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    wanted = configured or LIBRARY_PORT
    try:
        return _listen(family, host, wanted), None
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
            raise OperationFailed(f"cannot listen on {host}:{wanted}: {exc.strerror or exc}") from None
    sock = _listen(family, host, 0)
    setting = "library_port" if configured else "the default port"
    return sock, f"port {wanted} ({setting}) is in use; serving on port {sock.getsockname()[1]} instead"


def _listen(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":  # reuse a port in TIME_WAIT; on Windows this flag would let two servers share it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


# -- the state file -------------------------------------------------------------------------------------------


def remove_state(path: Path, pid: int) -> None:
    """Remove the state file if it is still this process's (a newer server may have replaced it)."""
    doc = statefile.read_doc(path)
    if doc is not None and doc.get("pid") == pid:
        try:
            path.unlink()
        except OSError:
            pass


# -- serving -------------------------------------------------------------------------------------------------


@dataclass
class PageServer:
    """A page server bound and ready to run (``run()`` blocks until it is asked to stop)."""

    server: Any  # uvicorn.Server
    sock: socket.socket
    port: int
    url: str  # with the token
    note: str | None  # why the port is not the one asked for
    activity: Any  # security.Activity

    def run(self) -> None:
        self.server.run(sockets=[self.sock])

    def stop(self) -> None:
        self.server.should_exit = True

    @property
    def started(self) -> bool:
        return bool(self.server.started)


def prepare(cfg: Config, port: int | None = None) -> PageServer:
    """The token (made on first use), the socket (see ``bind``), the app and its uvicorn server."""
    import uvicorn

    from vidtray.web.app import create_app
    from vidtray.web.security import Activity

    token = tokens.load_or_create(cfg.paths.page_token_file)
    sock, note = bind(HOST, port, cfg.library_port)
    chosen = int(sock.getsockname()[1])
    activity = Activity()
    try:
        app = create_app(cfg, token=token, port=chosen, activity=activity)
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, server_header=False,
                                               lifespan="off", timeout_graceful_shutdown=5))
    except BaseException:
        sock.close()
        raise
    return PageServer(server, sock, chosen, f"http://{HOST}:{chosen}/?token={token}", note, activity)


def serve(cfg: Config, *, port: int | None = None, open_browser: bool = True, idle_exit: bool = False,
          out: TextIO | None = None) -> int:
    """Serve the page until SIGINT/SIGTERM (or the idle time, with ``idle_exit``); returns the exit status."""
    out = out if out is not None else sys.stdout
    page = prepare(cfg, port)
    stop = threading.Event()
    previous = _on_signals(lambda: _stop(page, stop))
    state_file = cfg.paths.page_server_file
    try:
        statefile.write_doc(state_file, {"pid": os.getpid(), "port": page.port, "url": page.url,
                                 "library": str(cfg.library_file),
                                 "started": datetime.now(UTC).isoformat(timespec="seconds")})
        # The URL first, at once: the tray (and scripts) read this line to open the page.
        out.write(page.url + "\n")
        out.flush()
        if page.note:
            print(f"vidtray: {page.note}", file=sys.stderr, flush=True)
        log.info("library page on http://%s:%d/ (%s)", HOST, page.port, page.note or "port as asked")
        if idle_exit and cfg.library_page_idle_s > 0:
            _thread("page-idle", lambda: _idle_exit(page, stop, cfg.library_page_idle_s))
        if open_browser:
            _thread("page-browser", lambda: _open_when_up(page, stop))
        page.run()
    finally:
        stop.set()
        page.sock.close()
        remove_state(state_file, os.getpid())
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("library page stopped")
    return 0


def _stop(page: PageServer, stop: threading.Event) -> None:
    page.stop()
    stop.set()


def _on_signals(handler: Callable[[], None]) -> dict[int, Any]:
    """SIGINT and SIGTERM stop the server. uvicorn puts its own handlers in while it runs, puts these back
    after and passes the signal it caught on to them: ending here, not in a KeyboardInterrupt or a kill."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(sig: int, frame: FrameType | None) -> None:
        handler()

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def _thread(name: str, target: Callable[[], None]) -> None:
    threading.Thread(target=target, name=name, daemon=True).start()


def _idle_exit(page: PageServer, stop: threading.Event, idle_s: float) -> None:
    while not stop.wait(min(IDLE_CHECK_S, idle_s / 4)):
        if page.activity.idle_s() >= idle_s:
            log.info("library page: no request for %.0f s; stopping", idle_s)
            _stop(page, stop)
            return


def _open_when_up(page: PageServer, stop: threading.Event) -> None:
    url = page.url
    deadline = time.monotonic() + 30
    while not page.started and time.monotonic() < deadline:
        if stop.wait(0.05):
            return
    try:
        if not webbrowser.open(url):
            print(f"vidtray: could not open a browser; open {url.split('?')[0]} with the URL above",
                  file=sys.stderr, flush=True)
    except Exception as exc:  # a broken browser setting must not stop the server
        log.warning("cannot open the browser: %s", exc)
