"""Tray logic without a display: state words and icons, backend choice, dispatcher, single instance."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from vidtray.config import Config
from vidtray.paths import tray_lock_dir
from vidtray.tray import backend
from vidtray.tray.dispatch import Dispatcher
from vidtray.tray.instance import AlreadyRunning, single_instance
from vidtray.tray.state import (
    GB,
    TOOLTIP_MAX,
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


def test_the_users_pause_shows_beside_the_queued_count() -> None:
    assert tooltip(TrayState(queued=3, videos=14, queue_user_paused=True)) == "3 queued (paused) - 14 videos"
    assert tooltip(TrayState(videos=14, queue_user_paused=True)) == "Idle (queue paused) - 14 videos"
    busy = TrayState(job=JobView("j", "a fox", 12, 40), queued=2, queue_user_paused=True)
    assert tooltip(busy) == "Generating 12/40 (+2 queued, paused)"
    # the user chose it: no warning icon (the low-disk pause has one)
    assert icon_name(TrayState(queued=3, queue_user_paused=True)) == "idle"


def _today_at(hour: int, minute: int) -> float:
    return datetime.now().replace(hour=hour, minute=minute, second=0, microsecond=0).timestamp()


def test_tooltip_says_the_time_left_and_when_the_queue_is_done() -> None:
    job = JobView("j1", "a fox", step=12, total=40, eta=170.0)
    busy = TrayState(job=job, videos=14)
    assert tooltip(busy) == "Generating 12/40, about 3 min left"
    at = _today_at(14, 20)
    waiting = busy.with_(queued=2, queue_done=at)
    assert tooltip(waiting) == "Generating 12/40, about 3 min left (+2 queued); queue done about 14:20"
    assert len(tooltip(waiting)) <= TOOLTIP_MAX
    # Not today: the day is said too.
    tomorrow = datetime.fromtimestamp(at) + timedelta(days=1)
    assert tooltip(waiting.with_(queue_done=tomorrow.timestamp())).endswith(
        f"queue done about {tomorrow.strftime('%a')} 14:20")
    # A paused queue will not be done: no time for it (the job's own time still counts down).
    assert tooltip(waiting.with_(queue_user_paused=True)) == "Generating 12/40, about 3 min left (+2 queued, paused)"
    assert tooltip(waiting.with_(queue_paused="only 0.5 GB free")).splitlines() == [
        "Generating 12/40, about 3 min left (+2 queued)", "Queue paused: only 0.5 GB free"]
    # The last steps, then decode and encode: still counted down while saving.
    saving = TrayState(job=JobView("j1", "a fox", step=40, total=40, phase="saving", eta=25.0))
    assert tooltip(saving) == "Saving video, about 25 s left"
    assert tooltip(TrayState(job=JobView("j1", "a fox", step=1, total=40, eta=4000.0))) == \
        "Generating 1/40, about 1 h 7 min left"
    # No time while loading or cancelling, nor before the worker said one.
    assert tooltip(TrayState(job=JobView("j1", "a fox", phase="loading", eta=9.0))) == "Loading model"
    assert tooltip(TrayState(job=JobView("j1", "a fox", 3, 40, phase="cancelling", eta=9.0))) == "Cancelling"
    assert tooltip(TrayState(job=JobView("j1", "a fox", 3, 40))) == "Generating 3/40"
    # Long lines are still cut at the limit.
    crowded = waiting.with_(problems=("x" * 80,), free_bytes=GB // 2)
    assert len(tooltip(crowded)) <= TOOLTIP_MAX


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


def test_storage_menu_shows_last_used_and_the_budget() -> None:
    doc = {
        "videos": {"count": 2, "size_bytes": 1024},
        "models": {"size_bytes": 5 * GB, "repos": [
            {"repo_id": "org/used", "repo_type": "model", "size_bytes": 4 * GB,
             "last_used": "2031-03-04T05:06:07+00:00"},
            {"repo_id": "org/never", "repo_type": "model", "size_bytes": GB, "last_used": None},
        ], "broken": []},
        "budget": {"budget_bytes": 4 * GB, "used_bytes": 5 * GB},
    }
    lines = storage_lines(parse_storage_report(doc), None)
    assert lines[2:] == ["    org/used: 4.0 GiB, used 2031-03-04", "    org/never: 1.0 GiB",
                         "Budget: 5.0 GiB of 4.0 GiB (over)", "Free: unknown"]


def test_the_free_space_question_lists_the_plan_and_the_trash() -> None:
    from vidtray.tray.actions import free_space_question

    items = [{"kind": "video", "name": f"/v/clip{n}.mp4", "size_bytes": 1024} for n in range(11)]
    items.append({"kind": "model", "name": "org/old", "size_bytes": GB})
    plan = {"items": items, "used_bytes": 6 * GB, "over_bytes": 2 * GB, "budget_bytes": 4 * GB,
            "total_bytes": GB + 11 * 1024, "trashed_bytes": 11 * 1024, "meets_budget": False, "kept_bytes": 3 * GB}
    text = free_space_question(plan).split("\n")
    assert text[0] == "6.0 GiB used, 2.0 GiB over the storage budget (4.0 GiB). Free 1.0 GiB, in this order?"
    assert text[2:5] == ["1. video clip0.mp4 (1.0 KiB)", "2. video clip1.mp4 (1.0 KiB)", "3. video clip2.mp4 (1.0 KiB)"]
    assert text[12] == "... and 2 more items"
    assert text[-2:] == ["Videos move to the trash: 11.0 KiB frees when the trash is emptied.",
                         "Still over the budget after it: 3.0 GiB are pinned or in use."]


# -- backend choice -----------------------------------------------------------------------------

GTK_ONLY = {"Gtk": ["3.0"], "AppIndicator3": [], "AyatanaAppIndicator3": []}
WITH_INDICATOR = {**GTK_ONLY, "AyatanaAppIndicator3": ["0.1"]}


def desktop_probe(spaces: dict[str, list[str]] | None = GTK_ONLY, sni: bool = False,
                  xembed: bool | None = False) -> backend.Probe:
    """What a given desktop offers (the real probes are checked under Xvfb in test_tray_gui.py)."""
    return backend.Probe(lambda: spaces, lambda: sni, lambda _display: xembed)


def test_backend_choice_without_a_display_or_on_other_systems() -> None:
    none = backend.choose_backend("linux", {}, desktop_probe(xembed=True))
    assert (none.name, none.fatal, none.shows_icon) == ("none", True, False)
    assert none.reason == "no display (DISPLAY is not set)"
    assert backend.choose_backend("win32", {}).as_dict() == {
        "name": "win32", "has_menu": True, "reason": "Windows notification area", "hint": "", "wait": False,
        "fatal": False}
    assert backend.choose_backend("darwin", {}).has_menu is True


def test_backend_choice_follows_the_tray_host_that_is_there() -> None:
    x11 = {"DISPLAY": ":9"}
    gtk = backend.choose_backend("linux", x11, desktop_probe(xembed=True))
    assert (gtk.name, gtk.has_menu, gtk.shows_icon) == ("gtk", True, True)
    assert "XEmbed system tray manages :9" in gtk.reason
    both = desktop_probe(WITH_INDICATOR, sni=True, xembed=True)
    assert backend.choose_backend("linux", x11, both).name == "appindicator"
    assert backend.choose_backend("linux", {**x11, "PYSTRAY_BACKEND": "gtk"}, both).name == "gtk"
    # A StatusNotifierWatcher alone hosts AppIndicator icons, on Wayland without X too.
    sni_only = desktop_probe(WITH_INDICATOR, sni=True, xembed=False)
    assert backend.choose_backend("linux", {"WAYLAND_DISPLAY": "wayland-0"}, sni_only).name == "appindicator"


def test_backend_choice_never_the_icon_only_xorg_backend() -> None:
    # pystray's xorg icon ignores clicks and has no menu: asked for by name, the tray still takes GTK...
    forced = backend.choose_backend("linux", {"DISPLAY": ":9", "PYSTRAY_BACKEND": "xorg"}, desktop_probe(xembed=True))
    assert forced.name == "gtk"
    # ...and without PyGObject it shows no icon at all, saying what to install, and does not wait for one.
    bare = backend.choose_backend("linux", {"DISPLAY": ":9"}, desktop_probe(spaces=None, xembed=True))
    assert (bare.name, bare.wait, bare.fatal) == ("none", False, False)
    assert "PyGObject" in bare.reason
    assert "pip install 'vidtray[linux]'" in bare.hint and "python3-gi" in bare.hint
    no_gtk = backend.choose_backend("linux", {"DISPLAY": ":9"}, desktop_probe(spaces={**GTK_ONLY, "Gtk": []}))
    assert no_gtk.name == "none" and "gir1.2-gtk-3.0" in no_gtk.hint


def test_without_a_tray_host_the_choice_is_to_wait_and_say_what_to_install() -> None:
    nothing = backend.choose_backend("linux", {"DISPLAY": ":9"}, desktop_probe())
    assert (nothing.name, nothing.wait, nothing.fatal) == ("none", True, False)
    assert nothing.reason == ("no system tray found (no XEmbed tray manager on :9, no StatusNotifierWatcher on "
                              "the session bus)")
    assert "AppIndicator extension" in nothing.hint and "gnome-shell-extension-appindicator" in nothing.hint
    # A StatusNotifierItem-only tray, and no AppIndicator typelib to speak to it.
    sni = backend.choose_backend("linux", {"DISPLAY": ":9"}, desktop_probe(sni=True))
    assert (sni.name, sni.wait) == ("none", True) and "gir1.2-ayatanaappindicator3-0.1" in sni.hint
    # Without libX11 we cannot look: GTK, which docks by itself once a tray is there.
    assert backend.choose_backend("linux", {"DISPLAY": ":9"}, desktop_probe(xembed=None)).name == "gtk"


def test_real_probes_without_a_session_bus_or_an_x_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
    monkeypatch.setattr(backend, "_no_bus_since", None)  # the back-off it sets stays in this test
    assert backend.sni_watcher_present() is False
    assert backend.xembed_manager_present(":4242") is False  # nothing listens there: no tray either
    choice = backend.choose_backend("linux", {"DISPLAY": ":4242"})
    assert (choice.name, choice.wait) == ("none", True)


def test_prepare_env_sets_the_backend_before_import() -> None:
    env: dict[str, str] = {"GDK_GL": "always"}
    backend.prepare_env(backend.BackendChoice("gtk", True, ""), env)
    assert env == {"PYSTRAY_BACKEND": "gtk", "GDK_BACKEND": "x11", "GDK_GL": "always"}  # the user's GDK_GL wins
    env = {}
    backend.prepare_env(backend.BackendChoice("appindicator", True, ""), env)
    assert env == {"PYSTRAY_BACKEND": "appindicator", "GDK_GL": "disable"}


def test_load_pystray_refuses_a_choice_without_an_icon() -> None:
    with pytest.raises(RuntimeError, match="cannot show a tray icon: no system tray found"):
        backend.load_pystray(backend.BackendChoice("none", False, "no system tray found", wait=True))


def test_tray_backend_info_for_doctor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("PYSTRAY_BACKEND", raising=False)
    info = backend.tray_backend_info()
    assert info["backend"] == "none" and info["has_menu"] is False and info["display"] is None
    assert info["fatal"] is True and info["xembed_tray"] is None
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
    folder = tray_lock_dir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        r = cli("tray")
        assert r.returncode == 1
        assert r.stderr == f"vidtray: error: vidtray tray is already running (pid {holder.pid}); quit it from " \
                           "its menu, or with `vidtray tray --quit`\n"
    finally:
        holder.kill()
        holder.wait()
    # The holder died without cleaning up: its OS lock went with it, a stale pid file does not block.
    assert (folder / "tray.pid").exists()
    r = cli("tray", env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert r.returncode == 1 and "cannot show a tray icon: no display" in r.stderr


def test_tray_quit_ends_the_running_tray_and_waits_for_its_lock(cli, isolated_env: dict[str, Path]) -> None:
    r = cli("tray", "--quit")
    assert (r.returncode, r.stdout) == (0, "no vidtray tray is running\n")
    folder = tray_lock_dir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        r = cli("tray", "--quit")
        assert (r.returncode, r.stdout, r.stderr) == (0, f"vidtray tray (pid {holder.pid}) has quit\n", "")
        assert holder.wait(5) == -15  # SIGTERM
        with single_instance(folder):  # free
            pass
    finally:
        holder.kill()
        holder.wait()


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


# -- a quit that hangs -------------------------------------------------------------------------------

_HANGING_STOP = """
import sys, threading
from pathlib import Path
from vidtray.config import Config
from vidtray.logs import setup_logging
from vidtray.services.notify import RecordingNotifier
from vidtray.tray import app
from vidtray.tray.backend import BackendChoice

