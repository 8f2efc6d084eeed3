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

import gen_fixtures
import psutil
import pytest
from conftest import ROOT
from gen_fixtures import SMALL
from helpers import wait_for
from test_queue import Recorder

from vidtray.config import Config
from vidtray.errors import UserError
from vidtray.services.daemon import Daemon
from vidtray.services.protocol import Cancelled, Done, Exiting, Failed, JobClaimed, Progress, WorkerExit
from vidtray.services.queue import JobQueue

# the session-scoped tiny pipeline (gen_fixtures.py), shared by the generation test modules
tiny_pipeline = gen_fixtures.tiny_pipeline

pytestmark = pytest.mark.gen


def job(model: Path, prompt: str, **kw: Any) -> dict[str, Any]:
    return {"prompt": prompt, "model": str(model), **SMALL, **kw}


def test_daemon_generates_cancels_survives_a_killed_worker_and_unloads(isolated_env: dict[str, Path],
                                                                       tiny_pipeline: Path) -> None:
    """Through the Daemon (as `vidtray watch` and the tray run it): the supervisor, the real worker, and
    the watcher importing the same videos the worker already added (one library item each)."""
    cfg = Config.from_mapping({"keep_alive_s": 3.0}, "<test>")
    cfg.partial_dir.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    leftover = cfg.partial_dir / f"zeroscope_20250101-000000_0badf00d.{dead}.mp4"
    leftover.write_bytes(b"from a crashed run")
    rec = Recorder()
    daemon = Daemon(cfg, settle_s=0.2)
    daemon.on_generation_event = rec
    daemon.start()
    try:
        a = daemon.submit(job(tiny_pipeline, "first", seed=1))
        b = daemon.submit(job(tiny_pipeline, "to be cancelled", steps=1000))
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == a.id, timeout=120)
        assert not leftover.exists()  # the worker cleaned the dead run's partial file on start
        rec.wait_for(lambda e: isinstance(e, Progress) and e.job == b.id)
        daemon.cancel(b.id)
        rec.wait_for(lambda e: isinstance(e, Cancelled) and e.job == b.id)
        assert rec.kinds().count("loading") == 1  # the second job reused the loaded pipeline

        c = daemon.submit(job(tiny_pipeline, "worker dies", steps=1000))
        started = rec.wait_for(lambda e: isinstance(e, JobClaimed) and e.job == c.id)
        rec.wait_for(lambda e: isinstance(e, Progress) and e.job == c.id)
        os.kill(started.worker_pid, signal.SIGKILL)
        rec.wait_for(lambda e: isinstance(e, Failed) and e.job == c.id)

        d = daemon.submit(job(tiny_pipeline, "after the restart", seed=2))
        done = rec.wait_for(lambda e: isinstance(e, Done) and e.job == d.id, timeout=120)
        # the restarted worker is idle for keep_alive_s, then exits and frees its memory
        idle = rec.wait_for(lambda e: isinstance(e, Exiting) and "idle" in e.reason, timeout=30)
        rec.wait_for(lambda e: isinstance(e, WorkerExit) and e.code == 0)
        with pytest.raises(UserError, match="prompt is empty"):
            daemon.submit({"prompt": " "})
    finally:
        daemon.stop()

    states = {j.id: j for j in JobQueue(cfg.queue_dir).list()}
    assert states[a.id].state == "done" and states[d.id].state == "done"
    assert states[b.id].state == "cancelled"
    assert states[c.id].state == "failed"
    assert "killed by SIGKILL" in states[c.id].error
    assert rec.kinds().count("worker_started") == 2
    assert idle.reason == "idle for 3s"
    videos = sorted(str(p) for p in cfg.videos_dir.glob("*.mp4"))
    assert videos == sorted([states[a.id].result["path"], done.result["path"]])
    assert list(cfg.partial_dir.iterdir()) == []
    # the worker added each video and the watcher saw it too: still one item per video, from the sidecar
    items = json.loads(cfg.library_file.read_text())["items"]
    assert sorted(i["path"] for i in items) == videos
    assert sorted(i["prompt"] for i in items) == ["after the restart", "first"]
    assert all(i["source"] == "generated" and i["thumbnail"] for i in items)


