"""Never lose a render, in-process on the tiny pipeline: latents saved and removed, resumed after a failed
decode or encode, discarded when damaged or foreign, a full disk while saving them, and the recovery after
running out of memory (``torch.cuda.OutOfMemoryError`` raised from the model, as the CPU build allows)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import gen_fixtures
import numpy as np
import pytest
import tmpfs
from gen_fixtures import SMALL

from vidtray.config import Config
from vidtray.errors import OperationFailed
from vidtray.services.generation import Request

tiny_pipeline = gen_fixtures.tiny_pipeline
small_disk = tmpfs.small_disk

pytestmark = pytest.mark.gen

torch = pytest.importorskip("torch")

from vidtray.services import memplan, planmemory  # noqa: E402
from vidtray.services.protocol import AnyEvent, Progress, WarningEvent  # noqa: E402
from vidtray.services.worker import latents, output  # noqa: E402
from vidtray.services.worker.backend import JobCancelled  # noqa: E402
from vidtray.services.worker.runner import Worker  # noqa: E402


def request(model: Path, **kw: Any) -> Request:
    return Request(prompt=kw.pop("prompt", "a red fox running through snow"), model=str(model),
                   **{**SMALL, "seed": 11, **kw})


def frames_of(path: str | Path) -> list[np.ndarray]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    next(reader)
    return [np.frombuffer(f, dtype=np.uint8).copy() for f in reader]


def same_frames(a: str | Path, b: str | Path) -> bool:
    fa, fb = frames_of(a), frames_of(b)
    return len(fa) == len(fb) and all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))


class Recorder:
    def __init__(self) -> None:
        self.events: list[AnyEvent] = []

    def __call__(self, event: AnyEvent) -> None:
        self.events.append(event)

    def warnings(self) -> list[str]:
        return [e.message for e in self.events if isinstance(e, WarningEvent)]


def fail_after(calls: int, exc: BaseException) -> Any:
    """A wrapper that raises ``exc`` on the first ``calls`` calls of a model method, then runs it."""
    def wrap(real: Any) -> Any:
        count = {"n": 0}

        def patched(*args: Any, **kwargs: Any) -> Any:
            count["n"] += 1
            if count["n"] <= calls:
                raise exc
            return real(*args, **kwargs)

        patched.calls = count  # type: ignore[attr-defined]
        return patched
    return wrap


def oom() -> BaseException:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


@pytest.fixture
def reference(cfg: Config, tiny_pipeline: Path) -> Path:
    """The video of an uninterrupted run of the job the tests use (seed 11), and the latents it left: none."""
    worker = Worker(cfg)
    result = worker.run_job("ref", request(tiny_pipeline))
    assert not latents.exists(cfg.partial_dir, "ref")
    worker.close()
    return Path(result["path"])


def test_latents_are_saved_before_decoding_and_removed_when_the_video_lands(cfg: Config, tiny_pipeline: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    real_encode = output.encode_mp4

    def watching_encode(frames: Any, path: Path, fps: float, **kw: Any) -> None:
        # while the video is being written, the latents are on disk, whole, with their header
        found = latents.path_for(cfg.partial_dir, "keep1")
        seen["header"] = latents.read_header(found)
        seen["size"] = found.stat().st_size
        real_encode(frames, path, fps, **kw)

    monkeypatch.setattr(output, "encode_mp4", watching_encode)
    worker = Worker(cfg)
    result = worker.run_job("keep1", request(tiny_pipeline))
    header = seen["header"]
    assert (header["width"], header["height"], header["frames"], header["steps"], header["seed"]) == \
        ("32", "32", "8", "4", "11")
    assert header["pipeline"] == "TextToVideoSDPipeline" and header["dtype"] == "float32"
    assert seen["size"] > 8 * 16 * 16 * 4  # 4 channels x 8 frames x 16 x 16 latents, float32
    assert not latents.exists(cfg.partial_dir, "keep1")
    assert result["resumed_from_latents"] is False
    sidecar = json.loads(Path(result["sidecar"]).read_text())
    assert sidecar["resumed_from_latents"] is False
    assert sidecar["decode"] == "no tiling, all frames at once"


def test_a_failed_encode_keeps_the_latents_and_the_retry_resumes_with_the_same_frames(
        cfg: Config, tiny_pipeline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_encode = output.encode_mp4

    def broken(frames: Any, path: Path, fps: float, **kw: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(output, "encode_mp4", broken)
    worker = Worker(cfg)
    with pytest.raises(OSError):
        worker.run_job("again", request(tiny_pipeline, seed=None))  # a random seed: the latents keep it
    saved = latents.path_for(cfg.partial_dir, "again")
    seed = int(latents.read_header(saved)["seed"])
    monkeypatch.setattr(output, "encode_mp4", real_encode)

    events = Recorder()
    retry = Worker(cfg, events)  # a new worker process, as after a crash
    result = retry.run_job("again", request(tiny_pipeline, seed=None))
    assert result["resumed_from_latents"] is True and result["seed"] == seed
    sidecar = json.loads(Path(result["sidecar"]).read_text())
    assert sidecar["resumed_from_latents"] is True and "per_step_s" not in sidecar["timings"]
    # no step ran: one progress event says the job is at its end (decoding and saving)
    assert [(e.step, e.steps) for e in events.events if isinstance(e, Progress)] == [(4, 4)]
    assert not saved.exists()
    # the same seed from scratch gives the same frames as the resumed run
    fresh = Worker(cfg).run_job("fresh", request(tiny_pipeline, seed=seed))
    assert same_frames(result["path"], fresh["path"])


def test_resuming_skips_denoising(cfg: Config, tiny_pipeline: Path, reference: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The resumed job never calls the denoiser, and its frames are the uninterrupted run's."""
    monkeypatch.setattr(output, "encode_mp4", lambda *a, **k: (_ for _ in ()).throw(OSError(5, "EIO")))
    worker = Worker(cfg)
    with pytest.raises(OSError):
        worker.run_job("skip", request(tiny_pipeline))
    monkeypatch.undo()

    def no_denoising(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the denoiser ran on a resumed job")

    worker.loaded.pipe.unet.forward = no_denoising  # type: ignore[union-attr]
    result = worker.run_job("skip", request(tiny_pipeline))
    assert result["resumed_from_latents"] is True
    assert same_frames(result["path"], reference)


@pytest.mark.parametrize("damage", ["truncated", "other size", "other seed", "not safetensors"])
def test_a_damaged_or_foreign_latents_file_is_discarded_and_the_job_denoises_again(
        cfg: Config, tiny_pipeline: Path, reference: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, damage: str) -> None:
    path = latents.path_for(cfg.partial_dir, "dmg")
    if damage == "not safetensors":
        path.write_bytes(b"this is not a latents file at all")
    else:
        # a real latents file of another job: another size, another seed, or this job's, cut short
        other = {"other size": {"width": 48}, "other seed": {"seed": 12}, "truncated": {}}[damage]
        monkeypatch.setattr(output, "encode_mp4", lambda *a, **k: (_ for _ in ()).throw(OSError(5, "EIO")))
        with pytest.raises(OSError):
            Worker(cfg).run_job("dmg", request(tiny_pipeline, **other))
        monkeypatch.undo()
        if damage == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) - 100])
    caplog.set_level("WARNING", logger="vidtray")
    result = Worker(cfg).run_job("dmg", request(tiny_pipeline))
    assert result["resumed_from_latents"] is False
    assert same_frames(result["path"], reference)
    assert not path.exists()
    discarded = [r.getMessage() for r in caplog.records if "discarding the saved latents" in r.getMessage()]
    assert len(discarded) == 1
    expected = {"truncated": "truncated", "other size": "made at 48x32, this job is 32x32",
                "other seed": "its seed is '12'", "not safetensors": "not a safetensors file"}[damage]
    assert expected in discarded[0]


