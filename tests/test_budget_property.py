"""Property: whatever videos, models, downloads, jobs and budget hypothesis picks, the budget plan never holds
a protected thing (a pinned or scheduled video, a model a queued job needs or vidtray used lately, a model
still downloading, a fresh partial download, the token, anything outside the videos and cache folders), and
carrying it out deletes exactly the plan and leaves every protected thing in place."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

from hf_cache import age, age_repo, make_broken_repo, make_partial, make_repo
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from media_helpers import write_mp4

from vidtray.config import Config
from vidtray.services import budget, modeluse
from vidtray.services.library import Change, open_library
from vidtray.services.queue import open_queue
from vidtray.services.storage import iso

NOW = time.time()
DAY = 86400.0
_SAMPLE: list[Path] = []

videos = st.lists(st.tuples(st.integers(0, 100), st.sampled_from(["plain", "plain", "pinned", "scheduled",
                                                                  "unlisted"])), max_size=7)
# (days since vidtray used it or None, days since it was downloaded, a queued job needs it, partial's age)
models = st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 100)), st.integers(0, 200), st.booleans(),
                            st.one_of(st.none(), st.integers(0, 20))), max_size=5)
broken = st.lists(st.integers(0, 30), max_size=3)


def _sample() -> Path:
    if not _SAMPLE:
        _SAMPLE.append(write_mp4(Path(tempfile.mkdtemp(prefix="vidtray-sample-")) / "sample.mp4", frames=2))
    return _SAMPLE[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vids=videos, repos=models, interrupted=broken, budget_fraction=st.floats(0, 1.2),
       unused_days=st.integers(0, 60), keep_days=st.integers(0, 15), default_needed=st.booleans(),
       permanent=st.booleans())
def test_the_plan_never_holds_a_protected_thing(vids, repos, interrupted, budget_fraction, unused_days, keep_days,
                                                default_needed, permanent):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache, xet = root / "hf" / "hub", root / "hf" / "xet"
        env = {"HF_HUB_CACHE": str(cache), "HF_XET_CACHE": str(xet), "HF_HOME": str(root / "hf")}
        with mock.patch.dict(os.environ, env):
            cfg = Config.from_mapping({"data_dir": str(root / "data"), "model": "org/m0",
                                       "prune_to_trash": not permanent, "model_unused_days": unused_days,
                                       "partial_keep_days": keep_days}, "<test>", env={})
            protected = _videos(cfg, vids) | _cache(cfg, cache, repos, interrupted, unused_days, keep_days,
                                                     default_needed)
            token = root / "hf" / "token"
            token.parent.mkdir(parents=True, exist_ok=True)
            token.write_text("hf_secret")
            xet.mkdir(parents=True)
            (xet / "chunk").write_bytes(b"x" * 50)
            protected |= {token, xet / "chunk"}
            lib = open_library(cfg)
            probe = budget.plan(cfg, lib, budget_bytes=1, now=NOW)
            plan = budget.plan(cfg, lib, budget_bytes=max(1, int(probe.used_bytes * budget_fraction)), now=NOW)

            names = {i.name for i in plan.items} | {str(i.repo.path) for i in plan.items if i.repo is not None}
            assert not names & {str(p) for p in protected}, names & {str(p) for p in protected}
            for item in plan.items:
                path = Path(item.repo.path if item.repo is not None else item.name).resolve()
                assert path.is_relative_to(cfg.videos_dir.resolve()) or path.is_relative_to(cache.resolve())
            kinds = [i.kind for i in plan.items]
            event(f"planned kinds: {sorted(set(kinds))}")
            assert kinds == sorted(kinds, key=["video", "model", "partial"].index)  # the order of the kinds

            result = budget.execute(cfg, lib, plan)
            assert result.skipped == []
            assert [(d["kind"], d["name"]) for d in result.deleted] == [(i.kind, i.name) for i in plan.items]
            for path in protected:
                assert path.exists(), path
            shutil.rmtree(root / "hf", ignore_errors=True)


def _videos(cfg: Config, vids: list[tuple[int, str]]) -> set[Path]:
    cfg.videos_dir.mkdir(parents=True)
    lib = open_library(cfg)
    protected = set()
    for n, (days, state) in enumerate(vids):
        path = age(Path(shutil.copyfile(_sample(), cfg.videos_dir / f"v{n}.mp4")), days, NOW)
        if state == "unlisted":
            continue
        lib.add_video(path, added=iso(NOW - days * DAY))
        if state in ("pinned", "scheduled"):
            protected.add(path)
            change = {"pinned": True} if state == "pinned" else {"scheduled_at": "2031-01-01T00:00:00+00:00"}
            lib.update(lambda doc, p=str(path), c=change: _edit(doc, p, c))
    return protected


def _cache(cfg: Config, cache: Path, repos: list[tuple[int | None, int, bool, int | None]], interrupted: list[int],
           unused_days: int, keep_days: int, default_needed: bool) -> set[Path]:
    protected = set()
    queue = open_queue(cfg)
    if default_needed:
        queue.submit({"prompt": "default"})  # needs org/m0, the default
    for n, (used, downloaded, needed, partial) in enumerate(repos):
        repo_id = f"org/m{n}"
        folder = age_repo(make_repo(cache, repo_id, {"w.bin": os.urandom(64 + n)}), downloaded, NOW)
        if used is not None:
            modeluse.record_use(cfg.paths.model_use_file, repo_id, NOW - used * DAY)
        if needed:
            queue.submit({"prompt": "x", "model": repo_id})
        fresh = partial is not None and partial < keep_days
        if partial is not None:
            p = make_partial(folder, os.urandom(32), days=partial)
            if fresh:
                protected.add(p)
        recent = min(downloaded, used if used is not None else downloaded) < unused_days
        if needed or (n == 0 and default_needed) or fresh or recent:
            protected.add(folder / "snapshots")
    for n, days in enumerate(interrupted):
        folder = age_repo(make_broken_repo(cache, f"org/broken{n}", os.urandom(16)), days, NOW)
        if days < keep_days:
            protected.add(folder)
    return protected


def _edit(doc: dict, path: str, change: dict) -> Change[None]:
    for item in doc["items"]:
        if item["path"] == path:
            item.update(change)
    return Change(None, True)
