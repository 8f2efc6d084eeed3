"""How long a job will take, how much GPU memory it will need and how big its video will be: predicted from
this install's own history, else a guess from the memory planner's figures.

The history is the sidecars vidtray wrote beside its videos (``<stem>.vidtray.json``: model, device,
memory plan, size, frames, steps, and the timings of every part: load, per step, decode, encode, plus the
peak GPU memory) and the videos' sizes. :class:`History` reads them once and then only the sidecars that
are new or changed (one folder listing per refresh).

A prediction for a job takes the runs of the same model on the same device, prefers those with the same
memory plan, and scales each figure by the job's size against the run's, in latent positions (frames x
height x width: the denoiser's work per step, the VAE's and the encoder's per frame all grow with it);
the runs closest in size count, their median is taken. The load is counted only when the model is not
loaded already. With no such run, the figures come from the planner (the weights' size, the activation
estimate) and rough per-device rates below, and the estimate says it is a guess.

Standard library only: the CLI, the popup, the tray and the worker use it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from vidtray.services import memplan
from vidtray.services.sidecar import SUFFIX

log = logging.getLogger("vidtray.estimate")

Basis = Literal["history", "guess"]

# -- the guesses (no history): rough rates, said to be guesses wherever they are shown ----------------------
#: Seconds per denoising step per GB of weights per million latent positions (batch 2 for guidance x frames x
#: h/8 x w/8). From zeroscope (2.8 GB UNet, 576x320x24: 0.14 M positions) at about 1 s a step on a
#: consumer GPU; a CPU is taken as 50 times slower.
GUESS_STEP_S_PER_GB_MPOS = {"cuda": 2.6, "mps": 8.0, "cpu": 130.0}
#: Seconds to decode a million output pixels (frames x height x width), and to encode them (libx264, CRF 18).
GUESS_DECODE_S_PER_MPIXEL = {"cuda": 0.01, "mps": 0.05, "cpu": 0.5}
GUESS_ENCODE_S_PER_MPIXEL = 0.15
#: Bytes of H.264 at CRF 18 per output pixel (frames x height x width): about 0.3 for generated clips.
GUESS_BYTES_PER_PIXEL = 0.3
#: Reading weights from the disk into memory, and a fixed start-up cost (imports, building the pipeline).
GUESS_LOAD_BYTES_PER_S = 500 * 1024**2
GUESS_LOAD_FIXED_S = 5.0
#: The most runs one figure is taken from (the closest in size).
CLOSEST = 5


@dataclass(frozen=True)
class Run:
    """One finished job, from its sidecar."""

    model: str
    device: str
    offload: str
    frames: int
    width: int
    height: int
    steps: int
    load_s: float | None
    per_step_s: float | None  # None: resumed from latents (no denoising)
    decode_s: float | None
    encode_s: float | None
    peak_bytes: int | None
    weights_bytes: int | None
    size_bytes: int | None
    finished: float  # the sidecar's mtime

    @property
    def pixels(self) -> int:
        return self.frames * self.width * self.height


def run_from_sidecar(doc: object, size_bytes: int | None, mtime: float) -> Run | None:
    """The run a vidtray sidecar describes, or None if it is not one (no timings: an older sidecar)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("timings"), dict):
        return None
    timings: dict[str, Any] = doc["timings"]
    memory: dict[str, Any] = doc["memory"] if isinstance(doc.get("memory"), dict) else {}
    try:
        frames, width, height, steps = (int(doc[k]) for k in ("frames", "width", "height", "steps"))
        model, device = str(doc["model"]), str(doc.get("device") or "cpu")
    except (KeyError, TypeError, ValueError):
        return None
    if min(frames, width, height, steps) <= 0:
        return None

    def num(value: object) -> float | None:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
        return float(value) if ok else None  # type: ignore[arg-type]

    resumed = doc.get("resumed_from_latents") is True
    peak, weights = num(memory.get("peak_bytes")), num(memory.get("weights_bytes"))
    return Run(model, device, str(memory.get("offload") or "none"), frames, width, height, steps,
               num(timings.get("load_s")) or None, None if resumed else num(timings.get("per_step_s")),
               num(timings.get("decode_s")), num(timings.get("encode_s")),
               None if peak is None else int(peak), None if weights is None else int(weights), size_bytes, mtime)


