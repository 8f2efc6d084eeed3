"""What the worker needs from a model runtime, and nothing more: pick a device, load a model with a memory
plan, run one job (denoise, then decode) with a step callback and a cancel check, give the memory back.

:mod:`vidtray.services.worker.diffusers_backend` is the one implementation (the only module that imports
torch and diffusers). The job's bookkeeping around it (disk checks, download, events, output files) is the
runner's, so another runtime, or the later split of denoising and decoding (to keep latents and retry a
decode after running out of memory), changes this interface and the backend only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from vidtray.services import generation as gen
from vidtray.services import hub
from vidtray.services.memplan import MemoryPlan

#: Frames as the encoder takes them: uint8, shape (frames, height, width, 3).
FrameArray = npt.NDArray[np.uint8]


class JobCancelled(Exception):
    """The job was cancelled (cancel command, Ctrl-C, parent gone)."""


@dataclass(frozen=True)
class Generated:
    """One job's frames and what making them took (denoise: to the last step; decode: the VAE after it)."""

    frames: FrameArray
    denoise_s: float
    decode_s: float


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

    def suits(self, source: hub.ModelSource, device: str, params: gen.Params) -> bool:
        """Whether a job with ``params`` can run on this model as loaded (else: close it, load again)."""
        ...

    def check_prompt(self, params: gen.Params) -> None:
        """UserError for a prompt the model would cut short."""
        ...

    def generate(self, params: gen.Params, on_step: Callable[[int], None],
                 should_stop: Callable[[], bool]) -> Generated:
        """Denoise and decode one video. ``on_step(i)`` after step i (0-based); JobCancelled within a step of
        ``should_stop()`` turning true; OperationFailed when the device runs out of memory."""
        ...

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

    def load(self, source: hub.ModelSource, device: str, offload: str, params: gen.Params) -> LoadedModel:
        """Load ``source`` on ``device`` with a memory plan for jobs like ``params`` (``offload``: the
        config's choice). UserError for a folder that is not a text-to-video pipeline."""
        ...
