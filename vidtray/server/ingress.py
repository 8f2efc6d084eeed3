"""The GPU server's HTTPS API: a Ray Serve deployment in front of the job board (the API is described in
:mod:`vidtray.services.remote`, the desktop's side).

Every request, whatever its path, first shows a bearer token that :class:`~vidtray.server.tokens.TokenStore`
knows (a constant-time check; 401 otherwise); TLS is Serve's proxy's (``server up`` refuses to start without
a certificate, so plain HTTP is never spoken). A job request is checked by the same schema as a local job
(:mod:`vidtray.params`, through ``generation.Request``) before anything runs. Serve cancels a request whose
client went away; that is harmless here, since jobs live on the board, not in requests.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from vidtray.errors import UserError
from vidtray.server.tokens import TokenStore
from vidtray.services.remote import API, CHUNK, FILES, HEARTBEAT_S, UNKNOWN_JOB

log = logging.getLogger("vidtray.server")

MAX_BODY = 64 * 1024
JOB_RE = re.compile(r"^[0-9a-f]{32}$")
RANGE_RE = re.compile(r"^bytes=(\d+)-$")
CONTENT_TYPES = {"video": "video/mp4", "sidecar": "application/json"}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message, "code": code}, status_code=status, headers=headers)


def _cause(exc: BaseException) -> BaseException:
    """The exception an actor raised (Ray wraps it; its ``cause`` is the original)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class Ingress:
    """The Serve deployment's class (``service.deploy`` wraps it)."""

    def __init__(self, board_name: str, namespace: str, tokens_file: str) -> None:
        import ray

        # Any: an actor handle's methods are typed by Ray only loosely.
        self.board: Any = ray.get_actor(board_name, namespace=namespace)
        self.tokens = TokenStore(Path(tokens_file))

    async def __call__(self, request: Request) -> Response:
        owner = self.tokens.check(request.headers.get("authorization"))
        if owner is None:
            return _error(401, "unauthorized", "a valid token is needed (Authorization: Bearer …)",
                          {"WWW-Authenticate": 'Bearer realm="vidtray"'})
        path = request.url.path
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        try:
            return await self._route(request, owner, path)
        except Exception as exc:
            return self._failure(_cause(exc))

    async def _route(self, request: Request, owner: str, path: str) -> Response:
        method = request.method
        if not path.startswith(API + "/"):
            return _error(404, "not_found", f"no such endpoint: {method} {path}")
        parts = path[len(API) + 1:].strip("/").split("/")
        if parts == ["health"] and method == "GET":
            return JSONResponse(await self.board.health.remote(request.query_params.get("detail") == "1"))
        if parts == ["jobs"] and method == "POST":
            return await self._submit(request, owner)
        if len(parts) >= 2 and parts[0] == "jobs" and JOB_RE.match(parts[1]):
            return await self._job(request, owner, parts[1], parts[2:])
        return _error(404, "not_found", f"no such endpoint: {method} {path}")

    async def _job(self, request: Request, owner: str, job_id: str, rest: list[str]) -> Response:
        method = request.method
        if not rest and method == "GET":
            return JSONResponse({"ok": True, "job": await self.board.status.remote(owner, job_id)})
        if not rest and method == "DELETE":
            await self.board.delete.remote(owner, job_id)
            return JSONResponse({"ok": True})
        if rest == ["cancel"] and method == "POST":
            return JSONResponse({"ok": True, "job": await self.board.cancel.remote(owner, job_id)}, status_code=202)
        if rest == ["events"] and method == "GET":
            return await self._events(request, owner, job_id)
        if len(rest) == 1 and rest[0] in FILES and method == "GET":
            return await self._file(request, owner, job_id, rest[0])
        return _error(404, "not_found", f"no such endpoint: {method} {request.url.path}")

    async def _submit(self, request: Request, owner: str) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(413, "too_large", f"a job request is at most {MAX_BODY} bytes")
        try:
            doc = json.loads(body)
        except ValueError:
            return _error(400, "bad_request", "the body is not JSON")
        if not isinstance(doc, dict) or not isinstance(doc.get("request"), dict):
            return _error(400, "bad_request", 'the body must be {"request": {...}, "key": "..."}')
        key = doc.get("key", "")
        if not isinstance(key, str) or len(key) > 200:
            return _error(400, "bad_request", "key must be a string of at most 200 characters")
        job = await self.board.submit.remote(owner, key, doc["request"])
        return JSONResponse({"ok": True, "job": job}, status_code=202)

    async def _events(self, request: Request, owner: str, job_id: str) -> Response:
        try:
            after = max(0, int(request.query_params.get("after", "0")))
        except ValueError:
            return _error(400, "bad_request", "after must be a whole number")
        # The first batch before the response starts: an unknown job is a 404, not an empty stream.
        first = await self.board.events.remote(owner, job_id, after, 0.0)

        async def lines() -> AsyncIterator[bytes]:
            batch, complete = first
            seen = after
            while True:
                for doc in batch:
                    seen = int(doc["seq"])
                    yield (json.dumps(doc, ensure_ascii=False, default=str) + "\n").encode("utf-8")
                if complete:
                    return
                if not batch:
                    yield b"\n"  # keep-alive: the desktop tells a quiet job from a dead connection
                try:
                    batch, complete = await self.board.events.remote(owner, job_id, seen, HEARTBEAT_S)
                except Exception as exc:  # the job was deleted meanwhile: end; a reconnect says why
                    log.info("event stream of job %s ends: %s", job_id, _cause(exc))
                    return

        return StreamingResponse(lines(), media_type="application/x-ndjson",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _file(self, request: Request, owner: str, job_id: str, which: str) -> Response:
        info = await self.board.file.remote(owner, job_id, which)
        size, sha = int(info["size"]), str(info["sha256"])
        start, status = 0, 200
        match = RANGE_RE.match(request.headers.get("range", ""))
        if match:
            start, status = int(match.group(1)), 206
            if start >= size:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        board = self.board

        async def body() -> AsyncIterator[bytes]:
            offset = start
            while offset < size:
                chunk: bytes = await board.read.remote(owner, job_id, which, offset, CHUNK)
                if not chunk:
                    return
                offset += len(chunk)
                yield chunk

        headers = {"Content-Length": str(size - start), "Accept-Ranges": "bytes", "X-Vidtray-Sha256": sha,
                   "X-Vidtray-Size": str(size), "Cache-Control": "no-store"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        return StreamingResponse(body(), status_code=status, media_type=CONTENT_TYPES[which], headers=headers)

    def _failure(self, exc: BaseException) -> Response:
        from vidtray.server.board import TooManyJobs, UnknownJob

        if isinstance(exc, UnknownJob):
            return _error(404, UNKNOWN_JOB, str(exc.args[0]) if exc.args else "unknown job")
        if isinstance(exc, UserError):
            return _error(400, "bad_request", str(exc))
        if isinstance(exc, TooManyJobs):
            return _error(429, "too_many_jobs", str(exc))
        log.error("request failed: %s: %s", type(exc).__name__, exc)
        return _error(500, "failed", f"the server failed: {type(exc).__name__}")


def options() -> dict[str, Any]:
    """Serve deployment options: one replica on the head node (the token file is there), many concurrent
    requests (event streams are long)."""
    return {"name": "ingress", "num_replicas": 1, "max_ongoing_requests": 256,
            "ray_actor_options": {"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}}}
