"""The library page treated as a server that can delete files: the token, the Host check, changes only with
the anti-CSRF header from the page's own origin, files only of library items inside the allowed folders,
escaping, and loopback only. Raw HTTP against the real server; the cross-site and XSS cases also in Chromium."""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from page_helpers import (
    Served,
    add_video,
    item_by_name,
    open_page,
    rescan,
    served,
    wait_for,
)

from vidtray.config import Config
from vidtray.errors import UserError
from vidtray.services.library import open_library
from vidtray.web import token as tokens
from vidtray.web.security import CSP, cookie_name
from vidtray.web.server import bind, check_loopback


@pytest.fixture
def one(cfg: Config, page_server: Served) -> dict[str, Any]:
    add_video(cfg, "clip.mp4", prompt="a clip")
    rescan(cfg)
    return item_by_name(cfg, "clip.mp4")


def test_nothing_is_served_without_the_token(page_server: Served, one: dict[str, Any]) -> None:
    paths = ["/", "/queue", "/storage", f"/item/{one['id']}", "/api/items", "/api/version", "/static/app.js",
             "/static/app.css", "/icon.png", f"/media/{one['id']}/video", f"/media/{one['id']}/thumb"]
    for path in paths:
        status, headers, body = page_server.request("GET", path, auth=False)
        assert status == 401, path
        assert b"clip" not in body and headers["content-security-policy"] == CSP
        # a wrong key is refused too, however it comes
        for wrong in ({"Authorization": "Bearer nope"}, {"Cookie": f"{cookie_name(page_server.port)}=nope"}):
            assert page_server.request("GET", path, auth=False, headers=wrong)[0] == 403, (path, wrong)
        assert page_server.request("GET", path)[0] == 200, path  # with it: served
    assert page_server.request("GET", "/?token=nope", auth=False)[0] == 403
    assert page_server.request("GET", "/?token=", auth=False)[0] == 403


def test_the_url_token_becomes_an_httponly_strict_cookie_and_leaves_the_url(page_server: Served) -> None:
    status, headers, _ = page_server.request("GET", f"/queue?token={page_server.token}&x=1", auth=False)
    assert status == 303 and headers["location"] == "/queue?x=1"
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"{cookie_name(page_server.port)}={page_server.token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert headers["referrer-policy"] == "no-referrer"
    # the cookie alone opens the page
    jar = {"Cookie": f"{cookie_name(page_server.port)}={page_server.token}"}
    assert page_server.request("GET", "/", auth=False, headers=jar)[0] == 200
    # the redirect never leads to another host
    status, headers, _ = page_server.request("GET", f"//evil.example/?token={page_server.token}", auth=False)
    assert status == 303 and headers["location"] == "/"
    # a token is never taken from a change
    assert page_server.request("POST", f"/api/queue?token={page_server.token}", auth=False, body={})[0] == 403


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1", "localhost",
                                  "127.0.0.1.nip.io:{port}", "[::1]:{port}", ""])
def test_a_wrong_host_header_is_refused(page_server: Served, host: str) -> None:
    """DNS rebinding: a page on another name that resolves to 127.0.0.1 sends its own name as Host."""
    status, _, body = page_server.request("GET", "/api/items", host=host.format(port=page_server.port))
    assert status == 403 and b"Host" in body
    for good in (f"127.0.0.1:{page_server.port}", f"localhost:{page_server.port}", f"LOCALHOST:{page_server.port}"):
        assert page_server.request("GET", "/api/items", host=good)[0] == 200


def test_changes_need_the_pages_csrf_header_and_its_origin(cfg: Config, page_server: Served,
                                                           one: dict[str, Any]) -> None:
    jar = {"Cookie": f"{cookie_name(page_server.port)}={page_server.token}"}
    path, change = f"/api/items/{one['id']}", {"pinned": True}
    # the cookie alone (what a forged cross-site request would carry) is not enough
    assert page_server.request("PATCH", path, auth=False, headers=jar, body=change)[0] == 403
    assert page_server.request("PATCH", path, auth=False, headers={**jar, "X-Vidtray-CSRF": "guess"},
                               body=change)[0] == 403
    # from another site or origin: refused whatever it carries
    good = {**jar, "X-Vidtray-CSRF": page_server.csrf}
    for extra in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                  {"Origin": "http://evil.example"}, {"Origin": f"http://127.0.0.1:{page_server.port + 1}"},
                  {"Origin": "null"}):
        assert page_server.request("PATCH", path, auth=False, headers={**good, **extra}, body=change)[0] == 403
    assert open_library(cfg).get(one["id"]).pinned is False
    # what the page sends: accepted
    same = {**good, "Origin": f"http://127.0.0.1:{page_server.port}", "Sec-Fetch-Site": "same-origin"}
    assert page_server.request("PATCH", path, auth=False, headers=same, body=change)[0] == 200
    assert open_library(cfg).get(one["id"]).pinned is True
    # another local program with the token as a bearer needs no CSRF header (a browser cannot forge that header)
    assert page_server.request("PATCH", path, body={"pinned": False})[0] == 200
    # a form post (not JSON) changes nothing; other methods are not allowed; no CORS, ever
    assert page_server.request("POST", "/api/queue", body=b"prompt=x",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})[0] == 400
    assert page_server.request("PUT", path, body=change)[0] == 405
    status, headers, _ = page_server.request("OPTIONS", path, auth=False,
                                             headers={"Origin": "http://evil.example",
                                                      "Access-Control-Request-Method": "PATCH"})
    assert status == 405 and not any(k.startswith("access-control-") for k in headers)
    status, headers, _ = page_server.request("GET", "/api/items", headers={"Origin": "http://evil.example"})
    assert status == 200 and not any(k.startswith("access-control-") for k in headers)


