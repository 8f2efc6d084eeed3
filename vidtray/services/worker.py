"""The generation worker: the ONLY vidtray module that imports torch, diffusers and transformers.

Run as ``python -m vidtray.services.worker``: it reads JSON-line commands on stdin
(``{"cmd": "job", "id": ..., "request": {...}}``, with ``"origin": "cli"`` when the values came from
flags, ``{"cmd": "cancel", "id": ...}``, ``{"cmd": "exit"}``)
and writes JSON-line events on stdout (``hello``, ``job_started``, ``download``, ``loading``, ``loaded``,
``progress``, ``done``, ``failed``, ``cancelled``, ``exit``). It loads a pipeline once, runs jobs one at
a time, and exits after ``keep_alive_s`` without work (so GPU memory is given back), when its parent
dies, on ``exit``, or when stdin closes. Tests use :class:`Worker` in-process.

A job: validate -> disk checks -> find/download the model -> load -> generate -> encode into
``.partial/`` -> sidecar -> atomic rename into the videos folder -> library.json. A failed or cancelled
job leaves nothing in the videos folder.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib
import inspect
import json
import logging
import os
import queue
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from vidtray import __version__
from vidtray.config import Config, load_config
from vidtray.errors import OperationFailed, UserError, VidtrayError
from vidtray.params import Source
from vidtray.paths import hf_cache_dir
from vidtray.services import generation as gen
from vidtray.services import hub
from vidtray.services.fsutil import atomic_write_text, private_dir
from vidtray.services.memplan import MemoryPlan, apply_plan, choose_plan, denoiser_of, set_runtime_options

log = logging.getLogger("vidtray.worker")

Emit = Callable[[dict[str, Any]], None]
PARTIAL_RE = re.compile(r"^(?P<stem>.+)\.(?P<pid>\d+)\.mp4$")


class Cancelled(Exception):
    """The job was cancelled (cancel command, Ctrl-C, parent gone)."""


# -- device and dtype ----------------------------------------------------------------------------------


def pick_device(choice: str) -> str:
    """auto = CUDA, then MPS, then CPU. An explicit device that is not there is OperationFailed."""
    mps_ok = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU was found"
        raise OperationFailed(f"--device cuda is not available: {why} (torch {torch.__version__}); "
                              f"use --device auto or cpu")
    if choice == "mps" and not mps_ok:
        raise OperationFailed("--device mps is not available here (needs Apple silicon and a torch with MPS)")
    if choice not in ("cuda", "mps", "cpu"):
        raise UserError(f"unknown device {choice!r}")
    return choice


def pick_dtype(device: str, family: gen.Family) -> torch.dtype:
    """Half precision on GPUs (bf16 where the family wants it and the card has it), float32 on the CPU."""
    if device == "cpu":
        return torch.float32
    if family.gpu_dtype == "bfloat16" and device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def free_accelerator_bytes(device: str) -> int | None:
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    return None


def module_bytes(module: torch.nn.Module, dtype: torch.dtype | None = None) -> int:
    """Bytes of a module's weights (in ``dtype`` if given, else as they are)."""
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        size = torch.empty((), dtype=dtype).element_size() if dtype is not None and t.is_floating_point() \
            else t.element_size()
        total += t.numel() * size
    return total


def plan_for(pipe: Any, device: str, offload: str, frames: int, height: int, width: int,
             activation_scale: float = 1.0) -> MemoryPlan:
    """The worker's memory decision for ``pipe`` (loaded on the CPU) running one job on ``device``."""
    sizes = [module_bytes(c) for c in pipe.components.values() if isinstance(c, torch.nn.Module)]
    denoiser = denoiser_of(pipe)
    element = next((p.element_size() for p in denoiser.parameters()), 2) if denoiser is not None else 2
    return choose_plan(
        offload, device, free_bytes=free_accelerator_bytes(device), weights_bytes=sum(sizes),
        largest_bytes=max(sizes, default=0), frames=frames, height=height, width=width,
        can_chunk=denoiser is not None and hasattr(denoiser, "enable_forward_chunking"),
        bytes_per_element=element, activation_scale=activation_scale,
    )


