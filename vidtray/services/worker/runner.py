"""One job from request to finished video, and the model kept loaded between jobs.

validate -> disk checks -> find/download the model -> load (or reuse, with the memory plan that worked
before for such jobs) -> frames (:mod:`~vidtray.services.worker.render`: resume from saved latents, or
denoise and save them; decode; recover from running out of memory) -> write
(:mod:`~vidtray.services.worker.output`) -> remove the latents -> library.json, reporting protocol events on
the way (progress with the time left: the steps at this pace, plus decode and encode from this install's
history). Used in-process by tests and by the command loop in the worker process.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from vidtray.config import Config
from vidtray.params import Source
from vidtray.paths import hf_cache_dir
from vidtray.services import estimate, hub, modeluse, planmemory
from vidtray.services import generation as gen
from vidtray.services.protocol import (
    AnyEvent,
    Download,
    JobStarted,
    Loaded,
    Loading,
    Progress,
    VideoResult,
    WarningEvent,
)
from vidtray.services.worker import latents
from vidtray.services.worker.backend import Backend, JobCancelled, LoadedModel, SpeedChoice
from vidtray.services.worker.output import HowMade, add_to_library, write_video
from vidtray.services.worker.render import Made, Render

log = logging.getLogger("vidtray.worker")

Emit = Callable[[AnyEvent], None]
#: What a signal may interrupt at once: idle and prepare (nothing to clean up); the rest stops at the
#: next step or frame through the cancel flag.
Phase = Literal["idle", "prepare", "denoise", "encode"]


class Worker:
    """Runs jobs on one loaded model at a time."""

    def __init__(self, cfg: Config, emit: Emit | None = None, backend: Backend | None = None, *,
                 library: bool = True) -> None:
        self.cfg = cfg
        # False on a GPU server (``vidtray server``): the video and its sidecar are fetched by a desktop,
        # whose library gets the item; the server keeps no library.json and no thumbnails.
        self.library = library
        self.emit: Emit = emit or (lambda event: None)
        if backend is None:
            from vidtray.services.worker.diffusers_backend import DiffusersBackend

            backend = DiffusersBackend()
        self.backend: Backend = backend
        self.loaded: LoadedModel | None = None
        self.phase: Phase = "idle"
        self.history = estimate.History(cfg.videos_dir)

    # -- public
    def run_job(self, job_id: str, request: gen.Request, cancel: threading.Event | None = None,
                origin: Source | None = None) -> VideoResult:
        """Run one job to a finished video; raises UserError (naming ``origin``, by default the job),
        OperationFailed or JobCancelled."""
        cancel = cancel or threading.Event()
        origin = origin or Source.job(job_id)
        t_start = time.perf_counter()
        request.validate(origin)
        self.phase = "prepare"
        try:
            # Disk first: a refusal must come before minutes of download or loading.
            gen.check_output_space(self.cfg)
            source = hub.resolve_model(request.model or self.cfg.model)
            device = self.backend.pick_device(request.device or self.cfg.device)
            t_dl = time.perf_counter()
            if source.repo_id is not None and source.snapshot is None:
                source = self._download(job_id, source)
            download_s = time.perf_counter() - t_dl
            if cancel.is_set():
                raise JobCancelled()
            # Defaults need the family; the family is known from model_index.json before loading.
            family = gen.family_for(source.class_name())
            request = self._seed_of_saved_latents(job_id, request)
            params = gen.resolve_params(request, self.cfg, family, origin)
            plan_key = planmemory.key(params.model, device, params.width, params.height, params.frames)
            remembered = planmemory.recall(self.cfg.paths.memory_plans_file, plan_key)
            loaded, reused = self._ensure_loaded(job_id, source, device, params, remembered)
            if source.repo_id is not None:  # "last used", for the budget (access times cannot tell)
                modeluse.record_use(self.cfg.paths.model_use_file, source.repo_id)
            if loaded.family is not family:  # model_index.json lied or was missing: redo with the real one
                params = gen.resolve_params(dataclasses.replace(request, seed=params.seed), self.cfg,
                                            loaded.family, origin)
            loaded.check_prompt(params)
            if cancel.is_set():
                raise JobCancelled()
            made = self._frames(job_id, loaded, params, cancel, plan_key, remembered)
            return self._write(job_id, loaded, reused, params, made, cancel, t_start, download_s)
        finally:
            self.phase = "idle"

    def close(self) -> None:
        """Drop the model and give the accelerator memory back."""
        loaded, self.loaded = self.loaded, None
        if loaded is not None:
            loaded.close()

    # -- steps
    def _download(self, job_id: str, source: hub.ModelSource) -> hub.ModelSource:
        assert source.repo_id is not None
        cache = hf_cache_dir()
        plan = hub.plan_download(source.repo_id, cache_dir=cache)
        hub.check_download_space(plan, cache_dir=cache)
        self.emit(Download(job=job_id, model=source.repo_id, done=0, total=plan.missing_bytes))
        hub.pull_model(plan, cache_dir=cache, tqdm_class=_event_tqdm(self.emit, job_id, source.repo_id))
        return hub.resolve_model(source.repo_id, cache_dir=cache)

    def _seed_of_saved_latents(self, job_id: str, request: gen.Request) -> gen.Request:
        """A job asked for no seed picks a random one; a retry of it that finds its saved latents takes the
        seed they were made with (the header says), so it can resume from them."""
        if request.seed is not None:
            return request
        path = latents.path_for(self.cfg.partial_dir, job_id)
        if not path.exists():
            return request
        try:
            seed = int(latents.read_header(path)["seed"])
        except (latents.BadLatents, KeyError, ValueError):
            return request  # the resume checks it again, and discards it
        return dataclasses.replace(request, seed=seed)

    def _ensure_loaded(self, job_id: str, source: hub.ModelSource, device: str, params: gen.Params,
                       remembered: planmemory.Remembered | None) -> tuple[LoadedModel, bool]:
        floor = remembered.plan if remembered is not None else None
        if self.loaded is not None and self.loaded.suits(source, device, params, floor):
            return self.loaded, True
        self.close()
        self.emit(Loading(job=job_id, model=source.model, device=device))
        loaded = self.backend.load(source, device, self.cfg.offload, params, floor,
                                   SpeedChoice(self.cfg.compile, self.cfg.speedups))
        self.loaded = loaded
        self.emit(Loaded(job=job_id, model=source.model, device=device, dtype=loaded.dtype_name,
                         pipeline=loaded.class_name, memory=loaded.plan.as_dict(),
                         seconds=round(loaded.load_s, 3)))
        log.info("loaded %s (%s) on %s as %s in %.1fs; memory plan: %s", source.model, loaded.class_name,
                 device, loaded.dtype_name, loaded.load_s, loaded.plan.reason)
        return loaded, False

    def _frames(self, job_id: str, loaded: LoadedModel, params: gen.Params, cancel: threading.Event,
                plan_key: str, remembered: planmemory.Remembered | None) -> Made:
        steps = params.steps
        self.emit(JobStarted(job=job_id, params=params.as_dict(), device=loaded.device, steps=steps))
        # Decode and encode come after the last step: the time left includes them, from this install's runs.
        predicted = estimate.estimate(self.history.runs(), estimate.Job(
            params.model, loaded.device, params.frames, params.width, params.height, steps), loaded=True)
        tail = predicted.decode_s + predicted.encode_s
        t0 = time.perf_counter()

        def on_step(i: int) -> None:
            now = time.perf_counter()
            done = min(i + 1, steps)
            per = (now - t0) / done
            self.emit(Progress(job=job_id, step=done, steps=steps, elapsed=round(now - t0, 3),
                               eta=round(per * (steps - done) + tail, 3)))

        header = latents.header_for(
            params.as_dict(), model=params.model, revision=loaded.source.revision, pipeline=loaded.class_name,
            device=loaded.device, dtype=loaded.dtype_name, recipe_hash=gen.params_hash(params))
        render = Render(self.cfg, loaded, params, job_id, header, on_step=on_step, cancel=cancel,
                        warn=lambda message: self.emit(WarningEvent(message=message, job=job_id)),
                        plan_key=plan_key, remembered=remembered)
        self.phase = "denoise"
        loaded.reset_peak_memory()
        made = render.run()
        if made.resumed:  # no steps ran: say where the job is (the tray shows "saving")
            self.emit(Progress(job=job_id, step=steps, steps=steps, elapsed=0.0, eta=round(tail, 3)))
        return made

    def _write(self, job_id: str, loaded: LoadedModel, reused: bool, params: gen.Params, made: Made,
               cancel: threading.Event, t_start: float, download_s: float) -> VideoResult:
        self.phase = "encode"
        timings = {"download_s": download_s, "load_s": 0.0 if reused else loaded.load_s,
                   "denoise_s": made.denoise_s, "decode_s": made.decode_s}
        if not made.resumed:  # a resumed job ran no step: its pace says nothing
            timings["per_step_s"] = made.denoise_s / max(1, params.steps)
        notes: dict[str, object] = {"resumed_from_latents": made.resumed, "decode": made.decode.label(),
                                    "speed": list(loaded.speed_applied)}
        if made.recovered:
            notes["recovered"] = list(made.recovered)
        how = HowMade(
            revision=loaded.source.revision, pipeline=loaded.class_name, device=loaded.device,
            dtype=loaded.dtype_name, memory={**loaded.plan.as_dict(), "peak_bytes": loaded.peak_memory_bytes()},
            started=t_start, timings=timings, guidance_scale=loaded.guidance_scale, scheduler=loaded.scheduler,
            versions=self.backend.versions(), notes=notes,
        )
        frames = made.frames
        saved = write_video(self.cfg, params, frames, how, cancel.is_set)
        latents.remove(self.cfg.partial_dir, job_id)  # the video has landed: the latents are done with
        library_id = add_to_library(self.cfg, saved, params, frames,
                                    lambda message: self.emit(WarningEvent(message=message, job=job_id))
                                    ) if self.library else None
        result: VideoResult = {
            "path": str(saved.path), "sidecar": str(saved.sidecar), "seed": params.seed,
            "seconds": round(time.perf_counter() - t_start, 3), "model": params.model,
            "revision": loaded.source.revision, "device": loaded.device, "dtype": loaded.dtype_name,
            "frames": int(frames.shape[0]), "height": int(frames.shape[1]), "width": int(frames.shape[2]),
            "fps": params.fps, "steps": params.steps, "library_id": library_id,
            "timings": saved.doc["timings"], "pipeline_reused": reused, "resumed_from_latents": made.resumed,
        }
        log.info("job %s done: %s (%.1fs)", job_id, saved.path, result["seconds"])
        return result


def _event_tqdm(emit: Emit, job_id: str, repo_id: str) -> type:
    """A tqdm class for snapshot_download that turns byte progress into ``download`` events."""
    from tqdm.auto import tqdm

    class EventTqdm(tqdm):  # type: ignore[type-arg]
        # huggingface_hub passes tqdm's own arguments through.
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._last = 0.0

        def update(self, n: float | None = 1) -> bool | None:
            self.n += n or 0
            now = time.monotonic()
            if self.unit == "B" and now - self._last > 0.5:
                self._last = now
                emit(Download(job=job_id, model=repo_id, done=int(self.n), total=int(self.total or 0)))
            return None

    return EventTqdm
