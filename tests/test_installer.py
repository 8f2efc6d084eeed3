"""installer/install.sh for real, offline: a venv install for a fake user, then start-on-login pointing at
the venv's windowless ``vidtray-tray`` by absolute path. install.ps1 is checked for what it must do."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vidtray.services.autostart import parse_desktop_exec

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_install_sh_venv_install_and_autostart(tmp_path: Path, isolated_env: dict[str, Path]) -> None:
    # A copy of the checkout: pip builds a local folder in place, and the worktree must stay clean.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "vidtray", src / "vidtray", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "installer", src / "installer")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    home = isolated_env["HOME"]
    env = {
        **os.environ,
        "VIDTRAY_HOME": str(home / ".local/share/vidtray"), "VIDTRAY_BIN": str(home / ".local/bin"),
        # Offline: dependencies, pip and setuptools come from this interpreter's site-packages (the venv's own
        # bundled setuptools is too old for the PEP 639 licence field).
        "VIDTRAY_INSTALL_VENV_ARGS": "--system-site-packages --without-pip",
        "VIDTRAY_INSTALL_PIP_ARGS": "--no-deps --no-build-isolation --no-index",
        "PATH": "/usr/bin:/bin",  # no pipx: the venv path
        "PYTHON": shutil.which("python3") or "python3",
    }
    r = subprocess.run(["sh", str(src / "installer" / "install.sh")], env=env, capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    venv_bin = home / ".local/share/vidtray/venv/bin"
    assert "installed: vidtray " in r.stdout and "start on login: on" in r.stdout
    for tool in ("vidtray", "vidtray-tray"):
        link = home / ".local/bin" / tool
        assert link.is_symlink() and link.resolve() == (venv_bin / tool).resolve()

    desktop = isolated_env["XDG_CONFIG_HOME"] / "autostart" / "vidtray.desktop"
    exec_line = next(x for x in desktop.read_text().splitlines() if x.startswith("Exec="))
    assert parse_desktop_exec(exec_line[len("Exec="):]) == [str(venv_bin / "vidtray-tray")]
    assert "\nPath=" not in desktop.read_text()  # installed: no working directory needed
    # What login will run is the installed vidtray (not this checkout).
    out = subprocess.run([str(venv_bin / "python"), "-c", "import vidtray; print(vidtray.__file__)"],
                         capture_output=True, text=True, cwd=tmp_path, env={**env, "PYTHONPATH": ""})
    assert out.stdout.strip().startswith(str(home / ".local/share/vidtray/venv"))

    r = subprocess.run(["sh", str(src / "installer" / "install.sh"), "--bogus"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr


def test_install_sh_help_and_syntax() -> None:
    assert subprocess.run(["sh", "-n", str(ROOT / "installer" / "install.sh")]).returncode == 0
    r = subprocess.run(["sh", str(ROOT / "installer" / "install.sh"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--no-autostart" in r.stdout and r.stdout.startswith("Install vidtray")


def test_install_ps1_installs_for_the_user_and_enables_autostart() -> None:
    # No PowerShell here: check the script says the things it must do (a Windows CI runs it for real).
    text = (ROOT / "installer" / "install.ps1").read_text()
    assert "autostart enable" in text and "vidtray-tray.exe" in text
    assert "LOCALAPPDATA" in text and "pipx" in text
    assert text.count("{") == text.count("}") and text.count("(") == text.count(")")
