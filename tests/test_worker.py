"""The worker in-process on the tiny pipeline: real mp4s, sidecars, library items, cancel, crash, refusals."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import gen_fixtures
import numpy as np
import pytest
from gen_fixtures import SMALL, TINY_REPO, TINY_REVISION, install_in_hf_cache

from vidtray.config import Config
from vidtray.errors import OperationFailed, UserError
from vidtray.services.generation import Request
from vidtray.services.sidecar import sidecar_path

# the session-scoped tiny pipeline (gen_fixtures.py), shared by the generation test modules
tiny_pipeline = gen_fixtures.tiny_pipeline

pytestmark = pytest.mark.gen

pytest.importorskip("torch")

from vidtray.services.protocol import AnyEvent, JobCommand, Progress  # noqa: E402
from vidtray.services.worker import diffusers_backend, output, partials  # noqa: E402
from vidtray.services.worker.backend import JobCancelled  # noqa: E402
from vidtray.services.worker.loop import WorkerLoop  # noqa: E402
from vidtray.services.worker.runner import Worker  # noqa: E402


def probe_mp4(path: Path) -> dict[str, Any]:
    """Decode the whole file with ffmpeg: frame count, size, fps, and the frames."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    frames = [np.frombuffer(f, dtype=np.uint8) for f in reader]
    return {"frames": len(frames), "size": tuple(meta["size"]), "fps": meta["fps"],
            "codec": meta.get("codec"), "data": frames}


def make_worker(cfg: Config) -> tuple[Worker, list[AnyEvent]]:
    events: list[AnyEvent] = []
    return Worker(cfg, events.append), events


def request(model: Path | str, **kw: Any) -> Request:
    return Request(prompt=kw.pop("prompt", "a red fox running through snow"), model=str(model),
                   **{**SMALL, **kw})


def leftovers(cfg: Config) -> list[Path]:
    return sorted(p for p in cfg.data_dir.rglob("*") if p.is_file() and "queue" not in p.parts)


def test_generates_real_mp4_with_sidecar_and_library_item(cfg: Config, tiny_pipeline: Path) -> None:
    worker, events = make_worker(cfg)
    result = worker.run_job("j1", request(tiny_pipeline, frames=10, width=48, height=32, fps=5, seed=42,
                                          negative_prompt="blurry"))
    path = Path(result["path"])
    assert path.parent == cfg.videos_dir
    assert path.name.startswith("tiny-t2v_") and path.suffix == ".mp4"
    stem_parts = path.stem.split("_")
    assert len(stem_parts) == 3 and len(stem_parts[1]) == 15 and len(stem_parts[2]) == 8

    info = probe_mp4(path)
    assert info["frames"] == 10
    assert info["size"] == (48, 32)
    assert info["fps"] == pytest.approx(5.0)
    assert info["codec"].startswith("h264")

    sidecar = json.loads(Path(result["sidecar"]).read_text())
    assert Path(result["sidecar"]) == sidecar_path(path)
    for key, want in {"prompt": "a red fox running through snow", "negative_prompt": "blurry", "seed": 42,
                      "steps": 4, "frames": 10, "height": 32, "width": 48, "fps": 5,
                      "model": str(tiny_pipeline), "device": "cpu", "dtype": "float32"}.items():
        assert sidecar[key] == want, key
    assert sidecar["revision"] is None  # a local folder has no hub revision
    assert sidecar["vidtray_version"]
    assert sidecar["created"][:4].isdigit() and "T" in sidecar["created"]
    assert {"load_s", "denoise_s", "encode_s", "total_s", "per_step_s"} <= set(sidecar["timings"])
    assert sidecar["memory"]["vae_slicing"] is True
    # the prompt is private: the sidecar and the new library.json are the user's only, whatever the umask
    assert stat.S_IMODE(os.stat(result["sidecar"]).st_mode) == 0o600
    assert stat.S_IMODE(cfg.library_file.stat().st_mode) == 0o600

    library = json.loads(cfg.library_file.read_text())
    (item,) = library["items"]
    assert item["path"] == str(path)
    assert item["source"] == "generated"
    assert (item["prompt"], item["seed"], item["model"]) == (sidecar["prompt"], 42, str(tiny_pipeline))
    assert item["id"] == result["library_id"]
    assert Path(item["thumbnail"]).is_file()
    assert item["duration_s"] == pytest.approx(2.0)

    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == [1, 2, 3, 4]
    assert [e.NAME for e in events][:2] == ["loading", "loaded"]
    assert not list(cfg.partial_dir.iterdir())
    assert worker.loaded.pipe.vae.use_slicing  # VAE slicing on, as the memory plan says


