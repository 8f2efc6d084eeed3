"""The persistent queue of generation jobs: one SQLite database, ``<data_dir>/queue/queue.sqlite3``.

Why SQLite (the standard library's ``sqlite3``, WAL mode): the tray, ``vidtray watch``, ``vidtray queue``
and the library page use the queue at once from different processes. A transaction that writes starts with
``BEGIN IMMEDIATE`` (one writer at a time, readers never blocked), so claiming the next job is atomic: two
supervisors never run one job twice. A writer that finds the database locked waits (``busy_timeout``), then
fails with one clear line; nothing is lost half-written. The database lives in the data folder, beside the
pause flag, because it holds prompts and results (user data that moves with ``data_dir``), not state.

States: queued -> running -> done | failed | cancelled. A running job's owner is (pid, process start time):
a job whose owner is gone -- or whose PID now belongs to another process, as after a reboot -- goes back to
queued on the next recovery, a bounded number of times. Queued jobs run in the order of their ``position``
(``move`` changes it); the others are listed in the order they were submitted (``seq``).

Rows are :class:`~vidtray.services.jobrecord.Job` records: the columns hold what the queue selects on (id,
seq, position, state, batch, owner), the ``doc`` column the rest as JSON (keys this vidtray does not know
included). Every row is checked through ``Job.from_json`` when read: a row another program wrote that is
not a job is kept as it is, skipped, and logged once -- never run, never fatal to a command or the loop.

Waking without parsing: :meth:`JobQueue.change_key` is a few cheap calls (``PRAGMA data_version``, which
changes when another connection commits, a counter of this connection's commits, and a stat of the pause
flag and of the database file), so an idle supervisor polls nothing else; in the same process a commit also
calls the listeners registered with :meth:`JobQueue.listen` at once.

The database is created on first use. JSON job files of the old queue (``<id>.json`` in the same folder) are
imported then, under the same rules as before (a file that is not a job -- its id not its name, a field of
the wrong type -- is set aside as ``<name>.json.corrupt-<time>``), and moved into ``json-backup/``. A
database file that SQLite says is corrupt is moved aside (``queue.sqlite3.corrupt-<time>``) and the queue
starts empty; the caller's ``on_corrupt`` tells the user. Finished videos live elsewhere and are unaffected.

Two pauses stop new jobs (a running one finishes): the user's (``pause``/``resume``, a row of the
database) and the low-disk pause flag ``paused.json`` that the disk check writes (``read_pause_flag`` is
its one reader).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from vidtray.config import Config
from vidtray.errors import OperationFailed, UserError
from vidtray.paths import PAUSE_FILE
from vidtray.services.fsutil import atomic_write_text, private_dir
from vidtray.services.jobrecord import FINISHED, Executor, InvalidJob, Job, JobProgress, JobState
from vidtray.services.protocol import VideoResult
from vidtray.services.records import JsonObject

log = logging.getLogger("vidtray.queue")

T = TypeVar("T")

DB_NAME = "queue.sqlite3"
BACKUP_DIR = "json-backup"  # where the old queue's JSON job files go once imported
SCHEMA_VERSION = 1  # PRAGMA user_version of a database this vidtray made
BUSY_TIMEOUT_S = 10.0  # how long a writer waits for another one before it gives up with an error
MAX_ATTEMPTS = 3  # a job interrupted by a dying owner is retried at most this often
KEEP_FINISHED = 1000  # finished jobs kept for `queue list`; older ones are pruned (`queue clear --finished`)
MAX_BATCH = 1000  # jobs one `queue add` may queue
#: Process start times agree to the clock tick; a PID reused after a reboot differs by far more.
START_TOLERANCE_S = 1.0
USER_PAUSE_KEY = "user_pause"
ACTIVE: tuple[JobState, ...] = ("queued", "running")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
           id TEXT PRIMARY KEY,
           seq INTEGER NOT NULL,
           position INTEGER NOT NULL,
           state TEXT NOT NULL,
           batch TEXT,
           owner_pid INTEGER,
           owner_start REAL,
           doc TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, position, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_by_seq ON jobs (seq)",
    "CREATE INDEX IF NOT EXISTS jobs_by_batch ON jobs (batch, state)",
    """CREATE TABLE IF NOT EXISTS batches (
           id TEXT PRIMARY KEY,
           created TEXT NOT NULL,
           size INTEGER NOT NULL,
           announced INTEGER NOT NULL DEFAULT 0)""",
    "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
#: The columns that hold a job's fields (the rest is in ``doc``).
_COLUMNS = ("id", "seq", "state", "batch", "owner_pid", "owner_start")
_FINISHED_SQL = "('done', 'failed', 'cancelled')"


# -- the old queue's files and the pause flag ---------------------------------------------------------


def is_job_file(name: str) -> bool:
    """True for the name of an old queue's job file (``<id>.json``; not the pause flag)."""
    return name.endswith(".json") and name != PAUSE_FILE


