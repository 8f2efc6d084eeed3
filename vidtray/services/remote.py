"""A desktop's side of a vidtray GPU server (``vidtray server up``): the HTTPS API and a client for it.

Standard library only (``http.client`` with an ``ssl.SSLContext`` that trusts only the CA file given, so a
desktop installs no Ray and no HTTP package). The API, under ``/v1``, every request with
``Authorization: Bearer TOKEN``:

=========================================  ====================================================================
``GET  /v1/health[?detail=1]``             slots (device, busy, worker), queue; detail: cached models, free disk
``POST /v1/jobs`` ``{request, key}``       202 ``{job}``: queued on the server (``key`` makes a retry idempotent)
``GET  /v1/jobs/ID``                       ``{job}``: state, slot, and when done the files' size and sha256
``GET  /v1/jobs/ID/events?after=N``        JSON lines: the worker protocol's events, each with ``seq``, from
                                           N+1 on, until the job's outcome; an empty line every few seconds
``POST /v1/jobs/ID/cancel``                202 ``{job}``
``GET  /v1/jobs/ID/video`` and ``/sidecar``  the bytes (``Range: bytes=N-`` resumes)
``DELETE /v1/jobs/ID``                     the job and its files are gone (a running one is cancelled)
=========================================  ====================================================================

Errors are ``{"ok": false, "error": MESSAGE, "code": CODE}``: 400 ``bad_request`` (the request schema's
message), 401 ``unauthorized``, 404 ``unknown_job`` (a restarted server forgot it: submit again) or
``not_found``, 413 ``too_large``, 429 ``too_many_jobs``, 500 ``failed``. A 404 without that JSON is not the
service (Ray Serve's proxy while the app is being deployed): retried as the server being away.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from vidtray.errors import OperationFailed, UserError
from vidtray.services.protocol import WorkerEvent, parse_event
from vidtray.services.records import JsonObject

log = logging.getLogger("vidtray.remote")

API = "/v1"
#: Files a finished job has on the server.
FILES = ("video", "sidecar")
#: Error codes the service sends (``code``).
UNKNOWN_JOB = "unknown_job"
#: Seconds between the keep-alive lines of an event stream; a reader waits a few of these before it calls
#: the connection lost.
HEARTBEAT_S = 5.0
STREAM_TIMEOUT_S = 4 * HEARTBEAT_S
CALL_TIMEOUT_S = 15.0
CHUNK = 1 << 20


class RemoteError(OperationFailed):
    """The server said no, or could not be asked."""


class Unreachable(RemoteError):
    """No answer from the service (network, TLS handshake, the service not deployed, a 5xx): worth a retry,
    unless it is a certificate the pinned CA did not sign (``certificate``)."""

    def __init__(self, message: str, *, certificate: bool = False) -> None:
        super().__init__(message)
        self.certificate = certificate


class Refused(RemoteError):
    """The service refused the token (401/403): no retry helps."""


class BadRequest(UserError):
    """The service refused the request (400): the same schema a local job is checked with."""


class Damaged(RemoteError):
    """A file arrived with another size or sha256 than the server said (it was removed here)."""


class UnknownJob(RemoteError):
    """The service does not know the job (a restart forgot it, or it was deleted)."""


@dataclass(frozen=True)
class FileInfo:
    size: int
    sha256: str


@dataclass(frozen=True)
class RemoteJob:
    """A job as the server describes it."""

    id: str
    state: str
    doc: JsonObject

    @property
    def files(self) -> dict[str, FileInfo]:
        raw = self.doc.get("files") or {}
        out: dict[str, FileInfo] = {}
        for name in FILES:
            info = raw.get(name) if isinstance(raw, dict) else None
            if isinstance(info, dict) and isinstance(info.get("size"), int) and isinstance(info.get("sha256"), str):
                out[name] = FileInfo(info["size"], info["sha256"])
        return out


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Trust ``ca_file`` only (pinned), else the system's CAs; TLS 1.2 or newer, host names checked."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"cannot read the server's CA file {ca_file}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def read_token(path: str) -> str:
    try:
        token = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UserError(f"cannot read the server token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise UserError(f"the server token file {path} is empty")
    return token


class RemoteClient:
    """One server: ``https://host:port[/prefix]``, a bearer token and the CA to trust. Thread-safe: short calls
    share one kept-alive connection under a lock; each event stream has its own."""

    def __init__(self, url: str, token: str, ca_file: str | None = None, *, timeout: float = CALL_TIMEOUT_S,
                 stream_timeout: float = STREAM_TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise UserError(f"the server URL must be https://HOST[:PORT], got {url!r}")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 443
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self._auth = f"Bearer {token}"
        self._ctx = ssl_context(ca_file)
        self._conn: http.client.HTTPSConnection | None = None
        self._mu = threading.Lock()

    @classmethod
    def from_config(cls, remote: Any) -> RemoteClient:
        """From the config's ``[remote]`` table (UserError when it is not filled in)."""
        if not remote.url:
            raise UserError("no server configured: set [remote] url, token_file and ca_file in the config")
        return cls(remote.url, read_token(remote.token_file), remote.ca_file or None)

    def close(self) -> None:
        with self._mu:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- the API
    def health(self, *, detail: bool = False) -> JsonObject:
        return self._call("GET", "/health" + ("?detail=1" if detail else ""))

    def submit(self, request: JsonObject, key: str) -> RemoteJob:
        return _job(self._call("POST", "/jobs", {"request": request, "key": key}))

    def job(self, job_id: str) -> RemoteJob:
        return _job(self._call("GET", f"/jobs/{quote(job_id)}"))

    def cancel(self, job_id: str) -> RemoteJob:
        return _job(self._call("POST", f"/jobs/{quote(job_id)}/cancel", {}))

    def delete(self, job_id: str) -> None:
        self._call("DELETE", f"/jobs/{quote(job_id)}")

    def events(self, job_id: str, after: int = 0) -> Iterator[tuple[int, WorkerEvent]]:
        """The job's events after ``after`` as (seq, event), until its outcome. Unreachable when the stream
        breaks (resume with the last seq); UnknownJob when the server does not know the job."""
        conn = self._connect(self.stream_timeout)
        try:
            resp = self._send(conn, "GET", f"/jobs/{quote(job_id)}/events?after={int(after)}", None)
            if resp.status != 200:
                self._raise_for(resp.status, resp.read())
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise Unreachable(f"the event stream from {self.url} broke: {_why(exc)}") from None
                if not line:
                    if resp.isclosed() or resp.fp is None:
                        return
                    continue
                if not line.strip():
                    continue  # a keep-alive line
                try:
                    seq = int(json.loads(line)["seq"])
                except (ValueError, KeyError, TypeError):
                    log.warning("skipping a line the server sent that has no seq: %.200r", line)
                    continue
                event = parse_event(line.decode("utf-8", "replace"))
                if event is not None:
                    yield seq, event
        finally:
            conn.close()

    def download(self, job_id: str, which: str, dest: Path, expect: FileInfo) -> None:
        """Fetch a job's ``which`` file (video or sidecar) into ``dest``, resuming what is there, and check its
        size and sha256 (Damaged, and ``dest`` removed, when they differ)."""
        have = dest.stat().st_size if dest.exists() else 0
        if have > expect.size:
            dest.unlink()
            have = 0
        if have < expect.size:
            self._fetch_into(job_id, which, dest, have)
        digest = hashlib.sha256()
        size = 0
        with dest.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        if size != expect.size or digest.hexdigest() != expect.sha256:
            dest.unlink(missing_ok=True)
            raise Damaged(f"the {which} of job {job_id} arrived damaged from {self.url} "
                                  f"({size} bytes, sha256 {digest.hexdigest()[:12]}…; the server said "
                                  f"{expect.size} bytes, {expect.sha256[:12]}…)")

    def fetch_bytes(self, job_id: str, which: str, expect: FileInfo) -> bytes:
        """A small file (the sidecar) in memory, checked like :meth:`download`."""
        conn = self._connect(self.timeout)
        try:
            resp = self._send(conn, "GET", f"/jobs/{quote(job_id)}/{which}", None)
            data = resp.read()
            if resp.status != 200:
                self._raise_for(resp.status, data)
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(f"cannot fetch the {which} from {self.url}: {_why(exc)}") from None
        finally:
            conn.close()
        if len(data) != expect.size or hashlib.sha256(data).hexdigest() != expect.sha256:
            raise Damaged(f"the {which} of job {job_id} arrived damaged from {self.url}")
        return data

    # -- HTTP
    def _fetch_into(self, job_id: str, which: str, dest: Path, offset: int) -> None:
        conn = self._connect(self.stream_timeout)
        try:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            resp = self._send(conn, "GET", f"/jobs/{quote(job_id)}/{which}", None, headers)
            if resp.status not in (200, 206):
                self._raise_for(resp.status, resp.read())
            mode = "ab" if resp.status == 206 else "wb"
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "ab" else os.O_TRUNC), 0o600)
            with os.fdopen(fd, mode) as out:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(f"the download of the {which} from {self.url} broke: {_why(exc)}") from None
        finally:
            conn.close()

    def _call(self, method: str, path: str, body: JsonObject | None = None) -> JsonObject:
        with self._mu:
            for attempt in (1, 2):
                conn = self._conn or self._connect(self.timeout)
                self._conn = conn
                try:
                    resp = self._send(conn, method, path, body)
                    data = resp.read()
                    break
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    self._conn = None
                    # A kept-alive connection the server closed meanwhile: once more on a new one.
                    if attempt == 2 or isinstance(exc, ssl.SSLCertVerificationError | TimeoutError):
                        raise self._unreachable(exc) from None
            if resp.will_close:
                conn.close()
                self._conn = None
        if resp.status not in (200, 202):
            self._raise_for(resp.status, data)
        try:
            doc = json.loads(data)
        except ValueError:
            raise Unreachable(f"{self.url} answered something that is not vidtray's API "
                              f"(HTTP {resp.status})") from None
        return doc if isinstance(doc, dict) else {}

    def _connect(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=timeout)

    def _send(self, conn: http.client.HTTPSConnection, method: str, path: str, body: JsonObject | None,
              headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        head = {"Authorization": self._auth, "Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            head["Content-Type"] = "application/json"
        try:
            conn.request(method, self.prefix + API + path, body=data, headers=head)
            return conn.getresponse()
        except ssl.SSLCertVerificationError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: BaseException) -> Unreachable:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return Unreachable(f"{self.url} showed a certificate that the CA file does not vouch for "
                               f"({exc.verify_message}); is [remote] ca_file this server's ca.pem?",
                               certificate=True)
        return Unreachable(f"cannot reach {self.url}: {_why(exc)}")

    def _raise_for(self, status: int, data: bytes) -> None:
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        ours = isinstance(doc, dict) and doc.get("ok") is False and isinstance(doc.get("error"), str)
        message = str(doc["error"]) if ours and isinstance(doc, dict) else f"HTTP {status}"
        code = doc.get("code") if ours and isinstance(doc, dict) else None
        if not ours or status >= 500:
            raise Unreachable(f"{self.url} is not answering as a vidtray server ({message})")
        if status in (401, 403):
            raise Refused(f"{self.url} refused the token ({message}); check [remote] token_file, or ask for a new "
                          f"token (`vidtray server token create NAME` on the server)")
        if status == 404 and code == UNKNOWN_JOB:
            raise UnknownJob(message)
        if status in (400, 413):
            raise BadRequest(message)
        raise RemoteError(f"{self.url}: {message}")


def _job(doc: JsonObject) -> RemoteJob:
    job = doc.get("job")
    if not isinstance(job, dict) or not isinstance(job.get("id"), str):
        raise Unreachable("the server's answer has no job in it")
    return RemoteJob(id=job["id"], state=str(job.get("state", "")), doc=job)


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is `vidtray server up` running there?)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)


