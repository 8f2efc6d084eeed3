"""The prune job as a plain function of ``now``, on real files, the real library and the real trash."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import pytest
from helpers import wait_for
from media_helpers import write_mp4

from vidtray.config import Config
from vidtray.services.jobs import Jobs, JobScheduler
from vidtray.services.library import Change, open_library
from vidtray.services.notify import RecordingNotifier
from vidtray.services.sidecar import sidecar_path
from vidtray.services.storage import iso

DAY = 86400.0
NOW = time.time()


@pytest.fixture(scope="module")
def sample_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mp4(tmp_path_factory.mktemp("media") / "sample.mp4")


def aged(path: Path, days: float, now: float = NOW) -> Path:
    t = now - days * DAY
    os.utime(path, (t, t))
    return path


class Scene:
    """A videos folder with old, new, pinned, scheduled videos and things that are not ours."""

    def __init__(self, cfg: Config, sample: Path, root: Path) -> None:
        self.cfg = cfg
        v = cfg.videos_dir
        v.mkdir(parents=True, exist_ok=True)

        ages: dict[Path, float] = {}

        def video(name: str, days: float, sidecar: bool = True) -> Path:
            path = v / name
            ages[path] = days
            shutil.copyfile(sample, path)
            if sidecar:
                sidecar_path(path).write_text(json.dumps({"prompt": f"prompt of {name}", "seed": 1}))
                aged(sidecar_path(path), days)
            return aged(path, days)

        self.old = video("zeroscope_20240101-000000_aaaaaaaa.mp4", 40)
        self.old2 = video("imported_old.mp4", 31, sidecar=False)
        # An older vidtray's sidecar name (vidtray's own: it goes with the video), and another tool's
        # clip.json beside a clip (not vidtray's: it stays).
        self.legacy = v / "zeroscope_20240101-000000_aaaaaaaa.json"
        self.legacy.write_text(json.dumps({"prompt": "p", "vidtray_version": "0.1.0"}))
        aged(self.legacy, 40)
        self.foreign = v / "imported_old.json"
        self.foreign.write_text(json.dumps({"prompt": "another tool's notes", "seed": 3}))
        aged(self.foreign, 31)
        self.new = video("zeroscope_20240301-000000_bbbbbbbb.mp4", 2)
        self.pinned = video("pinned_old.mp4", 90)
        self.scheduled = video("scheduled_old.mp4", 90)
        # Not ours to prune: in-progress files, a symlink to an old file outside, an old file outside.
        cfg.partial_dir.mkdir(parents=True, exist_ok=True)
        self.partial = aged(shutil.copyfile(sample, cfg.partial_dir / "job.mp4"), 60)
        self.outside = aged(shutil.copyfile(sample, root / "outside_old.mp4"), 60)
        self.link = v / "link_to_outside.mp4"
        self.link.symlink_to(self.outside)
        thumbs = cfg.thumbnails_dir
        thumbs.mkdir(parents=True, exist_ok=True)
        self.thumb = thumbs / "old.jpg"
        self.thumb.write_bytes(b"\xff\xd8 jpeg")

        lib = open_library(cfg)
        items = {}
        for path in (self.old, self.old2, self.new, self.pinned, self.scheduled):
            # Imported when it was made: the library first listed it as long ago as its mtime says.
            items[path] = lib.add_video(path, added=iso(NOW - ages[path] * DAY))
        lib.update(lambda doc: _edit(doc, {
            str(self.pinned): {"pinned": True},
            str(self.scheduled): {"scheduled_at": "2030-01-01T09:00:00+00:00"},
            str(self.old): {"thumbnail": str(self.thumb)},
        }))
        self.ids = {path: item["id"] for path, item in items.items()}

    def status(self, path: Path) -> str:
        """The item's status, or "gone" when it left the library."""
        items = {item.id: item for item in open_library(self.cfg).items()}
        return str(items[self.ids[path]].status) if self.ids[path] in items else "gone"


def _edit(doc: dict, changes: dict[str, dict]) -> Change[None]:
    for item in doc["items"]:
        item.update(changes.get(item["path"], {}))
    return Change(None, True)


def make_scene(tmp_path: Path, sample: Path, **cfg_map: object) -> tuple[Scene, Jobs, RecordingNotifier]:
    cfg = Config.from_mapping({"prune_after_days": 30, **cfg_map}, "<test>")
    scene = Scene(cfg, sample, tmp_path)
    rec = RecordingNotifier()
    return scene, Jobs(cfg, rec), rec


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            st = os.lstat(p)
            out[str(p)] = (st.st_size, st.st_mtime)
    return out


