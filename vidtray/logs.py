"""Logging: a rotating file under the platform log dir; the format shows the thread."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

from vidtray.config import log_dir

FORMAT = "%(asctime)s %(levelname)s [%(processName)s/%(threadName)s] %(name)s: %(message)s"


def log_file() -> Path:
    override = os.environ.get("VIDTRAY_LOG_DIR")
    return (Path(override) if override else log_dir()) / "vidtray.log"


def setup_logging(verbose: bool = False) -> Path | None:
    """Send vidtray's log records to the rotating log file; returns its path (None if unwritable)."""
    root = logging.getLogger("vidtray")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if any(getattr(h, "_vidtray", False) for h in root.handlers):
        return log_file()
    path = log_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=2_000_000, backupCount=3, encoding="utf-8"
        )
    except OSError:
        return None
    handler.setFormatter(logging.Formatter(FORMAT))
    handler._vidtray = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    return path
