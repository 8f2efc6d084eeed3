"""The storage budget on real files: the plan picks exactly the right things in the right order, carrying it
out frees what it said (a re-scan agrees), what may never go stays, bad input is refused; the scheduled check
notifies or applies; the trash report counts only what vidtray put there."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from budget_scene import DAY, DEFAULT, Scene
from conftest import run_cli
from media_helpers import write_mp4

from vidtray.errors import OperationFailed
from vidtray.services import budget, hub, modeluse, storage, trash
from vidtray.services.jobs import Jobs
from vidtray.services.library import open_library
from vidtray.services.notify import RecordingNotifier
from vidtray.services.sidecar import sidecar_path

TINY = "0.000001"  # GiB: a budget nothing but an empty disk meets


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mp4(tmp_path_factory.mktemp("media") / "sample.mp4")


@pytest.fixture
def scene(tmp_path: Path, sample: Path, isolated_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Scene:
    s = Scene(tmp_path, sample, isolated_env["HF_HOME"])
    monkeypatch.setenv("VIDTRAY_CONFIG", str(s.config))
    return s


def used(scene: Scene) -> int:
    """What the budget covers now, as `vidtray storage --json` says (a fresh scan)."""
    res = run_cli("storage", "--json")
    assert res.returncode == 0, res.stderr
    return int(json.loads(res.stdout)["budget"]["used_bytes"])


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file under ``roots``; the queue's SQLite files aside (reading the queue
    checkpoints its write-ahead log into the database file: the same jobs, other bytes)."""
    out = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            files = [f for f in files if not f.startswith("queue.sqlite3")]
            for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
                st = os.lstat(os.path.join(dirpath, name))
                out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return out


def test_the_plan_picks_exactly_the_right_things_in_order(scene: Scene) -> None:
    lib = open_library(scene.cfg)
    plan = budget.plan(scene.cfg, lib, budget_bytes=1, now=scene.now)
    v = scene.videos
    assert [(i.kind, i.name) for i in plan.items] == [
        # unpinned, unscheduled videos, oldest first (pinned and scheduled ones never)
        ("video", str(v["old1.mp4"])), ("video", str(v["old2.mp4"])), ("video", str(v["mid.mp4"])),
        ("video", str(v["new.mp4"])),
        # models not used for 30 days that no queued job needs, least recently used first: the default model
        # (a queued job needs it), org/explicit (named by a job), org/recent (used 2 days ago) and
        # org/downloading (a fresh partial download) are not in it
        ("model", "org/old-used"), ("model", "org/never"),
        # partial downloads older than 7 days, oldest first; the fresh ones stay (a pull resumes them)
        ("partial", "org/stale-broken"), ("partial", str(scene.stale_partial)),
    ]
    old1 = plan.items[0]
    assert old1.size_bytes == sum(os.path.getsize(p) for p in (v["old1.mp4"], sidecar_path(v["old1.mp4"]),
                                                               scene.thumb))
    assert "90 days old, with its sidecar and thumbnail" in old1.why
    assert plan.items[4].why.startswith("last used by vidtray 60 days ago")
    assert plan.items[5].why.startswith("not used by vidtray since it was downloaded 45 days ago")
    # The payload the two models share goes with the second: its size is counted there, once.
    scan = hub.scan_cache(scene.cache)
    repos = {r.repo_id: r for r in scan.repos}
    assert plan.items[4].size_bytes == repos["org/old-used"].frees_bytes
    assert plan.items[5].size_bytes == repos["org/never"].frees_bytes + 6 * 1024
    assert plan.items[6].size_bytes == 1500 and plan.items[7].size_bytes == 900
    assert not plan.meets_budget and plan.kept_bytes == plan.used_bytes - plan.total_bytes
    # Only as much as the budget needs: the oldest video alone, then nothing more.
    just = budget.plan(scene.cfg, lib, budget_bytes=plan.used_bytes - old1.size_bytes, now=scene.now)
    assert [i.name for i in just.items] == [old1.name] and just.meets_budget and just.after_bytes == just.budget_bytes