def test_prune_to_trash_keeps_pinned_scheduled_new_and_foreign(tmp_path: Path, sample_mp4: Path,
                                                               isolated_env: dict[str, Path]) -> None:
    scene, jobs, rec = make_scene(tmp_path, sample_mp4)
    videos = scene.cfg.videos_dir
    before_outside = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(str(scene.cfg.data_dir))}
    size = scene.old.stat().st_size

    outcome = jobs.prune(NOW)

    assert outcome.deleted == 2
    for gone in (scene.old, sidecar_path(scene.old), scene.legacy, scene.old2, scene.thumb):
        assert not gone.exists(), gone
    for kept in (scene.new, scene.pinned, scene.scheduled, scene.partial, scene.outside,
                 sidecar_path(scene.new), sidecar_path(scene.pinned), scene.foreign):
        assert kept.exists(), kept
    assert scene.link.is_symlink()
    # In the real trash (XDG_DATA_HOME points into tmp_path), sidecar and thumbnail with them.
    trash = isolated_env["XDG_DATA_HOME"] / "Trash"
    trashed = sorted(p.name for p in (trash / "files").iterdir())
    assert trashed == sorted([scene.old.name, sidecar_path(scene.old).name, scene.legacy.name, scene.old2.name,
                              scene.thumb.name])
    info = (trash / "info" / f"{scene.old.name}.trashinfo").read_text()
    assert f"Path={scene.old}" in info
    # Library: the deleted ones leave it (deleted on purpose, not "missing"), the rest untouched.
    assert scene.status(scene.old) == "gone" and scene.status(scene.old2) == "gone"
    assert {scene.status(p) for p in (scene.new, scene.pinned, scene.scheduled)} == {"ready"}
    # One summary notification.
    [note] = rec.sent
    # Honest: the trash is on the same disk, so nothing is "freed" until it is emptied.
    assert note.kind == "prune_summary" and note.body.startswith("Pruned 2 videos (")
    assert note.body.endswith("frees when the trash is emptied")
    assert outcome.freed_bytes >= 2 * size
    # Nothing outside the data folder changed (the trash is where things went).
    after_outside = {k: v for k, v in snapshot(tmp_path).items()
                     if not k.startswith(str(scene.cfg.data_dir)) and not k.startswith(str(trash))}
    assert after_outside == before_outside
    assert videos.is_dir()

    # A second run finds nothing and says nothing.
    assert jobs.prune(NOW + 60).deleted == 0
    assert len(rec.sent) == 1


def test_prune_permanent_leaves_the_trash_empty(tmp_path: Path, sample_mp4: Path,
                                                 isolated_env: dict[str, Path]) -> None:
    scene, jobs, rec = make_scene(tmp_path, sample_mp4, prune_to_trash=False)
    assert jobs.prune(NOW).deleted == 2
    assert not scene.old.exists() and not scene.old2.exists()
    assert not (isolated_env["XDG_DATA_HOME"] / "Trash").exists()
    assert scene.pinned.exists() and scene.new.exists()


def test_trash_impossible_deletes_nothing_and_says_so(tmp_path: Path, sample_mp4: Path,
                                                      isolated_env: dict[str, Path]) -> None:
    scene, jobs, rec = make_scene(tmp_path, sample_mp4)
    # A file where the trash folder should be: send2trash cannot create Trash/files.
    (isolated_env["XDG_DATA_HOME"] / "Trash").write_text("not a folder")
    outcome = jobs.prune(NOW)
    assert outcome.deleted == 0 and outcome.skipped
    assert scene.old.exists() and scene.old2.exists()
    assert rec.kinds() == ["prune_failed"]
    assert jobs.last_prune() is None  # not recorded: the next start tries again


def test_prune_after_days_zero_never_prunes(tmp_path: Path, sample_mp4: Path) -> None:
    scene, jobs, rec = make_scene(tmp_path, sample_mp4, prune_after_days=0)
    assert jobs.prune(NOW).skipped == "prune_after_days = 0"
    assert not jobs.prune_due(NOW)
    assert scene.old.exists() and rec.sent == []


def test_videos_folder_deleted_while_running(tmp_path: Path) -> None:
    cfg = Config.from_mapping({"prune_after_days": 30}, "<test>")
    rec = RecordingNotifier()
    jobs = Jobs(cfg, rec)
    assert not cfg.videos_dir.exists()
    assert jobs.prune(NOW).skipped == "no videos folder"
    assert rec.sent == []