def dtype_kwargs(dtype: torch.dtype, family: gen.Family, device: str) -> dict[str, Any]:
    """``dtype=`` on diffusers that renamed it, ``torch_dtype=`` on older ones; a dict for per-component
    overrides (Wan's VAE in float32)."""
    value: Any = dtype
    if device != "cpu" and family.component_dtypes:
        value = {"default": dtype, **{k: getattr(torch, v) for k, v in family.component_dtypes.items()}}
    try:
        importlib.import_module("diffusers.utils.deprecation_utils")._resolve_dtype  # noqa: B018
        return {"dtype": value}
    except (ImportError, AttributeError):
        return {"torch_dtype": value}


# -- the loaded pipeline ---------------------------------------------------------------------------


@dataclass
class Loaded:
    pipe: Any
    key: tuple[str, str, str]
    source: hub.ModelSource
    family: gen.Family
    class_name: str
    device: str
    dtype: torch.dtype
    plan: MemoryPlan
    load_s: float
    callback_style: str  # "legacy" | "step_end" | "none"
    token_limit: int | None
    largest_bytes: int = 0
    accepts_frame_rate: bool = False


def load_pipeline(source: hub.ModelSource, device: str, offload: str, frames: int, height: int,
                  width: int) -> Loaded:
    from diffusers import DiffusionPipeline

    t0 = time.perf_counter()
    class_name = source.class_name()
    family = gen.family_for(class_name)
    dtype = pick_dtype(device, family)
    where = source.local_dir or source.repo_id
    kwargs: dict[str, Any] = dtype_kwargs(dtype, family, device)
    if source.repo_id is not None:
        kwargs["cache_dir"] = str(hf_cache_dir())
        if source.snapshot is not None and hub.hf_offline():
            kwargs["local_files_only"] = True
    try:
        pipe = DiffusionPipeline.from_pretrained(str(where), **kwargs)
    except (OSError, ValueError) as exc:
        log.info("loading %s failed", where, exc_info=True)
        if source.local_dir is not None:
            raise UserError(
                f"{source.model} is not a loadable diffusers pipeline: {_first_line(exc)}") from None
        raise OperationFailed(f"cannot load {source.model}: {_first_line(exc)}") from None
    class_name = type(pipe).__name__
    family = gen.family_for(class_name)
    params = inspect.signature(pipe.__call__).parameters
    if "num_frames" not in params:
        raise UserError(f"{source.model} is a {class_name}, not a text-to-video pipeline")
    style = "step_end" if "callback_on_step_end" in params else "legacy" if "callback" in params else "none"
    plan = plan_for(pipe, device, offload, frames, height, width, family.activation_scale)
    apply_plan(pipe, plan, device)
    tokenizer = getattr(pipe, "tokenizer", None)
    limit: int | None = None
    if "max_sequence_length" in params and isinstance(params["max_sequence_length"].default, int):
        limit = params["max_sequence_length"].default
    elif tokenizer is not None and 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:
        limit = int(tokenizer.model_max_length)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    largest = max((module_bytes(c) for c in pipe.components.values() if isinstance(c, torch.nn.Module)),
                  default=0)
    return Loaded(pipe, (str(where), device, plan.offload), source, family, class_name, device, dtype, plan,
                  time.perf_counter() - t0, style, limit, largest, "frame_rate" in params)


def check_prompt_tokens(loaded: Loaded, params: gen.Params) -> None:
    """Refuse (UserError) a prompt longer than the model reads: the pipeline would silently cut the end
    off, and the sidecar would then record words the video never saw."""
    tokenizer = getattr(loaded.pipe, "tokenizer", None)
    if tokenizer is None or loaded.token_limit is None:
        return
    for label, text in (("prompt", params.prompt), ("negative prompt", params.negative_prompt)):
        if not text:
            continue
        count = len(tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])
        if count > loaded.token_limit:
            raise UserError(f"the {label} is {count} tokens long; {loaded.family.name} models read at most "
                            f"{loaded.token_limit} (vidtray refuses rather than cutting it): shorten it")


# -- encoding ----------------------------------------------------------------------------------------


