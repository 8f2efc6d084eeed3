"""When vidtray last used each model: its worker records a model it loads or reuses for a job.

Access times cannot say it (``noatime`` and ``relatime`` mounts, backups that read everything), so the
storage report ("last used"), the budget plan and ``clean models --unused-days`` read this record instead.
A small record in the state folder (``Paths.model_use_file``, :mod:`.statefile`: two workers may finish
loading at once). Standard library and filelock only: the worker, the CLI and the tray all read it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from vidtray.services import statefile

VERSION = 1


def read_use(path: Path) -> dict[str, float]:
    """repo id -> when vidtray last used it (seconds since the epoch). Missing or damaged: nothing known."""
    out: dict[str, float] = {}
    for repo, entry in (statefile.read_section(path, "models", dict) or {}).items():
        ts = entry.get("last_used_ts") if isinstance(entry, dict) else None
        if isinstance(ts, int | float) and not isinstance(ts, bool) and ts == ts:
            out[str(repo)] = float(ts)
    return out


def record_use(path: Path, repo_id: str, now: float | None = None) -> None:
    """Note that ``repo_id`` is used now. Never raises: a record that cannot be written only makes the model
    look older to the budget plan, and a generation must not fail over it (logged)."""
    when = time.time() if now is None else now

    def change() -> dict[str, object] | None:
        used = read_use(path)
        if used.get(repo_id, float("-inf")) >= when:
            return None
        used[repo_id] = when
        return {repo: {"last_used": _iso(ts), "last_used_ts": ts} for repo, ts in sorted(used.items())}

    statefile.update_section(path, VERSION, "models", change, f"record that {repo_id} was used", indent=2)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
