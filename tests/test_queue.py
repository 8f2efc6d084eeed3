"""The persistent job queue and the supervisor's bookkeeping (with a fake worker: no torch, fast)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vidtray.config import Config
from vidtray.errors import UserError
from vidtray.services.jobrecord import JobProgress
from vidtray.services.protocol import (
    AnyEvent,
    Cancelled,
    Done,
    Failed,
    Progress,
    QueuePaused,
    SupervisorGaveUp,
    WorkerExit,
)
from vidtray.services.queue import MAX_ATTEMPTS, JobQueue
from vidtray.services.supervisor import Supervisor
from vidtray.services.worker_process import crash_reason

FAKE_WORKER = Path(__file__).with_name("fake_worker.py")


def req(prompt: str = "a cat") -> dict[str, Any]:
    return {"prompt": prompt}


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


# -- JobQueue -----------------------------------------------------------------------------------------


def test_jobs_go_through_their_states_in_order(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "queue")
    a, b = q.submit(req("first")), q.submit(req("second"))
    assert [j.id for j in q.list()] == [a.id, b.id]
    claimed = q.claim_next(owner_pid=1234)
    assert claimed is not None and claimed.id == a.id and claimed.state == "running"
    assert claimed.owner_pid == 1234 and claimed.attempts == 1
    q.set_progress(a.id, JobProgress(step=3, steps=10))
    assert q.get(a.id).progress == JobProgress(step=3, steps=10)
    done = q.finish(a.id, "done", result={"path": "/x.mp4"})
    assert done.state == "done" and done.result == {"path": "/x.mp4"} and done.owner_pid is None
    assert q.claim_next().id == b.id
    assert q.claim_next() is None
    # one database, and what this connection committed another one reads
    assert {p.name for p in (tmp_path / "queue").iterdir()} <= {"queue.sqlite3", "queue.sqlite3-wal",
                                                                "queue.sqlite3-shm"}
    with JobQueue(tmp_path / "queue") as other:
        assert [(j.id, j.state) for j in other.list()] == [(a.id, "done"), (b.id, "running")]


def test_queue_survives_a_restart_and_requeues_jobs_of_dead_owners(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "queue")
    waiting = q.submit(req("waiting"))
    interrupted = q.submit(req("interrupted"))
    q.claim_next(owner_pid=dead_pid())  # the oldest first; its owner then dies
    # a new process opens the same folder
    q2 = JobQueue(tmp_path / "queue")
    states = {j.id: j.state for j in q2.list()}
    assert states == {waiting.id: "running", interrupted.id: "queued"}
    recovered = q2.recover_stale()
    assert [j.id for j in recovered] == [waiting.id]
    assert q2.get(waiting.id).state == "queued"
    assert q2.get(waiting.id).history[0]["requeued"] == "owner process gone"
    # a job interrupted MAX_ATTEMPTS times is given up instead of retried forever
    for attempt in range(2, MAX_ATTEMPTS + 1):
        assert q2.claim_next(owner_pid=dead_pid()).id == waiting.id
        (job,) = q2.recover_stale()
        assert job.attempts == attempt
        assert job.state == ("queued" if attempt < MAX_ATTEMPTS else "failed")
    assert f"interrupted {MAX_ATTEMPTS} times" in q2.get(waiting.id).error
    assert q2.get(interrupted.id).state == "queued"


def test_running_job_of_a_live_owner_is_left_alone(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "queue")
    q.submit(req())
    q.claim_next()  # owned by this (live) process
    assert q.recover_stale() == []


def test_cancel_queued_running_and_finished_jobs(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "queue")
    a, b = q.submit(req("a")), q.submit(req("b"))
    q.claim_next()
    running = q.cancel(a.id[:6])  # a unique prefix is enough
    assert running.state == "running" and running.cancel_requested is True
    cancelled = q.cancel(b.id)
    assert cancelled.state == "cancelled"
    with pytest.raises(UserError, match="already cancelled"):
        q.cancel(b.id)
    with pytest.raises(UserError, match="no job"):
        q.cancel("zzzz")


def test_ambiguous_prefix_is_refused(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "queue")
    ids = [q.submit(req()).id for _ in range(40)]
    first = ids[0][0]
    if sum(i.startswith(first) for i in ids) > 1:
        with pytest.raises(UserError, match="ambiguous"):
            q.get(first)
    with pytest.raises(UserError):
        q.get("")


def test_pause_flag_stops_claiming(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "queue")
    q.submit(req())
    flag = tmp_path / "queue" / "paused.json"
    flag.write_text(json.dumps({"reason": "low disk: 0.4 GB free", "since": "2025-01-01T00:00:00+00:00"}))
    assert q.paused()["reason"].startswith("low disk")
    assert q.claim_next() is None
    flag.unlink()
    assert q.paused() is None
    assert q.claim_next() is not None


def test_a_mangled_job_file_of_the_old_queue_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / "queue").mkdir()
    (tmp_path / "queue" / "broken.json").write_text("{not json")
    q = JobQueue(tmp_path / "queue")
    good = q.submit(req())
    assert [j.id for j in q.list()] == [good.id]
    assert list((tmp_path / "queue").glob("broken.json.corrupt-*"))


def test_crash_reason_names_the_signal_and_last_words() -> None:
    assert crash_reason(-9, ["loading", "Killed"]).startswith("the worker process killed by SIGKILL")
    reason = crash_reason(1, ["Traceback (most recent call last):", '  File "x"', "RuntimeError: boom"])
    assert reason == "the worker process exited with code 1: RuntimeError: boom"


# -- Supervisor with a fake worker ----------------------------------------------------------------------


class Recorder:
    """The supervisor's ``on_event``: records every event it relays (protocol types)."""

    def __init__(self) -> None:
        self.events: list[AnyEvent] = []
        self.cond = threading.Condition()

    def __call__(self, event: AnyEvent) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[Any], bool], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events:
                    if pred(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"event not seen; got {self.kinds()}")
                self.cond.wait(left)

    def kinds(self) -> list[str]:
        return [e.NAME for e in self.events]


