"""The paths module: one place for every location (data folder layout, per-user folders, the hub cache)
and for free space."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hf_cache import make_repo

from vidtray import paths
from vidtray.config import Config
from vidtray.paths import Paths, free_bytes, hf_cache_dir, mount_point, nearest_existing


def test_the_data_folder_layout(tmp_path: Path) -> None:
    p = Paths.of(tmp_path)
    assert p.videos_dir == tmp_path / "generated" / "videos"
    assert p.partial_dir == p.videos_dir / ".partial"
    assert p.library_file == tmp_path / "library.json"
    assert p.thumbnails_dir == tmp_path / "thumbnails"
    assert p.queue_dir == tmp_path / "queue" and p.pause_flag == p.queue_dir / "paused.json"
    assert p.removed_file == tmp_path / "state" / "removed.json"
    assert p.jobs_state_file == tmp_path / "state" / "jobs.json"
    assert Paths.of(tmp_path, tmp_path / "elsewhere.json").library_file == tmp_path / "elsewhere.json"


def test_config_paths_are_the_paths_of_its_data_folder(tmp_path: Path) -> None:
    cfg = Config.from_mapping({"data_dir": str(tmp_path / "d"), "library_path": str(tmp_path / "l.json")}, "<t>",
                              env={})
    assert cfg.paths == Paths.of(tmp_path / "d", tmp_path / "l.json")
    for name in ("videos_dir", "partial_dir", "library_file", "thumbnails_dir", "queue_dir", "state_dir"):
        assert getattr(cfg, name) == getattr(cfg.paths, name), name


def test_per_user_folders_follow_the_environment(isolated_env: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert paths.default_data_dir() == isolated_env["XDG_DATA_HOME"] / "vidtray"
    assert paths.default_config_path() == isolated_env["XDG_CONFIG_HOME"] / "vidtray" / "config.toml"
    assert paths.tray_lock_dir() == isolated_env["XDG_STATE_HOME"] / "vidtray"
    assert paths.log_dir() == isolated_env["VIDTRAY_LOG_DIR"]
    monkeypatch.delenv("VIDTRAY_LOG_DIR")
    assert paths.log_dir() == isolated_env["XDG_STATE_HOME"] / "vidtray" / "log"


def test_hf_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hf_cache_dir() == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hf_cache_dir() == tmp_path / "cache"
    monkeypatch.setenv("HF_HUB_CACHE", "")  # empty: unset
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE")
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"


ENVS = [
    {"HF_HOME": "{tmp}/home"},
    {"HF_HOME": "~/hf"},
    {"HF_HOME": "$VIDTRAY_TEST_ROOT/expanded"},
    {"HF_HUB_CACHE": "{tmp}/cache", "HF_HOME": "{tmp}/home"},
    {"HUGGINGFACE_HUB_CACHE": "{tmp}/legacy"},
    {"XDG_CACHE_HOME": "{tmp}/xdg"},
]


@pytest.mark.parametrize("env", ENVS, ids=[" ".join(e) for e in ENVS])
def test_hf_cache_dir_is_huggingface_hubs_own_answer(env: dict[str, str], tmp_path: Path) -> None:
    # The same rules as huggingface_hub in a fresh process (where its import-time constants are current).
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    clean.update({k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}, VIDTRAY_TEST_ROOT=str(tmp_path))
    code = ("import json; from huggingface_hub import constants; from vidtray.paths import hf_cache_dir; "
            "print(json.dumps([constants.HF_HUB_CACHE, str(hf_cache_dir())]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    theirs, ours = json.loads(out.stdout)
    assert Path(ours) == Path(theirs)


def test_reports_follow_an_environment_changed_after_huggingface_hub_was_imported(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # storage and the disk check used huggingface_hub's constants, read once at its import: a process whose
    # HF_HOME changed later reported and cleaned another cache than the one downloads went to.
    import huggingface_hub.constants  # noqa: F401  (imported before the change, as in a long-lived process)

    from vidtray.services import storage
    from vidtray.services.jobs import Jobs
    from vidtray.services.notify import RecordingNotifier

    monkeypatch.setenv("HF_HOME", str(tmp_path / "moved"))
    cache = tmp_path / "moved" / "hub"
    make_repo(cache, "org/pipe", {"model_index.json": b"{}"})
    assert storage.models_report().cache_dir == str(cache)
    assert storage.plan_model_cleanup("org/pipe").cache_dir == cache
    jobs = Jobs(Config.from_mapping({}, "<t>"), RecordingNotifier())
    assert ("model cache", cache) in jobs.watched_places()


def test_free_space_of_a_folder_not_made_yet(tmp_path: Path) -> None:
    later = tmp_path / "not" / "yet"
    assert nearest_existing(later) == tmp_path
    assert free_bytes(later) == free_bytes(tmp_path) and (free_bytes(tmp_path) or 0) > 0
    assert mount_point(later) == mount_point(tmp_path) and os.path.ismount(mount_point(later))


def test_the_disk_check_finds_the_model_cache_without_huggingface_hub(cfg: Config) -> None:
    # It runs in the tray, which never imports huggingface_hub (it used to, for the cache folder's name).
    code = ("import sys, time; from vidtray.config import Config; from vidtray.services.jobs import Jobs; "
            "from vidtray.services.notify import RecordingNotifier; "
            "r = Jobs(Config.from_mapping({}, 't'), RecordingNotifier()).check_disk(time.time()); "
            "print(len(r.readings), 'huggingface_hub' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    readings, imported = out.stdout.split()
    assert int(readings) >= 1 and imported == "False", out.stderr
