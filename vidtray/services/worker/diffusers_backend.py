"""The diffusers backend: the ONLY vidtray module that imports torch, diffusers, transformers and safetensors.

Device and dtype choice, loading a pipeline with a memory plan (:mod:`vidtray.services.memplan`) and the
speed options (:mod:`vidtray.services.speedopts`), the prompt's token limit, one job's denoising to latents
with a step callback that can cancel, the latents file (safetensors), and decoding each family's latents
the way its pipeline does, in the ways a :class:`~vidtray.services.memplan.DecodeAttempt` names.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import inspect
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vidtray.errors import OperationFailed, UserError, first_line
from vidtray.paths import hf_cache_dir
from vidtray.services import generation as gen
from vidtray.services import hub, memplan, speedopts
from vidtray.services.fsutil import atomic_write_bytes
from vidtray.services.memplan import (
    DecodeAttempt,
    MemoryPlan,
    apply_plan,
    choose_plan,
    denoiser_of,
    set_runtime_options,
)
from vidtray.services.worker.backend import (
    Denoised,
    FrameArray,
    JobCancelled,
    Latents,
    OutOfMemory,
    SpeedChoice,
)

log = logging.getLogger("vidtray.worker")

#: How a pipeline reports steps: TextToVideoSDPipeline only has the legacy ``callback``; newer ones
#: ``callback_on_step_end``.
CallbackStyle = Literal["legacy", "step_end", "none"]


def quiet_libraries() -> None:
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

        tlog.set_verbosity_error()  # type: ignore[no-untyped-call]
        tlog.disable_progress_bar()  # type: ignore[no-untyped-call]
    except ImportError:
        pass


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


def _component_sizes(pipe: Any) -> list[int]:
    return [module_bytes(c) for c in pipe.components.values() if isinstance(c, torch.nn.Module)]


def _can_chunk(pipe: Any) -> bool:
    d = denoiser_of(pipe)
    return d is not None and hasattr(d, "enable_forward_chunking")


def plan_for(pipe: Any, device: str, offload: str, frames: int, height: int, width: int,
             activation_scale: float = 1.0) -> MemoryPlan:
    """The worker's memory decision for ``pipe`` (loaded on the CPU) running one job on ``device``."""
    sizes = _component_sizes(pipe)
    denoiser = denoiser_of(pipe)
    element = next((p.element_size() for p in denoiser.parameters()), 2) if denoiser is not None else 2
    return choose_plan(
        offload, device, free_bytes=free_accelerator_bytes(device), weights_bytes=sum(sizes),
        largest_bytes=max(sizes, default=0), frames=frames, height=height, width=width,
        can_chunk=_can_chunk(pipe), bytes_per_element=element, activation_scale=activation_scale,
        can_tile=memplan.can_tile(pipe),
    )


def dtype_kwargs(dtype: torch.dtype, family: gen.Family, device: str) -> dict[str, object]:
    """``dtype=`` on diffusers that renamed it, ``torch_dtype=`` on older ones; a dict for per-component
    overrides (Wan's VAE in float32)."""
    value: torch.dtype | dict[str, torch.dtype] = dtype
    if device != "cpu" and family.component_dtypes:
        value = {"default": dtype, **{k: getattr(torch, v) for k, v in family.component_dtypes.items()}}
    try:
        importlib.import_module("diffusers.utils.deprecation_utils")._resolve_dtype  # noqa: B018
        return {"dtype": value}
    except (ImportError, AttributeError):
        return {"torch_dtype": value}


def to_uint8(frames: object) -> FrameArray:
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


# -- the loaded pipeline ---------------------------------------------------------------------------

#: How each family's latents become frames (diffusers 0.42, checked against each pipeline's own decode):
#: ``framewise`` an image VAE decodes every frame on its own (TextToVideoSDPipeline: latents (b, c, f, h, w)
#: scaled by the VAE's scaling factor); ``wan`` latents (b, c, f, h, w) normalised by the VAE's mean and
#: std; ``ltx`` latents packed into (b, tokens, c) that are unpacked and denormalised first; ``cogvideox``
#: latents (b, f, c, h, w), with CogVideoX 1.5's padding frames in front; ``whole``: an unknown pipeline,
#: called once for frames (nothing kept between denoising and decoding).
DecodeKind = Literal["framewise", "wan", "ltx", "cogvideox", "whole"]
DECODE_KINDS: dict[str, DecodeKind] = {"TextToVideoSDPipeline": "framewise", "WanPipeline": "wan",
                                       "LTXPipeline": "ltx", "CogVideoXPipeline": "cogvideox"}


