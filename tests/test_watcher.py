"""The watcher on real folders with real videos: only finished files get in, whatever the writer does."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_for
from media_helpers import start_live_writer, write_mp4, write_source

from vidtray.services import media
from vidtray.services.fsutil import SYMLINK, walk_videos
from vidtray.services.library import Change, Library
from vidtray.services.watch.files import ignore_reason
from vidtray.services.watcher import Watcher

SETTLE = 0.3



@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Bytes of a real mp4 (index at the end, as ffmpeg writes it)."""
    path = write_mp4(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=16, width=96, height=64)
    return path.read_bytes()


@pytest.fixture(scope="module")
def faststart_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Bytes of a real mp4 with its index first (as web downloads usually are)."""
    d = tmp_path_factory.mktemp("fs")
    src = write_mp4(d / "src.mp4", frames=16, width=96, height=64)
    import subprocess

    subprocess.run([media.ffmpeg_exe(), "-y", "-v", "error", "-i", str(src), "-c", "copy", "-movflags",
                    "+faststart", str(d / "fs.mp4")], check=True)
    return (d / "fs.mp4").read_bytes()


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.folder = tmp_path / "watched"
        self.folder.mkdir()
        self.lib = Library(tmp_path / "library.json")
        self.thumbs = tmp_path / "thumbs"
        self.watchers: list[Watcher] = []

    def start(self, *folders: Path, settle_s: float = SETTLE) -> Watcher:
        w = Watcher(self.lib, list(folders) or [self.folder], thumbnails_dir=self.thumbs, settle_s=settle_s,
                    retry_s=0.2)
        w.start()
        self.watchers.append(w)
        return w

    def by_name(self) -> dict[str, dict]:
        return {Path(i.path).name: i.data for i in self.lib.items()}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    for w in e.watchers:
        w.stop()


def test_a_finished_video_is_imported_with_metadata_then_a_thumbnail(env: Env, clip: bytes) -> None:
    w = env.start()
    (env.folder / "new.mp4").write_bytes(clip)
    assert wait_for(lambda: "new.mp4" in env.by_name())
    assert w.wait_idle()
    item = env.by_name()["new.mp4"]
    assert item["status"] == "ready" and item["source"] == "imported"
    assert (item["duration_s"], item["fps"], item["width"], item["height"]) == (2.0, 8.0, 96, 64)
    assert item["size_bytes"] == len(clip)
    assert wait_for(lambda: env.by_name()["new.mp4"]["thumbnail"])
    assert Path(env.by_name()["new.mp4"]["thumbnail"]).is_file()


def test_close_after_write_and_moves_in_from_outside_are_the_fast_path(env: Env, clip: bytes) -> None:
    # A long settle time: only the inotify completion signals can make these arrive quickly.
    env.start(settle_s=30)
    t0 = time.monotonic()
    (env.folder / "closed.mp4").write_bytes(clip)
    outside = env.tmp / "outside.mp4"
    outside.write_bytes(clip)
    os.rename(outside, env.folder / "moved-in.mp4")
    assert wait_for(lambda: {"closed.mp4", "moved-in.mp4"} <= set(env.by_name()), timeout=10)
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("layout", ["index-last", "index-first"])
def test_a_slow_writer_is_never_imported_early(env: Env, clip: bytes, faststart_clip: bytes,
                                               layout: str) -> None:
    data = clip if layout == "index-last" else faststart_clip
    w = env.start()
    target = env.folder / "slow.mp4"
    chunks = 5
    step = len(data) // chunks + 1
    with open(target, "wb") as fh:
        for n in range(chunks):
            fh.write(data[n * step:(n + 1) * step])
            fh.flush()
            os.fsync(fh.fileno())
            if n < chunks - 1:
                # Pause well past the settle time: the watcher looks, probes, and must say no.
                time.sleep(SETTLE * 2.5)
                assert "slow.mp4" not in env.by_name(), f"imported after {n + 1} of {chunks} chunks"
    assert w.stats["skipped"] >= 1  # it did look at the partial file
    assert wait_for(lambda: "slow.mp4" in env.by_name())
    item = env.by_name()["slow.mp4"]
    assert item["status"] == "ready" and item["size_bytes"] == len(data) and item["duration_s"] == 2.0


def test_a_truncated_file_is_never_ready(env: Env, clip: bytes, faststart_clip: bytes,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vidtray")
    w = env.start()
    (env.folder / "cut.mp4").write_bytes(clip[: len(clip) // 2])
    (env.folder / "cut_fs.mp4").write_bytes(faststart_clip[: int(len(faststart_clip) * 0.7)])
    (env.folder / "ok.mp4").write_bytes(clip)
    assert wait_for(lambda: "ok.mp4" in env.by_name())
    assert wait_for(lambda: w.stats["skipped"] >= 2)
    assert w.wait_idle()
    assert set(env.by_name()) == {"ok.mp4"}
    assert "not importing" in caplog.text and "cut.mp4" in caplog.text and "cut_fs.mp4" in caplog.text
    # the download finishes later: now it gets in
    (env.folder / "cut.mp4").write_bytes(clip)
    assert wait_for(lambda: "cut.mp4" in env.by_name())


def test_rename_into_place_imports_the_destination_only(env: Env, clip: bytes) -> None:
    w = env.start()
    part = env.folder / "movie.mp4.part"
    part.write_bytes(clip)
    for name in ("dl.mp4.crdownload", "x.mp4.tmp", "~lock.mp4", ".hidden.mp4"):
        (env.folder / name).write_bytes(clip)
    (env.folder / ".partial").mkdir()
    (env.folder / ".partial" / "gen.mp4").write_bytes(clip)
    time.sleep(SETTLE * 3)
    assert w.wait_idle()
    assert env.by_name() == {}
    os.rename(part, env.folder / "movie.mp4")
    t0 = time.monotonic()
    assert wait_for(lambda: "movie.mp4" in env.by_name())
    # a rename is a completion signal: the short settle applies, not the full one
    assert time.monotonic() - t0 < 5
    assert w.wait_idle()
    assert set(env.by_name()) == {"movie.mp4"}


def test_a_deleted_video_is_missing_and_keeps_user_edits(env: Env, clip: bytes) -> None:
    w = env.start()
    video = env.folder / "keep.mp4"
    video.write_bytes(clip)
    assert wait_for(lambda: "keep.mp4" in env.by_name())
    item = env.by_name()["keep.mp4"]
    env.lib.edit(item["id"], title="Favourite", pinned=True, tags=["best"])
    video.unlink()
    assert wait_for(lambda: env.by_name()["keep.mp4"]["status"] == "missing")
    after = env.lib.get(item["id"]).data
    assert after["title"] == "Favourite" and after["pinned"] is True and after["tags"] == ["best"]
    # it comes back: ready again, edits still there
    video.write_bytes(clip)
    assert wait_for(lambda: env.lib.get(item["id"]).data["status"] == "ready")
    assert env.lib.get(item["id"]).data["title"] == "Favourite"
    assert w.wait_idle()


def test_renaming_an_imported_video_keeps_its_entry(env: Env, clip: bytes) -> None:
    env.start()
    (env.folder / "a.mp4").write_bytes(clip)
    assert wait_for(lambda: "a.mp4" in env.by_name())
    item = env.by_name()["a.mp4"]
    env.lib.edit(item["id"], pinned=True)
    (env.folder / "sub").mkdir()
    os.rename(env.folder / "a.mp4", env.folder / "sub" / "b.mp4")
    assert wait_for(lambda: "b.mp4" in env.by_name())
    moved = env.lib.get(item["id"]).data
    assert moved["path"] == str(env.folder / "sub" / "b.mp4") and moved["pinned"] is True
    assert moved["title"] == "b" and len(env.lib.items()) == 1


def test_moving_a_video_between_watch_folders_keeps_its_entry(env: Env, clip: bytes) -> None:
    # Two watch folders have separate inotify watches, so the move arrives as "gone here" and
    # "new there"; the file's identity (inode, size, mtime) ties them together.
    downloads = env.tmp / "downloads"
    downloads.mkdir()
    env.start(env.folder, downloads)
    (downloads / "dl.mp4").write_bytes(clip)
    assert wait_for(lambda: "dl.mp4" in env.by_name())
    item = env.by_name()["dl.mp4"]
    env.lib.edit(item["id"], tags=["keep"], title="Downloaded")
    os.rename(downloads / "dl.mp4", env.folder / "kept.mp4")
    assert wait_for(lambda: env.lib.get(item["id"]).data["path"] == str(env.folder / "kept.mp4"))
    moved = env.lib.get(item["id"]).data
    assert moved["status"] == "ready" and moved["tags"] == ["keep"] and moved["title"] == "Downloaded"
    assert len(env.lib.items()) == 1
    # a new file that happens to reuse a deleted file's inode is NOT taken for it
    (env.folder / "kept.mp4").unlink()
    assert wait_for(lambda: env.lib.get(item["id"]).data["status"] == "missing")
    (env.folder / "fresh.mp4").write_bytes(clip)
    assert wait_for(lambda: "fresh.mp4" in env.by_name())
    assert env.lib.get(item["id"]).data["status"] == "missing" and len(env.lib.items()) == 2


def test_reconcile_after_downtime(env: Env, clip: bytes) -> None:
    w = env.start()
    (env.folder / "a.mp4").write_bytes(clip)
    (env.folder / "b.mp4").write_bytes(clip)
    assert wait_for(lambda: {"a.mp4", "b.mp4"} <= set(env.by_name()))
    assert w.wait_idle()
    w.stop()
    # while it was down: one new, one deleted, one replaced by a longer clip, one in a new subfolder
    (env.folder / "a.mp4").unlink()
    (env.folder / "c.mp4").write_bytes(clip)
    write_mp4(env.folder / "b.mp4", frames=32, width=96, height=64)
    write_mp4(env.folder / "deep" / "er" / "d.mp4")
    old = time.time() - 60
    for p in env.folder.rglob("*.mp4"):
        os.utime(p, (old, old))
    w2 = env.start()
    assert wait_for(lambda: {"c.mp4", "d.mp4"} <= set(env.by_name()))
    assert w2.wait_idle()
    items = env.by_name()
    assert items["a.mp4"]["status"] == "missing"
    assert items["b.mp4"]["status"] == "ready" and items["b.mp4"]["duration_s"] == 4.0
    assert items["c.mp4"]["status"] == "ready"
    assert items["d.mp4"]["path"] == str(env.folder / "deep" / "er" / "d.mp4")


def test_sidecar_fills_generation_fields_before_or_after_the_video(env: Env, clip: bytes) -> None:
    env.start()
    side = {"prompt": "a red fox in snow", "model": "cerspense/zeroscope_v2_576w", "seed": 42,
            "created": "2024-05-01T10:00:00+00:00", "steps": 4, "timings": {"total_s": 1.0}}
    # sidecar first (as vidtray's generator writes it), then the video renamed into place
    (env.folder / "gen.vidtray.json").write_text(json.dumps(side))
    (env.folder / "gen.mp4.part").write_bytes(clip)
    os.rename(env.folder / "gen.mp4.part", env.folder / "gen.mp4")
    # video first, sidecar later; and two clips whose <stem>.json comes later: an older vidtray's sidecar
    # (it has vidtray_version) and another tool's notes (not vidtray's: the clip stays imported)
    for name in ("late", "legacy", "foreign"):
        (env.folder / f"{name}.mp4").write_bytes(clip)
    assert wait_for(lambda: {"gen.mp4", "late.mp4", "legacy.mp4", "foreign.mp4"} <= set(env.by_name()))
    gen = env.by_name()["gen.mp4"]
    assert gen["source"] == "generated" and gen["prompt"] == side["prompt"] and gen["seed"] == 42
    assert gen["model"] == side["model"] and gen["created"] == side["created"]
    assert env.by_name()["late.mp4"]["source"] == "imported"
    (env.folder / "foreign.json").write_text(json.dumps({"prompt": "someone's notes", "seed": 1}))
    (env.folder / "late.vidtray.json").write_text(json.dumps({**side, "prompt": "later"}))
    (env.folder / "legacy.json").write_text(json.dumps({**side, "prompt": "old name", "vidtray_version": "0.1"}))
    assert wait_for(lambda: env.by_name()["late.mp4"]["source"] == "generated")
    assert wait_for(lambda: env.by_name()["legacy.mp4"]["source"] == "generated")
    items = env.by_name()
    assert (items["late.mp4"]["prompt"], items["legacy.mp4"]["prompt"]) == ("later", "old name")
    assert items["foreign.mp4"]["source"] == "imported" and items["foreign.mp4"]["prompt"] is None
    assert not {"gen.vidtray.json", "foreign.json", "legacy.json"} & set(items)


def test_a_burst_is_written_in_batches(env: Env, clip: bytes) -> None:
    staging = env.tmp / "staging"
    staging.mkdir()
    for i in range(60):
        (staging / f"v{i:02d}.mp4").write_bytes(clip)
    w = env.start()
    assert w.wait_idle()
    for p in sorted(staging.iterdir()):
        os.rename(p, env.folder / p.name)
    assert wait_for(lambda: len(env.lib.items()) == 60, timeout=60)
    assert w.wait_idle(timeout=60)
    # 60 imports + 60 thumbnails; one write per tick, not per file
    assert w.stats["imported"] == 60
    assert w.stats["writes"] <= 10, w.stats
    assert all(i.thumbnail for i in env.lib.items())


def test_a_vanished_watch_folder_is_retried_and_the_watcher_keeps_running(
        env: Env, clip: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vidtray")
    drive = env.tmp / "drive"
    folder = drive / "videos"
    folder.mkdir(parents=True)
    other = env.folder
    w = env.start(folder, other)
    (folder / "a.mp4").write_bytes(clip)
    assert wait_for(lambda: "a.mp4" in env.by_name())
    # "unplug": the whole folder goes away at once (entries stay as they are, not "missing")
    os.rename(drive, env.tmp / "unplugged")
    assert wait_for(lambda: "vanished" in caplog.text)
    (other / "meanwhile.mp4").write_bytes(clip)
    assert wait_for(lambda: "meanwhile.mp4" in env.by_name())
    assert env.by_name()["a.mp4"]["status"] == "ready"
    # "plug back in", then a new file arrives there
    os.rename(env.tmp / "unplugged", drive)
    assert wait_for(lambda: "is back" in caplog.text)
    (folder / "b.mp4").write_bytes(clip)
    assert wait_for(lambda: "b.mp4" in env.by_name())
    # deleted outright and created again
    shutil.rmtree(drive)
    assert wait_for(lambda: env.by_name()["a.mp4"]["status"] == "missing")
    folder.mkdir(parents=True)
    time.sleep(0.5)
    (folder / "c.mp4").write_bytes(clip)
    assert wait_for(lambda: "c.mp4" in env.by_name())
    assert w._thread is not None and w._thread.is_alive()


def test_odd_files_are_ignored_and_logged(env: Env, clip: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vidtray")
    f = env.folder
    (f / "notes.txt").write_text("hello")
    (f / "empty.mp4").write_bytes(b"")
    (f / "garbage.mkv").write_bytes(os.urandom(4096))
    (f / "line\nbreak.mp4").write_bytes(clip)  # legal names, and JSON holds them: imported
    (f / "tab\there.mp4").write_bytes(clip)
    fd = os.open(os.fsencode(f) + b"/latin1-\xe9.mp4", os.O_WRONLY | os.O_CREAT)
    os.write(fd, clip)
    os.close(fd)
    (f / "loop").symlink_to(f)  # a symlink loop
    (f / "real").mkdir()
    (f / "real" / "target.mp4").write_bytes(clip)
    (f / "link.mp4").symlink_to(f / "real" / "target.mp4")
    long_name = "é" * 100 + ".mp4"
    (f / long_name).write_bytes(clip)
    (f / "spaces & 'quotes'.mp4").write_bytes(clip)
    w = env.start()
    odd = {"target.mp4", long_name, "spaces & 'quotes'.mp4", "line\nbreak.mp4", "tab\there.mp4"}
    assert wait_for(lambda: odd <= set(env.by_name()))
    (f / "later.txt").write_text("x")
    (f / "later-empty.webm").write_bytes(b"")
    (f / "after.mp4").write_bytes(clip)
    assert wait_for(lambda: "after.mp4" in env.by_name())
    time.sleep(SETTLE * 2)
    assert w.wait_idle()
    assert set(env.by_name()) == odd | {"after.mp4"}
    log = caplog.text
    for expected in ("notes.txt: not a video", "empty.mp4: empty file", "garbage.mkv",
                     "not valid UTF-8", "link.mp4: symlink", "later-empty.webm: empty file"):
        assert expected in log, expected


def test_foreign_edits_made_while_watching_survive(env: Env, clip: bytes) -> None:
    env.lib.path.write_text(json.dumps({"version": 1, "items": [], "editorState": {"zoom": 2}}))
    w = env.start()
    other_app = Library(env.lib.path)
    for i in range(5):
        (env.folder / f"v{i}.mp4").write_bytes(clip)
        other_app.update(lambda doc, i=i: Change(doc.setdefault("edits", []).append(i), True))
        time.sleep(0.05)
    assert wait_for(lambda: len(env.lib.items()) == 5)
    assert w.wait_idle()
    doc = json.loads(env.lib.path.read_bytes())
    assert doc["editorState"] == {"zoom": 2} and doc["edits"] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("rel,why", [
    ("a.mp4", None), ("sub/b.MKV", None), ("c.mp4.part", "temporary name"), ("~c.mp4", "temporary name"),
    (".partial/x.mp4", "hidden or in-progress (dot-name or .partial/)"), ("x.jpg", "not a video (extension)"),
    ("d.crdownload", "temporary name"), ("e.MOV", None),
])
def test_ignore_reason(tmp_path: Path, rel: str, why: str | None) -> None:
    assert ignore_reason(tmp_path / rel, tmp_path) == why


def test_a_rescan_imports_exactly_the_finished_videos_storage_counts(env: Env, clip: bytes) -> None:
    # One rule and one walk (fsutil): what the storage report and cleanup count as finished videos is what
    # the watcher imports, and what it passes over is said the same way.
    for rel in ("a.mp4", "b.MKV", "sub/c.webm", "sub/deeper/d.m4v", ".hidden.mp4", "~lock.mp4", "e.mp4.part",
                "f.crdownload", ".partial/g.mp4", "sub/.cache/h.mp4", "notes.txt"):
        (env.folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (env.folder / rel).write_bytes(clip)
    os.symlink(env.folder / "a.mp4", env.folder / "link.mp4")
    os.symlink(env.folder / "sub", env.folder / "sublink")
    finished = sorted(path for path, _ in walk_videos(os.fspath(env.folder)))
    assert [os.path.relpath(p, env.folder) for p in finished] == ["a.mp4", "b.MKV", "sub/c.webm",
                                                                  "sub/deeper/d.m4v"]
    report = Watcher(env.lib, [env.folder]).reconcile()
    assert sorted(report.imported) == finished
    assert report.skipped == [(os.fspath(env.folder / "link.mp4"), SYMLINK)]


def test_mkv_and_webm_written_live_are_imported_only_when_their_writers_finish(env: Env, tmp_path: Path) -> None:
    # ffmpeg -re writes for seconds, pausing between clusters longer than the settle time: the watcher
    # probes the growing files again and again, and must say no until each writer has finished.
    src = write_source(tmp_path / "src.mp4", seconds=5)
    w = env.start(settle_s=0.1)
    writers = {name: start_live_writer(src, env.folder / name) for name in ("live.mkv", "live.webm")}
    try:
        while any(p.poll() is None for p in writers.values()):
            early = [n for n, p in writers.items() if p.poll() is None and n in env.by_name()]
            assert not early, f"imported while being written: {early}"
            time.sleep(0.05)
    finally:
        for p in writers.values():
            p.wait(30)
    assert all(p.returncode == 0 for p in writers.values())
    assert w.stats["skipped"] >= 2  # it did look at the growing files
    assert wait_for(lambda: {"live.mkv", "live.webm"} <= set(env.by_name()))
    for name in ("live.mkv", "live.webm"):
        item = env.by_name()[name]
        assert item["status"] == "ready" and item["duration_s"] == 5.0, item


def test_a_writer_killed_mid_write_leaves_a_file_that_is_never_imported(env: Env, tmp_path: Path,
                                                                        clip: bytes) -> None:
    src = write_source(tmp_path / "src.mp4", seconds=8)
    w = env.start(settle_s=0.1)
    target = env.folder / "killed.mkv"
    writer = start_live_writer(src, target)
    try:
        assert wait_for(lambda: target.exists() and target.stat().st_size > 20_000, timeout=20)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    (env.folder / "ok.mp4").write_bytes(clip)
    assert wait_for(lambda: "ok.mp4" in env.by_name())
    assert wait_for(lambda: w.stats["skipped"] >= 1)
    time.sleep(1.0)
    assert w.wait_idle()
    assert "killed.mkv" not in env.by_name()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "PPM"])
def test_a_still_image_renamed_to_mp4_is_not_imported(env: Env, clip: bytes, fmt: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from PIL import Image

    caplog.set_level(logging.INFO, logger="vidtray")
    w = env.start()
    Image.new("RGB", (64, 48), (10, 200, 10)).save(env.folder / "photo.mp4", fmt)
    (env.folder / "video.mp4").write_bytes(clip)
    assert wait_for(lambda: "video.mp4" in env.by_name())
    assert wait_for(lambda: w.stats["skipped"] >= 1)
    assert w.wait_idle()
    assert set(env.by_name()) == {"video.mp4"}
    assert "photo.mp4: a still image" in caplog.text


def test_a_watch_folder_that_links_to_another_is_watched_once(env: Env, clip: bytes) -> None:
    (env.folder / "before.mp4").write_bytes(clip)
    link = env.tmp / "link"
    link.symlink_to(env.folder, target_is_directory=True)
    w = env.start(env.folder, link)
    assert wait_for(lambda: "before.mp4" in env.by_name())
    (link / "through-the-link.mp4").write_bytes(clip)
    (env.folder / "direct.mp4").write_bytes(clip)
    assert wait_for(lambda: len(env.by_name()) == 3)
    assert w.wait_idle()
    assert sorted(i.path for i in env.lib.items()) == [
        str(env.folder / n) for n in ("before.mp4", "direct.mp4", "through-the-link.mp4")]
    assert w.folders == [env.folder]


def test_a_watch_folder_that_holds_another_through_a_link_lists_each_file_once(env: Env, clip: bytes) -> None:
    """watch_dirs = ["~/clips"] where ~/clips links to the folder that holds the videos folder: every video
    has two paths; the library lists it once, under the path it already has, else the videos folder's."""
    data = env.tmp / "data"
    videos = data / "videos"
    videos.mkdir(parents=True)
    clips = env.tmp / "clips"
    clips.symlink_to(data, target_is_directory=True)
    (videos / "a.mp4").write_bytes(clip)
    (data / "elsewhere.mp4").write_bytes(clip)
    (videos / "listed.mp4").write_bytes(clip)
    # Listed (by an older vidtray) under the link's path, with an edit: that entry stays as it is.
    env.lib.add_video(clips / "videos" / "listed.mp4", title="my title")
    w = env.start(videos, clips)
    assert w.folders == [videos, clips]
    assert wait_for(lambda: len(env.by_name()) == 3)
    (videos / "b.mp4").write_bytes(clip)  # both folders' observers see it
    assert wait_for(lambda: "b.mp4" in env.by_name())
    assert w.wait_idle()
    time.sleep(2 * SETTLE)
    assert w.wait_idle()
    assert sorted(i.path for i in env.lib.items()) == sorted(
        [str(videos / "a.mp4"), str(clips / "elsewhere.mp4"), str(clips / "videos" / "listed.mp4"),
         str(videos / "b.mp4")])
    assert env.by_name()["listed.mp4"]["title"] == "my title"
    (videos / "listed.mp4").unlink()
    assert wait_for(lambda: env.by_name()["listed.mp4"]["status"] == "missing")
    assert w.wait_idle() and len(env.lib.items()) == 4
    w.stop()
    # A reconcile (start, `library rescan`) agrees.
    report = Watcher(env.lib, [videos, clips]).reconcile()
    assert report.imported == [] and len(env.lib.items()) == 4
