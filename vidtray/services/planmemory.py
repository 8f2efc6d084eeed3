"""The memory plan that worked after running out of GPU memory, per model, device, size and frame count.

When a job runs out of memory, the worker steps down the memory plans (or decodes another way) until it
works, and records here what worked, so the next job like it starts there instead of running out first.
A small record in the state folder (``Paths.memory_plans_file``, :mod:`.statefile`). Standard library and
filelock only; a record that cannot be read or written only costs the next job one more out-of-memory retry.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from vidtray.services import statefile
from vidtray.services.memplan import DecodeAttempt, MemoryPlan

log = logging.getLogger("vidtray.worker")

VERSION = 1
OFFLOADS = ("none", "model", "sequential")


def key(model: str, device: str, width: int, height: int, frames: int) -> str:
    return f"{model}|{device}|{width}x{height}x{frames}"


@dataclass(frozen=True)
class Remembered:
    """What worked for jobs of one key: the memory plan, and the decode (None: the plan's own)."""

    plan: MemoryPlan
    decode: DecodeAttempt | None = None


def _entry(doc: object) -> Remembered | None:
    if not isinstance(doc, dict):
        return None
    plan, decode = doc.get("plan"), doc.get("decode")
    if not isinstance(plan, dict) or plan.get("offload") not in OFFLOADS:
        return None
    remembered = MemoryPlan(str(plan["offload"]), True, plan.get("forward_chunking") is True,
                            str(plan.get("reason") or "remembered"), vae_tiling=plan.get("vae_tiling") is True)
    attempt = None
    if isinstance(decode, dict):
        per = decode.get("frames_per_batch")
        attempt = DecodeAttempt(decode.get("tiling") is True, per if isinstance(per, int) and per > 0 else None,
                                decode.get("on_cpu") is True)
    return Remembered(remembered, attempt)


def read_all(path: Path) -> dict[str, Remembered]:
    out = {}
    for k, v in (statefile.read_section(path, "plans", dict) or {}).items():
        entry = _entry(v)
        if entry is not None:
            out[str(k)] = entry
    return out


def recall(path: Path, job_key: str) -> Remembered | None:
    return read_all(path).get(job_key)


def remember(path: Path, job_key: str, plan: MemoryPlan, decode: DecodeAttempt | None = None) -> None:
    """Record what worked for ``job_key`` (never raises: logged)."""
    entry: dict[str, object] = {
        "plan": {"offload": plan.offload, "forward_chunking": plan.forward_chunking, "vae_tiling": plan.vae_tiling,
                 "reason": plan.reason},
        "recorded": round(time.time(), 3)}
    if decode is not None:
        entry["decode"] = {"tiling": decode.tiling, "frames_per_batch": decode.frames_per_batch,
                           "on_cpu": decode.on_cpu}

    def change() -> dict[str, object]:
        plans = statefile.read_section(path, "plans", dict) or {}
        plans[job_key] = entry
        return plans

    if statefile.update_section(path, VERSION, "plans", change, "remember the memory plan", indent=2):
        log.info("remembered for %s: %s%s", job_key, plan.label(),
                 f"; decode {decode.label()}" if decode is not None else "")
