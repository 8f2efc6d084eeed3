"""Timing helpers shared by the benchmark scripts: alternate runs, report medians and the ratio."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def time_cmd(cmd: Sequence[str], env: dict[str, str] | None = None, cwd: str | Path | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
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


def medians(runs: Sequence[Callable[[], float]], rounds: int, warmup: int = 1) -> list[float]:
    """Run each of ``runs`` in turn, ``rounds`` times (so drift hits all alike); return their medians."""
    for _ in range(warmup):
        for run in runs:
            run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for i, run in enumerate(runs):
            times[i].append(run())
    return [statistics.median(t) for t in times]


def time_cpu(cmd: Sequence[str], env: dict[str, str] | None = None, cwd: str | Path | None = None,
             ) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU (user + system of the child, POSIX) is what a loaded machine's
    other work disturbs least."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def medians2(runs: Sequence[Callable[[], tuple[float, float]]], rounds: int, warmup: int = 1,
             ) -> list[tuple[float, float]]:
    """``medians`` for runs that return (wall, CPU): the median of each."""
    for _ in range(warmup):
        for run in runs:
            run()
    times: list[list[tuple[float, float]]] = [[] for _ in runs]
    for _ in range(rounds):
        for i, run in enumerate(runs):
            times[i].append(run())
    return [(statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for t in times]
