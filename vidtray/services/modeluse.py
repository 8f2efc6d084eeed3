"""When vidtray last used each model: its worker records a model it loads or reuses for a job.

Access times cannot say it (``noatime`` and ``relatime`` mounts, backups that read everything), so the
storage report ("last used"), the budget plan and ``clean models --unused-days`` read this record instead.
A small versioned JSON file in the state folder (``Paths.model_use_file``), read-modify-written under a file
lock (two workers may finish loading at once) and replaced atomically. Standard library and filelock only:
the worker, the CLI and the tray all read it.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("vidtray.modeluse")

VERSION = 1
LOCK_TIMEOUT_S = 5.0


def read_use(path: Path) -> dict[str, float]:
    """repo id -> when vidtray last used it (seconds since the epoch). Missing or damaged: nothing known."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, dict):
        return {}
    out: dict[str, float] = {}
    for repo, entry in models.items():
        ts = entry.get("last_used_ts") if isinstance(entry, dict) else None
        if isinstance(ts, int | float) and not isinstance(ts, bool) and ts == ts:
            out[str(repo)] = float(ts)
    return out


def record_use(path: Path, repo_id: str, now: float | None = None) -> None:
    """Note that ``repo_id`` is used now. Never raises: a record that cannot be written only makes the model
    look older to the budget plan, and a generation must not fail over it (logged)."""
    from filelock import FileLock

    from vidtray.services.fsutil import atomic_write_text, private_dir

    now = time.time() if now is None else now
    try:
        private_dir(path.parent)
        with FileLock(str(path.with_name(f".{path.name}.lock")), timeout=LOCK_TIMEOUT_S):
            used = read_use(path)
            if used.get(repo_id, float("-inf")) >= now:
                return
            used[repo_id] = now
            doc = {"version": VERSION, "models": {
                repo: {"last_used": _iso(ts), "last_used_ts": ts} for repo, ts in sorted(used.items())}}
            atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    except (OSError, TimeoutError) as exc:
        log.warning("cannot record that %s was used (%s): %s", repo_id, path, exc)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