def test_same_seed_same_frames_and_the_pipeline_is_loaded_once(cfg: Config, tiny_pipeline: Path) -> None:
    worker, events = make_worker(cfg)
    a = worker.run_job("a", request(tiny_pipeline, seed=7))
    b = worker.run_job("b", request(tiny_pipeline, seed=7))
    c = worker.run_job("c", request(tiny_pipeline, seed=8))
    assert [e.NAME for e in events].count("loading") == 1
    assert b["pipeline_reused"] and b["timings"]["load_s"] == 0
    # same job twice in one second gets a distinct name rather than overwriting
    assert a["path"] != b["path"]
    assert Path(a["path"]).stem.split("_")[2][:8] == Path(b["path"]).stem.split("_")[2][:8]
    fa, fb, fc = (probe_mp4(Path(r["path"]))["data"] for r in (a, b, c))
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(fa, fc, strict=True))
    assert len(json.loads(cfg.library_file.read_text())["items"]) == 3


def test_random_seed_is_recorded_and_reproduces(cfg: Config, tiny_pipeline: Path) -> None:
    worker, _ = make_worker(cfg)
    first = worker.run_job("r1", request(tiny_pipeline, seed=None))
    seed = json.loads(Path(first["sidecar"]).read_text())["seed"]
    assert isinstance(seed, int) and seed == first["seed"]
    again = worker.run_job("r2", request(tiny_pipeline, seed=seed))
    fa, fb = (probe_mp4(Path(r["path"]))["data"] for r in (first, again))
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))


def test_cancel_mid_run_leaves_nothing(cfg: Config, tiny_pipeline: Path) -> None:
    cancel = threading.Event()
    events: list[AnyEvent] = []

    def emit(event: AnyEvent) -> None:
        events.append(event)
        if isinstance(event, Progress) and event.step == 2:
            cancel.set()

    worker = Worker(cfg, emit)
    with pytest.raises(JobCancelled):
        worker.run_job("c1", request(tiny_pipeline, steps=20), cancel)
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == [1, 2]  # stopped within the step after the cancel
    assert leftovers(cfg) == []
    assert not cfg.library_file.exists()


def test_crash_in_the_pipeline_leaves_nothing(cfg: Config, tiny_pipeline: Path) -> None:
    worker, _ = make_worker(cfg)
    worker.run_job("ok", request(tiny_pipeline, seed=1))
    before = leftovers(cfg)
    unet = worker.loaded.pipe.unet
    calls = {"n": 0}
    real_forward = unet.forward

    def failing_forward(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated kernel failure")
        return real_forward(*args, **kwargs)

    unet.forward = failing_forward
    with pytest.raises(RuntimeError, match="simulated kernel failure"):
        worker.run_job("boom", request(tiny_pipeline, seed=2))
    assert leftovers(cfg) == before


def test_failure_while_encoding_removes_the_partial_file(cfg: Config, tiny_pipeline: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path] = []

    def broken_encoder(frames: Any, path: Path, fps: float, should_stop: Any = None, tags: Any = None) -> None:
        path.write_bytes(b"half a video")
        seen.append(path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output, "encode_mp4", broken_encoder)
    worker, _ = make_worker(cfg)
    with pytest.raises(OSError):
        worker.run_job("enc", request(tiny_pipeline))
    assert seen and seen[0].parent == cfg.partial_dir and f".{os.getpid()}." in seen[0].name
    # the half-written video is gone; the denoised latents stay, so a retry only decodes and encodes
    assert leftovers(cfg) == [cfg.partial_dir / "enc.latents.safetensors"]


def test_low_disk_is_refused_before_the_model_loads(isolated_env: dict[str, Path],
                                                    tiny_pipeline: Path) -> None:
    cfg = Config.from_mapping({"min_free_gb": 10_000_000.0, "warn_free_gb": 10_000_000.0}, "<test>")
    worker, events = make_worker(cfg)
    with pytest.raises(OperationFailed) as err:
        worker.run_job("disk", request(tiny_pipeline))
    message = str(err.value)
    assert "not enough disk space" in message and "free" in message and "needed" in message
    assert worker.loaded is None
    assert events == []
    assert leftovers(cfg) == []


def test_prompt_over_the_token_limit_is_refused(cfg: Config, tiny_pipeline: Path) -> None:
    worker, _ = make_worker(cfg)
    # every letter is one token in the tiny vocabulary: 90 letters + 2 specials > 77
    with pytest.raises(UserError, match=r"92 tokens long.*at most 77"):
        worker.run_job("long", request(tiny_pipeline, prompt="a" * 90))
    with pytest.raises(UserError, match="negative prompt"):
        worker.run_job("longneg", request(tiny_pipeline, negative_prompt="b" * 90))
    assert leftovers(cfg) == []


def test_bad_models_and_devices(cfg: Config, tiny_pipeline: Path, tmp_path: Path) -> None:
    worker, _ = make_worker(cfg)
    with pytest.raises(UserError, match="not a diffusers pipeline folder"):
        worker.run_job("m1", request(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "TextToVideoSDPipeline",
                                                         "unet": ["diffusers", "UNet3DConditionModel"]}))
    with pytest.raises(UserError, match="not a loadable diffusers pipeline"):
        worker.run_job("m2", request(broken))
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        worker.run_job("m3", request("someone/not-cached-model"))
    with pytest.raises(OperationFailed, match="--device cuda is not available"):
        worker.run_job("d1", request(tiny_pipeline, device="cuda"))
    assert diffusers_backend.pick_device("auto") == "cpu"
    assert leftovers(cfg) == []


