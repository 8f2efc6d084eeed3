"""The page's storage panel: the storage report (``vidtray storage``'s), and the tray Storage menu's
deletions with the same confirmation: each is planned first, the page shows the plan and asks, and the plan
it showed is the plan that runs (``storage.execute_clean`` / ``execute_model_cleanup``), so a video that
arrives while the question is open stays.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from vidtray.config import Config
from vidtray.errors import UserError
from vidtray.services import storage
from vidtray.services.library import Library

#: A plan not confirmed within this long is dropped (the page plans again).
PLAN_TTL_S = 600.0
MAX_PLANS = 16


def report(cfg: Config) -> dict[str, Any]:
    """The storage report as ``vidtray storage --json`` prints it (the one adapter to its types)."""
    from vidtray.commands.storage import build_report

    built: Any = build_report(cfg)
    as_dict = getattr(built, "as_dict", None)
    doc = as_dict() if callable(as_dict) else built
    if not isinstance(doc, dict):
        raise TypeError(f"storage report is a {type(doc).__name__}")
    return doc


@dataclass
class _Pending:
    kind: str  # "videos" | "models"
    plan: Any  # storage.CleanPlan | storage.ModelCleanPlan
    made: float


class Plans:
    """Plans shown to the user and waiting for their answer, by a random id."""

    def __init__(self) -> None:
        self._plans: dict[str, _Pending] = {}
        self._mu = threading.Lock()

    def _keep(self, kind: str, plan: object) -> str:
        plan_id = secrets.token_urlsafe(12)
        now = time.monotonic()
        with self._mu:
            for key in [k for k, p in self._plans.items() if now - p.made > PLAN_TTL_S]:
                del self._plans[key]
            while len(self._plans) >= MAX_PLANS:
                del self._plans[next(iter(self._plans))]
            self._plans[plan_id] = _Pending(kind, plan, now)
        return plan_id

    def _take(self, plan_id: str) -> _Pending:
        with self._mu:
            pending = self._plans.pop(plan_id, None)
        if pending is None or time.monotonic() - pending.made > PLAN_TTL_S:
            raise UserError("that deletion was not confirmed in time or is done already; plan it again")
        return pending

    def plan_videos(self, cfg: Config, lib: Library, older_than_days: float | None) -> dict[str, Any]:
        """What "Delete generated videos" (all, or older than N days) would delete; pinned and scheduled
        videos, and videos new to the library, are kept (``plan_clean``, as the tray and the CLI)."""
        plan = storage.plan_clean(cfg, lib, older_than_days=older_than_days, now=time.time())
        preview = plan.preview(cfg.prune_to_trash).as_dict()
        return {"plan": self._keep("videos", plan) if plan.videos else None, **preview,
                "count": len(plan.videos), "kept_count": len(plan.kept)}

    def plan_models(self, repo_id: str | None) -> dict[str, Any]:
        """What deleting one cached model (or every one, ``repo_id`` None) would delete."""
        plan = storage.plan_model_cleanup(repo_id)
        return {"plan": self._keep("models", plan) if plan.targets else None,
                "repos": [{"repo_id": t["repo_id"], "size_bytes": t["size_bytes"], "broken": t["broken"]}
                          for t in plan.targets],
                "expected_freed_bytes": plan.expected_freed_bytes}

    def execute(self, plan_id: str, cfg: Config, lib: Library) -> dict[str, Any]:
        pending = self._take(plan_id)
        if pending.kind == "videos":
            return {"kind": "videos", **storage.execute_clean(lib, pending.plan, to_trash=cfg.prune_to_trash).as_dict()}
        return {"kind": "models", "freed_bytes": storage.execute_model_cleanup(pending.plan)}