def test_overdue_logic_with_a_fake_clock(tmp_path: Path) -> None:
    cfg = Config.from_mapping({"prune_after_days": 30, "prune_interval_s": DAY}, "<test>")
    cfg.videos_dir.mkdir(parents=True)
    jobs = Jobs(cfg, RecordingNotifier())
    assert jobs.last_prune() is None and jobs.prune_due(NOW) and jobs.next_prune_at(NOW) == NOW
    jobs.prune(NOW)
    assert jobs.last_prune() == NOW
    state = json.loads(jobs.state_file.read_text())
    assert state["version"] == 1 and state["last_prune_ts"] == NOW
    assert not jobs.prune_due(NOW + DAY - 1)
    assert jobs.next_prune_at(NOW + 3600) == NOW + DAY
    assert jobs.prune_due(NOW + DAY)  # the laptop slept through the night: due at start
    assert jobs.prune_due(NOW - 2 * DAY)  # last run "in the future": the clock was wrong, run
    jobs.state_file.write_text("{broken")
    assert jobs.last_prune() is None and jobs.prune_due(NOW)



def test_scheduler_prunes_at_start_only_when_overdue(tmp_path: Path, sample_mp4: Path) -> None:
    scene, jobs, rec = make_scene(tmp_path, sample_mp4, prune_interval_s=DAY, disk_check_interval_s=0.2,
                                  warn_free_gb=0, min_free_gb=0)
    # Pruned an hour ago: not due; the start runs the disk check but leaves the videos alone.
    jobs._record_prune(time.time() - 3600)
    sched = JobScheduler(jobs)
    sched.start()
    try:
        time.sleep(0.8)
        assert scene.old.exists()
    finally:
        sched.stop()
    # Pruned two days ago (the laptop was off): the start prunes at once.
    jobs._record_prune(time.time() - 2 * DAY)
    sched = JobScheduler(jobs)
    sched.start()
    try:
        assert wait_for(lambda: not scene.old.exists())
        assert wait_for(lambda: rec.kinds() == ["prune_summary"])
        # the run is recorded after its summary is sent: wait for it too
        assert wait_for(lambda: abs((jobs.last_prune() or 0.0) - time.time()) < 10)
    finally:
        sched.stop()
        sched.stop()  # idempotent


def test_a_failing_job_does_not_stop_the_scheduler(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = Config.from_mapping({"disk_check_interval_s": 0.1, "prune_after_days": 0}, "<test>")
    calls: list[Path] = []

    def flaky(path: Path) -> int:
        calls.append(path)
        if len(calls) < 6:
            raise RuntimeError("volume vanished")
        return 10**12

    caplog.set_level(logging.INFO, logger="vidtray")
    jobs = Jobs(cfg, RecordingNotifier(), free_bytes=flaky)
    sched = JobScheduler(jobs)
    sched.start()
    try:
        assert wait_for(lambda: len(calls) >= 8)
    finally:
        sched.stop()
    # several failed runs in a row: said once (with the reason), and once more when it works again
    failed = [r for r in caplog.records if "disk_check job failed" in r.getMessage()]
    assert len(failed) == 1 and "volume vanished" in failed[0].getMessage()
    assert sum("disk_check job works again" in r.getMessage() for r in caplog.records) == 1


def test_a_clip_copied_in_with_its_old_date_is_not_pruned(tmp_path: Path, sample_mp4: Path) -> None:
    """`cp -p` keeps a 400-day-old mtime; the clip is new to vidtray, so the prune leaves it until it has
    been in the library for prune_after_days."""
    import subprocess

    from vidtray.services.watcher import Watcher

    scene, jobs, rec = make_scene(tmp_path, sample_mp4)
    camera = aged(shutil.copyfile(sample_mp4, tmp_path / "holiday.mp4"), 400)
    clip = scene.cfg.videos_dir / "holiday.mp4"
    subprocess.run(["cp", "-p", str(camera), str(clip)], check=True)
    assert clip.stat().st_mtime == pytest.approx(NOW - 400 * DAY, abs=1)

    # Seconds after it arrived, before the watcher imported it: not in the library, so it counts as new.
    assert jobs.prune(time.time()).deleted == 2  # the two old videos of the scene
    assert clip.exists() and not scene.old.exists()
    # Imported (a real reconcile, as the watcher and `library rescan` do): first listed now.
    lib = open_library(scene.cfg)
    assert Watcher(lib, [scene.cfg.videos_dir]).reconcile().imported == [str(clip)]
    assert jobs.prune(time.time()).deleted == 0
    assert jobs.prune(time.time() + 29 * DAY).deleted == 1  # only the scene's 2-day-old video is old now
    assert clip.exists() and not scene.new.exists()
    # In the library for longer than prune_after_days: old now.
    assert jobs.prune(time.time() + 31 * DAY).deleted == 1
    assert not clip.exists()