def decode_kind(pipe: Any) -> DecodeKind:
    known = DECODE_KINDS.get(type(pipe).__name__)
    if known is not None:
        return known
    vae = getattr(pipe, "vae", None)
    if type(vae).__name__ == "AutoencoderKL" and hasattr(pipe, "video_processor"):
        return "framewise"  # an image VAE under a video pipeline: zeroscope's layout
    return "whole"


@dataclass(frozen=True)
class _Frames:
    """What :meth:`LoadedPipeline.denoise` holds for a pipeline it cannot split: the frames themselves."""

    frames: FrameArray


def _out_of_memory(device: str) -> None:
    """After an out-of-memory error: drop what the failed attempt left, so the next one starts clean."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _placeable(plan: MemoryPlan, device: str) -> MemoryPlan:
    """``plan`` as it can be placed on ``device``: on the CPU, model offload's hooks are placed (diffusers
    moves each model to the CPU: nothing moves, so switching is the same code as on a GPU), but sequential
    offload is not possible (accelerate cannot stream weights to the CPU): model offload instead."""
    if device != "cpu" or plan.offload != "sequential":
        return plan
    why = f"{plan.reason} (sequential offload is not possible on the CPU: model offload)"
    return dataclasses.replace(plan, offload="model", reason=why)


@dataclass
class LoadedPipeline:
    """A diffusers pipeline on its device (the :class:`~vidtray.services.worker.backend.LoadedModel`)."""

    # A DiffusionPipeline subclass; its components (unet/transformer, vae, tokenizer) differ per family.
    pipe: Any
    where: str
    source: hub.ModelSource
    family: gen.Family
    class_name: str
    device: str
    dtype: torch.dtype
    plan: MemoryPlan
    offload: str  # the config's choice, for later jobs' plans
    load_s: float
    callback_style: CallbackStyle
    token_limit: int | None
    largest_bytes: int = 0
    accepts_frame_rate: bool = False
    #: the pipeline's default guidance scale (vidtray never changes it), for the recipe
    guidance_scale: float | None = None
    #: the speed options applied (``speedopts``), for the sidecar
    speed_applied: tuple[str, ...] = ()
    kind: DecodeKind = "framewise"
    _cpu_vae: Any = None

    @property
    def scheduler(self) -> str | None:
        scheduler = getattr(self.pipe, "scheduler", None)
        return None if scheduler is None else type(scheduler).__name__

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def can_tile(self) -> bool:
        return memplan.can_tile(self.pipe)

    @property
    def can_chunk(self) -> bool:
        return _can_chunk(self.pipe)

    @property
    def framewise_decode(self) -> bool:
        return self.kind == "framewise"

    @property
    def splits_decode(self) -> bool:
        return self.kind != "whole"

    def suits(self, source: hub.ModelSource, device: str, params: gen.Params, floor: MemoryPlan | None = None) -> bool:
        return ((self.where, self.device) == (str(source.local_dir or source.repo_id), device)
                and self.plan_for_job(params, floor).offload == self.plan.offload)

    def plan_for_job(self, params: gen.Params, floor: MemoryPlan | None = None) -> MemoryPlan:
        """The memory plan for a later job on this loaded pipeline. An offloaded or CPU pipeline keeps its
        plan (its weights sit in RAM between steps, so free GPU memory says little); a resident one is
        re-decided as if its weights were not on the card yet, so a much larger job moves it to offload
        (a reload) instead of running out of memory. ``floor``: a plan that worked before for such jobs."""
        if self.plan.offload != "none" or self.device != "cuda":
            return self.plan
        free = free_accelerator_bytes(self.device)
        weights = self.plan.weights_bytes or 0
        return memplan.at_least(choose_plan(
            self.offload, self.device, free_bytes=None if free is None else free + weights,
            weights_bytes=weights, largest_bytes=self.largest_bytes, frames=params.frames, height=params.height,
            width=params.width, can_chunk=_can_chunk(self.pipe), bytes_per_element=self.dtype.itemsize,
            activation_scale=self.family.activation_scale, can_tile=self.can_tile), floor)

    def use_plan(self, plan: MemoryPlan) -> None:
        """Place the pipeline the way ``plan`` says (a step down after running out of memory)."""
        plan = _placeable(plan, self.device)
        _out_of_memory(self.device)
        apply_plan(self.pipe, plan, self.device)
        self.plan = plan

    def check_prompt(self, params: gen.Params) -> None:
        """Refuse (UserError) a prompt longer than the model reads: the pipeline would silently cut the end
        off, and the sidecar would then record words the video never saw."""
        tokenizer = getattr(self.pipe, "tokenizer", None)
        if tokenizer is None or self.token_limit is None:
            return
        for label, text in (("prompt", params.prompt), ("negative prompt", params.negative_prompt)):
            if not text:
                continue
            count = len(tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])
            if count > self.token_limit:
                raise UserError(f"the {label} is {count} tokens long; {self.family.name} models read at most "
                                f"{self.token_limit} (vidtray refuses rather than cutting it): shorten it")

    # -- denoising
    def denoise(self, params: gen.Params, on_step: Callable[[int], None],
                should_stop: Callable[[], bool]) -> Denoised:
        set_runtime_options(self.pipe, self.plan)
        gen_device = "cuda" if self.device == "cuda" else "cpu"
        kwargs: dict[str, object] = {
            "prompt": params.prompt, "negative_prompt": params.negative_prompt, "height": params.height,
            "width": params.width, "num_frames": params.frames, "num_inference_steps": params.steps,
            "generator": torch.Generator(gen_device).manual_seed(params.seed),
            "output_type": "latent" if self.splits_decode else "np",
        }
        if self.accepts_frame_rate:
            kwargs["frame_rate"] = int(round(params.fps))  # LTX conditions on the frame rate
        t0 = time.perf_counter()

        def step(i: int) -> None:
            on_step(i)
            if should_stop():
                raise JobCancelled()

        kwargs.update(self._callback_kwargs(step, should_stop))
        if should_stop():
            raise JobCancelled()
        try:
            with torch.inference_mode():
                output = self.pipe(**kwargs)
        except torch.cuda.OutOfMemoryError:
            _out_of_memory(self.device)
            raise OutOfMemory(
                f"out of GPU memory while denoising {params.width}x{params.height}, {params.frames} frames "
                f"(memory plan: {self.plan.reason})") from None
        if should_stop():
            raise JobCancelled()
        if not self.splits_decode:
            frames = to_uint8(output.frames[0])
            return Denoised(_Frames(frames), time.perf_counter() - t0)
        # The latents leave the accelerator at once: the decode (and its retries) must not share its memory
        # with them, and the file is written from here.
        latents = output.frames.detach().to("cpu")
        del output
        return Denoised(latents, time.perf_counter() - t0)

    def _callback_kwargs(self, step: Callable[[int], None],
                         should_stop: Callable[[], bool]) -> dict[str, object]:
        if self.callback_style == "legacy":
            # TextToVideoSDPipeline only has callback(step, timestep, latents); raising from it is the
            # only way to stop inside the loop.
            def legacy(i: int, _t: object, _latents: object) -> None:
                step(i)

            return {"callback": legacy, "callback_steps": 1}
        if self.callback_style == "step_end":
            def step_end(p: Any, i: int, _t: object, cb_kwargs: dict[str, object]) -> dict[str, object]:
                if should_stop():
                    # Tell the pipeline too, then leave at once: letting `_interrupt` finish the loop
                    # would still decode (VAE) and return frames nobody wants.
                    p._interrupt = True
                step(i)
                return cb_kwargs

            return {"callback_on_step_end": step_end}
        return {}

    # -- decoding
    def decode(self, latents: Latents, params: gen.Params, attempt: DecodeAttempt,
               should_stop: Callable[[], bool]) -> FrameArray:
        if isinstance(latents, _Frames):
            return latents.frames
        assert isinstance(latents, torch.Tensor)
        vae = self._vae_on_cpu() if attempt.on_cpu else self.pipe.vae
        memplan.set_tiling(vae, attempt.tiling)
        try:
            return frames_from_latents(self.pipe, self.kind, latents, frames=params.frames, height=params.height,
                                       width=params.width, vae=vae, per_batch=attempt.frames_per_batch,
                                       should_stop=should_stop)
        except torch.cuda.OutOfMemoryError:
            _out_of_memory(self.device)
            raise OutOfMemory(f"out of GPU memory while decoding {params.width}x{params.height}, "
                              f"{params.frames} frames ({attempt.label()})") from None
        finally:
            if not attempt.on_cpu:
                memplan.set_tiling(self.pipe.vae, self.plan.vae_tiling)

    def _vae_on_cpu(self) -> Any:
        """A float32 copy of the VAE on the CPU, read from the model's files (the pipeline's own VAE may sit
        behind offload hooks or on the meta device), once per loaded model."""
        if self._cpu_vae is None:
            folder = self.source.folder
            if folder is None:
                raise OperationFailed("cannot decode on the CPU: the model's files are not here")
            log.info("loading a float32 copy of the VAE on the CPU to decode there")
            self._cpu_vae = type(self.pipe.vae).from_pretrained(
                str(folder), subfolder="vae", **dtype_kwargs(torch.float32, self.family, "cpu")).eval()
        return self._cpu_vae

    # -- the latents file
    def save_latents(self, latents: Latents, path: str, header: dict[str, str]) -> None:
        from safetensors.torch import save

        assert isinstance(latents, torch.Tensor)
        # Serialized in memory (a few MB), then written atomically: a full disk is an OSError (ENOSPC) and
        # leaves no temp file behind.
        atomic_write_bytes(Path(path), save({"latents": latents.contiguous()}, metadata=header))

    def load_latents(self, path: str) -> Latents:
        from safetensors.torch import load_file

        try:
            tensors = load_file(path, device="cpu")
        except Exception as exc:  # safetensors' own error type for a damaged file
            raise ValueError(first_line(exc)) from None
        if set(tensors) != {"latents"}:
            raise ValueError(f"holds {sorted(tensors)}, not latents")
        return tensors["latents"]

    # -- memory and life
    def reset_peak_memory(self) -> None:
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak_memory_bytes(self) -> int | None:
        return int(torch.cuda.max_memory_allocated()) if self.device == "cuda" else None

    def close(self) -> None:
        self.pipe = None
        self._cpu_vae = None
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()


def frames_from_latents(pipe: Any, kind: DecodeKind, latents: torch.Tensor, *, frames: int, height: int, width: int,
                        vae: Any = None, per_batch: int | None = None,
                        should_stop: Callable[[], bool] = lambda: False) -> FrameArray:
    """The family's own decode of ``latents`` (what its pipeline does after the last step), with ``vae``
    (default: the pipeline's), then the pipeline's video post-processing: uint8 frames."""
    with torch.inference_mode():
        video = _decode_video(pipe, kind, vae if vae is not None else pipe.vae, latents, frames, height, width,
                              per_batch, should_stop)
        out = pipe.video_processor.postprocess_video(video=video, output_type="np")[0]
    return to_uint8(out)


def _decode_video(pipe: Any, kind: DecodeKind, vae: Any, latents: torch.Tensor, frames: int, height: int, width: int,
                  per_batch: int | None, should_stop: Callable[[], bool]) -> torch.Tensor:
    device = _execution_device(vae)
    z = latents.to(device)
    if kind == "framewise":
        return _decode_framewise(vae, z, per_batch, should_stop)
    if kind == "wan":
        z = z.to(vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(z)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(z)
        video: torch.Tensor = vae.decode(z / inv_std + mean, return_dict=False)[0]
        return video
    if kind == "ltx":
        z = pipe._unpack_latents(
            z, (frames - 1) // pipe.vae_temporal_compression_ratio + 1, height // pipe.vae_spatial_compression_ratio,
            width // pipe.vae_spatial_compression_ratio, pipe.transformer_spatial_patch_size,
            pipe.transformer_temporal_patch_size)
        z = pipe._denormalize_latents(z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        # vidtray leaves decode_timestep at its default 0.0, so the pipeline adds no noise before decoding
        timestep = torch.tensor([0.0] * z.shape[0], device=device, dtype=z.dtype) \
            if vae.config.timestep_conditioning else None
        video = vae.decode(z.to(vae.dtype), timestep, return_dict=False)[0]
        return video
    if kind != "cogvideox":
        raise ValueError(f"no decode for {kind!r} latents")
    # CogVideoX 1.5 pads the latent frames to its temporal patch size; the padding goes first
    patch_t = pipe.transformer.config.patch_size_t
    latent_frames = (frames - 1) // pipe.vae_scale_factor_temporal + 1
    extra = patch_t - latent_frames % patch_t if patch_t and latent_frames % patch_t else 0
    z = z[:, extra:].permute(0, 2, 1, 3, 4) / pipe.vae_scaling_factor_image
    video = vae.decode(z.to(vae.dtype)).sample
    return video


def _execution_device(module: Any) -> torch.device:
    """Where a module's inputs must be (its hook's device under offload, else its weights')."""
    try:
        from diffusers.utils.torch_utils import get_module_execution_device

        return get_module_execution_device(module)
    except ImportError:  # older diffusers
        return torch.device(module.device)


def _decode_framewise(vae: Any, latents: torch.Tensor, per_batch: int | None,
                      should_stop: Callable[[], bool]) -> torch.Tensor:
    """TextToVideoSDPipeline.decode_latents, ``per_batch`` frames at a time (None: all at once), each
    batch's pixels moved to the CPU as soon as they are made."""
    latents = latents / vae.config.scaling_factor
    batch, channels, frames, height, width = latents.shape
    flat = latents.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width).to(vae.dtype)
    parts = []
    for chunk in torch.split(flat, per_batch or flat.shape[0]):
        if should_stop():
            raise JobCancelled()
        parts.append(vae.decode(chunk).sample.float().cpu())
    image = torch.cat(parts)
    return image[None, :].reshape((batch, frames, -1) + image.shape[2:]).permute(0, 2, 1, 3, 4).float()


