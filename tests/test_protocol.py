"""The worker protocol (one module names every command and event), the one event dispatcher, and the typed
job record: round trips, tolerant reading, and one outcome per job whatever the worker does."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_queue import FAKE_WORKER, Recorder

from vidtray.config import Config
from vidtray.services import protocol
from vidtray.services.jobrecord import InvalidJob, Job, JobProgress
from vidtray.services.protocol import (
    COMMANDS,
    SUPERVISOR_EVENTS,
    WORKER_EVENTS,
    CancelCommand,
    Cancelled,
    Done,
    ExitCommand,
    Failed,
    Fatal,
    JobCommand,
    JobQueued,
    Loading,
    Outcome,
    Progress,
    ProtocolError,
    WarningEvent,
    WorkerExit,
    parse_command,
    parse_event,
)
from vidtray.services.queue import JobQueue, read_job
from vidtray.services.supervisor import Supervisor
from vidtray.services.worker_process import JobDispatcher, WorkerListener, WorkerProcess

# -- the protocol --------------------------------------------------------------------------------------


def test_every_event_and_command_goes_through_a_line_and_back() -> None:
    samples = [
        protocol.Hello(pid=7, version="1.0", keep_alive_s=300.0),
        protocol.JobStarted(job="j", params={"prompt": "a cat", "steps": 4}, device="cpu", steps=4),
        protocol.Download(job="j", model="a/b", done=10, total=100),
        Loading(job="j", model="a/b", device="cpu"),
        protocol.Loaded(job="j", model="a/b", device="cpu", dtype="float32", pipeline="P", memory={"offload": "none"},
                        seconds=0.5),
        Progress(job="j", step=2, steps=4, elapsed=1.0, eta=1.0),
        Done(job="j", result={"path": "/v.mp4", "seed": 3, "timings": {"total_s": 1.5}}),
        Failed(job="j", error="no", kind="user"),
        Cancelled(job="j"),
        WarningEvent(message="careful", job="j"),
        protocol.ErrorEvent(message="bad line"),
        Fatal(error="bad config", kind="user"),
        protocol.Exiting(reason="idle for 3s"),
    ]
    assert {type(e) for e in samples} == set(WORKER_EVENTS.values())  # every worker event has a sample
    for event in samples:
        line = event.to_line()
        assert json.loads(line)["event"] == event.NAME
        assert parse_event(line) == event
    for command in (JobCommand(id="j", request={"prompt": "x"}, origin="cli"), CancelCommand(id=None),
                    ExitCommand(cancel=True)):
        assert parse_command(command.to_line()) == command
    # one name, one type: no event name is used twice across the worker's events and the parent's own
    assert not set(WORKER_EVENTS) & set(SUPERVISOR_EVENTS)
    assert {c.NAME for c in COMMANDS.values()} == {"job", "cancel", "exit"}


def test_the_parent_side_events_carry_lists_as_tuples() -> None:
    exit_event = WorkerExit(code=-9, pid=12, stderr=("a", "b"))
    assert json.loads(exit_event.to_line()) == {"event": "worker_exit", "code": -9, "pid": 12, "stderr": ["a", "b"]}
    # a worker cannot claim to be its own supervisor
    assert parse_event(exit_event.to_line()) is None
    assert parse_event(exit_event.to_line(), accept=SUPERVISOR_EVENTS) == exit_event  # type: ignore[arg-type]


@pytest.mark.parametrize("line", [
    "not json at all",
    "[1, 2]",
    '{"no": "event"}',
    '{"event": "teleported", "job": "j"}',  # a newer worker's event
    '{"event": "progress", "job": "j", "step": "3", "steps": 4}',  # a string where a number belongs
    '{"event": "progress", "job": "j", "step": true, "steps": 4}',  # a bool is not a number here
    '{"event": "done", "job": "j", "result": "/v.mp4"}',
    '{"event": "failed", "job": "j", "error": "x", "kind": "mystery"}',
    '{"event": "cancelled"}',  # its job is missing
])
def test_a_line_that_is_not_an_event_is_skipped_and_logged(line: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vidtray.protocol")
    assert parse_event(line) is None
    assert caplog.records  # said so in the log


def test_reading_is_tolerant_of_what_it_does_not_know() -> None:
    # extra fields (a newer worker's) are ignored; optional ones may be left out; an int is a fine float
    assert parse_event('{"event": "progress", "job": "j", "step": 1, "steps": 2, "gpu": "hot"}') == \
        Progress(job="j", step=1, steps=2)
    assert parse_event('{"event": "loaded", "job": "j", "model": "m", "device": "cpu", "dtype": "float32", '
                       '"pipeline": "P", "memory": {}, "seconds": 2}') == \
        protocol.Loaded(job="j", model="m", device="cpu", dtype="float32", pipeline="P", memory={}, seconds=2.0)


def test_a_command_that_cannot_be_read_names_its_job_when_it_has_one() -> None:
    with pytest.raises(ProtocolError, match="unknown command 'dance'") as info:
        parse_command('{"cmd": "dance"}')
    assert info.value.job is None
    with pytest.raises(ProtocolError, match="request has the wrong type") as info:
        parse_command('{"cmd": "job", "id": "j9", "request": "a cat"}')
    assert info.value.job == "j9"
    with pytest.raises(ProtocolError, match="bad command line"):
        parse_command("{")


# -- the dispatcher ---------------------------------------------------------------------------------------


class Listener(WorkerListener):
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def progress(self, event: Progress) -> None:
        self.calls.append(("progress", event.step))

    def loading(self, event: Loading) -> None:
        self.calls.append(("loading", event.model))

    def warning(self, event: WarningEvent) -> None:
        self.calls.append(("warning", event.message))

    def outcome(self, outcome: Outcome, *, worker_died: bool) -> None:
        self.calls.append(("outcome", (outcome, worker_died)))


def test_each_job_gets_one_outcome_and_a_dead_worker_fails_its_job_with_the_reason() -> None:
    listener = Listener()
    d = JobDispatcher(listener)
    d.submitted("a")
    for event in (Loading(job="a", model="m", device="cpu"), Progress(job="a", step=1, steps=2),
                  WarningEvent(message="w"), Done(job="a", result={"path": "/a.mp4"}),
                  protocol.Hello(pid=1)):
        d.dispatch(event)
    assert d.current is None
    d.submitted("b")
    d.dispatch(Progress(job="b", step=1, steps=2))
    d.dispatch(WorkerExit(code=-9, pid=5, stderr=("Traceback (most recent call last):", "  x", "Killed")))
    assert listener.calls == [
        ("loading", "m"), ("progress", 1), ("warning", "w"),
        ("outcome", (Done(job="a", result={"path": "/a.mp4"}), False)),
        ("progress", 1),
        ("outcome", (Failed(job="b", kind="crash", error="the worker process killed by SIGKILL (out of memory, "
                                                          "or killed by hand): Killed"), True)),
    ]
    assert d.exit is not None and d.current is None


def test_a_worker_that_said_why_it_could_not_run_fails_its_job_with_that() -> None:
    listener = Listener()
    d = JobDispatcher(listener)
    d.submitted("a")
    d.dispatch(Fatal(error="settings.toml: keep_alive_s: must be a number", kind="user"))
    d.dispatch(WorkerExit(code=2, pid=5))
    assert listener.calls == [("outcome", (Failed(job="a", error="settings.toml: keep_alive_s: must be a number",
                                                  kind="user"), True))]


def test_an_outcome_that_could_not_be_recorded_is_given_again() -> None:
    class Flaky(WorkerListener):
        def __init__(self) -> None:
            self.tries = 0

        def outcome(self, outcome: Outcome, *, worker_died: bool) -> None:
            self.tries += 1
            if self.tries == 1:
                raise OSError(28, "No space left on device")

    listener = Flaky()
    d = JobDispatcher(listener)
    d.submitted("a")
    gone = WorkerExit(code=1, pid=5)
    with pytest.raises(OSError):
        d.dispatch(gone)
    assert d.current == "a"  # still owed its outcome
    d.dispatch(gone)
    assert listener.tries == 2 and d.current is None


def test_an_idle_worker_exiting_late_fails_nothing_the_next_worker_runs(cfg: Config) -> None:
    """The race: a worker that exits after its keep-alive is reaped before its exit event is read; the
    supervisor starts a new worker for the next job meanwhile. The old worker's exit must not fail it."""
    rec = Recorder()
    sup = Supervisor(cfg, on_event=rec, poll_s=0.05,
                     worker_cmd=[sys.executable, str(FAKE_WORKER), "--keep-alive", "30"])
    old = JobDispatcher(sup)
    sup.start()
    try:
        job = sup.submit({"prompt": "slow one"})
        rec.wait_for(lambda e: isinstance(e, Progress) and e.job == job.id)
        sup._events.put((old, WorkerExit(code=0, pid=1)))  # the earlier worker's late exit
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == job.id, timeout=30)
    finally:
        sup.stop()
    assert JobQueue(cfg.queue_dir).get(job.id).state == "done"
    assert not any(isinstance(e, Failed) for e in rec.events)


