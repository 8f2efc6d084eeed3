"""A stand-in GPU server for the desktop side's fast tests: the real HTTPS API of ``vidtray.services.remote``
(TLS with a CA made by the test, bearer tokens, JSON lines, ranges), played by a thread in the test process
from a script, so the client's and the remote worker's handling of broken streams, restarts, damaged files and
refusals can be driven exactly. The real server (Ray Serve) is tested in ``test_server_ray.py``.

``FakeServer.script(prompt, events=[...], video=b"...")``: what a job with that prompt does. Knobs: ``drop_after``
(close the event stream after that many events, once), ``forget_after`` (the server "restarts" and forgets the
job after that many events, once), ``damage`` (the first download of the video is corrupted), ``down`` (refuse
every connection while True).
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from vidtray.server import tls
from vidtray.server.tokens import TokenStore


@dataclass
class Script:
    events: list[dict[str, Any]]
    video: bytes = b""
    sidecar: dict[str, Any] = field(default_factory=dict)
    delay_s: float = 0.0
    drop_after: int | None = None
    forget_after: int | None = None
    damage: bool = False
    hold: threading.Event | None = None  # the outcome waits for this (a job "running" until the test says)


@dataclass
class FakeJob:
    id: str
    request: dict[str, Any]
    script: Script
    events: list[dict[str, Any]] = field(default_factory=list)
    cancelled: bool = False
    state: str = "running"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away (the tests drop and refuse connections on purpose)


class FakeServer:
    def __init__(self, tmp: Path, token: str | None = None) -> None:
        self.files = tls.self_signed(tmp / "tls", ["localhost", "127.0.0.1"])
        self.store = TokenStore(tmp / "tokens.json")
        self.token = token or self.store.create("alice")
        self.scripts: dict[str, Script] = {}
        self.jobs: dict[str, FakeJob] = {}
        self.requests: list[tuple[str, str]] = []
        self.submits = 0
        self.down = False
        self._lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.files.cert, self.files.key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-gpu-server", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def script(self, prompt: str, **kw: Any) -> Script:
        self.scripts[prompt] = s = Script(**kw)
        return s

    def job_for(self, prompt: str) -> FakeJob:
        return next(j for j in self.jobs.values() if j.request.get("prompt") == prompt)

    # -- the HTTP side
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._serve(self, "GET")

            def do_POST(self) -> None:
                server._serve(self, "POST")

            def do_DELETE(self) -> None:
                server._serve(self, "DELETE")

        return Handler

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        self.requests.append((method, h.path))
        if self.down:
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.store.check(h.headers.get("Authorization")) is None:
            return self._json(h, 401, {"ok": False, "error": "a valid token is needed", "code": "unauthorized"})
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if method == "POST" else b""
        parts = url.path.strip("/").split("/")[1:]  # after "v1"
        if parts == ["health"]:
            return self._json(h, 200, {"ok": True, "slots": [{"index": 0, "device": "cuda", "device_name": "Fake GPU",
                                                              "job": None}], "queued": 0})
        if parts == ["jobs"] and method == "POST":
            return self._submit(h, json.loads(body))
        job = self.jobs.get(parts[1]) if len(parts) >= 2 else None
        if job is None:
            return self._json(h, 404, {"ok": False, "error": "no such job here", "code": "unknown_job"})
        rest = parts[2:]
        if not rest and method == "GET":
            return self._json(h, 200, {"ok": True, "job": self._public(job)})
        if not rest and method == "DELETE":
            self.jobs.pop(job.id, None)
            return self._json(h, 200, {"ok": True})
        if rest == ["cancel"]:
            job.cancelled = True
            return self._json(h, 202, {"ok": True, "job": self._public(job)})
        if rest == ["events"]:
            return self._events(h, job, int(parse_qs(url.query).get("after", ["0"])[0]))
        if rest in (["video"], ["sidecar"]):
            return self._file(h, job, rest[0])
        return self._json(h, 404, {"ok": False, "error": "no such endpoint", "code": "not_found"})

    def _submit(self, h: BaseHTTPRequestHandler, doc: dict[str, Any]) -> None:
        request = doc["request"]
        if request.get("frames") == 7:  # what the tests use for "the schema refuses it"
            return self._json(h, 400, {"ok": False, "error": "job new: frames: must be 8 or more here",
                                       "code": "bad_request"})
        with self._lock:
            self.submits += 1
            job = FakeJob(uuid.uuid4().hex, request, self.scripts[request["prompt"]])
            self.jobs[job.id] = job
        return self._json(h, 202, {"ok": True, "job": self._public(job)})

    def _events(self, h: BaseHTTPRequestHandler, job: FakeJob, after: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/x-ndjson")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        script = job.script
        sent = 0
        for seq, ev in enumerate(script.events, start=1):
            if seq <= after:
                continue
            time.sleep(script.delay_s)
            final = ev["event"] in ("done", "failed", "cancelled")
            if final and script.hold is not None:
                while not script.hold.wait(0.05) and not job.cancelled:
                    pass
            if job.cancelled:
                ev, final = {"event": "cancelled"}, True
            if script.forget_after is not None and seq > script.forget_after:
                script.forget_after = None
                self.jobs.pop(job.id, None)  # the server "restarted": the job is gone
                return self._end_chunks(h)
            if script.drop_after is not None and sent >= script.drop_after:
                script.drop_after = None
                h.wfile.flush()
                h.connection.shutdown(socket.SHUT_RDWR)  # mid-stream: no final chunk
                return
            line = json.dumps({**ev, "job": job.id, "seq": seq}).encode() + b"\n"
            h.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            h.wfile.flush()
            sent += 1
            if final:
                job.state = ev["event"]
                break
        self._end_chunks(h)

    def _file(self, h: BaseHTTPRequestHandler, job: FakeJob, which: str) -> None:
        data = job.script.video if which == "video" else json.dumps(self._sidecar(job)).encode()
        start = 0
        rng = h.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
        payload = data[start:]
        if which == "video" and job.script.damage:
            job.script.damage = False
            payload = bytes(b ^ 0xFF for b in payload)
        h.send_response(206 if start else 200)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def _sidecar(self, job: FakeJob) -> dict[str, Any]:
        request = job.request
        return {"prompt": request["prompt"], "negative_prompt": None, "model": request["model"], "frames": 8,
                "steps": 4, "height": 48, "width": 64, "fps": 8.0, "seed": 7, "device": "cuda", "dtype": "float16",
                "created": "2026-01-01T00:00:00+00:00", **job.script.sidecar}

    def _public(self, job: FakeJob) -> dict[str, Any]:
        sidecar = json.dumps(self._sidecar(job)).encode()
        files = {"video": {"size": len(job.script.video), "sha256": hashlib.sha256(job.script.video).hexdigest()},
                 "sidecar": {"size": len(sidecar), "sha256": hashlib.sha256(sidecar).hexdigest()}}
        return {"id": job.id, "state": job.state, "files": files if job.state == "done" else {},
                "slot": {"index": 0, "device": "cuda", "device_name": "Fake GPU", "node": "gpu-box"}}

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, status: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _end_chunks(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()
