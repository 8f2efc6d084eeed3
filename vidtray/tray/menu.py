"""The tray's menu, made of pystray's menu objects from the current ``TrayState``.

pystray asks for each item's text, visibility and check mark when it shows the menu (after
``icon.update_menu()``), so every dynamic part reads the state through ``state()`` then. Callbacks
are ``Actions`` methods: they run on the main thread and only hand work off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from vidtray.config import Config
from vidtray.services.fsutil import human_size
from vidtray.tray.actions import Actions
from vidtray.tray.state import TrayState, job_line, storage_lines

JOB_PROMPT_CHARS = 40  # of the running job's prompt, in its menu line


class MenuBuilder:
    def __init__(self, pystray: ModuleType, cfg: Config, actions: Actions, *, state: Callable[[], TrayState],
                 refresh_storage: Callable[[], None], quit: Callable[[], None]) -> None:
        self.ps = pystray
        self.cfg = cfg
        self.actions = actions
        self.state = state
        self.refresh_storage = refresh_storage
        self.quit = quit

    def menu(self) -> Any:
        menu, item = self.ps.Menu, self.ps.MenuItem
        act = self.actions

        def when_job(_item: Any) -> bool:
            return self.state().job is not None

        return menu(
            item("Generate video...", act.generate, default=True),
            item(lambda _i: self.job_text(), None, enabled=False, visible=when_job),
            item("Cancel current job", act.cancel, visible=when_job),
            menu.SEPARATOR,
            item("Open videos folder", lambda: act.open(self.cfg.videos_dir, create=True)),
            item("Open library", act.open_library),
            item("Storage", menu(self.storage_items)),
            menu.SEPARATOR,
            item(lambda _i: "Resume queue" if self.state().queue_user_paused else "Pause queue", act.pause_queue),
            item("Pause watching", act.pause_watching, checked=lambda _i: self.state().watching_paused),
            item("Start on login", act.autostart, checked=lambda _i: self.state().autostart),
            item("Settings", act.settings),
            item("Open log", act.open_log),
            menu.SEPARATOR,
            item("Quit", self.quit),
        )

    def job_text(self) -> str:
        job = self.state().job
        if job is None:
            return ""
        limit = JOB_PROMPT_CHARS
        prompt = job.prompt if len(job.prompt) <= limit else job.prompt[:limit - 1] + "…"
        return f"{job_line(job)}: {prompt}"

    def storage_items(self) -> Iterator[Any]:
        """The Storage submenu: sizes, then the deletions (a submenu pystray rebuilds each time it opens)."""
        item, sep = self.ps.MenuItem, self.ps.Menu.SEPARATOR
        state = self.state()
        for line in storage_lines(state.storage, state.free_bytes):
            yield item(line, None, enabled=False)
        yield sep
        yield item("Free space...", self.actions.free_space)
        yield item("Delete generated videos...", self.actions.delete_videos)
        yield item("Delete videos older than N days...", self.actions.delete_older)
        view = state.storage
        for repo, size, broken in view.models if view else ():
            label = f"Delete {repo}{' (broken)' if broken else ''} ({human_size(size)})..."
            yield item(label, self._delete_model(repo, size))
        yield sep
        yield item("Refresh sizes", self.refresh_storage)

    def _delete_model(self, repo: str, size: int) -> Callable[[], None]:
        # pystray counts a callback's parameters (defaults included), so bind through a closure.
        return lambda: self.actions.delete_model(repo, size)
