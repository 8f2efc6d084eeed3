"""``vidtray generate``, ``models`` and ``queue`` as a user runs them: real processes, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gen_fixtures
import pytest
from conftest import ROOT, run_cli
from gen_fixtures import SMALL

# the session-scoped tiny pipeline (gen_fixtures.py), shared by the generation test modules
tiny_pipeline = gen_fixtures.tiny_pipeline

HEAVY = ("torch", "diffusers", "transformers")
# Runs the real CLI entry point, then reports which heavy modules the CLI process itself imported.
PROBE = (
    "import json, sys\n"
    "from vidtray.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
    "sys.stderr.write('HEAVY=' + json.dumps(heavy) + '\\n')\n"
    "sys.exit(rc)\n"
)


def run_probe(*args: str, timeout: float = 180) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("HEAVY=")]
    assert lines, proc.stderr
    return proc, json.loads(lines[-1][6:])


def small_args() -> list[str]:
    out = []
    for key, value in SMALL.items():
        out += [f"--{key}", str(value)]
    return out


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.gen
def test_generate_json_in_a_worker_and_the_cli_never_imports_torch(cfg, tiny_pipeline: Path) -> None:
    proc, heavy = run_probe("generate", "a lighthouse in a storm", "--model", str(tiny_pipeline),
                            *small_args(), "--seed", "11", "--negative", "people", "--json")
    assert proc.returncode == 0, proc.stderr
    assert heavy == []  # the model ran in the worker subprocess, not here
    doc = json.loads(proc.stdout)  # exactly one JSON document
    assert doc["ok"] is True and {"path", "sidecar", "seed", "seconds", "model", "device"} <= set(doc)
    assert doc["seed"] == 11 and doc["device"] == "cpu" and doc["model"] == str(tiny_pipeline)
    video, sidecar = Path(doc["path"]), Path(doc["sidecar"])
    assert video.parent == cfg.videos_dir and video.stat().st_size > 0
    side = json.loads(sidecar.read_text())
    assert (side["prompt"], side["negative_prompt"], side["seed"]) == \
        ("a lighthouse in a storm", "people", 11)
    items = json.loads(cfg.library_file.read_text())["items"]
    assert [i["path"] for i in items] == [str(video)]
    assert files_under(cfg.partial_dir) == []


@pytest.mark.gen
def test_ctrl_c_stops_within_a_step_and_leaves_nothing(cfg, tiny_pipeline: Path,
                                                       isolated_env: dict[str, Path]) -> None:
    log = isolated_env["VIDTRAY_LOG_DIR"] / "vidtray.log"
    args = ["generate", "a slow one", "--model", str(tiny_pipeline), *small_args(), "--json"]
    args[args.index("--steps") + 1] = "1000"
    # its own process group, like a shell job: Ctrl-C goes to the CLI and its worker alike
    proc = subprocess.Popen([sys.executable, "-m", "vidtray", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "loaded " not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the worker never loaded the model"
            time.sleep(0.2)
        time.sleep(1.0)  # well into the denoising loop
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert time.monotonic() - sent < 15
    assert "cancelled; nothing was written" in err
    assert "Traceback" not in err
    assert json.loads(out) == {"ok": False, "vidtray_json": 1, "error": {
        "kind": "interrupted", "message": "generation cancelled; nothing was written"}}
    assert files_under(cfg.videos_dir) == []
    assert not cfg.library_file.exists()


BAD_INPUT = [
    (["generate", ""], "prompt is empty"),
    (["generate", "   "], "prompt is empty"),
    (["generate", "x", "--frames", "0"], "--frames"),
    (["generate", "x", "--steps", "-3"], "--steps"),
    (["generate", "x", "--height", "100"], "--height: must be a multiple of 8 (try 96 or 104), got 100"),
    (["generate", "x", "--width", "4096"], "--width: must be between 32 and 2048, got 4096"),
    (["generate", "x", "--seed", "abc"], "--seed: must be a whole number"),
    (["generate", "x", "--fps", "fast"], "--fps: must be a number"),
    (["generate", "x", "--fps", "1e-300"], "--fps: must be a number from 0.1 to 120, got 1e-300"),
    (["queue", "add", "x", "--fps", "1e-300"], "--fps: must be a number from 0.1 to 120"),
    (["queue", "add", "x", "--fps", "1e300"], "--fps: must be a number from 0.1 to 120, got 1e+300"),
    (["generate", "x", "--negative", "n" * 4001], "--negative: must be at most 4000 characters"),
    (["generate", "x", "--model", " "], "--model: must be a Hugging Face repo id or a folder"),
    (["generate", "x", "--device", "tpu"], "invalid choice"),
    (["generate", "x", "--model", "{tmp}"], "not a diffusers pipeline folder"),
    (["generate", "x", "--model", "someone/uncached-model"], "HF_HUB_OFFLINE"),
    (["models", "pull", "cerspense/zeroscope_v2_576w"], "HF_HUB_OFFLINE"),
    (["queue", "cancel", "nosuchjob"], "no job"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a)[:40] for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cfg, tmp_path: Path, args: list[str],
                                                         message: str) -> None:
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    before = files_under(cfg.data_dir)
    proc = run_cli(*[a.replace("{tmp}", str(empty)) for a in args])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidtray: error: ") and message in lines[0], proc.stderr
    assert files_under(cfg.data_dir) == before


@pytest.mark.parametrize("command", ["generate", "queue add"])
def test_the_models_family_rules_are_checked_before_a_worker_starts(cfg, tmp_path: Path, command: str) -> None:
    """An LTX model needs multiples of 32 and frames = 8k+1: a bad flag, or a bad [generation] value, is
    refused at once (no worker, nothing queued), naming the flag or the config file and key."""
    ltx = tmp_path / "ltx"
    ltx.mkdir()
    (ltx / "model_index.json").write_text(json.dumps({"_class_name": "LTXPipeline"}))
    before = files_under(cfg.data_dir)
    proc = run_cli(*command.split(), "a cat", "--model", str(ltx), "--width", "600")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("vidtray: error: --width: must be a multiple of 32 for ltx-video models "
                                   "(try 576 or 608), got 600")
    config = tmp_path / "config.toml"
    config.write_text("[generation]\nframes = 96\n")
    proc = run_cli("--config", str(config), *command.split(), "a cat", "--model", str(ltx))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"vidtray: error: {config}: generation.frames: must be 8k+1 for ltx-video "
                                   "models (try 89 or 97), got 96")
    assert files_under(cfg.data_dir) == before


def test_low_disk_refusal_from_the_cli(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("min_free_gb = 10000000\nwarn_free_gb = 10000000\n")
    proc = run_cli("--config", str(config), "generate", "a cat", "--model", str(tmp_path))
    assert proc.returncode == 2  # the bad folder is found first
    folder = tmp_path / "pipe"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "TextToVideoSDPipeline"}')
    proc = run_cli("--config", str(config), "generate", "a cat", "--model", str(folder))
    assert proc.returncode == 1
    assert proc.stderr.startswith("vidtray: error: not enough disk space for a new video")
    assert "free" in proc.stderr and "needed" in proc.stderr


def write_fake_cached_model(hub: Path) -> None:
    """A cached repo laid out as huggingface_hub does (blob + snapshot symlink + ref)."""
    repo = hub / "models--acme--tiny-video"
    blob = repo / "blobs" / "0a1b2c"
    blob.parent.mkdir(parents=True)
    blob.write_text('{"_class_name": "TextToVideoSDPipeline"}')
    snap = repo / "snapshots" / "feedbeef"
    snap.mkdir(parents=True)
    os.symlink(os.path.relpath(blob, snap), snap / "model_index.json")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("feedbeef")


def test_models_list_shows_cached_and_known_models(isolated_env: dict[str, Path]) -> None:
    write_fake_cached_model(isolated_env["HF_HOME"] / "hub")
    proc, heavy = run_probe("models", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert heavy == []
    doc = json.loads(proc.stdout)
    (cached,) = doc["cached"]
    assert cached["repo_id"] == "acme/tiny-video" and cached["pipeline"] == "TextToVideoSDPipeline"
    assert cached["size_bytes"] > 0 and cached["revisions"] == ["feedbeef"]
    known = {k["repo_id"]: k for k in doc["known"]}
    assert known["cerspense/zeroscope_v2_576w"]["licence"] == "cc-by-nc-4.0"
    assert known["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]["licence"] == "Apache-2.0"
    assert all(k["download"] and k["gpu_memory"] for k in doc["known"])
    text = run_cli("models", "list")
    assert text.returncode == 0 and "acme/tiny-video" in text.stdout and "non-commercial" in text.stdout


def test_queue_add_list_cancel_from_the_cli(cfg, tmp_path: Path) -> None:
    folder = tmp_path / "pipe"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "TextToVideoSDPipeline"}')
    proc, heavy = run_probe("queue", "add", "a queued cat", "--model", str(folder), "--frames", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    assert heavy == []
    job = json.loads(proc.stdout)
    assert job["state"] == "queued" and job["request"]["frames"] == 8
    (cfg.queue_dir / "paused.json").write_text('{"reason": "low disk", "since": "2025-01-01T00:00:00Z"}')
    listed = run_cli("queue", "list")
    assert listed.returncode == 0
    assert "queue paused: low disk" in listed.stdout and job["id"] in listed.stdout
    doc = json.loads(run_cli("queue", "list", "--json").stdout)
    assert doc["paused"]["reason"] == "low disk" and [j["id"] for j in doc["jobs"]] == [job["id"]]
    cancelled = run_cli("queue", "cancel", job["id"][:6])
    assert cancelled.returncode == 0 and "cancelled job" in cancelled.stdout
    again = run_cli("queue", "cancel", job["id"])
    assert again.returncode == 2 and "already cancelled" in again.stderr
