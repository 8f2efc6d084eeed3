"""`vidtray storage --json` against `du -sb` on the same 20,000-file tree (alternating runs).

Two trees of 20,000 files each:
- mixed: a videos folder with 10,000 files (videos, sidecars, sub-folders, .partial/) and a
  Hugging Face cache with 10,000 files in 20 repos (blobs + snapshot symlinks + refs);
- videos: 20,000 files (10,000 videos + sidecars) in the videos folder, an empty cache.
Prints both medians and the ratio (goal: at most 2x), plus the in-process scan time, which
leaves out the Python interpreter's start.

    python benchmarks/storage_scan.py [--files 20000] [--rounds 7] [--layout mixed|videos|both]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import alternate, time_cmd  # noqa: E402
from hf_cache import make_repo  # noqa: E402


def build_tree(root: Path, n_files: int, layout: str = "mixed") -> dict[str, str]:
    data, hf_home = root / "data", root / "hf"
    videos = data / "generated" / "videos"
    half = n_files // 2 if layout == "mixed" else n_files
    for i in range(half // 2):  # a video and its sidecar
        folder = videos / f"batch{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"clip_{i}.mp4").write_bytes(b"\0" * 2048)
        (folder / f"clip_{i}.json").write_text('{"prompt": "x"}')
    (videos / ".partial").mkdir(parents=True, exist_ok=True)
    (videos / ".partial" / "run.mp4").write_bytes(b"\0" * 100)
    cache = hf_home / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    per_repo = (n_files - half) // 20 // 2  # each file is a blob plus a snapshot symlink
    for r in range(20 if per_repo else 0):
        make_repo(cache, f"org/model{r}", {f"f{j}.bin": f"{r}-{j}".encode() * 64 for j in range(per_repo)})
    return {**os.environ, "VIDTRAY_DATA_DIR": str(data), "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1",
            "VIDTRAY_LOG_DIR": str(root / "logs")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--layout", choices=["mixed", "videos", "both"], default="both")
    args = ap.parse_args()
    for layout in (["mixed", "videos"] if args.layout == "both" else [args.layout]):
        run(layout, args)


def run(layout: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = build_tree(root, args.files, layout)
        count = sum(len(f) + len(d) for _, d, f in os.walk(root))
        vidtray = [sys.executable, "-m", "vidtray", "storage", "--json"]
        du = ["du", "-sb", str(root / "data"), str(root / "hf")]
        t_vid, t_du = alternate(lambda: time_cmd(vidtray, env), lambda: time_cmd(du, env), args.rounds)

        # The same scan in-process, without the interpreter start-up and imports.
        code = ("import time, sys; from vidtray.config import load_config; from vidtray.commands.storage "
                "import build_report; import huggingface_hub; cfg = load_config(); t = time.perf_counter(); "
                "build_report(cfg); print(time.perf_counter() - t)")
        scan = min(float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                        check=True).stdout) for _ in range(3))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import vidtray.cli, huggingface_hub"], env=env, check=True)
        startup = time.perf_counter() - start
    print(f"\n[{layout}] tree: {count} entries ({args.files} files + symlinks/folders)")
    print(f"du -sb                   median {t_du * 1000:8.1f} ms")
    print(f"vidtray storage --json   median {t_vid * 1000:8.1f} ms")
    print(f"  of which scan in-process       {scan * 1000:8.1f} ms; interpreter + imports ~{startup * 1000:.0f} ms")
    print(f"ratio vidtray/du: {t_vid / t_du:.2f}x (goal <= 2x); scan-only/du: {scan / t_du:.2f}x")


if __name__ == "__main__":
    main()
