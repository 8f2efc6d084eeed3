"""A throw-away desktop for GUI tests: Xvfb, a private D-Bus session bus and ``dunst -print``.

Real parts only. Each piece is a child process of the test run, started on its own free
resource (Xvfb picks a free display through ``-displayfd``; the bus listens in a temp folder)
and torn down at the end, so parallel test runs and other people's sessions on the same box
never see each other.

The private bus uses its own config with an empty service folder: the system's
``org.knopwob.dunst.service`` (and anything else) cannot be auto-activated, so "no daemon"
really means no daemon, and the test decides when a notification daemon runs.

Use from a test module (the fixtures are registered in ``tests/conftest.py``)::

    @pytest.mark.gui
    def test_x(desktop: Desktop) -> None:          # Xvfb + bus + dunst, env vars set
        subprocess.run(["notify-send", "Hi", "there"], env=desktop.env, check=True)
        note = desktop.dunst.wait_for("Hi")
        assert note.body == "there"

``xdisplay`` (session-wide Xvfb), ``desktop_no_daemon`` (a bus without a notification daemon) and
``desktop`` (both plus dunst; DISPLAY and DBUS_SESSION_BUS_ADDRESS monkeypatched into
``os.environ``) are the fixtures. ``Desktop.spawn`` starts more children (a tray host, say)
that are stopped with the rest.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

GUI_BINARIES = ("Xvfb", "dbus-daemon", "dunst", "notify-send", "gdbus")

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={folder}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{services}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

# Every notification printed and kept apart: stacking would merge a repeated notification into
# the one on screen, and a test that counts arrivals must see each one.
_DUNSTRC = """[global]
    stack_duplicates = false
    hide_duplicate_count = true
    show_indicators = false
    sticky_history = false
    history_length = 0
    idle_threshold = 0
    follow = none
    markup = no

[urgency_low]
    timeout = 2
[urgency_normal]
    timeout = 2
[urgency_critical]
    timeout = 2
"""


def missing_binaries(names: Sequence[str] = GUI_BINARIES) -> list[str]:
    return [name for name in names if shutil.which(name) is None]


def skip_without(names: Sequence[str] = GUI_BINARIES,
                 packages: str = "xvfb dbus dunst libnotify-bin libglib2.0-bin") -> None:
    """Skip (with the names and the Debian packages) only when a binary is really absent.

    Under CI (``CI`` set, as .ci/run's caller does) a missing binary is a failure: .ci/run installs
    them, so a skip there would hide a broken install step.
    """
    missing = missing_binaries(names)
    if missing:
        skip_or_fail(f"desktop test needs {', '.join(missing)} (Debian: {packages}; .ci/run installs them)")


def skip_or_fail(why: str) -> None:
    """Skip on a developer's machine; fail under CI, where .ci/run provides everything."""
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def validate_desktop_file(path: Path) -> None:
    """``desktop-file-validate`` (Debian's desktop-file-utils) finds no error or warning in ``path``."""
    skip_without(("desktop-file-validate",), packages="desktop-file-utils")
    out = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True, timeout=30)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if "hint:" not in line]
    assert out.returncode == 0 and not problems, f"{path}:\n{out.stdout}{out.stderr}\n{path.read_text()}"


def _stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL; always reaps so no zombie or open pipe is left behind."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


# -- Xvfb ---------------------------------------------------------------------------------------


@dataclass
class XDisplay:
    """An Xvfb server on a display number the server chose itself (``-displayfd``)."""

    name: str  # ":N"
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        _stop(self.proc)


def start_xvfb(size: str = "1280x800x24", timeout: float = 15.0) -> XDisplay:
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp", "-screen", "0", size, "-noreset"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        number = _read_line_fd(read_fd, timeout)
    finally:
        os.close(read_fd)
    if not number.strip().isdigit():
        err = b""
        _stop(proc)
        if proc.stderr is not None:
            with contextlib.suppress(OSError, ValueError):
                err = proc.stderr.read() or b""
        raise RuntimeError(f"Xvfb did not report a display: {err.decode(errors='replace')[-500:]}")
    # Nobody reads Xvfb's stderr from here on; close our end so a chatty server cannot block.
    if proc.stderr is not None:
        proc.stderr.close()
        proc.stderr = None
    return XDisplay(f":{number.strip()}", proc)


