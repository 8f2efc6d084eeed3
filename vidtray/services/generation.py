"""Generation without torch: requests and their validation, model families, output names and the disk
check before a generation. Finding and downloading a model is ``vidtray.services.hub``'s.

Everything here is cheap to import: the CLI and the supervisor use it to refuse bad input before a
worker process (and torch) is started; the worker uses the same functions so both sides agree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidtray import params
from vidtray.config import Config, Generation
from vidtray.errors import OperationFailed
from vidtray.params import MAX_FRAMES, Source
from vidtray.paths import free_bytes
from vidtray.services.fsutil import human_size
from vidtray.services.sidecar import sidecar_path

log = logging.getLogger("vidtray.generation")

GIB = 1024**3


# -- model families ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """What differs between diffusers text-to-video pipelines, keyed by model_index.json's _class_name."""

    name: str
    height: int
    width: int
    frames: int
    fps: int
    size_multiple: int = 8
    # frames must satisfy frames % frames_mod == frames_rem (the video VAE's temporal compression)
    frames_mod: int = 1
    frames_rem: int = 0
    max_frames: int = MAX_FRAMES
    gpu_dtype: str = "float16"
    # per-component dtype overrides on a GPU (Wan's VAE is meant to run in float32)
    component_dtypes: Mapping[str, str] = field(default_factory=dict)
    # memplan's activation estimate is calibrated on UNet3D latents (8x spatial, no temporal compression);
    # video VAEs that also compress time give fewer latents. A rough factor, not a measurement.
    activation_scale: float = 1.0


FAMILIES: dict[str, Family] = {
    # zeroscope / ModelScope UNet3D: only the legacy `callback` (cancel by raising from it)
    "TextToVideoSDPipeline": Family("zeroscope", 320, 576, 24, 8),
    # 32x spatial and 8x temporal compression
    "LTXPipeline": Family("ltx-video", 480, 704, 121, 24, size_multiple=32, frames_mod=8, frames_rem=1,
                          gpu_dtype="bfloat16", activation_scale=0.05),
    # 8x spatial, 4x temporal
    "WanPipeline": Family("wan", 480, 832, 81, 16, size_multiple=16, frames_mod=4, frames_rem=1,
                          gpu_dtype="bfloat16", component_dtypes={"vae": "float32"}, activation_scale=0.25),
    "CogVideoXPipeline": Family("cogvideox", 480, 720, 49, 8, frames_mod=4, frames_rem=1, max_frames=49,
                                activation_scale=0.25),
}
GENERIC = Family("generic", 320, 576, 24, 8)


def family_for(class_name: str | None) -> Family:
    return FAMILIES.get(class_name or "", GENERIC)


@dataclass(frozen=True)
class KnownModel:
    repo_id: str
    pipeline: str
    download: str
    gpu_memory: str
    licence: str
    note: str = ""


# Figures are approximate (model cards, fp16/bf16); `vidtray models pull` checks the real size first.
KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("cerspense/zeroscope_v2_576w", "TextToVideoSDPipeline", "~3.5 GB",
               "~8 GB (fp16, 576x320, 24 frames, model offload)", "cc-by-nc-4.0",
               "non-commercial use only; the default model"),
    KnownModel("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "WanPipeline", "~17 GB",
               "~8 GB (bf16, 832x480, model offload)", "Apache-2.0", "commercial use allowed"),
    KnownModel("THUDM/CogVideoX-2b", "CogVideoXPipeline", "~13 GB",
               "~12.5 GB (fp16, 720x480; less with offload)", "Apache-2.0", "49 frames max"),
)


def known_pipeline(model: str) -> str | None:
    """The pipeline class of a model in :data:`KNOWN_MODELS` (its family before it is downloaded)."""
    return next((k.pipeline for k in KNOWN_MODELS if k.repo_id.lower() == model.strip().lower()), None)