def _token_limit(pipe: Any, params: dict[str, inspect.Parameter]) -> int | None:
    if "max_sequence_length" in params and isinstance(params["max_sequence_length"].default, int):
        return int(params["max_sequence_length"].default)
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is not None and 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:
        return int(tokenizer.model_max_length)
    return None


def _from_pretrained(source: hub.ModelSource, kwargs: dict[str, object]) -> Any:
    from diffusers import DiffusionPipeline

    where = source.local_dir or source.repo_id
    if source.repo_id is not None:
        kwargs["cache_dir"] = str(hf_cache_dir())
        if source.snapshot is not None and hub.hf_offline():
            kwargs["local_files_only"] = True
    try:
        return DiffusionPipeline.from_pretrained(str(where), **kwargs)  # type: ignore[no-untyped-call]
    except (OSError, ValueError) as exc:
        log.info("loading %s failed", where, exc_info=True)
        if source.local_dir is not None:
            raise UserError(
                f"{source.model} is not a loadable diffusers pipeline: {first_line(exc)}") from None
        raise OperationFailed(f"cannot load {source.model}: {first_line(exc)}") from None


def _apply_speed(pipe: Any, device: str, plan: MemoryPlan, speed: SpeedChoice | None) -> tuple[str, ...]:
    if speed is None:
        return ()
    names, skipped = speedopts.applicable(speed.compile, speed.speedups, device=device, offload=plan.offload)
    for line in skipped:
        log.warning("%s", line)
    applied = tuple(speedopts.apply(pipe, torch, names))
    if applied:
        log.info("speed options applied: %s", ", ".join(applied))
    return applied