def to_uint8(frames: Any) -> np.ndarray:
    """Pipeline output (float [0,1] array, tensor, or PIL images) -> uint8 array (f, h, w, 3)."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().float().cpu().numpy()
    if isinstance(frames, list):
        frames = np.stack([np.asarray(f) for f in frames])
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if arr.ndim != 4 or arr.shape[-1] not in (3, 4):
        raise OperationFailed(f"the pipeline returned frames of shape {arr.shape}, not (frames, h, w, 3)")
    return np.ascontiguousarray(arr[..., :3])


def encode_mp4(frames: np.ndarray, path: Path, fps: float,
               should_stop: Callable[[], bool] | None = None) -> None:
    """Write an H.264 mp4 (yuv420p, plays everywhere) with imageio-ffmpeg's bundled ffmpeg."""
    import imageio_ffmpeg

    count, height, width, _ = frames.shape
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1,
        quality=None, output_params=["-crf", "18", "-movflags", "+faststart"], ffmpeg_log_level="error",
    )
    writer.send(None)
    try:
        for i in range(count):
            if should_stop is not None and should_stop():
                raise Cancelled()
            writer.send(frames[i])
    finally:
        writer.close()


# -- partial files ------------------------------------------------------------------------------------


def clean_stale_partials(partial_dir: Path, max_age_s: float = 3600.0) -> list[Path]:
    """Remove in-progress files left by dead workers (pid in the name no longer runs) and stray temp
    files older than ``max_age_s``. Live workers' files stay (a CLI run and the daemon may overlap)."""
    import psutil

    removed: list[Path] = []
    if not partial_dir.is_dir():
        return removed
    now = time.time()
    for entry in partial_dir.iterdir():
        if not entry.is_file() or entry.is_symlink():
            continue
        m = PARTIAL_RE.match(entry.name)
        if m:
            pid = int(m.group("pid"))
            stale = pid != os.getpid() and not psutil.pid_exists(pid)
        else:
            try:
                stale = now - entry.stat().st_mtime > max_age_s
            except OSError:
                continue
        if stale:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    if removed:
        log.info("removed %d stale partial file(s) from %s", len(removed), partial_dir)
    return removed


# -- the worker ------------------------------------------------------------------------------------------


