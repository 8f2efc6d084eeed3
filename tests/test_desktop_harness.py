"""The desktop harness itself: a notification sent with notify-send reaches dunst, and without
a daemon the private bus really has none (no auto-activation from the system's service files)."""

from __future__ import annotations

import pytest
from desktop import Desktop, parse_dunst_block


@pytest.mark.gui
def test_notify_send_reaches_dunst(desktop: Desktop) -> None:
    out = desktop.run(["notify-send", "-a", "harness", "Hello 'there'", "line one\nline two"])
    assert out.returncode == 0, out.stderr
    note = desktop.dunst.wait_for("Hello 'there'")
    assert note.appname == "harness"
    assert note.body == "line one\nline two"
    # Each arrival counts, even a duplicate of one still on screen.
    desktop.run(["notify-send", "-a", "harness", "Hello 'there'", "line one\nline two"])
    desktop.dunst.wait_for("Hello 'there'", after=1)
    assert desktop.dunst.count("Hello 'there'") == 2


@pytest.mark.gui
def test_bus_without_daemon_has_none(desktop_no_daemon: Desktop) -> None:
    out = desktop_no_daemon.run(["notify-send", "x", "y"], timeout=15)
    assert out.returncode != 0
    assert "org.freedesktop.Notifications" in out.stderr


def test_parse_multiline_block() -> None:
    note = parse_dunst_block(["\tappname: 'a'", "\tsummary: 'S'", "\tbody: 'b1", "b2'",
                              "\turgency: CRITICAL", "\ttimeout: 10000"])
    assert (note.appname, note.summary, note.body, note.urgency, note.timeout) == ("a", "S", "b1\nb2",
                                                                                 "CRITICAL", 10000)
