"""When the queue should be done, for the tooltip: the running job's time left, then each waiting job's
estimate from this install's history (``services.estimate``).

Called on ``tray-monitor`` (it reads sidecars: never on the UI side). Cheap per tick: the sidecars are
listed again only after a video arrived or every ``HISTORY_EVERY_S``, and a request's estimate is kept until
then. No huggingface_hub here: a queued job's family (for its default size) comes from a local folder's
``model_index.json`` or the list of known models, and the model's size from the Storage menu's report.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping

from vidtray.config import Config
from vidtray.errors import VidtrayError
from vidtray.services import estimate
from vidtray.services import generation as gen
from vidtray.services.records import JsonObject
from vidtray.tray.link import Work
from vidtray.tray.state import JobView

log = logging.getLogger("vidtray.tray")

HISTORY_EVERY_S = 60.0  # the sidecars are re-listed at least this often (and after each new video)
ROUND_S = 60.0  # the done time is shown to the minute: rounded, the state stays the same between ticks


class QueueTime:
    def __init__(self, cfg: Config, *, now: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.history = estimate.History(cfg.videos_dir)
        self._now = now
        self._monotonic = monotonic
        self._runs: list[estimate.Run] = []
        self._read_at: float | None = None
        self._videos: int | None = None
        self._seconds: dict[tuple[str, bool, int | None], float | None] = {}

    def done_at(self, job: JobView | None, work: Work, *, videos: int | None = None,
                model_bytes: Mapping[str, int] | None = None) -> float | None:
        """Epoch seconds when the running job and every waiting one should be done (rounded to the minute);
        None when no job runs or nothing waits behind it. ``videos``: the library count (a new video means
        new history); ``model_bytes``: cached models' sizes (repo id -> bytes), for guesses."""
        if job is None or work.running is None or not work.waiting:
            return None
        self._refresh(videos)
        sizes = model_bytes or {}
        now = self._now()
        left = job.eta
        if left is not None and work.since is not None:  # the time left as the worker said it, less since then
            left = max(0.0, left - max(0.0, now - work.since))
        if left is None:
            left = 0.0 if job.phase == "cancelling" else self._seconds_for(work.running, loaded=False, sizes=sizes)
        previous = self._model(work.running)
        total = left or 0.0
        for request in work.waiting:
            model = self._model(request)
            total += self._seconds_for(request, loaded=model == previous, sizes=sizes) or 0.0
            previous = model
        return round((now + total) / ROUND_S) * ROUND_S

    def _refresh(self, videos: int | None) -> None:
        now = self._monotonic()
        if self._read_at is not None and videos == self._videos and now - self._read_at < HISTORY_EVERY_S:
            return
        runs = self.history.runs()
        if runs != self._runs:
            self._seconds.clear()
        self._runs, self._read_at, self._videos = runs, now, videos

    def _model(self, request: JsonObject) -> str:
        return str(request.get("model") or self.cfg.model)

    def _seconds_for(self, request: JsonObject, *, loaded: bool, sizes: Mapping[str, int]) -> float | None:
        model = self._model(request)
        key = (json.dumps(request, sort_keys=True, default=str), loaded, sizes.get(model))
        if key not in self._seconds:
            self._seconds[key] = self._estimate(request, loaded, sizes.get(model))
        return self._seconds[key]

    def _estimate(self, request: JsonObject, loaded: bool, weights: int | None) -> float | None:
        """A request's whole time (None: it cannot be read; the worker will say why when it gets there)."""
        try:
            req = gen.Request.from_dict(request)
            model = req.model or self.cfg.model
            family = gen.family_for(pipeline_of(model))
            params = gen.resolve_params(req, self.cfg, family)
        except (VidtrayError, ValueError, TypeError) as exc:
            log.debug("no estimate for a queued job: %s", exc)
            return None
        device = estimate.likely_device(self._runs, model, req.device or self.cfg.device)
        job = estimate.Job(model, device, params.frames, params.width, params.height, params.steps)
        figures = estimate.Figures(weights, family.activation_scale)
        return estimate.estimate(self._runs, job, figures, loaded=loaded).seconds


def pipeline_of(model: str) -> str | None:
    """The pipeline class of ``model`` without huggingface_hub: a local folder's model_index.json, else the
    list of known models (a cached repo not in that list gets the generic defaults)."""
    from pathlib import Path

    from vidtray.services import hub  # light: its huggingface_hub imports are inside the functions used there

    if hub.looks_like_path(model):
        return hub.pipeline_class(Path(model).expanduser() / "model_index.json")
    return gen.known_pipeline(model)
