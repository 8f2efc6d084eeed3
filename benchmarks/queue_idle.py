"""The job queue's cost at rest and per operation: idle ``vidtray watch`` with an empty queue against one that
keeps 1,000 finished jobs (side by side, the same window), and the time to submit and to claim with 10,000
jobs in the database against an empty one.

    python benchmarks/queue_idle.py [--seconds 60] [--settle 10] [--ops 300] [--json]

Idle: three ``vidtray watch`` processes, each with its own throw-away data folder (notifications off):
one before its queue database exists (a fresh install), one with an empty database (the baseline), one
with 1,000 done jobs in it. After they have settled, CPU time is read
from the scheduler's own per-thread counters (``/proc/<pid>/task/*/schedstat``, nanoseconds; the usual
clock ticks are too coarse for a process that idles well under 1 %) and RSS every second.

Operations: ``JobQueue.submit`` and ``JobQueue.claim_next`` (each one transaction, synced to disk) on a
database holding 10,000 queued jobs and on an empty one, median and 95th percentile.

Goals (issue 12): idle CPU and RSS with 1,000 jobs within 1.2x of the empty queue's, CPU under 0.5 %;
submit and claim under 5 ms each with 10,000 jobs. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vidtray.services.queue import JobQueue  # noqa: E402

FINISHED_JOBS = 1000
DB_JOBS = 10_000


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in nanoseconds (the first field of schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            pass  # a thread that ended meanwhile
    return total


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def env_for(root: Path) -> dict[str, str]:
    home = root / "home"
    return {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_STATE_HOME": str(home / ".state"), "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_CACHE_HOME": str(home / ".cache"), "HF_HOME": str(home / ".cache/huggingface"),
            "VIDTRAY_DATA_DIR": str(root / "data"), "VIDTRAY_LOG_DIR": str(root / "logs"), "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(ROOT), "VIDTRAY_CONFIG": str(root / "none.toml")}


def finished_jobs(queue_dir: Path, n: int) -> None:
    """``n`` jobs that ran and finished, as the supervisor leaves them."""
    with JobQueue(queue_dir) as q:
        jobs = q.submit_many([{"prompt": f"a fox, take {i}", "seed": i} for i in range(n)])
        for i, job in enumerate(jobs):
            q.claim_next()
            q.finish(job.id, "done", result={"path": f"/videos/fox_{i}.mp4", "seed": job.request["seed"]})


def start_watch(root: Path) -> subprocess.Popen[str]:
    (root / "none.toml").write_text("notifications = false\n")
    proc = subprocess.Popen([sys.executable, "-m", "vidtray", "watch"], cwd=ROOT, env=env_for(root), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "watching" not in line:
        proc.kill()
        raise RuntimeError(f"vidtray watch did not start: {line!r}")
    return proc


def idle(seconds: float, settle: float) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="vidtray-queue-idle-") as tmp:
        fresh, empty, full = Path(tmp) / "fresh", Path(tmp) / "empty", Path(tmp) / "full"
        for root in (fresh, empty, full):
            (root / "data").mkdir(parents=True)
        finished_jobs(full / "data" / "queue", FINISHED_JOBS)
        with JobQueue(empty / "data" / "queue") as q:  # a database with no job in it: like for like
            q.pause()
            q.resume()
        procs = {"no database yet": start_watch(fresh), "empty queue": start_watch(empty),
                 f"{FINISHED_JOBS} finished jobs": start_watch(full)}
        try:
            time.sleep(settle)
            start = {name: cpu_ns(p.pid) for name, p in procs.items()}
            t0 = time.monotonic()
            rss: dict[str, list[int]] = {name: [] for name in procs}
            while time.monotonic() - t0 < seconds:
                for name, p in procs.items():
                    rss[name].append(rss_kb(p.pid))
                time.sleep(1.0)
            wall = time.monotonic() - t0
            used = {name: cpu_ns(p.pid) - start[name] for name, p in procs.items()}
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                p.wait(30)
    return {name: {"cpu_percent": 100 * used[name] / 1e9 / wall, "cpu_ms": used[name] / 1e6,
                   "rss_mb_mean": statistics.mean(rss[name]) / 1024, "rss_mb_max": max(rss[name]) / 1024,
                   "wall_s": wall} for name in procs}


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def operations(ops: int) -> dict[str, dict[str, float]]:
    """Submits, then claims, alternating between the empty database and the full one (so that drift in the
    disk's sync time hits both alike)."""
    labels = ("empty", f"{DB_JOBS} jobs")
    times: dict[str, list[float]] = {f"{op}, {label}": [] for op in ("submit", "claim") for label in labels}
    with tempfile.TemporaryDirectory(prefix="vidtray-queue-ops-") as tmp:
        queues = {label: JobQueue(Path(tmp) / label / "queue") for label in labels}
        queues[labels[1]].submit_many([{"prompt": f"a fox, take {i}", "seed": i} for i in range(DB_JOBS)])
        for q in queues.values():  # warm: the database is open and has been written, as in a running tray
            q.submit({"prompt": "warm up"})
            q.claim_next()
        for op in ("submit", "claim"):
            for _ in range(ops):
                for label, q in queues.items():
                    fn = (lambda q=q: q.submit({"prompt": "a red fox running through snow", "seed": 7})) \
                        if op == "submit" else q.claim_next
                    times[f"{op}, {label}"].append(_timed(fn))
        for q in queues.values():
            q.close()
    out = {}
    for name, values in times.items():
        values.sort()
        out[name] = {"median_ms": statistics.median(values), "p95_ms": values[int(len(values) * 0.95) - 1]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="idle window to measure (default 60)")
    ap.add_argument("--settle", type=float, default=10.0, help="wait after start before measuring (default 10)")
    ap.add_argument("--ops", type=int, default=300, help="submits and claims to time (default 300 each)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rest = idle(args.seconds, args.settle)
    ops = operations(args.ops)
    base, full = rest["empty queue"], rest[f"{FINISHED_JOBS} finished jobs"]
    cpu_ratio = full["cpu_ms"] / base["cpu_ms"] if base["cpu_ms"] else float("inf")
    rss_ratio = full["rss_mb_mean"] / base["rss_mb_mean"]
    big = f"{DB_JOBS} jobs"
    goals = {
        f"idle CPU with {FINISHED_JOBS} jobs <= 1.2x the empty queue's": cpu_ratio <= 1.2,
        f"idle RSS with {FINISHED_JOBS} jobs <= 1.2x the empty queue's": rss_ratio <= 1.2,
        "idle CPU < 0.5 %": full["cpu_percent"] < 0.5,
        f"submit < 5 ms with {big} (median)": ops[f"submit, {big}"]["median_ms"] < 5,
        f"claim < 5 ms with {big} (median)": ops[f"claim, {big}"]["median_ms"] < 5,
    }
    doc = {"idle": rest, "cpu_ratio": cpu_ratio, "rss_ratio": rss_ratio, "operations": ops,
           "submit_ratio": ops[f"submit, {big}"]["median_ms"] / ops["submit, empty"]["median_ms"],
           "claim_ratio": ops[f"claim, {big}"]["median_ms"] / ops["claim, empty"]["median_ms"], "goals": goals}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"vidtray watch, idle {args.seconds:.0f} s (settled {args.settle:.0f} s first), side by side")
    print(f"{'queue':<24}{'CPU':>9}{'CPU time':>11}{'RSS mean':>11}{'RSS max':>10}")
    for name, r in rest.items():
        print(f"{name:<24}{r['cpu_percent']:>8.3f}%{r['cpu_ms']:>9.0f}ms{r['rss_mb_mean']:>9.1f}MB"
              f"{r['rss_mb_max']:>8.1f}MB")
    print(f"ratio {FINISHED_JOBS} jobs / empty: CPU {cpu_ratio:.2f}x, RSS {rss_ratio:.2f}x")
    print(f"\nqueue operations ({args.ops} each, every one a synced transaction)")
    print(f"{'':<24}{'median':>10}{'p95':>10}")
    for name, r in ops.items():
        print(f"{name:<24}{r['median_ms']:>8.2f}ms{r['p95_ms']:>8.2f}ms")
    print(f"ratio {big} / empty: submit {doc['submit_ratio']:.2f}x, claim {doc['claim_ratio']:.2f}x")
    for goal, ok in goals.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
