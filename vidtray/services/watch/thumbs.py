"""Thumbnails, made on their own thread (``vidtray-thumbs``) after the entries are in, so they never slow an
import; each batch is recorded in one library write."""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from vidtray.services import media
from vidtray.services.backoff import Backoff
from vidtray.services.libdoc import Doc
from vidtray.services.libitem import abs_path, video_items
from vidtray.services.library import Change, Library

log = logging.getLogger("vidtray.watcher")

#: A batch of thumbnails whose write failed is tried this many times before the next reconcile's turn.
THUMB_ATTEMPTS = 4
#: Most thumbnails per batch (and per library write).
BATCH = 256

#: (a video, its duration in seconds when known)
ThumbJob = tuple[Path, float | None]


class ThumbnailWorker:
    """Makes thumbnails in its own thread and records them in one library write per batch."""

    def __init__(self, lib: Library, thumbnails_dir: Path, on_write: Callable[[], None] | None = None) -> None:
        self.lib = lib
        self.thumbnails_dir = thumbnails_dir
        self.on_write = on_write  # after each library write (the watcher tells its own writes apart)
        # Its unfinished-task count is the work not done yet: put() adds, task_done() after a batch ends.
        self._queue: queue.Queue[ThumbJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._guard = Backoff(log, "making thumbnails")
        self.writes = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vidtray-thumbs", daemon=True)
        self._thread.start()

    def put(self, videos: Iterable[ThumbJob]) -> None:
        for v in videos:
            self._queue.put(v)

    def idle(self) -> bool:
        """Nothing queued and nothing being made (one count for both: no moment between them looks idle)."""
        return self._queue.unfinished_tasks == 0

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None or self._stopping.is_set():
                return
            batch = self._batch(first)
            try:
                self.run_batch(batch)
            except Exception as exc:
                # A full disk or a library another program holds locked: wait, then try the batch again
                # (a few times; the next reconcile makes what is still missing).
                delay = self._guard.failed(exc)
                if self._guard.failures <= THUMB_ATTEMPTS and not self._stopping.wait(delay):
                    self.put(batch)  # counted again before this attempt's count is given back
                else:
                    log.warning("gave up on %d thumbnails for now; the next rescan makes them", len(batch))
            else:
                self._guard.succeeded()
            for _ in batch:
                self._queue.task_done()
            if self._stopping.is_set():
                return

    def _batch(self, first: ThumbJob) -> list[ThumbJob]:
        """``first`` and what else is queued, up to BATCH (a stop request ends it)."""
        batch = [first]
        while len(batch) < BATCH:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._stopping.set()
                break
            batch.append(nxt)
        return batch

    def run_batch(self, batch: list[ThumbJob]) -> None:
        made = media.make_thumbnails(list(dict(batch).items()), self.thumbnails_dir)
        if not made:
            return
        by_path = {os.fspath(abs_path(v)): os.fspath(t) for v, t in made.items()}

        def apply(doc: Doc) -> Change[None]:
            changed = False
            for item in video_items(doc["items"]):  # items vidtray cannot use are never changed
                thumb = by_path.get(item["path"])
                if thumb is not None and item.get("thumbnail") != thumb:
                    item["thumbnail"] = thumb
                    changed = True
            return Change(None, changed)

        if self.lib.update(apply).changed:
            self.writes += 1
            if self.on_write is not None:
                self.on_write()
