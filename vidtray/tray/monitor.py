"""What the tray shows, read in the background and posted to the UI side (``TrayApp.post_state``).

- ``tray-monitor``: every few seconds (every second while a job runs, at once after a generation event)
  reads job progress (with its time left), the queue's pause flag, free space, the library count and, now
  and then, whether start-on-login is on; while jobs wait behind a running one, when the queue should be
  done (``queuetime``: this install's history, read here, never on the UI side);
- ``tray-storage``: runs ``vidtray storage --json`` in a child process (so the tray never imports
  huggingface_hub) at start, after deletions and finished jobs, and every half hour.

Both only read and post; neither touches the icon.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vidtray.config import Config
from vidtray.services.fsutil import human_size
from vidtray.tray.children import Children
from vidtray.tray.queuetime import QueueTime
from vidtray.tray.state import StorageView, TrayState, parse_storage_report

if TYPE_CHECKING:
    from vidtray.tray.link import Services, Work

log = logging.getLogger("vidtray.tray")

MONITOR_INTERVAL_S = 5.0
BUSY_INTERVAL_S = 1.0  # while a job runs, so "Generating 12/40" keeps up
AUTOSTART_EVERY = 12  # monitor ticks between autostart re-reads (a minute)
STORAGE_INTERVAL_S = 1800.0


class StatusMonitor:
    def __init__(self, cfg: Config, link: Services, children: Children, *, state: Callable[[], TrayState],
                 post: Callable[..., None], stopping: threading.Event) -> None:
        self.cfg = cfg
        self.link = link
        self.children = children
        self.state = state  # the UI side's current state (replaced, never mutated: safe to read here)
        self.post = post
        self.stopping = stopping
        self.problems: tuple[str, ...] = ()  # from the start (services that failed); live ones are added
        self._wake = threading.Event()
        self._storage_due = threading.Event()
        self.queue_time = QueueTime(cfg)
        self._queue_time_failing = False

    def wake(self) -> None:
        """Any thread: read the status now."""
        self._wake.set()

    def refresh_storage(self) -> None:
        """Any thread: read the sizes again (after deletions, a finished job; the menu's Refresh)."""
        self._storage_due.set()

    def stop(self) -> None:
        self._wake.set()
        self._storage_due.set()

    # -- tray-monitor --------------------------------------------------------------------------------------
    def run_status(self) -> None:
        tick = 0
        while not self.stopping.is_set():
            try:
                changes = self.read_status(tick)
            except Exception:  # a read that fails now may work next time; the tray stays up
                log.exception("status read failed")
                changes = {}
            if changes:
                self.post(**changes)
            tick += 1
            self._wake.wait(BUSY_INTERVAL_S if self.state().job is not None else MONITOR_INTERVAL_S)
            self._wake.clear()

    def read_status(self, tick: int) -> dict[str, Any]:
        from vidtray.paths import free_bytes

        changes: dict[str, Any] = dict(self.link.snapshot())
        work = changes.pop("work", None)
        if work is not None and "job" in changes:
            changes["queue_done"] = self._queue_done(work, changes.get("videos"))
        changes["free_bytes"] = free_bytes(self.cfg.videos_dir)
        problems = [*self.problems, *changes.pop("problems", ())]
        if not self.cfg.videos_dir.is_dir():
            problems.append("Videos folder missing")
        changes["problems"] = tuple(problems)
        if tick % AUTOSTART_EVERY == 0:
            changes["autostart"] = _autostart_enabled()
        # A finished job or new videos change the sizes in the Storage menu.
        videos = self.state().videos
        if changes.get("videos") != videos and videos is not None:
            self._storage_due.set()
        return changes

    def _queue_done(self, work: Work, videos: int | None) -> float | None:
        """The queue's done time, or None; an estimate that fails is logged once and leaves the rest shown."""
        storage = self.state().storage
        sizes = {repo: size for repo, size, broken in storage.models if not broken} if storage else {}
        try:
            done = self.queue_time.done_at(work, videos=videos, model_bytes=sizes)
        except Exception:
            if not self._queue_time_failing:
                log.exception("cannot estimate when the queue is done")
            self._queue_time_failing = True
            return None
        self._queue_time_failing = False
        return done

    # -- tray-storage --------------------------------------------------------------------------------------
    def run_storage(self) -> None:
        self._storage_due.set()
        while not self.stopping.is_set():
            if self._storage_due.wait(STORAGE_INTERVAL_S) and self.stopping.is_set():
                return
            self._storage_due.clear()
            self.post(storage=self.read_storage())

    def read_storage(self) -> StorageView:
        try:
            out = self.children.run_cli(["storage", "--json"], timeout=300, read_only=True)
        except Exception as exc:
            (log.debug if self.stopping.is_set() else log.warning)("storage report failed: %s", exc)
            return StorageView(error=str(exc))
        view = parse_storage_report(json.loads(out))
        log.info("storage sizes: %d videos (%s), model cache %s (%d models)", view.videos_count,
                 human_size(view.videos_bytes), human_size(view.models_bytes), len(view.models))
        return view


def _autostart_enabled() -> bool:
    from vidtray.services import autostart

    try:
        return autostart.status().enabled
    except Exception:
        log.exception("autostart status failed")
        return False