class History:
    """The runs the sidecars in the videos folder describe, re-read only where a sidecar changed."""

    def __init__(self, videos_dir: Path) -> None:
        self.videos_dir = videos_dir
        self._cache: dict[str, tuple[int, Run | None]] = {}

    def runs(self) -> list[Run]:
        try:
            entries = [e for e in os.scandir(self.videos_dir) if e.name.endswith(SUFFIX)]
        except OSError:
            return []
        seen: dict[str, tuple[int, Run | None]] = {}
        for entry in entries:
            try:
                mtime_ns = entry.stat().st_mtime_ns
            except OSError:
                continue
            cached = self._cache.get(entry.path)
            seen[entry.path] = cached if cached is not None and cached[0] == mtime_ns else \
                (mtime_ns, self._read(Path(entry.path), mtime_ns))
        self._cache = seen
        return [run for _, run in seen.values() if run is not None]

    @staticmethod
    def _read(path: Path, mtime_ns: int) -> Run | None:
        try:
            if path.stat().st_size > 1024 * 1024:
                return None
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        video = path.with_name(path.name[: -len(SUFFIX)] + ".mp4")
        try:
            size: int | None = video.stat().st_size
        except OSError:
            size = None
        return run_from_sidecar(doc, size, mtime_ns / 1e9)


