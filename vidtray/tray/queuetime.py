"""When the queue should be done, for the tooltip: :func:`jobestimate.timeline` over the running and waiting
jobs (the same reckoning as ``vidtray queue list``), from this install's history (``services.estimate``).

Called on ``tray-monitor`` (it reads sidecars: never on the UI side). Cheap per tick: the sidecars are
listed again only after a video arrived or every ``HISTORY_EVERY_S``, and a request's estimate is kept until
then. No huggingface_hub here (:func:`tray_facts`): a queued job's family (for its default size) comes from a
local folder's ``model_index.json`` or the list of known models, and the model's size from the Storage
menu's report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from vidtray.config import Config
from vidtray.services import estimate, jobestimate
from vidtray.services import generation as gen
from vidtray.tray.link import Work

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
        self._read_at: float | None = None
        self._videos: int | None = None
        self._sizes: dict[str, int] = {}
        self.estimator = jobestimate.Estimator(cfg, [], tray_facts({}))

    def done_at(self, work: Work, *, videos: int | None = None,
                model_bytes: Mapping[str, int] | None = None) -> float | None:
        """Epoch seconds when the running job and every waiting one should be done (rounded to the minute);
        None when no job runs or nothing waits behind it. ``videos``: the library count (a new video means
        new history); ``model_bytes``: cached models' sizes (repo id -> bytes), for guesses."""
        states = [job.state for job in work.jobs]
        if "running" not in states or "queued" not in states:
            return None
        self._refresh(videos, dict(model_bytes or {}))
        done = jobestimate.timeline(self.estimator, list(work.jobs), self._now()).done_at
        return None if done is None else round(done / ROUND_S) * ROUND_S

    def _refresh(self, videos: int | None, sizes: dict[str, int]) -> None:
        now = self._monotonic()
        if self._read_at is not None and videos == self._videos and now - self._read_at < HISTORY_EVERY_S \
                and sizes == self._sizes:
            return
        runs = self.history.runs()
        if runs != self.estimator.runs or sizes != self._sizes:
            self.estimator = jobestimate.Estimator(self.cfg, runs, tray_facts(sizes))
        self._read_at, self._videos, self._sizes = now, videos, sizes


def tray_facts(sizes: Mapping[str, int]) -> Callable[[str], jobestimate.ModelFacts]:
    """:func:`jobestimate.model_facts` without huggingface_hub: the family from a local folder's
    model_index.json or the known models (a cached repo not among them gets the generic defaults), the
    weights' size from ``sizes`` (the Storage menu's report) or, for a local folder, as ``model_facts`` reads
    it (:func:`hub.local_weights_bytes`)."""

    def facts(model: str) -> jobestimate.ModelFacts:
        from vidtray.services import hub  # light: its huggingface_hub imports are inside the functions used there

        local = hub.looks_like_path(model)
        folder = Path(model).expanduser()
        family = gen.family_for(hub.pipeline_class(folder / "model_index.json") if local
                                else gen.known_pipeline(model))
        weights = hub.local_weights_bytes(folder) if local else sizes.get(model)
        return jobestimate.ModelFacts(family, local or model in sizes,
                                      estimate.Figures(weights, family.activation_scale))

    return facts
