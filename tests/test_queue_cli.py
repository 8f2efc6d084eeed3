"""Batches and queue control as a user runs them: ``vidtray queue add --count/--seeds/--prompts-file``,
``pause``, ``resume``, ``move``, ``edit``, ``retry`` and ``clear`` in fresh processes; a batch run by the
supervisor (with the fake worker) and its one notification."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import run_cli
from gen_fixtures import write_tokenizer_files
from test_queue import FAKE_WORKER, Recorder

from vidtray.config import Config
from vidtray.services.notify import RecordingNotifier
from vidtray.services.protocol import Done, Failed
from vidtray.services.queue import DB_NAME, JobQueue
from vidtray.services.supervisor import Supervisor


@pytest.fixture
def model(tmp_path: Path) -> str:
    """A zeroscope-style pipeline folder with a CLIP tokenizer of single letters (one token each), 77 at most."""
    folder = tmp_path / "pipe"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "TextToVideoSDPipeline"}))
    write_tokenizer_files(folder / "tokenizer")
    (folder / "tokenizer" / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77}))
    return str(folder)


def add(*args: str) -> dict:
    res = run_cli("queue", "add", *args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def fails(*args: str, code: int = 2) -> str:
    """Run ``vidtray ARGS``; it must fail with ``code`` and one error line, which is returned."""
    res = run_cli(*args)
    assert res.returncode == code, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidtray: error: "), res.stderr
    return lines[0].removeprefix("vidtray: error: ")


# -- batches -------------------------------------------------------------------------------------------


def test_count_queues_consecutive_seeds_as_one_batch(cfg: Config, model: str) -> None:
    doc = add("a red fox", "--count", "3", "--seed", "5", "--model", model)
    jobs = doc["jobs"]
    assert [j["request"]["seed"] for j in jobs] == [5, 6, 7]
    assert {j["batch"] for j in jobs} == {doc["batch"]} and doc["batch"]
    assert {j["request"]["prompt"] for j in jobs} == {"a red fox"}
    listed = run_cli("queue", "list").stdout.splitlines()
    assert listed[0] == f"batch {doc['batch']}: 3 jobs (3 queued)"
    assert all(line.startswith("  ") and "[seed" in line for line in listed[1:4])


def test_random_seeds_are_drawn_and_recorded(cfg: Config, model: str) -> None:
    jobs = add("a fox", "--count", "4", "--model", model)["jobs"]
    seeds = [j["request"]["seed"] for j in jobs]
    assert all(isinstance(s, int) for s in seeds) and len(set(seeds)) == 4
    # a single job without batch options keeps the old shape: one job, its seed drawn when it runs
    single = add("one fox", "--model", model)
    assert single["request"]["seed"] is None and single["batch"] is None


def test_seeds_and_a_prompts_file_combine(cfg: Config, model: str, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\ufeff# tonight's list\n\na snowy owl\n   # indented comment\n  a grey wolf  \n#the end\n",
                       encoding="utf-8")
    doc = add("a red fox", "--prompts-file", str(prompts), "--seeds", "1,5,9", "--model", model)
    got = [(j["request"]["prompt"], j["request"]["seed"]) for j in doc["jobs"]]
    assert got == [(p, s) for p in ("a red fox", "a snowy owl", "a grey wolf") for s in (1, 5, 9)]
    # the file alone: one job a prompt, a recorded seed each
    doc = add("--prompts-file", str(prompts), "--model", model)
    assert [j["request"]["prompt"] for j in doc["jobs"]] == ["a snowy owl", "a grey wolf"]
    assert all(isinstance(j["request"]["seed"], int) for j in doc["jobs"])


BAD_BATCHES = [
    (["x", "--count", "0"], "argument --count: must be between 1 and 1000, got 0"),
    (["x", "--count", "1001"], "argument --count: must be between 1 and 1000, got 1001"),
    (["x", "--count", "many"], "argument --count: must be a whole number, got 'many'"),
    (["x", "--seeds", "1,x,3"], "argument --seeds: must be a whole number, got 'x'"),
    (["x", "--seeds", "1,-2"], "argument --seeds: must be between 0 and 9223372036854775807, got -2"),
    (["x", "--seeds", "1,2", "--count", "2"], "--seeds: use it alone, not with --count or --seed"),
    (["x", "--seed", str(2**63 - 2), "--count", "3"], "--count: --seed 9223372036854775806 and --count 3 go past"),
    (["--prompts-file", "{tmp}/nope.txt"], "--prompts-file: no such file: {tmp}/nope.txt"),
    (["--prompts-file", "{tmp}"], "--prompts-file: {tmp} is a folder, not a file"),
    (["--prompts-file", "{tmp}/empty.txt"], "{tmp}/empty.txt: no prompts in it"),
    (["--prompts-file", "{tmp}/comments.txt"], "{tmp}/comments.txt: no prompts in it"),
    (["--prompts-file", "{tmp}/long.txt"], "{tmp}/long.txt:3: the prompt must be at most 4000 characters, got 4001"),
    (["--prompts-file", "{tmp}/latin1.txt"], "{tmp}/latin1.txt:2: not UTF-8 text"),
    (["--prompts-file", "{tmp}/tokens.txt"],
     "{tmp}/tokens.txt:2: the prompt is 82 tokens long; zeroscope models read at most 77 (vidtray refuses rather "
     "than cutting it): shorten it"),
    (["a" * 80], "the prompt is 82 tokens long; zeroscope models read at most 77"),
    (["x", "--negative", "n" * 90], "--negative: the negative prompt is 92 tokens long"),
    (["--prompts-file", "{tmp}/two.txt", "--count", "600"], "that is 1200 jobs (2 prompts x 600 each)"),
    ([], "a PROMPT, --prompts-file or --from is needed"),
]


@pytest.mark.parametrize(("args", "message"), BAD_BATCHES, ids=[" ".join(a)[:40] for a, _ in BAD_BATCHES])
def test_bad_batches_are_one_line_exit_2_and_queue_nothing(cfg: Config, model: str, tmp_path: Path,
                                                           args: list[str], message: str) -> None:
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "comments.txt").write_text("# only\n\n   \n# comments\n")
    (tmp_path / "long.txt").write_text("fine\n# a comment\n" + "x" * 4001 + "\n")
    (tmp_path / "latin1.txt").write_bytes("fine\ncaf\u00e9\n".encode("latin-1"))
    (tmp_path / "tokens.txt").write_text("a short one\n" + "a" * 80 + "\n")
    (tmp_path / "two.txt").write_text("one\ntwo\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    error = fails("queue", "add", *argv, "--model", model)
    assert error.startswith(message.replace("{tmp}", str(tmp_path))), error
    assert not (cfg.queue_dir / DB_NAME).exists()  # nothing queued, not even a database made


def test_a_batch_runs_its_jobs_with_their_seeds_and_notifies_once(cfg: Config, model: str, tmp_path: Path) -> None:
    doc = add("a red fox", "--count", "3", "--seed", "5", "--model", model)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("an owl\ncrash: a wolf\na bear\n")  # the fake worker crashes on "crash"
    other = add("--prompts-file", str(prompts), "--seed", "7", "--model", model)
    single = add("alone", "--model", model)
    notifier, rec = RecordingNotifier(), Recorder()
    sup = Supervisor(cfg, on_event=rec, poll_s=0.05, notifier=notifier, max_restarts=5,
                     worker_cmd=[sys.executable, str(FAKE_WORKER), "--keep-alive", "2"])
    sup._next_start = 0
    sup.start()
    try:
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == single["id"], timeout=60)
        rec.wait_for(lambda e: len(notifier.of_kind("batch_done")) == 2, timeout=30)
    finally:
        sup.stop()
    done = [e for e in rec.events if isinstance(e, Done)]
    first_batch = [j["id"] for j in doc["jobs"]]
    assert [e.result["seed"] for e in done if e.job in first_batch] == [5, 6, 7]  # ran with the recorded seeds
    assert [e.job for e in rec.events if isinstance(e, Failed)] == [other["jobs"][1]["id"]]
    # one notification per batch, none per job of a batch; the single job has its own
    assert notifier.kinds().count("video_ready") == 1
    assert "generation_failed" not in notifier.kinds()
    bodies = [n.body for n in notifier.of_kind("batch_done")]
    assert bodies[0] == "3 videos ready"
    assert bodies[1].startswith("2 videos ready, 1 failed\n") and "CUDA error" in bodies[1]
    # a retried job of a finished batch: the batch is announced again when it is done again
    with JobQueue(cfg.queue_dir) as q:
        assert q.finished_batches() == []  # each announced once
        assert {b.id: b.counts for b in q.batches().values()} == {
            doc["batch"]: {"done": 3}, other["batch"]: {"done": 2, "failed": 1}}


# -- pause, resume, move, edit, retry, clear ------------------------------------------------------------


def test_pause_and_resume_are_the_users_and_shown_apart_from_low_disk(cfg: Config, model: str) -> None:
    job = add("a fox", "--model", model)
    res = run_cli("queue", "pause")
    assert res.returncode == 0 and "queue paused" in res.stdout
    (cfg.queue_dir / "paused.json").write_text('{"reason": "only 0.4 GB free", "since": "x"}')
    listed = run_cli("queue", "list").stdout
    assert "queue paused by you" in listed and "queue paused: only 0.4 GB free" in listed
    doc = json.loads(run_cli("queue", "list", "--json").stdout)
    assert doc["pauses"]["user"]["by"] == "user" and doc["pauses"]["low_disk"]["reason"] == "only 0.4 GB free"
    assert doc["paused"]["kind"] == "low_disk"
    with JobQueue(cfg.queue_dir) as q:
        assert q.claim_next() is None
    res = run_cli("queue", "resume")
    assert res.returncode == 0 and "queue resumed" in res.stdout and "stays paused for low disk" in res.stdout
    (cfg.queue_dir / "paused.json").unlink()
    assert run_cli("queue", "resume").stdout.startswith("the queue was not paused by you")
    with JobQueue(cfg.queue_dir) as q:
        assert q.claim_next().id == job["id"]


def test_a_running_job_finishes_while_the_user_pauses(cfg: Config, model: str) -> None:
    slow = add("slow one", "--model", model)
    after = add("after it", "--model", model)
    rec = Recorder()
    sup = Supervisor(cfg, on_event=rec, poll_s=0.05,
                     worker_cmd=[sys.executable, str(FAKE_WORKER), "--keep-alive", "2"])
    sup.start()
    try:
        rec.wait_for(lambda e: getattr(e, "job", None) == slow["id"] and e.NAME == "progress")
        assert run_cli("queue", "pause").returncode == 0
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == slow["id"])
        rec.wait_for(lambda e: e.NAME == "queue_paused")
        assert sup.queue.get(after["id"]).state == "queued"
        assert run_cli("queue", "resume").returncode == 0
        rec.wait_for(lambda e: isinstance(e, Done) and e.job == after["id"])
    finally:
        sup.stop()


def _order(cfg: Config) -> list[str]:
    with JobQueue(cfg.queue_dir) as q:
        return [j.id for j in q.active() if j.state == "queued"]


def test_move_puts_a_job_first_or_before_another(cfg: Config, model: str) -> None:
    a, b, c, d = (add(p, "--model", model)["id"] for p in "abcd")
    res = run_cli("queue", "move", c[:6], "--first")
    assert res.returncode == 0 and res.stdout.strip() == f"job {c} is now next in the queue"
    assert _order(cfg) == [c, a, b, d]
    assert run_cli("queue", "move", d, "--before", a).returncode == 0
    assert _order(cfg) == [c, d, a, b]
    with JobQueue(cfg.queue_dir) as q:
        assert q.claim_next().id == c
    assert fails("queue", "move", c, "--first") == f"job {c} is running: only queued jobs can be moved"
    assert fails("queue", "move", a, "--before", c) == f"job {c} is running: only queued jobs can be moved before"
    assert fails("queue", "move", a, "--before", a) == f"job {a} cannot be moved before itself"
    assert "one of the arguments --first --before is required" in fails("queue", "move", a)
    assert _order(cfg) == [d, a, b]


def _ltx(where: Path) -> Path:
    folder = where / "ltx"
    folder.mkdir(exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "LTXPipeline"}))
    return folder


def test_edit_changes_a_queued_job_only(cfg: Config, model: str) -> None:
    job = add("a fxo", "--steps", "20", "--model", model)
    res = run_cli("queue", "edit", job["id"], "--prompt", "a fox", "--frames", "16", "--json")
    assert res.returncode == 0, res.stderr
    edited = json.loads(res.stdout)
    assert edited["request"] == {**job["request"], "prompt": "a fox", "frames": 16}
    assert fails("queue", "edit", job["id"], "--height", "100").endswith(
        "--height: must be a multiple of 8 (try 96 or 104), got 100")
    ltx_rule = fails("queue", "edit", job["id"], "--width", "600", "--frames", "17", "--model",
                     str(_ltx(Path(model).parent)))
    assert ltx_rule == "--width: must be a multiple of 32 for ltx-video models (try 576 or 608), got 600"
    assert fails("queue", "edit", job["id"], "--prompt", "b" * 80).startswith("the prompt is 82 tokens long")
    assert fails("queue", "edit", job["id"]).startswith("nothing to change")
    with JobQueue(cfg.queue_dir) as q:
        assert q.get(job["id"]).request == edited["request"]  # the refused edits changed nothing
        q.claim_next()
    assert fails("queue", "edit", job["id"], "--prompt", "x") == \
        f"job {job['id']} is running: only queued jobs can be edited"
    with JobQueue(cfg.queue_dir) as q:
        q.finish(job["id"], "done", result={"path": "/v/x.mp4"})
    assert fails("queue", "edit", job["id"], "--prompt", "x") == \
        f"job {job['id']} is done: only queued jobs can be edited"


def test_retry_queues_a_failed_or_cancelled_job_again_at_the_end(cfg: Config, model: str) -> None:
    first, second, third = (add(p, "--model", model)["id"] for p in ("one", "two", "three"))
    with JobQueue(cfg.queue_dir) as q:
        q.claim_next()
        q.finish(first, "failed", error="CUDA error")
        q.cancel(second)
    res = run_cli("queue", "retry", first[:5])
    assert res.returncode == 0 and res.stdout.strip() == f"queued job {first} again"
    assert run_cli("queue", "retry", second).returncode == 0
    assert _order(cfg) == [third, first, second]
    with JobQueue(cfg.queue_dir) as q:
        job = q.get(first)
        assert job.error is None and job.attempts == 0 and job.history[-1]["retried"] == "was failed"
    assert fails("queue", "retry", third) == f"job {third} is queued: only failed or cancelled jobs can be retried"
    assert "no job 'nope'" in fails("queue", "retry", "nope")


def test_clear_finished_removes_only_finished_jobs(cfg: Config, model: str) -> None:
    ids = [add(p, "--model", model)["id"] for p in ("a", "b", "c", "d")]
    with JobQueue(cfg.queue_dir) as q:
        q.claim_next()
        q.finish(ids[0], "done", result={"path": "/v/a.mp4"})
        q.cancel(ids[1])
        q.claim_next()  # c runs
    assert "the following arguments are required: --finished" in fails("queue", "clear")
    res = run_cli("queue", "clear", "--finished", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["removed"] == 2
    with JobQueue(cfg.queue_dir) as q:
        assert [(j.id, j.state) for j in q.list()] == [(ids[2], "running"), (ids[3], "queued")]
    assert run_cli("queue", "clear", "--finished").stdout.strip() == "removed 0 finished jobs (their videos stay)"
