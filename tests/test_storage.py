from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from hf_cache import make_broken_repo, make_repo

from vidtray.errors import UserError
from vidtray.paths import free_bytes
from vidtray.services import storage
from vidtray.services.sidecar import sidecar_path

MB = 1024 * 1024


@pytest.fixture
def hub(isolated_env) -> Path:
    cache = isolated_env["HF_HOME"] / "hub"
    cache.mkdir(parents=True)
    make_repo(cache, "cerspense/zeroscope_v2_576w",
              {"model_index.json": b"{}", "unet/diffusion_pytorch_model.bin": os.urandom(MB)})
    make_repo(cache, "org/small", {"config.json": b'{"a": 1}'}, incomplete=b"x" * 1000)
    make_broken_repo(cache, "org/broken", b"y" * 5000)
    (isolated_env["HF_HOME"] / "token").write_text("hf_secret")
    (isolated_env["HF_HOME"] / "xet").mkdir()
    (isolated_env["HF_HOME"] / "xet" / "chunk").write_bytes(b"z" * 100)
    return cache


def _video(folder: Path, name: str, size: int = 1000, age_days: float = 0, sidecar: bool = False) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"v" * size)
    if sidecar:
        sidecar_path(path).write_text('{"prompt": "x"}')
    t = time.time() - age_days * 86400
    for p in (path, sidecar_path(path)):
        if p.exists():
            os.utime(p, (t, t))
    return path


def _listed(cfg, *videos: Path, days: float) -> None:
    """Put ``videos`` in the library as first listed ``days`` ago (their age for --older-than)."""
    from vidtray.services.library import open_library

    added = storage.iso(time.time() - days * 86400)
    open_library(cfg).add_videos([(v, {"added": added}) for v in videos])


def test_models_report_lists_repos_and_broken(hub):
    report = storage.models_report(hub)
    ids = {r.repo_id: r for r in report.repos}
    zs = ids["cerspense/zeroscope_v2_576w"]
    assert zs.size_bytes == MB + 2 and zs.files == 2 and len(zs.revisions) == 1
    assert zs.refs == ["main"] and zs.last_modified
    assert ids["org/small"].incomplete_bytes == 1000
    [broken] = report.broken
    assert broken.repo_id == "org/broken" and broken.size_bytes == 5000
    assert "Snapshots dir" in broken.reason
    assert report.size_bytes == MB + 2 + 8 + 1000 + 5000


