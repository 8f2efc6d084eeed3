"""One tray per user: an OS file lock held for the tray's whole life.

The lock lives in the per-user state folder (platformdirs), not under the data dir, so two
configs with different data folders still cannot run two trays for one user. It is an OS lock
(``flock`` / ``LockFileEx`` through filelock): a crashed tray releases it with its process, so a
stale file never blocks the next login. The holder's pid sits next to it for the message.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import platformdirs

from vidtray.errors import OperationFailed
from vidtray.services.fsutil import atomic_write_text

log = logging.getLogger("vidtray.tray")


class AlreadyRunning(OperationFailed):
    """Another tray of this user holds the lock (exit 1)."""


def lock_dir() -> Path:
    return Path(platformdirs.user_state_dir("vidtray", appauthor=False))


def running_pid(folder: Path | None = None) -> int | None:
    try:
        return int((folder or lock_dir()).joinpath("tray.pid").read_text().strip())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def single_instance(folder: Path | None = None) -> Iterator[None]:
    """Hold the per-user tray lock for the ``with`` body; AlreadyRunning if another tray has it."""
    from filelock import FileLock, Timeout

    folder = folder or lock_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OperationFailed(f"cannot create {folder} for the tray's lock: {exc.strerror or exc}") from exc
    # thread_local=False: the lock belongs to the process, whichever thread releases it.
    lock = FileLock(folder / "tray.lock", thread_local=False, fallback_to_soft=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        pid = running_pid(folder)
        who = f" (pid {pid})" if pid else ""
        raise AlreadyRunning(f"vidtray tray is already running{who}; use its icon, "
                             "or quit it from its menu first") from None
    pid_file = folder / "tray.pid"
    try:
        atomic_write_text(pid_file, f"{os.getpid()}\n")
        yield
    finally:
        with contextlib.suppress(OSError):
            if running_pid(folder) == os.getpid():
                pid_file.unlink()
        lock.release()