def load_pipeline(source: hub.ModelSource, device: str, offload: str, frames: int, height: int,
                  width: int, floor: MemoryPlan | None = None, speed: SpeedChoice | None = None) -> LoadedPipeline:
    t0 = time.perf_counter()
    family = gen.family_for(source.class_name())
    dtype = pick_dtype(device, family)
    pipe = _from_pretrained(source, dtype_kwargs(dtype, family, device))
    class_name = type(pipe).__name__
    family = gen.family_for(class_name)
    params = dict(inspect.signature(pipe.__call__).parameters)
    if "num_frames" not in params:
        raise UserError(f"{source.model} is a {class_name}, not a text-to-video pipeline")
    style: CallbackStyle = ("step_end" if "callback_on_step_end" in params
                            else "legacy" if "callback" in params else "none")
    plan = _placeable(memplan.at_least(plan_for(pipe, device, offload, frames, height, width,
                                                family.activation_scale), floor), device)
    apply_plan(pipe, plan, device)
    applied = _apply_speed(pipe, device, plan, speed)
    limit = _token_limit(pipe, params)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    guidance = params["guidance_scale"].default if "guidance_scale" in params else None
    return LoadedPipeline(pipe, str(source.local_dir or source.repo_id), source, family, class_name, device,
                          dtype, plan, offload, time.perf_counter() - t0, style, limit,
                          max(_component_sizes(pipe), default=0), "frame_rate" in params,
                          float(guidance) if isinstance(guidance, int | float) else None, applied,
                          decode_kind(pipe))


class DiffusersBackend:
    """The :class:`~vidtray.services.worker.backend.Backend` the worker uses."""

    def pick_device(self, choice: str) -> str:
        return pick_device(choice)

    def versions(self) -> dict[str, str | None]:
        import diffusers

        return {"torch": str(torch.__version__), "diffusers": str(diffusers.__version__)}

    def load(self, source: hub.ModelSource, device: str, offload: str, params: gen.Params,
             floor: MemoryPlan | None = None, speed: SpeedChoice | None = None) -> LoadedPipeline:
        return load_pipeline(source, device, offload, params.frames, params.height, params.width, floor, speed)
