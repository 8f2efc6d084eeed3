"""The tray's "Open library": start the library page as its own process on demand, or reuse the one that
runs, and open it in the browser.

Light on purpose (standard library, filelock and vidtray's light modules): the tray imports it, and the web
stack (Starlette, uvicorn, Jinja2) must stay out of the tray's process. The page process is started detached
(its own session: closing the tray does not close the page), with ``--idle-exit`` so that it stops by itself
after ``library_page_idle_s`` without a request.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import urllib.request
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vidtray.errors import OperationFailed
from vidtray.services.childenv import child_env
from vidtray.services.fsutil import private_dir
from vidtray.web import token as tokens

if TYPE_CHECKING:
    from vidtray.config import Config

log = logging.getLogger("vidtray.web")

START_TIMEOUT_S = 30.0
PING_TIMEOUT_S = 3.0


def open_library_page(cfg: Config, config_arg: str | None = None, *,
                      open_url: Callable[[str], object] = webbrowser.open, timeout: float = START_TIMEOUT_S) -> str:
    """Open the library page: the running server's if there is one for this library, else a new one's.
    Returns the URL (with the access token). OperationFailed when the page server does not start.
    Blocks for up to ``timeout`` (a fresh server takes about a second): call it off the UI thread."""
    import filelock

    state_dir = private_dir(Path(cfg.paths.page_server_file).parent)
    # Two quick clicks start one server, not two.
    try:
        with filelock.FileLock(str(state_dir / "page-server.lock"), timeout=timeout + 5):
            url = running_url(cfg)
            if url is None:
                url = start_server(cfg, config_arg, timeout=timeout)
    except filelock.Timeout:
        raise OperationFailed("another \"Open library\" is still starting the library page; try again") from None
    if open_url(url) is False:  # webbrowser.open found no browser
        raise OperationFailed(f"no browser could be opened; the library page runs at {url.split('?')[0]} "
                              "(`vidtray library serve` prints its address with the key)")
    return url


def running_url(cfg: Config) -> str | None:
    """The URL of the page server that serves this library now, or None. It must answer ``/api/ping`` with
    this user's token and name the same library and process as the state file does."""
    try:
        doc = json.loads(Path(cfg.paths.page_server_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    token = tokens.read(cfg.paths.page_token_file)
    if not isinstance(doc, dict) or token is None:
        return None
    port, url, pid = doc.get("port"), doc.get("url"), doc.get("pid")
    if not isinstance(port, int) or not isinstance(url, str) or not isinstance(pid, int):
        return None
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/ping",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=PING_TIMEOUT_S) as answer:
            ping = json.loads(answer.read())
    except (OSError, ValueError) as exc:  # URLError and timeouts are OSErrors
        log.info("no library page answers on port %s (%s); starting one", port, exc)
        return None
    if not isinstance(ping, dict) or ping.get("app") != "vidtray" or ping.get("pid") != pid \
            or ping.get("library") != str(cfg.library_file):
        return None
    return url


def server_argv(config_arg: str | None = None) -> list[str]:
    """The page process's command line: this interpreter, this vidtray, the tray's config file."""
    argv = [sys.executable, "-m", "vidtray"]
    if config_arg:
        argv += ["--config", str(Path(config_arg).expanduser().absolute())]
    return argv + ["library", "serve", "--no-open", "--idle-exit"]


def start_server(cfg: Config, config_arg: str | None = None, *, timeout: float = START_TIMEOUT_S) -> str:
    """Start ``vidtray library serve --no-open --idle-exit`` detached and return the URL it prints first.
    Its stderr goes to ``page-server.err`` beside the state file: a start that fails says why from there."""
    errors = Path(cfg.paths.page_server_file).with_suffix(".err")
    private_dir(errors.parent)
    with os.fdopen(os.open(errors, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as err:
        proc = subprocess.Popen(server_argv(config_arg), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err, start_new_session=True, env=child_env(), text=True, encoding="utf-8",
                                errors="replace")
    out = proc.stdout
    assert out is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(out.readline()), name="page-start", daemon=True).start()
    try:
        line = lines.get(timeout=timeout).strip()
    except queue.Empty:
        proc.kill()
        line = ""
    # The server writes nothing more on stdout: our end of the pipe is not needed.
    out.close()
    if not line.startswith("http://127.0.0.1:"):
        try:
            code: int | str = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "still running"
        raise OperationFailed(f"the library page did not start ({_last_error(errors) or f'exit status {code}'})")
    log.info("started the library page (pid %d)", proc.pid)
    return line


def _last_error(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1].removeprefix("vidtray: error: ") if lines else ""
