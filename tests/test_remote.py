"""The desktop side of a GPU server (``vidtray.services.remote``, ``remote_worker``, the supervisor's remote
executor) against a stand-in server over real HTTPS (``remote_fake.FakeServer``): fast, no Ray. The real
server is tested in ``test_server_ray.py``."""

from __future__ import annotations

import json
import queue
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from media_helpers import write_mp4
from remote_fake import FakeServer
from test_queue import FAKE_WORKER, Recorder, RecordingNotifier

from vidtray.config import Config
from vidtray.errors import UserError
from vidtray.server import tls
from vidtray.services.library import open_library
from vidtray.services.protocol import AnyEvent, Cancelled, Done, Download, Failed, Progress, WorkerExit
from vidtray.services.remote import RemoteClient, Unreachable, probe
from vidtray.services.remote_worker import RemoteWorker, remote_request
from vidtray.services.supervisor import Supervisor
from vidtray.services.worker_process import JobDispatcher, WorkerListener

MODEL = "org/text-to-video"


def steps(n: int) -> list[dict[str, Any]]:
    return [{"event": "progress", "step": i, "steps": n} for i in range(1, n + 1)]


def done() -> dict[str, Any]:
    return {"event": "done", "result": {"path": "/srv/slot0/v.mp4", "seed": 7, "device": "cuda", "dtype": "float16",
                                        "revision": "abc", "timings": {"denoise_s": 1.0}}}


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_mp4(tmp_path_factory.mktemp("v") / "v.mp4", frames=8, width=64, height=48).read_bytes()


@pytest.fixture
def server(tmp_path: Path):
    srv = FakeServer(tmp_path / "server")
    yield srv
    srv.close()


def remote_cfg(tmp_path: Path, server: FakeServer, **extra: Any) -> Config:
    token = tmp_path / "token"
    token.write_text(server.token + "\n")
    cfg = Config.from_mapping({"remote": {"url": server.url, "token_file": str(token),
                                          "ca_file": str(server.files.ca)}, **extra}, "<test>")
    cfg.videos_dir.mkdir(parents=True, exist_ok=True)
    return cfg


class Outcomes(WorkerListener):
    def __init__(self) -> None:
        self.progress_seen: list[Progress] = []
        self.done: queue.Queue[Any] = queue.Queue()

    def progress(self, event: Progress) -> None:
        self.progress_seen.append(event)

    def outcome(self, outcome: Any, *, worker_died: bool) -> None:
        self.done.put((outcome, worker_died))


def run_one(cfg: Config, request: dict[str, Any], *, cancel_after: float | None = None,
            **kw: Any) -> tuple[Any, Outcomes, list[AnyEvent]]:
    """One job through a RemoteWorker and the shared JobDispatcher, as `vidtray generate --on remote` runs it."""
    listener = Outcomes()
    dispatcher = JobDispatcher(listener)
    seen: list[AnyEvent] = []

    def sink(event: AnyEvent) -> None:
        seen.append(event)
        dispatcher.dispatch(event)

    worker = RemoteWorker(sink, cfg, **kw)
    worker.start()
    dispatcher.submitted("local-1")
    worker.submit("local-1", request)
    if cancel_after is not None:
        time.sleep(cancel_after)
        worker.cancel("local-1")
    outcome, died = listener.done.get(timeout=30)
    assert not died
    worker.stop()
    assert isinstance(seen[-1], WorkerExit)
    return outcome, listener, seen


def test_a_remote_job_lands_in_the_library_with_its_server_in_the_sidecar(tmp_path, server, video) -> None:
    download = {"event": "download", "model": MODEL, "done": 512, "total": 1024}
    server.script("a fox", events=[download, *steps(3), done()], video=video)
    cfg = remote_cfg(tmp_path, server)
    outcome, listener, seen = run_one(cfg, {"prompt": "a fox", "model": MODEL})
    assert isinstance(outcome, Done) and outcome.job == "local-1"
    # The server's model download shows here as this job's.
    assert Download(job="local-1", model=MODEL, done=512, total=1024) in seen
    assert [(p.job, p.step) for p in listener.progress_seen] == [("local-1", 1), ("local-1", 2), ("local-1", 3)]
    path = Path(outcome.result["path"])
    assert path.parent == cfg.videos_dir and path.read_bytes() == video
    assert path.name.startswith("text-to-video_") and path.suffix == ".mp4"
    sidecar = json.loads(Path(outcome.result["sidecar"]).read_text())
    assert sidecar["prompt"] == "a fox" and sidecar["seed"] == 7 and sidecar["device"] == "cuda"
    assert sidecar["remote"]["server"] == server.url and sidecar["remote"]["device_name"] == "Fake GPU"
    assert sidecar["remote"]["node"] == "gpu-box"
    item = open_library(cfg).get(outcome.result["library_id"])
    assert item.path == str(path) and item.data["source"] == "generated" and item.data["width"] == 64
    assert item.data["prompt"] == "a fox" and item.data["seed"] == 7 and item.data["duration_s"] == 1.0
    assert Path(item.data["thumbnail"]).is_file()
    assert not list(cfg.partial_dir.iterdir())
    assert server.jobs == {}  # fetched, then deleted on the server


