"""Desktop notifications behind a small interface: one ``Notifier``, one method per kind.

Which thread calls it: any. The watcher, the scheduler and the supervisor all notify from their
own threads; a send is one short subprocess or D-Bus call and holds a lock only for the
"has it failed before" bookkeeping.

The backend is plyer's, chosen the way plyer chooses on Linux (``/app`` present -> Flatpak
portal; dbus-python importable -> D-Bus; else ``notify-send`` from libnotify-bin). One deviation:
for ``notify-send`` we run the command ourselves, because plyer's version ignores its exit status
(a missing daemon would go unnoticed) and has no timeout. Backend failures are logged once (then
at debug level until a send works again) and never raised: a notification is a courtesy, and
no scheduled job or watcher may die because the desktop has no daemon.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vidtray.services.desktop_entry import APP_ID
from vidtray.services.fsutil import gib, human_size, plural

if TYPE_CHECKING:
    from vidtray.config import Config

log = logging.getLogger("vidtray.notify")

APP_NAME = "vidtray"
# The freedesktop ``desktop-entry`` hint: the desktop maps the notification to the application entry
# (its name and icon in the notification settings and history), see vidtray.services.desktop_entry.
HINTS = {"desktop-entry": APP_ID}
# The freedesktop "urgency" hint, a byte (what notify-send's --urgency sends).
URGENCY_LEVELS = {"low": 0, "normal": 1, "critical": 2}
# How long a normal notification stays on screen; critical ones stay until the server decides.
TIMEOUT_S = 10
SEND_TIMEOUT_S = 10.0
PROMPT_CHARS = 80
REASON_CHARS = 300
PLAN_CHARS = 600


class NotifyError(Exception):
    """A backend could not deliver (no bus, no daemon, tool missing)."""


class Backend(Protocol):
    name: str

    def send(self, title: str, body: str, urgency: str) -> None:
        """Deliver or raise NotifyError (or anything else: the Notifier catches it)."""


@dataclass
class NotifySendBackend:
    """``notify-send`` (libnotify-bin): what plyer uses on Linux without dbus-python."""

    executable: str
    icon: str = ""
    name: str = "notify-send"

    def send(self, title: str, body: str, urgency: str) -> None:
        argv = [self.executable, "-a", APP_NAME, "-u", urgency]
        if urgency != "critical":
            argv += ["-t", str(TIMEOUT_S * 1000)]
        if self.icon:
            argv += ["-i", self.icon]
        argv += [f"--hint=string:desktop-entry:{APP_ID}"]
        # "--" so a title that starts with "-" is not read as an option.
        argv += ["--", title, body]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=SEND_TIMEOUT_S,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise NotifyError(f"notify-send did not return within {SEND_TIMEOUT_S:g}s") from None
        except OSError as exc:
            raise NotifyError(f"notify-send could not run: {exc}") from None
        if out.returncode != 0:
            detail = (out.stderr or out.stdout).strip().splitlines()
            raise NotifyError(detail[-1] if detail else f"notify-send exited with {out.returncode}")


class PlyerNotification(Protocol):
    """plyer's ``Notification`` facade, as far as vidtray calls it (plyer has no type information)."""

    def notify(self, *, title: str, message: str, app_name: str, app_icon: str, timeout: int,
               hints: dict[str, object]) -> object: ...


@dataclass
class PlyerBackend:
    """A plyer notification implementation (D-Bus, Flatpak portal, Windows, macOS)."""

    name: str
    impl: PlyerNotification
    icon: str = ""
    escape: Callable[[str], str] | None = None
    # The urgency as the backend's hint value, where it has hints (plyer's D-Bus one); None: not sent.
    urgency_hint: Callable[[str], object] | None = None

    def send(self, title: str, body: str, urgency: str) -> None:
        if self.escape is not None:
            title, body = self.escape(title), self.escape(body)
        hints: dict[str, object] = dict(HINTS)
        if self.urgency_hint is not None:
            hints["urgency"] = self.urgency_hint(urgency)
        # Only the D-Bus implementation sends hints; the others take and ignore them.
        self.impl.notify(title=title, message=body, app_name=APP_NAME, app_icon=self.icon,
                         timeout=TIMEOUT_S, hints=hints)


