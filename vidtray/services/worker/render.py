"""One job's frames, so that a render is never lost: latents kept, out-of-memory recovered.

1. Latents: a job whose latents are in ``.partial/`` (a previous attempt denoised, then its decode, encode or
   worker failed) resumes from them, when their header says they are this job's (same model, revision,
   pipeline, size, frames, steps, seed, dtype and recipe); a truncated or foreign file is discarded (logged)
   and the job denoises again. Otherwise it denoises and saves the latents (atomically: a full disk fails
   the job with the disk message and leaves nothing half-written) before decoding.
2. Out of memory while denoising: the next memory plan down (:func:`memplan.next_plan`) and one more try;
   out of memory while decoding: each of :func:`memplan.decode_attempts` in turn (VAE tiling, smaller
   batches, the CPU). What worked is said (a warning event: the supervisor notifies it) and remembered
   for the next job of this model, size and frame count (:mod:`vidtray.services.planmemory`).

The latents file goes when the video has landed (the runner removes it), or when the job is cancelled.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vidtray.config import Config
from vidtray.errors import OperationFailed
from vidtray.services import generation as gen
from vidtray.services import memplan, planmemory
from vidtray.services.fsutil import human_size, private_dir
from vidtray.services.memplan import DecodeAttempt
from vidtray.services.worker import latents as latents_file
from vidtray.services.worker.backend import Denoised, FrameArray, JobCancelled, Latents, LoadedModel, OutOfMemory

log = logging.getLogger("vidtray.worker")

#: Test hook: after saving the latents, write this file (the worker's pid in it) and wait there until
#: cancelled or killed -- how the tests kill a worker "after denoising, before the video lands".
HOLD_ENV = "VIDTRAY_TEST_HOLD_AFTER_LATENTS"


@dataclass
class Made:
    """The frames, and how they were made."""

    frames: FrameArray
    denoise_s: float
    decode_s: float
    resumed: bool
    decode: DecodeAttempt
    #: what was done after running out of memory, in a person's words
    recovered: list[str] = field(default_factory=list)


class Render:
    """Makes one job's frames on a loaded model (see the module docstring)."""

    def __init__(self, cfg: Config, loaded: LoadedModel, params: gen.Params, job_id: str, header: dict[str, str],
                 *, on_step: Callable[[int], None], cancel: threading.Event, warn: Callable[[str], None],
                 plan_key: str, remembered: planmemory.Remembered | None = None) -> None:
        self.cfg = cfg
        self.loaded = loaded
        self.params = params
        self.job_id = job_id
        self.header = header
        self.on_step = on_step
        self.cancel = cancel
        self.warn = warn
        self.plan_key = plan_key
        self.remembered = remembered
        self.path = latents_file.path_for(cfg.partial_dir, job_id)
        self.recovered: list[str] = []

    def run(self) -> Made:
        latents, resumed, denoise_s = self._latents()
        t0 = time.perf_counter()
        frames, attempt = self._decode(latents)
        return Made(frames, denoise_s, time.perf_counter() - t0, resumed, attempt, self.recovered)

    # -- latents
    def _latents(self) -> tuple[Latents, bool, float]:
        if self.loaded.splits_decode and self.path.exists():
            found = self._resume()
            if found is not None:
                log.info("job %s: resuming from the saved latents %s (no denoising)", self.job_id, self.path.name)
                return found, True, 0.0
        denoised = self._denoise()
        if self.loaded.splits_decode:
            self._save(denoised.latents)
            self._hold_for_tests()
        return denoised.latents, False, denoised.denoise_s

    def _resume(self) -> Latents | None:
        try:
            header = latents_file.read_header(self.path)
        except latents_file.BadLatents as exc:
            latents_file.discard(self.path, str(exc))
            return None
        why = latents_file.mismatch(header, self.header)
        if why is not None:
            latents_file.discard(self.path, why)
            return None
        try:
            return self.loaded.load_latents(str(self.path))
        except ValueError as exc:
            latents_file.discard(self.path, str(exc))
            return None

    def _save(self, latents: Latents) -> None:
        folder = self.path.parent
        try:
            private_dir(folder)
            self.loaded.save_latents(latents, str(self.path), self.header)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                from vidtray.paths import free_bytes

                free = free_bytes(folder)
                raise OperationFailed(
                    f"not enough disk space for the denoised latents: {human_size(free or 0)} free in {folder} "
                    f"(No space left on device); free some space and retry the job") from None
            raise OperationFailed(f"cannot save the denoised latents in {folder}: {exc.strerror or exc}") from None
        log.info("job %s: latents saved in %s", self.job_id, self.path)

    def _hold_for_tests(self) -> None:
        marker = os.environ.get(HOLD_ENV)
        if not marker:
            return
        Path(marker).write_text(str(os.getpid()), encoding="utf-8")
        while not self.cancel.wait(0.05):
            pass
        raise JobCancelled()

    # -- denoising, with one step down the memory plans after running out of memory
    def _denoise(self) -> Denoised:
        stop = self.cancel.is_set
        try:
            return self.loaded.denoise(self.params, self.on_step, stop)
        except OutOfMemory as first:
            lower = memplan.next_plan(self.loaded.plan, can_chunk=self.loaded.can_chunk,
                                      can_tile=self.loaded.can_tile)
            if lower is None:
                raise OperationFailed(f"{first}; nothing smaller is left: ask for fewer frames or a smaller "
                                      "size") from None
            log.warning("job %s: %s; trying again with %s", self.job_id, first, lower.label())
            self.loaded.use_plan(lower)
        try:
            denoised = self.loaded.denoise(self.params, self.on_step, stop)
        except OutOfMemory as again:
            raise OperationFailed(f"{again}, even with {self.loaded.plan.label()}; ask for fewer frames or a "
                                  "smaller size") from None
        self._recovered(f"ran with {self.loaded.plan.label(tiling=False)} after running out of GPU memory")
        planmemory.remember(self.cfg.paths.memory_plans_file, self.plan_key, self.loaded.plan)
        return denoised

    # -- decoding, each way in turn after running out of memory
    def _decode(self, latents: Latents) -> tuple[FrameArray, DecodeAttempt]:
        loaded = self.loaded
        attempts = memplan.decode_attempts(loaded.plan, device_type=loaded.device, can_tile=loaded.can_tile,
                                           framewise=loaded.framewise_decode)
        start = self.remembered.decode if self.remembered is not None else None
        if start in attempts:
            attempts = attempts[attempts.index(start):]  # what worked last time for such a job
        failure: OutOfMemory | None = None
        for attempt in attempts:
            if self.cancel.is_set():
                raise JobCancelled()
            try:
                frames = loaded.decode(latents, self.params, attempt, self.cancel.is_set)
            except OutOfMemory as exc:
                log.warning("job %s: %s", self.job_id, exc)
                failure = exc
                continue
            if failure is not None:
                self._recovered(f"decoded with {attempt.label()} after running out of GPU memory")
                planmemory.remember(self.cfg.paths.memory_plans_file, self.plan_key, loaded.plan, attempt)
            return frames, attempt
        raise OperationFailed(
            f"{failure}, even after {len(attempts)} tries; the denoised latents are kept: retrying the job "
            "(`vidtray queue retry`) decodes them without denoising again")

    def _recovered(self, what: str) -> None:
        self.recovered.append(what)
        self.warn(what)
