"""Idle cost of ``vidtray tray`` against a bare pystray icon, in the same run, under Xvfb.

    python benchmarks/tray_idle.py [--seconds 60] [--json]

Starts Xvfb, a private D-Bus session bus with dunst, and trayer (the harness in ``tests/``), then, side
by side in that one desktop: the tray (with its watcher, scheduler and worker supervisor, in a
throw-away data folder) and two bare pystray icons with one menu item: one with pystray's defaults,
one with the GTK setting the tray uses (``GDK_GL=disable``, see ``vidtray/tray/backend.py``), the
like-for-like baseline. After everything has docked and settled, it samples resident memory every
second and CPU time over the window, and checks that torch never loaded in the tray process
(``/proc/<pid>/maps`` and the tray's module list via ``VIDTRAY_DEBUG_MODULES``).

Goals (issue 6): idle RSS <= 1.5x the bare icon and < 60 MB, CPU < 1 %, no torch. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from desktop import desktop_session, start_xvfb  # noqa: E402
from tray_desktop import TrayProcess, start_trayer, wait_until, windows  # noqa: E402

BARE_ICON = """
import pystray
from PIL import Image
image = Image.open(__import__("sys").argv[1])
pystray.Icon("bare", image, "bare", menu=pystray.Menu(pystray.MenuItem("Quit", lambda i: i.stop()))).run()
"""
CLK_TCK = os.sysconf("SC_CLK_TCK")
HEAVY = ("torch", "diffusers", "transformers")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def cpu_ticks(pid: int) -> int:
    # Fields after the command name (which may contain spaces): utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


class Probe:
    def __init__(self, name: str, pid: int) -> None:
        self.name, self.pid = name, pid
        self.rss: list[int] = []
        self.child_rss: list[int] = []
        self.t0 = self.c0 = 0.0

    def begin(self) -> None:
        self.t0, self.c0 = time.monotonic(), cpu_ticks(self.pid)

    def sample(self) -> None:
        self.rss.append(rss_kb(self.pid))
        self.child_rss.append(sum(rss_kb(c) for c in children(self.pid) if Path(f"/proc/{c}").exists()))

    def result(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        cpu = (cpu_ticks(self.pid) - self.c0) / CLK_TCK
        return {
            "rss_mb_mean": statistics.mean(self.rss) / 1024,
            "rss_mb_max": max(self.rss) / 1024,
            "pss_mb": pss_kb(self.pid) / 1024,
            "children_rss_mb_max": max(self.child_rss) / 1024,
            "cpu_percent": 100 * cpu / wall,
            "cpu_seconds": cpu,
            "wall_seconds": wall,
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="idle window to measure (default 60)")
    ap.add_argument("--settle", type=float, default=10.0, help="wait after start before measuring (default 10)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    display = start_xvfb()
    try:
        with tempfile.TemporaryDirectory(prefix="vidtray-bench-") as tmp_name, \
                desktop_session(display, folder=Path(tmp_name) / "desk") as desk:
            tmp = Path(tmp_name)
            home = tmp / "home"
            modules = tmp / "modules.txt"
            env = {
                "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_STATE_HOME": str(home / ".state"),
                "XDG_DATA_HOME": str(home / ".local/share"), "XDG_CACHE_HOME": str(home / ".cache"),
                "HF_HOME": str(home / ".cache/huggingface"), "VIDTRAY_DATA_DIR": str(tmp / "data"),
                "VIDTRAY_LOG_DIR": str(tmp / "logs"), "HF_HUB_OFFLINE": "1", "VIDTRAY_DEBUG_MODULES": str(modules),
            }
            start_trayer(desk)
            icon_png = str(ROOT / "vidtray" / "icons" / "idle.png")
            bare_env = {k: v for k, v in desk.env.items() if k not in ("GDK_GL", "PYSTRAY_BACKEND")}
            # pystray's own default order fails here (AppIndicator typelib missing raises ValueError),
            # so the bare icons name GTK, as the tray chooses it.
            bare_default = desk.spawn([sys.executable, "-c", BARE_ICON, icon_png],
                                      env={**bare_env, "PYSTRAY_BACKEND": "gtk"})
            bare_same = desk.spawn([sys.executable, "-c", BARE_ICON, icon_png],
                                   env={**bare_env, "PYSTRAY_BACKEND": "gtk", "GDK_GL": "disable"})
            tray = TrayProcess(desk, env=env, logs=tmp)
            tray.wait_icon()
            wait_until(lambda: len([w for w in windows(desk.display.name)
                                    if w.viewable and w.wm_class and "panel" in w.ancestors]) >= 3,
                       30, "all three icons to dock")
            wait_until(lambda: modules.exists(), 30, "the tray's services to start")
            time.sleep(args.settle)

            probes = [Probe("vidtray tray", tray.proc.pid), Probe("bare icon, GDK_GL=disable", bare_same.pid),
                      Probe("bare icon, pystray defaults", bare_default.pid)]
            for p in probes:
                p.begin()
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                for p in probes:
                    p.sample()
                time.sleep(1.0)
            results = {p.name: p.result() for p in probes}
            maps = Path(f"/proc/{tray.proc.pid}/maps").read_text()
            loaded = set(modules.read_text().split())
            heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
            torch_mapped = "torch" in maps
            tray.stop()
    finally:
        display.stop()

    t, base, naive = (results["vidtray tray"], results["bare icon, GDK_GL=disable"],
                      results["bare icon, pystray defaults"])
    ratio = t["rss_mb_mean"] / base["rss_mb_mean"]
    goals = {
        "rss <= 1.5x bare icon (same GTK settings)": ratio <= 1.5,
        "rss < 60 MB": t["rss_mb_max"] < 60,
        "cpu < 1 %": t["cpu_percent"] < 1.0,
        "torch never loaded": not heavy and not torch_mapped,
    }
    doc = {"seconds": args.seconds, "results": results, "rss_ratio": ratio,
           "rss_ratio_vs_pystray_defaults": t["rss_mb_mean"] / naive["rss_mb_mean"],
           "heavy_modules": heavy, "torch_mapped": torch_mapped, "goals": goals}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"idle {args.seconds:.0f} s under Xvfb + trayer + D-Bus + dunst (settled {args.settle:.0f} s first)")
    print(f"{'process':<30}{'RSS mean':>10}{'RSS max':>10}{'PSS':>9}{'CPU':>9}{'children':>10}")
    for name, r in results.items():
        print(f"{name:<30}{r['rss_mb_mean']:>8.1f}MB{r['rss_mb_max']:>8.1f}MB{r['pss_mb']:>7.1f}MB"
              f"{r['cpu_percent']:>8.2f}%{r['children_rss_mb_max']:>8.1f}MB")
    print(f"RSS ratio tray / bare icon (same GTK settings): {ratio:.2f}x")
    print(f"RSS ratio tray / bare icon (pystray defaults):  {doc['rss_ratio_vs_pystray_defaults']:.2f}x")
    print(f"torch/diffusers/transformers in the tray: modules {heavy or 'none'}, mapped {torch_mapped}")
    for goal, ok in goals.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
