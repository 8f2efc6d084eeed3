"""The disk check as a plain function of ``now``: free space comes from a fake at the edge
(the one thing a test cannot set on a real disk); volumes, flag file and notifications are real."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from vidtray.config import Config
from vidtray.paths import mount_point
from vidtray.services.jobs import REARM_FRACTION, GiB, Jobs
from vidtray.services.notify import RecordingNotifier
from vidtray.services.queue import read_pause_flag

NOW = 1_750_000_000.0


class FakeDisk:
    """Free space per mount point, settable by the test."""

    def __init__(self, free: float) -> None:
        self.free: dict[str, int | None] = {}
        self.default: int | None = int(free)
        self.asked: list[Path] = []

    def __call__(self, path: Path) -> int | None:
        self.asked.append(path)
        return self.free.get(str(mount_point(path)), self.default)


def make(cfg_map: dict, free: float, tmp_path: Path, cache: Path | None = None) -> tuple[Jobs, FakeDisk,
                                                                                          RecordingNotifier]:
    cfg = Config.from_mapping(cfg_map, "<test>")
    cfg.videos_dir.mkdir(parents=True, exist_ok=True)
    disk = FakeDisk(free)
    rec = RecordingNotifier()
    cache_dir = cache if cache is not None else tmp_path / "home" / ".cache" / "huggingface" / "hub"
    return Jobs(cfg, rec, free_bytes=disk, cache_dir=lambda: cache_dir), disk, rec


def test_warning_once_per_crossing_with_hysteresis(tmp_path: Path) -> None:
    warn = 5 * GiB
    jobs, disk, rec = make({"warn_free_gb": 5, "min_free_gb": 1}, warn, tmp_path)
    # Exactly at the threshold is not below it.
    jobs.check_disk(NOW)
    assert rec.sent == []
    # One byte below: one warning, and only one however often the check runs.
    disk.default = warn - 1
    for i in range(5):
        jobs.check_disk(NOW + 600 * i)
    assert rec.kinds() == ["low_disk"]
    assert rec.sent[0].title == "Low disk space"
    # Both on one volume: one reading; the text names the threshold and its key.
    assert rec.sent[0].body.endswith("(videos, model cache); vidtray warns below 5 GiB (warn_free_gb)")
    # Back to the threshold, and just under the re-arm margin: still the same crossing.
    disk.default = warn
    jobs.check_disk(NOW)
    disk.default = int(warn * (1 + REARM_FRACTION)) - 1
    jobs.check_disk(NOW)
    disk.default = warn - 1
    jobs.check_disk(NOW)
    assert rec.kinds() == ["low_disk"]
    # Clearly back above, then below again: a new crossing, a new warning.
    disk.default = int(warn * (1 + REARM_FRACTION))
    jobs.check_disk(NOW)
    disk.default = warn - 1
    jobs.check_disk(NOW)
    assert rec.kinds() == ["low_disk", "low_disk"]
    assert not jobs.cfg.paths.pause_flag.exists()


def test_each_volume_is_warned_about_on_its_own(tmp_path: Path) -> None:
    # The model cache on another real mount (/dev/shm is a tmpfs here).
    shm = Path("/dev/shm")
    if not os.path.ismount(shm):
        pytest.skip("needs a second mount point")
    jobs, disk, rec = make({"warn_free_gb": 5, "min_free_gb": 1}, 10 * GiB, tmp_path,
                           cache=shm / "no-such-cache-folder" / "hub")
    readings = jobs.check_disk(NOW).readings
    assert sorted(r.where.split(" (")[1] for r in readings) == ["model cache)", "videos)"]
    disk.free["/dev/shm"] = 2 * GiB
    jobs.check_disk(NOW)
    assert [n.body for n in rec.sent] == [
        "2.0 GiB free on /dev/shm (model cache); vidtray warns below 5 GiB (warn_free_gb)"]
    disk.free["/dev/shm"] = None  # the volume disappears: no crash, no re-arm, no warning
    jobs.check_disk(NOW)
    disk.free["/dev/shm"] = 2 * GiB
    jobs.check_disk(NOW)
    assert len(rec.sent) == 1


def test_pause_flag_below_min_and_resume(tmp_path: Path) -> None:
    jobs, disk, rec = make({"warn_free_gb": 5, "min_free_gb": 1}, 10 * GiB, tmp_path)
    flag = jobs.cfg.paths.pause_flag
    disk.default = GiB - 1
    report = jobs.check_disk(NOW)
    assert report.paused and report.changed == "paused"
    doc = json.loads(flag.read_text())
    assert set(doc) >= {"reason", "since"}
    assert "1 GiB is free (min_free_gb)" in doc["reason"]
    assert datetime.fromisoformat(doc["since"]).timestamp() == NOW
    assert rec.kinds() == ["low_disk", "queue_paused"]
    assert rec.of_kind("queue_paused")[0].body == doc["reason"]
    # Still low: nothing new. At the minimum (not clearly above): still paused.
    jobs.check_disk(NOW + 600)
    disk.default = GiB
    assert jobs.check_disk(NOW + 1200).paused
    assert rec.kinds() == ["low_disk", "queue_paused"]
    # Space returns: the flag goes, one "resumed".
    disk.default = 2 * GiB
    report = jobs.check_disk(NOW + 1800)
    assert not flag.exists() and report.changed == "resumed"
    assert rec.kinds() == ["low_disk", "queue_paused", "queue_resumed"]
    # A new drop pauses again (the low-disk warning is still armed from before: no second one).
    disk.default = GiB // 2
    jobs.check_disk(NOW + 2400)
    assert flag.exists()
    assert rec.kinds() == ["low_disk", "queue_paused", "queue_resumed", "queue_paused"]


def test_someone_elses_pause_flag_is_left_alone(tmp_path: Path) -> None:
    jobs, disk, rec = make({}, 10 * GiB, tmp_path)
    flag = jobs.cfg.paths.pause_flag
    flag.parent.mkdir(parents=True)
    flag.write_text(json.dumps({"reason": "paused by the user", "since": "2025-01-01T00:00:00+00:00"}))
    report = jobs.check_disk(NOW)
    assert report.paused and flag.exists()
    assert read_pause_flag(flag) == {"reason": "paused by the user", "since": "2025-01-01T00:00:00+00:00"}
    disk.default = 0
    jobs.check_disk(NOW)  # already paused: no second writer, no "paused" notification
    assert rec.kinds() == ["low_disk"]
    assert json.loads(flag.read_text())["reason"] == "paused by the user"


def test_a_fresh_daemon_resumes_a_pause_left_by_an_earlier_one(tmp_path: Path) -> None:
    jobs, disk, rec = make({}, GiB // 2, tmp_path)
    jobs.check_disk(NOW)
    # A new Jobs (daemon restarted after the user freed space) picks up the flag it finds.
    jobs2 = Jobs(jobs.cfg, rec, free_bytes=FakeDisk(20 * GiB), cache_dir=lambda: tmp_path)
    jobs2.check_disk(NOW + 60)
    assert not jobs.cfg.paths.pause_flag.exists()
    assert rec.kinds()[-1] == "queue_resumed"


def test_zero_thresholds_never_warn_or_pause(tmp_path: Path) -> None:
    jobs, _, rec = make({"warn_free_gb": 0, "min_free_gb": 0}, 0, tmp_path)
    assert not jobs.check_disk(NOW).paused
    assert rec.sent == []


def test_unreadable_volume_is_skipped_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    jobs, disk, rec = make({}, 0, tmp_path)
    disk.default = None
    for _ in range(3):
        report = jobs.check_disk(NOW)
    assert [r.free_bytes for r in report.readings] == [None]
    assert rec.sent == [] and not report.paused
    assert sum("cannot read the free space" in r.getMessage() for r in caplog.records) == 1


def test_real_free_space_of_a_deleted_videos_folder(tmp_path: Path) -> None:
    # The real paths.free_bytes: a videos folder removed while running is measured on its parent.
    cfg = Config.from_mapping({"warn_free_gb": 0, "min_free_gb": 0}, "<test>")
    rec = RecordingNotifier()
    jobs = Jobs(cfg, rec)
    cfg.videos_dir.mkdir(parents=True)
    first = jobs.check_disk(NOW).readings
    cfg.videos_dir.rmdir()
    second = jobs.check_disk(NOW).readings
    assert all(r.free_bytes and r.free_bytes > 0 for r in first + second)
    assert [r.key for r in first] == [r.key for r in second]