def read_job(path: Path) -> tuple[Job | None, str | None]:
    """The reader of an old queue's job file, changing nothing: (job, None) for a valid job, (None, why) for
    a file that is not one (``Job.from_json`` refuses it, it does not parse, or its id is not its file
    name), (None, None) for a file that is gone.

    The id must be the file's name: the old queue wrote a job back to ``<id>.json``, so a job whose id
    differed was claimed from its old file again and again; such a file is not imported either.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"unreadable ({exc})"
    try:
        job = Job.from_json(doc)
    except InvalidJob as exc:
        return None, str(exc)
    if job.id != path.stem:
        return None, f"its id {job.id!r} is not its file name {path.stem!r}"
    return job, None


#: The reason shown while a pause flag exists that cannot be read or parsed.
UNREADABLE_FLAG = "paused (unreadable pause flag)"


def read_pause_flag(path: Path) -> dict[str, Any] | None:
    """The one reader of the queue's low-disk pause flag: None while it does not exist, else its document
    with ``reason`` (text) and ``since`` always there. A flag that exists but cannot be read or parsed still
    pauses the queue (someone meant to stop it): its reason is UNREADABLE_FLAG."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):
        return {"reason": UNREADABLE_FLAG, "since": None}
    if not isinstance(doc, dict):
        return {"reason": "paused", "since": None}
    reason = doc.get("reason")
    return {**doc, "reason": str(reason) if reason else "paused", "since": doc.get("since")}