def test_a_cancelled_job_keeps_no_latents_through_the_worker_loop_but_a_stop_keeps_them(
        cfg: Config, tiny_pipeline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vidtray.services.protocol import CancelCommand, Cancelled, JobCommand
    from vidtray.services.worker.loop import WorkerLoop

    class Out:
        def __init__(self) -> None:
            self.events: list[AnyEvent] = []

        def emit(self, event: AnyEvent) -> None:
            self.events.append(event)

    hold = cfg.data_dir / "held"
    monkeypatch.setenv("VIDTRAY_TEST_HOLD_AFTER_LATENTS", str(hold))
    out = Out()
    loop = WorkerLoop(cfg, 0, os.getpid(), out)  # type: ignore[arg-type]
    raw = request(tiny_pipeline).as_dict()

    def run(job: str, stop: Any) -> None:
        thread = threading.Thread(target=loop.run_one, args=(JobCommand(id=job, request=raw),))
        thread.start()
        for _ in range(600):
            if hold.exists():
                break
            thread.join(0.1)
        assert hold.exists(), "the job never reached its saved latents"
        hold.unlink()
        stop()
        thread.join(30)
        assert isinstance(out.events[-1], Cancelled) and out.events[-1].job == job

    # vidtray stopping (a signal, the supervisor's exit) cancels the job but keeps its latents
    run("stopped", lambda: loop.request_stop("signal SIGTERM", cancel_current=True))
    assert latents.exists(cfg.partial_dir, "stopped")
    loop.stop.clear()
    loop.stop_reason = ""
    # a person's cancel: the latents go with the job
    run("cancelled", lambda: loop.on_line(CancelCommand(id="cancelled").to_line()))
    assert not latents.exists(cfg.partial_dir, "cancelled")


def test_a_disk_that_fills_while_saving_the_latents_fails_the_job_cleanly(tiny_pipeline: Path,
                                                                           small_disk: tmpfs.SmallDisk) -> None:
    cfg = Config.from_mapping({"data_dir": str(small_disk.root / "data"), "min_free_gb": 0, "warn_free_gb": 0},
                              "<test>", env={})
    cfg.videos_dir.mkdir(parents=True)

    def fill_at_last_step(event: AnyEvent) -> None:
        if isinstance(event, Progress) and event.step == event.steps:
            small_disk.fill()

    worker = Worker(cfg, fill_at_last_step)
    with pytest.raises(OperationFailed) as err:
        worker.run_job("full", request(tiny_pipeline))
    message = str(err.value)
    assert message.startswith("not enough disk space for the denoised latents:") and "No space left" in message
    # nothing half-written: no latents, no temp file, no video
    assert list(cfg.partial_dir.iterdir()) == []
    assert [p for p in cfg.videos_dir.iterdir() if p.is_file()] == []
    small_disk.free()
    worker.emit = lambda event: None
    result = worker.run_job("full", request(tiny_pipeline))  # space is back: the job runs
    assert Path(result["path"]).is_file()


# -- out of memory -------------------------------------------------------------------------------------------


def test_out_of_memory_at_decode_tries_tiling_then_smaller_batches_and_the_video_lands(
        cfg: Config, tiny_pipeline: Path, reference: Path) -> None:
    events = Recorder()
    worker = Worker(cfg, events)
    worker.run_job("warm", request(tiny_pipeline, seed=3))  # loads the model
    vae = worker.loaded.pipe.vae  # type: ignore[union-attr]
    real_decode = vae.decode
    vae.decode = fail_after(2, oom())(real_decode)
    result = worker.run_job("dec", request(tiny_pipeline))
    # 2 failed (as planned; with VAE tiling), then 8 single-frame decodes
    assert vae.decode.calls["n"] == 2 + 8
    assert same_frames(result["path"], reference)
    sidecar = json.loads(Path(result["sidecar"]).read_text())
    assert sidecar["decode"] == "VAE tiling, 1 frame at a time"
    assert sidecar["recovered"] == ["decoded with VAE tiling, 1 frame at a time after running out of GPU memory"]
    assert events.warnings() == sidecar["recovered"]
    assert not latents.exists(cfg.partial_dir, "dec")
    # remembered: the next job of this model, size and frames decodes that way at once
    key = planmemory.key(str(tiny_pipeline), "cpu", 32, 32, 8)
    remembered = planmemory.recall(cfg.paths.memory_plans_file, key)
    assert remembered is not None and remembered.decode == memplan.DecodeAttempt(True, 1)
    vae.decode = fail_after(0, oom())(real_decode)
    again = worker.run_job("dec2", request(tiny_pipeline))
    assert vae.decode.calls["n"] == 8
    assert json.loads(Path(again["sidecar"]).read_text())["decode"] == "VAE tiling, 1 frame at a time"
    assert vae.use_tiling is False  # the VAE goes back to the plan's own setting after a decode


def test_out_of_memory_at_every_decode_fails_the_job_and_keeps_the_latents(cfg: Config, tiny_pipeline: Path,
                                                                          reference: Path) -> None:
    worker = Worker(cfg)
    worker.run_job("warm", request(tiny_pipeline, seed=3))
    vae = worker.loaded.pipe.vae  # type: ignore[union-attr]
    real_decode = vae.decode
    vae.decode = fail_after(1000, oom())(real_decode)
    with pytest.raises(OperationFailed) as err:
        worker.run_job("doomed", request(tiny_pipeline))
    assert "out of GPU memory while decoding" in str(err.value)
    assert "the denoised latents are kept" in str(err.value)
    assert latents.exists(cfg.partial_dir, "doomed")
    vae.decode = real_decode
    result = worker.run_job("doomed", request(tiny_pipeline))  # the retry decodes them
    assert result["resumed_from_latents"] is True
    assert same_frames(result["path"], reference)


def test_decoding_on_the_cpu_with_a_fresh_float32_vae_gives_the_same_frames(cfg: Config, tiny_pipeline: Path) -> None:
    """The last decode attempt on a GPU: a float32 VAE read from the model's files, on the CPU."""
    worker = Worker(cfg)
    worker.run_job("warm", request(tiny_pipeline, seed=3))
    loaded = worker.loaded
    assert loaded is not None
    params = __import__("vidtray.services.generation", fromlist=["resolve_params"]).resolve_params(
        request(tiny_pipeline), cfg, loaded.family)
    denoised = loaded.denoise(params, lambda i: None, lambda: False)
    planned = loaded.decode(denoised.latents, params, memplan.DecodeAttempt(False, None), lambda: False)
    on_cpu = loaded.decode(denoised.latents, params, memplan.DecodeAttempt(True, 1, on_cpu=True), lambda: False)
    assert loaded._cpu_vae is not None and loaded._cpu_vae is not loaded.pipe.vae  # type: ignore[attr-defined]
    assert np.array_equal(planned, on_cpu)
    # the GPU ladder ends there; on the CPU it is the same device, so it is not tried
    ladder = memplan.decode_attempts(loaded.plan, device_type="cuda", can_tile=True, framewise=True)
    assert ladder[-1] == memplan.DecodeAttempt(True, 1, on_cpu=True)
    assert not any(a.on_cpu for a in memplan.decode_attempts(loaded.plan, device_type="cpu", can_tile=True,
                                                             framewise=True))


def test_out_of_memory_while_denoising_steps_to_cpu_offload_retries_once_and_remembers(
        cfg: Config, tiny_pipeline: Path, reference: Path) -> None:
    events = Recorder()
    worker = Worker(cfg, events)
    worker.run_job("warm", request(tiny_pipeline, seed=3))
    unet = worker.loaded.pipe.unet  # type: ignore[union-attr]
    unet.forward = fail_after(1, oom())(unet.forward)
    result = worker.run_job("den", request(tiny_pipeline))
    assert same_frames(result["path"], reference)
    assert events.warnings() == ["ran with CPU offload after running out of GPU memory"]
    sidecar = json.loads(Path(result["sidecar"]).read_text())
    assert sidecar["memory"]["offload"] == "model" and sidecar["recovered"] == events.warnings()
    assert worker.loaded.pipe._all_hooks  # type: ignore[union-attr]  # diffusers' model offload is in place
    # the next worker (a new process) starts with the plan that worked
    later = Worker(cfg)
    second = later.run_job("den2", request(tiny_pipeline))
    assert later.loaded.plan.offload == "model"  # type: ignore[union-attr]
    assert "remembered" in later.loaded.plan.reason  # type: ignore[union-attr]
    assert same_frames(second["path"], reference)


def test_out_of_memory_twice_while_denoising_fails_with_what_was_tried(cfg: Config, tiny_pipeline: Path) -> None:
    worker = Worker(cfg)
    worker.run_job("warm", request(tiny_pipeline, seed=3))
    unet = worker.loaded.pipe.unet  # type: ignore[union-attr]
    unet.forward = fail_after(1000, oom())(unet.forward)
    with pytest.raises(OperationFailed) as err:
        worker.run_job("den", request(tiny_pipeline))
    assert "out of GPU memory while denoising 32x32, 8 frames" in str(err.value)
    assert "even with CPU offload" in str(err.value)
    assert not latents.exists(cfg.partial_dir, "den")
    with pytest.raises(JobCancelled):
        cancel = threading.Event()
        cancel.set()
        worker.run_job("den", request(tiny_pipeline), cancel)


def test_sequential_offload_is_placed_as_model_offload_on_the_cpu() -> None:
    from vidtray.services.worker.diffusers_backend import _placeable

    seq = memplan.MemoryPlan("sequential", True, True, "small card", 10, 5, 1, vae_tiling=True)
    assert _placeable(seq, "cpu") == memplan.MemoryPlan(
        "model", True, True, "small card (sequential offload is not possible on the CPU: model offload)", 10, 5, 1,
        vae_tiling=True)
    assert _placeable(seq, "cuda") is seq


def test_the_plan_ladder() -> None:
    start = memplan.MemoryPlan("none", True, False, "fits", 10, 5, 1)
    steps = []
    plan: memplan.MemoryPlan | None = start
    while plan is not None:
        steps.append((plan.offload, plan.forward_chunking, plan.vae_tiling))
        plan = memplan.next_plan(plan, can_chunk=True, can_tile=True)
    assert steps == [("none", False, False), ("model", False, True), ("model", True, True),
                     ("sequential", True, True)]
    no_chunk = memplan.next_plan(memplan.MemoryPlan("model", True, False, "x"), can_chunk=False)
    assert no_chunk is not None and no_chunk.offload == "sequential"
    floor = memplan.MemoryPlan("model", True, True, "model offload after running out of GPU memory")
    assert memplan.at_least(start, floor).offload == "model"
    assert memplan.at_least(start, floor).forward_chunking
    assert memplan.at_least(start, None) is start
    seq = memplan.MemoryPlan("sequential", True, True, "small card")
    assert memplan.at_least(seq, floor) is seq
