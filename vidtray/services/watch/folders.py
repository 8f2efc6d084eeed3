"""The watched folders: each real folder once, one name for a file seen through overlapping folders, and
keeping every folder armed (a folder that vanishes, an unplugged drive, is re-armed when it comes back)."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Container, Iterable, Sequence
from pathlib import Path

from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch

from vidtray.services.libitem import abs_path
from vidtray.services.watch.files import is_gone_error

log = logging.getLogger("vidtray.watcher")

#: (st_dev, st_ino) of a folder
DirIdent = tuple[int, int]
#: No open/close-without-write events: our own probes read every file.
EVENTS: list[type[FileSystemEvent]] = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent,
                                       FileDeletedEvent, DirDeletedEvent, DirMovedEvent]


def distinct_folders(folders: Iterable[Path]) -> list[Path]:
    """``folders`` as absolute paths (not resolved), each real folder once: a later entry that is the same
    folder as an earlier one (a symlink to it, the same path spelled otherwise, a bind mount) is dropped."""
    out: list[Path] = []
    seen: set[str | DirIdent] = set()
    for folder in folders:
        path = abs_path(folder)
        real = os.path.realpath(path)
        ident = _ident(path)
        keys: list[str | DirIdent] = [real] if ident is None else [real, ident]  # not there (yet): by name
        if any(k in seen for k in keys):
            first = next((f for f in out if os.path.realpath(f) == real or (ident and _ident(f) == ident)), None)
            log.info("watch folder %s is the same folder as %s; watching it once", path, first)
            continue
        seen.update(keys)
        out.append(path)
    return out


def _ident(path: Path, *, folder: bool = False) -> DirIdent | None:
    """(dev, inode) of what ``path`` leads to; None if nothing (or, with ``folder``, no folder) is there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return None if folder and not stat.S_ISDIR(st.st_mode) else (st.st_dev, st.st_ino)


def first_folder(folders: Sequence[Path], path: Path) -> Path | None:
    """The first watch folder that holds ``path`` (or is it), by the paths' spelling."""
    for folder in folders:
        if path == folder or folder in path.parents:
            return folder
    return None


def under(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder`` ('' for the folder itself), or None when it is not inside it."""
    if path == folder:
        return ""
    prefix = folder.rstrip(os.sep) + os.sep
    return path[len(prefix):] if path.startswith(prefix) else None


class Spellings:
    """Paths of one file under overlapping watch folders.

    A watch folder inside another through a symlink (``watch_dirs = ["~/clips"]`` where ``~/clips`` links
    to the data folder that holds the videos folder) shows each file there under two paths. The watcher
    names such a file by the path the library already lists it under, else by the first watch folder's
    path (the videos folder comes first), so existing entries keep their paths and nothing is listed twice.
    Computed from the folders' resolved paths alone (walks and inotify never follow a symlink below a
    watch folder), so a path costs no system call.
    """

    def __init__(self, folders: Sequence[Path]) -> None:
        self.roots = [(os.fspath(f), os.path.realpath(f), f) for f in folders]
        reals = [real for _, real, _ in self.roots]
        self.overlap = any(i != j and under(a, b) is not None
                           for i, a in enumerate(reals) for j, b in enumerate(reals))

    def all(self, path: str) -> list[tuple[str, Path]]:
        """(path, watch folder) for every watch folder that sees this file, in folder order."""
        real = self._real(path)
        out: list[tuple[str, Path]] = []
        if real is not None:
            for spelled, resolved, folder in self.roots:
                rel = under(real, resolved)
                # A folder sees what is in it, except below hidden folders (never walked, never imported).
                if rel is None or any(part.startswith(".") for part in rel.split(os.sep)[:-1]):
                    continue
                alias = os.path.join(spelled, rel) if rel else spelled
                if all(alias != a for a, _ in out):
                    out.append((alias, folder))
        if not any(a == path for a, _ in out):
            root = self.root_of(path)
            out.append((path, root if root is not None else Path(path).parent))
        return out

    def canonical(self, path: str) -> str:
        return self.all(path)[0][0]

    def preferred(self, path: str, index: Container[str]) -> tuple[str, Path]:
        """The path the library lists this file under (the first such), else the canonical one."""
        spellings = self.all(path)
        return next((s for s in spellings if s[0] in index), spellings[0])

    def root_of(self, path: str) -> Path | None:
        best: tuple[str, Path] | None = None
        for spelled, _, folder in self.roots:
            if under(path, spelled) is not None and (best is None or len(spelled) > len(best[0])):
                best = (spelled, folder)
        return None if best is None else best[1]

    def _real(self, path: str) -> str | None:
        best: tuple[str, str] | None = None
        for spelled, resolved, _ in self.roots:
            if under(path, spelled) is not None and (best is None or len(spelled) > len(best[0])):
                best = (spelled, resolved)
        if best is None:
            return None
        rel = under(path, best[0])
        return os.path.join(best[1], rel) if rel else best[1]


def make_observer() -> BaseObserver:
    """inotify with full move events where there is one: a file moved in from outside the watched
    folders then arrives as a move (a completion signal, short settle) instead of a plain create."""
    observer: BaseObserver
    try:
        from watchdog.observers.inotify import InotifyObserver

        observer = InotifyObserver(generate_full_events=True)
    except (ImportError, OSError):
        from watchdog.observers import Observer

        observer = Observer()
    observer.name = "vidtray-observer"
    return observer


def _emitter_alive(observer: BaseObserver, watch: ObservedWatch) -> bool:
    """watchdog stops a folder's emitter when the folder itself is deleted; notice that."""
    return any(e.watch == watch and e.is_alive() for e in list(observer.emitters))