def test_the_request_carries_this_machines_defaults_not_its_device(tmp_path, server) -> None:
    cfg = remote_cfg(tmp_path, server, model="org/default-model", generation={"steps": 12, "frames": 24})
    req = remote_request(cfg, {"prompt": "x", "model": None, "steps": None, "frames": None, "device": "cpu"})
    # steps was changed in [generation]: sent; frames is the built-in default: the server's family decides.
    assert req["model"] == "org/default-model" and req["steps"] == 12 and req["frames"] is None
    assert req["device"] is None


def test_a_dropped_event_stream_resumes_where_it_stopped(tmp_path, server, video) -> None:
    server.script("drop", events=[*steps(6), done()], video=video, drop_after=2)
    outcome, listener, _ = run_one(remote_cfg(tmp_path, server), {"prompt": "drop", "model": MODEL})
    assert isinstance(outcome, Done)
    assert [p.step for p in listener.progress_seen] == [1, 2, 3, 4, 5, 6]  # none lost, none twice
    resumed = [path for method, path in server.requests if "/events?after=" in path]
    assert resumed[0].endswith("after=0") and resumed[1].endswith("after=2")


def test_a_restarted_server_gets_the_job_again_a_bounded_number_of_times(tmp_path, server, video) -> None:
    server.script("forgotten", events=[*steps(4), done()], video=video, forget_after=2)
    outcome, _, _ = run_one(remote_cfg(tmp_path, server), {"prompt": "forgotten", "model": MODEL})
    assert isinstance(outcome, Done) and server.submits == 2
    # A server that forgets it every time: at most max_submits tries, then the job fails with the reason.
    script = server.script("always", events=[*steps(4), done()], video=video)
    server.submits = 0
    original = server._events

    def forget_each_time(h, job, after):  # noqa: ANN001
        script.forget_after = 1
        return original(h, job, after)

    server._events = forget_each_time
    outcome, _, _ = run_one(remote_cfg(tmp_path, server), {"prompt": "always", "model": MODEL}, max_submits=3)
    assert isinstance(outcome, Failed) and server.submits == 3
    assert "lost the job 3 times" in outcome.error


def test_a_server_that_stays_away_fails_the_job_after_the_retry_window(tmp_path, server) -> None:
    server.script("away", events=[*steps(2), done()])
    server.down = True
    started = time.monotonic()
    outcome, _, _ = run_one(remote_cfg(tmp_path, server), {"prompt": "away", "model": MODEL}, retry_s=1.5)
    assert isinstance(outcome, Failed) and outcome.kind == "failed"
    assert "cannot reach" in outcome.error and "giving up" in outcome.error
    assert 1.5 <= time.monotonic() - started < 15


def test_a_server_back_within_the_window_finishes_the_job(tmp_path, server, video) -> None:
    server.script("back", events=[*steps(2), done()], video=video)
    server.down = True
    threading.Timer(1.0, lambda: setattr(server, "down", False)).start()
    outcome, _, _ = run_one(remote_cfg(tmp_path, server), {"prompt": "back", "model": MODEL}, retry_s=30)
    assert isinstance(outcome, Done)


def test_a_refused_token_and_a_refused_request_are_not_retried(tmp_path, server) -> None:
    server.script("x", events=[done()])
    cfg = remote_cfg(tmp_path, server)
    Path(cfg.remote.token_file).write_text("vt1_not-a-token")
    outcome, _, _ = run_one(cfg, {"prompt": "x", "model": MODEL})
    assert isinstance(outcome, Failed) and "refused the token" in outcome.error
    assert server.submits == 0 and len(server.requests) == 1
    cfg = remote_cfg(tmp_path, server)
    outcome, _, _ = run_one(cfg, {"prompt": "x", "model": MODEL, "frames": 7})
    assert isinstance(outcome, Failed) and outcome.kind == "user" and "frames" in outcome.error


