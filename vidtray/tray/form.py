"""The prompt popup's logic without Tk: field validation, model choices and sizes, job submission.

Everything here runs in the popup process (never in the tray: ``huggingface_hub`` is imported
lazily and costs memory the tray does not spend). Validation is one pure function per field,
so the window can check a field on every keystroke and tests need no display.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidtray import params
from vidtray.config import DEFAULT_MODEL, Config
from vidtray.errors import UserError
from vidtray.services import generation as gen
from vidtray.services.fsutil import human_size

log = logging.getLogger("vidtray.popup")

FIELDS = ("prompt", "negative_prompt", "model", "frames", "steps", "seed", "width", "height")
#: Number fields the popup may leave empty (the schema says what empty means); the others it prefills.
OPTIONAL = ("seed",)


# -- validation -----------------------------------------------------------------------------
# The limits are the generation-parameter schema's (vidtray.params), as for the CLI and the queue;
# here each field's problem is worded for a form, which shows the value already.


def check_prompt(text: str) -> str | None:
    """An error message for the field, or None when it is fine (same for every check_*)."""
    if not text.strip():
        return "Type what the video should show"
    return _short(params.problem("prompt", text))


def check_negative(text: str) -> str | None:
    return _short(params.problem("negative_prompt", text))


def check_int(name: str, text: str) -> str | None:
    """A number field: empty is "Required" unless the field is OPTIONAL."""
    if not text.strip():
        return None if name in OPTIONAL else "Required"
    _value, found = params.parse_problem(name, text)
    return _short(found, empty_ok=name in OPTIONAL)


def check_seed(text: str) -> str | None:
    return check_int("seed", text)


def _short(found: params.Problem | None, *, empty_ok: bool = False) -> str | None:
    return None if found is None else found.short(empty_ok=empty_ok)


def check_model(text: str) -> str | None:
    """The generation service's own check: a pipeline folder, or a repo id that is cached or can be
    downloaded (not while HF_HUB_OFFLINE is set)."""
    text = text.strip()
    if not text:
        return "Choose a model"
    try:
        gen.resolve_model(text)
    except UserError as exc:
        return str(exc)
    return None


def looks_like_path(text: str) -> bool:
    return gen.looks_like_path(text) or Path(text).expanduser().exists()


def check_field(name: str, text: str) -> str | None:
    if name == "prompt":
        return check_prompt(text)
    if name == "negative_prompt":
        return check_negative(text)
    if name == "model":
        return check_model(text)
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

    def request(self) -> gen.Request:
        """The generation request (fps is left to the model family / config, as the CLI does)."""
        return gen.Request(prompt=self.prompt, negative_prompt=self.negative_prompt or None, model=self.model,
                           frames=self.frames, steps=self.steps, height=self.height, width=self.width,
                           seed=self.seed)


def validate(values: Mapping[str, str]) -> tuple[JobSpec | None, dict[str, str]]:
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


def model_family(model: str) -> gen.Family:
    """The pipeline family of ``model``: from its model_index.json when it is here, else from the list of
    known models, else the generic defaults."""
    class_name = None
    try:
        class_name = gen.resolve_model(model).class_name()
    except UserError:
        pass
    return gen.family_for(class_name or gen.known_pipeline(model))


def model_defaults(model: str, cfg: Config) -> dict[str, int]:
    """Frames, steps and size to prefill for ``model``, resolved exactly as a job without them would be."""
    family = model_family(model)
    try:
        p = gen.resolve_params(gen.Request(prompt="-", model=model), cfg, family)
    except UserError:  # the config's [generation] does not fit this family: the family's own defaults
        return {"frames": family.frames, "steps": cfg.generation.steps, "width": family.width,
                "height": family.height}
    return {"frames": p.frames, "steps": p.steps, "width": p.width, "height": p.height}


_CONFIGS = ("config.json", "scheduler_config.json", "tokenizer_config.json", "preprocessor_config.json")


def estimate_download(files: Mapping[str, int]) -> int:
    """Bytes a pipeline download fetches, from the repo's ``{path: size}``, without fetching anything.

    The component folders are guessed (top-level folders with a config file: model_index.json would
    name them, but reading it writes to the cache) and the files chosen as the generation service
    chooses them (``generation.select_pipeline_files``). Original checkpoints in other folders, as
    zeroscope ships, are not counted.
    """
    components = sorted({path.split("/", 1)[0] for path in files
                         if path.count("/") == 1 and path.split("/", 1)[1] in _CONFIGS})
    return sum(size for _name, size in gen.select_pipeline_files(list(files.items()), components))


def download_size(repo_id: str, timeout: float = 10.0) -> tuple[int | None, str]:
    """(bytes, text) for the model info line; (None, why) when offline or the Hub is unreachable."""
    from huggingface_hub import HfApi

    if gen.hf_offline():
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
    return gen.hf_cache_dir()


# -- submission -----------------------------------------------------------------------------


@dataclass
class Submitted:
    job_id: str
    detail: dict[str, Any] = field(default_factory=dict)


def submit_job(cfg: Config, spec: JobSpec) -> Submitted:
    """Queue ``spec`` for the worker (the one place the popup talks to the queue), checked exactly as
    ``vidtray queue add`` checks a job."""
    from vidtray.services.queue import open_queue

    req = spec.request()
    popup = params.Source.popup()
    req.validate(popup)
    gen.resolve_model(req.model or cfg.model)
    # The model's own rules (multiples of 16, frames = 4k+1) on what the job would run with.
    gen.resolve_params(req, cfg, model_family(req.model or cfg.model), popup)
    job = open_queue(cfg).submit(req.as_dict())
    return Submitted(str(job["id"]), job)