def write_pause_flag(path: Path, doc: dict[str, Any]) -> None:
    """Pause the queue (atomically; OSError if the flag cannot be written)."""
    private_dir(path.parent)
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def remove_pause_flag(path: Path) -> None:
    """Resume the queue (OSError if the flag cannot be removed; gone already is fine)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


# -- owners -----------------------------------------------------------------------------------------


def process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), None if there is no such process."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _timestamp(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except (TypeError, ValueError):
        return None


def owner_alive(job: Job) -> bool:
    """Whether the process that runs ``job`` is still that process: its PID exists and started when the
    owner did. A job recorded before owners had a start time (an imported one) needs an owner that started
    before the job did: a PID handed to a later process owns nothing."""
    if not job.owner_pid:
        return False
    started = process_start(job.owner_pid)
    if started is None:
        return False
    if job.owner_start is not None:
        return abs(started - job.owner_start) <= START_TOLERANCE_S
    claimed = _timestamp(job.started)
    return claimed is None or started <= claimed + START_TOLERANCE_S


# -- batches ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BatchSummary:
    """How a finished batch went: what ``queue list`` groups and what its one notification says."""

    id: str
    size: int
    counts: dict[str, int]
    error: str | None = None  # the first failure's reason

    @property
    def done(self) -> int:
        return self.counts.get("done", 0)

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)

    @property
    def cancelled(self) -> int:
        return self.counts.get("cancelled", 0)


# -- in-process listeners -------------------------------------------------------------------------------

_listeners: dict[str, builtins.list[Callable[[], None]]] = {}
_listeners_lock = threading.Lock()


def _announce(path: Path) -> None:
    with _listeners_lock:
        callbacks = builtins.list(_listeners.get(os.fspath(path), ()))
    for callback in callbacks:
        try:
            callback()
        except Exception:  # a listener's bug must not fail the write that already happened
            log.exception("a queue listener failed")


# -- errors -------------------------------------------------------------------------------------------


def _is_corrupt(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


def _stat_key(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class JobQueue:
    """The queue in ``queue_dir``; see the module docstring. Thread-safe (one connection, one lock);
    nothing touches the disk until the first call that needs the database."""

    def __init__(self, queue_dir: Path, *, busy_timeout: float = BUSY_TIMEOUT_S,
                 on_corrupt: Callable[[Path], None] | None = None) -> None:
        self.dir = Path(queue_dir)
        self.path = self.dir / DB_NAME
        self.busy_timeout = busy_timeout
        self.on_corrupt = on_corrupt
        self._conn: sqlite3.Connection | None = None
        self._empty: sqlite3.Connection | None = None  # what reads see before there is a database
        self._ident: tuple[int, int] | None = None
        self._lock = threading.RLock()
        self._bad: set[tuple[str, str]] = set()
        self._commits = 0  # commits through this object that changed something

    # -- the connection ------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            for conn in (self._conn, self._empty):
                if conn is not None:
                    conn.close()
            self._conn = self._empty = None

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _db(self, create: bool) -> sqlite3.Connection:
        """The connection to the database; for a read (``create`` False) before there is one (and no old job
        file to import), an empty one in memory: looking at the queue creates nothing."""
        ident = _identity(self.path)
        if self._conn is not None and ident == self._ident and ident is not None:
            return self._conn
        if self._conn is not None:
            # The file was set aside (corrupt) or removed by another process: use the one there now.
            log.info("the job queue database %s was replaced; opening it again", self.path)
            self.close()
        if ident is None and not create and not self._job_files():
            if self._empty is None:
                self._empty = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                self._empty.row_factory = sqlite3.Row
                for statement in _SCHEMA:
                    self._empty.execute(statement)
            return self._empty
        try:
            self._conn = self._open()
        except sqlite3.OperationalError as exc:
            if create or ident is None or not self._can_read_as_is(exc):
                raise
            # A full disk (or a read-only folder): WAL mode cannot make its -shm file, but with no -wal
            # left the database file is all there is, and reading it as it is still shows the queue.
            log.info("reading the job queue %s as it is (%s)", self.path, exc)
            uri = f"file:{urllib.parse.quote(os.fspath(self.path))}?immutable=1"
            frozen = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            frozen.row_factory = sqlite3.Row
            return frozen
        return self._conn

    def _can_read_as_is(self, exc: sqlite3.Error) -> bool:
        name = getattr(exc, "sqlite_errorname", "") or ""
        if not name.startswith(("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY")):
            return False
        try:
            return os.path.getsize(f"{self.path}-wal") == 0
        except OSError:
            return True  # no -wal: every commit is in the database file

    def _open(self) -> sqlite3.Connection:
        try:
            private_dir(self.dir)
            if not self.path.exists():
                # Prompts are private: the database (and its -wal/-shm, which SQLite gives the same mode).
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                    os.chmod(self.path, 0o600)
        except OSError as exc:
            raise OperationFailed(f"cannot use the job queue in {self.dir}: {exc.strerror or exc}") from exc
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            self._use_wal(conn)
            # Every commit reaches the disk before it returns: a queued job survives a power cut too.
            conn.execute("PRAGMA synchronous = FULL")
            self._ident = _identity(self.path)
            imported = self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._backup(imported)
        return conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """WAL mode, waiting for other processes as for any lock: SQLite does not call the busy handler for
        a journal-mode change, so several processes creating the queue at once would get "database is
        locked" at once."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorname", "") not in ("SQLITE_BUSY", "SQLITE_LOCKED") \
                        or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self, conn: sqlite3.Connection) -> builtins.list[Path]:
        """Create the schema on first use and import the old queue's JSON job files (also any left behind
        by an old vidtray since); returns the imported files, for ``_backup`` once committed."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise OperationFailed(
                f"the job queue {self.path} was made by a newer vidtray (schema {version}; this one reads "
                f"{SCHEMA_VERSION}): it was left as it is")
        if version == SCHEMA_VERSION and not self._job_files():
            return []
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Again under the write lock: another process may have done it meanwhile.
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                for statement in _SCHEMA:
                    conn.execute(statement)
            imported = self._import(conn, self._job_files())
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return imported

    def _job_files(self) -> builtins.list[Path]:
        try:
            with os.scandir(self.dir) as entries:
                return sorted(Path(e.path) for e in entries if is_job_file(e.name) and e.is_file())
        except OSError:
            return []

    def _import(self, conn: sqlite3.Connection, files: builtins.list[Path]) -> builtins.list[Path]:
        jobs: builtins.list[tuple[Job, Path]] = []
        for path in files:
            job, problem = read_job(path)
            if problem is not None:
                self._set_file_aside(path, problem)
            elif job is not None:
                jobs.append((job, path))
        jobs.sort(key=lambda pair: (pair[0].seq, pair[0].created, pair[0].id))
        position = self._next_position(conn)
        added = 0
        for job, _path in jobs:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone() is None:
                self._insert(conn, job, position + added)
                added += 1
        if jobs:
            log.info("imported %d job file(s) of the old queue into %s (%d already there)", added, self.path,
                     len(jobs) - added)
        return [path for _job, path in jobs]

    def _set_file_aside(self, path: Path, why: str) -> None:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        try:
            os.replace(path, aside)
        except OSError as exc:
            log.warning("job file %s is not a valid job (%s) and cannot be moved aside (%s); not imported",
                        path, why, exc.strerror or exc)
            return
        log.warning("job file %s is not a valid job (%s); moved it to %s", path, why, aside.name)

    def _backup(self, files: builtins.list[Path]) -> None:
        """Move imported job files into ``json-backup/`` (after the commit: a crash before it leaves them
        here, and the next open imports what is not in the database yet and moves them then)."""
        if not files:
            return
        backup = self.dir / BACKUP_DIR
        for path in files:
            target = backup / path.name
            n = 1
            while target.exists():
                n += 1
                target = backup / f"{path.stem}-{n}.json"
            try:
                private_dir(backup)
                os.replace(path, target)
            except FileNotFoundError:
                continue  # another process opening the queue at the same time moved it
            except OSError as exc:
                log.warning("cannot move imported job file %s into %s: %s", path.name, backup, exc.strerror or exc)

    def _set_aside(self, why: str, seen: tuple[int, int] | None) -> None:
        """Move a corrupt database aside (with its -wal and -shm), once, whichever process finds it."""
        from filelock import FileLock, Timeout

        self.close()
        try:
            with FileLock(str(self.dir / ".lock"), timeout=self.busy_timeout):
                if _identity(self.path) != seen:
                    return  # another process has set it aside already
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                aside = self.path.with_name(f"{DB_NAME}.corrupt-{stamp}")
                n = 1
                while aside.exists():
                    n += 1
                    aside = self.path.with_name(f"{DB_NAME}.corrupt-{stamp}-{n}")
                os.replace(self.path, aside)
                for suffix in ("-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
        except Timeout:
            raise OperationFailed(f"the job queue {self.path} is corrupt ({why}) and another process holds "
                                  f"{self.dir / '.lock'}") from None
        except OSError as exc:
            raise OperationFailed(f"the job queue {self.path} is corrupt ({why}) and cannot be moved aside: "
                                  f"{exc.strerror or exc}") from None
        log.error("the job queue %s is corrupt (%s): moved it to %s; the queue starts empty (finished videos "
                  "are not affected)", self.path, why, aside.name)
        if self.on_corrupt is not None:
            try:
                self.on_corrupt(aside)
            except Exception:
                log.exception("on_corrupt callback failed")

    def _failure(self, exc: sqlite3.Error) -> OperationFailed:
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return OperationFailed(f"the job queue {self.path} is locked by another process (waited "
                                   f"{self.busy_timeout:g} s); try again")
        if name.startswith("SQLITE_FULL") or (name.startswith("SQLITE_IOERR") and _disk_full(self.dir)):
            return OperationFailed(f"cannot write the job queue in {self.dir}: No space left on device")
        return OperationFailed(f"cannot use the job queue {self.path}: {exc}")

    def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        """``fn`` on the connection (in one ``BEGIN IMMEDIATE`` transaction when it writes). SQLite's errors
        become OperationFailed; a corrupt database is set aside and ``fn`` runs once more on the new one."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._once(fn, write)
                except sqlite3.Error as exc:
                    if attempt == 1 and _is_corrupt(exc):
                        # The file this connection opened (or, if opening it failed, the one there now).
                        self._set_aside(str(exc), self._ident if self._conn is not None else _identity(self.path))
                        continue
                    raise self._failure(exc) from exc
        raise AssertionError("unreachable")

    def _once(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        conn = self._db(create=write)
        if not write:
            try:
                return fn(conn)
            finally:
                if conn is not self._conn and conn is not self._empty:
                    conn.close()  # a full disk's read-only look
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        if conn.total_changes != before:
            self._commits += 1
            _announce(self.path)
        return result

    # -- rows ----------------------------------------------------------------------------------------
    def _job(self, row: sqlite3.Row) -> Job | None:
        """The job a row holds; None (logged once per row and reason) for a row that is not one."""
        try:
            doc = json.loads(row["doc"]) if isinstance(row["doc"], str) else None
            if not isinstance(doc, dict):
                raise InvalidJob("its doc column is not a JSON object")
            doc.update({key: row[key] for key in _COLUMNS})
            return Job.from_json(doc)
        except (InvalidJob, ValueError, RecursionError) as exc:
            key = (repr(row["id"]), str(exc))
            if key not in self._bad:
                self._bad.add(key)
                log.warning("job row %r in %s is not a valid job (%s); kept as it is and skipped",
                            row["id"], self.path, exc)
            return None

    def _jobs(self, rows: Iterable[sqlite3.Row]) -> builtins.list[Job]:
        return [job for row in rows if (job := self._job(row)) is not None]

    @staticmethod
    def _values(job: Job) -> tuple[Any, ...]:
        doc = job.to_json()
        columns = tuple(doc.pop(key) for key in _COLUMNS)
        return (*columns, json.dumps(doc, ensure_ascii=False))

    def _insert(self, conn: sqlite3.Connection, job: Job, position: int) -> None:
        conn.execute("INSERT INTO jobs (id, seq, state, batch, owner_pid, owner_start, doc, position) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*self._values(job), position))

    def _put(self, conn: sqlite3.Connection, job: Job) -> Job:
        job = dataclasses.replace(job, updated=now_iso())
        values = self._values(job)
        conn.execute("UPDATE jobs SET seq = ?, state = ?, batch = ?, owner_pid = ?, owner_start = ?, doc = ? "
                     "WHERE id = ?", (*values[1:], values[0]))
        return job

    @staticmethod
    def _next_position(conn: sqlite3.Connection) -> int:
        return _last(conn, "position", "DESC", "state = 'queued' AND ", 0) + 1

    def _find(self, conn: sqlite3.Connection, job_id: str) -> Job:
        """A job by id or unique id prefix (UserError if none or several match, or it is not a valid job)."""
        job_id = job_id.strip()
        if not job_id:
            raise UserError("a job id is needed (see `vidtray queue list`)")
        rows = conn.execute("SELECT * FROM jobs WHERE id >= ? ORDER BY id LIMIT 6", (job_id,)).fetchall()
        exact = [r for r in rows if r["id"] == job_id]
        matches = exact or [r for r in rows if isinstance(r["id"], str) and r["id"].startswith(job_id)]
        if not matches:
            raise UserError(f"no job {job_id!r} in the queue (see `vidtray queue list`)")
        if len(matches) > 1:
            raise UserError(f"job id {job_id!r} is ambiguous: {', '.join(r['id'] for r in matches[:5])}")
        job = self._job(matches[0])
        if job is None:
            raise UserError(f"job {matches[0]['id']} is not a valid job (see the log); it is kept as it is")
        return job

    # -- reading -------------------------------------------------------------------------------------
    def list(self) -> builtins.list[Job]:
        """All jobs: the others in the order they were submitted, then the queued ones in the order they
        will run."""
        return self._run(lambda conn: self._jobs(conn.execute(
            "SELECT * FROM jobs ORDER BY state = 'queued', "
            "CASE WHEN state = 'queued' THEN position ELSE seq END, seq")))

    def active(self) -> builtins.list[Job]:
        """Running jobs, then queued ones in the order they will run (an indexed read: cheap however many
        finished jobs the queue keeps)."""
        return self._run(lambda conn: self._jobs(conn.execute(
            "SELECT * FROM jobs WHERE state = 'running' ORDER BY seq")) + self._jobs(conn.execute(
                "SELECT * FROM jobs WHERE state = 'queued' ORDER BY position, seq")))

    def running(self) -> builtins.list[Job]:
        """The running jobs (usually one per supervisor), oldest first."""
        return self._run(lambda conn: self._jobs(conn.execute(
            "SELECT * FROM jobs WHERE state = 'running' ORDER BY seq")))

    def place(self, job_id: str) -> int:
        """How many queued jobs run before this queued one (0: it is next)."""
        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT position, seq FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise UserError(f"no job {job_id!r} in the queue (see `vidtray queue list`)")
            return int(conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND (position < ? OR (position = ? AND seq < ?))",
                (row[0], row[0], row[1])).fetchone()[0])
        return self._run(read)

    def count(self, state: JobState) -> int:
        """Rows in ``state`` (an indexed count)."""
        return int(self._run(lambda conn: conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()[0]))

    def get(self, job_id: str) -> Job:
        """A job by id or unique id prefix (UserError if none or several match)."""
        return self._run(lambda conn: self._find(conn, job_id))

    def models_in_use(self, default: str | None = None) -> set[str]:
        """The models that queued or running jobs will load (``request.model``; a job that names none uses
        ``default``, the config's model, when given). For the storage budget: a model in this set is not
        to be deleted."""
        def read(conn: sqlite3.Connection) -> set[str]:
            # Only each row's request is read, and a row that is not a valid job counts too: when in
            # doubt, a model stays.
            models: set[str] = set()
            for (doc,) in conn.execute("SELECT doc FROM jobs WHERE state IN ('queued', 'running')"):
                try:
                    request = json.loads(doc).get("request")
                    model = request.get("model") if isinstance(request, dict) else None
                except (TypeError, ValueError, AttributeError, RecursionError):
                    model = None
                if isinstance(model, str) and model.strip():
                    models.add(model.strip())
                elif default:
                    models.add(default)
            return models
        return self._run(read)

    def batches(self) -> dict[str, BatchSummary]:
        """Every batch with jobs in the queue: its size and how many of its jobs are in each state."""
        def read(conn: sqlite3.Connection) -> dict[str, BatchSummary]:
            counts: dict[str, dict[str, int]] = {}
            for row in conn.execute("SELECT batch, state, COUNT(*) FROM jobs WHERE batch IS NOT NULL "
                                    "GROUP BY batch, state"):
                counts.setdefault(str(row[0]), {})[str(row[1])] = int(row[2])
            sizes = {str(r[0]): int(r[1]) for r in conn.execute("SELECT id, size FROM batches")}
            return {b: BatchSummary(b, sizes.get(b, sum(c.values())), c) for b, c in counts.items()}
        return self._run(read)

    def change_key(self) -> tuple[object, ...]:
        """Changes whenever the queue may have: a commit by another connection (``PRAGMA data_version``), one
        by this object, the pause flag or the database file replaced. Cheap: no row is read."""
        def read(conn: sqlite3.Connection) -> int:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])
        version = self._run(read)
        return self._ident, version, self._commits, _stat_key(self.dir / PAUSE_FILE)

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (on the writer's thread) after every commit that changes this queue from this
        process; returns the function that stops it."""
        key = os.fspath(self.path)
        with _listeners_lock:
            _listeners.setdefault(key, []).append(callback)

        def stop() -> None:
            with _listeners_lock, contextlib.suppress(ValueError):
                _listeners.get(key, []).remove(callback)
        return stop

    # -- pauses --------------------------------------------------------------------------------------
    def low_disk_pause(self) -> dict[str, Any] | None:
        """The low-disk pause flag's content while it exists (``{"reason", "since", ...}``), else None."""
        return read_pause_flag(self.dir / PAUSE_FILE)

    def user_pause(self) -> dict[str, Any] | None:
        """The user's pause (``{"reason", "since", "by": "user"}``) while the queue is paused by them."""
        return self._run(self._read_user_pause)

    def _read_user_pause(self, conn: sqlite3.Connection) -> dict[str, Any] | None:
        row = conn.execute("SELECT value FROM settings WHERE key = ?", (USER_PAUSE_KEY,)).fetchone()
        if row is None:
            return None
        try:
            doc = json.loads(row[0])
        except (TypeError, ValueError):
            doc = None
        if not isinstance(doc, dict):
            doc = {}
        return {**doc, "reason": str(doc.get("reason") or "paused by you"), "since": doc.get("since"),
                "by": "user"}

    def paused(self) -> dict[str, Any] | None:
        """What keeps new jobs from starting (the low-disk pause first, then the user's; its ``kind`` says
        which), else None."""
        flag = self.low_disk_pause()
        if flag is not None:
            return {**flag, "kind": "low_disk"}
        user = self.user_pause()
        return None if user is None else {**user, "kind": "user"}

    def pause(self, reason: str = "paused by you") -> dict[str, Any]:
        """The user's pause: no new job starts until ``resume`` (a running one finishes). Pausing a paused
        queue keeps the first pause."""
        def write(conn: sqlite3.Connection) -> dict[str, Any]:
            current = self._read_user_pause(conn)
            if current is not None:
                return current
            doc = {"reason": reason, "since": now_iso(), "by": "user"}
            conn.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (USER_PAUSE_KEY, json.dumps(doc)))
            return doc
        doc = self._run(write, write=True)
        log.info("queue paused by the user")
        return doc

    def resume(self) -> bool:
        """End the user's pause; False if the queue was not paused by the user (the low-disk pause is the
        disk check's to end)."""
        if self.user_pause() is None:
            return False
        removed = self._run(lambda conn: conn.execute(
            "DELETE FROM settings WHERE key = ?", (USER_PAUSE_KEY,)).rowcount > 0, write=True)
        if removed:
            log.info("queue resumed by the user")
        return bool(removed)

    # -- changing ------------------------------------------------------------------------------------
    def submit(self, request: JsonObject, *, batch: str | None = None, executor: Executor | None = None) -> Job:
        """Add a job (the request is a ``generation.Request`` as a dict) and return it. ``executor``: where
        it runs (None: the config's ``executor`` when it is claimed)."""
        return self.submit_many([request], batch=batch, executor=executor)[0]

    def submit_many(self, requests: builtins.list[JsonObject], *, batch: str | None = None,
                    executor: Executor | None = None) -> builtins.list[Job]:
        """Add jobs in one transaction (all of them or, on an error, none), in this order, as one batch when
        ``batch`` is an id (see ``new_batch_id``), each to run where ``executor`` says."""
        if not requests:
            return []

        def write(conn: sqlite3.Connection) -> builtins.list[Job]:
            seq = _last(conn, "seq", "DESC", "", 0)
            position = self._next_position(conn)
            created = now_iso()
            if batch is not None:
                conn.execute("INSERT OR REPLACE INTO batches (id, created, size, announced) VALUES (?, ?, ?, 0)",
                             (batch, created, len(requests)))
            jobs = []
            for i, request in enumerate(requests):
                job = Job(id=uuid.uuid4().hex[:12], seq=seq + 1 + i, state="queued", request=request,
                          created=created, updated=created, batch=batch, executor=executor)
                self._insert(conn, job, position + i)
                jobs.append(job)
            return jobs
        jobs = self._run(write, write=True)
        for job in jobs:
            log.info("queued job %s%s", job.id, f" (batch {batch})" if batch else "")
        return jobs

    def claim_next(self, owner_pid: int | None = None, accept: Callable[[Job], bool] | None = None) -> Job | None:
        """Take the first queued job (state -> running, owned by ``owner_pid`` and its start time), unless
        the queue is paused. ``accept``: only a job it says yes to (a remote job waits while its server
        is away, and local jobs behind it still run). Atomic across processes: a job is claimed once."""
        if self.low_disk_pause() is not None or not self.count("queued"):
            return None  # (nothing queued: no write lock taken, no database created)
        pid = owner_pid or os.getpid()
        start = process_start(pid)

        def claim(conn: sqlite3.Connection) -> Job | None:
            if self._read_user_pause(conn) is not None:
                return None
            found = None
            cursor = conn.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY position, seq")
            for row in cursor:
                found = self._job(row)
                if found is not None and (accept is None or accept(found)):
                    break
                found = None
            cursor.close()
            if found is None:
                return None
            return self._put(conn, dataclasses.replace(
                found, state="running", owner_pid=pid, owner_start=start, started=now_iso(),
                attempts=found.attempts + 1, progress=None, error=None))
        return self._run(claim, write=True)

    def update(self, job_id: str, fn: Callable[[Job], Job]) -> Job:
        """Read-modify-write one job in one transaction: ``fn`` returns the changed job."""
        return self._run(lambda conn: self._put(conn, fn(self._find(conn, job_id))), write=True)

    def set_progress(self, job_id: str, progress: JobProgress) -> None:
        with contextlib.suppress(UserError):
            self.update(job_id, lambda job: dataclasses.replace(job, progress=progress))

    def finish(self, job_id: str, state: JobState, *, result: VideoResult | None = None,
               error: str | None = None) -> Job:
        if state not in FINISHED:
            raise ValueError(f"not a final state: {state}")

        def write(conn: sqlite3.Connection) -> Job:
            job = self._put(conn, dataclasses.replace(
                self._find(conn, job_id), state=state, finished=now_iso(), result=result, error=error,
                owner_pid=None, owner_start=None))
            self._prune(conn)
            return job
        return self._run(write, write=True)

    def requeue(self, job_id: str, reason: str) -> Job:
        """Put a running job back (its owner stopped before finishing it)."""
        return self.update(job_id, lambda job: dataclasses.replace(
            _requeued(job, reason), cancel_requested=False, error=None))

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now; ask a running one to stop (its owner sees ``cancel_requested``)."""
        job_id = self.get(job_id).id  # an unknown id fails before anything is created or locked

        def write(conn: sqlite3.Connection) -> Job:
            job = self._find(conn, job_id)
            if job.is_finished:
                raise UserError(f"job {job.id} is already {job.state}")
            if job.state == "queued":
                return self._put(conn, dataclasses.replace(job, state="cancelled", finished=now_iso(),
                                                           error="cancelled before it started"))
            return self._put(conn, dataclasses.replace(job, cancel_requested=True))
        return self._run(write, write=True)

    def move(self, job_id: str, *, before: str | None = None) -> Job:
        """Move a queued job to the front (``before`` None) or just before another queued job."""
        job_id = self.get(job_id).id

        def write(conn: sqlite3.Connection) -> Job:
            job = self._queued_only(self._find(conn, job_id), "moved")
            if before is None:
                position = _last(conn, "position", "ASC", "state = 'queued' AND ", 1) - 1
            else:
                target = self._queued_only(self._find(conn, before), "moved before")
                if target.id == job.id:
                    raise UserError(f"job {job.id} cannot be moved before itself")
                position = self._position(conn, target.id)
                conn.execute("UPDATE jobs SET position = position + 1 WHERE state = 'queued' AND position >= ?",
                             (position,))
            conn.execute("UPDATE jobs SET position = ? WHERE id = ?", (position, job.id))
            return self._put(conn, job)
        return self._run(write, write=True)

    @staticmethod
    def _position(conn: sqlite3.Connection, job_id: str) -> int:
        value = conn.execute("SELECT position FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        return int(value) if isinstance(value, int | float) else _last(conn, "position", "DESC", "", 0) + 1

    @staticmethod
    def _queued_only(job: Job, what: str) -> Job:
        if job.state != "queued":
            raise UserError(f"job {job.id} is {job.state}: only queued jobs can be {what}")
        return job

    def edit(self, job_id: str, request: JsonObject, *, expected: JsonObject | None = None) -> Job:
        """Replace a queued job's request (already checked by the caller). With ``expected``, only if the
        request is still that one (the caller read and checked it outside this transaction)."""
        job_id = self.get(job_id).id

        def write(conn: sqlite3.Connection) -> Job:
            job = self._queued_only(self._find(conn, job_id), "edited")
            if expected is not None and job.request != expected:
                raise UserError(f"job {job.id} was changed meanwhile; run the command again")
            return self._put(conn, dataclasses.replace(job, request=request))
        return self._run(write, write=True)

    def retry(self, job_id: str) -> Job:
        """Queue a failed or cancelled job again, at the end of the queue."""
        job_id = self.get(job_id).id

        def write(conn: sqlite3.Connection) -> Job:
            job = self._find(conn, job_id)
            if job.state not in ("failed", "cancelled"):
                raise UserError(f"job {job.id} is {job.state}: only failed or cancelled jobs can be retried")
            retried = dataclasses.replace(
                job, state="queued", started=None, finished=None, owner_pid=None, owner_start=None, attempts=0,
                cancel_requested=False, progress=None, result=None, error=None,
                history=(*job.history, {"at": now_iso(), "retried": f"was {job.state}"}))
            conn.execute("UPDATE jobs SET position = ? WHERE id = ?", (self._next_position(conn), job.id))
            if job.batch is not None:
                conn.execute("UPDATE batches SET announced = 0 WHERE id = ?", (job.batch,))
            return self._put(conn, retried)
        return self._run(write, write=True)

    def clear_finished(self) -> int:
        """Remove every finished job (done, failed, cancelled); returns how many."""
        if not any(self.count(state) for state in FINISHED):
            return 0

        def write(conn: sqlite3.Connection) -> int:
            removed = conn.execute(f"DELETE FROM jobs WHERE state IN {_FINISHED_SQL}").rowcount
            self._forget_empty_batches(conn)
            return int(removed)
        return self._run(write, write=True)

    def recover_stale(self, alive: Callable[[Job], bool] = owner_alive) -> builtins.list[Job]:
        """Running jobs whose owner is gone (or whose PID is another process now): back to queued, or
        failed after MAX_ATTEMPTS tries."""
        if not self.count("running"):
            return []  # the usual case, without taking the write lock

        def write(conn: sqlite3.Connection) -> builtins.list[Job]:
            changed = []
            # Newest first: each goes to the front, so the oldest ends up first, as it was.
            rows = conn.execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY seq DESC").fetchall()
            for job in self._jobs(rows):
                if alive(job):
                    continue
                if job.cancel_requested:
                    job = dataclasses.replace(job, state="cancelled", finished=now_iso(), owner_pid=None,
                                              owner_start=None, error="cancelled (its worker had stopped)")
                elif job.attempts >= MAX_ATTEMPTS:
                    job = dataclasses.replace(
                        job, state="failed", finished=now_iso(), owner_pid=None, owner_start=None,
                        error=f"interrupted {job.attempts} times (vidtray stopped or crashed)")
                else:
                    job = _requeued(job, "owner process gone")
                    conn.execute("UPDATE jobs SET position = ? WHERE id = ?", (self._first_position(conn), job.id))
                changed.append(self._put(conn, job))
            return changed
        changed = self._run(write, write=True)
        for job in changed:
            log.info("recovered job %s -> %s", job.id, job.state)
        return changed

    @staticmethod
    def _first_position(conn: sqlite3.Connection) -> int:
        # An interrupted job goes back to the front: it was the next one to run.
        return _last(conn, "position", "ASC", "state = 'queued' AND ", 2) - 1

    def finished_batches(self) -> builtins.list[BatchSummary]:
        """Batches whose jobs have all finished and that nobody announced yet. Each is handed out once, to
        whichever process asks first (the tray and ``vidtray watch`` may both be running)."""
        due = ("SELECT id, size FROM batches WHERE announced = 0 AND NOT EXISTS (SELECT 1 FROM jobs "
               "WHERE jobs.batch = batches.id AND jobs.state IN ('queued', 'running'))")
        if self._run(lambda conn: conn.execute(f"{due} LIMIT 1").fetchone()) is None:
            return []  # the usual case, without taking the write lock

        def write(conn: sqlite3.Connection) -> builtins.list[BatchSummary]:
            out = []
            rows = conn.execute(due).fetchall()
            for batch, size in rows:
                counts = {str(s): int(n) for s, n in conn.execute(
                    "SELECT state, COUNT(*) FROM jobs WHERE batch = ? GROUP BY state", (batch,))}
                error = None
                for job in self._jobs(conn.execute(
                        "SELECT * FROM jobs WHERE batch = ? AND state = 'failed' ORDER BY seq LIMIT 1", (batch,))):
                    error = job.error
                conn.execute("UPDATE batches SET announced = 1 WHERE id = ?", (batch,))
                out.append(BatchSummary(str(batch), size if isinstance(size, int) else sum(counts.values()),
                                        counts, error))
            return out
        return self._run(write, write=True)

    def _prune(self, conn: sqlite3.Connection) -> None:
        finished = int(conn.execute(f"SELECT COUNT(*) FROM jobs WHERE state IN {_FINISHED_SQL}").fetchone()[0])
        if finished > KEEP_FINISHED:
            conn.execute(f"DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state IN {_FINISHED_SQL} "
                         "ORDER BY seq LIMIT ?)", (finished - KEEP_FINISHED,))
            self._forget_empty_batches(conn)

    @staticmethod
    def _forget_empty_batches(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM batches WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.batch = batches.id)")


def _last(conn: sqlite3.Connection, column: str, order: str, where: str, default: int) -> int:
    """The largest (DESC) or smallest (ASC) number in ``column`` (an index walk), ignoring values another
    program may have written that are not numbers (SQLite sorts text after every number)."""
    row = conn.execute(f"SELECT {column} FROM jobs WHERE {where}{column} BETWEEN -9e18 AND 9e18 "
                       f"ORDER BY {column} {order} LIMIT 1").fetchone()
    return default if row is None else int(row[0])


def _requeued(job: Job, reason: str) -> Job:
    return dataclasses.replace(job, state="queued", owner_pid=None, owner_start=None, started=None, progress=None,
                               history=(*job.history, {"at": now_iso(), "requeued": reason}))


def _disk_full(folder: Path) -> bool:
    # SQLite says "disk I/O error" when the -wal or -shm file cannot grow; the volume tells why.
    from vidtray.paths import free_bytes

    free = free_bytes(folder)
    return free is not None and free < 64 * 1024


def new_batch_id() -> str:
    return uuid.uuid4().hex[:8]


def open_queue(cfg: Config, *, on_corrupt: Callable[[Path], None] | None = None) -> JobQueue:
    return JobQueue(cfg.queue_dir, on_corrupt=on_corrupt)