def _read_line_fd(fd: int, timeout: float) -> str:
    import select

    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


# -- private session bus --------------------------------------------------------------------------


@dataclass
class SessionBus:
    address: str
    proc: subprocess.Popen[str]
    folder: Path

    def stop(self) -> None:
        _stop(self.proc)


def start_session_bus(folder: Path, timeout: float = 15.0) -> SessionBus:
    folder.mkdir(parents=True, exist_ok=True)
    services = folder / "services"
    services.mkdir(exist_ok=True)
    conf = folder / "bus.conf"
    conf.write_text(_BUS_CONFIG.format(folder=folder, services=services), encoding="utf-8")
    proc = subprocess.Popen(
        ["dbus-daemon", f"--config-file={conf}", "--print-address=1", "--nofork"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    line = _readline_with_timeout(proc.stdout, timeout)
    if not line.startswith("unix:"):
        _stop(proc)
        raise RuntimeError(f"dbus-daemon did not print an address (got {line!r})")
    return SessionBus(line.strip(), proc, folder)


def _readline_with_timeout(stream, timeout: float) -> str:  # type: ignore[no-untyped-def]
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


# -- dunst -print -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """One notification as ``dunst -print`` reported it."""

    appname: str
    summary: str
    body: str
    urgency: str
    timeout: int | None
    fields: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


_FIELD = re.compile(r"^\t([a-z_ ]+): ?(.*)$")


def parse_dunst_block(lines: Sequence[str]) -> Notification:
    """Parse the ``{ ... }`` block dunst prints per notification (values may span lines)."""
    fields: dict[str, str] = {}
    key: str | None = None
    for raw in lines:
        m = _FIELD.match(raw)
        if m:
            key = m.group(1)
            fields[key] = m.group(2)
        elif key is not None:
            fields[key] += "\n" + raw
    clean = {k: _unquote(v) for k, v in fields.items()}
    timeout = clean.get("timeout", "")
    return Notification(
        appname=clean.get("appname", ""),
        summary=clean.get("summary", ""),
        body=clean.get("body", ""),
        urgency=clean.get("urgency", ""),
        timeout=int(timeout) if timeout.lstrip("-").isdigit() else None,
        fields=clean,
    )


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == "'" and value[-1] == "'" else value


class Dunst:
    """``dunst -print`` on a given display and bus; a reader thread collects what it prints."""

    def __init__(self, env: Mapping[str, str], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        rc = folder / "dunstrc"
        rc.write_text(_DUNSTRC, encoding="utf-8")
        self._cond = threading.Condition()
        self._seen: list[Notification] = []
        self._raw: list[str] = []
        self.proc = subprocess.Popen(
            ["dunst", "-print", "-config", str(rc)],
            env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            text=True, bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, name="dunst-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        block: list[str] | None = None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._cond:
                self._raw.append(line)
            if line == "{":
                block = []
            elif line == "}" and block is not None:
                note = parse_dunst_block(block)
                block = None
                with self._cond:
                    self._seen.append(note)
                    self._cond.notify_all()
            elif block is not None:
                block.append(line)

    @property
    def notifications(self) -> list[Notification]:
        with self._cond:
            return list(self._seen)

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self._raw)

    def wait_for(self, summary: str | Callable[[Notification], bool], timeout: float = 10.0,
                 *, after: int = 0) -> Notification:
        """The first notification (from index ``after`` on) with this summary (or matching the predicate).

        Raises AssertionError, listing what did arrive, when none comes within ``timeout``.
        """
        match = summary if callable(summary) else (lambda n: n.summary == summary)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for note in self._seen[after:]:
                    if match(note):
                        return note
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    got = [(n.summary, n.body) for n in self._seen]
                    raise AssertionError(f"no notification {summary!r} within {timeout}s; got {got}")
                self._cond.wait(min(left, 0.2))

    def count(self, summary: str) -> int:
        return sum(1 for n in self.notifications if n.summary == summary)

    def stop(self) -> None:
        _stop(self.proc)
        self._reader.join(5)


def wait_for_bus_name(env: Mapping[str, str], name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["gdbus", "call", "--session", "--dest", "org.freedesktop.DBus", "--object-path",
             "/org/freedesktop/DBus", "--method", "org.freedesktop.DBus.NameHasOwner", name],
            env=dict(env), capture_output=True, text=True, timeout=10,
        )
        if out.returncode == 0 and "true" in out.stdout:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} did not appear on the bus within {timeout}s")


# -- the whole desktop -----------------------------------------------------------------------------


class Desktop:
    """A display plus a private bus (and, once ``start_dunst`` ran, a notification daemon)."""

    def __init__(self, display: XDisplay, bus: SessionBus, folder: Path) -> None:
        self.display = display
        self.bus = bus
        self.folder = folder
        self.dunst: Dunst = None  # type: ignore[assignment]  # set by start_dunst
        self._children: list[subprocess.Popen[bytes] | subprocess.Popen[str]] = []
        self.env: dict[str, str] = {
            **os.environ,
            "DISPLAY": display.name,
            "DBUS_SESSION_BUS_ADDRESS": bus.address,
        }
        # No X authority file is involved (Xvfb without -auth); a stale XAUTHORITY from the caller
        # would only produce warnings.
        self.env.pop("XAUTHORITY", None)
        self.env.pop("WAYLAND_DISPLAY", None)

    def start_dunst(self) -> Dunst:
        self.dunst = Dunst(self.env, self.folder / "dunst")
        wait_for_bus_name(self.env, "org.freedesktop.Notifications")
        return self.dunst

    def spawn(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a child in this desktop's environment; it is stopped at teardown (SIGTERM, then KILL)."""
        kwargs.setdefault("env", self.env)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[bytes] = subprocess.Popen(list(argv), **kwargs)  # type: ignore[call-overload]
        self._children.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = 30,
            **kwargs: object) -> subprocess.CompletedProcess[str]:
        """Run a command in this desktop's environment, text output captured."""
        kwargs.setdefault("env", self.env)
        return subprocess.run(  # type: ignore[call-overload]
            list(argv), capture_output=True, text=True, timeout=timeout, **kwargs
        )

    def stop(self) -> None:
        for proc in reversed(self._children):
            _stop(proc)
        self._children.clear()
        if self.dunst is not None:
            self.dunst.stop()
        self.bus.stop()


@contextlib.contextmanager
def desktop_session(display: XDisplay, *, dunst: bool = True,
                    folder: Path | None = None) -> Iterator[Desktop]:
    """A private bus (+ dunst) on ``display``; everything stopped on exit. Usable outside pytest."""
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vtd-")))
        bus = start_session_bus(folder / "bus")
        desk = Desktop(display, bus, folder)
        stack.callback(desk.stop)
        if dunst:
            desk.start_dunst()
        yield desk


# -- pytest fixtures (registered in tests/conftest.py) ---------------------------------------------


@pytest.fixture(scope="session")
def xdisplay() -> Iterator[XDisplay]:
    """One Xvfb for the whole run (starting one per test costs time and gains nothing)."""
    skip_without(("Xvfb",))
    display = start_xvfb()
    try:
        yield display
    finally:
        display.stop()


@pytest.fixture
def desktop_no_daemon(xdisplay: XDisplay, monkeypatch: pytest.MonkeyPatch) -> Iterator[Desktop]:
    """Xvfb + a private session bus with NO notification daemon; env vars point at them."""
    skip_without()
    with desktop_session(xdisplay, dunst=False) as desk:
        _point_env(monkeypatch, desk)
        yield desk


@pytest.fixture
def desktop(xdisplay: XDisplay, monkeypatch: pytest.MonkeyPatch) -> Iterator[Desktop]:
    """Xvfb + a private session bus + ``dunst -print``; env vars point at them."""
    skip_without()
    # The bus socket lives in a short /tmp folder: a unix socket path is limited to ~108 bytes
    # and pytest's tmp paths can be longer.
    with desktop_session(xdisplay, dunst=True) as desk:
        _point_env(monkeypatch, desk)
        yield desk


def _point_env(monkeypatch: pytest.MonkeyPatch, desk: Desktop) -> None:
    monkeypatch.setenv("DISPLAY", desk.display.name)
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", desk.bus.address)
    monkeypatch.delenv("XAUTHORITY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
