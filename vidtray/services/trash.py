"""What vidtray itself moved to the trash, where it is now, and emptying only that.

The trash lies on the same disk as the videos (the freedesktop trash is per volume; macOS' and Windows' too),
so a video moved there frees nothing until the trash is emptied. vidtray keeps a record of each file it
trashed (``Paths.trash_record_file``: original path, device, inode, size, modification time) and finds it
again by its inode in the trash folders of that volume (a move keeps the inode; the name in the trash may
have changed, " 2" added on a clash). A file counts as vidtray's only while device, inode, size and
modification time all still match, and, in a freedesktop trash, its ``.trashinfo`` names a file of the
same name: so a file the user trashed later can never be taken for one of vidtray's.

Found: the home trash (``$XDG_DATA_HOME/Trash``) and the volume's own (``<mount>/.Trash/<uid>``,
``<mount>/.Trash-<uid>``) on Linux and BSD; ``~/.Trash`` on macOS. Windows' recycle bin is not searched
(``available`` is False there, and the report says so).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from vidtray.paths import mount_point
from vidtray.services import statefile

if TYPE_CHECKING:
    from vidtray.services.storage import PlannedFile

log = logging.getLogger("vidtray.trash")

VERSION = 1
#: A record whose file is no longer in the trash (emptied by the user) is dropped after this long: its
#: volume may only be unmounted for now.
FORGET_AFTER_S = 30 * 86400
MAX_RECORDS = 50_000


@dataclass(frozen=True)
class Trashed:
    """One file vidtray moved to the trash, as it was when it went."""

    original: str
    size: int
    dev: int
    ino: int
    mtime_ns: int
    trashed_ts: float


@dataclass(frozen=True)
class Found:
    """A recorded file, still in the trash."""

    record: Trashed
    path: Path  # where it is in the trash
    info: Path | None  # its .trashinfo (freedesktop)


@dataclass
class TrashReport:
    """How much of the trash is vidtray's own (``vidtray storage``)."""

    available: bool  # False where vidtray cannot look into the trash (Windows)
    files: int = 0
    size_bytes: int = 0
    folders: list[str] = field(default_factory=list)  # the trash folders they are in
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def supported() -> bool:
    return sys.platform != "win32"


def home_trash() -> Path:
    """The trash of the user's home volume: ``~/.Trash`` on macOS, else ``$XDG_DATA_HOME/Trash``."""
    if sys.platform == "darwin":
        return Path.home() / ".Trash"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "Trash"


# -- the record --------------------------------------------------------------------------------------


