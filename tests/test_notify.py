"""Notifications: every kind reaches a real daemon (dunst on a private bus) with the right text;
no daemon means logged once and never raised; ``notifications = false`` silences them."""

from __future__ import annotations

import importlib.machinery
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from desktop import Desktop, skip_or_fail

from vidtray.config import Config
from vidtray.services import notify
from vidtray.services.desktop_entry import APP_ID
from vidtray.services.notify import Notifier, RecordingNotifier, describe_backend, make_notifier

GiB = 1024**3
MiB = 1024**2

# (method call, summary, body) for every kind the contract names.
KINDS = [
    (lambda n: n.low_disk(int(0.8 * GiB), "/home (videos)", 5.0), "Low disk space",
     "819.2 MiB free on /home (videos); vidtray warns below 5 GiB (warn_free_gb)"),
    (lambda n: n.queue_paused("Only 0.4 GiB free on /data; below min_free_gb = 1"), "Video generation paused",
     "Only 0.4 GiB free on /data; below min_free_gb = 1"),
    (lambda n: n.prune_summary(12, 84 * MiB), "Old videos pruned", "Pruned 12 videos, freed 84.0 MiB"),
    (lambda n: n.prune_summary(2, 3 * MiB, to_trash=True), "Old videos pruned",
     "Pruned 2 videos (3.0 MiB): moved to the trash, 3.0 MiB frees when the trash is emptied"),
    (lambda n: n.budget_plan("Storage 1.0 GiB over the budget (40 GiB)", "video a.mp4 (1.0 GiB)\nTotal 1.0 GiB."),
     "Storage 1.0 GiB over the budget (40 GiB)", "video a.mp4 (1.0 GiB)\nTotal 1.0 GiB."),
    (lambda n: n.budget_applied("Storage 1.0 GiB over the budget (40 GiB)", "Freed 3.5 GiB: model org/m"),
     "Storage 1.0 GiB over the budget (40 GiB)", "Freed 3.5 GiB: model org/m"),
    (lambda n: n.trash_emptied(3, 2 * MiB), "Trash emptied of vidtray's videos",
     "Emptied 3 files (2.0 MiB) that vidtray had moved to the trash (low_disk_empty_trash); nothing else in the "
     "trash was touched"),
    (lambda n: n.video_ready(Path("/v/zeroscope_20240101-120000_abcd1234.mp4"),
                             "a red fox   running through snow, cinematic, 4k"),
     "Video ready", "a red fox running through snow, cinematic, 4k\nzeroscope_20240101-120000_abcd1234.mp4"),
    (lambda n: n.generation_failed("CUDA out of memory (tried 2.1 GiB)"), "Video generation failed",
     "CUDA out of memory (tried 2.1 GiB)"),
    (lambda n: n.library_corrupt(Path("/d/library.json.corrupt-20240101-120000")), "Library file set aside",
     "The library file could not be read and was set aside as library.json.corrupt-20240101-120000. "
     "It was rebuilt from the videos on disk."),
    (lambda n: n.server_unreachable("https://gpu-box:8443", "connection refused", "wait"), "GPU server unreachable",
     "https://gpu-box:8443: connection refused. Remote jobs wait in the queue until it answers."),
    (lambda n: n.queue_resumed("2.3 GiB free again"), "Video generation resumed", "2.3 GiB free again"),
    (lambda n: n.prune_failed("the trash is not available"), "Pruning old videos failed",
     "the trash is not available"),
    (lambda n: n.send("-starts with a dash", "it's <b>plain</b> text"), "-starts with a dash",
     "it's <b>plain</b> text"),
]


@pytest.mark.gui
def test_every_kind_reaches_the_daemon(desktop: Desktop) -> None:
    notifier = make_notifier(Config.from_mapping({}, "<test>"))
    assert notifier.backend.name == "notify-send"  # what plyer picks here (no dbus-python, no /app)
    for n, (call, summary, body) in enumerate(KINDS):
        assert call(notifier) is True
        note = desktop.dunst.wait_for(summary, after=n)  # summaries repeat: each kind sends exactly one
        assert note.body == body
        assert note.appname == "vidtray"
        # The desktop maps it to the application entry (name and icon in its notification settings).
        assert note.fields["desktop_entry"] == APP_ID
    urgencies = {n.summary: n.urgency for n in desktop.dunst.notifications}
    assert urgencies["Video generation failed"] == "CRITICAL"
    assert urgencies["Video ready"] == "NORMAL"
    assert len(desktop.dunst.notifications) == len(KINDS)


