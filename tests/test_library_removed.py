"""``library remove`` sticks: the watcher (on start and on events) and ``library rescan`` leave a removed
video out until ``library rescan --include-removed``; a new file at that path is a new video."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_for
from media_helpers import write_mp4

from vidtray.config import Config
from vidtray.services.library import Library, open_library
from vidtray.services.watcher import Watcher


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("clips")
    return write_mp4(d / "one.mp4", frames=8), write_mp4(d / "two.mp4", frames=12)


class Scene:
    def __init__(self, tmp_path: Path, clips: tuple[Path, Path]) -> None:
        self.folder = tmp_path / "videos"
        self.folder.mkdir()
        self.removed_file = tmp_path / "state" / "removed.json"
        self.lib = Library(tmp_path / "library.json", removed_file=self.removed_file)
        self.clips = clips
        self.watchers: list[Watcher] = []
        for name in ("keep.mp4", "drop.mp4"):
            shutil.copyfile(clips[0], self.folder / name)
        Watcher(self.lib, [self.folder]).reconcile()

    def start(self) -> Watcher:
        w = Watcher(self.lib, [self.folder], settle_s=0.2, retry_s=0.2)
        w.start()
        self.watchers.append(w)
        assert w.wait_idle()
        return w

    def names(self) -> set[str]:
        return {Path(i.path).name for i in self.lib.items()}

    def remove(self, name: str) -> dict:
        item = next(i for i in self.lib.items() if Path(i.path).name == name)
        return self.lib.remove(item.id)


@pytest.fixture
def scene(tmp_path: Path, clips: tuple[Path, Path]) -> Iterator[Scene]:
    s = Scene(tmp_path, clips)
    yield s
    for w in s.watchers:
        w.stop()


def test_a_removed_video_stays_out_of_reconcile_and_watcher_start(scene: Scene) -> None:
    assert scene.names() == {"keep.mp4", "drop.mp4"}
    scene.remove("drop.mp4")
    assert (scene.folder / "drop.mp4").is_file()  # the file stays
    report = Watcher(scene.lib, [scene.folder]).reconcile()
    assert report.imported == [] and report.removed == [str(scene.folder / "drop.mp4")]
    scene.start()
    assert scene.names() == {"keep.mp4"}
    # The record is vidtray's own state, not a key other apps see in library.json.
    assert "drop.mp4" not in scene.lib.path.read_text()
    assert json.loads(scene.removed_file.read_text())["files"][0]["path"] == str(scene.folder / "drop.mp4")


def test_live_events_keep_it_out_even_when_moved(scene: Scene) -> None:
    scene.remove("drop.mp4")
    w = scene.start()
    (scene.folder / "sub").mkdir()
    os.rename(scene.folder / "drop.mp4", scene.folder / "sub" / "renamed.mp4")
    os.utime(scene.folder / "keep.mp4")  # an event for a known file, so we know the watcher ran
    shutil.copyfile(scene.clips[1], scene.folder / "fresh.mp4")
    assert wait_for(lambda: "fresh.mp4" in scene.names())
    assert w.wait_idle()
    assert scene.names() == {"keep.mp4", "fresh.mp4"}
    # A restart (reconcile) agrees.
    w.stop()
    scene.start()
    assert scene.names() == {"keep.mp4", "fresh.mp4"}


def test_a_new_file_at_the_removed_path_is_imported(scene: Scene) -> None:
    scene.remove("drop.mp4")
    w = scene.start()
    target = scene.folder / "drop.mp4"
    target.unlink()
    shutil.copyfile(scene.clips[1], target)  # other content, other size and mtime
    assert wait_for(lambda: "drop.mp4" in scene.names())
    assert w.wait_idle()
    item = next(i for i in scene.lib.items() if i.path == str(target))
    assert item.data["size_bytes"] == target.stat().st_size and item.status == "ready"


def test_forgotten_when_the_file_is_gone(scene: Scene) -> None:
    scene.remove("drop.mp4")
    (scene.folder / "drop.mp4").unlink()
    Watcher(scene.lib, [scene.folder]).reconcile()
    assert json.loads(scene.removed_file.read_text())["files"] == []


def test_unreadable_state_means_nothing_removed(scene: Scene) -> None:
    scene.remove("drop.mp4")
    scene.removed_file.write_text("{not json")
    Watcher(scene.lib, [scene.folder]).reconcile()
    assert scene.names() == {"keep.mp4", "drop.mp4"}


def test_cli_remove_rescan_and_include_removed(cli, cfg: Config, clips: tuple[Path, Path]) -> None:
    for name in ("a.mp4", "b.mp4"):
        shutil.copyfile(clips[0], cfg.videos_dir / name)
    assert cli("library", "rescan").returncode == 0
    lib = open_library(cfg)
    b = next(i for i in lib.items() if i.path.endswith("b.mp4"))
    r = cli("library", "remove", b.id)
    assert r.returncode == 0 and "--include-removed" in r.stdout
    assert (cfg.state_dir / "removed.json").is_file()

    r = cli("library", "rescan")
    assert r.returncode == 0 and "left out 1 video you removed" in r.stdout, r.stdout
    assert [i.path for i in lib.items()] == [str(cfg.videos_dir / "a.mp4")]
    doc = json.loads(cli("library", "rescan", "--json").stdout)
    assert doc["imported"] == [] and doc["removed"] == [str(cfg.videos_dir / "b.mp4")]

    r = cli("library", "rescan", "--include-removed", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["imported"] == doc["restored"] == [str(cfg.videos_dir / "b.mp4")]
    assert sorted(Path(i.path).name for i in lib.items()) == ["a.mp4", "b.mp4"]
    # Forgotten: a plain rescan keeps it now.
    assert json.loads(cli("library", "rescan", "--json").stdout)["removed"] == []
    assert len(lib.items()) == 2


def test_removed_while_away_stays_out_when_it_comes_back(scene: Scene, tmp_path: Path) -> None:
    # The file is elsewhere (a drive unplugged) when the user removes its entry: path and size identify it.
    away = tmp_path / "away.mp4"
    os.rename(scene.folder / "drop.mp4", away)
    scene.remove("drop.mp4")
    os.rename(away, scene.folder / "drop.mp4")
    report = Watcher(scene.lib, [scene.folder]).reconcile()
    assert report.removed == [str(scene.folder / "drop.mp4")] and scene.names() == {"keep.mp4"}


def test_a_removal_that_cannot_be_remembered_changes_nothing(cli, cfg: Config, clips: tuple[Path, Path]) -> None:
    shutil.copyfile(clips[0], cfg.videos_dir / "a.mp4")
    assert cli("library", "rescan").returncode == 0
    cfg.state_dir.parent.mkdir(parents=True, exist_ok=True)
    cfg.state_dir.write_text("not a folder")
    before = cfg.library_file.read_bytes()
    [item] = open_library(cfg).items()
    r = cli("library", "remove", item.id)
    assert r.returncode == 1 and "cannot record the removal" in r.stderr and len(r.stderr.splitlines()) == 1
    assert cfg.library_file.read_bytes() == before
