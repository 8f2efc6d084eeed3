"""What the watcher asks of a path: is it a candidate video, is it known to be gone, is it the same file
as one seen before; and a log of passed-over files that says each once."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from vidtray.services.fsutil import HIDDEN, video_name_problem

log = logging.getLogger("vidtray.watcher")

#: (dev, inode, size, mtime_ns): the same file, even under another name
Identity = tuple[int, int, int, int]
#: (inode, size, mtime_ns) of a file's current content
Sig = tuple[int, int, int]
#: Distinct (path, reason) lines remembered; beyond it the memory starts over.
LOG_ONCE_LIMIT = 10_000


def ignore_reason(path: Path, root: Path | None = None) -> str | None:
    """Why ``path`` is not a candidate video (None if it is one). Name-based only; no disk access.

    The finished-video rule (``fsutil.video_name_problem``) for the name and every folder below ``root``,
    plus what library.json needs: a name it can hold as text."""
    rel = path
    if root is not None:
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = path
    if any(part.startswith(".") for part in rel.parts[:-1]):
        return HIDDEN
    return video_name_problem(path.name) or unencodable(path)


def unencodable(path: Path) -> str | None:
    """Why library.json cannot name this file (None if it can)."""
    # Newlines and tabs are fine (JSON holds them); bytes that are not UTF-8 have no faithful JSON text,
    # so other apps could not find the file by the path in library.json.
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    return None


def is_gone_error(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError | NotADirectoryError)


def gone(path: str) -> bool:
    """True only if ``path`` is known not to exist: a path we may not look at (permission, I/O error) is
    unknown, and an unknown video is never marked missing."""
    try:
        os.lstat(path)
    except OSError as exc:
        return is_gone_error(exc)
    return False


def identity(st: os.stat_result) -> Identity:
    """Same inode, size and mtime (to the nanosecond): the same file, even under another name.
    Size and mtime guard against a new file that reuses a deleted file's inode."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def file_sig(path: Path) -> Sig | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class LogOnce:
    """Says once why a file is passed over (a folder of 10,000 non-videos is not 10,000 lines per tick)."""

    def __init__(self) -> None:
        self._logged: set[tuple[str, str]] = set()

    def __call__(self, path: Path | str, why: str) -> None:
        key = (os.fspath(path), why)
        if key in self._logged:
            return
        if len(self._logged) > LOG_ONCE_LIMIT:
            self._logged.clear()
        self._logged.add(key)
        level = logging.DEBUG if why.startswith(("hidden", "temporary")) else logging.INFO
        log.log(level, "ignoring %s: %s", path, why)