def test_a_job_its_models_family_cannot_make_names_the_job_or_the_flag(cfg: Config, tmp_path: Path) -> None:
    """The family's rules are checked on the resolved values before the model loads; the message names
    the queued job, or the flag when the job came from `vidtray generate`."""
    ltx = tmp_path / "ltx"
    ltx.mkdir()
    (ltx / "model_index.json").write_text(json.dumps({"_class_name": "LTXPipeline"}))
    worker, _ = make_worker(cfg)
    with pytest.raises(UserError) as info:
        worker.run_job("abc123", request(ltx, frames=8))
    assert str(info.value) == "job abc123: frames must be 8k+1 for ltx-video models (try 1 or 9), got 8"

    class Recorder:
        def __init__(self) -> None:
            self.events: list[Any] = []

        def emit(self, event: AnyEvent) -> None:
            self.events.append(event)

    out = Recorder()
    loop = WorkerLoop(cfg, 0, os.getpid(), out)  # type: ignore[arg-type]
    raw = request(ltx, width=48, frames=9).as_dict()
    loop.run_one(JobCommand(id="q1", request=raw))
    loop.run_one(JobCommand(id="cli-1", request=raw, origin="cli"))
    loop.run_one(JobCommand(id="q2", request={**raw, "height": "tall"}))
    assert [(e.NAME, e.job, e.kind, e.error) for e in out.events] == [
        ("failed", "q1", "user", "job q1: width must be a multiple of 32 for ltx-video models (try 32 or 64), "
                                 "got 48"),
        ("failed", "cli-1", "user", "--width: must be a multiple of 32 for ltx-video models (try 32 or 64), "
                                    "got 48"),
        ("failed", "q2", "user", "job q2: height must be a whole number, got 'tall'"),
    ]
    assert leftovers(cfg) == []


def test_a_cached_hub_repo_loads_offline_and_records_its_revision(cfg: Config, tiny_pipeline: Path,
                                                                  isolated_env: dict[str, Path]) -> None:
    install_in_hf_cache(tiny_pipeline, isolated_env["HF_HOME"] / "hub")
    worker, _ = make_worker(cfg)
    result = worker.run_job("hub", request(TINY_REPO, seed=3))
    assert result["revision"] == TINY_REVISION
    assert Path(result["path"]).name.startswith("tiny-t2v_")
    assert json.loads(Path(result["sidecar"]).read_text())["model"] == TINY_REPO


def test_the_worker_records_when_it_used_a_cached_model(cfg: Config, tiny_pipeline: Path,
                                                         isolated_env: dict[str, Path]) -> None:
    """"Last used" for the storage budget: recorded when a job uses a hub model (not a local folder), also
    when the loaded pipeline is reused."""
    import time

    from vidtray.services.modeluse import read_use

    install_in_hf_cache(tiny_pipeline, isolated_env["HF_HOME"] / "hub")
    worker, _ = make_worker(cfg)
    worker.run_job("local", request(tiny_pipeline, seed=1))
    assert read_use(cfg.paths.model_use_file) == {}
    start = time.time()
    worker.run_job("hub1", request(TINY_REPO, seed=3))
    first = read_use(cfg.paths.model_use_file)[TINY_REPO]
    worker.run_job("hub2", request(TINY_REPO, seed=4))  # the same pipeline, reused
    assert start <= first <= read_use(cfg.paths.model_use_file)[TINY_REPO] <= time.time()
    assert oct(cfg.paths.model_use_file.stat().st_mode & 0o777) == "0o600"


def test_stale_partials_of_dead_workers_are_cleaned(cfg: Config) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    cfg.partial_dir.mkdir(parents=True)
    stale = cfg.partial_dir / f"zeroscope_20250101-000000_abcdef12.{dead}.mp4"
    mine = cfg.partial_dir / f"zeroscope_20250101-000000_abcdef12.{os.getpid()}.mp4"
    stale.write_bytes(b"x")
    mine.write_bytes(b"x")
    assert partials.clean_stale_partials(cfg.partial_dir) == [stale]
    assert mine.exists() and not stale.exists()
