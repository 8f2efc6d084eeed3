"""Screenshot of the prompt popup for the README: ``python installer/screenshot_popup.py [OUT.png]``.

Starts its own Xvfb, opens the real popup (``python -m vidtray.tray.popup``) with a sample
prompt, in a throw-away data folder and model cache (so it shows what a fresh install shows),
and saves the window with ImageMagick's ``import`` (Debian: imagemagick) to ``docs/popup.png``.
Needs Xvfb and xdotool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a red fox running through fresh snow at sunrise, cinematic"


def start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp", "-screen", "0", "1024x768x24"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    number = b""
    while not number.endswith(b"\n"):
        chunk = os.read(read_fd, 16)
        if not chunk:
            break
        number += chunk
    os.close(read_fd)
    if not number.strip().isdigit():
        proc.kill()
        raise SystemExit("Xvfb did not start")
    return proc, f":{number.decode().strip()}"


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "popup.png"
    for tool in ("Xvfb", "xdotool", "import"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (Debian: xvfb xdotool imagemagick)")
    xvfb, display = start_xvfb()
    popup = None
    try:
        with tempfile.TemporaryDirectory(prefix="vidtray-shot-") as tmp:
            env = {**os.environ, "DISPLAY": display, "VIDTRAY_DATA_DIR": str(Path(tmp) / "data"),
                   "VIDTRAY_LOG_DIR": str(Path(tmp) / "logs"), "HF_HOME": str(Path(tmp) / "hf"),
                   "PYTHONPATH": str(ROOT)}
            env.pop("VIDTRAY_CONFIG", None)
            popup = subprocess.Popen([sys.executable, "-m", "vidtray.tray.popup", "--prompt", PROMPT], env=env,
                                     cwd=ROOT)
            found = subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--class", "VidtrayPopup"],
                                   env=env, capture_output=True, text=True, timeout=30)
            window = found.stdout.split()[0]
            time.sleep(1.0)  # let the model info line settle
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["import", "-window", window, str(out)], env=env, check=True, timeout=30)
    finally:
        if popup is not None:
            popup.terminate()
            popup.wait(10)
        xvfb.terminate()
        xvfb.wait(10)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