class RecordingNotifier:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def video_ready(self, path: Path, prompt: str) -> None:
        self.calls.append(("video_ready", (str(path), prompt)))

    def generation_failed(self, reason: str) -> None:
        self.calls.append(("generation_failed", (reason,)))

    def batch_done(self, done: int, failed: int, cancelled: int, error: str | None = None) -> None:
        self.calls.append(("batch_done", (done, failed, cancelled, error)))

    def queue_corrupt(self, moved_to: Path) -> None:
        self.calls.append(("queue_corrupt", (str(moved_to),)))

    def generation_note(self, message: str) -> None:
        self.calls.append(("generation_note", (message,)))

    def server_unreachable(self, url: str, reason: str, fallback: str) -> None:
        self.calls.append(("server_unreachable", (url, reason, fallback)))


def supervisor(cfg: Config, rec: Recorder, **kw: Any) -> Supervisor:
    keep = kw.pop("keep_alive", 2.0)
    return Supervisor(cfg, on_event=rec, poll_s=0.05, worker_cmd=[sys.executable, str(FAKE_WORKER),
                                                                  "--keep-alive", str(keep)], **kw)


def test_supervisor_runs_jobs_in_order_and_the_worker_exits_when_idle(cfg: Config) -> None:
    rec, notifier = Recorder(), RecordingNotifier()
    sup = supervisor(cfg, rec, keep_alive=0.5, notifier=notifier)
    sup.start()
    try:
        a, b = sup.submit(req("one")), sup.submit(req("two"))
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == b.id)
        rec.wait_for(lambda e: isinstance(e, WorkerExit))
        assert rec.kinds().count("worker_started") == 1  # one worker took both jobs
        assert sup.queue.get(a.id).state == "done" and sup.queue.get(b.id).state == "done"
        assert [c[0] for c in notifier.calls] == ["video_ready", "video_ready"]
        # a job after the idle exit starts a new worker on demand
        c = sup.submit(req("three"))
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == c.id)
        assert rec.kinds().count("worker_started") == 2
    finally:
        sup.stop()


