"""Tray logic without a display: state words and icons, backend choice, dispatcher, single instance."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vidtray.config import Config
from vidtray.tray import backend
from vidtray.tray.dispatch import Dispatcher
from vidtray.tray.instance import AlreadyRunning, lock_dir, single_instance
from vidtray.tray.state import (
    GB,
    JobView,
    StorageView,
    TrayState,
    icon_name,
    parse_storage_report,
    storage_lines,
    tooltip,
)

ROOT = Path(__file__).resolve().parent.parent

# -- tooltip and icon -------------------------------------------------------------------------


def test_tooltip_says_what_the_tray_is_doing() -> None:
    idle = TrayState(videos=14, free_bytes=100 * GB)
    assert tooltip(idle) == "Idle - 14 videos"
    assert icon_name(idle) == "idle"
    assert tooltip(idle.with_(videos=1)) == "Idle - 1 video"

    busy = idle.with_(job=JobView("j1", "a fox", step=12, total=40))
    assert tooltip(busy) == "Generating 12/40"
    assert icon_name(busy) == "busy"
    assert tooltip(busy.with_(queued=2)) == "Generating 12/40 (+2 queued)"
    assert tooltip(idle.with_(job=JobView("j1", "a fox", phase="loading"))) == "Loading model"


def test_low_disk_and_paused_queue_turn_the_icon_to_warning() -> None:
    low = TrayState(videos=3, free_bytes=int(0.8 * GB), warn_free_gb=5)
    assert tooltip(low) == "Low disk: 0.8 GiB free\nIdle - 3 videos"
    assert icon_name(low) == "warning"

    paused = TrayState(videos=3, free_bytes=50 * GB, queue_paused="only 0.5 GB free (min_free_gb = 1)")
    assert tooltip(paused).startswith("Queue paused: only 0.5 GB free")
    assert icon_name(paused) == "warning"
    # Generating while the disk runs low: both are said, the warning wins the icon.
    both = low.with_(job=JobView("j", "p", step=1, total=4))
    assert tooltip(both).splitlines() == ["Generating 1/4", "Low disk: 0.8 GiB free"]
    assert icon_name(both) == "warning"


def test_problems_are_shown_and_tooltips_stay_short() -> None:
    st = TrayState(videos=0, problems=("Videos folder missing",))
    assert tooltip(st) == "Videos folder missing\nIdle - 0 videos"
    assert icon_name(st) == "warning"
    long = TrayState(problems=("x" * 300,))
    assert len(tooltip(long)) <= 120


def test_storage_report_parsing_and_lines() -> None:
    doc = {
        "videos": {"count": 14, "size_bytes": 3 * 1024**2},
        "models": {"size_bytes": 5 * GB, "repos": [
            {"repo_id": "cerspense/zeroscope_v2_576w", "repo_type": "model", "size_bytes": 4 * GB},
            {"repo_id": "some/dataset", "repo_type": "dataset", "size_bytes": GB},
        ], "broken": [{"repo_id": "half/done", "repo_type": "model", "size_bytes": 1024}]},
    }
    view = parse_storage_report(doc)
    assert view.videos_count == 14 and view.models_bytes == 5 * GB
    assert view.models == (("cerspense/zeroscope_v2_576w", 4 * GB, False), ("half/done", 1024, True))
    lines = storage_lines(view, 2 * GB)
    assert lines == ["Videos: 14, 3.0 MiB", "Model cache: 5.0 GiB", "    cerspense/zeroscope_v2_576w: 4.0 GiB",
                     "    half/done (broken): 1.0 KiB", "Free: 2.0 GiB"]
    assert storage_lines(None, None) == ["Sizes: checking...", "Free: unknown"]
    assert storage_lines(StorageView(error="boom"), None)[0] == "Sizes unknown: boom"


# -- backend choice -----------------------------------------------------------------------------


def test_backend_choice_without_a_display_or_on_other_systems() -> None:
    assert backend.choose_backend("linux", {}).name == "none"
    wayland = backend.choose_backend("linux", {"WAYLAND_DISPLAY": "wayland-0"})
    assert wayland.name == "none" and "Wayland" in wayland.reason
    assert backend.choose_backend("win32", {}).as_dict() == {
        "name": "win32", "has_menu": True, "reason": "Windows notification area"}
    assert backend.choose_backend("darwin", {}).has_menu is True
    forced = backend.choose_backend("linux", {"DISPLAY": ":9", "PYSTRAY_BACKEND": "xorg"})
    assert (forced.name, forced.has_menu) == ("xorg", False)


def test_backend_choice_prefers_gtk_without_a_status_notifier_watcher(monkeypatch: pytest.MonkeyPatch) -> None:
    # No session bus at all here: nobody can be the watcher.
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
    assert backend.sni_watcher_present() is False
    choice = backend.choose_backend("linux", {"DISPLAY": ":9"})
    assert (choice.name, choice.has_menu) == ("gtk", True)


def test_backend_choice_without_pygobject(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "_gi_namespaces", lambda: None)
    choice = backend.choose_backend("linux", {"DISPLAY": ":9"})
    assert (choice.name, choice.has_menu) == ("xorg", False)
    assert "pip install 'vidtray[linux]'" in choice.reason


def test_prepare_env_sets_the_backend_before_import() -> None:
    env: dict[str, str] = {"GDK_GL": "always"}
    backend.prepare_env(backend.BackendChoice("gtk", True, ""), env)
    assert env == {"PYSTRAY_BACKEND": "gtk", "GDK_BACKEND": "x11", "GDK_GL": "always"}  # the user's GDK_GL wins
    env = {}
    backend.prepare_env(backend.BackendChoice("appindicator", True, ""), env)
    assert env == {"PYSTRAY_BACKEND": "appindicator", "GDK_GL": "disable"}


def test_tray_backend_info_for_doctor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("PYSTRAY_BACKEND", raising=False)
    info = backend.tray_backend_info()
    assert info["backend"] == "none" and info["has_menu"] is False and info["display"] is None
    assert isinstance(info["pygobject"], str)  # the `linux` extra is installed for the tests


# -- dispatcher ---------------------------------------------------------------------------------


def test_dispatcher_runs_posts_from_many_threads_in_order_on_one_thread() -> None:
    d = Dispatcher()
    d.use_thread()
    seen: list[tuple[int, int, int]] = []
    done = threading.Event()

    def producer(n: int) -> None:
        for i in range(50):
            d.post(lambda n=n, i=i: seen.append((n, i, threading.get_ident())))

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    d.post(done.set)
    assert done.wait(5)
    d.close()
    assert len(seen) == 200
    assert {ident for _n, _i, ident in seen} == {d.ui_thread}
    for n in range(4):
        assert [i for m, i, _ in seen if m == n] == list(range(50))


def test_dispatcher_survives_a_failing_update(caplog: pytest.LogCaptureFixture) -> None:
    d = Dispatcher()
    ran: list[int] = []
    d.post(lambda: 1 / 0)  # type: ignore[func-returns-value]
    d.post(lambda: ran.append(1))
    assert d.drain() == 2
    assert ran == [1] and "UI update failed" in caplog.text


# -- single instance ------------------------------------------------------------------------------


def test_single_instance_in_process(tmp_path: Path) -> None:
    with single_instance(tmp_path):
        assert (tmp_path / "tray.pid").read_text().strip() == str(os.getpid())
        with pytest.raises(AlreadyRunning, match=rf"already running \(pid {os.getpid()}\)"):
            with single_instance(tmp_path):
                pass
    assert not (tmp_path / "tray.pid").exists()
    with single_instance(tmp_path):  # released: the next start gets it
        pass


_HOLDER = """
import sys, time
from pathlib import Path
from vidtray.tray.instance import single_instance
with single_instance(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_tray_exits_1_while_another_holds_the_lock(cli, isolated_env: dict[str, Path]) -> None:
    folder = lock_dir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        r = cli("tray")
        assert r.returncode == 1
        assert r.stderr == f"vidtray: error: vidtray tray is already running (pid {holder.pid}); use its icon, " \
                           "or quit it from its menu first\n"
    finally:
        holder.kill()
        holder.wait()
    # The holder died without cleaning up: its OS lock went with it, a stale pid file does not block.
    assert (folder / "tray.pid").exists()
    r = cli("tray", env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert r.returncode == 1 and "cannot show a tray icon: no display" in r.stderr


def test_tray_without_a_display_says_so(cli) -> None:
    r = cli("tray", env={"DISPLAY": "", "WAYLAND_DISPLAY": "", "PYSTRAY_BACKEND": ""})
    assert r.returncode == 1
    assert r.stderr.startswith("vidtray: error: cannot show a tray icon: no display (DISPLAY is not set)")
    assert r.stderr.count("\n") == 1


def test_tray_command_imports_nothing_heavy() -> None:
    code = ("import sys, vidtray.cli as c; c.build_parser(); "
            "bad = [m for m in ('pystray', 'gi', 'PIL', 'tkinter', 'huggingface_hub', 'torch') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_lock_wait_is_instant(tmp_path: Path) -> None:
    # The second start must answer at once, not wait for the first to quit.
    with single_instance(tmp_path):
        start = time.monotonic()
        with pytest.raises(AlreadyRunning):
            with single_instance(tmp_path):
                pass
        assert time.monotonic() - start < 1.0


# -- the link to the services ------------------------------------------------------------------------


def test_link_reads_the_running_job_and_cancels_it(cfg: Config) -> None:
    from vidtray.services.notify import RecordingNotifier
    from vidtray.services.queue import open_queue
    from vidtray.tray.link import ServiceLink

    link = ServiceLink(cfg, RecordingNotifier())
    assert link.jobs() == {"job": None, "queued": 0}
    queue = open_queue(cfg)
    first = queue.submit({"prompt": "a  red\nfox"})
    queue.submit({"prompt": "second"})
    assert link.jobs() == {"job": None, "queued": 2}

    queue.claim_next(owner_pid=os.getpid())
    assert link.jobs()["job"] == JobView(first["id"], "a red fox", None, None, "queued")
    queue.set_progress(first["id"], {"step": 12, "steps": 40, "eta": 3.0})
    snap = link.snapshot()
    assert snap["job"] == JobView(first["id"], "a red fox", 12, 40, "running") and snap["queued"] == 1
    assert tooltip(TrayState(**{k: snap[k] for k in ("job", "queued", "videos")})) == "Generating 12/40 (+1 queued)"

    link.cancel(first["id"])
    assert queue.get(first["id"])["cancel_requested"] is True
    assert link.jobs()["job"].phase == "cancelling"

    (cfg.queue_dir / "paused.json").write_text('{"reason": "only 0.5 GB free", "since": "x"}')
    assert link.queue_paused() == "only 0.5 GB free"


def test_daemon_pause_watching_imports_what_arrived_on_resume(cfg: Config) -> None:
    from media_helpers import write_mp4

    from vidtray.services.daemon import Daemon
    from vidtray.services.library import Library
    from vidtray.services.notify import RecordingNotifier

    daemon = Daemon(cfg, RecordingNotifier(), settle_s=0.2)
    daemon.start()
    try:
        assert daemon.watching_paused is False
        daemon.pause_watching()
        assert daemon.watching_paused is True
        video = write_mp4(cfg.videos_dir / "while_paused_20240101-000000_cccccccc.mp4")
        time.sleep(1.0)
        assert Library(cfg.library_file).find_by_path(video) is None  # nobody watching
        daemon.resume_watching()
        assert daemon.watching_paused is False
        assert daemon.watcher.wait_idle(30)
        assert Library(cfg.library_file).find_by_path(video) is not None
    finally:
        daemon.stop()
    assert daemon.watching_paused is False and not daemon.running