app.SERVICES_STOP_S, app.QUIT_DEADLINE_S = 0.5, 1.5

class Link:  # the service boundary: a service thread that never ends, so neither does its stop
    on_event = None
    def start(self):
        self.stuck = threading.Thread(target=threading.Event().wait, name="stuck-service", daemon=False)
        self.stuck.start()
        print("started", flush=True)
    def stop(self): self.stuck.join()
    def snapshot(self): return {}

setup_logging()
tray = app.TrayApp(Config.from_mapping({}, "<test>"), link=Link(), notifier=RecordingNotifier())
sys.exit(tray.run(BackendChoice("none", False, "no icon in this test")))
"""


def test_a_quit_that_hangs_still_ends_the_process_at_the_deadline(isolated_env: dict[str, Path]) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _HANGING_STOP], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        time.sleep(0.3)
        start = time.monotonic()
        proc.terminate()
        # Python's exit would wait for the stuck thread for ever; the deadline ends the process.
        assert proc.wait(10) == 1  # not a clean stop: the services were left behind
        assert time.monotonic() - start < 5
    finally:
        proc.kill()
        proc.wait()
    log = (isolated_env["VIDTRAY_LOG_DIR"] / "vidtray.log").read_text()
    assert "SIGTERM: quitting" in log
    assert "services did not stop within 0.5 s; quitting anyway" in log
    assert "the tray did not end within 1.5 s of the quit; exiting now (status 1)" in log


# -- Tk missing, and where windows open ----------------------------------------------------------------


@pytest.fixture
def no_tk(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import tkinter, as on Debian/Ubuntu without python3-tk."""
    shim = tmp_path / "no-tk"
    shim.mkdir()
    (shim / "tkinter.py").write_text("raise ModuleNotFoundError(\"No module named 'tkinter'\", name='tkinter')\n")
    return {**os.environ, "PYTHONPATH": f"{shim}{os.pathsep}{ROOT}"}