PARENT = """
import sys, time
from vidtray.services.worker_process import WorkerProcess
w = WorkerProcess(lambda e: print(e.to_line(), flush=True), keep_alive_s=600)
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


def test_a_batch_of_three_runs_with_its_recorded_seeds_and_one_notification(isolated_env: dict[str, Path],
                                                                           tiny_pipeline: Path) -> None:
    """`vidtray queue add PROMPT --count 3 --seed 11` as the daemon runs it with the real worker: three
    videos made with seeds 11, 12, 13 (the sidecars say so) and one notification for the batch."""
    from conftest import run_cli

    from vidtray.services.notify import RecordingNotifier

    cfg = Config.from_mapping({"keep_alive_s": 2.0}, "<test>")
    size = [f"--{k}={v}" for k, v in SMALL.items()]
    res = run_cli("queue", "add", "a red fox", "--count", "3", "--seed", "11", "--model", str(tiny_pipeline),
                  *size, "--json")
    assert res.returncode == 0, res.stderr
    batch = json.loads(res.stdout)
    notifier, rec = RecordingNotifier(), Recorder()
    daemon = Daemon(cfg, notifier, settle_s=0.2)
    daemon.on_generation_event = rec
    daemon.start()
    try:
        for job in batch["jobs"]:
            rec.wait_for(lambda e, j=job: isinstance(e, Done) and e.job == j["id"], timeout=180)
        assert wait_for(lambda: notifier.of_kind("batch_done"))
    finally:
        daemon.stop()
    done = {e.job: e.result for e in rec.events if isinstance(e, Done)}
    results = [done[j["id"]] for j in batch["jobs"]]
    assert [r["seed"] for r in results] == [11, 12, 13]
    assert [json.loads(Path(r["sidecar"]).read_text())["seed"] for r in results] == [11, 12, 13]
    assert notifier.kinds().count("batch_done") == 1 and "video_ready" not in notifier.kinds()
    assert notifier.of_kind("batch_done")[0].body == "3 videos ready"



def test_a_worker_killed_after_denoising_resumes_from_its_latents_with_the_same_frames(
        isolated_env: dict[str, Path], tiny_pipeline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL after the latents are saved and before the video lands (the test hook holds the worker
    there): the supervisor queues the job again, the next worker decodes the saved latents without
    denoising, and the frames are those of an uninterrupted run of the same job."""
    import numpy as np
    from test_render import frames_of

    from vidtray.services.notify import RecordingNotifier
    from vidtray.services.protocol import JobRecovered
    from vidtray.services.worker import latents
    from vidtray.services.worker.render import HOLD_ENV

    cfg = Config.from_mapping({"keep_alive_s": 2.0}, "<test>")
    marker = isolated_env["HOME"] / "held"
    monkeypatch.setenv(HOLD_ENV, str(marker))
    notifier, rec = RecordingNotifier(), Recorder()
    daemon = Daemon(cfg, notifier, settle_s=0.2)
    daemon.on_generation_event = rec
    daemon.start()
    try:
        held = daemon.submit(job(tiny_pipeline, "a fox in the snow", seed=21))
        assert wait_for(marker.exists, timeout=120), "the worker never reached its saved latents"
        assert latents.exists(cfg.partial_dir, held.id)
        pid = int(marker.read_text())
        monkeypatch.delenv(HOLD_ENV)  # the next worker must not hold (the hook is only on the denoise path)
        marker.unlink()
        os.kill(pid, signal.SIGKILL)
        rec.wait_for(lambda e: isinstance(e, JobRecovered) and e.job == held.id and e.state == "queued")
        done = rec.wait_for(lambda e: isinstance(e, Done) and e.job == held.id, timeout=120)
    finally:
        daemon.stop()
    assert not marker.exists()  # the resumed run did not denoise (the hook would have held it again)
    record = JobQueue(cfg.queue_dir).get(held.id)
    assert record.state == "done" and record.attempts == 2
    assert record.result is not None and record.result["resumed_from_latents"] is True
    assert any("resuming from its saved latents" in str(h.get("requeued")) for h in record.history)
    sidecar = json.loads(Path(done.result["sidecar"]).read_text())
    assert sidecar["resumed_from_latents"] is True
    assert not latents.exists(cfg.partial_dir, held.id)
    assert "generation_failed" not in notifier.kinds()

    # an uninterrupted run of the same job, in this process: the same frames
    from vidtray.services.generation import Request
    from vidtray.services.worker.runner import Worker

    reference = Worker(cfg).run_job("uninterrupted", Request.from_dict(job(tiny_pipeline, "a fox in the snow",
                                                                           seed=21)))
    resumed, straight = frames_of(done.result["path"]), frames_of(reference["path"])
    assert len(resumed) == len(straight) == SMALL["frames"]
    assert all(np.array_equal(a, b) for a, b in zip(resumed, straight, strict=True))
