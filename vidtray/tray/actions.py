"""What the tray's menu items do.

Menu callbacks run on the main thread (pystray's loop), so they only decide and hand off: the slow work
(confirmation dialogs, deletions, autostart, pause, cancel) runs on ``tray-action``, one at a time and
in order (a ``Dispatcher`` on its own thread). A failure there is logged and shown as a notification,
never raised into pystray.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidtray.config import Config, config_path, config_template
from vidtray.services.fsutil import human_size, plural
from vidtray.tray.children import Children
from vidtray.tray.dispatch import Dispatcher
from vidtray.tray.state import TrayState

if TYPE_CHECKING:
    from vidtray.services.notify import Notifier
    from vidtray.tray.link import Services

log = logging.getLogger("vidtray.tray")


def open_path(path: Path) -> None:
    """Open a file or folder with the desktop's default application. Raises OSError on failure."""
    if sys.platform == "win32":
        os.startfile(str(path))  # type: ignore[attr-defined,unused-ignore]
        return
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    try:
        subprocess.Popen([opener, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except FileNotFoundError:
        raise OSError(f"{opener} is not installed (package: xdg-utils)") from None


def free_space_question(plan: dict[str, Any], limit: int = 10) -> str:
    """The confirmation for the tray's "Free space...": the plan's lines (``clean --to-budget --json``)."""
    def name(item: dict[str, Any]) -> str:
        return Path(item["name"]).name if item["kind"] == "video" else item["name"]

    lines = [f"{n}. {item['kind']} {name(item)} ({human_size(item['size_bytes'])})"
             for n, item in enumerate(plan["items"][:limit], 1)]
    if len(plan["items"]) > limit:
        lines.append(f"... and {plural(len(plan['items']) - limit, 'more item')}")
    head = (f"{human_size(plan['used_bytes'])} used, {human_size(plan['over_bytes'])} over the storage budget "
            f"({human_size(plan['budget_bytes'])}). Free {human_size(plan['total_bytes'])}, in this order?")
    tail = []
    if plan["trashed_bytes"]:
        tail.append(f"Videos move to the trash: {human_size(plan['trashed_bytes'])} frees when the trash is emptied.")
    if not plan["meets_budget"]:
        tail.append(f"Still over the budget after it: {human_size(plan['kept_bytes'])} are pinned or in use.")
    return "\n".join([head, "", *lines, *([""] + tail if tail else [])])


class Actions:
    def __init__(self, cfg: Config, link: Services, notifier: Notifier, children: Children, *,
                 state: Callable[[], TrayState], post: Callable[..., None], refresh_storage: Callable[[], None],
                 spawn: Callable[[str, Callable[[], None]], None], stopping: threading.Event,
                 config_arg: str | None) -> None:
        self.cfg = cfg
        self.link = link
        self.notifier = notifier
        self.children = children
        self.state = state
        self.post = post
        self.refresh_storage = refresh_storage
        self.spawn = spawn
        self.stopping = stopping
        self.config_arg = config_arg
        self.queue = Dispatcher()  # the slow actions, one at a time on `tray-action`

    def start(self) -> None:
        self.queue.use_thread("tray-action")

    def close(self) -> None:
        self.queue.close()

    # -- menu items (main thread: post or hand off, never block) -------------------------------------------
    def generate(self) -> None:
        if self.children.popup_open():
            log.info("the prompt popup is already open")
            return
        try:
            self.children.open_popup(self._popup_queued, self._popup_failed, self.spawn)
        except OSError as exc:
            log.error("cannot open the prompt popup: %s", exc)
            self.notifier.send("Cannot open the prompt window", str(exc))

    def _popup_queued(self, line: str) -> None:
        log.info("popup queued: %s", line)
        self.post(**self.link.snapshot())

    def _popup_failed(self, reason: str) -> None:
        log.warning("prompt window: %s", reason)
        self.notifier.send("Cannot open the prompt window", reason)

    def cancel(self) -> None:
        job = self.state().job
        if job is not None:
            def work() -> None:
                self.link.cancel(job.id)
                self.post(**self.link.snapshot())

            self._act("cancel the job", work)

    def open(self, path: Path, create: bool = False) -> None:
        def work() -> None:
            if create:
                path.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                raise OSError(f"{path} does not exist yet")
            open_path(path)

        self._act(f"open {path}", work)

    def open_library(self) -> None:
        """The library page in the browser: its own process, started on demand or reused (no web stack here)."""
        def work() -> None:
            from vidtray.web.launch import open_library_page

            open_library_page(self.cfg, self.config_arg)

        self._act("open the library page", work)

    def settings(self) -> None:
        def work() -> None:
            path = config_path(self.config_arg)
            if not path.exists():
                from vidtray.services.fsutil import atomic_write_text

                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, config_template())
            open_path(path)

        self._act("open the settings", work)

    def open_log(self) -> None:
        from vidtray.logs import log_file

        self.open(log_file())

    def pause_watching(self) -> None:
        paused = not self.state().watching_paused

        def work() -> None:
            self.link.set_watching_paused(paused)
            self.post(watching_paused=paused)

        self._act("pause watching" if paused else "resume watching", work)

    def pause_queue(self) -> None:
        """Pause or resume the queue (the user's pause: a running job finishes; the low-disk pause stays)."""
        paused = not self.state().queue_user_paused

        def work() -> None:
            self.link.set_queue_paused(paused)
            self.post(**self.link.snapshot())

        self._act("pause the queue" if paused else "resume the queue", work)

    def autostart(self) -> None:
        enable = not self.state().autostart

        def work() -> None:
            from vidtray.services import autostart

            st = autostart.enable() if enable else autostart.disable()
            log.info("start on login: %s", st.detail)
            self.post(autostart=st.enabled)

        self._act("change start on login", work)

    def delete_videos(self) -> None:
        self._act("delete videos", lambda: self._delete_videos(None))

    def delete_older(self) -> None:
        def work() -> None:
            default = self.cfg.prune_after_days or 30
            answer = self.children.dialog("days", "Delete generated videos older than how many days?\n"
                                                  "Pinned and scheduled videos are kept.", "Next", default)
            if answer is not None:
                self._delete_videos(float(answer))

        self._act("delete old videos", work)

    def delete_model(self, repo: str, size: int) -> None:
        def work() -> None:
            message = f"Delete {repo} ({human_size(size)}) from the model cache?\n" \
                      "It downloads again the next time it is used."
            if self.children.dialog("confirm", message, "Delete") is None:
                return
            result = json.loads(self.children.run_cli(["clean", "model", repo, "--yes", "--json"]))
            self.notifier.send("Model deleted", f"{repo}: {human_size(result['freed_bytes'])} freed")
            self.refresh_storage()

        self._act(f"delete {repo}", work)

    def free_space(self) -> None:
        self._act("free space", self._free_space)

    # -- on tray-action ------------------------------------------------------------------------------------
    def _free_space(self) -> None:
        # The plan comes from a `vidtray clean --to-budget` child (models go through huggingface_hub, which the
        # tray never imports); the answer names the plan's id, so exactly the plan shown is carried out (a
        # plan that changed meanwhile is refused, and nothing goes).
        plan = json.loads(self.children.run_cli(["clean", "--to-budget", "--dry-run", "--json"], read_only=True))
        if not plan["items"]:
            self.notifier.send("Nothing to free", f"Under the storage budget: {human_size(plan['used_bytes'])} of "
                                                  f"{human_size(plan['budget_bytes'])} used.")
            return
        if self.children.dialog("confirm", free_space_question(plan), "Free space") is None:
            log.info("free space: not confirmed")
            return
        done = json.loads(self.children.run_cli(["clean", "--to-budget", "--yes", "--json",
                                                 "--plan-id", plan["plan_id"]]))["result"]
        body = f"Freed {human_size(done['freed_bytes'])} of the budget"
        if done["trashed_bytes"]:
            body += f"; videos are in the trash: {human_size(done['trashed_bytes'])} frees when it is emptied"
        if done["skipped"]:
            body += f"; {plural(len(done['skipped']), 'item')} changed since you confirmed, left alone"
        self.notifier.send("Space freed", body)
        self.refresh_storage()

    def _delete_videos(self, older_than: float | None) -> None:
        # In this process, not through `vidtray clean` children: the dialog asks about one plan and
        # exactly that plan is executed, so a video that arrives while the dialog is open stays.
        # (storage and library import no huggingface_hub or torch.)
        from vidtray.services import storage
        from vidtray.services.library import open_library

        lib = open_library(self.cfg)
        plan = storage.plan_clean(self.cfg, lib, older_than_days=older_than, now=time.time())
        count = len(plan.videos)
        scope = "" if older_than is None else f" older than {older_than:g} days"
        if not count:
            self.notifier.send("Nothing to delete", f"No generated videos{scope} to delete.")
            return
        where = "to the trash" if self.cfg.prune_to_trash else "for good (prune_to_trash is off)"
        pinned = sum(1 for k in plan.kept if k["reason"].startswith("pinned"))
        kept = f"\n{plural(pinned, 'pinned or scheduled video')} kept." if pinned else ""
        if len(plan.kept) > pinned:
            kept += f"\n{plural(len(plan.kept) - pinned, 'video')} new to the library kept."
        message = f"Delete {plural(count, 'generated video')}{scope} " \
                  f"({human_size(plan.freed_bytes)}) {where}?{kept}"
        if self.children.dialog("confirm", message, "Delete") is None:
            log.info("delete videos: not confirmed")
            return
        result = storage.execute_clean(lib, plan, to_trash=self.cfg.prune_to_trash,
                                       trash_record=self.cfg.paths.trash_record_file)
        if result.trashed_bytes:  # the trash is on the same disk: nothing is freed until it is emptied
            body = f"{plural(len(result.deleted), 'video')}, {human_size(result.freed_bytes)} moved to the trash " \
                   "(frees when the trash is emptied)"
        else:
            body = f"{plural(len(result.deleted), 'video')}, {human_size(result.freed_bytes)} freed"
        if result.skipped:
            body += f"; {plural(len(result.skipped), 'file')} changed since you confirmed, left alone"
        self.notifier.send("Videos deleted", body)
        self.refresh_storage()

    def _act(self, what: str, work: Callable[[], None]) -> None:
        """Main thread: run a slow action on ``tray-action``, after the ones before it."""
        self.queue.post(lambda: self._guard(what, work))

    def _guard(self, what: str, work: Callable[[], None]) -> None:
        """Run an action; a failure is logged and shown, never raised into pystray."""
        try:
            work()
        except Exception as exc:
            if self.stopping.is_set():
                log.info("%s: stopped by the quit (%s)", what, exc)
                return
            log.warning("could not %s: %s", what, exc, exc_info=True)
            self.notifier.send(f"Could not {what}", str(exc))