@pytest.mark.parametrize(("module", "args", "what"), [
    ("vidtray.tray.popup", [], "The prompt window"),
    ("vidtray.tray.dialog", ["confirm", "--message", "Delete?"], "The confirmation dialog"),
])
def test_tk_children_say_which_package_is_missing(no_tk: dict[str, str], module: str, args: list[str],
                                                   what: str) -> None:
    from vidtray.tray.tkhelp import EXIT_MISSING_TK

    r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=no_tk, cwd=ROOT,
                       timeout=60)
    assert r.returncode == EXIT_MISSING_TK
    assert r.stderr == (f"vidtray: error: {what} needs Tk (tkinter), which is not installed "
                        "(Debian/Ubuntu: python3-tk, Fedora: python3-tkinter, Arch: tk)\n")


def test_windows_open_near_the_pointer_and_stay_on_the_screen() -> None:
    from vidtray.tray.tkhelp import EDGE_MARGIN, POINTER_GAP, placement

    screen, size = (1280, 800), (600, 400)
    # The icon in a top-right panel: under the pointer, pushed left to stay on the screen.
    assert placement((1263, 16), size, screen) == (1280 - 600 - EDGE_MARGIN, 16 + POINTER_GAP)
    # A bottom panel: above the pointer.
    assert placement((640, 790), size, screen) == (340, 790 - POINTER_GAP - 400)
    # No pointer on this screen: centred. Never 0,0 unless the window fills the screen.
    assert placement(None, size, screen) == (340, 200)
    assert placement((-1, -1), size, screen) == (340, 200)
    assert placement((0, 0), size, screen) == (EDGE_MARGIN, POINTER_GAP)
    assert placement((10, 10), (1400, 900), screen) == (0, 0)


