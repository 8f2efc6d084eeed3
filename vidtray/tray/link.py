"""The tray's link to the headless services: the same Daemon ``vidtray watch`` runs, plus reads
of the queue, the pause flag and the library for the tooltip and menu.

Which thread calls it: ``start``/``stop`` from the tray's start and quit threads, ``snapshot``
from ``tray-monitor``, ``cancel``/``set_watching_paused`` from ``tray-action``. Nothing here
touches the icon.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from vidtray.config import Config
from vidtray.tray.state import JobView

log = logging.getLogger("vidtray.tray")


class ServiceLink:
    def __init__(self, cfg: Config, notifier: Any) -> None:
        self.cfg = cfg
        self.notifier = notifier
        self.daemon: Any = None
        self._library_key: tuple[int, int] | None = None
        self._library_count: int | None = None

    # -- life -------------------------------------------------------------------------------
    def start(self) -> None:
        from vidtray.services.daemon import Daemon

        self.daemon = Daemon(self.cfg, self.notifier)
        self.daemon.start()

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()

    # -- reads (tray-monitor) ---------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {"queue_paused": self.queue_paused(), "videos": self.video_count()}
        out.update(self.jobs())
        out["watching_paused"] = self.watching_paused()
        return out

    def queue_paused(self) -> str | None:
        path = self.cfg.queue_dir / "paused.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return "paused"
        reason = doc.get("reason") if isinstance(doc, dict) else None
        return str(reason) if reason else "paused"

    def video_count(self) -> int | None:
        """Items in library.json; re-read only when the file changed (the tray polls this)."""
        path = self.cfg.library_file
        try:
            st = path.stat()
        except FileNotFoundError:
            return 0
        except OSError:
            return self._library_count
        key = (st.st_mtime_ns, st.st_size)
        if key != self._library_key:
            from vidtray.services.library import Library

            try:
                self._library_count = Library(path).summary()["items"]
            except Exception as exc:  # shown as "unknown"; the library's own code reports corruption
                log.warning("cannot count library items: %s", exc)
                self._library_count = None
            self._library_key = key
        return self._library_count

    def jobs(self) -> dict[str, Any]:
        """{"job": JobView | None, "queued": int} from the generation queue."""
        return {"job": None, "queued": 0}

    def watching_paused(self) -> bool:
        return False

    # -- actions (tray-action) --------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        raise NotImplementedError("cancel is wired to the generation queue")

    def set_watching_paused(self, paused: bool) -> None:
        raise NotImplementedError("pause is wired to the watcher")


__all__ = ["JobView", "ServiceLink"]