def test_a_worker_that_cannot_read_a_job_answers_it(tmp_path: Path) -> None:
    """A job command the worker cannot read still gets its outcome (a Failed naming the job), so nobody
    waits for it for ever; a line that names no job is an error event."""
    proc = subprocess.run(
        [sys.executable, "-m", "vidtray.services.worker", "--keep-alive", "0"],
        input='{"cmd": "job", "id": "j1", "request": "a cat"}\nnonsense\n', capture_output=True, text=True,
        timeout=120, env={**os.environ, "VIDTRAY_DATA_DIR": str(tmp_path / "data")},
        cwd=Path(__file__).resolve().parent.parent)
    events = [parse_event(line) for line in proc.stdout.splitlines()]
    names = [e.NAME for e in events if e is not None]  # the stdin reader may answer before "hello"
    assert sorted(names) == ["error", "exit", "failed", "hello"] and names[-1] == "exit"
    failed = next(e for e in events if isinstance(e, Failed))
    assert failed.job == "j1" and "request has the wrong type" in failed.error


def test_the_cli_and_the_fake_worker_speak_through_the_same_types(cfg: Config) -> None:
    rec = Recorder()
    worker = WorkerProcess(rec, cmd=[sys.executable, str(FAKE_WORKER), "--keep-alive", "5"])
    worker.start()
    try:
        assert worker.submit("j1", {"prompt": "fine"})
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == "j1")
    finally:
        worker.stop()
    kinds = [type(e) for e in rec.events]
    assert kinds[0] is protocol.Hello and Done in kinds and kinds[-1] is WorkerExit


