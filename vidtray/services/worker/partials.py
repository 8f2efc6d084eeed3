"""In-progress files in ``.partial/``: the one naming rule (``<stem>.<pid>.mp4``, the pid of the worker
writing it), how a video lands from there (:func:`land`: the worker's and a GPU server's videos alike), and
the two ways they are cleaned up. No torch (psutil when cleaning):
``vidtray generate`` removes what a worker it killed left behind. The saved latents beside them
(``<job>.latents.safetensors``) have their own rule (:mod:`.latents`): never removed here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from vidtray.services.fsutil import atomic_write_text, private_dir
from vidtray.services.records import JsonObject
from vidtray.services.sidecar import sidecar_path
from vidtray.services.worker.latents import SUFFIX as LATENTS_SUFFIX

log = logging.getLogger("vidtray.worker")

PARTIAL_RE = re.compile(r"^(?P<stem>.+)\.(?P<pid>\d+)\.mp4$")


def partial_path(partial_dir: Path, stem: str, pid: int | None = None) -> Path:
    """Where worker ``pid`` (default: this process) writes the video ``stem`` until it is finished."""
    return partial_dir / f"{stem}.{os.getpid() if pid is None else pid}.mp4"


def land(partial_dir: Path, videos_dir: Path, stem: str, make: Callable[[Path], None],
         doc: Callable[[], JsonObject]) -> tuple[Path, Path, JsonObject]:
    """``make`` writes the video into ``.partial/``; then its sidecar (``doc()``) is written and the video
    renamed into the videos folder (atomic). The video appears whole, with its sidecar beside it already (a
    watcher that sees the mp4 finds its sidecar there), or not at all: whatever fails (cancel included),
    nothing of it stays. Returns the video's path, the sidecar's and its content."""
    private_dir(partial_dir)  # and the videos folder above it, if new: 0700
    partial = partial_path(partial_dir, stem)
    final = videos_dir / f"{stem}.mp4"
    sidecar = sidecar_path(final)
    wrote_sidecar = False
    try:
        make(partial)
        content = doc()
        atomic_write_text(sidecar, json.dumps(content, indent=2, ensure_ascii=False) + "\n")
        wrote_sidecar = True
        os.replace(partial, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        if wrote_sidecar and not final.exists():
            with contextlib.suppress(FileNotFoundError):
                sidecar.unlink()
        raise
    return final, sidecar, content


def remove_partials_of(partial_dir: Path, pid: int | None) -> None:
    """A worker killed hard cannot clean up: remove its in-progress files."""
    if pid is None or not partial_dir.is_dir():
        return
    for path in partial_dir.glob(f"*.{pid}.mp4"):
        with contextlib.suppress(OSError):
            path.unlink()


def clean_stale_partials(partial_dir: Path, max_age_s: float = 3600.0) -> list[Path]:
    """Remove in-progress files left by dead workers (pid in the name no longer runs) and stray temp
    files older than ``max_age_s``. Live workers' files stay (a CLI run and the daemon may overlap)."""
    import psutil

    removed: list[Path] = []
    if not partial_dir.is_dir():
        return removed
    now = time.time()
    for entry in partial_dir.iterdir():
        if not entry.is_file() or entry.is_symlink() or entry.name.endswith(LATENTS_SUFFIX):
            continue
        m = PARTIAL_RE.match(entry.name)
        if m:
            pid = int(m.group("pid"))
            stale = pid != os.getpid() and not psutil.pid_exists(pid)
        else:
            try:
                stale = now - entry.stat().st_mtime > max_age_s
            except OSError:
                continue
        if stale:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    if removed:
        log.info("removed %d stale partial file(s) from %s", len(removed), partial_dir)
    return removed
