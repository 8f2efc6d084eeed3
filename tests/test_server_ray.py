"""The GPU server for real: Ray in this process, Serve over HTTPS on loopback with a CA made here, CPU slots
running the real worker on the tiny pipeline (in the server's own Hugging Face cache) or the fake worker where
the model is not the point, and desktops (the supervisor, the remote worker, the client) talking to it.

Marked ``slow`` and ``ray``; one Ray runtime for the module. Without Ray (the ``server`` extra) these are
skipped, except under ``CI=1``, where they fail: CI installs the extra.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import gen_fixtures
import pytest
from gen_fixtures import SMALL, TINY_REPO, install_in_hf_cache
from ray_server import RayServer, ray_available
from test_queue import Recorder

from vidtray.server import tls
from vidtray.services.library import open_library
from vidtray.services.protocol import Cancelled, Done, Failed, Progress
from vidtray.services.remote import RemoteClient, UnknownJob, Unreachable
from vidtray.services.supervisor import Supervisor

tiny_pipeline = gen_fixtures.tiny_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory, tiny_pipeline: Path):
    if not ray_available():
        if os.environ.get("CI"):
            pytest.fail("Ray Serve is not installed: CI installs the 'server' extra and runs these tests")
        pytest.skip("Ray Serve is not installed (pip install -e '.[server]')")
    server = RayServer.start(tmp_path_factory.mktemp("ray-server"))
    try:
        install_in_hf_cache(tiny_pipeline, server.hf_hub)  # the server's own cache holds the model
        server.deploy("fake", slots=2, fake=True)
        server.deploy("real", slots=1, keep_alive_s=4.0)
        yield server
    finally:
        server.close()


def tiny(prompt: str, **kw: Any) -> dict[str, Any]:
    return {"prompt": prompt, "model": TINY_REPO, **SMALL, **kw}


def events_of(client: RemoteClient, job_id: str, after: int = 0) -> list[tuple[int, Any]]:
    return list(client.events(job_id, after))


def wait_until(pred: Any, timeout: float = 60.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


def slot_files(server: RayServer, app: str, index: int = 0) -> list[str]:
    videos = server.slot_dir(app, index) / "data" / "generated" / "videos"
    return sorted(str(p.relative_to(videos)) for p in videos.rglob("*") if p.is_file()) if videos.exists() else []


def supervisor(cfg: Any, rec: Recorder, **kw: Any) -> Supervisor:
    return Supervisor(cfg, on_event=rec, poll_s=0.05, remote_check_s=1.0, **kw)


# -- the cases -----------------------------------------------------------------------------------------


def test_end_to_end_into_the_library(ray_server: RayServer, tmp_path: Path) -> None:
    cfg = ray_server.desktop(tmp_path, "real", executor="remote")
    rec = Recorder()
    sup = supervisor(cfg, rec)
    sup.start()
    try:
        job = sup.submit(tiny("a red fox in the snow", seed=5))
        assert job.executor == "remote"
        done = rec.wait_for(lambda e: isinstance(e, Done) and e.job == job.id, timeout=180)
    finally:
        sup.stop()
    assert any(isinstance(e, Progress) and e.job == job.id for e in rec.events)
    path = Path(done.result["path"])
    assert path.parent == cfg.videos_dir and path.stat().st_size > 0
    sidecar = json.loads(Path(done.result["sidecar"]).read_text())
    assert sidecar["prompt"] == "a red fox in the snow" and sidecar["seed"] == 5 and sidecar["model"] == TINY_REPO
    assert sidecar["device"] == "cpu" and sidecar["remote"]["server"] == ray_server.url("real")
    assert sidecar["remote"]["index"] == 0 and sidecar["remote"]["node"]
    item = open_library(cfg).get(done.result["library_id"])
    assert item.path == str(path) and item.data["width"] == 32 and item.data["source"] == "generated"
    assert sup.queue.get(job.id).state == "done"
    # Fetched, then deleted there: the server keeps nothing of it, and never had a library.
    assert slot_files(ray_server, "real") == []
    assert not (ray_server.slot_dir("real") / "data" / "library.json").exists()
    assert not (ray_server.slot_dir("real") / "data" / "thumbnails").exists()


def test_cancel_mid_run_leaves_nothing_on_either_side(ray_server: RayServer, tmp_path: Path) -> None:
    cfg = ray_server.desktop(tmp_path, "real")
    rec = Recorder()
    sup = supervisor(cfg, rec)
    sup.start()
    try:
        job = sup.submit(tiny("to be cancelled", steps=400), executor="remote")
        rec.wait_for(lambda e: isinstance(e, Progress) and e.job == job.id and e.step >= 2, timeout=180)
        sup.cancel(job.id)
        rec.wait_for(lambda e: isinstance(e, Cancelled) and e.job == job.id, timeout=60)
        assert sup.queue.get(job.id).state == "cancelled"
    finally:
        sup.stop()
    assert not [p for p in cfg.videos_dir.rglob("*") if p.is_file()]  # nothing here, .partial included
    assert slot_files(ray_server, "real") == []  # no video, no sidecar, nothing in .partial/
    health = ray_server.client("real").health()
    assert health["jobs"] == 0 and health["slots"][0]["job"] is None


def test_two_slots_run_two_jobs_at_once_while_a_third_waits(ray_server: RayServer) -> None:
    client = ray_server.client("fake")
    jobs = [client.submit({"prompt": f"slow {i}", "model": "org/fake"}, key=f"three-{i}") for i in range(3)]
    states = wait_until(lambda: (s := [client.job(j.id).state for j in jobs]) == ["running", "running", "queued"]
                        and s, timeout=20)
    assert states == ["running", "running", "queued"]
    health = client.health()
    assert health["running"] == 2 and health["queued"] == 1
    assert {s["job"] for s in health["slots"]} == {jobs[0].id, jobs[1].id}
    outcomes = {}
    for j in jobs:
        outcomes[j.id] = events_of(client, j.id)[-1][1]
    assert all(isinstance(o, Done) for o in outcomes.values())
    docs = [client.job(j.id).doc for j in jobs]
    first_end = min(docs[0]["finished"], docs[1]["finished"])
    assert docs[2]["started"] >= first_end - 0.05  # it waited for a free slot
    assert docs[0]["started"] < docs[1]["finished"] and docs[1]["started"] < docs[0]["finished"]  # at once
    for j in jobs:
        client.delete(j.id)


def test_a_dropped_event_stream_resumes(ray_server: RayServer) -> None:
    client = ray_server.client("fake")
    job = client.submit({"prompt": "slow resume", "model": "org/fake"}, key="resume")
    first = []
    for seq, event in client.events(job.id):
        first.append((seq, event))
        if len(first) == 3:
            break  # the connection goes (the generator closes it)
    rest = events_of(client, job.id, after=first[-1][0])
    seqs = [s for s, _ in first + rest]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, nothing twice
    assert isinstance(rest[-1][1], Done)
    assert [e.step for _, e in first + rest if isinstance(e, Progress)] == list(range(1, 101))
    # Jobs are not tied to a request: the job ran on while nobody listened.
    client.delete(job.id)


def test_tokens_ca_and_plain_http(ray_server: RayServer, tmp_path: Path) -> None:
    alice = ray_server.client("fake")
    job = alice.submit({"prompt": "quick", "model": "org/fake"}, key="auth")
    events_of(alice, job.id)
    ctx = ssl.create_default_context(cafile=str(ray_server.ca))

    def call(method: str, path: str, token: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        conn = http.client.HTTPSConnection("127.0.0.1", ray_server.port, context=ctx, timeout=10)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request(method, f"/fake{path}", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return resp.status, json.loads(body or b"{}"), dict(resp.getheaders())

    for method, path in [("GET", "/v1/health"), ("GET", f"/v1/jobs/{job.id}"), ("GET", f"/v1/jobs/{job.id}/video"),
                         ("GET", f"/v1/jobs/{job.id}/events"), ("DELETE", f"/v1/jobs/{job.id}"),
                         ("POST", "/v1/jobs"), ("GET", "/v1/nowhere")]:
        for token in (None, "vt1_wrong", ray_server.tokens["alice"][:-1]):
            status, doc, headers = call(method, path, token)
            assert status == 401 and doc["code"] == "unauthorized", (method, path, token)
            assert headers.get("www-authenticate", headers.get("WWW-Authenticate")) == 'Bearer realm="vidtray"'
    # Another person's token: their jobs only.
    with pytest.raises(UnknownJob):
        ray_server.client("fake", "bob").job(job.id)
    assert alice.job(job.id).state == "done"
    # A CA that did not sign the server's certificate: refused by the desktop, before any token is sent.
    other = tls.self_signed(tmp_path / "other", ["localhost", "127.0.0.1"])
    with pytest.raises(Unreachable) as info:
        RemoteClient(ray_server.url("fake"), ray_server.tokens["alice"], str(other.ca)).health()
    assert info.value.certificate
    # Plain HTTP on the port: no HTTP answer at all.
    conn = http.client.HTTPConnection("127.0.0.1", ray_server.port, timeout=10)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        conn.request("GET", "/fake/v1/health", headers={"Authorization": f"Bearer {ray_server.tokens['alice']}"})
        conn.getresponse()
    conn.close()
    # A revoked token stops working at the next request, without a restart.
    from vidtray.server.tokens import TokenStore

    store = TokenStore(ray_server.cfg.paths.server_tokens_file)
    carol = store.create("carol")
    assert call("GET", "/v1/health", carol)[0] == 200
    store.revoke("carol")
    assert call("GET", "/v1/health", carol)[0] == 401
    alice.delete(job.id)


def test_requests_are_checked_by_the_local_schema(ray_server: RayServer) -> None:
    from vidtray.services.remote import BadRequest

    client = ray_server.client("fake")
    with pytest.raises(BadRequest, match="width"):
        client.submit({"prompt": "x", "model": "org/fake", "width": 33}, key="bad-width")
    with pytest.raises(BadRequest, match="prompt"):
        client.submit({"model": "org/fake"}, key="no-prompt")
    with pytest.raises(BadRequest):
        client.submit({"prompt": "x", "model": "org/fake", "what": 1}, key="unknown-key")
    assert client.health()["jobs"] == 0


def test_keep_alive_unloads_and_the_next_job_reloads(ray_server: RayServer) -> None:
    client = ray_server.client("real")
    first = client.submit(tiny("first load"), key="keep-1")
    names = [e.NAME for _, e in events_of(client, first.id)]
    assert "loading" in names and names[-1] == "done"
    pid = client.health()["slots"][0]["worker_pid"]
    assert pid is not None
    # keep_alive_s = 4 on this service: the worker leaves, giving the memory back.
    wait_until(lambda: client.health()["slots"][0]["worker_pid"] is None, timeout=60, every=0.5)
    second = client.submit(tiny("loads again"), key="keep-2")
    names = [e.NAME for _, e in events_of(client, second.id)]
    assert "loading" in names and names[-1] == "done"
    assert client.health()["slots"][0]["worker_pid"] not in (None, pid)
    client.delete(first.id)
    client.delete(second.id)


def test_a_killed_worker_child_fails_its_job_and_the_slot_recovers(ray_server: RayServer) -> None:
    client = ray_server.client("fake")
    job = client.submit({"prompt": "slow victim", "model": "org/fake"}, key="victim")
    stream = client.events(job.id)
    next(stream)  # running: its first step is done
    slot = next(s for s in client.health()["slots"] if s["job"] == job.id)
    os.kill(slot["worker_pid"], signal.SIGKILL)
    outcome = [e for _, e in stream][-1]
    assert isinstance(outcome, Failed) and outcome.kind == "crash"
    assert "killed by SIGKILL" in outcome.error and outcome.job == job.id
    # The same slot takes the next job (a new worker), and it finishes.
    after = client.submit({"prompt": "after the kill", "model": "org/fake"}, key="after-kill")
    assert isinstance(events_of(client, after.id)[-1][1], Done)
    assert client.job(after.id).doc["slot"]["index"] == slot["index"]  # the lowest free slot: the same one
    assert client.health()["slots"][slot["index"]]["worker_pid"] not in (None, slot["worker_pid"])
    client.delete(job.id)
    client.delete(after.id)


def test_a_server_restart_mid_job_and_the_desktop_retries(ray_server: RayServer, tmp_path: Path) -> None:
    cfg = ray_server.desktop(tmp_path, "fake")
    rec = Recorder()
    sup = supervisor(cfg, rec, remote_retry_s=120.0)
    sup.start()
    try:
        # 10 s of steps: the restart (about 2 s until the service is gone) comes well before the end.
        job = sup.submit({"prompt": "slower, across a restart", "model": "org/fake"}, executor="remote")
        rec.wait_for(lambda e: isinstance(e, Progress) and e.job == job.id and e.step >= 5, timeout=60)
        restart = threading.Thread(target=lambda: (ray_server.services["fake"].stop(),
                                                   ray_server.deploy("fake", slots=2, fake=True)))
        restart.start()
        restart.join(120)
        done = rec.wait_for(lambda e: isinstance(e, Done) and e.job == job.id, timeout=120)
    finally:
        sup.stop()
    steps = [e.step for e in rec.events if isinstance(e, Progress) and e.job == job.id]
    assert steps.count(1) == 2 and steps[-1] == 200  # submitted again to the restarted server, and finished
    assert Path(done.result["path"]).is_file() and sup.queue.get(job.id).state == "done"