@dataclass
class NullBackend:
    """Nothing can deliver on this system; every send fails with the reason."""

    reason: str
    name: str = "none"

    def send(self, title: str, body: str, urgency: str) -> None:
        raise NotifyError(self.reason)


def _dbus_urgency(urgency: str) -> object:
    """The urgency hint for dbus-python: the spec's type is a byte (a plain int would go as int32)."""
    import dbus

    return dbus.Byte(URGENCY_LEVELS.get(urgency, URGENCY_LEVELS["normal"]))


def _gvariant_escape(text: str) -> str:
    # plyer's portal backend pastes the text into a GVariant literal between single quotes.
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _icon() -> str:
    try:
        from vidtray.icons import icon_path

        return str(icon_path("idle", "ico" if sys.platform == "win32" else "png"))
    except Exception:  # an icon is decoration; never fail a notification over it
        return ""


def select_backend() -> Backend:
    """The backend plyer would use on this system (chosen once per Notifier)."""
    icon = _icon()
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        from plyer.platforms.linux import notification as linux_notification

        if os.path.isdir("/app"):
            return PlyerBackend("flatpak-portal", linux_notification.NotifyDesktopPortals(), icon,
                                escape=_gvariant_escape)
        try:
            import dbus  # noqa: F401
        except ImportError:
            pass
        else:
            return PlyerBackend("dbus-python", linux_notification.NotifyDbus(), icon, urgency_hint=_dbus_urgency)
        exe = shutil.which("notify-send")
        if exe:
            return NotifySendBackend(exe, icon)
        return NullBackend("neither dbus-python nor notify-send (Debian/Ubuntu: libnotify-bin) is installed")
    with warnings.catch_warnings():
        # plyer warns (instead of raising) when a platform module is missing.
        warnings.simplefilter("ignore")
        from plyer import notification

        impl = notification
    return PlyerBackend(f"plyer-{sys.platform}", impl, icon)


@dataclass(frozen=True)
class Sent:
    """One notification as the Notifier rendered it."""

    kind: str
    title: str
    body: str
    urgency: str


