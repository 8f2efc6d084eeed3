"""Ingest benchmark: how fast the watcher gets finished videos into library.json.

1. 1,000 small real videos (1 s, 64x48 H.264, distinct content, made by one ffmpeg run) are generated
   outside the watched folder, then moved in with ``os.rename``; timed until all 1,000 are in the
   library as ``ready`` (and, separately, until all have thumbnails).
   Baseline in the same run: probing the same files one ffmpeg process each, sequentially (the naive
   import path). Goal: >= 100 files/s.
2. Adding one batch (100 videos) to a library that already holds 50,000 items, in a fresh Library
   (a new process has to parse the file) and again (parsed copy reused). Baseline: a bare
   ``json.loads`` + ``json.dumps`` + write of the same file. Goal: < 1 s.
3. Resident memory of a ``vidtray watch`` process whose library holds 50,000 items, next to one whose
   library is empty.

With ``--recipes`` every clip carries a vidtray recipe in its tags (as generated videos do), which the
import reads from the probe's own ffmpeg run; the check then also asks that every item got its prompt.

Run: ``python benchmarks/ingest.py`` (add ``--files 200 --items 5000`` for a quick run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vidtray.services import media  # noqa: E402
from vidtray.services.libdoc import dumps  # noqa: E402
from vidtray.services.library import Library  # noqa: E402
from vidtray.services.watcher import Watcher  # noqa: E402

#: A recipe as the worker embeds it (about 700 bytes of JSON), for ``--recipes``.
RECIPE = {"vidtray_recipe": 1, "prompt": "a corgi surfing a wave at sunset, cinematic, golden light, spray",
          "negative_prompt": "blurry, low quality", "seed": 1234567, "steps": 40, "frames": 24, "width": 576,
          "height": 320, "fps": 8, "guidance_scale": 9.0, "scheduler": "DPMSolverMultistepScheduler",
          "model": "cerspense/zeroscope_v2_576w", "revision": "6963642a64dbefa93663d1ecebb4ceda2d9ecb28",
          "pipeline": "TextToVideoSDPipeline", "device": "cuda", "dtype": "float16", "torch_version": "2.13.0",
          "diffusers_version": "0.42.1", "vidtray_version": "0.1.0", "created": "2026-01-01T12:00:00+00:00"}


def make_videos(folder: Path, count: int, recipes: bool = False) -> list[Path]:
    """``count`` distinct 1-second clips from one ffmpeg process (the segment muxer), each with a recipe in
    its tags if ``recipes``."""
    from vidtray.services import recipe

    folder.mkdir(parents=True, exist_ok=True)
    tags = recipe.container_tags(RECIPE) if recipes else {}
    subprocess.run(
        [media.ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=8",
         *[arg for key, value in tags.items() for arg in ("-metadata", f"{key}={value}")],
         "-t", str(count), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "8",
         "-f", "segment", "-segment_time", "1", "-segment_format", "mp4",
         "-reset_timestamps", "1", str(folder / "clip_%05d.mp4")],
        check=True)
    files = sorted(folder.glob("clip_*.mp4"))
    assert len(files) == count, len(files)
    return files


def bench_ingest(work: Path, count: int, recipes: bool = False) -> dict[str, float]:
    staging = work / "staging"
    watched = work / "watched"
    watched.mkdir()
    t0 = time.perf_counter()
    files = make_videos(staging, count, recipes)
    print(f"generated {count} videos in {time.perf_counter() - t0:.1f} s")

    # Baseline: the naive path, one ffmpeg process per file, one after the other.
    t0 = time.perf_counter()
    for f in files:
        assert media.probe_many([f], batch=1, parallel=1)[0].ok
    naive_s = time.perf_counter() - t0

    lib = Library(work / "library.json")
    watcher = Watcher(lib, [watched], thumbnails_dir=work / "thumbs")
    watcher.start()
    assert watcher.wait_idle(30)
    t0 = time.perf_counter()
    for f in files:
        os.rename(f, watched / f.name)
    rename_s = time.perf_counter() - t0
    ready_s = thumbs_s = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        items = lib.items()
        if ready_s is None and sum(1 for i in items if i.status == "ready") == count:
            ready_s = time.perf_counter() - t0
        if ready_s is not None and sum(1 for i in items if i.thumbnail) == count:
            thumbs_s = time.perf_counter() - t0
            break
        time.sleep(0.05)
    if recipes and not all(i.data.get("prompt") == RECIPE["prompt"] for i in lib.items()):
        raise SystemExit("not every item got the prompt of the recipe in its file")
    stats = dict(watcher.stats)
    thumb_writes = watcher._thumbs.writes if watcher._thumbs is not None else 0
    watcher.stop()
    if ready_s is None or thumbs_s is None:
        raise SystemExit(f"not all videos arrived: {stats}")
    return {"naive_s": naive_s, "rename_s": rename_s, "ready_s": ready_s, "thumbs_s": thumbs_s,
            "writes": stats["writes"], "thumb_writes": thumb_writes}


def big_library(path: Path, items: int) -> None:
    """A library.json with ``items`` realistic entries (paths outside any watched folder)."""
    doc = {"version": 1, "items": [
        {"id": f"{k:012x}", "type": "video", "path": f"/archive/2024/zeroscope_20240101-120000_{k:08x}.mp4",
         "title": f"clip {k}", "prompt": "a corgi surfing a wave at sunset, cinematic",
         "model": "cerspense/zeroscope_v2_576w", "seed": k, "created": "2024-01-01T12:00:00+00:00",
         "added": "2024-01-01T12:00:05+00:00", "size_bytes": 184_321, "duration_s": 3.0, "fps": 8.0,
         "width": 576, "height": 320, "codec": "h264", "thumbnail": f"/archive/thumbs/{k:012x}.jpg",
         "source": "generated", "pinned": False, "scheduled_at": None, "tags": ["archive"], "status": "ready"}
        for k in range(items)]}
    path.write_bytes(dumps(doc))


def bench_batch(work: Path, items: int) -> dict[str, float]:
    path = work / "big" / "library.json"
    path.parent.mkdir()
    big_library(path, items)
    size_mb = path.stat().st_size / 1e6
    t0 = time.perf_counter()
    doc = json.loads(path.read_bytes())
    tmp = path.with_name("baseline.json")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(doc))
        fh.flush()
        os.fsync(fh.fileno())
    baseline_s = time.perf_counter() - t0
    lib = Library(path)
    batch = [(Path(f"/new/clip_{k}.mp4"), {"duration_s": 1.0, "fps": 8.0, "width": 64, "height": 48})
             for k in range(100)]
    t0 = time.perf_counter()
    lib.add_videos(batch)
    cold_s = time.perf_counter() - t0
    batch2 = [(Path(f"/new/more_{k}.mp4"), {"duration_s": 1.0}) for k in range(100)]
    t0 = time.perf_counter()
    lib.add_videos(batch2)
    warm_s = time.perf_counter() - t0
    assert len(lib.items()) == items + 200
    return {"size_mb": size_mb, "baseline_s": baseline_s, "cold_s": cold_s, "warm_s": warm_s}


def watch_rss(work: Path, items: int, clip: Path) -> int:
    """RSS (bytes) of ``vidtray watch`` once it has reconciled and imported one file."""
    import psutil

    data = work / f"data-{items}"
    videos = data / "generated" / "videos"
    videos.mkdir(parents=True)
    if items:
        big_library(data / "library.json", items)
    env = {**os.environ, "VIDTRAY_DATA_DIR": str(data), "VIDTRAY_LOG_DIR": str(work / "logs"),
           "VIDTRAY_CONFIG": str(work / "empty.toml"), "VIDTRAY_WATCH_SETTLE_S": "0.3"}
    (work / "empty.toml").write_text("notifications = false\n")
    proc = subprocess.Popen([sys.executable, "-m", "vidtray", "watch"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        shutil.copyfile(clip, videos / "one.mp4.part")
        os.rename(videos / "one.mp4.part", videos / "one.mp4")
        lib = Library(data / "library.json")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(i.path.endswith("one.mp4") and i.thumbnail for i in lib.items()):
                break
            time.sleep(0.2)
        else:
            raise SystemExit("watch did not import the file")
        time.sleep(0.5)
        return psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--recipes", action="store_true", help="every clip carries a vidtray recipe in its tags")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vidtray-bench-") as tmp:
        work = Path(tmp)
        with_recipes = " (each with a recipe in its tags)" if args.recipes else ""
        print(f"ingest: {args.files} videos{with_recipes} moved into a watched folder (cpus: {os.cpu_count()})")
        r = bench_ingest(work, args.files, args.recipes)
        naive_rate = args.files / r["naive_s"]
        rate = args.files / r["ready_s"]
        verdict = "PASS" if rate >= 100 else "FAIL"
        print(f"  baseline, one ffmpeg probe per file, sequential: {r['naive_s']:.2f} s "
              f"= {naive_rate:.0f} files/s")
        print(f"  os.rename of all files into the folder:          {r['rename_s'] * 1000:.0f} ms")
        print(f"  watcher, all in library.json as ready:           {r['ready_s']:.2f} s = {rate:.0f} files/s "
              f"({r['writes']} library writes)  goal >= 100 files/s: {verdict}")
        print(f"  ... and all thumbnails recorded:                 {r['thumbs_s']:.2f} s "
              f"({r['thumb_writes']} library writes)")
        print(f"  ratio watcher / naive sequential probe: {rate / naive_rate:.1f}x")

        b = bench_batch(work, args.items)
        print(f"batch: add 100 videos to a library of {args.items} items ({b['size_mb']:.1f} MB)")
        print(f"  baseline json.loads + json.dumps + fsync'd write: {b['baseline_s']:.2f} s")
        for label, key in (("fresh Library (parses the file):   ", "cold_s"),
                           ("same Library again (parse reused):", "warm_s")):
            print(f"  {label} {b[key]:.2f} s  ratio to baseline {b[key] / b['baseline_s']:.2f}x  "
                  f"goal < 1 s: {'PASS' if b[key] < 1 else 'FAIL'}")

        clip = next((work / "watched").glob("*.mp4"))
        empty = watch_rss(work, 0, clip)
        full = watch_rss(work, args.items, clip)
        print(f"rss of `vidtray watch`: empty library {empty / 2**20:.0f} MiB, "
              f"{args.items} items {full / 2**20:.0f} MiB (ratio {full / empty:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
