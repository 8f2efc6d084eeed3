"""watchdog's events -> what the watcher's next tick has to do.

Runs on watchdog's observer threads, so it only records: a written file becomes a settle candidate
(``settle.SettleQueue``); a deletion, a move, a folder that went and a sidecar that changed wait in the
``Intake`` until the watcher's thread takes them (``take``), all of a tick at once.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from vidtray.services.libitem import is_video_name
from vidtray.services.sidecar import videos_of_sidecar
from vidtray.services.watch.files import LogOnce, ignore_reason
from vidtray.services.watch.folders import Spellings, first_folder
from vidtray.services.watch.settle import SettleQueue

log = logging.getLogger("vidtray.watcher")


@dataclass
class News:
    """What the observers reported since the last tick, besides the files to settle."""

    moves: list[tuple[str, str]] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)
    gone_dirs: set[str] = field(default_factory=set)
    sidecars: set[str] = field(default_factory=set)  # videos whose sidecar changed

    def __bool__(self) -> bool:
        return bool(self.moves or self.deleted or self.gone_dirs or self.sidecars)


class Intake:
    """Records what happened in the watched folders (any thread; the watcher's thread takes it)."""

    def __init__(self, folders: Sequence[Path], settle: SettleQueue, notes: LogOnce,
                 on_news: Callable[[], None]) -> None:
        self.folders = folders
        self.settle = settle
        self.notes = notes
        self.on_news = on_news  # something to do: the watcher is not idle
        self._mu = threading.Lock()
        self._news = News()

    def root_of(self, path: Path) -> Path | None:
        return first_folder(self.folders, path)

    def candidate(self, path: Path, root: Path, *, fast: bool = False) -> None:
        """A file was written (``fast``: closed after writing, or renamed into place)."""
        why = ignore_reason(path, root)
        if why is not None:
            if path.suffix.lower() == ".json" and not path.name.startswith("."):
                self.sidecar(path)
            else:
                self.notes(path, why)
            return
        self.settle.add(os.fspath(path), root, fast=fast)
        self.on_news()

    def sidecar(self, sidecar: Path) -> None:
        """A file named like a sidecar was written: its video is read again (``sidecar.read_sidecar``
        decides whether it is vidtray's)."""
        with self._mu:
            for video in videos_of_sidecar(sidecar):
                if os.path.lexists(video):
                    self._news.sidecars.add(os.fspath(video))
        self.on_news()

    def deleted(self, path: Path) -> None:
        if is_video_name(path):
            with self._mu:
                self._news.deleted.add(os.fspath(path))
            self.settle.discard(os.fspath(path))
            self.on_news()

    def moved(self, src: Path, dest: Path) -> None:
        src_root, dest_root = self.root_of(src), self.root_of(dest)
        if is_video_name(src) and ignore_reason(src, src_root) is None:
            if dest_root is not None and ignore_reason(dest, dest_root) is None:
                with self._mu:
                    self._news.moves.append((os.fspath(src), os.fspath(dest)))
            else:
                self.deleted(src)
        if dest_root is not None:
            self.candidate(dest, dest_root, fast=True)

    def dir_gone(self, path: Path) -> None:
        if path in self.folders:
            return  # the folder itself: handled (and retried) by FolderWatch, entries stay as they are
        with self._mu:
            self._news.gone_dirs.add(os.fspath(path))
        self.on_news()

    def take(self) -> News:
        with self._mu:
            news, self._news = self._news, News()
        return news

    def put_back(self, news: News) -> None:
        """A tick that failed: what it took is tried again."""
        with self._mu:
            self._news.moves[:0] = news.moves
            self._news.deleted |= news.deleted
            self._news.gone_dirs |= news.gone_dirs
            self._news.sidecars |= news.sidecars

    def busy(self) -> bool:
        with self._mu:
            return bool(self._news)


class EventHandler(FileSystemEventHandler):
    """watchdog handler of one watch folder: classify the event and hand it to the ``Intake``."""

    def __init__(self, intake: Intake, spellings: Spellings, root: Path) -> None:
        self.intake = intake
        self.spellings = spellings
        self.root = root

    def _canon(self, raw: bytes | str) -> Path | None:
        """The event's path as the watcher names that file (where watch folders overlap, two observers
        report one file under two paths: both become the first folder's)."""
        if not raw:
            return None
        path = os.fsdecode(raw)
        return Path(self.spellings.canonical(path) if self.spellings.overlap else path)

    def _root_for(self, path: Path | None) -> Path:
        if path is None or not self.spellings.overlap:
            return self.root
        return self.spellings.root_of(os.fspath(path)) or self.root

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception:  # an odd event must not kill watchdog's dispatcher thread
            log.exception("cannot handle %r", event)

    def _dispatch(self, event: FileSystemEvent) -> None:
        src = self._canon(event.src_path)
        if event.is_directory:
            self._folder_event(event, src)
        elif event.event_type == "moved":
            self._file_moved(src, self._canon(event.dest_path))
        elif src is None:
            return
        elif event.event_type in ("created", "modified"):
            self.intake.candidate(src, self._root_for(src))
        elif event.event_type == "closed":
            self.intake.candidate(src, self._root_for(src), fast=True)
        elif event.event_type == "deleted":
            self.intake.deleted(src)

    def _folder_event(self, event: FileSystemEvent, src: Path | None) -> None:
        if src is None:
            return
        if event.event_type == "deleted":
            self.intake.dir_gone(src)
        elif event.event_type == "moved":
            # A folder moved within the watched tree: its files arrive as their own move events.
            # Moved out of it: its entries are missing now.
            dest = self._canon(event.dest_path)
            if dest is None or self.intake.root_of(dest) is None:
                self.intake.dir_gone(src)

    def _file_moved(self, src: Path | None, dest: Path | None) -> None:
        if src is not None and dest is not None:
            self.intake.moved(src, dest)
        elif dest is not None:
            self.intake.candidate(dest, self._root_for(dest), fast=True)
        elif src is not None:
            self.intake.deleted(src)