# -- the link to the services ------------------------------------------------------------------------


def test_link_reads_the_running_job_and_cancels_it(cfg: Config) -> None:
    from vidtray.services.jobrecord import JobProgress
    from vidtray.services.notify import RecordingNotifier
    from vidtray.services.queue import open_queue
    from vidtray.tray.link import ServiceLink

    link = ServiceLink(cfg, RecordingNotifier())
    assert link.jobs() == {"job": None, "queued": 0, "queue_user_paused": False}
    assert not cfg.queue_dir.exists()  # looking creates nothing
    queue = open_queue(cfg)
    first = queue.submit({"prompt": "a  red\nfox"})
    queue.submit({"prompt": "second"})
    assert link.jobs() == {"job": None, "queued": 2, "queue_user_paused": False}

    queue.claim_next(owner_pid=os.getpid())
    assert link.jobs()["job"] == JobView(first.id, "a red fox", None, None, "queued")
    queue.set_progress(first.id, JobProgress(step=12, steps=40, eta=3.0))
    snap = link.snapshot()
    assert snap["job"] == JobView(first.id, "a red fox", 12, 40, "running", eta=3.0) and snap["queued"] == 1
    assert tooltip(TrayState(**{k: snap[k] for k in ("job", "queued", "videos")})) == \
        "Generating 12/40, about 3 s left (+1 queued)"

    link.cancel(first.id)
    assert queue.get(first.id).cancel_requested is True
    assert link.jobs()["job"].phase == "cancelling"

    (cfg.queue_dir / "paused.json").write_text('{"reason": "only 0.5 GB free", "since": "x"}')
    assert link.queue_paused() == "only 0.5 GB free"

    # The user's pause (the menu's Pause queue): kept apart from the low-disk one, and shown apart.
    link.set_queue_paused(True)
    snap = link.snapshot()
    assert snap["queue_user_paused"] is True and snap["queue_paused"] == "only 0.5 GB free"
    assert queue.user_pause() is not None  # the same queue `vidtray queue` and `vidtray watch` read
    link.set_queue_paused(False)
    assert link.snapshot()["queue_user_paused"] is False and queue.user_pause() is None


