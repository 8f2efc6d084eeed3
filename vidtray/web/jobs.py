"""The page's use of the generation queue, all in one place: the jobs to show, a cheap version to poll,
submitting (the "New video" form with the popup's fields and checks, "Generate again", "Vary") and cancel.

The queue is the tray's and ``vidtray watch``'s: a job submitted here runs when one of them runs (their
supervisor takes queued jobs), exactly as one from the popup or ``vidtray queue add``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Mapping
from typing import Any

from vidtray import params
from vidtray.config import Config
from vidtray.services import generation as gen
from vidtray.services.queue import JobQueue, open_queue
from vidtray.tray import form

#: Finished jobs shown under the running and queued ones (newest first).
RECENT = 20
#: Where a job from the page says it came from, in its errors.
FORM = params.Source.named("the New video form")

Job = dict[str, Any]


def _plain(job: object) -> Job:
    """A job as a JSON object, whatever the queue hands out (a dict, or a record with ``to_json``)."""
    to_json = getattr(job, "to_json", None)
    out = to_json() if callable(to_json) else job
    if not isinstance(out, dict):
        raise TypeError(f"not a job: {type(job).__name__}")
    return out


_queues: dict[str, JobQueue] = {}
_queues_lock = threading.Lock()


def _queue(cfg: Config) -> JobQueue:
    """One queue object for the page process's whole life: its connection is reused, and its change key
    compares (SQLite's ``data_version`` means something only to the connection that read it before)."""
    key = str(cfg.queue_dir)
    with _queues_lock:
        queue = _queues.get(key)
        if queue is None:
            queue = _queues[key] = open_queue(cfg)
        return queue


def version(cfg: Config) -> str:
    """Changes whenever the queue may have (a job added, claimed, moving on, finished, gone; a pause or a
    resume, by any process): the queue's own change key, no row read."""
    key = repr(_queue(cfg).change_key()).encode()
    return hashlib.blake2s(key, digest_size=8).hexdigest()


def overview(cfg: Config, recent: int = RECENT) -> dict[str, Any]:
    """The running and queued jobs (in the order they run), the latest finished ones, and the pause flag."""
    queue = _queue(cfg)
    jobs = [_plain(j) for j in queue.list()]
    active = [j for j in jobs if j.get("state") in ("running", "queued")]
    active.sort(key=lambda j: (j.get("state") != "running", j.get("seq", 0)))
    done = [j for j in jobs if j.get("state") not in ("running", "queued")]
    done.sort(key=lambda j: str(j.get("finished") or j.get("created") or ""), reverse=True)
    return {"active": active, "recent": done[:recent], "paused": queue.paused()}


def cancel(cfg: Config, job_id: str) -> Job:
    return _plain(_queue(cfg).cancel(job_id))


def submit(cfg: Config, req: gen.Request, source: params.Source = FORM) -> Job:
    """Queue ``req`` after the checks every job gets (``form.check_request``: the popup's and the CLI's)."""
    form.check_request(cfg, req, source)
    return _plain(_queue(cfg).submit(req.as_dict()))


def submit_form(cfg: Config, values: Mapping[str, str]) -> tuple[Job | None, dict[str, str]]:
    """The "New video" form: each field checked as the popup checks it (``form.validate``); (job, {}) or
    (None, {field: message})."""
    spec, errors = form.validate(values)
    if spec is None:
        return None, errors
    return _plain(form.submit_job(cfg, spec, FORM).detail), {}


def again(cfg: Config, req: gen.Request, *, vary: bool) -> Job:
    """"Generate again" (the same request, seed included) or "Vary" (a new seed)."""
    if vary:
        req = dataclasses.replace(req, seed=gen.new_seed())
    return submit(cfg, req, params.Source.named("the recipe"))


def form_fields() -> list[params.Field]:
    """The popup's fields with their limits (the page sets min, max and step from them); the seed last, so
    that width and height share a row in the page's two columns."""
    return sorted((params.FIELDS[name] for name in form.FIELDS), key=lambda f: f.name == "seed")


def check_field(name: str, text: str) -> str | None:
    """One field as the popup checks it while typing (None: fine)."""
    if name not in form.FIELDS:
        return f"unknown field {name!r}"
    return form.check_field(name, text)


def model_choices(cfg: Config) -> list[str]:
    from vidtray.services import hub

    cached, _warnings = hub.cached_pipelines()
    return form.model_choices(cfg, cached)


def model_defaults(cfg: Config, model: str) -> dict[str, int]:
    return form.model_defaults(model, cfg)