def test_a_damaged_download_is_fetched_again_and_never_lands_damaged(tmp_path, server, video) -> None:
    server.script("damaged", events=[done()], video=video, damage=True)
    cfg = remote_cfg(tmp_path, server)
    outcome, _, _ = run_one(cfg, {"prompt": "damaged", "model": MODEL})
    assert isinstance(outcome, Done) and Path(outcome.result["path"]).read_bytes() == video
    assert [p for m, p in server.requests if p.endswith("/video")].__len__() == 2


def test_cancel_reaches_the_server_and_leaves_nothing_here(tmp_path, server, video) -> None:
    server.script("slow", events=[*steps(2), done()], video=video, hold=threading.Event())
    cfg = remote_cfg(tmp_path, server)
    outcome, _, _ = run_one(cfg, {"prompt": "slow", "model": MODEL}, cancel_after=0.5)
    assert isinstance(outcome, Cancelled) and outcome.job == "local-1"
    assert any(m == "POST" and p.endswith("/cancel") for m, p in server.requests)
    assert list(cfg.videos_dir.glob("*.mp4")) == [] and list(cfg.videos_dir.glob("*.json")) == []
    assert server.jobs == {}  # deleted on the server too


def test_a_wrong_ca_is_an_error_at_once_and_plain_http_is_not_a_server_url(tmp_path, server) -> None:
    other = tls.self_signed(tmp_path / "other-ca", ["localhost", "127.0.0.1"])
    client = RemoteClient(server.url, server.token, str(other.ca))
    with pytest.raises(Unreachable) as info:
        client.health()
    assert info.value.certificate and "CA file does not vouch" in str(info.value)
    server.script("x", events=[done()])
    cfg = remote_cfg(tmp_path, server)
    cfg2 = Config.from_mapping({"remote": {"url": server.url, "token_file": cfg.remote.token_file,
                                           "ca_file": str(other.ca)}}, "<test>")
    outcome, _, _ = run_one(cfg2, {"prompt": "x", "model": MODEL})
    assert isinstance(outcome, Failed) and "CA file" in outcome.error and server.submits == 0
    with pytest.raises(UserError, match="https"):
        RemoteClient(server.url.replace("https", "http"), server.token)
    # The system's CAs do not know the server's private CA either.
    with pytest.raises(Unreachable):
        RemoteClient(server.url, server.token).health()


def test_probe_says_what_a_person_needs(tmp_path, server) -> None:
    cfg = remote_cfg(tmp_path, server)
    state, line, doc = probe(cfg.remote)
    assert state == "ok" and line == "1 slot(s) (Fake GPU), 0 busy, 0 queued" and doc is not None
    server.down = True
    state, line, _ = probe(cfg.remote, timeout=2)
    assert state == "unreachable" and "cannot reach" in line
    server.down = False
    Path(cfg.remote.token_file).write_text("vt1_revoked")
    assert probe(cfg.remote)[0] == "refused"
    Path(cfg.remote.token_file).unlink()
    assert probe(cfg.remote)[:2] == ("misconfigured", f"cannot read the server token file {cfg.remote.token_file}: "
                                                      "No such file or directory")


# -- the supervisor ---------------------------------------------------------------------------------------------


def req(prompt: str) -> dict[str, Any]:
    return {"prompt": prompt, "model": MODEL, "frames": 8, "steps": 2, "height": 48, "width": 64}


def test_remote_jobs_wait_for_an_unreachable_server_with_one_notification(tmp_path, server, video) -> None:
    server.script("remote one", events=[*steps(2), done()], video=video)
    server.script("remote two", events=[*steps(2), done()], video=video)
    server.down = True
    cfg = remote_cfg(tmp_path, server)
    rec, notifier = Recorder(), RecordingNotifier()
    sup = Supervisor(cfg, on_event=rec, notifier=notifier, poll_s=0.05, remote_check_s=0.4,
                     worker_cmd=[sys.executable, str(FAKE_WORKER), "--keep-alive", "5"])
    sup.start()
    try:
        a = sup.submit(req("remote one"), executor="remote")
        b = sup.submit(req("remote two"), executor="remote")
        local = sup.submit(req("here"), executor="local")
        # The local job behind the waiting remote ones runs; the remote ones wait.
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == local.id)
        time.sleep(1.0)
        assert sup.queue.get(a.id).state == "queued" and sup.queue.get(b.id).state == "queued"
        assert [c[0] for c in notifier.calls].count("server_unreachable") == 1
        assert next(args for name, args in notifier.calls if name == "server_unreachable")[0] == server.url
        server.down = False
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == b.id, timeout=30)
        assert sup.queue.get(a.id).state == "done"
        result = sup.queue.get(a.id).result
        assert result is not None and Path(result["path"]).parent == cfg.videos_dir
        assert [c[0] for c in notifier.calls].count("server_unreachable") == 1
    finally:
        sup.stop()


