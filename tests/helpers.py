"""Small helpers shared by tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path


def wait_for(cond: Callable[[], object], timeout: float = 20.0, interval: float = 0.05) -> bool:
    """Poll ``cond`` until it is truthy or ``timeout`` seconds pass; returns its last truth value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())


def write_run(videos: Path, stem: str, *, model: str, device: str = "cpu", frames: int = 8, width: int = 64,
              height: int = 64, steps: int = 10, per_step_s: float = 2.0, load_s: float = 3.0,
              decode_s: float = 1.0, encode_s: float = 0.5, peak_bytes: int | None = None,
              weights_bytes: int | None = None, offload: str = "none", video: bool = True) -> Path:
    """A finished run as the worker leaves it: ``<stem>.vidtray.json`` with the fields and timings the
    estimates read (``estimate.run_from_sidecar``), and a real mp4 beside it (its size is the run's output)."""
    from media_helpers import write_mp4

    from vidtray.services.sidecar import SUFFIX

    videos.mkdir(parents=True, exist_ok=True)
    doc = {"vidtray_version": "test", "prompt": "a fox", "model": model, "device": device, "frames": frames,
           "width": width, "height": height, "steps": steps, "seed": 1, "fps": 8,
           "memory": {"offload": offload, "peak_bytes": peak_bytes, "weights_bytes": weights_bytes},
           "timings": {"load_s": load_s, "per_step_s": per_step_s, "denoise_s": per_step_s * steps,
                       "decode_s": decode_s, "encode_s": encode_s}}
    if video:
        write_mp4(videos / f"{stem}.mp4")
    sidecar = videos / f"{stem}{SUFFIX}"
    sidecar.write_text(json.dumps(doc), encoding="utf-8")
    return sidecar