def test_storage_json_cli(cli, hub, cfg):
    _video(cfg.videos_dir, "a.mp4", 3000, age_days=3, sidecar=True)
    _video(cfg.videos_dir, "sub/b.webm", 2000)
    _video(cfg.videos_dir, ".partial/c.mp4", 500)
    (cfg.videos_dir / "notes.txt").write_text("not a video")
    res = cli("storage", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["videos"]["count"] == 2 and doc["videos"]["size_bytes"] == 5000
    assert doc["videos"]["partial"] == {"dir": str(cfg.partial_dir), "count": 1, "size_bytes": 500}
    assert doc["videos"]["oldest"] < doc["videos"]["newest"]
    assert Path(doc["models"]["cache_dir"]) == hub
    assert {r["repo_id"] for r in doc["models"]["repos"]} == {"cerspense/zeroscope_v2_576w", "org/small"}
    assert doc["models"]["broken"][0]["repo_id"] == "org/broken"
    assert doc["disk"]["free_bytes"] > 0
    assert doc["disk"]["volumes"][0]["roles"] == ["videos", "models"]  # one volume in tmp

    human = cli("storage")
    assert human.returncode == 0
    assert "cerspense/zeroscope_v2_576w" in human.stdout and "org/broken (BROKEN)" in human.stdout
    assert "2 videos" in human.stdout and "1.0 MiB" in human.stdout


def test_the_typed_storage_report_writes_the_json_the_tray_and_scripts_read(hub, cfg):
    """``vidtray storage --json`` is a contract (the tray parses it, scripts too): the typed report gives
    the same keys in the same order at every level, and the tray's parser reads it back."""
    from vidtray.commands.storage import build_report
    from vidtray.services.library import open_library
    from vidtray.tray.state import parse_storage_report

    pinned = _video(cfg.videos_dir, "a.mp4", 3000)
    _video(cfg.videos_dir, ".partial/b.mp4", 500)
    lib = open_library(cfg)
    lib.edit(lib.add_video(pinned)["id"], pinned=True)
    doc = json.loads(json.dumps(build_report(cfg).as_dict()))
    # Keys are only ever added, after the ones readers already know (the library page reads it too).
    assert list(doc) == ["library", "videos", "models", "disk", "trash", "budget", "latents"]
    assert doc["library"] == {"path": str(cfg.library_file), "items": 1, "pinned": 1, "scheduled": 0, "missing": 0}
    assert list(doc["videos"]) == ["dir", "count", "size_bytes", "oldest", "newest", "partial", "folder_bytes"]
    assert doc["videos"]["partial"] == {"dir": str(cfg.partial_dir), "count": 1, "size_bytes": 500}
    assert doc["videos"]["folder_bytes"] == 3500
    assert list(doc["models"]) == ["cache_dir", "size_bytes", "repos", "broken", "incomplete_bytes",
                                   "shared_store_bytes", "unreferenced_shared_bytes", "xet_dir", "xet_bytes"]
    assert [list(r) for r in doc["models"]["repos"]] == 2 * [
        ["repo_id", "repo_type", "path", "size_bytes", "files", "revisions", "refs", "last_accessed",
         "last_modified", "incomplete_bytes", "frees_bytes", "shared_bytes", "last_used", "partial_downloads"]]
    assert [list(b) for b in doc["models"]["broken"]] == [
        ["repo_id", "repo_type", "path", "size_bytes", "files", "reason", "modified"]]
    assert list(doc["disk"]) == ["free_bytes", "min_free_gb", "warn_free_gb", "status", "volumes"]
    assert [list(v) for v in doc["disk"]["volumes"]] == [["path", "roles", "free_bytes", "total_bytes", "status"]]
    assert list(doc["trash"]) == ["available", "files", "size_bytes", "folders", "note"]
    assert list(doc["budget"]) == ["budget_bytes", "used_bytes", "over_bytes", "videos_bytes", "thumbnails_bytes",
                                   "cache_bytes", "xet_bytes"]
    assert doc["latents"] == {"dir": str(cfg.partial_dir), "count": 0, "size_bytes": 0, "oldest_age_s": None,
                              "orphan_age_s": 86400.0, "files": []}  # b.mp4 is in progress, not latents
    assert doc["models"]["xet_bytes"] == 100  # the hub fixture's xet/chunk
    assert doc["budget"]["used_bytes"] == 3500 + doc["models"]["size_bytes"] + 100
    view = parse_storage_report(doc)
    assert (view.videos_count, view.videos_bytes) == (1, 3000)
    assert view.models_bytes == doc["models"]["size_bytes"] and len(view.models) == 3


def test_space_status_thresholds(tmp_path):
    gb = storage.GB
    assert storage.space_status(10 * gb, 1, 5) == "ok"
    assert storage.space_status(3 * gb, 1, 5) == "warn"
    assert storage.space_status(gb // 2, 1, 5) == "low"
    assert storage.space_status(None, 1, 5) == "unknown"
    # A folder that does not exist yet is measured on its nearest existing parent.
    assert free_bytes(tmp_path / "not" / "yet") == free_bytes(tmp_path)
    report = storage.disk_report({"videos": tmp_path, "models": tmp_path / "x"}, 0, 1e9)
    assert len(report.volumes) == 1 and report.status == "warn"


def test_clean_model_deletes_only_that_repo(cli, hub, isolated_env):
    res = cli("clean", "model", "cerspense/zeroscope_v2_576w", "--yes", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["freed_bytes"] == MB + 2 and doc["expected_freed_bytes"] == MB + 2
    assert not (hub / "models--cerspense--zeroscope_v2_576w").exists()
    assert (hub / "models--org--small").is_dir() and (hub / "models--org--broken").is_dir()
    assert (isolated_env["HF_HOME"] / "token").read_text() == "hf_secret"


def test_clean_model_dry_run_and_broken(cli, hub):
    res = cli("clean", "model", "org/broken", "--dry-run", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["repos"][0]["broken"] is True
    assert (hub / "models--org--broken").is_dir()
    res = cli("clean", "model", "org/broken", "--yes")
    assert res.returncode == 0, res.stderr
    assert "Freed 4.9 KiB" in res.stdout
    assert not (hub / "models--org--broken").exists()


@pytest.mark.parametrize(("repo", "fragment"),
                         [("../x", "not a valid repo id"), ("org/absent", "not in the model cache")])
def test_clean_model_bad_repo(cli, hub, repo, fragment):
    res = cli("clean", "model", repo, "--yes")
    assert res.returncode == 2 and fragment in res.stderr
    assert len(list(hub.iterdir())) == 3


def test_clean_models_all_keeps_token_and_xet(cli, hub, isolated_env):
    res = cli("clean", "models", "--all")
    assert res.returncode == 2 and "--yes" in res.stderr  # no terminal: refuse
    assert len([p for p in hub.iterdir() if p.name.startswith("models--")]) == 3
    res = cli("clean", "models", "--all", "--yes", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["freed_bytes"] == MB + 2 + 8 + 1000 + 5000
    assert not [p for p in hub.iterdir() if p.name.startswith("models--")]
    assert (isolated_env["HF_HOME"] / "token").read_text() == "hf_secret"
    assert (isolated_env["HF_HOME"] / "xet" / "chunk").exists()


def test_clean_videos_refuses_without_terminal(cli, cfg):
    v = _video(cfg.videos_dir, "a.mp4")
    res = cli("clean", "videos")
    assert res.returncode == 2
    assert res.stderr.strip() == "vidtray: error: refusing to delete without --yes: there is no terminal to ask on"
    assert v.exists()


def test_clean_videos_to_trash_with_sidecar(cli, cfg, isolated_env):
    old = _video(cfg.videos_dir, "old.mp4", 4000, age_days=40, sidecar=True)
    new = _video(cfg.videos_dir, "new.mp4", 4000, age_days=1, sidecar=True)
    partial = _video(cfg.partial_dir, "old2.mp4", 10, age_days=90)
    # another tool's old.json beside old.mp4 (no vidtray_version): not vidtray's, so it stays
    foreign = cfg.videos_dir / "old.json"
    foreign.write_text('{"prompt": "someone else\'s notes"}')
    _listed(cfg, old, new, days=40)
    res = cli("clean", "videos", "--older-than", "30d", "--yes", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [d["path"] for d in doc["deleted"]] == [str(old)]
    assert doc["freed_bytes"] == 4000 + len('{"prompt": "x"}') and doc["dry_run"] is False
    assert not old.exists() and not sidecar_path(old).exists()
    assert new.exists() and sidecar_path(new).exists() and partial.exists()
    assert foreign.read_text() == '{"prompt": "someone else\'s notes"}'
    trash = isolated_env["XDG_DATA_HOME"] / "Trash" / "files"
    assert sorted(p.name for p in trash.iterdir()) == ["old.mp4", "old.vidtray.json"]


def test_clean_videos_permanent_and_dry_run(cli, cfg, isolated_env):
    a = _video(cfg.videos_dir, "a.mp4", 100)
    human = cli("storage").stdout
    assert "  1 video, 100 B" in human and "library " in human and ": 0 items, " in human
    assert "(warn below 5 GiB, generation refused below 1 GiB)" in human
    res = cli("clean", "videos", "--dry-run", "--json")
    assert json.loads(res.stdout)["dry_run"] is True and a.exists()
    res = cli("clean", "videos", "--permanent", "--yes")
    assert res.returncode == 0 and "Deleted 1 video, 100 B." in res.stdout
    assert not a.exists() and not (isolated_env["XDG_DATA_HOME"] / "Trash").exists()


def test_clean_videos_prune_to_trash_false(cli, cfg, tmp_path, isolated_env):
    conf = tmp_path / "c.toml"
    conf.write_text("prune_to_trash = false\n")
    a = _video(cfg.videos_dir, "a.mp4", 100)
    res = cli("--config", str(conf), "clean", "videos", "--yes", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["to_trash"] is False
    assert not a.exists() and not (isolated_env["XDG_DATA_HOME"] / "Trash").exists()


def test_symlinks_never_followed(cfg, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = _video(outside, "precious.mp4", 50, age_days=100)
    (cfg.videos_dir / "link.mp4").symlink_to(precious)
    (cfg.videos_dir / "linkdir").symlink_to(outside, target_is_directory=True)
    res = storage.delete_videos(cfg.videos_dir, older_than_days=None, now=time.time(), to_trash=False)
    assert res.deleted == []
    assert precious.exists() and (cfg.videos_dir / "link.mp4").is_symlink()


def test_protected_are_kept(cfg):
    a = _video(cfg.videos_dir, "a.mp4", age_days=50)
    b = _video(cfg.videos_dir, "b.mp4", age_days=50)
    res = storage.delete_videos(cfg.videos_dir, older_than_days=30, now=time.time(), to_trash=False,
                                protected={a}, first_seen={a: 0.0, b: 0.0})
    assert res.deleted_paths == [b] and res.kept == [{"path": str(a), "reason": "pinned or scheduled in the library"}]
    assert a.exists() and not b.exists()


def test_trash_failure_deletes_nothing_for_good(cfg, monkeypatch):
    import send2trash

    a = _video(cfg.videos_dir, "a.mp4")

    def refuse(path):
        raise OSError("no trash on this volume")

    monkeypatch.setattr(send2trash, "send2trash", refuse)
    from vidtray.errors import OperationFailed

    with pytest.raises(OperationFailed, match="--permanent"):
        storage.delete_videos(cfg.videos_dir, older_than_days=None, now=time.time(), to_trash=True)
    assert a.exists()


def test_negative_days_rejected(cfg):
    with pytest.raises(UserError):
        storage.delete_videos(cfg.videos_dir, older_than_days=-1, now=time.time())


def test_one_days_rule_for_the_cli_and_the_tray_dialog():
    from vidtray.tray import dialog

    for text, days in [("30", 30.0), (" 30d ", 30.0), ("1.5", 1.5), ("7 d", 7.0)]:
        assert storage.parse_days(text) == days and dialog.parse_days(text) == days
    for text in ["banana", "-5", "3x", "", "30 days"]:
        with pytest.raises(ValueError, match="number of days"):
            storage.parse_days(text)
        assert dialog.parse_days(text) is None
    # The dialog also wants more than 0 (its menu has "delete all") and no more than config's MAX_DAYS.
    assert storage.parse_days("0") == 0 and dialog.parse_days("0") is None
    assert dialog.parse_days("36500") == 36500 and dialog.parse_days("36501") is None


@pytest.mark.parametrize("value", ["banana", "-5", "3x", ""])
def test_older_than_bad_values(cli, cfg, value):
    v = _video(cfg.videos_dir, "a.mp4", age_days=100)
    res = cli("clean", "videos", "--older-than", value, "--yes")
    assert res.returncode == 2 and res.stderr.startswith("vidtray: error: argument --older-than")
    assert v.exists()


def test_cli_storage_does_not_import_heavy_modules(hub):
    # Not even huggingface_hub: the summary reads the cache with os.scandir (deletes go through huggingface_hub).
    code = ("import sys; from vidtray.cli import main; rc = main(['storage', '--json']); "
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'pystray', 'huggingface_hub') "
            "if m in sys.modules]; "
            "print(heavy, file=sys.stderr); sys.exit(rc or (3 if heavy else 0))")
    import subprocess

    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_clean_videos_keeps_pinned_and_scheduled_and_drops_the_deleted(cli, cfg):
    from vidtray.services.library import open_library

    lib = open_library(cfg)
    pinned = _video(cfg.videos_dir, "pinned.mp4", age_days=40)
    scheduled = _video(cfg.videos_dir, "scheduled.mp4", age_days=40)
    plain = _video(cfg.videos_dir, "plain.mp4", age_days=40)
    items = {p.name: lib.add_video(p, title=p.stem, added=storage.iso(time.time() - 40 * 86400))
             for p in (pinned, scheduled, plain)}
    lib.edit(items["pinned.mp4"]["id"], pinned=True)
    lib.edit(items["scheduled.mp4"]["id"], scheduled_at="2031-01-01T09:00:00+00:00")

    res = cli("clean", "videos", "--older-than", "30", "--yes", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [d["path"] for d in doc["deleted"]] == [str(plain)]
    assert sorted(k["path"] for k in doc["kept"]) == [str(pinned), str(scheduled)]
    assert pinned.exists() and scheduled.exists() and not plain.exists()
    # vidtray deleted it on purpose: it leaves the library rather than lingering as "missing".
    status = {i.title: i.status for i in open_library(cfg).items()}
    assert status == {"pinned": "ready", "scheduled": "ready"}

    report = json.loads(cli("storage", "--json").stdout)["library"]
    assert report["items"] == 2 and report["pinned"] == 1 and report["scheduled"] == 1 and report["missing"] == 0


def test_clean_drops_only_what_it_really_deleted(cfg, monkeypatch):
    import send2trash

    from vidtray.errors import OperationFailed
    from vidtray.services.library import open_library

    lib = open_library(cfg)
    a, b = _video(cfg.videos_dir, "a.mp4"), _video(cfg.videos_dir, "b.mp4")
    lib.add_videos([(a, {}), (b, {})])
    trash = send2trash.send2trash

    def no_trash_for_b(path):
        if path.endswith("b.mp4"):
            raise OSError("no trash on this volume")
        trash(path)

    monkeypatch.setattr(send2trash, "send2trash", no_trash_for_b)
    with pytest.raises(OperationFailed):
        storage.clean_videos(cfg, lib, older_than_days=None, now=time.time(), to_trash=True, dry_run=False)
    assert not a.exists() and b.exists()
    assert [(i.path, i.status) for i in lib.items()] == [(str(b), "ready")]


def test_clean_drops_entries_through_a_symlinked_data_dir(tmp_path):
    from vidtray.config import Config
    from vidtray.services.library import open_library

    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    cfg = Config.from_mapping({"data_dir": str(tmp_path / "link")}, "<test>", env={})
    lib = open_library(cfg)
    lib.add_videos([(_video(cfg.videos_dir, "a.mp4"), {}),
                    (_video(cfg.videos_dir, "b.mp4", age_days=9), {"added": storage.iso(time.time() - 9 * 86400)})])
    result = storage.clean_videos(cfg, lib, older_than_days=5, now=time.time(), to_trash=False, dry_run=False)
    assert [Path(p).name for p in result.deleted_paths] == ["b.mp4"]
    assert [i.path for i in lib.items()] == [str(cfg.videos_dir / "a.mp4")]


def _read_pty(fd: int, until: bytes | None, timeout: float = 60) -> bytes:
    """What the program wrote on its terminal: up to ``until``, or until it closed the terminal."""
    import select

    out = b""
    deadline = time.monotonic() + timeout
    while until is None or until not in out:
        left = deadline - time.monotonic()
        assert left > 0, f"no {until!r} on the terminal in {timeout} s; got {out!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the program closed its end of the terminal
            break
        if not chunk:
            break
        out += chunk
    return out


def test_clean_videos_deletes_exactly_what_was_confirmed(cfg, isolated_env):
    """A real `vidtray clean videos` on a pseudo-terminal: a video copied in while the question is open
    is not in the plan the user said yes to, so it stays."""
    import subprocess

    a, b = _video(cfg.videos_dir, "a.mp4", 100), _video(cfg.videos_dir, "b.mp4", 200)
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "vidtray", "clean", "videos"], stdin=slave, stdout=slave,
                            stderr=slave, cwd=Path(__file__).resolve().parent.parent, env=dict(os.environ))
    os.close(slave)
    try:
        question = _read_pty(master, b"[y/N] ")
        assert b"Delete 2 videos (300 B) to the trash?" in question
        third = _video(cfg.videos_dir, "c.mp4", 400)
        os.write(master, b"y\n")
        answer = _read_pty(master, None).decode(errors="replace")
        assert proc.wait(timeout=60) == 0, answer
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert "Moved to trash 2 videos, 300 B." in answer
    assert "c.mp4" not in answer
    assert not a.exists() and not b.exists() and third.read_bytes() == b"v" * 400
    trash = isolated_env["XDG_DATA_HOME"] / "Trash" / "files"
    assert sorted(p.name for p in trash.iterdir()) == ["a.mp4", "b.mp4"]


def test_older_than_counts_from_when_the_library_first_listed_the_video(cli, cfg, tmp_path):
    import subprocess

    camera = _video(tmp_path / "camera", "holiday.mp4", 500, age_days=400)
    copied = cfg.videos_dir / "holiday.mp4"
    subprocess.run(["cp", "-p", str(camera), str(copied)], check=True)  # keeps the 400-day-old mtime
    listed_late = _video(cfg.videos_dir, "late.mp4", 300, age_days=90)
    _listed(cfg, listed_late, days=2)
    old = _video(cfg.videos_dir, "old.mp4", 100, age_days=60)
    _listed(cfg, old, days=60)

    res = cli("clean", "videos", "--older-than", "30", "--yes", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [d["path"] for d in doc["deleted"]] == [str(old)] and doc["deleted"][0]["age_days"] >= 60
    assert doc["age_from"] == "max(added, mtime)" and doc["older_than_days"] == 30
    reasons = {Path(k["path"]).name: k["reason"] for k in doc["kept"]}
    assert reasons["holiday.mp4"] == "not in the library yet: its age counts from now"
    assert reasons["late.mp4"].startswith("in the library only since ")
    assert copied.exists() and listed_late.exists() and not old.exists()

    human = cli("clean", "videos", "--older-than", "30", "--dry-run").stdout
    assert "age counts from the later of when the library first listed the video" in human
    assert "Nothing to delete." in human
    assert "first listed the video ('added')" in " ".join(cli("clean", "videos", "--help").stdout.split())


def test_a_confirmed_plan_leaves_changed_files_and_the_library_keeps_their_entries(cfg, monkeypatch):
    import send2trash

    from vidtray.services.library import open_library

    lib = open_library(cfg)
    a, b, c, d = (_video(cfg.videos_dir, f"{n}.mp4", 100, sidecar=True) for n in "abcd")
    lib.add_videos([(p, {}) for p in (a, b, c, d)])
    plan = storage.plan_clean(cfg, lib, older_than_days=None, now=time.time())
    assert [v.video.path.name for v in plan.videos] == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]

    with b.open("ab") as fh:  # still being written to
        fh.write(b"more")
    sidecar_path(c).write_text('{"prompt": "edited"}')  # its sidecar changed
    trash = send2trash.send2trash

    def someone_else_deletes_d_first(path):
        if path.endswith("d.mp4"):
            os.unlink(path)  # another cleanup won the race
            raise OSError(2, f"File not found: {path}")
        trash(path)

    monkeypatch.setattr(send2trash, "send2trash", someone_else_deletes_d_first)
    result = storage.execute_clean(lib, plan, to_trash=True)

    assert result.deleted_paths == [a, c]
    assert result.deleted[1]["companions"] == []  # c went, its changed sidecar stayed
    assert result.freed_bytes == 100 + len('{"prompt": "x"}') + 100
    assert {(Path(s["path"]).name, s["reason"]) for s in result.skipped} == {
        ("b.mp4", "changed since it was planned (size or modification time)"),
        ("c.vidtray.json", "changed since it was planned (size or modification time)"),
        ("d.mp4", "gone before it could be deleted")}
    assert b.exists() and sidecar_path(b).exists() and sidecar_path(c).exists()
    # Only what this cleanup really deleted leaves the library; d's entry is the watcher's to mark missing.
    assert sorted(Path(i.path).name for i in lib.items()) == ["b.mp4", "d.mp4"]
    assert result.as_dict()["skipped"] == result.skipped


def test_clean_sees_a_video_listed_under_two_paths_once(cfg, tmp_path):
    """An older library may list one video twice (a watch_dirs symlink to the videos folder): one video,
    the later 'added' counts, a pin on either entry keeps it, and deleting it drops both entries."""
    from vidtray.services.library import Change, open_library

    link = tmp_path / "link"
    link.symlink_to(cfg.videos_dir, target_is_directory=True)
    a, b = _video(cfg.videos_dir, "a.mp4", 100, age_days=90), _video(cfg.videos_dir, "b.mp4", 100, age_days=90)
    lib = open_library(cfg)
    old, recent = storage.iso(time.time() - 90 * 86400), storage.iso(time.time() - 86400)
    lib.add_videos([(a, {"added": old}), (link / "a.mp4", {"added": recent}),
                    (b, {"added": old}), (link / "b.mp4", {"added": old, "pinned": True})])
    plan = storage.plan_clean(cfg, lib, older_than_days=30, now=time.time())
    assert plan.videos == [] and sorted((Path(k["path"]).name, k["reason"][:6]) for k in plan.kept) == [
        ("a.mp4", "in the"), ("b.mp4", "pinned")]
    lib.update(lambda doc: Change([i.update(added=old, pinned=False) for i in doc["items"]], True))
    result = storage.execute_clean(lib, storage.plan_clean(cfg, lib, older_than_days=30, now=time.time()),
                                   to_trash=False)
    assert result.deleted_paths == [a, b] and lib.items() == []
