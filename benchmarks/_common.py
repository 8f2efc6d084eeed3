"""Timing helpers shared by the benchmark scripts: alternate runs, report medians and the ratio."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Sequence


def time_cmd(cmd: Sequence[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def alternate(a: Callable[[], float], b: Callable[[], float], rounds: int, warmup: int = 1) -> tuple[float, float]:
    """Run a and b alternately (so drift hits both alike); return their medians."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(a())
        tb.append(b())
    return statistics.median(ta), statistics.median(tb)