@pytest.fixture
def attacker() -> Iterator[Any]:
    """Another local web page (another origin) that tries to use the library page."""
    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = pages.get(self.path.split("?")[0], b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.pages = pages  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.browser
@pytest.mark.parametrize("attacker_host", ["localhost", "127.0.0.1"])  # cross-site, and same-site cross-origin
def test_a_page_from_another_origin_cannot_change_anything(cfg: Config, page_server: Served, one: dict[str, Any],
                                                           browser: Any, attacker: Any, attacker_host: str) -> None:
    target = page_server.base
    attacker.pages["/evil"] = f"""<!doctype html><body>
<form id="f" method="post" enctype="text/plain" action="{target}/api/queue">
<input name='{{"prompt": "pwned", "x": "' value='"}}'></form>
<script>
window.results = [];
const tries = [
  ["PATCH", "{target}/api/items/{one['id']}", {{"pinned": true}}],
  ["DELETE", "{target}/api/items/{one['id']}", null],
  ["POST", "{target}/api/queue", {{"prompt": "pwned"}}],
];
(async () => {{
  for (const [method, url, body] of tries) {{
    for (const mode of ["cors", "no-cors"]) {{
      try {{
        const r = await fetch(url, {{method, mode, credentials: "include", body: body && JSON.stringify(body),
          headers: mode === "cors" ? {{"Content-Type": "application/json", "X-Vidtray-CSRF": "x"}} : {{}}}});
        window.results.push(method + " " + mode + " " + r.status + " " + r.type);
      }} catch (e) {{ window.results.push(method + " " + mode + " blocked"); }}
    }}
  }}
  try {{
    const r = await fetch("{target}/api/items", {{credentials: "include"}});
    window.results.push("read " + r.status);
  }}
  catch (e) {{ window.results.push("read blocked"); }}
  window.done = true;
}})();
</script></body>""".encode()
    page = open_page(browser, page_server)  # the user is logged in to the library page (has the cookie)
    evil = page.context.new_page()
    evil.goto(f"http://{attacker_host}:{attacker.server_port}/evil")
    wait_for(lambda: evil.evaluate("window.done === true"), what="the attack's requests")
    results = evil.evaluate("window.results")
    # Nothing got through: a CORS request is stopped at its preflight, a no-cors one is refused by the server
    # (or cannot even be sent with that method), and nothing can be read.
    assert all(r.endswith(("blocked", " 0 opaque")) for r in results), results
    with evil.expect_navigation():
        evil.evaluate("document.getElementById('f').submit()")  # a plain form post, as a forged link would do
    answer = evil.content()
    assert "access key" in answer or "refused" in answer or "x-vidtray-csrf" in answer, answer
    assert "pwned" not in json.dumps(page_server.json("GET", "/api/queue")[1])
    assert open_library(cfg).get(one["id"]).pinned is False
    assert Path(one["path"]).exists()


def test_paths_from_the_url_never_reach_the_disk(cfg: Config, page_server: Served, one: dict[str, Any]) -> None:
    secret = tokens.read(cfg.paths.page_token_file)
    assert secret
    tries = [
        "/static/../state/page-token", "/static/..%2f..%2fstate%2fpage-token", "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static//etc/passwd", "/media/..%2F..%2Fetc%2Fpasswd/video", "/media/%2e%2e/video",
        f"/media/{one['id']}/..%2f..%2f..%2fetc%2fpasswd", f"/media/{one['id']}/video/../../../etc/passwd",
        "/item/..%2F..%2Fetc%2Fpasswd", "/api/items/..%2F..%2Fetc%2Fpasswd", "/media/~Li4vLi4vZXRjL3Bhc3N3ZA/video",
        "/media/" + "~" + "L2V0Yy9wYXNzd2Q" + "/video",
    ]
    for path in tries:
        status, _, body = page_server.request("GET", path)
        assert status in (400, 404), (path, status)
        assert secret.encode() not in body and b"root:" not in body, path


def test_an_item_pointing_outside_the_allowed_folders_is_never_served_or_deleted(
        tmp_path: Path, isolated_env: dict[str, Path]) -> None:
    watched, outside = tmp_path / "watched", tmp_path / "outside"
    watched.mkdir()
    cfg = Config.from_mapping({"watch_dirs": [str(watched)]}, "<test>")
    cfg.videos_dir.mkdir(parents=True)
    secret = add_video(cfg, "secret.mp4", folder=outside)
    add_video(cfg, "ok.mp4", folder=watched)  # a watched folder is allowed
    add_video(cfg, "inside.mp4")
    (cfg.videos_dir / "link.mp4").symlink_to(secret)  # a link inside that leads outside
    (cfg.thumbnails_dir).mkdir(parents=True)
    (cfg.thumbnails_dir / "evil.jpg").symlink_to("/etc/passwd")
    rescan(cfg)
    inside = item_by_name(cfg, "inside.mp4")
    # Another app writes entries that point elsewhere (library.json is shared).
    doc = json.loads(cfg.library_file.read_text(encoding="utf-8"))
    doc["items"] += [
        {"id": "abs", "type": "video", "path": str(secret), "thumbnail": "/etc/passwd"},
        {"id": "dotdot", "type": "video", "path": str(cfg.videos_dir / ".." / ".." / ".." / "outside" / "secret.mp4"),
         "thumbnail": str(cfg.thumbnails_dir / ".." / ".." / "outside" / "secret.mp4")},
        {"id": "link", "type": "video", "path": str(cfg.videos_dir / "link.mp4"),
         "thumbnail": str(cfg.thumbnails_dir / "evil.jpg")},
        {"id": "passwd", "type": "video", "path": "/etc/passwd", "thumbnail": inside["path"]},
        {"id": "relative", "type": "video", "path": "generated/videos/inside.mp4"},
    ]
    cfg.library_file.write_text(json.dumps(doc), encoding="utf-8")
    with served(cfg) as server:
        for item_id in ("abs", "dotdot", "link", "passwd", "relative"):
            for kind in ("video", "thumb"):
                status, _, body = server.request("GET", f"/media/{item_id}/{kind}")
                assert status == 404 and b"root:" not in body, (item_id, kind)
            status, doc = server.json("DELETE", f"/api/items/{item_id}")
            assert status in (404, 409), (item_id, status, doc)
        assert secret.exists() and (cfg.videos_dir / "link.mp4").is_symlink() and Path("/etc/passwd").exists()
        assert server.request("GET", f"/media/{item_by_name(cfg, 'ok.mp4')['id']}/video")[0] == 200
        assert server.request("GET", f"/media/{inside['id']}/thumb")[0] == 200
        status, headers, body = server.request("GET", f"/media/{inside['id']}/video", headers={"Range": "bytes=0-99"})
        assert status == 206 and len(body) == 100 and headers["content-range"].startswith("bytes 0-99/")


XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


@pytest.mark.browser
def test_text_from_library_json_is_escaped_everywhere(cfg: Config, page_server: Served, browser: Any) -> None:
    add_video(cfg, "x.mp4", prompt=f"prompt {XSS}")
    rescan(cfg)
    item = item_by_name(cfg, "x.mp4")
    open_library(cfg).edit(item["id"], title=f"title {XSS}", tags=['"><script>window.__pwned = 3</script>'],
                           scheduled_at=f"soon {XSS}")
    for path in ("/", f"/item/{item['id']}", "/?q=%3Cscript%3E", f"/?model={quote(XSS)}", f"/?q={quote(XSS)}"):
        _, _, body = page_server.request("GET", path)
        assert b"<script>window.__pwned" not in body and b"<img src=x" not in body, path
    page = open_page(browser, page_server)
    assert page.inner_text("#grid .title") == f"title {XSS}"
    page.fill("#q", "<script>")
    wait_for(lambda: "matching" in page.inner_text("#summary"), what="the search")
    page.goto(f"{page_server.base}/item/{item['id']}")
    assert page.inner_text("#item-title") == f"title {XSS}"
    assert f"prompt {XSS}" in page.inner_text(".recipe")
    assert page.evaluate("window.__pwned") is None
    assert page.js_errors == []


def test_only_loopback_addresses_are_ever_bound() -> None:
    for host in ("0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.com", "localhost", ""):
        with pytest.raises(UserError, match="loopback"):
            check_loopback(host)
        with pytest.raises(UserError, match="loopback"):
            bind(host, 0, 0)
    sock, _ = bind("127.0.0.1", 0, 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def test_the_token_is_private_random_and_kept(cfg: Config, tmp_path: Path) -> None:
    path = cfg.paths.page_token_file
    first = tokens.load_or_create(path)
    assert len(first) >= 40 and oct(path.stat().st_mode & 0o777) == "0o600"
    assert tokens.load_or_create(path) == first  # kept across restarts: a bookmarked page keeps working
    os.chmod(path, 0o644)
    assert tokens.read(path) == first and oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_text("short\n")  # not a token vidtray wrote: a new one
    second = tokens.load_or_create(path)
    assert second != first and len(second) >= 40
    other = Config.from_mapping({"data_dir": str(tmp_path / "other")}, "<test>", env={})
    assert tokens.load_or_create(other.paths.page_token_file) != second  # another data folder, another key
