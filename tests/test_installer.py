"""installer/install.sh for real: the README's quick-start command, run offline in a clean copy of the checkout
(wheels from the wheelhouse .ci/run fills), gives a venv of its own, the application and autostart entries and
a running tray whose icon opens the prompt popup under Xvfb + trayer. install.ps1 is checked for what it must do.

Nothing here depends on the interpreter running the tests: install.sh picks its own Python (here Debian's, with
python3-gi) and builds vidtray with build isolation from the wheelhouse (setuptools>=77 included).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from desktop import GUI_BINARIES, Desktop, skip_or_fail, skip_without, validate_desktop_file
from tray_desktop import docked_icons, start_trayer, wait_until

from vidtray.services.desktop_entry import APP_ID, parse_desktop_exec, read_desktop_entry

ROOT = Path(__file__).resolve().parent.parent
INSTALL_SH = ROOT / "installer" / "install.sh"
WHEELHOUSE = ROOT / ".wheelhouse"  # filled by .ci/run: everything the quick start installs


def quick_start_command() -> str:
    """The one install command of the README's "Quick start" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    lines = [line.split(" #", 1)[0].strip() for b in blocks for line in b.splitlines() if "install.sh" in line]
    assert len(lines) == 1, f"the quick start should give one install command, found {lines}"
    return lines[0]


def clean_copy(dest: Path) -> Path:
    """What a clone holds: the files git tracks (as they are in the worktree) and new ones it does not ignore."""
    names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def install_env(base: dict[str, str]) -> dict[str, str]:
    """The caller's environment (isolated HOME and XDG dirs), pip pointed at the wheelhouse only."""
    if not any(WHEELHOUSE.glob("torch-*.whl")):
        skip_or_fail(f"no wheelhouse at {WHEELHOUSE}: .ci/run fills it (pip download of what the quick start installs)")
    env = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELHOUSE), PIP_NO_CACHE_DIR="1")
    return env


