"""A real full disk (a small tmpfs filled to ENOSPC): every long-lived loop lives through it, says so once,
and finishes its work when space returns, without a restart; the CLI says one line."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import pytest
import tmpfs
from helpers import wait_for
from media_helpers import write_mp4
from test_queue import FAKE_WORKER, Recorder
from tmpfs import SmallDisk

from vidtray.config import Config
from vidtray.services.library import Change, Library
from vidtray.services.protocol import Done, Progress, SupervisorError
from vidtray.services.queue import JobQueue
from vidtray.services.supervisor import Supervisor
from vidtray.services.watcher import Watcher

small_disk = tmpfs.small_disk  # the fixture


def _errors(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and text in r.getMessage()]


def test_the_supervisor_survives_a_full_disk_and_runs_the_job_when_space_returns(
        small_disk: SmallDisk, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vidtray")
    cfg = Config.from_mapping({"data_dir": str(small_disk.root / "data")}, "<test>", env={})
    job = JobQueue(cfg.queue_dir).submit({"prompt": "a cat"})
    small_disk.fill()
    rec = Recorder()
    sup = Supervisor(cfg, on_event=rec, poll_s=0.05,
                     worker_cmd=[sys.executable, str(FAKE_WORKER), "--keep-alive", "2"])
    sup.start()
    try:
        rec.wait_for(lambda e: isinstance(e, SupervisorError))
        time.sleep(3.5)  # several failed claims (claim_next cannot write the job back)
        assert sup.running
        assert JobQueue(cfg.queue_dir).get(job.id).state == "queued"
        assert len(_errors(caplog, "supervisor loop")) == 1  # said once, not once per try
        assert "No space left on device" in _errors(caplog, "supervisor loop")[0].getMessage()
        small_disk.free()
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == job.id, timeout=90)
        assert JobQueue(cfg.queue_dir).get(job.id).state == "done"
        assert "supervisor_recovered" in rec.kinds()
        assert any("works again" in r.getMessage() for r in caplog.records)
    finally:
        sup.stop()


def test_the_watcher_survives_a_full_disk_and_imports_when_space_returns(
        small_disk: SmallDisk, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vidtray")
    folder = tmp_path / "watched"
    folder.mkdir()
    lib = Library(small_disk.root / "library.json")
    lib.update(lambda doc: Change(doc.setdefault("otherApp", {"keep": True}), True))
    w = Watcher(lib, [folder], settle_s=0.2, retry_s=0.2)
    w.start()
    try:
        assert w.wait_idle()
        small_disk.fill()
        write_mp4(folder / "during.mp4")
        assert wait_for(lambda: _errors(caplog, "the watcher failed"))
        time.sleep(3.5)
        assert w._thread is not None and w._thread.is_alive()
        assert lib.items() == []
        assert len(_errors(caplog, "the watcher failed")) == 1
        assert "No space left on device" in _errors(caplog, "the watcher failed")[0].getMessage()
        small_disk.free()
        assert wait_for(lambda: [Path(i.path).name for i in lib.items()] == ["during.mp4"], timeout=90)
        assert json.loads(lib.path.read_text())["otherApp"] == {"keep": True}
        assert any("works again" in r.getMessage() for r in caplog.records)
        # and it keeps watching
        write_mp4(folder / "after.mp4")
        assert wait_for(lambda: len(lib.items()) == 2)
    finally:
        w.stop()


def test_queue_add_on_a_full_disk_is_one_line_and_exit_1(small_disk: SmallDisk, tmp_path: Path, cli) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    data = small_disk.root / "data"
    env = {"VIDTRAY_DATA_DIR": str(data), "VIDTRAY_LOG_DIR": str(small_disk.root / "logs")}
    assert cli("queue", "add", "first", "--model", str(model), env=env).returncode == 0
    small_disk.fill()
    res = cli("queue", "add", "a cat", "--model", str(model), env=env)
    assert res.returncode == 1, res
    assert res.stderr.splitlines() == [
        f"vidtray: error: cannot write the job queue in {data / 'queue'}: No space left on device"]
    listed = cli("queue", "list", env=env)
    assert listed.returncode == 0 and "first" in listed.stdout and "a cat" not in listed.stdout


def test_a_result_that_cannot_be_recorded_on_a_full_disk_is_recorded_when_space_returns(
        small_disk: SmallDisk, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vidtray")
    cfg = Config.from_mapping({"data_dir": str(small_disk.root / "data")}, "<test>", env={})
    q = JobQueue(cfg.queue_dir)
    job = q.submit({"prompt": "slow one"})  # the fake worker takes ~5 s
    later = q.submit({"prompt": "after it"})
    rec = Recorder()
    sup = Supervisor(cfg, on_event=rec, poll_s=0.05, progress_write_s=0.2,
                     worker_cmd=[sys.executable, str(FAKE_WORKER), "--keep-alive", "30"])
    sup.start()
    try:
        rec.wait_for(lambda e: isinstance(e, Progress) and e.job == job.id)
        small_disk.fill()
        rec.wait_for(lambda e: isinstance(e, SupervisorError), timeout=30)
        time.sleep(7)  # the worker finishes meanwhile; its "done" cannot be written yet
        assert sup.running
        assert JobQueue(cfg.queue_dir).get(job.id).state == "running"
        small_disk.free()
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == later.id, timeout=90)
        assert [JobQueue(cfg.queue_dir).get(j.id).state for j in (job, later)] == ["done", "done"]
        assert len(_errors(caplog, "supervisor loop")) == 1
    finally:
        sup.stop()
