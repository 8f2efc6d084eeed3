"""Shared fixtures. Every test runs with HOME, XDG dirs, HF_HOME and the vidtray dirs in tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vidtray.config import Config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point every location vidtray or huggingface_hub could touch into tmp_path."""
    home = tmp_path / "home"
    dirs = {
        "HOME": home,
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_STATE_HOME": home / ".local" / "state",
        # System-wide autostart entries are read from here (a real /etc/xdg/autostart must not leak in).
        "XDG_CONFIG_DIRS": tmp_path / "etc-xdg",
        "HF_HOME": home / ".cache" / "huggingface",
        "VIDTRAY_DATA_DIR": tmp_path / "data",
        "VIDTRAY_LOG_DIR": tmp_path / "logs",
    }
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(path))
    for name in ("VIDTRAY_CONFIG", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    # Never reach the hub from a test.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    _trash_in(dirs["XDG_DATA_HOME"], monkeypatch)
    return dirs


def _trash_in(share_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make in-process send2trash use this test's trash (``XDG_DATA_HOME/Trash``).

    send2trash uses GIO when PyGObject is importable (as with the ``linux`` extra), and GLib reads
    XDG_DATA_HOME once per process; its own freedesktop code reads it once at import. Neither can
    follow a second test's folder, so in-process tests use the freedesktop code with its folder
    reset. Tests that run vidtray in a fresh process cover the default choice.
    """
    import send2trash
    from send2trash import plat_other

    monkeypatch.setattr(send2trash, "send2trash", plat_other.send2trash)
    share = os.fsencode(share_dir)
    monkeypatch.setattr(plat_other, "XDG_DATA_HOME", share)
    monkeypatch.setattr(plat_other, "HOMETRASH_B", os.path.join(share, b"Trash"))
    monkeypatch.setattr(plat_other, "HOMETRASH", os.fsdecode(os.path.join(share, b"Trash")))


@pytest.fixture
def trash_in_tmp(isolated_env: dict[str, Path]) -> Path:
    """This test's trash folder."""
    return isolated_env["XDG_DATA_HOME"] / "Trash"


@pytest.fixture
def cfg(isolated_env: dict[str, Path]) -> Config:
    """Default settings with data_dir in tmp_path; the videos folder exists."""
    config = Config.from_mapping({}, "<test>")
    config.videos_dir.mkdir(parents=True, exist_ok=True)
    return config


def run_cli(*args: str, input: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m vidtray ARGS`` in a fresh process (the real entry point, real exit codes)."""
    return subprocess.run(
        [sys.executable, "-m", "vidtray", *args],
        input=input, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=ROOT,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


@pytest.fixture
def cli():
    return run_cli


# Desktop fixtures (Xvfb, private D-Bus session bus, dunst -print) for tests marked `gui`.
from desktop import desktop, desktop_no_daemon, xdisplay  # noqa: E402, F401

# The library page served from a thread, and Debian's chromium through Playwright (tests marked `browser`).
from page_helpers import browser, page_server  # noqa: E402, F401