#: What :func:`probe` found: it answers; it cannot be reached (jobs wait); it refused this token or this
#: machine's settings are not usable (jobs would fail the same way: they run, and fail with the reason).
ProbeState = str
OK, UNREACHABLE, REFUSED, MISCONFIGURED = "ok", "unreachable", "refused", "misconfigured"


def probe(remote: Any, timeout: float = 5.0) -> tuple[ProbeState, str, JsonObject | None]:
    """(state, a line for a person, the health document) for the config's ``[remote]`` server."""
    try:
        client = RemoteClient.from_config(remote)
    except UserError as exc:
        return MISCONFIGURED, str(exc), None
    client.timeout = timeout
    try:
        doc = client.health()
    except Refused as exc:
        return REFUSED, str(exc), None
    except RemoteError as exc:
        return UNREACHABLE, str(exc), None
    finally:
        with contextlib.suppress(Exception):
            client.close()
    slots = doc.get("slots") or []
    busy = sum(1 for s in slots if isinstance(s, dict) and s.get("job"))
    devices = sorted({str(s.get("device_name") or s.get("device")) for s in slots if isinstance(s, dict)})
    return OK, f"{len(slots)} slot(s) ({', '.join(devices) or 'none'}), {busy} busy, " \
               f"{doc.get('queued', 0)} queued", doc