def _gone(pid: int) -> bool:
    """Exited (the tray is not our child: install.sh started it, so it may linger as a zombie)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _stop(pid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        if _gone(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not _gone(pid):
            time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.gui
def test_readme_quick_start_gives_a_tray_whose_click_opens_the_popup(
        tmp_path: Path, isolated_env: dict[str, Path], desktop: Desktop) -> None:
    skip_without((*GUI_BINARIES, "trayer", "xdotool"), packages="xvfb dbus dunst libnotify-bin trayer xdotool")
    env = install_env(desktop.env)
    src = clean_copy(tmp_path / "vidtray")
    home = isolated_env["HOME"]
    venv = home / ".local" / "share" / "vidtray" / "venv"
    start_trayer(desktop)

    started = time.monotonic()
    r = subprocess.run(["sh", "-c", quick_start_command()], cwd=src, env=env, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=600)
    took = time.monotonic() - started
    out = r.stdout + r.stderr
    m = re.search(r"tray started \(pid (\d+)\)", out)
    pid = int(m.group(1)) if m else None
    try:
        assert r.returncode == 0 and pid, out
        print(f"quick start took {took:.0f}s:", *re.findall(r"installed: vidtray .*", out))  # with -s: time, size
        # The build it chose, and why.
        assert ("torch: the CUDA build" if shutil.which("nvidia-smi") else "torch: the CPU build") in out
        assert "tray menu: the system's PyGObject" in out, out  # python3-gi: nothing compiled
        assert "start on login: on (the default: no terminal to ask on" in out
        for tool in ("vidtray", "vidtray-tray"):
            link = home / ".local" / "bin" / tool
            assert link.is_symlink() and link.resolve() == (venv / "bin" / tool).resolve()

        # The application entry and the autostart entry: one id, the venv's windowless launcher, both valid.
        app = isolated_env["XDG_DATA_HOME"] / "applications" / f"{APP_ID}.desktop"
        auto = isolated_env["XDG_CONFIG_HOME"] / "autostart" / f"{APP_ID}.desktop"
        for path, extra in ((app, ["--activate"]), (auto, [])):  # from the menu: a running tray's popup
            keys = read_desktop_entry(path.read_text())
            assert parse_desktop_exec(keys["Exec"]) == [str(venv / "bin" / "vidtray-tray"), *extra]
            assert keys["TryExec"] == str(venv / "bin" / "vidtray-tray") and "Path" not in keys
            validate_desktop_file(path)
        assert (isolated_env["XDG_DATA_HOME"] / "icons" / "hicolor" / "64x64" / "apps" / f"{APP_ID}.png").is_file()

        # The tray install.sh started docks; a left click opens the prompt popup.
        display = desktop.display.name
        icon = wait_until(lambda: [i for i in docked_icons(display) if i.width >= 16 and i.height >= 16],
                          60, "the installed tray's icon to dock")[0]
        subprocess.run(["xdotool", "mousemove", "--window", str(icon.id), str(icon.width // 2),
                        str(icon.height // 2), "click", "1"], env=desktop.env, check=True, timeout=30)
        wait_until(lambda: desktop.run(["xdotool", "search", "--onlyvisible", "--class", "VidtrayPopup"]).stdout,
                   60, "the prompt popup")

        # Both run from the venv, not from this checkout or the copy it was installed from.
        tray = psutil.Process(pid)
        assert tray.cmdline()[0].startswith(str(venv)) and str(venv / "bin" / "vidtray-tray") in tray.cmdline()
        popup = next(p for p in tray.children() if "vidtray.tray.popup" in p.cmdline())
        assert popup.cmdline()[0].startswith(str(venv)) and popup.cwd() == str(home)
        penv = popup.environ()
        # Installed: nothing on PYTHONPATH (the venv's site-packages there would go ahead of the standard library).
        assert "PYTHONPATH" not in penv, penv
        where = subprocess.run([popup.cmdline()[0], "-c", "import vidtray.tray.popup as m; print(m.__file__)"],
                               cwd=popup.cwd(), env=penv, capture_output=True, text=True, timeout=60).stdout
        assert where.startswith(str(venv / "lib")), where

        # The venv's notifications reach the daemon mapped to the application entry.
        probe = ("from vidtray.services.notify import Notifier; n = Notifier(); "
                 "assert n.send('quick start', 'installed'); print(n.backend.name)")
        sent = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=home, env=desktop.env,
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        note = desktop.dunst.wait_for("quick start")
        assert note.fields["desktop_entry"] == APP_ID and note.appname == "vidtray"
    finally:
        if pid:
            _stop(pid)
    assert _gone(pid)

    # Run again (an update) on a terminal, answering the question with "n": the venv and its torch are kept,
    # and start-on-login goes off. (--torch cpu: the wheelhouse holds only the CPU build, which a GPU
    # machine's first run took as well.)
    code, out = run_on_terminal(["sh", str(src / "installer" / "install.sh"), "--torch", "cpu", "--no-start"],
                                answers={"Start the vidtray tray at every login? [Y/n] ": "n"}, cwd=src, env=env)
    assert code == 0, out
    assert "making" not in out and "replacing torch" not in out and "tray started" not in out
    assert "start on login: off" in out and not auto.exists()


def run_on_terminal(argv: list[str], answers: dict[str, str], cwd: Path, env: dict[str, str],
                    timeout: float = 600) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdin/stdout/stderr, typing each answer when its prompt shows."""
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, start_new_session=True)
    os.close(slave)
    out, pending = b"", dict(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                for prompt in [p for p in pending if p.encode() in out]:
                    os.write(master, pending.pop(prompt).encode() + b"\n")
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not pending, f"never asked {list(pending)}: {out.decode(errors='replace')}"
    return code, out.decode(errors="replace").replace("\r\n", "\n")


def test_install_sh_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    def run(*args: str, cwd: Path = tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", *args], capture_output=True, text=True, timeout=60, cwd=cwd,
                              env={**os.environ, **env}, stdin=subprocess.DEVNULL)

    r = run(str(INSTALL_SH), "--bogus")
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr
    r = run(str(INSTALL_SH), "--torch", "rocm")
    assert r.returncode == 2 and "--torch takes auto, cuda, cpu, none or an index URL" in r.stderr
    # vidtray is not on PyPI: outside a clone, without a wheel or folder, there is nothing to install.
    alone = tmp_path / "installer" / "install.sh"
    alone.parent.mkdir()
    shutil.copy(INSTALL_SH, alone)
    r = run(str(alone))
    assert r.returncode == 1 and "run this script from a clone of the vidtray repository" in r.stderr
    r = run(str(INSTALL_SH), str(tmp_path / "vidtray-9.whl"))
    assert r.returncode == 1 and "no such wheel or folder" in r.stderr
    r = run(str(INSTALL_SH), PYTHON=str(tmp_path / "no-python"))
    assert r.returncode == 1 and "vidtray needs Python 3.11 or newer" in r.stderr


def test_install_sh_help_and_syntax() -> None:
    assert subprocess.run(["sh", "-n", str(INSTALL_SH)]).returncode == 0
    r = subprocess.run(["sh", str(INSTALL_SH), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("Install vidtray")
    for option in ("--torch auto", "--torch cpu", "--torch none", "--autostart", "--no-autostart", "--no-start"):
        assert option in r.stdout
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-s", "sh", str(INSTALL_SH)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def test_install_ps1_installs_for_the_user_and_asks_about_autostart() -> None:
    # No PowerShell here: check the script says the things it must do (a Windows machine runs it for real).
    text = (ROOT / "installer" / "install.ps1").read_text()
    assert "autostart enable" in text and "vidtray-tray.exe" in text and "LOCALAPPDATA" in text
    assert "nvidia-smi" in text and "https://download.pytorch.org/whl/" in text  # the torch build, chosen
    assert "[switch]$Autostart" in text and "[switch]$NoAutostart" in text and "Read-Host" in text
    assert "pipx" not in text  # one install path, as on Linux and macOS
    assert text.count("{") == text.count("}") and text.count("(") == text.count(")")
