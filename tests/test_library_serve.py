"""``vidtray library serve`` as a real process: the URL first on stdout, loopback only, the port rules, a
clean stop on SIGTERM and SIGINT, the idle exit; and the tray's launcher that starts it or reuses it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import ROOT
from page_helpers import wait_for

from vidtray.config import LIBRARY_PORT, Config
from vidtray.web import launch


def _serve(*args: str, config: Path | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "vidtray", *(["--config", str(config)] if config else []), "library", "serve",
           "--no-open", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            cwd=ROOT)


def _first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line, proc.stderr.read() if proc.stderr else ""
    return line


def _get(url: str, **headers: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kw: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_the_url_first_and_stops_cleanly_on_a_signal(cfg: Config, procs: list, sig: int) -> None:
    proc = _serve("--port", "0")
    procs.append(proc)
    url = _first_line(proc)
    assert url.startswith("http://127.0.0.1:") and "/?token=" in url
    port = int(url.split(":")[2].split("/")[0])
    token = url.split("token=")[1]
    status, _ = _get(url)
    assert status == 303  # the token for a cookie
    assert _get(f"http://127.0.0.1:{port}/api/items", Authorization=f"Bearer {token}")[0] == 200
    # listening on the loopback address only
    listening = [c.laddr for c in psutil.Process(proc.pid).net_connections() if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
    state = json.loads(cfg.paths.page_server_file.read_text())
    assert state["pid"] == proc.pid and state["port"] == port and state["url"] == url
    assert oct(cfg.paths.page_server_file.stat().st_mode & 0o777) == "0o600"

    proc.send_signal(sig)
    assert proc.wait(15) == 0
    assert not cfg.paths.page_server_file.exists()
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


def test_a_taken_port_falls_back_unless_it_was_asked_for(cfg: Config, tmp_path: Path, procs: list) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        config = tmp_path / "config.toml"
        config.write_text(f"library_port = {port}\n")
        proc = _serve(config=config)
        procs.append(proc)
        url = _first_line(proc)
        assert f":{port}/" not in url
        assert proc.stderr is not None
        assert f"port {port} (library_port) is in use; serving on port" in proc.stderr.readline()
        proc.terminate()
        assert proc.wait(15) == 0

        asked = _serve("--port", str(port))
        procs.append(asked)
        assert asked.wait(30) == 1
        assert asked.stdout is not None and asked.stdout.read() == ""
        assert asked.stderr is not None and f"vidtray: error: cannot listen on 127.0.0.1:{port}" in asked.stderr.read()
    finally:
        taken.close()


def test_the_default_port_is_vidtrays_own(cfg: Config, procs: list) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", LIBRARY_PORT))
        except OSError:
            pytest.skip(f"port {LIBRARY_PORT} is taken on this machine")
    proc = _serve()
    procs.append(proc)
    assert _first_line(proc).startswith(f"http://127.0.0.1:{LIBRARY_PORT}/?token=")
    proc.terminate()
    assert proc.wait(15) == 0


def test_started_by_the_tray_it_stops_when_nobody_looks(cfg: Config, tmp_path: Path, procs: list) -> None:
    config = tmp_path / "config.toml"
    config.write_text("library_page_idle_s = 1.5\n")
    idle = _serve("--port", "0", "--idle-exit", config=config)
    stays = _serve("--port", "0", config=config)  # started by a person: no idle exit
    procs += [idle, stays]
    url = _first_line(idle)
    _first_line(stays)
    token = url.split("token=")[1]
    api = url.split("/?")[0] + "/api/version"
    started = time.monotonic()
    # a visible page asks every 1.5 s: that keeps it up
    while time.monotonic() - started < 3:
        assert _get(api, Authorization=f"Bearer {token}")[0] == 200
        time.sleep(0.5)
    assert idle.poll() is None
    assert idle.wait(15) == 0  # nobody asks any more: it goes
    assert stays.poll() is None


def test_bad_port_is_a_usage_error(cli, cfg: Config, tmp_path: Path) -> None:
    res = cli("library", "serve", "--no-open", "--port", "70000")
    assert res.returncode == 2 and "expected a port from 1 to 65535" in res.stderr
    config = tmp_path / "config.toml"
    config.write_text('library_port = "8080"\n')
    res = cli("--config", str(config), "library", "serve", "--no-open")
    assert res.returncode == 2 and "library_port: must be a whole number" in res.stderr


# -- the tray's launcher --------------------------------------------------------------------------------------


def test_open_library_starts_one_server_and_reuses_it(cfg: Config, tmp_path: Path) -> None:
    opened: list[str] = []
    first = launch.open_library_page(cfg, open_url=opened.append)
    pid = json.loads(cfg.paths.page_server_file.read_text())["pid"]
    try:
        proc = psutil.Process(pid)
        assert proc.cmdline()[-4:] == ["library", "serve", "--no-open", "--idle-exit"]
        assert os.getsid(pid) == pid  # its own session: it outlives the tray's process group
        assert _get(first)[0] == 303
        second = launch.open_library_page(cfg, open_url=opened.append)
        assert second == first and opened == [first, first]
        assert json.loads(cfg.paths.page_server_file.read_text())["pid"] == pid  # reused, not started again
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                 what="the page server to stop")
    # the server went away (idle exit, a crash): the next open starts a new one
    third = launch.open_library_page(cfg, open_url=opened.append)
    new_pid = json.loads(cfg.paths.page_server_file.read_text())["pid"]
    try:
        assert new_pid != pid and opened[-1] == third and _get(third)[0] == 303
    finally:
        os.kill(new_pid, signal.SIGTERM)


def test_a_stale_or_foreign_state_file_is_not_trusted(cfg: Config) -> None:
    cfg.paths.page_server_file.parent.mkdir(parents=True)
    with socket.socket() as other:  # something else answers on that port
        other.bind(("127.0.0.1", 0))
        other.listen()
        cfg.paths.page_server_file.write_text(json.dumps(
            {"pid": 1, "port": other.getsockname()[1], "url": "http://127.0.0.1:1/?token=x"}))
        assert launch.running_url(cfg) is None


def test_a_server_that_cannot_start_says_why(cfg: Config, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("library_port = -1\n")
    with pytest.raises(Exception, match="library_port: must be a port"):
        launch.open_library_page(cfg, str(config), open_url=lambda url: None, timeout=30)


def test_the_launcher_keeps_the_web_stack_out_of_the_tray() -> None:
    code = ("import sys, vidtray.web.launch, vidtray.tray.app; "
            "print([m for m in ('starlette', 'uvicorn', 'jinja2', 'anyio') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_serve_opens_the_browser_unless_told_not_to(cfg: Config, tmp_path: Path, procs: list,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    record = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {record}\n')
    browser.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(browser))  # webbrowser's own setting: the user's browser first
    proc = subprocess.Popen([sys.executable, "-m", "vidtray", "library", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            cwd=ROOT)
    procs.append(proc)
    url = _first_line(proc)
    assert wait_for(lambda: record.exists() and record.read_text(), what="the browser").splitlines() == [url]
    proc.terminate()
    assert proc.wait(15) == 0