class RemoteMonitor:
    """Whether the configured server answers, asked every ``every_s`` on a thread of its own (``every_s / 2``
    while it does not): what the supervisor holds remote jobs back on, and what the tray shows. ``state`` is
    None until the first answer (or the lack of one); ``reachable`` is whether it answered."""

    def __init__(self, remote: Any, *, every_s: float = 10.0, timeout: float = 5.0) -> None:
        self.remote = remote
        self.url = str(remote.url)
        self.every_s = every_s
        self.timeout = timeout
        self.state: ProbeState | None = None
        self.reason = ""
        self.health: JsonObject | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._checked = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="remote-monitor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 2)
            self._thread = None

    def check_now(self) -> None:
        """Any thread: ask again at once (a job failed to reach it)."""
        self._wake.set()

    def wait_checked(self, timeout: float) -> bool:
        """Wait for the first answer (tests, and a CLI that wants to know)."""
        return self._checked.wait(timeout)

    @property
    def reachable(self) -> bool | None:
        return None if self.state is None else self.state == OK

    @property
    def unreachable(self) -> bool:
        """It cannot be reached (not: it refused us, or this machine's settings are wrong)."""
        return self.state == UNREACHABLE

    def check(self) -> bool:
        state, line, doc = probe(self.remote, self.timeout)
        if state != self.state:
            (log.info if state == OK else log.warning)("GPU server %s: %s: %s", self.url, state, line)
        self.state, self.reason, self.health = state, "" if state == OK else line, doc
        self._checked.set()
        return state == OK

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ok = self.check()
            except Exception:  # a bug in a probe must not end the monitor
                log.exception("checking the GPU server failed")
                ok = False
            self._wake.wait(self.every_s if ok else self.every_s / 2)
            self._wake.clear()
