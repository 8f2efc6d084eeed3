"""``vidtray library ...`` via the real entry point: output, exit codes, nothing changed on bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from media_helpers import write_mp4

from vidtray.config import Config
from vidtray.errors import UserError
from vidtray.services.library import Change, Library


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mp4(tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture
def filled(cfg: Config, clip: Path) -> dict[str, str]:
    """A library with two real videos (one with a sidecar) and a foreign item and key."""
    a = shutil.copyfile(clip, cfg.videos_dir / "alpha.mp4")
    b = shutil.copyfile(clip, cfg.videos_dir / "beta.mp4")
    (cfg.videos_dir / "beta.json").write_text(json.dumps({"prompt": "a beta fish", "seed": 1}))
    cfg.library_file.write_text(json.dumps({"version": 1, "owner": "other-app",
                                            "items": [{"id": "img", "type": "image", "path": "/i.png"}]}))
    lib = Library(cfg.library_file)
    ia, ib = lib.add_videos([(a, {"duration_s": 1.0}), (b, {"duration_s": 1.0})])
    return {"alpha": ia["id"], "beta": ib["id"]}


def test_list_json_and_text(cli, filled: dict[str, str]) -> None:
    r = cli("library", "list", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [i["id"] for i in doc["items"]] == [filled["alpha"], filled["beta"]]
    r = cli("library", "list")
    assert r.returncode == 0
    assert filled["alpha"] in r.stdout and "alpha" in r.stdout and "2 items" in r.stdout


def test_list_empty(cli, cfg: Config) -> None:
    r = cli("library", "list")
    assert r.returncode == 0 and "no videos" in r.stdout
    assert json.loads(cli("library", "list", "--json").stdout)["items"] == []


def test_show(cli, filled: dict[str, str]) -> None:
    r = cli("library", "show", filled["alpha"], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["title"] == "alpha"
    r = cli("library", "show", filled["alpha"])
    assert r.returncode == 0 and "alpha.mp4" in r.stdout


def test_pin_unpin_edit_remove(cli, cfg: Config, filled: dict[str, str]) -> None:
    a = filled["alpha"]
    assert cli("library", "pin", a).returncode == 0
    lib = Library(cfg.library_file)
    assert lib.get(a).pinned is True and lib.protected_paths() == {cfg.videos_dir / "alpha.mp4"}
    assert cli("library", "unpin", a).returncode == 0
    assert lib.get(a).pinned is False
    r = cli("library", "edit", a, "--title", "Launch teaser", "--tags", "promo, spring,,promo",
            "--schedule", "2030-05-01T09:30:00+02:00")
    assert r.returncode == 0, r.stderr
    item = lib.get(a).data
    assert item["title"] == "Launch teaser" and item["tags"] == ["promo", "spring"]
    assert item["scheduled_at"] == "2030-05-01T09:30:00+02:00"
    assert lib.summary().scheduled == 1
    r = cli("library", "edit", a, "--schedule", "2030-06-01T08:00Z")
    assert r.returncode == 0 and lib.get(a).data["scheduled_at"] == "2030-06-01T08:00:00+00:00"
    r = cli("library", "edit", a, "--schedule", "2030-06-01T08:00")  # local time: stored with its offset
    assert r.returncode == 0 and lib.get(a).data["scheduled_at"].startswith("2030-06-01T08:00:00")
    assert lib.get(a).data["scheduled_at"][19:] != ""
    assert cli("library", "edit", a, "--schedule", "none").returncode == 0
    assert lib.get(a).data["scheduled_at"] is None
    r = cli("library", "remove", filled["beta"])
    assert r.returncode == 0 and "file stays" in r.stdout
    assert (cfg.videos_dir / "beta.mp4").exists()
    assert [i.id for i in lib.items()] == [a]
    doc = json.loads(cfg.library_file.read_bytes())
    assert doc["owner"] == "other-app" and doc["items"][0] == {"id": "img", "type": "image", "path": "/i.png"}


@pytest.mark.parametrize("args", [
    ("show", "nope"), ("pin", "nope"), ("unpin", "nope"), ("remove", "nope"),
    ("edit", "nope", "--title", "x"),
])
def test_unknown_id_is_exit_2_and_changes_nothing(cli, cfg: Config, filled: dict[str, str], args) -> None:
    before = cfg.library_file.read_bytes()
    r = cli("library", *args)
    assert r.returncode == 2
    assert r.stderr.startswith("vidtray: error: ") and "nope" in r.stderr and len(r.stderr.splitlines()) == 1
    assert cfg.library_file.read_bytes() == before


@pytest.mark.parametrize("value", ["tomorrow", "2030-05-01", "2030-13-01T00:00", "2030-05-01T25:00",
                                   "01/05/2030 09:00", "2030-05-01T09:00+99:00"])
def test_bad_schedule_is_exit_2_and_changes_nothing(cli, cfg: Config, filled: dict[str, str],
                                                    value: str) -> None:
    before = cfg.library_file.read_bytes()
    r = cli("library", "edit", filled["alpha"], "--schedule", value)
    assert r.returncode == 2 and "ISO-8601" in r.stderr, r.stderr
    assert cfg.library_file.read_bytes() == before


def test_edit_without_changes_is_exit_2(cli, filled: dict[str, str]) -> None:
    r = cli("library", "edit", filled["alpha"])
    assert r.returncode == 2 and "nothing to change" in r.stderr


def test_rescan_imports_and_marks_missing(cli, cfg: Config, clip: Path, tmp_path: Path) -> None:
    extra = tmp_path / "downloads"
    (extra / "nested").mkdir(parents=True)
    shutil.copyfile(clip, extra / "nested" / "dl.mp4")
    shutil.copyfile(clip, cfg.videos_dir / "one.mp4")
    shutil.copyfile(clip, cfg.videos_dir / "two.mp4")
    (cfg.videos_dir / "cut.mp4").write_bytes(clip.read_bytes()[:500])
    config = tmp_path / "config.toml"
    config.write_text(f'watch_dirs = ["{extra}"]\n')
    r = cli("--config", str(config), "library", "rescan", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert sorted(Path(p).name for p in doc["imported"]) == ["dl.mp4", "one.mp4", "two.mp4"]
    assert [Path(s["path"]).name for s in doc["skipped"]] == ["cut.mp4"]
    (cfg.videos_dir / "two.mp4").unlink()
    r = cli("--config", str(config), "library", "rescan")
    assert r.returncode == 0 and "marked missing 1" in r.stdout and "two.mp4" in r.stdout
    items = {Path(i.path).name: i for i in Library(cfg.library_file).items()}
    assert items["two.mp4"].status == "missing" and items["one.mp4"].status == "ready"
    assert items["one.mp4"].thumbnail and Path(items["one.mp4"].thumbnail).is_file()


def test_rescan_with_a_missing_watch_folder_is_exit_2(cli, cfg: Config, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'watch_dirs = ["{tmp_path / "nowhere"}"]\n')
    r = cli("--config", str(config), "library", "rescan")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_corrupt_library_is_reported_and_rebuilt(cli, cfg: Config, clip: Path) -> None:
    shutil.copyfile(clip, cfg.videos_dir / "survivor.mp4")
    cfg.library_file.write_bytes(b'{"version": 1, "items": [{"id": ')
    r = cli("library", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert "moved to" in r.stderr
    assert [Path(i["path"]).name for i in json.loads(r.stdout)["items"]] == ["survivor.mp4"]
    [aside] = cfg.library_file.parent.glob("library.json.corrupt-*")
    assert aside.read_bytes() == b'{"version": 1, "items": [{"id": '


@pytest.fixture
def prefixed(cfg: Config, clip: Path) -> Library:
    """Three items whose ids share prefixes: abc123000001, abc123000002, abd999000003."""
    lib = Library(cfg.library_file)
    paths = [shutil.copyfile(clip, cfg.videos_dir / f"{n}.mp4") for n in ("one", "two", "three")]
    lib.add_videos([(p, {}) for p in paths])
    ids = iter(["abc123000001", "abc123000002", "abd999000003"])

    def rename(doc: dict) -> Change[None]:
        for item in doc["items"]:
            item["id"] = next(ids)
        return Change(None, True)

    lib.update(rename)
    return lib


@pytest.mark.parametrize("args", [("show", "abd"), ("pin", "abd9"), ("unpin", "abd"), ("edit", "abd", "--tags", "x"),
                                  ("remove", "abd99")])
def test_a_unique_id_prefix_is_enough(cli, prefixed: Library, args) -> None:
    r = cli("library", *args, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc.get("removed") or doc)["id"] == "abd999000003"


@pytest.mark.parametrize("args", [("show", "abc"), ("pin", "ab"), ("remove", "abc123"), ("edit", "a", "--title", "x")])
def test_an_ambiguous_prefix_is_exit_2_and_names_the_candidates(cli, cfg: Config, prefixed: Library, args) -> None:
    before = cfg.library_file.read_bytes()
    r = cli("library", *args)
    assert r.returncode == 2 and r.stderr.startswith("vidtray: error: ") and len(r.stderr.splitlines()) == 1
    assert "ambiguous" in r.stderr and "abc123000001" in r.stderr and "abc123000002" in r.stderr
    assert cfg.library_file.read_bytes() == before


def test_an_exact_id_wins_over_a_longer_one(cfg: Config, prefixed: Library) -> None:
    prefixed.update(lambda doc: Change(doc["items"][0].update(id="abc123"), True))
    assert prefixed.get("abc123").path.endswith("one.mp4")
    with pytest.raises(UserError, match="ambiguous"):
        prefixed.get("abc12")


def test_a_watch_dir_that_links_to_the_videos_folder_lists_each_video_once(cli, cfg: Config, clip: Path,
                                                                           tmp_path: Path) -> None:
    shutil.copyfile(clip, cfg.videos_dir / "one.mp4")
    shutil.copyfile(clip, cfg.videos_dir / "two.mp4")
    link = tmp_path / "my-videos"
    link.symlink_to(cfg.videos_dir, target_is_directory=True)
    config = tmp_path / "config.toml"
    config.write_text(f'watch_dirs = ["{link}"]\n')
    r = cli("--config", str(config), "library", "rescan", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    # The videos folder's spelling wins (it is listed first); the link is the same folder, watched once.
    assert sorted(doc["imported"]) == [str(cfg.videos_dir / "one.mp4"), str(cfg.videos_dir / "two.mp4")]
    assert doc["folders"] == [str(cfg.videos_dir)]
    assert sorted(i.path for i in Library(cfg.library_file).items()) == sorted(doc["imported"])
    report = json.loads(cli("--config", str(config), "storage", "--json").stdout)
    assert report["library"]["items"] == 2 and report["videos"]["count"] == 2
    r = cli("--config", str(config), "library", "rescan", "--json")
    assert json.loads(r.stdout)["imported"] == [] and len(Library(cfg.library_file).items()) == 2