class Notifier:
    """One method per notification kind; ``send`` for anything else. Never raises."""

    def __init__(self, backend: Backend | None = None, *, enabled: bool = True,
                 select: Callable[[], Backend] = select_backend) -> None:
        # Without a backend, ``select`` runs on first use, so merely building a Notifier (every
        # daemon start, every CLI command that might notify) costs no imports.
        self._select = select
        self._backend: Backend | None = backend
        self.enabled = enabled
        self._lock = threading.Lock()
        self._failing = False

    # -- kinds -------------------------------------------------------------------------------
    def low_disk(self, free_bytes: int, where: str, warn_free_gb: float | None = None) -> bool:
        body = f"{human_size(free_bytes)} free on {where}"
        if warn_free_gb is not None:
            body += f"; vidtray warns below {gib(warn_free_gb)} (warn_free_gb)"
        return self._notify("low_disk", "Low disk space", body)

    def queue_paused(self, reason: str) -> bool:
        return self._notify("queue_paused", "Video generation paused", _clip(reason, REASON_CHARS),
                            urgency="critical")

    def queue_resumed(self, reason: str) -> bool:
        return self._notify("queue_resumed", "Video generation resumed", _clip(reason, REASON_CHARS))

    def prune_summary(self, count: int, freed_bytes: int, *, to_trash: bool = False) -> bool:
        if to_trash:  # the trash is on the same disk: say so rather than "freed"
            body = (f"Pruned {plural(count, 'video')} ({human_size(freed_bytes)}): moved to the trash, "
                    f"{human_size(freed_bytes)} frees when the trash is emptied")
        else:
            body = f"Pruned {plural(count, 'video')}, freed {human_size(freed_bytes)}"
        return self._notify("prune_summary", "Old videos pruned", body)

    def budget_plan(self, headline: str, plan: str) -> bool:
        """What the storage plan would free (``budget_action = "notify"``)."""
        return self._notify("budget_plan", headline, _clip(plan, PLAN_CHARS))

    def budget_applied(self, headline: str, went: str) -> bool:
        """What the storage plan freed (``budget_action = "apply"``)."""
        return self._notify("budget_applied", headline, _clip(went, PLAN_CHARS))

    def trash_emptied(self, files: int, size: int) -> bool:
        body = (f"Emptied {plural(files, 'file')} ({human_size(size)}) that vidtray had moved to the trash "
                "(low_disk_empty_trash); nothing else in the trash was touched")
        return self._notify("trash_emptied", "Trash emptied of vidtray's videos", body)

    def prune_failed(self, reason: str) -> bool:
        return self._notify("prune_failed", "Pruning old videos failed", _clip(reason, REASON_CHARS),
                            urgency="critical")

    def video_ready(self, path: Path, prompt: str) -> bool:
        body = f"{_clip(' '.join(prompt.split()), PROMPT_CHARS)}\n{Path(path).name}"
        return self._notify("video_ready", "Video ready", body)

    def generation_failed(self, reason: str) -> bool:
        return self._notify("generation_failed", "Video generation failed", _clip(reason, REASON_CHARS),
                            urgency="critical")

    def generation_note(self, message: str) -> bool:
        """What the worker did to finish a job ("ran with CPU offload after running out of GPU memory")."""
        return self._notify("generation_note", "Video generation", _clip(message, REASON_CHARS))

    def batch_done(self, done: int, failed: int, cancelled: int = 0, error: str | None = None) -> bool:
        """One notification for a whole batch: "8 videos ready, 1 failed" (and the first failure's reason)."""
        parts = [f"{plural(done, 'video')} ready"]
        if failed:
            parts.append(f"{failed} failed")
        if cancelled:
            parts.append(f"{cancelled} cancelled")
        body = ", ".join(parts)
        if failed and error:
            body += f"\n{_clip(error, REASON_CHARS)}"
        return self._notify("batch_done", "Batch finished", body,
                            urgency="critical" if failed and not done else "normal")

    def queue_corrupt(self, moved_to: Path) -> bool:
        body = (f"The job queue could not be read and was set aside as {Path(moved_to).name}; the queue starts "
                "empty. Finished videos are not affected.")
        return self._notify("queue_corrupt", "Job queue set aside", body, urgency="critical")

    def server_unreachable(self, url: str, reason: str, fallback: str) -> bool:
        """Once per outage of the GPU server: remote jobs wait for it (or run here)."""
        then = "Remote jobs run on this computer until it answers." if fallback == "local" else \
            "Remote jobs wait in the queue until it answers."
        return self._notify("server_unreachable", "GPU server unreachable",
                            f"{url}: {_clip(reason, REASON_CHARS)}. {then}")

    def library_corrupt(self, moved_to: Path) -> bool:
        body = (f"The library file could not be read and was set aside as {Path(moved_to).name}. "
                "It was rebuilt from the videos on disk.")
        return self._notify("library_corrupt", "Library file set aside", body, urgency="critical")

    def send(self, title: str, body: str = "") -> bool:
        return self._notify("message", title, body)

    # -- delivery ----------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        with self._lock:
            if self._backend is None:
                try:
                    self._backend = self._select()
                except Exception as exc:  # a broken plyer install must not take the caller down
                    log.warning("no notification backend: %s", exc, exc_info=True)
                    self._backend = NullBackend(f"backend selection failed: {exc}")
            assert self._backend is not None
            return self._backend

    def _notify(self, kind: str, title: str, body: str, urgency: str = "normal") -> bool:
        """Deliver one notification; True if the backend took it. Failures are logged, not raised."""
        # The spec asks for a summary; an empty one shows as a blank bubble.
        note = Sent(kind, title.strip() or APP_NAME, body, urgency)
        if not self.enabled:
            log.debug("notifications off; not sent: %s: %s", note.title, note.body)
            return False
        try:
            self._deliver(note)
        except Exception as exc:  # the boundary: no caller may fail because the desktop did
            self._failed(exc)
            return False
        self._worked(note)
        return True

    def _deliver(self, note: Sent) -> None:
        self.backend.send(note.title, note.body, note.urgency)

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            first = not self._failing
            self._failing = True
        name = self._backend.name if self._backend is not None else "?"
        if first:
            log.warning("desktop notifications are not getting through (%s: %s); "
                        "further failures are logged at debug level", name, exc)
        else:
            log.debug("notification not delivered (%s: %s)", name, exc)

    def _worked(self, note: Sent) -> None:
        with self._lock:
            recovered = self._failing
            self._failing = False
        if recovered:
            log.info("desktop notifications get through again")
        log.debug("notified: %s: %s", note.title, note.body)


