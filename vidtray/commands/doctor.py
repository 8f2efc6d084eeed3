"""``vidtray doctor [--json]``: what this machine offers vidtray (GPU, ffmpeg, disk, locations, notifications)."""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from typing import Any

# Run in a child process so the CLI never imports torch itself (it takes seconds and gigabytes).
_TORCH_PROBE = r"""
import json
out = {"installed": False}
try:
    import torch
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
else:
    out.update(installed=True, version=torch.__version__, cuda_build=torch.version.cuda,
               cuda=torch.cuda.is_available(),
               mps=bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()))
    out["devices"] = [{"name": torch.cuda.get_device_name(i),
                       "memory_bytes": torch.cuda.get_device_properties(i).total_memory}
                      for i in range(torch.cuda.device_count())] if out["cuda"] else []
print(json.dumps(out))
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check GPU, ffmpeg, disk space and locations")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(handler=run)


def probe_torch(timeout: float = 120) -> dict[str, Any]:
    try:
        proc = subprocess.run([sys.executable, "-c", _TORCH_PROBE], capture_output=True, text=True,
                              timeout=timeout)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as exc:
        return {"installed": False, "error": f"probe failed: {exc}"}


def probe_ffmpeg() -> dict[str, Any]:
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        return {"path": exe, "version": imageio_ffmpeg.get_ffmpeg_version()}
    except Exception as exc:  # a missing binary is a finding, not a crash
        return {"path": None, "error": f"{type(exc).__name__}: {exc}"}


def collect(cfg) -> dict[str, Any]:
    from vidtray import __version__
    from vidtray.config import config_path
    from vidtray.logs import log_file
    from vidtray.services import notify, storage

    cache = storage.hf_cache_dir()
    torch_info = probe_torch()
    device = "cuda" if torch_info.get("cuda") else "mps" if torch_info.get("mps") else "cpu"
    return {
        "python": sys.version.split()[0], "platform": platform.platform(), "vidtray": __version__,
        "torch": torch_info,
        "device": device if torch_info.get("installed") else None,
        "ffmpeg": probe_ffmpeg(),
        "paths": {"config": str(config_path()), "data_dir": str(cfg.data_dir),
                  "videos_dir": str(cfg.videos_dir), "library": str(cfg.library_file),
                  "model_cache": str(cache), "log": str(log_file())},
        "disk": storage.disk_report({"videos": cfg.videos_dir, "models": cache}, cfg.min_free_gb,
                                    cfg.warn_free_gb),
        "notifications": notify.describe_backend(cfg),
        "tray": _tray_info(),
    }


def _tray_info() -> dict[str, Any]:
    from vidtray.tray.backend import tray_backend_info

    try:
        return tray_backend_info()
    except Exception as exc:  # a broken GUI stack is a finding for doctor, not a crash
        return {"backend": None, "has_menu": False, "reason": f"{type(exc).__name__}: {exc}"}


def run(args: argparse.Namespace, ctx) -> int:
    from vidtray.services.fsutil import human_size

    doc = collect(ctx.cfg)
    if args.json:
        ctx.print_json(doc)
        return 0
    t = doc["torch"]
    if t.get("installed"):
        gpus = ", ".join(f"{d['name']} ({human_size(d['memory_bytes'])})" for d in t.get("devices", []))
        torch_line = f"torch {t['version']}: CUDA {'yes' if t['cuda'] else 'no'}" \
                     f"{' - ' + gpus if gpus else ''}, MPS {'yes' if t['mps'] else 'no'}; generation uses " \
                     f"{doc['device']}"
    else:
        torch_line = "torch not installed: install the 'gen' extra to generate videos" + \
                     (f" ({t['error']})" if "error" in t and "No module" not in t["error"] else "")
    ff = doc["ffmpeg"]
    print(f"vidtray {doc['vidtray']} on Python {doc['python']} ({doc['platform']})")
    print(torch_line)
    print(f"ffmpeg: {ff['path']} ({ff.get('version')})" if ff["path"] else f"ffmpeg: MISSING ({ff['error']})")
    for key, value in doc["paths"].items():
        print(f"{key + ':':<13}{value}")
    for vol in doc["disk"]["volumes"]:
        free = "unknown" if vol["free_bytes"] is None else human_size(vol["free_bytes"])
        print(f"free space ({' + '.join(vol['roles'])}): {free} [{vol['status']}]")
    from vidtray.services.notify import backend_summary

    print(backend_summary(doc["notifications"]))
    tray = doc["tray"]
    print(f"tray: {tray['backend'] or 'none'} ({'with' if tray.get('has_menu') else 'no'} menu)"
          + (f" - {tray['reason']}" if tray.get("reason") else ""))
    return 0
