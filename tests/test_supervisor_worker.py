"""The supervisor with the real worker process on the tiny pipeline: one model load for many jobs, cancel,
a killed worker (job failed, worker restarted), keep-alive exit, and the worker dying with its parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import ROOT
from gen_fixtures import SMALL
from test_queue import Recorder

from vidtray.config import Config
from vidtray.services.supervisor import Supervisor

pytestmark = pytest.mark.gen


def job(model: Path, prompt: str, **kw: Any) -> dict[str, Any]:
    return {"prompt": prompt, "model": str(model), **SMALL, **kw}


def test_supervised_worker_cancel_crash_restart_and_keep_alive(cfg: Config, tiny_pipeline: Path) -> None:
    cfg.partial_dir.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    leftover = cfg.partial_dir / f"zeroscope_20250101-000000_0badf00d.{dead}.mp4"
    leftover.write_bytes(b"from a crashed run")
    rec = Recorder()
    sup = Supervisor(cfg, on_event=rec, keep_alive_s=3.0, poll_s=0.1, max_restarts=2)
    sup.start()
    try:
        a = sup.submit(job(tiny_pipeline, "first", seed=1))
        b = sup.submit(job(tiny_pipeline, "to be cancelled", steps=1000))
        rec.wait_for(lambda e: e.get("event") == "done" and e.get("job") == a["id"], timeout=120)
        assert not leftover.exists()  # the worker cleaned the dead run's partial file on start
        rec.wait_for(lambda e: e.get("event") == "progress" and e.get("job") == b["id"])
        sup.cancel(b["id"])
        rec.wait_for(lambda e: e.get("event") == "cancelled" and e.get("job") == b["id"])
        assert rec.kinds().count("loading") == 1  # the second job reused the loaded pipeline

        c = sup.submit(job(tiny_pipeline, "worker dies", steps=1000))
        started = rec.wait_for(lambda e: e.get("event") == "job_claimed" and e.get("job") == c["id"])
        rec.wait_for(lambda e: e.get("event") == "progress" and e.get("job") == c["id"])
        os.kill(started["worker_pid"], signal.SIGKILL)
        rec.wait_for(lambda e: e.get("event") == "failed" and e.get("job") == c["id"])

        d = sup.submit(job(tiny_pipeline, "after the restart", seed=2))
        done = rec.wait_for(lambda e: e.get("event") == "done" and e.get("job") == d["id"], timeout=120)
        # the restarted worker is idle for keep_alive_s, then exits and frees its memory
        idle = rec.wait_for(lambda e: e.get("event") == "exit" and "idle" in e.get("reason", ""), timeout=30)
        rec.wait_for(lambda e: e.get("event") == "worker_exit" and e.get("code") == 0)
    finally:
        sup.stop()

    states = {j["id"]: j for j in sup.queue.list()}
    assert states[a["id"]]["state"] == "done" and states[d["id"]]["state"] == "done"
    assert states[b["id"]]["state"] == "cancelled"
    assert states[c["id"]]["state"] == "failed"
    assert "killed by SIGKILL" in states[c["id"]]["error"]
    assert rec.kinds().count("worker_started") == 2
    assert idle["reason"] == "idle for 3s"
    videos = sorted(p.name for p in cfg.videos_dir.glob("*.mp4"))
    assert videos == sorted(Path(r).name for r in (states[a["id"]]["result"]["path"], done["result"]["path"]))
    assert list(cfg.partial_dir.iterdir()) == []
    items = json.loads(cfg.library_file.read_text())["items"]
    assert sorted(i["prompt"] for i in items) == ["after the restart", "first"]


PARENT = """
import json, sys, time
from vidtray.services.supervisor import WorkerProcess

# the session-scoped tiny pipeline (gen_fixtures.py), shared by the generation test modules
tiny_pipeline = gen_fixtures.tiny_pipeline
w = WorkerProcess(lambda e: print(json.dumps(e), flush=True), keep_alive_s=600)
w.start()
time.sleep(600)
"""


def test_worker_dies_with_its_parent(cfg: Config) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        hello = json.loads(parent.stdout.readline())  # the worker is up (torch imported, watchdog running)
        assert hello["event"] == "hello"
        worker = psutil.Process(hello["pid"])
        assert worker.ppid() == parent.pid
        parent.kill()
        parent.wait()
        worker.wait(timeout=10)  # raises TimeoutExpired if it outlived its parent
    finally:
        if parent.poll() is None:
            parent.kill()