class Worker:
    """Runs jobs on one loaded pipeline. Used in-process by tests and by :func:`main` in the subprocess."""

    def __init__(self, cfg: Config, emit: Emit | None = None) -> None:
        self.cfg = cfg
        self.emit: Emit = emit or (lambda event: None)
        self.loaded: Loaded | None = None
        # "idle" | "prepare" | "denoise" | "encode" | "finalize": what a signal may interrupt
        self.phase = "idle"

    # -- public
    def run_job(self, job_id: str, request: gen.Request, cancel: threading.Event | None = None,
                origin: Source | None = None) -> dict[str, Any]:
        """Run one job to a finished video; raises UserError (naming ``origin``, by default the job),
        OperationFailed or Cancelled."""
        cancel = cancel or threading.Event()
        origin = origin or Source.job(job_id)
        t_start = time.perf_counter()
        request.validate(origin)
        cfg = self.cfg
        self.phase = "prepare"
        try:
            # Disk first: a refusal must come before minutes of download or loading.
            gen.check_output_space(cfg)
            source = hub.resolve_model(request.model or cfg.model)
            device = pick_device(request.device or cfg.device)
            t_dl = time.perf_counter()
            if source.repo_id is not None and source.snapshot is None:
                source = self._download(job_id, source)
            download_s = time.perf_counter() - t_dl
            if cancel.is_set():
                raise Cancelled()
            # Defaults need the family; the family is known from model_index.json before loading.
            family = gen.family_for(source.class_name())
            pre = gen.resolve_params(request, cfg, family, origin)
            loaded, reused = self._ensure_loaded(job_id, source, device, pre)
            if loaded.family is not family:  # model_index.json lied or was missing: redo with the real one
                pre = gen.resolve_params(dataclasses_replace(request, seed=pre.seed), cfg, loaded.family, origin)
            params = pre
            check_prompt_tokens(loaded, params)
            if cancel.is_set():
                raise Cancelled()
            set_runtime_options(loaded.pipe, self._plan_for_job(loaded, params))
            return self._generate(job_id, loaded, reused, params, cancel, t_start, download_s)
        finally:
            self.phase = "idle"

    def close(self) -> None:
        """Drop the pipeline and give the accelerator memory back."""
        if self.loaded is not None:
            device = self.loaded.device
            self.loaded = None
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()

    # -- steps
    def _download(self, job_id: str, source: hub.ModelSource) -> hub.ModelSource:
        assert source.repo_id is not None
        cache = hf_cache_dir()
        plan = hub.plan_download(source.repo_id, cache_dir=cache)
        hub.check_download_space(plan, cache_dir=cache)
        self.emit({"event": "download", "job": job_id, "model": source.repo_id, "done": 0,
                   "total": plan.missing_bytes})
        hub.pull_model(plan, cache_dir=cache, tqdm_class=_event_tqdm(self.emit, job_id, source.repo_id))
        return hub.resolve_model(source.repo_id, cache_dir=cache)

    def _ensure_loaded(self, job_id: str, source: hub.ModelSource, device: str,
                       params: gen.Params) -> tuple[Loaded, bool]:
        where = str(source.local_dir or source.repo_id)
        if self.loaded is not None and self.loaded.key[:2] == (where, device):
            if self._plan_for_job(self.loaded, params).offload == self.loaded.plan.offload:
                return self.loaded, True
        self.close()
        self.emit({"event": "loading", "job": job_id, "model": source.model, "device": device})
        loaded = load_pipeline(source, device, self.cfg.offload, params.frames, params.height, params.width)
        self.loaded = loaded
        self.emit({"event": "loaded", "job": job_id, "model": source.model, "device": device,
                   "dtype": str(loaded.dtype).removeprefix("torch."), "pipeline": loaded.class_name,
                   "memory": loaded.plan.as_dict(), "seconds": round(loaded.load_s, 3)})
        log.info("loaded %s (%s) on %s as %s in %.1fs; memory plan: %s", source.model, loaded.class_name,
                 device, loaded.dtype, loaded.load_s, loaded.plan.reason)
        return loaded, False

    def _plan_for_job(self, loaded: Loaded, params: gen.Params) -> MemoryPlan:
        """The memory plan for a later job on an already loaded pipeline. An offloaded or CPU pipeline
        keeps its plan (its weights sit in RAM between steps, so free GPU memory says little); a resident
        one is re-decided as if its weights were not on the card yet, so a much larger job moves it to
        offload (a reload) instead of running out of memory."""
        if loaded.plan.offload != "none" or loaded.device != "cuda":
            return loaded.plan
        free = free_accelerator_bytes(loaded.device)
        weights = loaded.plan.weights_bytes or 0
        return choose_plan(self.cfg.offload, loaded.device,
                           free_bytes=None if free is None else free + weights,
                           weights_bytes=weights, largest_bytes=loaded.largest_bytes, frames=params.frames,
                           height=params.height, width=params.width, can_chunk=_can_chunk(loaded.pipe),
                           bytes_per_element=loaded.dtype.itemsize,
                           activation_scale=loaded.family.activation_scale)

    def _generate(self, job_id: str, loaded: Loaded, reused: bool, params: gen.Params,
                  cancel: threading.Event, t_start: float, download_s: float) -> dict[str, Any]:
        cfg = self.cfg
        pipe = loaded.pipe
        steps = params.steps
        self.emit({"event": "job_started", "job": job_id, "params": params.as_dict(), "device": loaded.device,
                   "steps": steps})
        gen_device = "cuda" if loaded.device == "cuda" else "cpu"
        generator = torch.Generator(gen_device).manual_seed(params.seed)
        t0 = time.perf_counter()
        last_step = [t0]

        def on_step(i: int) -> None:
            now = time.perf_counter()
            last_step[0] = now
            done = min(i + 1, steps)
            per = (now - t0) / done
            self.emit({"event": "progress", "job": job_id, "step": done, "steps": steps,
                       "elapsed": round(now - t0, 3), "eta": round(per * (steps - done), 3)})
            if cancel.is_set():
                raise Cancelled()

        kwargs: dict[str, Any] = {
            "prompt": params.prompt, "negative_prompt": params.negative_prompt, "height": params.height,
            "width": params.width, "num_frames": params.frames, "num_inference_steps": steps,
            "generator": generator, "output_type": "np",
        }
        if loaded.accepts_frame_rate:
            kwargs["frame_rate"] = int(round(params.fps))  # LTX conditions on the frame rate
        if loaded.callback_style == "legacy":
            # TextToVideoSDPipeline only has callback(step, timestep, latents); raising from it is the
            # only way to stop inside the loop.
            kwargs["callback"] = lambda i, _t, _latents: on_step(i)
            kwargs["callback_steps"] = 1
        elif loaded.callback_style == "step_end":
            def step_end(p: Any, i: int, _t: Any, cb_kwargs: dict[str, Any]) -> dict[str, Any]:
                if cancel.is_set():
                    # Tell the pipeline too, then leave at once: letting `_interrupt` finish the loop
                    # would still decode (VAE) and return frames nobody wants.
                    p._interrupt = True
                on_step(i)
                return cb_kwargs
            kwargs["callback_on_step_end"] = step_end
        if cancel.is_set():
            raise Cancelled()
        self.phase = "denoise"
        try:
            with torch.inference_mode():
                output = pipe(**kwargs)
        except Cancelled:
            raise
        except torch.cuda.OutOfMemoryError:
            raise OperationFailed(
                f"out of GPU memory at {params.width}x{params.height}, {params.frames} frames "
                f"(memory plan: {loaded.plan.reason}); set offload = \"model\" or \"sequential\" in the "
                "config, or ask for fewer frames or a smaller size") from None
        if cancel.is_set():
            raise Cancelled()
        t_denoised = last_step[0]
        t_decoded = time.perf_counter()
        frames = to_uint8(output.frames[0])
        del output
        return self._write(job_id, loaded, reused, params, frames, cancel, {
            "download_s": download_s,
            "load_s": 0.0 if reused else loaded.load_s,
            "denoise_s": t_denoised - t0,
            "decode_s": t_decoded - t_denoised,
            "per_step_s": (t_denoised - t0) / max(1, steps),
        }, t_start, cfg)

    def _write(self, job_id: str, loaded: Loaded, reused: bool, params: gen.Params, frames: np.ndarray,
               cancel: threading.Event, timings: dict[str, float], t_start: float,
               cfg: Config) -> dict[str, Any]:
        self.phase = "encode"
        videos, partial_dir = cfg.videos_dir, cfg.partial_dir
        private_dir(partial_dir)  # and the videos folder above it, if new: 0700
        created = datetime.now().astimezone()
        stem = gen.video_stem(params, created.timestamp(), videos)
        partial = partial_dir / f"{stem}.{os.getpid()}.mp4"
        final = videos / f"{stem}.mp4"
        sidecar = videos / f"{stem}.json"
        t_enc = time.perf_counter()
        wrote_sidecar = False
        try:
            encode_mp4(frames, partial, params.fps, should_stop=cancel.is_set)
            if cancel.is_set():
                raise Cancelled()
            timings["encode_s"] = time.perf_counter() - t_enc
            timings["total_s"] = time.perf_counter() - t_start
            self.phase = "finalize"
            doc = {
                **params.as_dict(),
                "revision": loaded.source.revision,
                "pipeline": loaded.class_name,
                "device": loaded.device,
                "dtype": str(loaded.dtype).removeprefix("torch."),
                "memory": {k: v for k, v in loaded.plan.as_dict().items() if k in ("offload", "vae_slicing",
                                                                                   "forward_chunking")},
                "timings": {k: round(v, 3) for k, v in timings.items()},
                "vidtray_version": __version__,
                "created": created.isoformat(timespec="seconds"),
            }
            # Sidecar first, then the video: a watcher that sees the mp4 finds its sidecar already there.
            atomic_write_text(sidecar, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            wrote_sidecar = True
            os.replace(partial, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            if wrote_sidecar and not final.exists():
                with contextlib.suppress(FileNotFoundError):
                    sidecar.unlink()
            raise
        library_id = self._add_to_library(final, params, doc, frames)
        result = {
            "path": str(final), "sidecar": str(sidecar), "seed": params.seed,
            "seconds": round(time.perf_counter() - t_start, 3), "model": params.model,
            "revision": loaded.source.revision, "device": loaded.device, "dtype": doc["dtype"],
            "frames": int(frames.shape[0]), "height": int(frames.shape[1]), "width": int(frames.shape[2]),
            "fps": params.fps, "steps": params.steps, "library_id": library_id,
            "timings": doc["timings"], "pipeline_reused": reused,
        }
        log.info("job %s done: %s (%.1fs)", job_id, final, result["seconds"])
        return result

    def _add_to_library(self, path: Path, params: gen.Params, doc: dict[str, Any],
                        frames: np.ndarray) -> str | None:
        """Add the video to library.json now (the watcher would too; the upsert is idempotent), with a
        thumbnail made from the frames in memory (no second decode). A failure here is logged, not fatal:
        the video and its sidecar are in place for the watcher."""
        try:
            from vidtray.services.library import open_library
            from vidtray.services.media import thumbnail_path

            thumb = thumbnail_path(self.cfg.thumbnails_dir, path)
            write_thumbnail(frames, params.fps, thumb)
            item = open_library(self.cfg).add_video(
                path, prompt=params.prompt, model=params.model, seed=params.seed, created=doc["created"],
                source="generated", fps=params.fps, width=int(frames.shape[2]), height=int(frames.shape[1]),
                duration_s=round(frames.shape[0] / params.fps, 3), size_bytes=path.stat().st_size,
                codec="h264", thumbnail=str(thumb), status="ready",
            )
            return item.get("id") if isinstance(item, dict) else None
        except Exception as exc:
            log.warning("could not add %s to the library: %s", path, exc, exc_info=True)
            self.emit({"event": "warning",
                       "message": f"video saved, but library.json was not updated: {_first_line(exc)}"})
            return None


def write_thumbnail(frames: np.ndarray, fps: float, dest: Path) -> None:
    """JPEG of an early frame (10% in, at most 1 s, like the watcher's), written atomically."""
    import io

    from PIL import Image

    from vidtray.services.fsutil import atomic_write_bytes, private_dir
    from vidtray.services.media import THUMB_MAX

    index = min(len(frames) - 1, int(min(1.0, len(frames) / fps * 0.1) * fps))
    image = Image.fromarray(frames[index])
    image.thumbnail(THUMB_MAX)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    private_dir(dest.parent)
    atomic_write_bytes(dest, buf.getvalue())


def _can_chunk(pipe: Any) -> bool:
    d = denoiser_of(pipe)
    return d is not None and hasattr(d, "enable_forward_chunking")


def dataclasses_replace(req: gen.Request, **changes: Any) -> gen.Request:
    return dataclasses.replace(req, **changes)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _event_tqdm(emit: Emit, job_id: str, repo_id: str) -> type:
    """A tqdm class for snapshot_download that turns byte progress into ``download`` events."""
    from tqdm.auto import tqdm

    class EventTqdm(tqdm):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._last = 0.0

        def update(self, n: float | None = 1) -> bool | None:
            self.n += n or 0
            now = time.monotonic()
            if self.unit == "B" and now - self._last > 0.5:
                self._last = now
                emit({"event": "download", "job": job_id, "model": repo_id, "done": int(self.n),
                      "total": int(self.total or 0)})
            return None

    return EventTqdm


# -- the subprocess -------------------------------------------------------------------------------------


class _Protocol:
    """JSON lines on a private copy of stdout; fd 1 is pointed at stderr so stray prints can't corrupt it."""

    def __init__(self) -> None:
        fd = os.dup(sys.stdout.fileno())
        sys.stdout.flush()
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        self._out: TextIO = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, default=str, ensure_ascii=False)
        with self._lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the parent is gone; the watchdog ends us


class WorkerLoop:
    """stdin commands -> jobs, one at a time; cancel; keep-alive; parent watchdog; signals."""

    def __init__(self, cfg: Config, keep_alive_s: float, parent_pid: int, proto: _Protocol) -> None:
        self.cfg = cfg
        self.keep_alive_s = keep_alive_s
        self.parent_pid = parent_pid
        self.proto = proto
        self.worker = Worker(cfg, proto.emit)
        self.jobs: queue.Queue[tuple[str, dict[str, Any], str | None] | None] = queue.Queue()
        self.cancelled_ids: set[str] = set()
        self.current: str | None = None
        self.cancel = threading.Event()
        self.stop = threading.Event()
        self.stop_reason = ""
        self._lock = threading.Lock()

    def request_stop(self, reason: str, cancel_current: bool) -> None:
        with self._lock:
            if not self.stop.is_set():
                self.stop_reason = reason
            self.stop.set()
            if cancel_current:
                self.cancel.set()
        self.jobs.put(None)

    def read_commands(self, stream: TextIO) -> None:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            try:
                cmd = json.loads(line)
                kind = cmd.get("cmd")
            except (ValueError, AttributeError):
                self.proto.emit({"event": "error", "message": f"bad command line: {line[:200]}"})
                continue
            if kind == "job":
                self.jobs.put((str(cmd.get("id") or f"job-{time.time_ns()}"), cmd.get("request") or {},
                               cmd.get("origin")))
            elif kind == "cancel":
                job = cmd.get("id")
                with self._lock:
                    if job is None or job == self.current:
                        self.cancel.set()
                    if job is not None:
                        self.cancelled_ids.add(str(job))
            elif kind == "exit":
                self.request_stop("asked to exit", cancel_current=bool(cmd.get("cancel")))
            else:
                self.proto.emit({"event": "error", "message": f"unknown command {kind!r}"})
        # stdin closed: the parent is gone or done with us
        self.request_stop("stdin closed", cancel_current=True)

    def watch_parent(self) -> None:
        while not self.stop.wait(1.0):
            if os.getppid() != self.parent_pid:
                log.warning("parent %d is gone; stopping", self.parent_pid)
                self.request_stop("parent process exited", cancel_current=True)
                return

    def on_signal(self, signum: int, _frame: Any) -> None:
        self.request_stop(f"signal {signal.Signals(signum).name}", cancel_current=True)
        # Inside a job the step callback (or the encoder) sees the flag within a step; elsewhere (idle,
        # loading the model) leave at once: there is nothing to clean up.
        if self.worker.phase in ("idle", "prepare"):
            raise KeyboardInterrupt

    def run(self) -> int:
        threading.Thread(target=self.read_commands, args=(sys.stdin,), name="worker-stdin",
                         daemon=True).start()
        threading.Thread(target=self.watch_parent, name="worker-parent-watch", daemon=True).start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.on_signal)
        self.proto.emit({"event": "hello", "pid": os.getpid(), "version": __version__,
                         "keep_alive_s": self.keep_alive_s})
        clean_stale_partials(self.cfg.partial_dir)
        first = True
        try:
            while not self.stop.is_set():
                # The first job arrives right after start; never leave before it, even with keep-alive 0.
                timeout = max(self.keep_alive_s, 10.0) if first else self.keep_alive_s
                try:
                    item = self.jobs.get(timeout=timeout) if timeout > 0 else self.jobs.get_nowait()
                except queue.Empty:
                    self.stop_reason = f"idle for {self.keep_alive_s:g}s"
                    break
                if item is None:
                    continue
                first = False
                self.run_one(*item)
        except KeyboardInterrupt:
            pass
        finally:
            self.worker.close()
            self.proto.emit({"event": "exit", "reason": self.stop_reason or "done"})
        return 0

    def run_one(self, job_id: str, raw: dict[str, Any], origin: str | None = None) -> None:
        with self._lock:
            if job_id in self.cancelled_ids:
                self.proto.emit({"event": "cancelled", "job": job_id})
                return
            self.current = job_id
            self.cancel.clear()
            if self.stop.is_set() and self.stop_reason != "asked to exit":
                self.cancel.set()
        named = Source.cli() if origin == "cli" else Source.job(job_id)
        try:
            request = gen.Request.from_dict(raw, named)
            result = self.worker.run_job(job_id, request, self.cancel, named)
            self.proto.emit({"event": "done", "job": job_id, "result": result})
        except (Cancelled, KeyboardInterrupt):
            self.proto.emit({"event": "cancelled", "job": job_id})
        except VidtrayError as exc:
            self.proto.emit({"event": "failed", "job": job_id, "error": str(exc),
                             "kind": "user" if isinstance(exc, UserError) else "failed"})
        except Exception as exc:  # a bug or a library error: one line out, the traceback to the log
            log.exception("job %s crashed", job_id)
            self.proto.emit({"event": "failed", "job": job_id, "kind": "failed",
                             "error": f"generation failed: {type(exc).__name__}: {_first_line(exc)}"})
        finally:
            with self._lock:
                self.current = None


def _quiet_libraries() -> None:
    """Library chatter (deprecations, progress bars) goes to the log, not the user's terminal."""
    import warnings

    logging.captureWarnings(True)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
    except ImportError:
        pass
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidtray.services.worker")
    parser.add_argument("--config", help="config file (as for vidtray --config)")
    parser.add_argument("--keep-alive", type=float, default=None, help="seconds idle before exiting")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    args = parser.parse_args(argv)
    proto = _Protocol()
    from vidtray.logs import setup_logging

    setup_logging()
    _quiet_libraries()
    try:
        cfg = load_config(args.config)
    except VidtrayError as exc:
        proto.emit({"event": "fatal", "error": str(exc), "kind": "user"})
        return 2
    keep_alive = cfg.keep_alive_s if args.keep_alive is None else args.keep_alive
    loop = WorkerLoop(cfg, keep_alive, args.parent_pid or os.getppid(), proto)
    return loop.run()


if __name__ == "__main__":
    sys.exit(main())
