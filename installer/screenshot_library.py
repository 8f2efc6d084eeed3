"""Screenshots of the library page for the README: ``python installer/screenshot_library.py [OUT_DIR]``.

Makes a throw-away data folder with a dozen short sample clips (ffmpeg's own test patterns, as the bundled
imageio-ffmpeg renders them) with generation sidecars, imports them as ``vidtray library rescan`` does
(thumbnails included), pins, schedules and tags a few, serves the real page (``vidtray.web.server``) on a free
loopback port and takes ``library-grid.png`` and ``library-item.png`` (default ``docs/``) with Debian's
chromium through Playwright (``pip install playwright``; ``apt install chromium``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
SIZE = "384x216"
CLIPS = [
    # (file stem, ffmpeg lavfi source, prompt, seconds)
    ("fox", f"life=s={SIZE}:mold=10:ratio=0.12:death_color=#b5451b:life_color=#ffb347", "a red fox running through "
     "fresh snow at sunrise, cinematic", 3),
    ("nebula", f"mandelbrot=s={SIZE}:maxiter=500:end_pts=20", "slow zoom into a glowing nebula, deep space, 4k", 4),
    ("city", f"testsrc2=s={SIZE}", "a neon city street at night in the rain, reflections, blade runner style", 3),
    ("waves", f"zoneplate=s={SIZE}:kt2=8:kx2=180:ky2=90", "ocean waves seen from above, hypnotic, aerial", 2),
    ("forest", f"cellauto=s={SIZE}:rule=30:random_fill_ratio=0.4", "pine forest in the fog, drone shot, morning", 3),
    ("sunset", f"gradients=s={SIZE}:speed=0.08:c0=#ff7e5f:c1=#feb47b:c2=#6a3093:nb_colors=3",
     "sunset over the desert, warm colours, timelapse", 4),
    ("crystal", f"sierpinski=s={SIZE}:type=triangle", "a crystal growing in slow motion, macro lens", 2),
    ("bars", f"smptehdbars=s={SIZE}", "retro tv test card with static, vhs look", 2),
    ("jelly", f"gradients=s={SIZE}:speed=0.05:c0=#00c9ff:c1=#92fe9d:nb_colors=2:type=radial",
     "bioluminescent jellyfish drifting in dark water", 3),
    ("palette", "colorchart=preset=reference", "colour chart for calibration, studio lighting", 2),
    ("lava", f"mandelbrot=s={SIZE}:inner=convergence:maxiter=300:end_pts=10", "lava lamp blobs, psychedelic, loop", 3),
    ("garden", f"life=s={SIZE}:mold=25:ratio=0.3:life_color=#3fa34d:death_color=#14361a",
     "moss spreading over old stones, timelapse, macro", 3),
]


def make_clip(ffmpeg: str, source: str, seconds: int, out: Path) -> None:
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", str(seconds), "-r", "8",
                    "-vf", f"scale={SIZE.replace('x', ':')}", "-pix_fmt", "yuv420p", "-c:v", "libx264", str(out)],
                   check=True)


def build_library(cfg: object) -> list[str]:
    import imageio_ffmpeg

    from vidtray.services.library import open_library
    from vidtray.services.watcher import Watcher, watch_folders

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    videos = cfg.videos_dir  # type: ignore[attr-defined]
    videos.mkdir(parents=True, exist_ok=True)
    day = 86400
    now = time.time()
    for n, (stem, source, prompt, seconds) in enumerate(CLIPS):
        name = f"zeroscope_2025051{n % 10}-1{n % 10}0{n % 6}00_{n:08x}"
        make_clip(ffmpeg, source, seconds, videos / f"{name}.mp4")
        created = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now - n * day * 0.7 - 3600 * n))
        (videos / f"{name}.json").write_text(json.dumps({
            "prompt": prompt, "negative_prompt": "blurry, low quality, watermark" if n % 3 == 0 else None,
            "model": "cerspense/zeroscope_v2_576w", "frames": seconds * 8, "steps": 40, "height": 216,
            "width": 384, "fps": 8, "seed": 1000 + 7 * n, "revision": "6d2eb0f6fd5ad1d5e3bb1d9f4c9d5e2a3b4c5d6e",
            "pipeline": "TextToVideoSDPipeline", "device": "cuda", "dtype": "float16",
            "timings": {"load_s": 4.2, "denoise_s": 8.61, "decode_s": 0.94, "encode_s": 0.12, "total_s": 13.9},
            "vidtray_version": "0.1.0", "created": created}), encoding="utf-8")
    lib = open_library(cfg)
    Watcher(lib, watch_folders(cfg), thumbnails_dir=cfg.thumbnails_dir).reconcile()  # type: ignore[attr-defined]
    items = sorted(lib.items(), key=lambda i: i["created"], reverse=True)
    lib.edit(items[0]["id"], pinned=True, tags=["fox", "winter"])
    lib.edit(items[2]["id"], scheduled_at="2026-06-01T09:00:00+02:00", tags=["city"])
    lib.edit(items[5]["id"], pinned=True)
    return [i["id"] for i in items]


def until(page: object, expression: str, timeout: float = 30.0) -> None:
    """Wait for a JavaScript expression to hold (polled from here: the page's CSP forbids eval inside it)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {expression}")
        time.sleep(0.05)


def main() -> int:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs"
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="vidtray-shot-") as tmp:
        os.environ.update(VIDTRAY_DATA_DIR=str(Path(tmp) / "data"), VIDTRAY_LOG_DIR=str(Path(tmp) / "logs"),
                          HF_HOME=str(Path(tmp) / "hf"), HF_HUB_OFFLINE="1", TZ="UTC")
        os.environ.pop("VIDTRAY_CONFIG", None)
        time.tzset()
        from vidtray.config import Config
        from vidtray.web.server import prepare

        cfg = Config.from_mapping({}, "<screenshot>")
        ids = build_library(cfg)
        page_server = prepare(cfg, port=0)
        thread = threading.Thread(target=page_server.run, daemon=True)
        thread.start()
        while not page_server.started:
            time.sleep(0.05)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
                page = browser.new_page(viewport={"width": 1280, "height": 800}, device_scale_factor=1,
                                        color_scheme="light")
                page.goto(page_server.url)
                until(page, "[...document.querySelectorAll('#grid img')].slice(0, 8)"
                            ".every(i => i.complete && i.naturalWidth > 0)")
                out_dir.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out_dir / "library-grid.png"))
                page.goto(f"http://127.0.0.1:{page_server.port}/item/{ids[0]}")
                until(page, "document.querySelector('#player').readyState >= 2")
                page.evaluate("document.querySelector('#player').currentTime = 1.5")
                until(page, "!document.querySelector('#player').seeking && "
                            "document.querySelector('#player').readyState >= 2")
                page.screenshot(path=str(out_dir / "library-item.png"))
                browser.close()
        finally:
            page_server.stop()
            thread.join(10)
    print(f"saved {out_dir / 'library-grid.png'} and {out_dir / 'library-item.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