def test_crashed_worker_fails_its_job_restarts_and_gives_up_after_the_bound(cfg: Config) -> None:
    rec, notifier = Recorder(), RecordingNotifier()
    sup = supervisor(cfg, rec, max_restarts=1, notifier=notifier)
    sup._next_start = 0
    sup.start()
    try:
        crash1 = sup.submit(req("crash one"))
        rec.wait_for(lambda e: isinstance(e, Failed) and e.job == crash1.id)
        job = sup.queue.get(crash1.id)
        assert job.state == "failed"
        assert "exited with code 3: RuntimeError: CUDA error" in job.error
        ok = sup.submit(req("fine"))  # the restarted worker takes it (after a 1 s backoff)
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == ok.id)
        crash2, crash3 = sup.submit(req("crash two")), sup.submit(req("crash three"))
        rec.wait_for(lambda e: isinstance(e, SupervisorGaveUp), timeout=30)
        assert sup.queue.get(crash2.id).state == "failed"
        assert sup.queue.get(crash3.id).state == "failed"
        later = sup.submit(req("never"))
        time.sleep(0.5)
        assert sup.queue.get(later.id).state == "queued"  # stays for the next start
        assert [c[0] for c in notifier.calls].count("generation_failed") == 3
    finally:
        sup.stop()


def test_cancel_a_running_job_and_stop_requeues_the_current_one(cfg: Config) -> None:
    rec = Recorder()
    sup = supervisor(cfg, rec)
    sup.start()
    try:
        slow = sup.submit(req("slow one"))
        rec.wait_for(lambda e: isinstance(e, Progress) and e.job == slow.id)
        sup.cancel(slow.id[:8])
        rec.wait_for(lambda e: isinstance(e, Cancelled) and e.job == slow.id)
        assert sup.queue.get(slow.id).state == "cancelled"
        slow2 = sup.submit(req("slow two"))
        rec.wait_for(lambda e: isinstance(e, Progress) and e.job == slow2.id)
    finally:
        sup.stop()
    # vidtray quit while it ran: it is queued again for the next start
    assert JobQueue(cfg.queue_dir).get(slow2.id).state == "queued"


def test_paused_queue_waits_for_the_flag_to_go(cfg: Config) -> None:
    rec = Recorder()
    cfg.queue_dir.mkdir(parents=True)
    flag = cfg.queue_dir / "paused.json"
    flag.write_text(json.dumps({"reason": "low disk", "since": "2025-01-01T00:00:00+00:00"}))
    sup = supervisor(cfg, rec)
    sup.start()
    try:
        job = sup.submit(req("waits"))
        rec.wait_for(lambda e: isinstance(e, QueuePaused))
        time.sleep(0.3)
        assert sup.queue.get(job.id).state == "queued"
        assert "worker_started" not in rec.kinds()
        flag.unlink()
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == job.id)
    finally:
        sup.stop()


def test_supervisor_start_recovers_jobs_of_a_previous_run(cfg: Config) -> None:
    q = JobQueue(cfg.queue_dir)
    job = q.submit(req("left running"))
    q.claim_next(owner_pid=dead_pid())
    rec = Recorder()
    sup = supervisor(cfg, rec)
    sup.start()
    try:
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == job.id)
        assert rec.kinds()[0] == "job_recovered"
    finally:
        sup.stop()


def test_supervisor_hands_its_config_file_to_the_worker(tmp_path: Path,
                                                        isolated_env: dict[str, Path]) -> None:
    config = tmp_path / "settings.toml"
    config.write_text("keep_alive_s = 7\n")
    from vidtray.config import load_config

    sup = Supervisor(load_config(config))
    assert sup.config_path == str(config) and sup.keep_alive_s == 7
    assert Supervisor(Config.from_mapping({}, "<test>")).config_path is None


# -- job files other programs wrote ------------------------------------------------------------------------


def _job_doc(job_id: str, **over: Any) -> dict[str, Any]:
    doc = {"version": 1, "id": job_id, "seq": 1, "state": "queued", "request": {"prompt": "a cat"},
           "created": "2025-01-01T00:00:00+00:00", "started": None, "finished": None, "owner_pid": None,
           "attempts": 0, "cancel_requested": False, "progress": None, "result": None, "error": None}
    doc.update(over)
    return doc


