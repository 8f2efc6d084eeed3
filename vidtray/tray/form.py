"""The prompt popup's logic without Tk: field validation, model choices and sizes, job submission.

Everything here runs in the popup process (never in the tray: ``huggingface_hub`` is imported
lazily and costs memory the tray does not spend). Validation is one pure function per field,
so the window can check a field on every keystroke and tests need no display.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidtray.config import DEFAULT_MODEL, Config
from vidtray.services.fsutil import human_size

log = logging.getLogger("vidtray.popup")

# Bounds for one job. Wide enough for every text-to-video model we know of, narrow enough that
# a typo (an extra 0) is caught before it takes the GPU for an hour or runs out of memory.
LIMITS: dict[str, tuple[int, int]] = {
    "frames": (1, 512),
    "steps": (1, 500),
    "width": (64, 2048),
    "height": (64, 2048),
}
SEED_MAX = 2**32 - 1  # numpy's seed range, which some pipelines pass the seed through
PROMPT_MAX = 2000

# Known defaults (native size, frame count) per model; anything else gets the config's [generation].
MODEL_DEFAULTS: dict[str, dict[str, int]] = {
    "cerspense/zeroscope_v2_576w": {"width": 576, "height": 320, "frames": 24},
    "cerspense/zeroscope_v2_xl": {"width": 1024, "height": 576, "frames": 24},
    "cerspense/zeroscope_v2_dark_30x448x256": {"width": 448, "height": 256, "frames": 30},
    "damo-vilab/text-to-video-ms-1.7b": {"width": 256, "height": 256, "frames": 16},
    "ali-vilab/text-to-video-ms-1.7b": {"width": 256, "height": 256, "frames": 16},
}

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")

FIELDS = ("prompt", "negative_prompt", "model", "frames", "steps", "seed", "width", "height")


# -- validation -----------------------------------------------------------------------------


def check_prompt(text: str) -> str | None:
    """An error message for the field, or None when it is fine (same for every check_*)."""
    if not text.strip():
        return "Type what the video should show"
    if len(text) > PROMPT_MAX:
        return f"At most {PROMPT_MAX} characters ({len(text)} now)"
    return None


def check_negative(text: str) -> str | None:
    if len(text) > PROMPT_MAX:
        return f"At most {PROMPT_MAX} characters ({len(text)} now)"
    return None


def check_int(name: str, text: str) -> str | None:
    lo, hi = LIMITS[name]
    text = text.strip()
    if not text:
        return "Required"
    try:
        value = int(text)
    except ValueError:
        return "Must be a whole number"
    if not lo <= value <= hi:
        return f"Must be between {lo} and {hi}"
    if name in ("width", "height") and value % 8:
        return f"Must be a multiple of 8 (try {max(lo, value - value % 8)})"
    return None


def check_seed(text: str) -> str | None:
    text = text.strip()
    if not text:
        return None  # empty = a random seed
    try:
        value = int(text)
    except ValueError:
        return "Must be a whole number, or empty for a random seed"
    if not 0 <= value <= SEED_MAX:
        return f"Must be between 0 and {SEED_MAX}"
    return None


def check_model(text: str) -> str | None:
    text = text.strip()
    if not text:
        return "Choose a model"
    if looks_like_path(text):
        path = Path(text).expanduser()
        if not path.is_dir():
            return "No such folder"
        if not (path / "model_index.json").is_file():
            return "Not a diffusers pipeline folder (no model_index.json)"
        return None
    if not _REPO_ID.match(text):
        return "Not a Hugging Face repo id (owner/name) or a folder"
    return None


def looks_like_path(text: str) -> bool:
    return text.startswith(("/", "~", ".", "\\")) or (len(text) > 1 and text[1] == ":") or os.sep + os.sep in text


def check_field(name: str, text: str) -> str | None:
    if name == "prompt":
        return check_prompt(text)
    if name == "negative_prompt":
        return check_negative(text)
    if name == "model":
        return check_model(text)
    if name == "seed":
        return check_seed(text)
    return check_int(name, text)


@dataclass(frozen=True)
class JobSpec:
    """A validated request: what the queue gets."""

    prompt: str
    negative_prompt: str
    model: str
    frames: int
    steps: int
    width: int
    height: int
    seed: int | None
    fps: int

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def validate(values: Mapping[str, str], fps: int) -> tuple[JobSpec | None, dict[str, str]]:
    """(spec, {}) when every field is fine, else (None, {field: message})."""
    errors = {name: msg for name in FIELDS if (msg := check_field(name, values.get(name, ""))) is not None}
    if errors:
        return None, errors
    seed = values.get("seed", "").strip()
    model = values["model"].strip()
    if looks_like_path(model):
        model = str(Path(model).expanduser().resolve())
    spec = JobSpec(
        prompt=" ".join(values["prompt"].split()),
        negative_prompt=" ".join(values.get("negative_prompt", "").split()),
        model=model,
        frames=int(values["frames"]),
        steps=int(values["steps"]),
        width=int(values["width"]),
        height=int(values["height"]),
        seed=int(seed) if seed else None,
        fps=fps,
    )
    return spec, {}


# -- models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedModel:
    repo_id: str
    size_bytes: int
    last_accessed: float


def cached_pipelines(cache_dir: str | os.PathLike[str] | None = None) -> tuple[list[CachedModel], list[str]]:
    """Diffusers pipelines in the Hugging Face cache (a ``model_index.json`` in some revision),
    most recently used first, plus the scan's warnings (broken or partial repos)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return [], []
    except OSError as exc:
        return [], [f"cannot read the model cache: {exc}"]
    found = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        if any(f.file_name == "model_index.json" for rev in repo.revisions for f in rev.files):
            found.append(CachedModel(repo.repo_id, repo.size_on_disk, repo.last_accessed))
    found.sort(key=lambda m: -m.last_accessed)
    return found, [str(w) for w in info.warnings]