def test_link_shows_when_the_gpu_server_does_not_answer(cfg: Config) -> None:
    from types import SimpleNamespace

    from vidtray.services.notify import RecordingNotifier
    from vidtray.tray.link import ServiceLink

    link = ServiceLink(cfg, RecordingNotifier())
    assert "problems" not in link.snapshot()  # no daemon, no server
    monitor = SimpleNamespace(state=None)
    link.daemon = SimpleNamespace(supervisor=SimpleNamespace(remote=monitor), watching_paused=False)
    assert "problems" not in link.snapshot()  # not asked yet
    for state, line in (("unreachable", "GPU server unreachable"), ("refused", "GPU server refused the token"),
                        ("misconfigured", "GPU server settings incomplete")):
        monitor.state = state
        snap = link.snapshot()
        assert snap["problems"] == (line,)
        shown = TrayState(problems=snap["problems"])
        assert tooltip(shown) == f"{line}\nIdle" and icon_name(shown) == "warning"
    monitor.state = "ok"
    assert "problems" not in link.snapshot()


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


def test_the_monitor_says_when_the_queue_is_done_from_history_and_guesses(cfg: Config) -> None:
    from helpers import write_run

    from vidtray.services import estimate
    from vidtray.services.jobrecord import JobProgress
    from vidtray.services.notify import RecordingNotifier
    from vidtray.services.queue import open_queue
    from vidtray.tray.children import Children
    from vidtray.tray.link import ServiceLink
    from vidtray.tray.monitor import StatusMonitor
    from vidtray.tray.queuetime import HISTORY_EVERY_S, QueueTime

    for i in range(3):  # this install ran model-a three times: 2 s a step, 3 s to load, 1.5 s to decode and encode
        write_run(cfg.videos_dir, f"a{i}", model="org/model-a")
    shape = {"frames": 8, "width": 64, "height": 64}
    queue = open_queue(cfg)
    running = queue.submit({"prompt": "now", "model": "org/model-a", **shape, "steps": 10})
    queue.submit({"prompt": "same model", "model": "org/model-a", **shape, "steps": 20})
    queue.submit({"prompt": "never ran", "model": "org/model-b", **shape, "steps": 10})
    queue.submit({"prompt": "back to a", "model": "org/model-a", **shape, "steps": 10})
    queue.submit({"prompt": "defaults", "model": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"})  # the family's size
    queue.claim_next(owner_pid=os.getpid())
    queue.set_progress(running.id, JobProgress(step=4, steps=10, eta=12.5))

    link = ServiceLink(cfg, RecordingNotifier())
    since = datetime.fromisoformat(queue.get(running.id).updated or "").timestamp()
    clock = {"now": since + 2.5, "mono": 0.0}  # 2.5 s after the worker said 12.5 s were left
    state = TrayState(storage=StorageView(models=(("org/model-b", 2 * GB, False),)))
    monitor = StatusMonitor(cfg, link, Children(None, threading.Event()), state=lambda: state,
                            post=lambda **_: None, stopping=threading.Event())
    monitor.queue_time = QueueTime(cfg, now=lambda: clock["now"], monotonic=lambda: clock["mono"])
    changes = monitor.read_status(1)
    assert "work" not in changes  # for the monitor only, not tray state

    b = estimate.guess(estimate.Job("org/model-b", "cpu", 8, 64, 64, 10), estimate.Figures(2 * GB), loaded=False,
                       why="-")
    wan = estimate.guess(estimate.Job("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "cpu", 81, 832, 480, 40),
                         estimate.Figures(None, 0.25), loaded=False, why="-")
    left = 10.0
    same_model = 20 * 2.0 + 1.0 + 0.5  # loaded already: no load
    after_b = 10 * 2.0 + 1.0 + 0.5 + 3.0  # another model ran between: loaded again
    expected = round((clock["now"] + left + same_model + b.seconds + after_b + wan.seconds) / 60) * 60
    assert changes["queue_done"] == expected
    shown = TrayState(**{k: changes[k] for k in ("job", "queued", "queue_done")})
    assert tooltip(shown) == f"Generating 4/10, about 10 s left (+4 queued); queue done about " \
                             f"{estimate.clock(expected)}"

    # model-b runs once here: its history replaces the guess at the next reading of the sidecars.
    write_run(cfg.videos_dir, "b0", model="org/model-b", per_step_s=5.0)
    assert monitor.read_status(2)["queue_done"] == expected  # not read again yet
    clock["mono"] += HISTORY_EVERY_S
    b_known = 10 * 5.0 + 1.0 + 0.5 + 3.0
    assert monitor.read_status(3)["queue_done"] == \
        round((clock["now"] + left + same_model + b_known + after_b + wan.seconds) / 60) * 60

    # Nothing waiting, or nothing running: no done time.
    for job in queue.list():
        if job.state == "queued":
            queue.cancel(job.id)
    assert monitor.read_status(4)["queue_done"] is None