MALFORMED = [
    ("wrongname", _job_doc("otherid")),  # re-ran for ever: claimed from this file, written to another
    ("intid", {**_job_doc("intid"), "id": 5}),
    ("strseq", _job_doc("strseq", seq="first")),
    ("strpid", _job_doc("strpid", state="running", owner_pid="1234")),
    ("boolseq", _job_doc("boolseq", seq=True)),
    ("request", _job_doc("request", request="go")),
    ("progress", _job_doc("progress", progress="half")),
    ("result", _job_doc("result", state="done", result="/x.mp4")),
    ("state", _job_doc("state", state="paused")),
    ("list", [1, 2]),
    ("traversal", _job_doc("../../escape")),
]


@pytest.mark.parametrize("name,doc", MALFORMED)
def test_a_malformed_job_file_is_set_aside_on_import_and_never_wedges_the_queue(tmp_path: Path, cli, name: str,
                                                                                 doc: Any) -> None:
    qdir = tmp_path / "data" / "queue"
    qdir.mkdir(parents=True)
    good = _job_doc("goodone0000a", request={"prompt": "good one"})
    (qdir / "goodone0000a.json").write_text(json.dumps(good))
    (qdir / f"{name}.json").write_text(json.dumps(doc))
    listed = cli("queue", "list", "--json")  # the first open imports the old queue's files
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)["jobs"]] == ["goodone0000a"]
    assert cli("queue", "list").returncode == 0
    assert [p.name.split(".json")[0] for p in qdir.glob("*.json.corrupt-*")] == [name]
    assert [p.name for p in (qdir / "json-backup").iterdir()] == ["goodone0000a.json"]
    # the queue goes on: the good job is claimed once, and nothing is claimed after it
    q = JobQueue(qdir)
    assert q.claim_next().id == "goodone0000a"
    assert q.claim_next() is None
    assert not (tmp_path / "escape.json").exists()


def _insert_row(qdir: Path, job_id: Any, doc: Any, *, state: Any = "queued", seq: Any = 1, owner_pid: Any = None,
                position: int = 0) -> None:
    """A row as another program might write it into the queue's database, bypassing vidtray."""
    import sqlite3

    raw = doc if isinstance(doc, str) else json.dumps(doc)
    with sqlite3.connect(qdir / "queue.sqlite3") as conn:
        conn.execute("INSERT INTO jobs (id, seq, position, state, owner_pid, doc) VALUES (?, ?, ?, ?, ?, ?)",
                     (job_id, seq, position, state, owner_pid, raw))
    conn.close()


ROWS = [
    ("notjson", {"doc": "{not json"}),
    ("listdoc", {"doc": "[1, 2]"}),
    # (an integer id, or a pid as digits, is stored as text / a number by the columns' types: a valid job)
    ("strseq", {"seq": "first"}),
    ("strpid", {"state": "running", "owner_pid": "me"}),
    ("blobid", {"job_id": b"\x00bin"}),
    ("request", {"doc": json.dumps({"request": "go"})}),
    ("progress", {"doc": json.dumps({"request": {"prompt": "x"}, "progress": "half"})}),
    ("state", {"state": "paused"}),
    ("deep", {"doc": "[" * 100_000 + "]" * 100_000}),
]


