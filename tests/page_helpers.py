"""The library page under test: a real server (uvicorn on a loopback socket, in a thread of the test), real
library data (real mp4 files, sidecars as the worker writes them, thumbnails made by the watcher's own
reconcile), raw HTTP for the security tests and a real headless Chromium (Debian's ``chromium`` driven by
Playwright) for the rest.

Import the fixtures into a test module with ``from page_helpers import browser, page_server  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from desktop import skip_or_fail
from media_helpers import write_mp4

from vidtray.config import Config
from vidtray.services.library import open_library
from vidtray.services.sidecar import sidecar_path
from vidtray.services.watcher import Watcher, watch_folders
from vidtray.web import token as tokens
from vidtray.web.server import PageServer, prepare

CHROMIUM = "/usr/bin/chromium"
#: No sandbox (the tests may run as root), and nothing that would reach out to the internet.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


# -- library data --------------------------------------------------------------------------------------------


def recipe(prompt: str, **kw: Any) -> dict[str, Any]:
    """A sidecar as the worker writes it (``services/worker/output.py``)."""
    doc: dict[str, Any] = {"prompt": prompt, "negative_prompt": None, "model": "cerspense/zeroscope_v2_576w",
                           "frames": 16, "steps": 40, "height": 48, "width": 64, "fps": 8.0, "seed": 7,
                           "revision": "6d2eb0", "pipeline": "TextToVideoSDPipeline", "device": "cpu",
                           "dtype": "float32", "timings": {"load_s": 1.5, "denoise_s": 12.25, "total_s": 14.0},
                           "vidtray_version": "0.1.0", "created": "2025-05-13T14:03:00+00:00"}
    doc.update(kw)
    return doc


def add_video(cfg: Config, name: str, *, prompt: str | None = None, folder: Path | None = None,
              frames: int = 16, mtime: float | None = None, **sidecar: Any) -> Path:
    """A real mp4 (and, with ``prompt``, its generation sidecar) in the videos folder (or ``folder``)."""
    path = write_mp4((folder or cfg.videos_dir) / name, frames=frames)
    if prompt is not None:
        sidecar_path(path).write_text(json.dumps(recipe(prompt, **sidecar)), encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def rescan(cfg: Config) -> list[dict[str, Any]]:
    """What ``vidtray library rescan`` does: import the videos on disk, with thumbnails. Returns the items."""
    lib = open_library(cfg)
    Watcher(lib, watch_folders(cfg), thumbnails_dir=cfg.thumbnails_dir).reconcile()
    return [i.data for i in lib.items()]


def item_by_name(cfg: Config, name: str) -> dict[str, Any]:
    return next(i.data for i in open_library(cfg).items() if Path(i.path).name == name)


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


# -- the server ----------------------------------------------------------------------------------------------


@dataclass
class Served:
    cfg: Config
    page: PageServer
    token: str

    @property
    def port(self) -> int:
        return self.page.port

    @property
    def url(self) -> str:
        """The URL ``vidtray library serve`` prints (with the token)."""
        return self.page.url

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def csrf(self) -> str:
        return tokens.csrf_for(self.token)

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                body: Any = None, host: str | None = None, auth: bool = True) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP request (http.client sends exactly the headers given, Host included)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        sent = {"Host": host if host is not None else f"127.0.0.1:{self.port}"}
        if auth:
            sent["Authorization"] = f"Bearer {self.token}"
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        if body is not None:
            sent["Content-Length"] = str(len(body))
        sent.update(headers or {})
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for key, value in sent.items():
                conn.putheader(key, value)
            conn.endheaders(body)
            res = conn.getresponse()
            return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        status, _headers, data = self.request(method, path, body=body, **kw)
        return status, json.loads(data) if data else None


@contextlib.contextmanager
def served(cfg: Config) -> Iterator[Served]:
    """The page of ``cfg``'s library, served (as ``vidtray library serve`` does) from a thread of the test."""
    page = prepare(cfg, port=0)
    thread = threading.Thread(target=page.run, name="page-server", daemon=True)
    thread.start()
    wait_for(lambda: page.started or not thread.is_alive(), 20, "the page server to start")
    assert page.started, "the page server did not start"
    try:
        yield Served(cfg, page, tokens.read(cfg.paths.page_token_file) or "")
    finally:
        page.stop()
        thread.join(15)
        assert not thread.is_alive(), "the page server did not stop"


@pytest.fixture
def page_server(cfg: Config) -> Iterator[Served]:
    """The library page of this test's data folder, served on a free loopback port."""
    with served(cfg) as server:
        yield server


# -- the browser ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright (its own browser download is not used)."""
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        skip_or_fail(f"the library page tests need {CHROMIUM} (Debian: chromium; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the library page tests need playwright (the `test` extra)")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def open_page(browser: Any, served: Served, path: str = "/", **context: Any) -> Any:
    """A fresh browser context (no cookie yet) that opens the printed URL, then ``path``."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, **context)
    ctx.set_default_timeout(15000)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))  # an exception in the page's script
    page.js_errors = errors
    page.goto(served.url)
    if path != "/":
        page.goto(served.base + path)
    return page
