"""``vidtray doctor [--json]``: what this machine offers vidtray (GPU, ffmpeg, disk, locations, notifications,
tray icon, Tk for the prompt window, xdg-open, the GPU server when one is configured). Anything missing is one
line that names the package."""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from vidtray.cli import Context, Subparsers
    from vidtray.config import Config

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


def register(sub: Subparsers) -> None:
    p = sub.add_parser("doctor", help="check GPU, ffmpeg, disk space and locations")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(handler=run)


def probe_torch(timeout: float = 120) -> dict[str, Any]:
    try:
        proc = subprocess.run([sys.executable, "-c", _TORCH_PROBE], capture_output=True, text=True,
                              timeout=timeout)
        found: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])  # the probe's JSON
        return found
    except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as exc:
        return {"installed": False, "error": f"probe failed: {exc}"}


def probe_ffmpeg() -> dict[str, Any]:
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        return {"path": exe, "version": imageio_ffmpeg.get_ffmpeg_version()}
    except Exception as exc:  # a missing binary is a finding, not a crash
        return {"path": None, "error": f"{type(exc).__name__}: {exc}"}


def collect(cfg: Config) -> dict[str, Any]:
    from vidtray import __version__
    from vidtray.config import config_path
    from vidtray.logs import log_file
    from vidtray.paths import hf_cache_dir
    from vidtray.services import notify, storage

    cache = hf_cache_dir()
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
                                    cfg.warn_free_gb).as_dict(),
        "notifications": notify.describe_backend(cfg),
        "tray": _tray_info(),
        "tk": probe_tk(),
        "xdg_open": probe_xdg_open(),
        "remote": probe_remote(cfg),
    }


def probe_remote(cfg: Config) -> dict[str, Any] | None:
    """The ``[remote]`` GPU server: does it answer this machine's token over the pinned CA (None: none set)."""
    if not cfg.remote.configured:
        return None
    import os
    import stat

    from vidtray.services.remote import probe

    state, line, health = probe(cfg.remote)
    out: dict[str, Any] = {"url": cfg.remote.url, "executor": cfg.executor, "fallback": cfg.remote_fallback,
                           "state": state, "reachable": state == "ok", "summary": line, "health": health}
    try:
        mode = stat.S_IMODE(os.stat(cfg.remote.token_file).st_mode)
    except OSError:
        mode = None
    if mode is not None and mode & 0o077:
        out["token_file_warning"] = f"{cfg.remote.token_file} is readable by others (chmod 600 it)"
    return out


def probe_tk() -> dict[str, Any]:
    """The prompt window and the confirmation dialogs are Tk child processes of this same Python."""
    from vidtray.tray.tkhelp import TK_PACKAGES

    try:
        import tkinter
    except ImportError as exc:
        return {"available": False, "error": str(exc), "hint": TK_PACKAGES}
    return {"available": True, "version": str(tkinter.TkVersion)}


def probe_xdg_open() -> dict[str, Any] | None:
    """What the tray opens folders and files with on Linux and the BSDs (None elsewhere: not used)."""
    if sys.platform in ("win32", "darwin"):
        return None
    path = shutil.which("xdg-open")
    return {"path": path} if path else {"path": None, "hint": "package: xdg-utils"}


def _tray_info() -> dict[str, Any]:
    from vidtray.tray.backend import tray_backend_info

    try:
        return tray_backend_info()
    except Exception as exc:  # a broken GUI stack is a finding for doctor, not a crash
        return {"backend": None, "has_menu": False, "reason": f"{type(exc).__name__}: {exc}", "hint": ""}


def run(args: argparse.Namespace, ctx: Context) -> int:
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

    print(_notification_line(doc["notifications"], backend_summary))
    print(_tray_line(doc["tray"]))
    tk = doc["tk"]
    print(f"tk: {tk['version']} (prompt window and dialogs)" if tk["available"] else
          f"tk: MISSING - the prompt window and the confirmation dialogs need Tk ({tk['hint']})")
    xdg = doc["xdg_open"]
    if xdg is not None:
        print(f"xdg-open: {xdg['path']}" if xdg["path"] else
              f"xdg-open: MISSING - the tray cannot open the videos folder, library, settings or log ({xdg['hint']})")
    if doc["remote"] is not None:
        print(_remote_line(doc["remote"]))
    return 0


def _remote_line(remote: dict[str, Any]) -> str:
    where = f"GPU server {remote['url']} (executor = {remote['executor']})"
    if remote["reachable"]:
        line = f"{where}: reachable - {remote['summary']}"
    elif remote["state"] == "unreachable":
        then = "run here" if remote["fallback"] == "local" else "wait"
        line = f"{where}: UNREACHABLE - {remote['summary']}; remote jobs {then} until it answers"
    else:
        line = f"{where}: NOT USABLE - {remote['summary']}"
    if remote.get("token_file_warning"):
        line += f"; warning: {remote['token_file_warning']}"
    return line


def _notification_line(info: dict[str, Any], summary: Callable[[dict[str, Any]], str]) -> str:
    line = summary(info)
    if info.get("enabled") is not False and info.get("daemon", {}).get("reached") is False:
        line += ("; vidtray's notifications will not show: start the desktop's notification daemon, or install "
                 "one (for example dunst)")
    return line


def _tray_line(tray: dict[str, Any]) -> str:
    backend = tray.get("backend") or "none"
    if backend != "none":
        return f"tray: {backend} ({'with' if tray.get('has_menu') else 'no'} menu) - {tray.get('reason', '')}"
    line = f"tray: none (no icon) - {tray.get('reason', 'unknown')}"
    if tray.get("hint"):
        line += f"; {tray['hint']}"
    if tray.get("fatal"):
        return line + "; `vidtray tray` does not start here, `vidtray watch` runs the same services"
    if tray.get("wait"):
        return line + "; `vidtray tray` runs its services meanwhile and shows the icon once a tray is there"
    return line + "; `vidtray tray` runs its services without an icon"
