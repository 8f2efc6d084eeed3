"""`vidtray storage --json` against `du -sb` of the same folders, and against its peers (`hf cache ls`, then
`du -sb` of the videos folder, one after the other), in one run, on two shapes:

- budget (issue 14): 10,000 videos with their sidecars (20,000 files) in the videos folder, and a Hugging Face
  cache of 30 repos of 50 files (blobs, snapshot symlinks, refs); goal: at most 2x `du -sb`, and at most half
  the time of the two peer commands;
- the 20,000-file trees of before: mixed (10,000 files in the videos folder, sub-folders and .partial/, and a
  cache of 10,000 files in 20 repos) and videos (20,000 files in the videos folder, an empty cache).

Runs alternate (each command in turn, every round), medians are printed with the ratios, plus the scan alone
in-process (no interpreter start).

    python benchmarks/storage_scan.py [--rounds 9] [--shape budget|mixed|videos|all] [--compare CHECKOUT]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import medians2, time_cpu  # noqa: E402
from hf_cache import make_repo  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def build_budget(root: Path, videos: int = 10_000, repos: int = 30, files_per_repo: int = 50) -> None:
    folder = root / "data" / "generated" / "videos"
    folder.mkdir(parents=True)
    for i in range(videos):  # as vidtray writes them: one folder, a video and its sidecar
        name = f"zeroscope_20240101-{i:06d}_{i:08x}"
        (folder / f"{name}.mp4").write_bytes(b"\0" * 2048)
        (folder / f"{name}.json").write_text('{"prompt": "x"}')
    cache = root / "hf" / "hub"
    cache.mkdir(parents=True)
    for r in range(repos):
        make_repo(cache, f"org/model{r}", {f"unet/f{j}.safetensors": f"{r}-{j}".encode() * 64
                                           for j in range(files_per_repo)})


def build_old(root: Path, n_files: int, layout: str) -> None:
    """The earlier benchmark's trees (mixed / videos)."""
    data, cache = root / "data", root / "hf" / "hub"
    videos = data / "generated" / "videos"
    half = n_files // 2 if layout == "mixed" else n_files
    for i in range(half // 2):  # a video and its sidecar
        folder = videos / f"batch{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"clip_{i}.mp4").write_bytes(b"\0" * 2048)
        (folder / f"clip_{i}.json").write_text('{"prompt": "x"}')
    (videos / ".partial").mkdir(parents=True, exist_ok=True)
    (videos / ".partial" / "run.mp4").write_bytes(b"\0" * 100)
    cache.mkdir(parents=True, exist_ok=True)
    per_repo = (n_files - half) // 20 // 2  # each file is a blob plus a snapshot symlink
    for r in range(20 if per_repo else 0):
        make_repo(cache, f"org/model{r}", {f"f{j}.bin": f"{r}-{j}".encode() * 64 for j in range(per_repo)})


def hf_cli() -> str:
    """huggingface_hub's CLI (`hf`), beside this Python or on PATH."""
    here = Path(sys.executable).parent / "hf"
    found = str(here) if here.exists() else shutil.which("hf")
    if not found:
        raise SystemExit("the `hf` command (huggingface_hub's CLI) is not installed")
    return found


def run(shape: str, rounds: int, compare: Path | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if shape == "budget":
            build_budget(root)
        else:
            build_old(root, 20_000, shape)
        env = {**os.environ, "VIDTRAY_DATA_DIR": str(root / "data"), "HF_HOME": str(root / "hf"),
               "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "VIDTRAY_LOG_DIR": str(root / "logs"),
               "VIDTRAY_CONFIG": str(root / "config.toml"), "NO_COLOR": "1"}
        (root / "config.toml").write_text("")
        entries = sum(len(f) + len(d) for _, d, f in os.walk(root))
        videos = root / "data" / "generated" / "videos"
        vidtray = [sys.executable, "-m", "vidtray", "storage", "--json"]
        du = ["du", "-sb", str(root / "data"), str(root / "hf")]
        hf = [hf_cli(), "cache", "ls", "--format", "json"]
        du_videos = ["du", "-sb", str(videos)]

        def peers() -> tuple[float, float]:
            hf_wall, hf_cpu = time_cpu(hf, env)
            du_wall, du_cpu = time_cpu(du_videos, env)
            return hf_wall + du_wall, hf_cpu + du_cpu

        runs = [lambda: time_cpu(vidtray, env, cwd=ROOT), lambda: time_cpu(du, env), peers]
        if compare is not None:  # another checkout's vidtray, same tree, same rounds (before/after)
            runs.append(lambda: time_cpu(vidtray, env, cwd=compare))
        (w_vid, c_vid), (w_du, c_du), (w_peers, c_peers), *other = medians2(runs, rounds)
        code = ("import time; from vidtray.config import load_config; from vidtray.commands.storage "
                "import build_report; cfg = load_config(); build_report(cfg); t = time.perf_counter(); "
                "build_report(cfg); print(time.perf_counter() - t)")
        scan = min(float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                        check=True, cwd=ROOT).stdout) for _ in range(3))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vidtray", "storage", "--help"], env=env, check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        startup = time.perf_counter() - start
    goal = shape == "budget"
    print(f"\n[{shape}] {entries} entries (files, symlinks, folders); medians of {rounds} rounds, wall / CPU")
    print(f"  du -sb (videos folder + HF_HOME)         {w_du * 1000:8.1f} ms / {c_du * 1000:7.1f} ms")
    print(f"  hf cache ls; du -sb videos (the peers)   {w_peers * 1000:8.1f} ms / {c_peers * 1000:7.1f} ms")
    print(f"  vidtray storage --json                   {w_vid * 1000:8.1f} ms / {c_vid * 1000:7.1f} ms")
    print(f"    the report in-process {scan * 1000:.1f} ms (its imports done first); "
          f"`storage --help` (interpreter + imports) ~{startup * 1000:.0f} ms")
    for w_other, c_other in other:
        print(f"  the same in {compare}: {w_other * 1000:8.1f} ms / {c_other * 1000:7.1f} ms "
              f"({w_other / w_du:.2f}x du wall)")
    print(f"  vidtray / du:    {w_vid / w_du:5.2f}x wall, {c_vid / c_du:5.2f}x CPU"
          + ("  (goal <= 2x)" if goal else ""))
    print(f"  vidtray / peers: {w_vid / w_peers:5.2f}x wall, {c_vid / c_peers:5.2f}x CPU"
          + ("  (goal <= 0.5x)" if goal else ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--shape", choices=["budget", "mixed", "videos", "all"], default="all")
    ap.add_argument("--compare", type=Path, metavar="CHECKOUT", help="also time another checkout's vidtray")
    args = ap.parse_args()
    for shape in (["budget", "mixed", "videos"] if args.shape == "all" else [args.shape]):
        run(shape, args.rounds, args.compare)


if __name__ == "__main__":
    main()