def dbus_python_shim(folder: Path) -> Path:
    """Debian's dbus-python (python3-dbus) made importable here, alone: links to the package and its
    extension module, which must be built for this Python (the same ABI tag)."""
    dist = Path("/usr/lib/python3/dist-packages")
    ext = [p for p in dist.glob("_dbus_bindings.*")
           if any(p.name.endswith(suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES)]
    if not (dist / "dbus" / "__init__.py").is_file() or not ext:
        skip_or_fail(f"needs Debian's python3-dbus built for Python {sys.version_info.major}.{sys.version_info.minor} "
                     "(.ci/run installs it)")
    folder.mkdir()
    (folder / "dbus").symlink_to(dist / "dbus")
    (folder / ext[0].name).symlink_to(ext[0])
    return folder


@pytest.mark.gui
def test_urgency_reaches_the_daemon_through_dbus_python(desktop: Desktop, tmp_path: Path) -> None:
    # Where dbus-python is importable (a venv that sees the system's packages) plyer's D-Bus backend is
    # used; the urgency goes as the spec's hint there, as notify-send's --urgency does.
    shim = dbus_python_shim(tmp_path / "dbus-python")
    code = ("from pathlib import Path\n"
            "from vidtray.services.notify import Notifier\n"
            "n = Notifier()\n"
            "assert n.backend.name == 'dbus-python', n.backend.name\n"
            "assert n.generation_failed('boom') and n.video_ready(Path('/v/a.mp4'), 'a fox')\n")
    res = subprocess.run([sys.executable, "-c", code], env={**desktop.env, "PYTHONPATH": f"{ROOT}{os.pathsep}{shim}"},
                         capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    failed = desktop.dunst.wait_for("Video generation failed")
    ready = desktop.dunst.wait_for("Video ready")
    assert (failed.urgency, ready.urgency) == ("CRITICAL", "NORMAL")
    assert failed.appname == "vidtray" and failed.fields["desktop_entry"] == APP_ID


@pytest.mark.gui
def test_notifications_off_sends_nothing(desktop: Desktop) -> None:
    off = make_notifier(Config.from_mapping({"notifications": False}, "<test>"))
    assert off.low_disk(GiB, "/") is False
    assert off.send("should not arrive", "x") is False
    # A sentinel through an enabled notifier: once it is there, anything sent before would be too.
    Notifier().send("sentinel", "")
    desktop.dunst.wait_for("sentinel")
    assert [n.summary for n in desktop.dunst.notifications] == ["sentinel"]


@pytest.mark.gui
def test_no_daemon_is_logged_once_and_never_raised(desktop_no_daemon: Desktop,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vidtray.notify")
    notifier = Notifier()
    assert notifier.low_disk(GiB, "/") is False
    assert notifier.video_ready(Path("/v/a.mp4"), "p") is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "org.freedesktop.Notifications" in warnings[0].getMessage()
    assert any(r.levelno == logging.DEBUG and "not delivered" in r.getMessage() for r in caplog.records)

    # A daemon that turns up later is used, and the recovery is logged.
    dunst = desktop_no_daemon.start_dunst()
    assert notifier.send("back", "again") is True
    assert dunst.wait_for("back").body == "again"
    assert any("get through again" in r.getMessage() for r in caplog.records)


def test_no_session_bus_at_all_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Headless server: no bus address, no display (autolaunch impossible).
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", os.environ["HOME"])  # no "bus" socket there
    notifier = Notifier()
    assert notifier.generation_failed("boom") is False
    doc = describe_backend(Config.from_mapping({}, "<test>"))
    assert doc["daemon"]["reached"] is False
    assert doc["daemon"]["detail"]


def test_backend_that_raises_anything_is_contained() -> None:
    class Exploding:
        name = "exploding"

        def send(self, title: str, body: str, urgency: str) -> None:
            raise RuntimeError("plyer blew up")

    assert Notifier(Exploding()).send("t", "b") is False


def test_backend_selection_failure_is_contained() -> None:
    def broken() -> notify.Backend:
        raise ImportError("no plyer")

    notifier = Notifier(select=broken)
    assert notifier.send("t") is False
    assert notifier.backend.name == "none"


@pytest.mark.gui
def test_describe_backend_reaches_dunst(desktop: Desktop) -> None:
    doc = describe_backend(Config.from_mapping({}, "<test>"))
    assert doc["backend"] == "notify-send"
    assert doc["app_name"] == "vidtray"
    assert doc["enabled"] is True
    assert doc["daemon"]["reached"] is True
    assert doc["daemon"]["name"] == "dunst"
    assert doc["daemon"]["spec_version"]
    assert notify.backend_summary(doc).startswith("notifications: notify-send -> dunst 1.")


@pytest.mark.gui
def test_describe_backend_without_daemon(desktop_no_daemon: Desktop) -> None:
    doc = describe_backend()
    assert doc["daemon"]["reached"] is False
    assert "org.freedesktop.Notifications" in doc["daemon"]["detail"]
    assert "no notification daemon answered" in notify.backend_summary(doc)
    off = describe_backend(Config.from_mapping({"notifications": False}, "<test>"))
    assert notify.backend_summary(off).startswith("notifications: off")


def test_recording_notifier_renders_like_the_real_one() -> None:
    rec = RecordingNotifier()
    for call, _, _ in KINDS:
        call(rec)
    assert [(n.title, n.body) for n in rec.sent] == [(s, b) for _, s, b in KINDS]
    assert rec.kinds()[:3] == ["low_disk", "queue_paused", "prune_summary"]
    off = RecordingNotifier(enabled=False)
    off.prune_summary(1, 1)
    assert off.sent == []


def test_singular_and_long_texts_are_clipped() -> None:
    rec = RecordingNotifier()
    rec.prune_summary(1, 2048)
    rec.video_ready(Path("/v/x.mp4"), "word " * 100)
    rec.generation_failed("e" * 1000)
    assert rec.sent[0].body == "Pruned 1 video, freed 2.0 KiB"
    first_line = rec.sent[1].body.splitlines()[0]
    assert len(first_line) <= notify.PROMPT_CHARS and first_line.endswith("…")
    assert len(rec.sent[2].body) == notify.REASON_CHARS


def test_flatpak_is_detected_by_app_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda p: p == "/app" or real_isdir(p))
    backend = notify.select_backend()
    assert backend.name == "flatpak-portal"
    # plyer pastes the text into a GVariant literal; quotes must be escaped for it.
    assert notify._gvariant_escape("it's a \\ test") == "it\\'s a \\\\ test"