def test_applying_the_plan_frees_what_it_said_and_nothing_protected(scene: Scene, isolated_env: dict[str, Path]
                                                                    ) -> None:
    before = used(scene)
    res = run_cli("clean", "--to-budget", "--budget", TINY, "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert shown["dry_run"] is True and shown["result"] is None and shown["used_bytes"] == before
    assert shown["trashed_bytes"] == sum(i["size_bytes"] for i in shown["items"] if i["kind"] == "video")

    res = run_cli("clean", "--to-budget", "--budget", TINY, "--yes", "--json", "--plan-id", shown["plan_id"])
    assert res.returncode == 0, res.stderr
    done = json.loads(res.stdout)["result"]
    assert [(d["kind"], d["name"]) for d in done["deleted"]] == [(i["kind"], i["name"]) for i in shown["items"]]
    assert done["skipped"] == []
    # A re-scan agrees with the plan, to the byte.
    assert before - used(scene) == shown["total_bytes"] == done["freed_bytes"]
    assert done["trashed_bytes"] == shown["trashed_bytes"]
    for path in scene.protected():
        assert path.exists(), path
    assert not scene.stale_partial.exists() and not scene.stale_broken.exists()
    assert not scene.repos["org/old-used"].exists() and not scene.repos["org/never"].exists()
    # The videos are in the trash (still on the disk), sidecars and thumbnail with them, and they left the library.
    files = isolated_env["XDG_DATA_HOME"] / "Trash" / "files"
    assert {"old1.mp4", "old1.vidtray.json", "old1.jpg", "new.mp4"} <= {p.name for p in files.iterdir()}
    assert {Path(i.path).name for i in open_library(scene.cfg).items()} == {"pinned.mp4", "scheduled.mp4"}

    # Nothing more may go: the budget cannot be met, exit 1, nothing deleted.
    cache_and_data = snapshot(scene.cache, scene.cfg.data_dir, scene.hf_home)
    res = run_cli("clean", "--to-budget", "--budget", TINY, "--yes")
    assert res.returncode == 1
    after = used(scene)
    assert res.stderr.strip() == ("vidtray: error: the budget cannot be met: "
                                  f"{storage_size(after)} are pinned or in use ({kept_text(scene, after)})")
    assert snapshot(scene.cache, scene.cfg.data_dir, scene.hf_home) == cache_and_data


def storage_size(n: int) -> str:
    from vidtray.services.fsutil import human_size

    return human_size(n)


def kept_text(scene: Scene, after: int) -> str:
    plan = budget.plan(scene.cfg, open_library(scene.cfg), budget_bytes=1, now=time.time())
    assert plan.items == [] and plan.kept_bytes == after
    return ", ".join(f"{k['what']} {storage_size(k['size_bytes'])}" for k in plan.kept if k["size_bytes"])


def test_a_plan_that_changed_since_it_was_shown_is_not_carried_out(scene: Scene) -> None:
    shown = json.loads(run_cli("clean", "--to-budget", "--budget", TINY, "--dry-run", "--json").stdout)
    scene.video("arrived.mp4", 5)  # a video arrives while the question is open
    before = snapshot(scene.cache, scene.cfg.data_dir)
    res = run_cli("clean", "--to-budget", "--budget", TINY, "--yes", "--plan-id", shown["plan_id"])
    assert res.returncode == 1 and "the plan changed since it was shown" in res.stderr
    assert snapshot(scene.cache, scene.cfg.data_dir) == before


def test_storage_plan_shows_each_line_with_its_size_and_why(scene: Scene) -> None:
    res = run_cli("storage", "plan", "--budget", TINY)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "Plan, in order:" in out and "  1. video" in out and "old1.mp4" in out
    assert "  5. model" in out and "org/old-used" in out and "no queued job needs it" in out
    assert "interrupted download of org/recent, 10 days old" in out
    assert "Videos move to the trash:" in out and "frees when the trash is emptied" in out
    assert "The budget cannot be met:" in out
    doc = json.loads(run_cli("storage", "plan", "--budget", "1000", "--json").stdout)
    assert doc["items"] == [] and doc["meets_budget"] is True and doc["over_bytes"] == 0
    assert doc["rules"] == {"age_from": storage.AGE_FROM, "model_unused_days": 30, "partial_keep_days": 7}
    # Under the budget, `clean --to-budget` does nothing and says so.
    res = run_cli("clean", "--to-budget", "--budget", "1000", "--yes")
    assert res.returncode == 0 and "under the budget" in res.stdout


def test_clean_models_unused_days(scene: Scene) -> None:
    res = run_cli("clean", "models", "--unused-days", "30", "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [r["repo_id"] for r in doc["repos"]] == ["org/old-used", "org/never"]
    assert doc["repos"][0]["why"].startswith("last used by vidtray 60 days ago")
    assert doc["expected_freed_bytes"] == sum(r["frees_bytes"] for r in doc["repos"]) + 6 * 1024
    doc = json.loads(run_cli("clean", "models", "--unused-days", "50d", "--yes", "--json").stdout)
    assert [r["repo_id"] for r in doc["repos"]] == ["org/old-used"]
    assert doc["freed_bytes"] == doc["expected_freed_bytes"] == doc["repos"][0]["frees_bytes"]
    assert not scene.repos["org/old-used"].exists() and scene.repos["org/never"].exists()
    res = run_cli("clean", "models", "--unused-days", "-3", "--yes")
    assert res.returncode == 2 and "--unused-days" in res.stderr
    res = run_cli("clean", "models", "--all", "--unused-days", "3", "--yes")
    assert res.returncode == 2 and "not allowed with argument" in res.stderr


def test_storage_shows_last_used_xet_partials_and_what_a_delete_frees(scene: Scene) -> None:
    doc = json.loads(run_cli("storage", "--json").stdout)
    repos = {r["repo_id"]: r for r in doc["models"]["repos"]}
    assert repos["org/recent"]["last_used"] == storage.iso(scene.now - 2 * DAY)
    assert repos[DEFAULT]["last_used"] is None
    assert [p["size_bytes"] for p in repos["org/recent"]["partial_downloads"]] == [900]
    assert repos["org/never"]["shared_bytes"] == 6 * 1024 + len(b'{"n": 1}')
    assert repos["org/never"]["frees_bytes"] == len(b'{"n": 1}')  # the shared payload stays with org/old-used
    assert doc["models"]["xet_bytes"] == 3000 and doc["models"]["xet_dir"] == str(scene.hf_home / "xet")
    assert doc["budget"]["budget_bytes"] == 0 and doc["budget"]["over_bytes"] == 0
    human = run_cli("storage").stdout
    assert "LAST USED" in human and "FREES" in human and "xet/" in human and "org/stale-broken (BROKEN)" in human
    assert f"{storage.iso(scene.now - 2 * DAY)[:10]}" in human


@pytest.mark.parametrize(("setting", "argv", "fragment"), [
    ("storage_budget_gb = -1", ["storage", "plan"], "storage_budget_gb: must be >= 0"),
    ('storage_budget_gb = "40GB"', ["storage"], "storage_budget_gb: must be a number"),
    ('budget_action = "delete"', ["storage"], "budget_action: must be one of notify, apply"),
    ("model_unused_days = -1", ["storage"], "model_unused_days: must be >= 0"),
    ("", ["storage", "plan", "--budget", "-3"], "argument --budget: must be a number of GiB above 0"),
    ("", ["storage", "plan", "--budget", "lots"], "argument --budget: must be a number of GiB above 0"),
    ("", ["clean", "--to-budget", "--budget", "nan"], "argument --budget: must be a number of GiB above 0"),
    ("", ["storage", "plan"], "no storage budget: set storage_budget_gb in"),
    ("", ["clean", "--to-budget", "videos"], "--to-budget frees what the budget plan lists: it takes no WHAT"),
    ("", ["clean"], "say what to clean"),
])
def test_bad_budget_input_is_exit_2_naming_the_key(tmp_path: Path, isolated_env: dict[str, Path], setting: str,
                                                   argv: list[str], fragment: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(setting + "\n")
    res = run_cli("--config", str(config), *argv)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("vidtray: error: ") and fragment in res.stderr and "Traceback" not in res.stderr


def test_a_trash_that_is_not_available_stops_and_deletes_nothing_for_good(scene: Scene,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import send2trash

    def refuse(path: str) -> None:
        raise OSError("no trash on this volume")

    monkeypatch.setattr(send2trash, "send2trash", refuse)
    lib = open_library(scene.cfg)
    plan = budget.plan(scene.cfg, lib, budget_bytes=1, now=scene.now)
    before = snapshot(scene.cache, scene.cfg.data_dir)
    with pytest.raises(OperationFailed, match="cannot move .* to the trash"):
        budget.execute(scene.cfg, lib, plan)
    assert snapshot(scene.cache, scene.cfg.data_dir) == before  # the videos come first: nothing went


def test_what_changed_since_the_plan_stays(scene: Scene) -> None:
    """A model used or needed since, a download that went on, a video that changed: left alone, with why."""
    from vidtray.services.queue import open_queue

    lib = open_library(scene.cfg)
    plan = budget.plan(scene.cfg, lib, budget_bytes=1, now=scene.now)
    modeluse.record_use(scene.cfg.paths.model_use_file, "org/old-used")
    open_queue(scene.cfg).submit({"prompt": "x", "model": "org/never"})
    with scene.stale_partial.open("ab") as fh:
        fh.write(b"more")  # the download resumed
    with scene.videos["mid.mp4"].open("ab") as fh:
        fh.write(b"more")
    result = budget.execute(scene.cfg, lib, plan)
    assert {(s["name"], s["reason"]) for s in result.skipped} == {
        ("org/old-used", "used or updated since it was planned"), ("org/never", "a queued job needs it now"),
        (str(scene.stale_partial), "changed since it was planned (size or modification time)"),
        (str(scene.videos["mid.mp4"]), "changed since it was planned (size or modification time)")}
    assert scene.repos["org/old-used"].exists() and scene.repos["org/never"].exists()
    assert scene.stale_partial.exists() and scene.videos["mid.mp4"].exists() and not scene.stale_broken.exists()


# -- the scheduled check -----------------------------------------------------------------------------------


def test_over_budget_notify_says_once_what_would_go(scene: Scene) -> None:
    cfg = type(scene.cfg).from_mapping({**_settings(scene), "storage_budget_gb": 1e-6}, "<test>")
    rec = RecordingNotifier()
    jobs = Jobs(cfg, rec, free_bytes=lambda _p: 100 * 1024**3)
    before = snapshot(scene.cache, scene.cfg.data_dir)
    assert jobs.enforce_budget(time.time()).action == "notified"
    [note] = rec.sent
    assert note.kind == "budget_plan" and note.title.startswith("Storage ") and "over the budget" in note.title
    assert "video old1.mp4" in note.body and "model org/old-used" in note.body
    assert "frees when the trash is emptied" in note.body
    assert jobs.enforce_budget(time.time()).action == "unchanged" and len(rec.sent) == 1
    assert snapshot(scene.cache, scene.cfg.data_dir) == before


def test_over_budget_apply_frees_and_says_what_went(scene: Scene) -> None:
    cfg = type(scene.cfg).from_mapping({**_settings(scene), "storage_budget_gb": 1e-6, "budget_action": "apply"},
                                       "<test>")
    rec = RecordingNotifier()
    outcome = Jobs(cfg, rec, free_bytes=lambda _p: 100 * 1024**3).enforce_budget(time.time())
    assert outcome.action == "applied" and outcome.items == 8 and outcome.trashed_bytes > 0
    [note] = rec.sent
    assert note.kind == "budget_applied" and note.body.startswith("Freed ")
    assert "model org/old-used" in note.body and "frees when it is emptied" in note.body
    for path in scene.protected():
        assert path.exists(), path


def test_low_disk_plans_what_frees_the_disk(scene: Scene) -> None:
    """Below warn_free_gb with no budget: videos moving to the trash would free nothing, so the plan starts
    with the models."""
    cfg = type(scene.cfg).from_mapping(_settings(scene), "<test>")
    rec = RecordingNotifier()
    jobs = Jobs(cfg, rec, free_bytes=lambda _p: 5 * 1024**3 - 4096)
    assert jobs.enforce_budget(time.time()).action == "notified"
    [note] = rec.sent
    assert note.title.startswith("vidtray can free ") and note.title.endswith("(low disk space)")
    assert "model org/old-used" in note.body and "video" not in note.body.split("\n")[1]
    jobs = Jobs(cfg, RecordingNotifier(), free_bytes=lambda _p: 100 * 1024**3)
    assert jobs.enforce_budget(time.time()).action == "none"


def test_below_min_free_vidtray_empties_only_its_own_trash(scene: Scene, isolated_env: dict[str, Path]) -> None:
    import send2trash

    res = run_cli("clean", "videos", "--older-than", "50", "--yes", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["trashed_bytes"] > 0
    mine = {Path(d["path"]).name for d in json.loads(res.stdout)["deleted"]}
    assert mine == {"old1.mp4", "old2.mp4"}
    # The user trashes a file of the same name (an old1.mp4 of their own) and another one.
    theirs = scene.cfg.data_dir / "mine" / "old1.mp4"
    theirs.parent.mkdir()
    theirs.write_bytes(b"the user's own")
    send2trash.send2trash(str(theirs))
    report = trash.report(scene.cfg.paths.trash_record_file)
    sizes = sum(os.path.getsize(scene.sample) for _ in mine) + sum(len(json.dumps({"prompt": f"prompt of {n}",
                                                                                    "seed": 1})) for n in mine)
    assert (report.files, report.size_bytes) == (5, sizes + len(b"\xff\xd8 jpeg" * 10))  # + sidecars, thumbnail
    doc = json.loads(run_cli("storage", "--json").stdout)
    assert doc["trash"]["files"] == 5 and doc["trash"]["note"].endswith("frees when the trash is emptied")

    cfg = type(scene.cfg).from_mapping({**_settings(scene), "low_disk_empty_trash": True}, "<test>")
    rec = RecordingNotifier()
    outcome = Jobs(cfg, rec, free_bytes=lambda _p: 100 * 1024**2).enforce_budget(time.time())
    assert outcome.trash_emptied_bytes == report.size_bytes
    assert rec.kinds()[0] == "trash_emptied" and "nothing else in the trash was touched" in rec.sent[0].body
    # Only the user's file is left, with its info (its name got a number: vidtray's old1.mp4 was there first).
    home_trash = isolated_env["XDG_DATA_HOME"] / "Trash"
    [left] = list((home_trash / "files").iterdir())
    assert left.read_bytes() == b"the user's own" and left.name != "old1.mp4"
    assert [p.name for p in (home_trash / "info").iterdir()] == [f"{left.name}.trashinfo"]
    assert trash.report(scene.cfg.paths.trash_record_file).files == 0


def _settings(scene: Scene) -> dict[str, object]:
    import tomllib

    return tomllib.loads(scene.config.read_text())


def test_the_trash_record_forgets_what_left_the_trash_long_ago(cfg, isolated_env: dict[str, Path]) -> None:
    """The record keeps what is still in the trash, and for a while what is not (its volume may be away)."""
    from vidtray.services.storage import PlannedFile

    record = cfg.paths.trash_record_file
    files = isolated_env["XDG_DATA_HOME"] / "Trash" / "files"

    def trashed(name: str) -> PlannedFile:
        path = cfg.videos_dir / name
        path.write_bytes(name.encode())
        planned = PlannedFile.of(path, cfg.videos_dir, os.lstat(path))
        storage._send_to_trash(path)
        return planned

    now = time.time()
    trash.record_trashed(record, [trashed("kept.mp4"), trashed("emptied.mp4")], now - 40 * DAY)
    (files / "emptied.mp4").unlink()  # the user emptied it from the trash
    trash.record_trashed(record, [trashed("recent.mp4")], now - DAY)
    (files / "recent.mp4").unlink()  # emptied too, but only a day ago: remembered a while longer
    trash.record_trashed(record, [trashed("new.mp4")], now)
    assert sorted(Path(r.original).name for r in trash.read_record(record)) == ["kept.mp4", "new.mp4", "recent.mp4"]
    report = trash.report(record)
    assert (report.files, report.size_bytes) == (2, len(b"kept.mp4") + len(b"new.mp4"))
    assert report.folders == [str(files.parent)]
    assert oct(record.stat().st_mode & 0o777) == "0o600"


def test_clean_options_before_what_still_count(cfg) -> None:
    """`clean` takes --dry-run/--yes/--json itself (for --to-budget); given before WHAT they still apply."""
    video = cfg.videos_dir / "a.mp4"
    video.write_bytes(b"v" * 10)
    res = run_cli("clean", "--dry-run", "--json", "videos", "--yes")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["dry_run"] is True and video.exists()
    res = run_cli("clean", "--yes", "videos", "--permanent")
    assert res.returncode == 0 and not video.exists()
