"""The diffusers backend: the ONLY vidtray module that imports torch, diffusers and transformers.

Device and dtype choice, loading a pipeline with a memory plan (:mod:`vidtray.services.memplan`), the
prompt's token limit, and one job's denoising and decoding with a step callback that can cancel.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from vidtray.errors import OperationFailed, UserError, first_line
from vidtray.paths import hf_cache_dir
from vidtray.services import generation as gen
from vidtray.services import hub
from vidtray.services.memplan import MemoryPlan, apply_plan, choose_plan, denoiser_of, set_runtime_options
from vidtray.services.worker.backend import FrameArray, Generated, JobCancelled

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

    @property
    def scheduler(self) -> str | None:
        scheduler = getattr(self.pipe, "scheduler", None)
        return None if scheduler is None else type(scheduler).__name__

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def suits(self, source: hub.ModelSource, device: str, params: gen.Params) -> bool:
        return ((self.where, self.device) == (str(source.local_dir or source.repo_id), device)
                and self.plan_for_job(params).offload == self.plan.offload)

    def plan_for_job(self, params: gen.Params) -> MemoryPlan:
        """The memory plan for a later job on this loaded pipeline. An offloaded or CPU pipeline keeps its
        plan (its weights sit in RAM between steps, so free GPU memory says little); a resident one is
        re-decided as if its weights were not on the card yet, so a much larger job moves it to offload
        (a reload) instead of running out of memory."""
        if self.plan.offload != "none" or self.device != "cuda":
            return self.plan
        free = free_accelerator_bytes(self.device)
        weights = self.plan.weights_bytes or 0
        return choose_plan(self.offload, self.device,
                           free_bytes=None if free is None else free + weights,
                           weights_bytes=weights, largest_bytes=self.largest_bytes, frames=params.frames,
                           height=params.height, width=params.width, can_chunk=_can_chunk(self.pipe),
                           bytes_per_element=self.dtype.itemsize,
                           activation_scale=self.family.activation_scale)

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

    def generate(self, params: gen.Params, on_step: Callable[[int], None],
                 should_stop: Callable[[], bool]) -> Generated:
        set_runtime_options(self.pipe, self.plan_for_job(params))
        gen_device = "cuda" if self.device == "cuda" else "cpu"
        kwargs: dict[str, object] = {
            "prompt": params.prompt, "negative_prompt": params.negative_prompt, "height": params.height,
            "width": params.width, "num_frames": params.frames, "num_inference_steps": params.steps,
            "generator": torch.Generator(gen_device).manual_seed(params.seed), "output_type": "np",
        }
        if self.accepts_frame_rate:
            kwargs["frame_rate"] = int(round(params.fps))  # LTX conditions on the frame rate
        t0 = time.perf_counter()
        last_step = [t0]

        def step(i: int) -> None:
            last_step[0] = time.perf_counter()
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
            raise OperationFailed(
                f"out of GPU memory at {params.width}x{params.height}, {params.frames} frames "
                f"(memory plan: {self.plan.reason}); set offload = \"model\" or \"sequential\" in the "
                "config, or ask for fewer frames or a smaller size") from None
        if should_stop():
            raise JobCancelled()
        t_decoded = time.perf_counter()
        frames = to_uint8(output.frames[0])
        del output
        return Generated(frames, denoise_s=last_step[0] - t0, decode_s=t_decoded - last_step[0])

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

    def close(self) -> None:
        self.pipe = None
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()


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


def load_pipeline(source: hub.ModelSource, device: str, offload: str, frames: int, height: int,
                  width: int) -> LoadedPipeline:
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
    plan = plan_for(pipe, device, offload, frames, height, width, family.activation_scale)
    apply_plan(pipe, plan, device)
    limit = _token_limit(pipe, params)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    guidance = params["guidance_scale"].default if "guidance_scale" in params else None
    return LoadedPipeline(pipe, str(source.local_dir or source.repo_id), source, family, class_name, device,
                          dtype, plan, offload, time.perf_counter() - t0, style, limit,
                          max(_component_sizes(pipe), default=0), "frame_rate" in params,
                          float(guidance) if isinstance(guidance, int | float) else None)


class DiffusersBackend:
    """The :class:`~vidtray.services.worker.backend.Backend` the worker uses."""

    def pick_device(self, choice: str) -> str:
        return pick_device(choice)

    def versions(self) -> dict[str, str | None]:
        import diffusers

        return {"torch": str(torch.__version__), "diffusers": str(diffusers.__version__)}

    def load(self, source: hub.ModelSource, device: str, offload: str, params: gen.Params) -> LoadedPipeline:
        return load_pipeline(source, device, offload, params.frames, params.height, params.width)