# -- requests ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One generation as asked for. ``None`` means "the default" (config, then the model family)."""

    prompt: str
    negative_prompt: str | None = None
    model: str | None = None
    frames: int | None = None
    steps: int | None = None
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    seed: int | None = None
    device: str | None = None

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, object], source: Source = params.REQUEST) -> Request:
        """A checked request from a dict (a job file, the daemon's callers); UserError naming ``source``."""
        return cls(**params.check_request(raw, source))

    def validate(self, source: Source = params.REQUEST) -> None:
        """Checks that need no model (the schema's limits). Raises UserError (exit 2) naming the bad value
        and where it came from."""
        params.check_request(self.as_dict(), source)


@dataclass(frozen=True)
class Params:
    """A request with every default filled in: what the pipeline is called with and what the sidecar keeps."""

    prompt: str
    negative_prompt: str | None
    model: str
    frames: int
    steps: int
    height: int
    width: int
    fps: float
    seed: int

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def resolve_params(req: Request, cfg: Config, family: Family, source: Source = params.REQUEST) -> Params:
    """Fill defaults: the request, then a [generation] value the user changed, then the family's, then
    the config's. The built-in [generation] defaults are zeroscope's, so for other families the family
    default wins unless the user set the key. The result is checked against the schema and the family's
    rules, each value named by where it came from (``source``, the config's key, the family)."""
    builtin = Generation()
    origins: dict[str, Source] = {}

    def pick(name: str) -> Any:  # Any: an int or a float, by the field ``name``
        given = getattr(req, name)
        if given is not None:
            origins[name] = source
            return given
        configured = getattr(cfg.generation, name)
        if configured != getattr(builtin, name) or not hasattr(family, name):
            origins[name] = Source.config(cfg.source)
            return configured
        origins[name] = Source.family(family.name)
        return getattr(family, name)

    result = Params(
        prompt=req.prompt.strip(),
        negative_prompt=(req.negative_prompt.strip() or None) if req.negative_prompt else None,
        model=req.model or cfg.model,
        frames=pick("frames"),
        steps=pick("steps"),
        height=pick("height"),
        width=pick("width"),
        fps=pick("fps"),
        seed=req.seed if req.seed is not None else new_seed(),
    )
    params.check_resolved(result.as_dict(), family, origins, default=source)
    return result


def new_seed() -> int:
    """A random seed that fits every generator (32 bits, like most UIs show)."""
    return secrets.randbelow(2**32)


# -- names ------------------------------------------------------------------------------------------


def model_slug(model: str) -> str:
    """``zeroscope`` for the zeroscope models, else the last path/repo part, lower-case ``[a-z0-9-]``."""
    if "zeroscope" in model.lower():
        return "zeroscope"
    last = re.split(r"[/\\]", model.rstrip("/\\"))[-1].lower()
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", last)).strip("-")
    return slug or "video"


def params_hash(params: Params) -> str:
    """First 8 hex digits of a hash of prompt + parameters + seed (stable across runs and machines)."""
    doc = json.dumps(params.as_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()[:8]


def video_stem(params: Params, when: float, videos_dir: Path) -> str:
    """``<slug>_<YYYYMMDD-HHMMSS>_<hash8>``, with ``-2``, ``-3`` ... only if that name is taken
    (the same job twice in one second)."""
    import time

    base = f"{model_slug(params.model)}_{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}_" \
           f"{params_hash(params)}"
    stem, n = base, 1
    while (videos_dir / f"{stem}.mp4").exists() or sidecar_path(videos_dir / f"{stem}.mp4").exists():
        n += 1
        stem = f"{base}-{n}"
    return stem


# -- disk --------------------------------------------------------------------------------------------


def check_output_space(cfg: Config) -> None:
    """Refuse (OperationFailed) when the videos folder's volume has less than ``min_free_gb`` free."""
    need = int(cfg.min_free_gb * GIB)
    free = free_bytes(cfg.videos_dir)
    if free is not None and free < need:
        raise OperationFailed(
            f"not enough disk space for a new video: {human_size(free)} free where videos go "
            f"({cfg.videos_dir}), {human_size(need)} needed (min_free_gb = {cfg.min_free_gb:g})"
        )
