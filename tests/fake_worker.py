"""A stand-in for ``python -m vidtray.services.worker`` that speaks the same protocol, without torch.

It reads and writes the protocol's own types (``vidtray.services.protocol``), so a change there reaches it.
The supervisor tests run it so that crashes, restarts, pauses and cancels take milliseconds. What a
job does is chosen by its prompt: ``crash`` exits hard mid-job, ``slow`` runs 100 steps of 0.05 s
(cancellable; ``slower``: 200), anything else finishes at once. Run: ``python fake_worker.py --keep-alive S``.

``--write-video``: a finished job leaves a real small mp4 and its sidecar in ``$VIDTRAY_DATA_DIR``'s videos
folder, as the real worker does (what a GPU server's slot hands to a desktop).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path

from vidtray.services.protocol import (
    AnyEvent,
    CancelCommand,
    Cancelled,
    Done,
    ExitCommand,
    Exiting,
    Hello,
    JobCommand,
    Progress,
    parse_command,
)

ALL = "*"


def emit(event: AnyEvent) -> None:
    sys.stdout.write(event.to_line() + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep-alive", type=float, default=2.0)
    parser.add_argument("--write-video", action="store_true")
    args, _ = parser.parse_known_args()
    jobs: queue.Queue[JobCommand | None] = queue.Queue()
    cancelled: set[str] = set()

    def read() -> None:
        for line in sys.stdin:
            command = parse_command(line)
            if isinstance(command, JobCommand):
                jobs.put(command)
            elif isinstance(command, CancelCommand):
                cancelled.add(command.id or ALL)
            elif isinstance(command, ExitCommand):
                if command.cancel:
                    cancelled.add(ALL)
                jobs.put(None)
        jobs.put(None)

    threading.Thread(target=read, daemon=True).start()
    emit(Hello(pid=os.getpid(), version="fake", keep_alive_s=args.keep_alive))
    while True:
        try:
            command = jobs.get(timeout=args.keep_alive)
        except queue.Empty:
            emit(Exiting(reason="idle"))
            return 0
        if command is None:
            emit(Exiting(reason="asked"))
            return 0
        job, prompt = command.id, str(command.request["prompt"])
        if prompt.startswith("crash"):
            emit(Progress(job=job, step=1, steps=10))
            print("Traceback (most recent call last):\nRuntimeError: CUDA error: an illegal memory access",
                  file=sys.stderr, flush=True)
            os._exit(3)
        steps = 200 if prompt.startswith("slower") else 100 if prompt.startswith("slow") else 1
        for i in range(steps):
            if job in cancelled or ALL in cancelled:
                emit(Cancelled(job=job))
                break
            time.sleep(0.05 if steps > 1 else 0)
            emit(Progress(job=job, step=i + 1, steps=steps))
        else:
            seed = command.request.get("seed")
            result = write_video(job, command.request) if args.write_video else {"path": f"/videos/{job}.mp4"}
            emit(Done(job=job, result={"seed": seed if isinstance(seed, int) else 1, **result}))


def write_video(job: str, request: dict) -> dict:
    from media_helpers import write_mp4

    from vidtray.services.sidecar import sidecar_path

    videos = os.path.join(os.environ["VIDTRAY_DATA_DIR"], "generated", "videos")
    path = write_mp4(Path(videos) / f"fake_{job}.mp4", frames=8, width=32, height=32, fps=8)
    seed = request.get("seed") if isinstance(request.get("seed"), int) else 1
    params = {"prompt": request["prompt"], "negative_prompt": None, "model": request.get("model") or "fake/model",
              "frames": 8, "steps": 1, "height": 32, "width": 32, "fps": 8.0, "seed": seed}
    sidecar = sidecar_path(path)
    sidecar.write_text(json.dumps({**params, "device": request.get("device") or "cpu", "dtype": "float32",
                                   "created": "2026-01-01T00:00:00+00:00", "vidtray_version": "fake"}))
    return {"path": str(path), "sidecar": str(sidecar), "device": request.get("device") or "cpu",
            "model": params["model"], "frames": 8, "width": 32, "height": 32, "fps": 8.0, "steps": 1}


if __name__ == "__main__":
    sys.exit(main())