# -- the typed job record -----------------------------------------------------------------------------------


def test_a_job_keeps_keys_it_does_not_know_and_writes_them_back(tmp_path: Path) -> None:
    import sqlite3

    q = JobQueue(tmp_path / "queue")
    job = q.submit({"prompt": "a cat"})
    # Another program adds a key of its own to the job's row (the queue keeps the job as JSON in `doc`).
    db = sqlite3.connect(q.path)
    doc = json.loads(db.execute("SELECT doc FROM jobs WHERE id = ?", (job.id,)).fetchone()[0])
    doc["otherApp"] = {"priority": 5}
    with db:
        db.execute("UPDATE jobs SET doc = ? WHERE id = ?", (json.dumps(doc), job.id))
    db.close()
    q.set_progress(job.id, JobProgress(step=1, steps=4, eta=2.5))
    written = q.get(job.id).to_json()
    assert written["otherApp"] == {"priority": 5}
    assert written["progress"] == {"step": 1, "steps": 4, "eta": 2.5}
    assert list(written)[:5] == ["version", "id", "seq", "state", "request"]
    assert Job.from_json(written).to_json() == written


@pytest.mark.parametrize("change,why", [
    ({"error": 5}, "error has the wrong type"),
    ({"progress": {"step": "3", "steps": 9}}, "progress has the wrong type"),
    ({"history": ["requeued"]}, "history has the wrong type"),
    ({"attempts": -1}, "negative"),
    ({"state": "paused"}, "unknown state"),
])
def test_a_job_with_a_field_of_the_wrong_type_is_not_a_job(tmp_path: Path, change: dict[str, object],
                                                           why: str) -> None:
    doc = {"version": 1, "id": "abc", "seq": 1, "state": "running", "request": {"prompt": "a cat"},
           "progress": {"step": 3, "steps": 9}, **change}
    with pytest.raises(InvalidJob, match=why):
        Job.from_json(doc)
    path = tmp_path / "abc.json"
    path.write_text(json.dumps(doc))
    job, problem = read_job(path)
    assert job is None and problem is not None and why in problem


def test_the_queue_and_the_tray_hand_out_the_same_typed_job(cfg: Config) -> None:
    from vidtray.services.notify import RecordingNotifier
    from vidtray.tray.link import ServiceLink

    q = JobQueue(cfg.queue_dir)
    job = q.submit({"prompt": "a  red\nfox"})
    q.claim_next()
    q.set_progress(job.id, JobProgress(step=2, steps=8))
    view = ServiceLink(cfg, RecordingNotifier()).jobs()["job"]
    assert (view.id, view.prompt, view.step, view.total, view.phase) == (job.id, "a red fox", 2, 8, "running")
    relayed: list[protocol.AnyEvent] = []
    sup = Supervisor(cfg, on_event=relayed.append)
    queued = sup.submit({"prompt": "another"})
    assert relayed == [JobQueued(job=queued.id, prompt="another")]