class RecordingNotifier(Notifier):
    """The fake at the notification boundary: renders exactly like the real one, records instead."""

    def __init__(self, *, enabled: bool = True) -> None:
        super().__init__(NullBackend("recording"), enabled=enabled)
        self.sent: list[Sent] = []

    def _deliver(self, note: Sent) -> None:
        self.sent.append(note)

    def kinds(self) -> list[str]:
        return [n.kind for n in self.sent]

    def of_kind(self, kind: str) -> list[Sent]:
        return [n for n in self.sent if n.kind == kind]

    def clear(self) -> None:
        self.sent.clear()


def make_notifier(cfg: Config) -> Notifier:
    return Notifier(enabled=cfg.notifications)


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# -- doctor ------------------------------------------------------------------------------------


def describe_backend(cfg: Config | None = None) -> dict[str, Any]:
    """For ``vidtray doctor``: the backend a Notifier would use and whether a daemon answers.

    ``daemon.reached`` is True/False on freedesktop systems (asked with
    ``org.freedesktop.Notifications.GetServerInformation`` on the session bus, the same call
    path notify-send takes), None where there is no such check (Windows, macOS, Flatpak portal).
    """
    try:
        backend: Backend = select_backend()
    except Exception as exc:
        backend = NullBackend(f"backend selection failed: {exc}")
    doc: dict[str, Any] = {
        "backend": backend.name,
        "app_name": APP_NAME,
        "desktop_entry": APP_ID,
        "enabled": cfg.notifications if cfg is not None else None,
    }
    if isinstance(backend, NullBackend):
        doc["problem"] = backend.reason
    # Only freedesktop backends talk to org.freedesktop.Notifications (the "none" case still asks,
    # so doctor can say whether a daemon would be there once libnotify-bin is installed).
    if backend.name in ("dbus-python", "notify-send", "none") and sys.platform not in ("win32", "darwin"):
        doc["daemon"] = query_notification_daemon()
    else:
        doc["daemon"] = {"reached": None, "detail": "not checked for this backend"}
    return doc


def backend_summary(doc: dict[str, Any]) -> str:
    """One line for ``vidtray doctor`` from ``describe_backend()``'s document."""
    if doc.get("enabled") is False:
        return f"notifications: off (notifications = false; backend would be {doc['backend']})"
    if doc.get("problem"):
        return f"notifications: NONE ({doc['problem']})"
    daemon = doc.get("daemon", {})
    if daemon.get("reached") is True:
        server = " ".join(str(daemon[k]) for k in ("name", "version") if daemon.get(k))
        return f"notifications: {doc['backend']} -> {server or 'a notification daemon'}"
    if daemon.get("reached") is False:
        return f"notifications: {doc['backend']}, but no notification daemon answered ({daemon.get('detail')})"
    return f"notifications: {doc['backend']} (delivery not checked on this platform)"


def query_notification_daemon(timeout: float = 5.0) -> dict[str, Any]:
    """Ask the session bus's notification server who it is (gdbus, else dbus-send)."""
    dest, obj, method = ("org.freedesktop.Notifications", "/org/freedesktop/Notifications",
                         "org.freedesktop.Notifications.GetServerInformation")
    if shutil.which("gdbus"):
        argv = ["gdbus", "call", "--session", "--dest", dest, "--object-path", obj, "--method", method]
    elif shutil.which("dbus-send"):
        argv = ["dbus-send", "--session", "--print-reply", f"--dest={dest}", obj, method]
    else:
        return {"reached": False, "detail": "neither gdbus nor dbus-send is installed to ask the session bus"}
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"reached": False, "detail": f"no answer on the session bus within {timeout:g}s"}
    except OSError as exc:
        return {"reached": False, "detail": f"{argv[0]} could not run: {exc}"}
    if out.returncode != 0:
        lines = (out.stderr or out.stdout).strip().splitlines()
        return {"reached": False, "detail": lines[-1] if lines else f"{argv[0]} exited {out.returncode}"}
    import re

    strings = re.findall(r"'((?:[^'\\]|\\.)*)'", out.stdout) or re.findall(r'string "([^"]*)"', out.stdout)
    info: dict[str, Any] = {"reached": True}
    for key, value in zip(("name", "vendor", "version", "spec_version"), strings, strict=False):
        info[key] = value
    return info
