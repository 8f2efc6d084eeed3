"""The library page's gate: one ASGI middleware in front of everything (pages, the API, static files,
thumbnails and videos alike).

- ``Host`` must be ``127.0.0.1:PORT`` or ``localhost:PORT`` (a DNS-rebinding page on another name is refused).
- Access needs the token: once in the URL (``?token=...``: the answer is a redirect to the same URL without
  it, setting an HttpOnly, SameSite=Strict cookie), then the cookie; other local programs send it as
  ``Authorization: Bearer TOKEN``. Without it: 401; with a wrong one: 403.
- A change is only ever a POST, PATCH or DELETE (GETs change nothing). One authorised by the cookie must
  also carry ``X-Vidtray-CSRF`` (a value derived from the token that the page embeds); a request from
  another site (``Sec-Fetch-Site``, ``Origin``) is refused whatever it carries. No CORS header is ever sent,
  so no other origin can read an answer.
- Every answer carries a strict Content-Security-Policy (scripts and styles only from the page's own static
  files), ``nosniff``, ``no-referrer`` (the token never leaks in a Referer) and no framing.
"""

from __future__ import annotations

import html
import json
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, quote, urlencode

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidtray.web import token as tokens

SAFE_METHODS = frozenset({"GET", "HEAD"})
CHANGE_METHODS = frozenset({"POST", "PATCH", "DELETE"})
CSRF_HEADER = "x-vidtray-csrf"
COOKIE_MAX_AGE_S = 365 * 86400

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def cookie_name(port: int) -> str:
    """Cookies are per host, not per port: two page servers (two data folders) keep one each."""
    return f"vidtray_page_{port}"


class Activity:
    """When the page last got an authorised request (the idle exit reads it)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()

    def idle_s(self) -> float:
        return time.monotonic() - self.last


class Guard:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: ASGIApp, *, token: str, port: int, activity: Activity | None = None) -> None:
        self.app = app
        self.token = token
        self.csrf = tokens.csrf_for(token)
        self.port = port
        self.hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})
        self.origins = frozenset(f"http://{host}" for host in self.hosts)
        self.cookie = cookie_name(port)
        self.activity = activity or Activity()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            await send({"type": "websocket.close", "code": 1008})
            return
        send = _with_headers(send)
        refusal = self.check(scope)
        if refusal is not None:
            status, text, extra = refusal
            wants_html = "text/html" in Headers(scope=scope).get("accept", "")
            await _refuse(send, status, text, extra, wants_html)
            return
        self.activity.touch()
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        """(status, message, headers) to answer instead of the app, or None to let the request through."""
        headers = Headers(scope=scope)
        if headers.get("host", "").lower() not in self.hosts:
            return 403, "wrong Host: the library page answers only on 127.0.0.1 and localhost", {}
        method = scope["method"]
        if method not in SAFE_METHODS | CHANGE_METHODS:
            return 405, "method not allowed", {"allow": "GET, HEAD, POST, PATCH, DELETE"}
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = next((value for key, value in query if key == "token"), None)
        if given is not None:
            return self._exchange(scope, method, given, query)
        via_cookie, found = self._credential(headers)
        if found is None:
            return 401, "the library page needs its access key: open it from the tray, or with the URL that " \
                        "`vidtray library serve` prints", {}
        if not tokens.matches(self.token, found):
            return 403, "wrong access key", {}
        if method in CHANGE_METHODS:
            return self._check_change(headers, via_cookie)
        return None

    def _exchange(self, scope: Scope, method: str, given: str,
                  query: list[tuple[str, str]]) -> tuple[int, str, dict[str, str]]:
        """``?token=``: set the cookie and send the browser to the same URL without the token."""
        if method not in SAFE_METHODS or not tokens.matches(self.token, given):
            return 403, "wrong access key", {}
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        path = scope.get("path", "/")
        if not path.startswith("/") or path.startswith("//"):  # never a redirect to another host
            path = "/"
        cookie = SimpleCookie()
        cookie[self.cookie] = self.token
        morsel = cookie[self.cookie]
        morsel["path"], morsel["httponly"], morsel["samesite"] = "/", True, "Strict"
        morsel["max-age"] = COOKIE_MAX_AGE_S
        return 303, "", {"location": quote(path) + (f"?{rest}" if rest else ""), "set-cookie": morsel.OutputString()}

    def _credential(self, headers: Headers) -> tuple[bool, str | None]:
        """(from the cookie?, the token given), bearer header first."""
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return False, auth[7:].strip()
        raw = headers.get("cookie")
        if raw:
            cookie = SimpleCookie()
            try:
                cookie.load(raw)
            except Exception:  # a malformed Cookie header from some other local site: as if none
                return True, None
            if self.cookie in cookie:
                return True, cookie[self.cookie].value
        return True, None

    def _check_change(self, headers: Headers, via_cookie: bool) -> tuple[int, str, dict[str, str]] | None:
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return 403, "a change from another site is refused", {}
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            return 403, "a change from another origin is refused", {}
        if via_cookie and not tokens.matches(self.csrf, headers.get(CSRF_HEADER)):
            return 403, f"a change needs the {CSRF_HEADER} header (the page sends it)", {}
        return None


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for key, value in SECURITY_HEADERS.items():
                headers.setdefault(key, value)
        await send(message)

    return wrapped


async def _refuse(send: Send, status: int, text: str, extra: dict[str, str], wants_html: bool) -> None:
    """The refusal: JSON like every API error, or a short page for a browser's navigation."""
    if not text:
        body, kind = b"", "text/plain"
    elif wants_html:
        body = (f"<!doctype html><meta charset=utf-8><title>vidtray</title><h1>vidtray library</h1>"
                f"<p>{html.escape(text)}</p>").encode()
        kind = "text/html; charset=utf-8"
    else:
        body, kind = json.dumps({"ok": False, "error": text}).encode(), "application/json"
    headers = {"content-type": kind, "content-length": str(len(body)), "cache-control": "no-store", **extra}
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]})
    await send({"type": "http.response.body", "body": body})