def test_with_remote_fallback_local_they_run_here(tmp_path, server) -> None:
    server.down = True
    cfg = remote_cfg(tmp_path, server, executor="remote", remote_fallback="local")
    rec, notifier = Recorder(), RecordingNotifier()
    sup = Supervisor(cfg, on_event=rec, notifier=notifier, poll_s=0.05, remote_check_s=0.4,
                     worker_cmd=[sys.executable, str(FAKE_WORKER), "--keep-alive", "5"])
    sup.start()
    try:
        job = sup.submit(req("anywhere"))
        assert job.executor == "remote"  # recorded from the config
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == job.id)
        assert sup.queue.get(job.id).result == {"path": f"/videos/{job.id}.mp4", "seed": 1}  # the local worker's
        assert [c[0] for c in notifier.calls] == ["server_unreachable", "video_ready"]
        assert notifier.calls[0][1][2] == "local"
    finally:
        sup.stop()


def test_a_remote_job_without_a_usable_token_file_fails_with_the_reason(tmp_path, server) -> None:
    cfg = remote_cfg(tmp_path, server)
    Path(cfg.remote.token_file).unlink()
    rec = Recorder()
    sup = Supervisor(cfg, on_event=rec, poll_s=0.05, remote_check_s=0.4)
    sup.start()
    try:
        job = sup.submit(req("no token"), executor="remote")
        failed = rec.wait_for(lambda e: isinstance(e, Failed) and e.job == job.id)
        assert "cannot read the server token file" in failed.error
        assert sup.queue.get(job.id).state == "failed"
    finally:
        sup.stop()


def test_cancel_from_the_queue_reaches_a_remote_job(tmp_path, server, video) -> None:
    server.script("long", events=[*steps(2), done()], video=video, hold=threading.Event())
    cfg = remote_cfg(tmp_path, server)
    rec = Recorder()
    sup = Supervisor(cfg, on_event=rec, poll_s=0.05, remote_check_s=0.4)
    sup.start()
    try:
        job = sup.submit(req("long"), executor="remote")
        rec.wait_for(lambda e: isinstance(e, Progress) and e.job == job.id and e.step == 2)
        sup.cancel(job.id)
        rec.wait_for(lambda e: isinstance(e, Cancelled) and e.job == job.id)
        assert sup.queue.get(job.id).state == "cancelled"
        assert server.jobs == {}
    finally:
        sup.stop()


def test_ssl_context_pins_the_ca_only(tmp_path) -> None:
    from vidtray.services.remote import ssl_context

    files = tls.self_signed(tmp_path / "tls", ["localhost"])
    ctx = ssl_context(str(files.ca))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert len(ctx.get_ca_certs()) == 1  # this CA, not the system's


def test_doctor_says_whether_the_server_answers(tmp_path, server, cli) -> None:
    cfg = remote_cfg(tmp_path, server, executor="remote")
    conf = tmp_path / "c.toml"
    conf.write_text(f'executor = "remote"\n[remote]\nurl = "{server.url}"\ntoken_file = "{cfg.remote.token_file}"\n'
                    f'ca_file = "{cfg.remote.ca_file}"\n')
    Path(cfg.remote.token_file).chmod(0o644)
    doc = json.loads(cli("--config", str(conf), "doctor", "--json").stdout)["remote"]
    assert doc["state"] == "ok" and doc["reachable"] is True and doc["health"]["slots"][0]["device_name"] == "Fake GPU"
    assert doc["token_file_warning"].endswith("is readable by others (chmod 600 it)")
    server.down = True
    line = next(x for x in cli("--config", str(conf), "doctor").stdout.splitlines() if x.startswith("GPU server"))
    assert line.startswith(f"GPU server {server.url} (executor = remote): UNREACHABLE - cannot reach {server.url}")
    assert "remote jobs wait until it answers" in line


def test_the_library_page_says_which_server_made_a_video(tmp_path, server, video) -> None:
    from vidtray.services.recipe import recipe_details
    from vidtray.web.views import recipe_rows

    server.script("page", events=[done()], video=video)
    cfg = remote_cfg(tmp_path, server)
    outcome, _, _ = run_one(cfg, {"prompt": "page", "model": MODEL})
    item = open_library(cfg).get(outcome.result["library_id"])
    recipe = recipe_details(item.path)
    assert recipe is not None
    rows = dict(recipe_rows(type("Row", (), {"item": item.data})(), recipe))
    assert rows["Made on"] == f"{server.url} (slot 0; Fake GPU, gpu-box)" and rows["Device"] == "cuda"
