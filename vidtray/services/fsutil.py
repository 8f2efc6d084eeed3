"""Small file-system helpers shared by the services: atomic writes, the finished-video rule and walk
(``video_name_problem``, ``walk_videos``: the storage report, cleanup, library rebuild and the watcher),
folder sizes, and the texts a person reads about them (sizes, counts)."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv"})


#: What vidtray creates holds prompts (library.json, sidecars, queue, logs, state): private to the user,
#: whatever the umask. An existing file or folder keeps the mode it has (library.json is shared with
#: other apps, and a person may have opened it up on purpose).
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> Path:
    """``mkdir -p`` where every folder it creates is 0700 whatever the umask; existing ones are kept."""
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue
        os.chmod(folder, PRIVATE_DIR)  # mkdir's mode passes through the umask
    return path


def atomic_write_bytes(path: Path, data: bytes, *, sync: bool = True) -> os.stat_result:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never a torn one.

    Temp file in the same folder, fsync, ``os.replace``, then fsync the folder (POSIX) so the
    rename itself survives a power cut. A new file is 0600; an existing one keeps its mode.
    ``sync=False`` skips both fsyncs (a copy that may be lost in a power cut, never torn while running).
    Returns the stat of the file as written (taken before the rename, which keeps inode and mtime), so a
    caller can tell its own write from one that another program made a moment later.
    """
    path = Path(path)
    mode = _mode_for(path)
    fd, tmp = tempfile.mkstemp(prefix=_own_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        # Keep the mode the file had, so other apps and users that could read library.json still can.
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
            written = os.fstat(fh.fileno())
        replace_with_retry(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(path.parent)
    return written


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return PRIVATE_FILE


# -- vidtray's own temp files ---------------------------------------------------------------------------------
# Other programs write beside library.json with their own temp files (``.library.json.XXXX.tmp``); vidtray
# names its own distinctly and only ever removes those: ``.library.json.vidtray-<pid>.<host>-XXXXXXXX.tmp``.


def temp_prefix(path: Path) -> str:
    """The start of the name of every temp file vidtray writes for ``path``."""
    return f".{Path(path).name}.vidtray-"


def _own_temp_prefix(path: Path) -> str:
    return f"{temp_prefix(path)}{os.getpid()}.{_HOST}-"


def _host_tag() -> str:
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace"), usedforsecurity=False).hexdigest()[:6]


_HOST = _host_tag()


def remove_stale_temps(path: Path, max_age_s: float) -> list[str]:
    """Remove vidtray's temp files for ``path`` that no writer will finish; returns their paths.

    Call it holding the lock that vidtray's writers of ``path`` hold: then a temp file of a process of
    this machine that has exited is left over from a crash, whatever its age. Any other of vidtray's
    temp files goes only when older than ``max_age_s`` (its pid may have been reused, or it came from
    another machine). Files without vidtray's prefix belong to other programs and are never touched.
    """
    import time

    path = Path(path)
    prefix = temp_prefix(path)
    removed: list[str] = []
    try:
        with os.scandir(path.parent) as entries:
            candidates = [e for e in entries if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except OSError:
        return removed
    now = time.time()
    for entry in candidates:
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        owner = entry.name[len(prefix):].split("-", 1)[0]
        pid_text, _, host = owner.partition(".")
        dead = host == _HOST and pid_text.isdigit() and not _process_alive(int(pid_text))
        if dead or age > max_age_s:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(entry.path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there; rely on the age alone
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_with_retry(src: str | os.PathLike[str], dst: str | os.PathLike[str], attempts: int = 8) -> None:
    """``os.replace`` that retries with backoff on PermissionError.

    On Windows a replace fails while another program holds the target open; we wait for it
    rather than ever writing in place.
    """
    import time

    delay = 0.02
    for attempt in range(attempts):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if os.name != "nt" or attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay *= 2


def fsync_dir(folder: Path) -> None:
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def human_size(n: float) -> str:
    """1536 -> '1.5 KiB': powers of 1024, so the IEC names (a GB would be 1000**3 bytes)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def gib(n_gib: float) -> str:
    """A threshold given in GiB (``warn_free_gb``: vidtray multiplies by 1024**3): 5.0 -> '5 GiB'."""
    return f"{n_gib:g} GiB"


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """'1 video', '2 videos', '0 videos' (``nouns`` for an irregular plural)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


#: Names of files still being downloaded or written elsewhere (they also fail the extension test; this
#: says why).
TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download", ".temp", ".swp")
#: Why a file is not a finished video (``video_name_problem``, ``walk_videos``' ``on_skip``).
HIDDEN = "hidden or in-progress (dot-name or .partial/)"
TEMPORARY = "temporary name"
NOT_A_VIDEO = "not a video (extension)"
SYMLINK = "symlink (not followed)"


def video_name_problem(name: str) -> str | None:
    """Why a file called ``name`` is not a finished video (None when it may be one): hidden (``.x``, as
    everything in ``.partial/`` is), a temporary name (``~x``, ``x.mp4.part``, ``x.crdownload``), or not
    a video extension. The one rule for the storage report, cleanup, library rebuild and the watcher.
    Called for every file in a folder, so it is kept to plain string operations."""
    if name[:1] in (".", ""):
        return HIDDEN
    lower = name.lower()
    if name[0] == "~" or lower.endswith(TEMP_SUFFIXES):
        return TEMPORARY
    if lower[lower.rfind("."):] not in VIDEO_EXTENSIONS:
        return NOT_A_VIDEO
    return None


def is_finished_video_name(name: str) -> bool:
    return video_name_problem(name) is None


def iter_videos(videos_dir: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Finished videos under ``videos_dir`` as (path, lstat) (see ``walk_videos``)."""
    for path, st in walk_videos(str(videos_dir)):
        yield Path(path), st


def walk_videos(root: str, *, on_error: Callable[[OSError], None] | None = None,
                on_skip: Callable[[str, str], None] | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """Finished videos under ``root`` as (path, lstat): plain files with a finished video's name.

    Walks real sub-folders too, but never follows a symlink (to a file or a folder) and never enters
    hidden folders, so ``.partial/`` is never touched. ``on_error`` hears of each folder that cannot be
    listed (by default: a warning, and nothing for one that vanished); ``on_skip(path, why)`` of each file
    passed over that is not hidden (NOT_A_VIDEO, TEMPORARY, or SYMLINK for a link with a video's name).
    """
    # Plain strings and DirEntry data: this runs over every file in the folder (tens of thousands).
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            if on_error is not None:
                on_error(exc)
            elif not isinstance(exc, FileNotFoundError):
                logging.getLogger("vidtray.fsutil").warning("cannot list %s: %s", folder, exc)
            continue
        for entry in entries:
            if entry.is_symlink():
                if on_skip is not None and is_finished_video_name(entry.name) and not _is_dir(entry):
                    on_skip(entry.path, SYMLINK)
                continue
            if entry.is_dir(follow_symlinks=False):
                if not entry.name.startswith("."):
                    stack.append(entry.path)
                continue
            why = video_name_problem(entry.name)
            if why is not None:
                if on_skip is not None and why != HIDDEN:
                    on_skip(entry.path, why)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield entry.path, st


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


#: Where a folder can be listed through a descriptor and its files stat'ed relative to it (``fstatat``, as du
#: does): the kernel then resolves one name per file, not the whole path.
_BY_FD = os.scandir in os.supports_fd and os.stat in os.supports_dir_fd


def walk_stats(root: str | os.PathLike[str], on_error: Callable[[OSError], None] | None = None,
               ) -> Iterator[tuple[str, list[tuple[str, os.stat_result]]]]:
    """Every folder under ``root`` with its plain files and their lstat: one listing per folder and one stat
    per file, as du walks (the storage report's pass over the videos folder). Never enters a symlink (``root``
    itself may be one); ``on_error`` hears of each folder that cannot be listed (by default: nothing)."""
    stack = [os.fspath(root)]
    while stack:
        folder = stack.pop()
        files: list[tuple[str, os.stat_result]] = []
        try:
            if _BY_FD:
                fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
                try:
                    with os.scandir(fd) as it:
                        _list_into(it, folder, stack, files)
                finally:
                    os.close(fd)
            else:
                with os.scandir(folder) as it:
                    _list_into(it, folder, stack, files)
        except OSError as exc:
            if on_error is not None:
                on_error(exc)
            continue
        yield folder, files


def _list_into(entries: Iterator[os.DirEntry[str]], folder: str, stack: list[str],
               files: list[tuple[str, os.stat_result]]) -> None:
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            stack.append(os.path.join(folder, entry.name))
        elif entry.is_file(follow_symlinks=False):
            try:
                files.append((entry.name, entry.stat(follow_symlinks=False)))
            except OSError:
                continue


def tree_size(folder: Path) -> tuple[int, int]:
    """(files, bytes) of regular files under ``folder``, symlinks not followed."""
    files, size, _newest = tree_stats(folder)
    return files, size


def tree_stats(folder: Path) -> tuple[int, int, float]:
    """(files, bytes, newest modification) of regular files under ``folder``, symlinks not followed. The
    newest is the folder's own modification time when it holds no file (0.0 when it cannot be read)."""
    count = size = 0
    newest = float("-inf")
    for _folder, files in walk_stats(folder):
        for _name, st in files:
            size += st.st_size
            newest = max(newest, st.st_mtime)
        count += len(files)
    if not count:
        try:
            newest = os.stat(folder).st_mtime
        except OSError:
            newest = 0.0
    return count, size, newest
