"""The queue's SQLite database as several processes use it: atomic claims, owners that die or whose PID is
reused, the import of the old JSON queue, a locked and a corrupt database, and an idle loop that reads
nothing but a change counter."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import ROOT
from helpers import wait_for
from test_queue import FAKE_WORKER, Recorder, _job_doc, dead_pid

from vidtray.config import Config
from vidtray.errors import OperationFailed
from vidtray.services.notify import RecordingNotifier
from vidtray.services.protocol import Done, JobRecovered
from vidtray.services.queue import DB_NAME, JobQueue, owner_alive
from vidtray.services.supervisor import Supervisor

CLAIMER = """
import json, sys, time
from vidtray.services.queue import JobQueue
q = JobQueue(sys.argv[1])
got = []
print("ready", flush=True)
sys.stdin.readline()  # start together
while True:
    job = q.claim_next()
    if job is None:
        break
    got.append(job.id)
    q.finish(job.id, "done", result={"path": f"/v/{job.id}.mp4"})
print(json.dumps(got), flush=True)
"""


def test_concurrent_claims_from_several_processes_never_run_a_job_twice(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "queue")
    ids = [j.id for j in q.submit_many([{"prompt": f"job {i}"} for i in range(120)])]
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(tmp_path / "queue")], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(4)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        claimed = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    every = [job for got in claimed for job in got]
    assert sorted(every) == sorted(ids)  # each job once, none lost
    assert sum(1 for got in claimed if got) >= 2  # they really competed
    assert {j.state for j in q.list()} == {"done"}
    # each process took its jobs in queue order
    for got in claimed:
        assert got == sorted(got, key=ids.index)


HOLDER = """
import sys, time
from vidtray.services.queue import JobQueue
job = JobQueue(sys.argv[1]).claim_next()
print(job.id, flush=True)
time.sleep(600)
"""


def test_a_killed_owners_job_is_recovered(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "queue")
    job = q.submit({"prompt": "a cat"})
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "queue")], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == job.id
        running = q.get(job.id)
        assert running.state == "running" and running.owner_pid == holder.pid
        assert running.owner_start == pytest.approx(psutil.Process(holder.pid).create_time(), abs=0.01)
        assert q.recover_stale() == []  # its owner lives
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    (recovered,) = q.recover_stale()
    assert recovered.id == job.id and recovered.state == "queued" and recovered.owner_pid is None
    assert recovered.history[-1]["requeued"] == "owner process gone"
    assert q.claim_next().id == job.id


def _set_columns(qdir: Path, job_id: str, **columns: Any) -> None:
    with sqlite3.connect(qdir / DB_NAME) as conn:
        for name, value in columns.items():
            conn.execute(f"UPDATE jobs SET {name} = ? WHERE id = ?", (value, job_id))
    conn.close()


def test_a_reused_pid_does_not_hold_a_job(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "queue")
    job = q.submit({"prompt": "a cat"})
    claimed = q.claim_next()  # owned by this process, which is alive
    assert claimed is not None and owner_alive(claimed)
    # The same PID with another start time: what a reboot that hands this PID to another process looks like.
    _set_columns(tmp_path / "queue", job.id, owner_start=claimed.owner_start - 3600)
    (recovered,) = q.recover_stale()
    assert recovered.id == job.id and recovered.state == "queued"


def test_an_imported_running_job_is_not_held_by_a_pid_that_started_after_it(tmp_path: Path) -> None:
    """Jobs of the old queue have no owner start time: an owner that started after the job did (this test's
    own process, for a job that started in 2020) is another process with the same PID."""
    qdir = tmp_path / "queue"
    qdir.mkdir()
    old = _job_doc("oldjob000001", state="running", owner_pid=os.getpid(), attempts=1,
                   started="2020-01-01T00:00:00+00:00")
    (qdir / "oldjob000001.json").write_text(json.dumps(old))
    mine = _job_doc("mine00000001", state="running", owner_pid=os.getpid(), attempts=1, seq=2,
                    started="2099-01-01T00:00:00+00:00")
    (qdir / "mine00000001.json").write_text(json.dumps(mine))
    q = JobQueue(qdir)
    assert [j.id for j in q.recover_stale()] == ["oldjob000001"]
    assert q.get("oldjob000001").state == "queued" and q.get("mine00000001").state == "running"


def test_old_json_job_files_are_imported_once_and_kept_as_a_backup(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vidtray.queue")
    qdir = tmp_path / "queue"
    qdir.mkdir()
    docs = {
        "aaaaaaaaaaa1": _job_doc("aaaaaaaaaaa1", seq=2, request={"prompt": "second", "seed": 4}),
        "bbbbbbbbbbb2": _job_doc("bbbbbbbbbbb2", seq=1, request={"prompt": "first"}, theirs={"keep": [1]}),
        "ccccccccccc3": _job_doc("ccccccccccc3", seq=3, state="done", result={"path": "/v/c.mp4"},
                                 finished="2025-01-01T00:00:00+00:00"),
    }
    for job_id, doc in docs.items():
        (qdir / f"{job_id}.json").write_text(json.dumps(doc))
    (qdir / "mangled.json").write_text('{"id": "mangled", "state": "queued", "request": "go"}')
    (qdir / "paused.json").write_text('{"reason": "low disk"}')  # the pause flag is not a job
    q = JobQueue(qdir)
    jobs = {j.id: j for j in q.list()}
    assert set(jobs) == set(docs)
    assert [j.id for j in q.active()] == ["bbbbbbbbbbb2", "aaaaaaaaaaa1"]  # the old order (seq)
    assert jobs["aaaaaaaaaaa1"].request == {"prompt": "second", "seed": 4}
    assert jobs["bbbbbbbbbbb2"].extra == {"theirs": {"keep": [1]}}  # unknown keys kept
    assert jobs["ccccccccccc3"].result == {"path": "/v/c.mp4"}
    backup = sorted(p.name for p in (qdir / "json-backup").iterdir())
    assert backup == sorted(f"{i}.json" for i in docs)
    assert json.loads((qdir / "json-backup" / "bbbbbbbbbbb2.json").read_text()) == docs["bbbbbbbbbbb2"]
    assert list(qdir.glob("mangled.json.corrupt-*")) and (qdir / "paused.json").exists()
    assert sorted(p.name for p in qdir.glob("*.json")) == ["paused.json"]
    q.close()
    # Opened again (another process, a restart): nothing is imported twice.
    with JobQueue(qdir) as again:
        assert len(again.list()) == 3
    # A job file an old vidtray still wrote afterwards is picked up on the next open, once.
    (qdir / "ddddddddddd4.json").write_text(json.dumps(_job_doc("ddddddddddd4", seq=9)))
    (qdir / "bbbbbbbbbbb2.json").write_text(json.dumps(docs["bbbbbbbbbbb2"]))  # already in: the database wins
    with JobQueue(qdir) as later:
        assert sorted(j.id for j in later.list()) == sorted([*docs, "ddddddddddd4"])
    assert (qdir / "json-backup" / "ddddddddddd4.json").exists()
    assert (qdir / "json-backup" / "bbbbbbbbbbb2-2.json").exists()
    imports = [r for r in caplog.records if "imported" in r.getMessage()]
    assert [r.getMessage().split()[1] for r in imports] == ["3", "1"]


def test_a_locked_database_waits_then_fails_clearly_and_loses_nothing(tmp_path: Path) -> None:
    qdir = tmp_path / "queue"
    q = JobQueue(qdir, busy_timeout=0.5)
    first = q.submit({"prompt": "first"})
    other = sqlite3.connect(qdir / DB_NAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        started = time.monotonic()
        with pytest.raises(OperationFailed) as err:
            q.submit({"prompt": "second"})
        assert time.monotonic() - started >= 0.45  # it waited first
        assert str(err.value) == (f"the job queue {qdir / DB_NAME} is locked by another process (waited 0.5 s); "
                                  "try again")
        assert [j.id for j in q.list()] == [first.id]  # readers are not blocked
    finally:
        other.execute("ROLLBACK")
        other.close()
    second = q.submit({"prompt": "second"})
    assert [j.id for j in q.list()] == [first.id, second.id]


LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_queue_add_waits_for_a_writer_that_lets_go(cfg: Config, tmp_path: Path, cli) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    assert cli("queue", "add", "first", "--model", str(model)).returncode == 0
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(cfg.queue_dir / DB_NAME), "1.5"], text=True,
                              stdout=subprocess.PIPE)
    assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    started = time.monotonic()
    res = cli("queue", "add", "second", "--model", str(model))
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - started >= 1.0  # it waited for the lock, then queued
    locker.wait(30)
    listed = cli("queue", "list")
    assert "first" in listed.stdout and "second" in listed.stdout


def test_a_corrupt_database_is_set_aside_and_the_queue_starts_empty(cfg: Config, cli) -> None:
    cfg.queue_dir.mkdir(parents=True)
    garbage = b"this is not a database " * 200
    (cfg.queue_dir / DB_NAME).write_bytes(garbage)
    res = cli("queue", "list", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["jobs"] == []
    [moved] = cfg.queue_dir.glob(f"{DB_NAME}.corrupt-*")
    assert moved.read_bytes() == garbage  # kept byte for byte
    assert res.stderr.startswith(f"vidtray: warning: the job queue could not be read; it was moved to {moved}")
    # the queue works again at once
    assert cli("queue", "pause").returncode == 0
    assert "queue paused by you" in cli("queue", "list").stdout


def test_a_database_damaged_inside_is_set_aside_when_it_is_read(tmp_path: Path) -> None:
    qdir = tmp_path / "queue"
    q = JobQueue(qdir)
    q.submit_many([{"prompt": "x" * 500} for _ in range(40)])  # several pages of rows
    q.close()
    with sqlite3.connect(qdir / DB_NAME) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'").fetchone()[0]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(qdir / DB_NAME, "r+b") as f:  # the jobs table's root page, overwritten
        f.seek((root - 1) * page)
        f.write(b"\xff" * page)
    moved: list[Path] = []
    q = JobQueue(qdir, on_corrupt=moved.append)
    assert q.list() == []
    assert len(moved) == 1 and moved[0].name.startswith(f"{DB_NAME}.corrupt-")
    assert q.submit({"prompt": "after"}).state == "queued"


def test_the_supervisor_tells_the_user_about_a_corrupt_queue(cfg: Config) -> None:
    cfg.queue_dir.mkdir(parents=True)
    (cfg.queue_dir / DB_NAME).write_bytes(b"\x00garbage" * 1000)
    notifier = RecordingNotifier()
    rec = Recorder()
    sup = Supervisor(cfg, on_event=rec, poll_s=0.05, notifier=notifier,
                     worker_cmd=[sys.executable, str(FAKE_WORKER), "--keep-alive", "1"])
    sup.start()
    try:
        assert wait_for(lambda: notifier.kinds() == ["queue_corrupt"])
        job = sup.submit({"prompt": "a cat"})
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == job.id)
    finally:
        sup.stop()
    assert "Job queue set aside" == notifier.sent[0].title
    assert "Finished videos are not affected" in notifier.sent[0].body


def test_a_newer_schema_is_left_alone(tmp_path: Path) -> None:
    qdir = tmp_path / "queue"
    JobQueue(qdir).submit({"prompt": "x"})
    with sqlite3.connect(qdir / DB_NAME) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = (qdir / DB_NAME).read_bytes()
    with pytest.raises(OperationFailed, match="made by a newer vidtray"):
        JobQueue(qdir).list()
    assert (qdir / DB_NAME).read_bytes() == before and not list(qdir.glob("*.corrupt-*"))


def test_an_idle_supervisor_reads_no_rows_however_many_jobs_are_kept(cfg: Config) -> None:
    """The old queue parsed every job file twice a second; an idle supervisor now asks only whether anything
    changed (PRAGMA data_version), and another process's submit still wakes it."""
    q = JobQueue(cfg.queue_dir)
    jobs = q.submit_many([{"prompt": f"old {i}"} for i in range(300)])
    for job in jobs:  # finished long ago
        q.update(job.id, lambda j: dataclasses.replace(j, state="done"))
    rec = Recorder()
    sup = Supervisor(cfg, on_event=rec, poll_s=0.05,
                     worker_cmd=[sys.executable, str(FAKE_WORKER), "--keep-alive", "1"])
    sup.start()
    try:
        assert wait_for(lambda: sup._idle_key is not None)
        statements: list[str] = []
        lock = threading.Lock()

        def trace(sql: str) -> None:
            with lock:
                statements.append(sql)

        conn = sup.queue._conn
        assert conn is not None
        conn.set_trace_callback(trace)
        time.sleep(1.0)  # about 20 polls
        with lock:
            idle = list(statements)
        assert idle and set(idle) == {"PRAGMA data_version"}, sorted(set(idle))
        # another process submits: the next poll sees it and the job runs
        code = ("import sys\nfrom vidtray.services.queue import JobQueue\n"
                "print(JobQueue(sys.argv[1]).submit({'prompt': 'from outside'}).id)")
        out = subprocess.run([sys.executable, "-c", code, str(cfg.queue_dir)], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == out)
    finally:
        sup.stop()


