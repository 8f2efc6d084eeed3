"""What does vidtray add on top of diffusers? ``vidtray generate`` versus a plain diffusers script doing the
same work (start Python, load the pipeline, generate, write an H.264 mp4) on the tiny test pipeline, on the
CPU, in alternating runs so machine noise hits both sides alike. Prints the median wall time of each and the
ratio (goal: <= 1.10).

    python benchmarks/generate_overhead.py [--runs 5] [--steps 4] [--frames 8] [--size 32] [--json OUT]

vidtray's extra work is the CLI process, the worker protocol, disk checks, the sidecar, the library entry
and the thumbnail; torch + diffusers imports dominate both sides.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

PLAIN = r"""
import sys
import numpy as np
import torch
import imageio_ffmpeg
from diffusers import DiffusionPipeline

folder, out, prompt, frames, steps, size, fps, seed = sys.argv[1:9]
frames, steps, size, fps, seed = int(frames), int(steps), int(size), int(fps), int(seed)
pipe = DiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
generator = torch.Generator("cpu").manual_seed(seed)
video = pipe(prompt, height=size, width=size, num_frames=frames, num_inference_steps=steps,
             generator=generator, output_type="np").frames[0]
video = (np.clip(video, 0, 1) * 255).round().astype(np.uint8)
writer = imageio_ffmpeg.write_frames(out, (size, size), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                     macro_block_size=1, quality=None, output_params=["-crf", "18"],
                                     ffmpeg_log_level="error")
writer.send(None)
for frame in video:
    writer.send(frame)
writer.close()
"""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd[:4])}...\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs of each side (alternating)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    from gen_fixtures import build_tiny_pipeline

    with tempfile.TemporaryDirectory(prefix="vidtray-bench-") as tmp:
        tmpd = Path(tmp)
        folder = build_tiny_pipeline(tmpd / "tiny-t2v")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmpd / "hf"),
               "VIDTRAY_DATA_DIR": str(tmpd / "data"), "VIDTRAY_LOG_DIR": str(tmpd / "logs"),
               "VIDTRAY_CONFIG": str(tmpd / "config.toml"), "PYTHONPATH": str(ROOT)}
        (tmpd / "config.toml").write_text("min_free_gb = 0.0\n")
        common = ["a lighthouse in a storm", str(args.frames), str(args.steps), str(args.size), "8", "7"]
        plain_cmd = [sys.executable, "-c", PLAIN, str(folder), str(tmpd / "plain.mp4"), *common]
        vidtray_cmd = [sys.executable, "-m", "vidtray", "generate", "a lighthouse in a storm", "--model",
                       str(folder), "--frames", str(args.frames), "--steps", str(args.steps), "--height",
                       str(args.size), "--width", str(args.size), "--fps", "8", "--seed", "7", "--json"]
        # one warm-up of each (page cache, ffmpeg binary, .pyc files), not counted
        timed(plain_cmd, env)
        timed(vidtray_cmd, env)
        plain: list[float] = []
        ours: list[float] = []
        for i in range(args.runs):
            # alternate which side goes first so drifts in machine load cancel out
            order = [(plain, plain_cmd), (ours, vidtray_cmd)]
            for bucket, cmd in order if i % 2 == 0 else reversed(order):
                bucket.append(timed(cmd, env))
        videos = list((tmpd / "data" / "generated" / "videos").glob("*.mp4"))
        assert len(videos) == args.runs + 1, videos

    med_plain, med_ours = statistics.median(plain), statistics.median(ours)
    ratio = med_ours / med_plain
    print(f"tiny pipeline: {args.frames} frames {args.size}x{args.size}, {args.steps} steps, CPU, "
          f"{args.runs} alternating runs each")
    print(f"{'':<22}{'median s':>10}{'min s':>8}{'max s':>8}")
    print(f"{'plain diffusers':<22}{med_plain:>10.2f}{min(plain):>8.2f}{max(plain):>8.2f}")
    print(f"{'vidtray generate':<22}{med_ours:>10.2f}{min(ours):>8.2f}{max(ours):>8.2f}")
    print(f"ratio vidtray / plain = {ratio:.3f}  (goal <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})")
    if args.json:
        args.json.write_text(json.dumps({"plain_s": plain, "vidtray_s": ours, "median_plain_s": med_plain,
                                         "median_vidtray_s": med_ours, "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
