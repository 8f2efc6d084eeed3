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

from vidtray import params
from vidtray.config import DEFAULT_MODEL, Config
from vidtray.errors import UserError
from vidtray.services import generation as gen
from vidtray.services import hub

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
    #: The popup has no fps field: None leaves it to the model family / config, as the CLI does; a recipe
    #: loaded from a video brings its own.
    fps: float | None = None

    def request(self) -> gen.Request:
        return gen.Request(prompt=self.prompt, negative_prompt=self.negative_prompt or None, model=self.model,
                           frames=self.frames, steps=self.steps, height=self.height, width=self.width,
                           fps=self.fps, seed=self.seed)


def validate(values: Mapping[str, str]) -> tuple[JobSpec | None, dict[str, str]]:
    """(spec, {}) when every field is fine, else (None, {field: message})."""
    errors = {name: msg for name in FIELDS if (msg := check_field(name, values.get(name, ""))) is not None}
    if errors:
        return None, errors
    seed = values.get("seed", "").strip()
    model = model_name(values["model"])
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


def model_name(text: str) -> str:
    """The model as a job names it: a repo id as typed, a folder as its absolute path (as the worker records
    it in the sidecar, so the popup's estimate finds the runs of a folder model)."""
    model = text.strip()
    return str(Path(model).expanduser().resolve()) if hub.looks_like_path(model) else model


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


# -- a recipe from a video ---------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """A recipe as the form takes it: a text for each field it has, and the fps it has no field for."""

    values: dict[str, str]
    fps: float | None
    where: str


def load_recipe(path: str | Path) -> Loaded:
    """The recipe of a video (its sidecar, or the recipe inside the file), as field texts. UserError when
    the file carries none, or its values break the schema (the same rules as ``generate --from``)."""
    from vidtray.services import recipe

    file = Path(path)
    found = recipe.from_file(file) if file.is_file() else None
    if found is None:
        raise UserError(f"{file.name} carries no vidtray recipe (no sidecar beside it, none in the file)")
    req = found.request()
    values = {"prompt": req.prompt, "negative_prompt": req.negative_prompt or "", "seed": _text(req.seed)}
    if req.model is not None:
        values["model"] = req.model
    for name in ("frames", "steps", "width", "height"):
        value = getattr(req, name)
        if value is not None:
            values[name] = str(value)
    return Loaded(values, req.fps, found.where)


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


# -- submission -----------------------------------------------------------------------------


@dataclass
class Submitted:
    job_id: str
    detail: dict[str, Any] = field(default_factory=dict)


def submit_job(cfg: Config, spec: JobSpec, source: params.Source | None = None) -> Submitted:
    """Queue ``spec`` for the worker (the one place the popup talks to the queue), checked exactly as
    ``vidtray queue add`` checks a job. ``source`` names the form in errors (default: the popup)."""
    from vidtray.services.queue import open_queue

    req = spec.request()
    check_request(cfg, req, source or params.Source.popup())
    job = open_queue(cfg).submit(req.as_dict())
    return Submitted(job.id, job.to_json())


def check_request(cfg: Config, req: gen.Request, source: params.Source) -> None:
    """The checks a job gets before it is queued: the schema's limits, the model found, and the model's own
    rules (multiples of 16, frames = 4k+1) on what the job would run with. UserError naming ``source``."""
    req.validate(source)
    hub.resolve_model(req.model or cfg.model)
    gen.resolve_params(req, cfg, model_family(req.model or cfg.model), source)