@pytest.mark.parametrize("name,row", ROWS, ids=[r[0] for r in ROWS])
def test_a_malformed_row_is_kept_skipped_and_logged_once(tmp_path: Path, cli, caplog: pytest.LogCaptureFixture,
                                                         name: str, row: dict[str, Any]) -> None:
    """The same rules for rows another program wrote into the database: never run, never fatal to a command
    or to the loop, kept as they are, logged once."""
    caplog.set_level(logging.WARNING, logger="vidtray.queue")
    qdir = tmp_path / "data" / "queue"
    q = JobQueue(qdir)
    first = q.submit(req("before it"))
    doc = row.get("doc", json.dumps({"request": {"prompt": "bad"}, "created": "x"}))
    _insert_row(qdir, row.get("job_id", name), doc, state=row.get("state", "queued"), seq=row.get("seq", 2),
                owner_pid=row.get("owner_pid"), position=0)  # at the front: the first one a claim looks at
    good = q.submit(req("after it"))
    listed = cli("queue", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)["jobs"]] == [first.id, good.id]
    assert cli("queue", "list").returncode == 0
    assert [j.id for j in q.list()] == [first.id, good.id]
    assert q.claim_next().id == first.id
    assert q.claim_next().id == good.id
    assert q.claim_next() is None
    assert q.recover_stale() == []
    import sqlite3

    with sqlite3.connect(qdir / "queue.sqlite3") as conn:  # kept as it was
        assert conn.execute("SELECT doc FROM jobs WHERE id = ?", (row.get("job_id", name),)).fetchone()[0] == doc
    conn.close()
    warnings = [r for r in caplog.records if "not a valid job" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_a_job_with_a_wrong_id_runs_once_not_for_ever(cfg: Config) -> None:
    # The repro: a job file whose id differs from its name was claimed from its file and written to
    # another, again and again (14 videos in 25 s).
    cfg.queue_dir.mkdir(parents=True)
    (cfg.queue_dir / "copied.json").write_text(json.dumps(_job_doc("original")))
    JobQueue(cfg.queue_dir).submit(req("real"))
    rec = Recorder()
    sup = supervisor(cfg, rec)
    sup.start()
    try:
        rec.wait_for(lambda e: isinstance(e, Done))
        time.sleep(1.0)
    finally:
        sup.stop()
    assert rec.kinds().count("done") == 1


def test_a_queued_request_the_worker_cannot_run_fails_with_the_reason(cfg: Config) -> None:
    q = JobQueue(cfg.queue_dir)
    bad = q.submit({"prompt": "a cat", "frames": "many"})
    good = q.submit(req("fine"))
    rec = Recorder()
    sup = supervisor(cfg, rec)
    sup.start()
    try:
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == good.id)
    finally:
        sup.stop()
    failed = q.get(bad.id)
    assert failed.state == "failed"
    assert failed.error == f"job {bad.id}: frames must be a whole number, got 'many'"


# -- one reader of the queue's files: the queue, the disk check and the tray agree ----------------------


@pytest.mark.parametrize("content,reason", [
    ("{not json", "paused (unreadable pause flag)"),
    ("[1, 2]", "paused"),
    ('{"since": "2025-01-01T00:00:00+00:00"}', "paused"),  # `queue list` said "queue paused: None"
    ('{"reason": "only 0.4 GB free", "since": "x", "by": "disk_check"}', "only 0.4 GB free"),
])
def test_every_reader_of_the_pause_flag_says_the_same(cfg: Config, content: str, reason: str) -> None:
    from vidtray.services.notify import RecordingNotifier
    from vidtray.services.queue import open_queue, read_pause_flag
    from vidtray.tray.link import ServiceLink

    q = open_queue(cfg)
    q.submit(req())
    cfg.paths.pause_flag.parent.mkdir(parents=True, exist_ok=True)
    cfg.paths.pause_flag.write_text(content)
    assert read_pause_flag(cfg.paths.pause_flag)["reason"] == reason
    assert q.paused()["reason"] == reason
    # The tray showed a bare "paused" for a flag that did not parse, where `queue list` named it.
    assert ServiceLink(cfg, RecordingNotifier()).queue_paused() == reason
    assert q.claim_next() is None  # whatever it holds, an existing flag pauses the queue


def test_the_tray_shows_the_jobs_the_queue_would_run_and_changes_nothing(cfg: Config) -> None:
    from vidtray.services.notify import RecordingNotifier
    from vidtray.services.queue import open_queue
    from vidtray.tray.link import ServiceLink

    q = open_queue(cfg)
    good = q.submit(req("good one"))
    # A row the queue refuses (its progress is not an object): the tray must not show it as the running job.
    _insert_row(cfg.queue_dir, "other", json.dumps({"request": {"prompt": "x"}, "progress": "3 of 9"}),
                state="running", seq=5)
    link = ServiceLink(cfg, RecordingNotifier())
    assert link.jobs() == {"job": None, "queued": 1, "queue_user_paused": False}
    assert [j.id for j in q.list()] == [good.id]
    assert q.count("running") == 1  # kept