def model_choices(cfg: Config, cached: Iterable[CachedModel]) -> list[str]:
    """Cached pipelines first, then the configured model and the default if not among them."""
    out: list[str] = []
    for name in [m.repo_id for m in cached] + [cfg.model, DEFAULT_MODEL]:
        if name not in out:
            out.append(name)
    return out


def model_defaults(model: str, cfg: Config) -> dict[str, int]:
    """Frames/steps/size to prefill for ``model``: the config's for the configured model, a known
    model's native size otherwise (steps from the config)."""
    gen = cfg.generation
    base = {"frames": gen.frames, "steps": gen.steps, "width": gen.width, "height": gen.height}
    if model == cfg.model:
        return base
    known = MODEL_DEFAULTS.get(model.lower())
    return {**base, **known} if known else base


_SKIP_EXT = (".msgpack", ".h5", ".onnx", ".onnx_data", ".ot", ".tflite", ".mlmodel")
_PT_EXT = (".bin", ".pt", ".pth", ".ckpt")
_WEIGHT_EXT = _PT_EXT + (".safetensors",) + _SKIP_EXT
_CONFIGS = ("config.json", "scheduler_config.json", "tokenizer_config.json", "preprocessor_config.json")


def estimate_download(files: Mapping[str, int]) -> int:
    """Bytes a diffusers pipeline download fetches, from the repo's ``{path: size}``.

    Approximates diffusers' own choice: the root's small files plus the component folders
    (those with a config file); safetensors over PyTorch pickles; no Flax/ONNX/TF weights;
    no ``.fp16.`` variant when the plain file exists. Original (non-diffusers) checkpoints in
    other folders, as zeroscope ships, are not fetched.
    """
    folders: dict[str, dict[str, int]] = {}
    total = 0
    for path, size in files.items():
        folder, _, name = path.rpartition("/")
        if not folder:
            if not name.endswith(_WEIGHT_EXT):
                total += size
            continue
        folders.setdefault(folder, {})[name] = size
    for folder, names in folders.items():
        if "/" in folder or not any(n in names for n in _CONFIGS):
            continue
        has_safetensors = any(n.endswith(".safetensors") for n in names)
        for name, size in names.items():
            if name.endswith(_SKIP_EXT) or (has_safetensors and name.endswith(_PT_EXT)):
                continue
            if ".fp16." in name and name.replace(".fp16.", ".") in names:
                continue
            total += size
    return total


def download_size(repo_id: str, timeout: float = 10.0) -> tuple[int | None, str]:
    """(bytes, text) for the model info line; (None, why) when offline or the Hub is unreachable."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return None, "not downloaded yet; download size unknown (offline)"
    try:
        info = HfApi().model_info(repo_id, files_metadata=True, timeout=timeout)
    except Exception as exc:  # any network/HTTP error means "we could not find out"
        name = type(exc).__name__
        if "NotFound" in name:
            return None, f"{repo_id} is not on the Hugging Face Hub"
        log.info("model_info(%s) failed: %s", repo_id, exc)
        return None, "not downloaded yet; download size unknown (Hub not reachable)"
    size = estimate_download({s.rfilename: s.size or 0 for s in info.siblings or []})
    return size, f"not downloaded yet: about {human_size(size)} to download"


# -- disk -----------------------------------------------------------------------------------


def free_bytes(path: Path) -> int | None:
    """Free space of the volume holding ``path`` (its nearest existing parent); None if unknown."""
    from vidtray.services.storage import free_bytes as storage_free_bytes

    return storage_free_bytes(path)


def hf_cache_dir() -> Path:
    from vidtray.services.storage import hf_cache_dir as storage_hf_cache_dir

    return storage_hf_cache_dir()


# -- submission -----------------------------------------------------------------------------


@dataclass
class Submitted:
    job_id: str
    detail: dict[str, Any] = field(default_factory=dict)


def submit_job(cfg: Config, spec: JobSpec) -> Submitted:
    """Queue ``spec`` for the worker (the one place the popup talks to the queue)."""
    from vidtray.services import queue

    job = queue.submit(cfg, spec.as_dict())  # wired to the generation issue's queue
    return Submitted(str(job["id"]) if isinstance(job, dict) else str(job))
