"""What does a job cost on a GPU server rather than on this machine, and do more slots finish more jobs?

Everything on this one machine, with a real vidtray server (Ray in this process, Serve over HTTPS on
loopback, CPU slots) and the tiny test pipeline (tests/gen_fixtures.py), so the figures are about vidtray's
plumbing, not a GPU:

1. Per-job overhead with a warm slot (goal: under 0.5 s): the same job through the local worker process
   (model loaded) and through the server (model loaded in its slot: submit, event stream, download, size and
   sha256 check, sidecar, library item with thumbnail, delete on the server), in alternating runs; the medians
   and their difference. Also the remote path with the fake worker (no model at all): the plumbing alone.
2. Throughput: 4 jobs on 2 slots against 1 slot. With the fake worker's "slow" jobs (5 s of sleeping steps:
   work that does not compete for this machine's CPU, as jobs on separate GPUs do not) and with the tiny
   pipeline (CPU-bound: two slots share this machine's cores, so expect little gain here).
3. What Ray costs: start-up (ray.init, each deployment) and memory (PSS of Ray's processes).

    python benchmarks/remote.py [--rounds 7] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

SMALL = {"frames": 8, "steps": 4, "height": 32, "width": 32, "fps": 8}


def _outcome_waiter() -> tuple[Any, Any]:
    from vidtray.services.protocol import AnyEvent, Done
    from vidtray.services.worker_process import JobDispatcher, WorkerListener

    results: queue.Queue[Any] = queue.Queue()

    class Listener(WorkerListener):
        def outcome(self, outcome: Any, *, worker_died: bool) -> None:
            results.put(outcome)

    dispatcher = JobDispatcher(Listener())

    def sink(event: AnyEvent) -> None:
        dispatcher.dispatch(event)

    def wait(job_id: str) -> Any:
        dispatcher.submitted(job_id)
        outcome = results.get(timeout=600)
        if not isinstance(outcome, Done):
            raise SystemExit(f"job {job_id} did not finish: {outcome}")
        return outcome

    return sink, wait


def timed_jobs(worker_factory: Any, request: dict[str, Any], label: str) -> Any:
    """A started runner and a function that times one job on it (submit -> outcome)."""
    sink, wait = _outcome_waiter()
    runner = worker_factory(sink)
    runner.start()
    counter = iter(range(10**6))

    def one() -> float:
        job_id = f"{label}-{next(counter)}"
        t0 = time.perf_counter()
        runner.submit(job_id, {**request, "seed": 1})
        wait(job_id)
        return time.perf_counter() - t0

    return runner, one


def ray_memory_mb() -> tuple[int, float]:
    """(Ray's processes, their PSS in MB): the raylet, GCS, Serve's controller and proxy, the actors."""
    import psutil

    me = psutil.Process()
    count, pss = 0, 0
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.pid == me.pid or not ("ray" in cmd or (proc.info["name"] or "").startswith("ray")):
            continue
        if "vidtray.services.worker" in cmd or "fake_worker" in cmd:
            continue  # the workers are vidtray's cost, not Ray's
        try:
            pss += proc.memory_full_info().pss
            count += 1
        except psutil.Error:
            continue
    return count, pss / 1e6


def throughput(server: Any, app: str, request: dict[str, Any], jobs: int = 4) -> float:
    """Seconds for ``jobs`` jobs submitted at once to ``app``, until the last one is done."""
    client = server.client(app)
    t0 = time.perf_counter()
    submitted = [client.submit({**request, "seed": i}, key=f"tp-{app}-{time.time()}-{i}") for i in range(jobs)]
    errors: list[str] = []

    def follow(job_id: str) -> None:
        outcome = list(server.client(app).events(job_id))[-1][1]
        if outcome.NAME != "done":
            errors.append(f"{job_id}: {outcome}")

    threads = [threading.Thread(target=follow, args=(j.id,)) for j in submitted]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for j in submitted:
        client.delete(j.id)
    if errors:
        raise SystemExit("; ".join(errors))
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()

    from gen_fixtures import TINY_REPO, build_tiny_pipeline, install_in_hf_cache
    from ray_server import RayServer

    from vidtray.config import Config
    from vidtray.services.remote_worker import RemoteWorker
    from vidtray.services.worker_process import WorkerProcess

    root = Path(tempfile.mkdtemp(prefix="vidtray-remote-bench-"))
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    server = RayServer.start(root / "server")
    out["ray_init_s"] = round(time.perf_counter() - t0, 2)
    try:
        pipeline = build_tiny_pipeline(root / "tiny-t2v")
        install_in_hf_cache(pipeline, server.hf_hub)
        deploys = {}
        for app, slots, fake in (("real", 1, False), ("real2", 2, False), ("fake1", 1, True), ("fake2", 2, True)):
            t = time.perf_counter()
            server.deploy(app, slots=slots, fake=fake, keep_alive_s=600)
            deploys[app] = round(time.perf_counter() - t, 2)
        out["deploy_s"] = deploys

        # The desktop: its own data folder and model cache (the same tiny model, for the local worker).
        desktop_root = root / "desktop"
        os.environ["VIDTRAY_DATA_DIR"] = str(desktop_root / "data")
        os.environ["HF_HOME"] = str(desktop_root / "hf")
        install_in_hf_cache(pipeline, desktop_root / "hf" / "hub")
        request = {"prompt": "a benchmark fox", "model": TINY_REPO, **SMALL}
        local_cfg = Config.from_mapping({"keep_alive_s": 600}, "<bench>")
        local_cfg.videos_dir.mkdir(parents=True, exist_ok=True)
        remote_cfg = server.desktop(desktop_root, "real")
        fake_cfg = server.desktop(desktop_root, "fake1")

        # Ray runs a CPU slot's worker with as many threads as CPUs it reserved (OMP_NUM_THREADS, here 1): the
        # local worker gets the same, so both sides do the same work.
        threads = {**os.environ, "OMP_NUM_THREADS": "1"}
        local, local_one = timed_jobs(lambda sink: WorkerProcess(sink, keep_alive_s=600, env=threads), request,
                                      "local")
        remote, remote_one = timed_jobs(lambda sink: RemoteWorker(sink, remote_cfg), request, "remote")
        plumbing, plumbing_one = timed_jobs(lambda sink: RemoteWorker(sink, fake_cfg),
                                            {"prompt": "quick", "model": "org/fake"}, "fake")
        for warm in (local_one, remote_one, plumbing_one):
            warm()  # loads the model (or starts the fake worker) once
        local_s, remote_s, fake_s = [], [], []
        for _ in range(args.rounds):
            local_s.append(local_one())
            remote_s.append(remote_one())
            fake_s.append(plumbing_one())
        for runner in (local, remote, plumbing):
            runner.stop()
        out["per_job"] = {
            "local_median_s": round(statistics.median(local_s), 3),
            "remote_median_s": round(statistics.median(remote_s), 3),
            "overhead_s": round(statistics.median(remote_s) - statistics.median(local_s), 3),
            "remote_fake_worker_median_s": round(statistics.median(fake_s), 3),
            "rounds": args.rounds,
        }

        slow = {"prompt": "slow throughput", "model": "org/fake"}
        one, two = throughput(server, "fake1", slow), throughput(server, "fake2", slow)
        out["throughput_fake_4_jobs"] = {"one_slot_s": round(one, 2), "two_slots_s": round(two, 2),
                                         "speedup": round(one / two, 2)}
        for app in ("real", "real2"):  # warm every slot's worker first (each loads the model once)
            throughput(server, app, request, jobs=2)
        one, two = throughput(server, "real", request), throughput(server, "real2", request)
        out["throughput_tiny_4_jobs"] = {"one_slot_s": round(one, 2), "two_slots_s": round(two, 2),
                                         "speedup": round(one / two, 2)}
        count, pss = ray_memory_mb()
        out["ray_processes"] = count
        out["ray_pss_mb"] = round(pss)
    finally:
        server.close()
    per = out["per_job"]
    print(f"ray.init: {out['ray_init_s']} s; deployments: {out['deploy_s']}")
    print(f"per job (warm, tiny pipeline, median of {per['rounds']}): local {per['local_median_s']:.3f} s, "
          f"remote {per['remote_median_s']:.3f} s -> overhead {per['overhead_s']:+.3f} s (goal < 0.5 s)")
    print(f"remote path with the fake worker (plumbing only): {per['remote_fake_worker_median_s']:.3f} s per job")
    for key, what in (("throughput_fake_4_jobs", "fake worker, 5 s jobs"), ("throughput_tiny_4_jobs",
                                                                           "tiny pipeline, CPU-bound")):
        t = out[key]
        print(f"4 jobs ({what}): 1 slot {t['one_slot_s']} s, 2 slots {t['two_slots_s']} s -> x{t['speedup']}")
    print(f"Ray: {out['ray_processes']} processes, {out['ray_pss_mb']} MB PSS (without vidtray's workers)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
