"""A stand-in for ``python -m vidtray.services.worker`` that speaks the same JSON lines, without torch.

The supervisor tests run it so that crashes, restarts, pauses and cancels take milliseconds. What a
job does is chosen by its prompt: ``crash`` exits hard mid-job, ``slow`` runs 100 steps of 0.05 s
(cancellable), anything else finishes at once. Run: ``python fake_worker.py --keep-alive S``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep-alive", type=float, default=2.0)
    args, _ = parser.parse_known_args()
    jobs: queue.Queue = queue.Queue()
    cancelled: set = set()

    def read() -> None:
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "job":
                jobs.put(cmd)
            elif cmd["cmd"] == "cancel":
                cancelled.add(cmd.get("id"))
            elif cmd["cmd"] == "exit":
                if cmd.get("cancel"):
                    cancelled.add("*")
                jobs.put(None)
        jobs.put(None)

    threading.Thread(target=read, daemon=True).start()
    emit({"event": "hello", "pid": os.getpid()})
    while True:
        try:
            cmd = jobs.get(timeout=args.keep_alive)
        except queue.Empty:
            emit({"event": "exit", "reason": "idle"})
            return 0
        if cmd is None:
            emit({"event": "exit", "reason": "asked"})
            return 0
        job, prompt = cmd["id"], cmd["request"]["prompt"]
        if prompt.startswith("crash"):
            emit({"event": "progress", "job": job, "step": 1, "steps": 10})
            print("Traceback (most recent call last):\nRuntimeError: CUDA error: an illegal memory access",
                  file=sys.stderr, flush=True)
            os._exit(3)
        steps = 100 if prompt.startswith("slow") else 1
        for i in range(steps):
            if job in cancelled or "*" in cancelled:
                emit({"event": "cancelled", "job": job})
                break
            time.sleep(0.05 if steps > 1 else 0)
            emit({"event": "progress", "job": job, "step": i + 1, "steps": steps})
        else:
            emit({"event": "done", "job": job, "result": {"path": f"/videos/{job}.mp4", "seed": 1}})


if __name__ == "__main__":
    sys.exit(main())
