"""What the worker needs from a model runtime, and nothing more: pick a device, load a model with a memory
plan, denoise one job to latents (with a step callback and a cancel check), keep the latents in a file and
read them back, decode them (one way at a time: :class:`~vidtray.services.memplan.DecodeAttempt`), change
the memory plan, give the memory back.

:mod:`vidtray.services.worker.diffusers_backend` is the one implementation (the only module that imports
torch and diffusers). The job's bookkeeping around it (disk checks, download, saved latents, what to try
after running out of memory, events, output files) is the runner's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from vidtray.errors import OperationFailed
from vidtray.services import generation as gen
from vidtray.services import hub
from vidtray.services.memplan import DecodeAttempt, MemoryPlan

#: Frames as the encoder takes them: uint8, shape (frames, height, width, 3).
FrameArray = npt.NDArray[np.uint8]


class JobCancelled(Exception):
    """The job was cancelled (cancel command, Ctrl-C, parent gone)."""


class OutOfMemory(OperationFailed):
    """The accelerator ran out of memory (denoising or decoding); the runner decides what to try next."""


class Latents(Protocol):
    """Denoised latents as the backend holds them (a tensor, in its own memory); only the backend reads them."""


@dataclass(frozen=True)
class Denoised:
    """One job's latents and the seconds denoising took (prompt encoding included)."""

    latents: Latents
    denoise_s: float


class LoadedModel(Protocol):
    """A model loaded on a device, kept between jobs while it suits them."""

    @property
    def source(self) -> hub.ModelSource: ...

    @property
    def family(self) -> gen.Family: ...

    @property
    def class_name(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def dtype_name(self) -> str: ...

    @property
    def plan(self) -> MemoryPlan: ...

    @property
    def load_s(self) -> float: ...

    @property
    def guidance_scale(self) -> float | None:
        """The guidance scale every job on this model runs with (the pipeline's default), for the recipe."""
        ...

    @property
    def scheduler(self) -> str | None:
        """The scheduler's class name, for the recipe."""
        ...

    @property
    def speed_applied(self) -> tuple[str, ...]:
        """The speed options in use (``speedopts``), for the sidecar."""
        ...

    def suits(self, source: hub.ModelSource, device: str, params: gen.Params,
              floor: MemoryPlan | None = None) -> bool:
        """Whether a job with ``params`` can run on this model as loaded (else: close it, load again);
        ``floor``: a plan that worked before for such jobs."""
        ...

    def check_prompt(self, params: gen.Params) -> None:
        """UserError for a prompt the model would cut short."""
        ...

    @property
    def can_chunk(self) -> bool:
        """The denoiser can run its feed-forward layers in chunks (a memory plan option)."""
        ...

    @property
    def can_tile(self) -> bool:
        """The VAE decodes tile by tile on request."""
        ...

    @property
    def framewise_decode(self) -> bool:
        """The VAE decodes every frame on its own (an image VAE), so frames can be decoded in batches."""
        ...

    @property
    def splits_decode(self) -> bool:
        """Denoising stops at latents that :meth:`decode` turns into frames (False: a pipeline vidtray does
        not know how to decode, called once; its "latents" are the frames, and nothing is kept)."""
        ...

    def plan_for_job(self, params: gen.Params, floor: MemoryPlan | None = None) -> MemoryPlan:
        """The memory plan a job with ``params`` runs with on this model as loaded (``floor``: as in
        :meth:`suits`)."""
        ...

    def use_plan(self, plan: MemoryPlan) -> None:
        """Place the model the way ``plan`` says (after running out of memory: the next plan down)."""
        ...

    def denoise(self, params: gen.Params, on_step: Callable[[int], None],
                should_stop: Callable[[], bool]) -> Denoised:
        """Denoise one video to latents. ``on_step(i)`` after step i (0-based); JobCancelled within a step of
        ``should_stop()`` turning true; OutOfMemory when the device runs out of memory."""
        ...

    def decode(self, latents: Latents, params: gen.Params, attempt: DecodeAttempt,
               should_stop: Callable[[], bool]) -> FrameArray:
        """Decode latents into frames the way ``attempt`` says; OutOfMemory when the device runs out."""
        ...

    def save_latents(self, latents: Latents, path: str, header: dict[str, str]) -> None:
        """Write the latents with ``header`` as the file's metadata, atomically (a temp file, fsync, rename):
        a failure (a full disk) leaves no file behind and raises OSError."""
        ...

    def load_latents(self, path: str) -> Latents:
        """Latents from a file :meth:`save_latents` wrote; ValueError when it cannot be read."""
        ...

    def peak_memory_bytes(self) -> int | None:
        """The accelerator's peak memory since the last :meth:`reset_peak_memory` (None: not measured here)."""
        ...

    def reset_peak_memory(self) -> None: ...

    def close(self) -> None:
        """Drop the model and give the accelerator memory back."""
        ...


class Backend(Protocol):
    def pick_device(self, choice: str) -> str:
        """``auto`` or a device name -> the device to use; OperationFailed if it is not there."""
        ...

    def versions(self) -> dict[str, str | None]:
        """The versions of the libraries that decide the frames (torch, diffusers), for the recipe."""
        ...

    def load(self, source: hub.ModelSource, device: str, offload: str, params: gen.Params,
             floor: MemoryPlan | None = None, speed: SpeedChoice | None = None) -> LoadedModel:
        """Load ``source`` on ``device`` with a memory plan for jobs like ``params`` (``offload``: the
        config's choice; ``floor``: a plan that worked before for such jobs, where the plan starts at least).
        ``speed``: the GPU speed options asked for (compile...), applied where they can be. UserError for a
        folder that is not a text-to-video pipeline."""
        ...


@dataclass(frozen=True)
class SpeedChoice:
    """The speed options the settings ask for (``compile``, ``speedups``); the backend applies those that
    make sense on the device and says which it applied."""

    compile: bool = False
    speedups: tuple[str, ...] = ()
