"""One tray per user: an OS file lock held for the tray's whole life.

The lock lives in the per-user state folder (``paths.tray_lock_dir``), not under the data dir, so two
configs with different data folders still cannot run two trays for one user. It is an OS lock
(``flock`` / ``LockFileEx`` through filelock): a crashed tray releases it with its process, so a
stale file never blocks the next login. The holder's pid sits next to it for the message and for
``vidtray tray --quit`` (:func:`stop_running`), which is how a tray without an icon is ended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from vidtray.errors import OperationFailed
from vidtray.paths import tray_lock_dir
from vidtray.services.fsutil import atomic_write_text

log = logging.getLogger("vidtray.tray")


class AlreadyRunning(OperationFailed):
    """Another tray of this user holds the lock (exit 1)."""


def running_pid(folder: Path | None = None) -> int | None:
    try:
        return int((folder or tray_lock_dir()).joinpath("tray.pid").read_text().strip())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def single_instance(folder: Path | None = None) -> Iterator[None]:
    """Hold the per-user tray lock for the ``with`` body; AlreadyRunning if another tray has it."""
    from filelock import FileLock, Timeout

    folder = folder or tray_lock_dir()
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
        raise AlreadyRunning(f"vidtray tray is already running{who}; quit it from its menu, "
                             "or with `vidtray tray --quit`") from None
    pid_file = folder / "tray.pid"
    try:
        atomic_write_text(pid_file, f"{os.getpid()}\n")
        yield
    finally:
        forget_pid(folder)
        lock.release()


def forget_pid(folder: Path | None = None) -> None:
    """Remove the pid file if it names this process (also called right before a forced exit)."""
    folder = folder or tray_lock_dir()
    with contextlib.suppress(OSError):
        if running_pid(folder) == os.getpid():
            folder.joinpath("tray.pid").unlink()


def _lock_free(folder: Path) -> bool:
    from filelock import FileLock, Timeout

    lock = FileLock(folder / "tray.lock", thread_local=False, fallback_to_soft=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    lock.release()
    return True


def stop_running(folder: Path | None = None, timeout: float = 20.0) -> int | None:
    """Ask the running tray to quit (SIGTERM) and wait until its lock is free.

    Returns its pid, or None when no tray runs. OperationFailed when it does not end within ``timeout``.
    """
    folder = folder or tray_lock_dir()
    if not folder.joinpath("tray.lock").exists() or _lock_free(folder):
        return None
    pid = running_pid(folder)
    for _ in range(20):  # a tray that just took the lock writes its pid a moment later
        if pid is not None:
            break
        time.sleep(0.05)
        pid = running_pid(folder)
    if pid is None:
        raise OperationFailed(f"a tray holds {folder / 'tray.lock'} but wrote no pid to {folder / 'tray.pid'}")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # ended meanwhile: the lock tells
    except PermissionError as exc:
        raise OperationFailed(f"cannot stop the tray (pid {pid}): {exc.strerror}") from exc
    deadline = time.monotonic() + timeout
    while not _lock_free(folder):
        if time.monotonic() > deadline:
            raise OperationFailed(f"the tray (pid {pid}) did not quit within {timeout:g} s")
        time.sleep(0.1)
    return pid
