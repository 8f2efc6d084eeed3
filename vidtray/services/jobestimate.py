"""The estimate for a request or a queued job, without a worker and without torch: the job's size resolved
as the worker will resolve it (the model's family from its model_index.json, else from the known models),
its device guessed (:func:`estimate.likely_device`), and the planner's figures (the weights' bytes on the
disk) for when this install has no runs of the model. A model that is not downloaded is never fetched: its
estimate is a guess, from the known models' download size where it is one of them.

Used by ``vidtray generate --estimate`` and ``vidtray queue list``; one :class:`Estimator` resolves each model
once, and the history is read once per Estimator.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vidtray.config import Config
from vidtray.errors import UserError
from vidtray.params import Source
from vidtray.services import estimate
from vidtray.services import generation as gen
from vidtray.services.jobrecord import Job as QueuedJob


@dataclass(frozen=True)
class ModelFacts:
    """What the estimate needs to know about a model, read once."""

    family: gen.Family
    cached: bool  # a local folder, or a complete snapshot in the HF cache
    figures: estimate.Figures


@dataclass(frozen=True)
class JobEstimate:
    job: estimate.Job
    estimate: estimate.Estimate
    cached: bool

    def as_dict(self) -> dict[str, object]:
        return {"model": self.job.model, "device": self.job.device, "frames": self.job.frames,
                "width": self.job.width, "height": self.job.height, "steps": self.job.steps,
                "cached": self.cached, "estimate": self.estimate.as_dict()}


_SIZE = re.compile(r"([0-9.]+)\s*([GM])B")


def known_download_bytes(model: str) -> int | None:
    """A known model's download size ("~3.5 GB" in :data:`generation.KNOWN_MODELS`), for a model that is not
    here: the weights are most of it."""
    for known in gen.KNOWN_MODELS:
        if known.repo_id.lower() == model.strip().lower():
            match = _SIZE.search(known.download)
            if match:
                return int(float(match.group(1)) * (1e9 if match.group(2) == "G" else 1e6))
    return None


def model_facts(model: str) -> ModelFacts:
    """The family, whether it is here, and its weights' bytes. A folder that is not a pipeline is a
    UserError; a repo id that is not cached is not (offline included): its estimate is a guess."""
    from vidtray.services import hub

    source: hub.ModelSource
    if hub.is_repo_id(model.strip()) and not Path(model.strip()).expanduser().exists():
        source = hub.ModelSource(model, repo_id=model.strip(), snapshot=hub.cached_snapshot(model.strip()))
    else:
        source = hub.resolve_model(model)
    folder = source.folder
    family = gen.family_for(source.class_name() or gen.known_pipeline(model))
    if folder is not None:
        weights = hub.local_weights_bytes(folder)
    else:
        weights = known_download_bytes(model)
    return ModelFacts(family, folder is not None, estimate.Figures(weights, family.activation_scale))


class Estimator:
    """Estimates for several jobs from one read of the history and one look at each model (``facts``: how
    a model is looked at; the tray passes one that imports no huggingface_hub)."""

    def __init__(self, cfg: Config, runs: list[estimate.Run] | None = None,
                 facts: Callable[[str], ModelFacts] = model_facts) -> None:
        self.cfg = cfg
        self._runs = runs
        self._facts = facts
        self._models: dict[str, ModelFacts] = {}
        self._requests: dict[tuple[str, bool], JobEstimate] = {}

    @property
    def runs(self) -> list[estimate.Run]:
        """This install's runs (its sidecars), read at the first estimate: a queue with nothing waiting reads
        none."""
        if self._runs is None:
            self._runs = estimate.History(self.cfg.videos_dir).runs()
        return self._runs

    def facts(self, model: str) -> ModelFacts:
        if model not in self._models:
            self._models[model] = self._facts(model)
        return self._models[model]

    def for_request(self, req: gen.Request, *, loaded: bool = False, origin: Source | None = None) -> JobEstimate:
        """The estimate for ``req`` as the worker would run it; UserError for what the worker would refuse
        (a bad model folder, a size the model's family cannot make). Kept: the same request again (a queue
        read every few seconds) is not worked out again."""
        key = (repr(req), loaded)
        if key not in self._requests:
            model = req.model or self.cfg.model
            facts = self.facts(model)
            params = gen.resolve_params(req, self.cfg, facts.family, origin or Source.cli())
            device = estimate.likely_device(self.runs, params.model, req.device or self.cfg.device)
            job = estimate.Job(params.model, device, params.frames, params.width, params.height, params.steps)
            why = None if facts.cached else f"{estimate.short_model(model)} is not downloaded yet"
            est = estimate.estimate(self.runs, job, facts.figures, loaded=loaded, guess_why=why)
            self._requests[key] = JobEstimate(job, est, facts.cached)
        return self._requests[key]


@dataclass(frozen=True)
class Timeline:
    """The queue's waiting and running jobs with the time each should take (left, for a running one)."""

    left_s: dict[str, float | None]  # job id -> seconds left (None: no estimate: the job would be refused)
    estimates: dict[str, JobEstimate]
    done_at: float | None  # epoch seconds when the last should be done (None: nothing waiting or running)


def running_left(est: float | None, eta: float | None, updated: str | None, started: str | None,
                 now: float) -> float | None:
    """A running job's time left: the worker's last ETA (its progress) less the time since it was written;
    before the first step, the estimate less the time since the job started."""
    since_update = _age(updated, now)
    if eta is not None and since_update is not None:
        return max(0.0, eta - since_update)
    if est is None:
        return None
    since_start = _age(started, now)
    return max(0.0, est - (since_start or 0.0))


def _age(iso: str | None, now: float) -> float | None:
    from datetime import datetime

    if not iso:
        return None
    try:
        return max(0.0, now - datetime.fromisoformat(iso).timestamp())
    except ValueError:
        return None


def timeline(estimator: Estimator, jobs: list[QueuedJob], now: float | None = None) -> Timeline:
    """Estimates for the running and queued jobs of ``jobs`` (``jobrecord.Job``, in the queue's order); local
    and remote jobs run side by side, so the queue is done when the longer of the two lines is."""
    now = time.time() if now is None else now
    left: dict[str, float | None] = {}
    found: dict[str, JobEstimate] = {}
    lines: dict[str, float] = {}
    last_model: dict[str, tuple[str, str]] = {}  # executor -> the model and device of the job before
    active = [j for j in jobs if j.state in ("running", "queued")]
    active.sort(key=lambda j: j.state != "running")  # the running ones first, as they run
    for job in active:
        executor = job.executor or "local"
        one: JobEstimate | None
        try:
            req = gen.Request.from_dict(job.request)
            model = req.model or estimator.cfg.model
            # A keep-alive worker keeps the model it ran last: the next job of the same model skips the load.
            one = estimator.for_request(req, origin=Source.job(job.id))
            if last_model.get(executor) == (model, one.job.device):
                one = estimator.for_request(req, loaded=True, origin=Source.job(job.id))
        except UserError:
            one = None
        else:
            found[job.id] = one
            last_model[executor] = (model, one.job.device)
        seconds = one.estimate.seconds if one is not None else None
        if job.state == "running":
            prog = job.progress
            seconds = running_left(seconds, prog.eta if prog is not None else None, job.updated, job.started, now)
        left[job.id] = seconds
        lines[executor] = lines.get(executor, 0.0) + (seconds or 0.0)
    return Timeline(left, found, now + max(lines.values()) if lines else None)
