"""A storage scene for the budget tests: real videos (pinned, scheduled, old, new, with sidecars and a
thumbnail) in the real library, a real Hugging Face cache (plain repos, two repos sharing a payload in the
shared blob store, fresh and stale partial downloads, interrupted repos, the login token, xet/), vidtray's
record of when it used models, and a real queue with jobs that need models."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from hf_cache import age, age_repo, make_broken_repo, make_partial, make_repo, make_shared_repo

from vidtray.config import Config
from vidtray.services import modeluse
from vidtray.services.library import Change, open_library
from vidtray.services.queue import open_queue
from vidtray.services.sidecar import sidecar_path
from vidtray.services.storage import iso

DAY = 86400.0
KiB = 1024
DEFAULT = "org/default"


class Scene:
    def __init__(self, root: Path, sample: Path, hf_home: Path, now: float | None = None, **settings: object) -> None:
        self.now = time.time() if now is None else now
        self.config = root / "config.toml"
        lines = [f'data_dir = "{root / "data"}"', f'model = "{DEFAULT}"', "prune_after_days = 0"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        self.config.write_text("\n".join(lines) + "\n")
        self.cfg = cfg = Config.from_path(self.config)
        self.hf_home = hf_home
        self.cache = hf_home / "hub"
        self.sample = sample
        cfg.videos_dir.mkdir(parents=True, exist_ok=True)
        self._videos()
        self._cache()
        self._queue()

    # -- videos --------------------------------------------------------------------------------------------
    def video(self, name: str, days: float, *, sidecar: bool = True) -> Path:
        path = self.cfg.videos_dir / name
        shutil.copyfile(self.sample, path)
        if sidecar:
            sidecar_path(path).write_text(json.dumps({"prompt": f"prompt of {name}", "seed": 1}))
            age(sidecar_path(path), days, self.now)
        return age(path, days, self.now)

    def _videos(self) -> None:
        cfg = self.cfg
        ages = {"old1.mp4": 90, "old2.mp4": 60, "mid.mp4": 20, "new.mp4": 1, "pinned.mp4": 200, "scheduled.mp4": 150}
        self.videos = {name: self.video(name, days) for name, days in ages.items()}
        cfg.thumbnails_dir.mkdir(parents=True, exist_ok=True)
        self.thumb = cfg.thumbnails_dir / "old1.jpg"
        self.thumb.write_bytes(b"\xff\xd8 jpeg" * 10)
        cfg.partial_dir.mkdir(parents=True, exist_ok=True)
        (cfg.partial_dir / "job.latents.pt").write_bytes(b"l" * 700)  # latents vidtray keeps: in the budget
        self.latents = age(cfg.partial_dir / "job.latents.pt", 30, self.now)
        lib = open_library(cfg)
        for name, days in ages.items():
            lib.add_video(self.videos[name], added=iso(self.now - days * DAY))
        changes = {str(self.videos["pinned.mp4"]): {"pinned": True},
                   str(self.videos["scheduled.mp4"]): {"scheduled_at": "2031-01-01T09:00:00+00:00"},
                   str(self.videos["old1.mp4"]): {"thumbnail": str(self.thumb)}}
        lib.update(lambda doc: _edit(doc, changes))

    # -- the model cache -------------------------------------------------------------------------------------
    def _cache(self) -> None:
        cache, now = self.cache, self.now
        shared = os.urandom(6 * KiB)
        self.repos = {
            # The default model, never used by vidtray and old, but a queued job (naming no model) needs it.
            DEFAULT: age_repo(make_repo(cache, DEFAULT, {"model_index.json": b"{}", "w.bin": os.urandom(KiB)}),
                              100, now),
            # Used by vidtray 60 days ago; shares a payload with org/never.
            "org/old-used": make_shared_repo(cache, "org/old-used", {"model_index.json": b'{"o": 1}',
                                                                     "w.bin": shared, "v.bin": os.urandom(KiB)}),
            # Never used by vidtray: downloaded 45 days ago.
            "org/never": make_shared_repo(cache, "org/never", {"model_index.json": b'{"n": 1}', "w.bin": shared}),
            # Used 2 days ago; an interrupted download in it is 10 days old.
            "org/recent": age_repo(make_repo(cache, "org/recent", {"w.bin": os.urandom(2 * KiB)}), 200, now),
            # Old, but being downloaded right now (a fresh partial download).
            "org/downloading": age_repo(make_repo(cache, "org/downloading", {"w.bin": os.urandom(KiB)}), 100, now),
            # Old, never used, but a queued job names it.
            "org/explicit": age_repo(make_repo(cache, "org/explicit", {"w.bin": os.urandom(KiB)}), 100, now),
        }
        for payload in (cache / "blobs").glob("??/*"):
            if not payload.name.endswith(".refs"):
                age(payload, 200, now)
        for blob in (self.repos["org/never"] / "blobs").iterdir():  # its own payload came 45 days ago
            if blob.resolve().name != hashlib.sha256(shared).hexdigest():
                age(blob.resolve(), 45, now)
        self.stale_partial = make_partial(self.repos["org/recent"], b"s" * 900, days=10)
        self.fresh_partial = make_partial(self.repos["org/downloading"], b"f" * 800, days=1)
        self.stale_broken = make_broken_repo(cache, "org/stale-broken", b"b" * 1500)
        age_repo(self.stale_broken, 20, now)
        self.fresh_broken = make_broken_repo(cache, "org/fresh-broken", b"c" * 1600)
        age_repo(self.fresh_broken, 1, now)
        modeluse.record_use(self.cfg.paths.model_use_file, "org/old-used", now - 60 * DAY)
        modeluse.record_use(self.cfg.paths.model_use_file, "org/recent", now - 2 * DAY)
        self.token = self.hf_home / "token"
        self.token.write_text("hf_secret")
        (self.hf_home / "xet" / "chunk-cache").mkdir(parents=True)
        self.xet = self.hf_home / "xet" / "chunk-cache" / "chunk"
        self.xet.write_bytes(b"x" * 3000)

    def _queue(self) -> None:
        queue = open_queue(self.cfg)
        queue.submit({"prompt": "a fox"})  # the default model
        queue.submit({"prompt": "a cat", "model": "org/explicit"})
        done = queue.submit({"prompt": "an owl", "model": "org/old-used"})
        queue.finish(done.id, "done")  # finished: needs nothing any more

    # -- what must stay ------------------------------------------------------------------------------------
    def protected(self) -> list[Path]:
        v = self.videos
        return [v["pinned.mp4"], v["scheduled.mp4"], sidecar_path(v["pinned.mp4"]), self.latents,
                self.repos[DEFAULT], self.repos["org/explicit"], self.repos["org/recent"] / "snapshots",
                self.repos["org/downloading"] / "snapshots", self.fresh_partial, self.fresh_broken, self.token,
                self.xet, self.cfg.library_file]


def _edit(doc: dict, changes: dict[str, dict]) -> Change[None]:
    for item in doc["items"]:
        item.update(changes.get(item["path"], {}))
    return Change(None, True)