class FolderWatch:
    """The observer and one recursive watch per folder (``vidtray-observer``; checked by the watcher's
    thread). A folder that cannot be armed, or vanishes, is retried every ``retry_s``."""

    def __init__(self, folders: Sequence[Path], handler_for: Callable[[Path], FileSystemEventHandler],
                 retry_s: float) -> None:
        self.folders = folders
        self.handler_for = handler_for
        self.retry_s = retry_s
        self._observer: BaseObserver | None = None
        self._watches: dict[Path, tuple[ObservedWatch, DirIdent]] = {}
        self._down: set[Path] = set()
        #: sub-folders the last reconcile could not list: reconciled again once they can be
        self.unlisted: set[str] = set()

    @property
    def observer(self) -> BaseObserver | None:
        return self._observer

    def start(self) -> None:
        self._observer = make_observer()
        for folder in self.folders:
            self._arm(self._observer, folder)
        self._observer.start()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()

    def join(self, timeout: float) -> None:
        if self._observer is not None:
            self._observer.join(timeout)

    def _arm(self, observer: BaseObserver, folder: Path) -> bool:
        try:
            st = os.stat(folder)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(f"{folder} is not a folder")
            watch = observer.schedule(self.handler_for(folder), os.fspath(folder), recursive=True,
                                      event_filter=EVENTS)
        except OSError as exc:
            if folder not in self._down:
                log.warning("watch folder %s is not available (%s); retrying every %.0f s",
                            folder, exc.strerror or exc, self.retry_s)
            self._down.add(folder)
            return False
        self._watches[folder] = (watch, (st.st_dev, st.st_ino))
        if folder in self._down:
            log.info("watch folder %s is back", folder)
        self._down.discard(folder)
        return True

    def check_observer(self, stopping: bool) -> None:
        """watchdog's observer thread should never end while we run; if it did, start a new one (the
        folders are re-armed and reconciled by ``check_folders``, so what happened meanwhile comes in)."""
        if self._observer is None or self._observer.is_alive() or stopping:
            return
        log.warning("the file-system observer stopped; starting a new one")
        self._watches.clear()
        self._observer = make_observer()
        self._observer.start()

    def check_folders(self) -> list[Path]:
        """Notice folders that vanished (unplugged drive) or came back; returns the ones re-armed."""
        observer = self._observer
        if observer is None:
            return []
        back: list[Path] = []
        for folder in self.folders:
            ident = _ident(folder, folder=True)
            armed = self._watches.get(folder)
            if armed is not None and ident == armed[1] and _emitter_alive(observer, armed[0]):
                continue
            if armed is not None:
                self._disarm(observer, folder, armed[0], vanished=ident is None)
            if ident is not None and self._arm(observer, folder):
                back.append(folder)
        return back

    def _disarm(self, observer: BaseObserver, folder: Path, watch: ObservedWatch, *, vanished: bool) -> None:
        """Gone, replaced, or its inotify watch died with the old folder: drop the stale watch."""
        self._watches.pop(folder, None)
        try:
            observer.unschedule(watch)
        except Exception:  # watchdog raises KeyError/OSError for a watch whose emitter already ended
            log.debug("unschedule %s", folder, exc_info=True)
        if vanished:
            log.warning("watch folder %s vanished; the watcher keeps running and retries every %.0f s",
                        folder, self.retry_s)
            self._down.add(folder)

    def listable_again(self) -> list[Path]:
        """The sub-folders in ``unlisted`` that can be listed now (those gone meanwhile are forgotten)."""
        out: list[Path] = []
        for folder in sorted(self.unlisted):
            try:
                os.scandir(folder).close()
            except OSError as exc:
                if is_gone_error(exc):
                    self.unlisted.discard(folder)
                continue
            self.unlisted.discard(folder)
            log.info("folder %s can be listed again", folder)
            out.append(Path(folder))
        return out