def test_a_supervisor_recovers_the_job_of_another_one_that_died(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tray and `vidtray watch` may both run: when one is killed mid-job, the other takes the job over
    (it looks for dead owners every RECOVER_EVERY_S, not only at its start)."""
    import vidtray.services.supervisor as supervisor_module

    monkeypatch.setattr(supervisor_module, "RECOVER_EVERY_S", 0.3)
    q = JobQueue(cfg.queue_dir)
    rec = Recorder()
    sup = Supervisor(cfg, on_event=rec, poll_s=0.05,
                     worker_cmd=[sys.executable, str(FAKE_WORKER), "--keep-alive", "1"])
    sup.start()
    try:
        time.sleep(0.5)
        job = q.submit({"prompt": "orphaned"})
        q.update(job.id, lambda j: dataclasses.replace(
            j, state="running", owner_pid=dead_pid(), attempts=1))
        rec.wait_for(lambda e: isinstance(e, JobRecovered) and e.job == job.id)
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == job.id)
    finally:
        sup.stop()


def test_models_in_use_names_the_models_queued_and_running_jobs_load(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "queue")
    assert q.models_in_use("org/default") == set()
    q.submit({"prompt": "a", "model": "org/one"})
    q.submit({"prompt": "b"})  # the config's model
    done = q.submit({"prompt": "c", "model": "org/finished"})
    q.update(done.id, lambda j: dataclasses.replace(j, state="done"))
    assert q.models_in_use() == {"org/one"}
    assert q.models_in_use("org/default") == {"org/one", "org/default"}
    q.claim_next()
    assert q.models_in_use("org/default") == {"org/one", "org/default"}  # running counts too


OPENER = """
import sys
from vidtray.services.queue import JobQueue
print("ready", flush=True)
sys.stdin.readline()
print(len(JobQueue(sys.argv[1]).list()), flush=True)
"""


def test_processes_opening_the_old_queue_at_once_import_each_job_once(tmp_path: Path) -> None:
    qdir = tmp_path / "queue"
    qdir.mkdir()
    ids = [f"{i:012x}" for i in range(60)]
    for n, job_id in enumerate(ids):
        (qdir / f"{job_id}.json").write_text(json.dumps(_job_doc(job_id, seq=n + 1)))
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(qdir)], cwd=ROOT, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [out.strip() for out, _err in outs] == ["60", "60", "60"], outs
    assert not any("Traceback" in err or "cannot move" in err for _out, err in outs)
    with JobQueue(qdir) as q:
        assert [j.id for j in q.list()] == ids
    assert sorted(p.name for p in (qdir / "json-backup").iterdir()) == sorted(f"{i}.json" for i in ids)
    assert sorted(p.name for p in qdir.iterdir() if p.suffix == ".json") == []