def read_record(path: Path) -> list[Trashed]:
    out = []
    items: list[Any] = statefile.read_section(path, "items", list) or []
    for item in items:
        try:
            out.append(Trashed(str(item["original"]), int(item["size"]), int(item["dev"]), int(item["ino"]),
                               int(item["mtime_ns"]), float(item["trashed_ts"])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def record_trashed(path: Path, files: Iterable[PlannedFile], now: float | None = None) -> None:
    """Add these files (just moved to the trash) to the record. Never raises: without the record they are
    only not counted as vidtray's (logged)."""
    if not supported():
        return  # nothing would ever be found again (Windows' recycle bin is not searched)
    now = time.time() if now is None else now
    new = [Trashed(str(f.path), f.size, f.dev, f.ino, f.mtime_ns, now) for f in files]

    def add(records: list[Trashed]) -> list[Trashed]:
        # Forget what left the trash (emptied by the user) long ago, so the record stays small.
        old = [r for r in records if now - r.trashed_ts >= FORGET_AFTER_S]
        there = {f.record for f in find(old)} if old else set()
        return [*(r for r in records if r in there or now - r.trashed_ts < FORGET_AFTER_S), *new]

    if new:
        _update(path, add)


def _update(path: Path, change: Callable[[list[Trashed]], list[Trashed]]) -> None:
    statefile.update_section(path, VERSION, "items",
                             lambda: [asdict(r) for r in change(read_record(path))[-MAX_RECORDS:]],
                             "update the record of what vidtray trashed")


# -- finding them ------------------------------------------------------------------------------------


def _candidates(original: str) -> list[Path]:
    """The folders a file trashed from ``original`` lies in: the home trash and its volume's trashes."""
    if sys.platform == "darwin":
        return [home_trash()]
    out = [home_trash() / "files"]
    with contextlib.suppress(OSError):
        top = mount_point(Path(original).parent)
        uid = os.getuid()
        out += [top / ".Trash" / str(uid) / "files", top / f".Trash-{uid}" / "files"]
    return out


def find(records: Iterable[Trashed], *, check_info: bool = True) -> list[Found]:
    """The recorded files still in the trash (see the module's rules). Without ``check_info`` a match is
    device, inode, size and modification time (enough to count them; ``empty_own`` checks the info too)."""
    listings: dict[Path, dict[int, str]] = {}
    candidates: dict[str, list[Path]] = {}  # per folder the files came from: one mount-point lookup
    found = []
    for rec in records:
        parent = os.path.dirname(rec.original)
        if parent not in candidates:
            candidates[parent] = _candidates(rec.original)
        for folder in candidates[parent]:
            if folder not in listings:
                listings[folder] = _inodes(folder)
            name = listings[folder].get(rec.ino)
            if name is not None and (hit := _check(rec, folder, name, check_info)) is not None:
                found.append(hit)
                break
    return found


def _inodes(folder: Path) -> dict[int, str]:
    try:
        with os.scandir(folder) as it:
            return {e.inode(): e.name for e in it}
    except OSError:
        return {}


def _check(rec: Trashed, folder: Path, name: str, check_info: bool) -> Found | None:
    path = folder / name
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (rec.dev, rec.ino, rec.size, rec.mtime_ns):
        return None
    if folder.name != "files":  # macOS: no info files
        return Found(rec, path, None)
    info = folder.parent / "info" / f"{name}.trashinfo"
    if check_info and _info_name(info) != os.path.basename(rec.original):
        return None
    return Found(rec, path, info)


def _info_name(info: Path) -> str | None:
    """The file name a ``.trashinfo`` says the file had (its ``Path=``, decoded)."""
    try:
        text = info.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Path="):
            return os.path.basename(unquote(line[5:].strip()))
    return None


def report(record_file: Path) -> TrashReport:
    if not supported():
        return TrashReport(False, note="vidtray does not look into the recycle bin on Windows")
    found = find(read_record(record_file), check_info=False)
    folders = sorted({str(f.path.parent.parent if f.info else f.path.parent) for f in found})
    note = "still on the disk: this frees when the trash is emptied" if found else ""
    return TrashReport(True, len(found), sum(f.record.size for f in found), folders, note)


def empty_own(record_file: Path, now: float | None = None) -> tuple[int, int]:
    """Delete for good what vidtray put in the trash and is still there (nothing else); (files, bytes)."""
    if not supported():
        return 0, 0
    now = time.time() if now is None else now
    records = read_record(record_file)
    found = find(records)
    count = size = 0
    gone: set[Trashed] = set()
    for item in found:
        try:
            os.unlink(item.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot empty %s from the trash: %s", item.path, exc)
            continue
        if item.info is not None:
            with contextlib.suppress(OSError):
                os.unlink(item.info)
        gone.add(item.record)
        count += 1
        size += item.record.size
    # Keep what is still in the trash and, for a while, what was not found (its volume may be unmounted);
    # records another process added meanwhile stay too.
    there = {f.record for f in found} - gone
    drop = {r for r in records if r in gone or (r not in there and now - r.trashed_ts >= FORGET_AFTER_S)}
    if drop:
        _update(record_file, lambda current: [r for r in current if r not in drop])
    log.info("emptied %d file(s) vidtray had put in the trash (%d bytes)", count, size)
    return count, size