@dataclass(frozen=True)
class Job:
    """What an estimate is for: one job's model, device and shape."""

    model: str
    device: str
    frames: int
    width: int
    height: int
    steps: int

    @property
    def pixels(self) -> int:
        return self.frames * self.width * self.height

    @property
    def latent_mpos(self) -> float:
        """Million latent positions a step works on (guidance doubles the batch; 8x spatial compression)."""
        return 2 * self.frames * max(1, self.height // 8) * max(1, self.width // 8) / 1e6


@dataclass(frozen=True)
class Figures:
    """What the planner knows without history: the weights' bytes (None: unknown), and the plan's
    activation estimate for the job (bytes)."""

    weights_bytes: int | None
    activation_scale: float = 1.0


@dataclass(frozen=True)
class Estimate:
    seconds: float  # the whole job: load (when counted) + denoise + decode + encode
    load_s: float
    denoise_s: float
    decode_s: float
    encode_s: float
    peak_gpu_bytes: int | None  # None: not on a GPU, or unknown
    output_bytes: int | None
    basis: Basis
    runs: int  # how many past runs it is based on
    note: str  # for a person: "from 4 runs of tiny-t2v on cpu", "a guess: ..."
    device: str

    @property
    def guess(self) -> bool:
        return self.basis == "guess"

    def as_dict(self) -> dict[str, object]:
        # Hundredths: a short job's parts (a tiny model on a CPU, decode on a GPU) are fractions of a second.
        return {**asdict(self), "seconds": round(self.seconds, 2), "load_s": round(self.load_s, 2),
                "denoise_s": round(self.denoise_s, 2), "decode_s": round(self.decode_s, 2),
                "encode_s": round(self.encode_s, 2)}


def _closest(pairs: Iterable[tuple[float, float]]) -> float | None:
    """The median of the scaled values from the runs closest in size: ``pairs`` are (size ratio, value
    scaled to the job's size)."""
    ranked = sorted(pairs, key=lambda p: abs(math.log(p[0])))
    if not ranked:
        return None
    best = abs(math.log(ranked[0][0]))
    near = [v for r, v in ranked if abs(math.log(r)) <= best + 0.2][:CLOSEST]
    return statistics.median(near)


def _scaled(runs: Sequence[Run], job: Job, attr: str) -> float | None:
    pairs = []
    for run in runs:
        value = getattr(run, attr)
        if value is not None:
            ratio = job.pixels / run.pixels
            pairs.append((ratio, value * ratio))
    return _closest(pairs)


def _peak(runs: Sequence[Run], job: Job) -> int | None:
    """The peak scales like the activations: weights + (peak - weights) x size ratio."""
    pairs = []
    for run in runs:
        if run.peak_bytes is not None:
            ratio = job.pixels / run.pixels
            weights = min(run.weights_bytes or 0, run.peak_bytes) if run.offload == "none" else 0
            pairs.append((ratio, weights + (run.peak_bytes - weights) * ratio))
    value = _closest(pairs)
    return None if value is None else int(value)


def from_history(runs: Sequence[Run], job: Job, *, loaded: bool) -> Estimate | None:
    """The estimate from past runs of the same model on the same device (None: there are none with step
    timings)."""
    same = [r for r in runs if r.model == job.model and r.device == job.device]
    stepped = [r for r in same if r.per_step_s is not None]
    if not stepped:
        return None
    # The latest plan is the one the next job gets (a remembered plan after running out of memory).
    latest = max(stepped, key=lambda r: r.finished).offload
    pool = [r for r in stepped if r.offload == latest] or stepped
    per_step = _scaled(pool, job, "per_step_s") or 0.0
    decode = _scaled([r for r in same if r.offload == latest] or same, job, "decode_s") or 0.0
    encode = _scaled(same, job, "encode_s") or 0.0
    loads = [r.load_s for r in same if r.load_s]
    load = 0.0 if loaded or not loads else statistics.median(loads)
    denoise = per_step * job.steps
    count = len(pool)
    note = f"from {count} run{'s' if count != 1 else ''} of {short_model(job.model)} on {job.device}"
    return Estimate(load + denoise + decode + encode, load, denoise, decode, encode,
                    _peak(pool, job) if job.device != "cpu" else None, _size(same, job),
                    "history", count, note, job.device)


def _size(runs: Sequence[Run], job: Job) -> int | None:
    value = _scaled(runs, job, "size_bytes")
    return None if value is None else int(value)


def guess(job: Job, figures: Figures | None, *, loaded: bool, why: str) -> Estimate:
    """The planner's figures and rough rates (``GUESS_*``); ``why``: what history is missing."""
    weights = figures.weights_bytes if figures is not None else None
    device_rate = job.device if job.device in GUESS_STEP_S_PER_GB_MPOS else "cuda"
    gb = (weights or 3 * 1024**3) / 1024**3
    denoise = GUESS_STEP_S_PER_GB_MPOS[device_rate] * gb * job.latent_mpos * job.steps
    mpixels = job.pixels / 1e6
    decode = GUESS_DECODE_S_PER_MPIXEL[device_rate] * mpixels
    encode = GUESS_ENCODE_S_PER_MPIXEL * mpixels
    load = 0.0 if loaded else GUESS_LOAD_FIXED_S + (weights or 0) / GUESS_LOAD_BYTES_PER_S
    peak = None
    if job.device != "cpu" and weights:
        scale = figures.activation_scale if figures is not None else 1.0
        act = int(memplan.activation_bytes(job.frames, job.height, job.width) * scale)
        peak = weights + act
    note = f"a guess: {why}" + ("" if weights else "; the model's size is unknown too")
    return Estimate(load + denoise + decode + encode, load, denoise, decode, encode, peak,
                    int(GUESS_BYTES_PER_PIXEL * job.pixels), "guess", 0, note, job.device)


def estimate(runs: Sequence[Run], job: Job, figures: Figures | None = None, *, loaded: bool = False,
             guess_why: str | None = None) -> Estimate:
    """From history when there is some for this model and device, else a guess (``guess_why`` says why,
    e.g. that the model is not downloaded yet)."""
    found = from_history(runs, job, loaded=loaded)
    if found is not None:
        return found
    why = guess_why or f"no runs of {short_model(job.model)} on {job.device} here yet"
    return guess(job, figures, loaded=loaded, why=why)


def likely_device(runs: Sequence[Run], model: str, choice: str) -> str:
    """The device a job will run on, without torch: the setting when it names one; for ``auto``, the device
    this install last ran the model on (else any model), else a CUDA GPU if the NVIDIA driver is loaded,
    Apple silicon's MPS, or the CPU."""
    if choice != "auto":
        return choice
    for pool in ([r for r in runs if r.model == model], list(runs)):
        if pool:
            return max(pool, key=lambda r: r.finished).device
    if Path("/proc/driver/nvidia/version").exists() or os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1"):
        return "cuda"
    import platform
    import sys

    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "mps"
    return "cpu"


# -- words ------------------------------------------------------------------------------------------------


def short_model(model: str) -> str:
    from vidtray.services.generation import model_slug

    return model_slug(model)


def duration(seconds: float) -> str:
    """'40 s', '3 min', '1 h 20 min': how long, rounded the way a person says it."""
    if seconds < 60:
        return f"{max(1, round(seconds / 5) * 5) if seconds >= 10 else max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" + (f" {rest} min" if rest else "")


def clock(when: float, now: float | None = None) -> str:
    """'14:20', or 'Tue 09:05' when it is not today (local time)."""
    at = datetime.fromtimestamp(when).astimezone()
    today = datetime.fromtimestamp(time.time() if now is None else now).astimezone().date()
    return at.strftime("%H:%M") if at.date() == today else at.strftime("%a %H:%M")


def summary(est: Estimate) -> str:
    """One line: 'about 3 min, peak 7.2 GiB GPU memory, video about 1.4 MiB (from 4 runs of zeroscope on
    cuda)'."""
    from vidtray.services.fsutil import human_size

    parts = [f"about {duration(est.seconds)}"]
    if est.peak_gpu_bytes:
        parts.append(f"peak {human_size(est.peak_gpu_bytes)} GPU memory")
    if est.output_bytes:
        parts.append(f"video about {human_size(est.output_bytes)}")
    return ", ".join(parts) + f" ({est.note})"
