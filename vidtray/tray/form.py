"""The prompt popup's logic without Tk: field validation, model choices and defaults, job submission.

Everything here runs in the popup process (never in the tray: ``services.hub`` imports
``huggingface_hub``, which costs memory the tray does not spend). Validation is one pure function per field,
so the window can check a field on every keystroke and tests need no display.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidtray.config import DEFAULT_MODEL, Config
from vidtray.errors import UserError
from vidtray.services import generation as gen
from vidtray.services import hub

log = logging.getLogger("vidtray.popup")

# The generation service's own bounds, so the popup and `vidtray generate` agree on what is valid.
LIMITS: dict[str, tuple[int, int]] = {
    "frames": (1, gen.MAX_FRAMES),
    "steps": (1, gen.MAX_STEPS),
    "width": (gen.MIN_SIDE, gen.MAX_SIDE),
    "height": (gen.MIN_SIDE, gen.MAX_SIDE),
}
SEED_MAX = gen.MAX_SEED
PROMPT_MAX = gen.MAX_PROMPT_CHARS

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
    """The generation service's own check: a pipeline folder, or a repo id that is cached or can be
    downloaded (not while HF_HUB_OFFLINE is set)."""
    text = text.strip()
    if not text:
        return "Choose a model"
    try:
        hub.resolve_model(text)
    except UserError as exc:
        return str(exc)
    return None


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
    if hub.looks_like_path(model):
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


def model_choices(cfg: Config, cached: Iterable[hub.CachedRepo]) -> list[str]:
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
        class_name = hub.resolve_model(model).class_name()
    except UserError:
        pass
    if class_name is None:
        class_name = next((k.pipeline for k in gen.KNOWN_MODELS if k.repo_id.lower() == model.strip().lower()), None)
    return gen.family_for(class_name)


def model_defaults(model: str, cfg: Config) -> dict[str, int]:
    """Frames, steps and size to prefill for ``model``, resolved exactly as a job without them would be."""
    family = model_family(model)
    try:
        p = gen.resolve_params(gen.Request(prompt="-", model=model), cfg, family)
    except UserError:  # the config's [generation] does not fit this family: the family's own defaults
        return {"frames": family.frames, "steps": cfg.generation.steps, "width": family.width,
                "height": family.height}
    return {"frames": p.frames, "steps": p.steps, "width": p.width, "height": p.height}


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
    req.validate()
    hub.resolve_model(req.model or cfg.model)
    job = open_queue(cfg).submit(req.as_dict())
    return Submitted(str(job["id"]), job)
