"""Property: whatever tree and selection hypothesis picks, cleanup deletes exactly the selection."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidtray.services import storage
from vidtray.services.fsutil import is_finished_video_name
from vidtray.services.sidecar import sidecar_path

NOW = time.time()
names = st.sampled_from(["a", "b", "clip", "x y", "ünï", "~lock", ".hidden", "c.part"])
exts = st.sampled_from([".mp4", ".webm", ".MOV", ".json", ".vidtray.json", ".txt", ".mp4.tmp", ".crdownload"])
#: An old-style ``<stem>.json``: vidtray's own (it goes with its video) or another tool's (it stays).
LEGACY_OURS, FOREIGN = b'{"vidtray_version": "0.1.0"}', b'{"prompt": "another tool"}'
folders = st.lists(st.sampled_from(["", "sub", "sub/deep", ".partial", ".partial/x", "linkdir", "other"]),
                   min_size=1, max_size=1)
# When the library first listed the file: days ago, not listed (None: counts as now), or listed without
# a usable "added" ("undated": its mtime alone counts).
listed = st.one_of(st.none(), st.just("undated"), st.integers(0, 90))
entry = st.tuples(folders.map(lambda f: f[0]), names, exts, st.integers(0, 90),
                  st.sampled_from(["file", "file", "file", "link_in", "link_out"]), listed)


def _first_seen(when: int | str | None) -> float:
    if when is None:
        return NOW
    return float("-inf") if when == "undated" else NOW - when * 86400


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(entry, max_size=25), older=st.one_of(st.none(), st.integers(0, 60)),
       protect=st.sets(st.integers(0, 24), max_size=5), to_trash=st.booleans())
def test_nothing_outside_the_selection_is_deleted(entries, older, protect, to_trash):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "videos"
        outside = tmp / "outside"
        outside.mkdir(parents=True)
        (root / "other").mkdir(parents=True)
        (root / "linkdir").symlink_to(outside, target_is_directory=True)
        outside_file = outside / "victim.mp4"
        outside_file.write_bytes(b"outside")
        os.utime(outside_file, (NOW - 99 * 86400,) * 2)

        created: list[Path] = []
        first_seen: dict[Path, float] = {}
        for folder, name, ext, age, kind, when in entries:
            path = root / folder / f"{name}{ext}"
            if path.exists() or path.is_symlink():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "file":
                path.write_bytes((LEGACY_OURS if age % 2 else FOREIGN) if ext == ".json" else os.urandom(8))
                os.utime(path, (NOW - age * 86400,) * 2)
            elif kind == "link_in" and created:
                path.symlink_to(created[0])
            else:
                path.symlink_to(outside_file)
            created.append(path)
            if when is not None:
                first_seen[path] = _first_seen(when)
        protected = {created[i] for i in protect if i < len(created)}

        before = _snapshot(tmp)
        # The expected selection, computed independently of the implementation.
        expected: set[Path] = set()
        for path in created:
            rel = path.relative_to(root)
            in_real_dir = rel.parts[0] != "linkdir" and not any(p.startswith(".") for p in rel.parts[:-1])
            if (in_real_dir and not path.is_symlink() and is_finished_video_name(path.name)
                    and path not in protected
                    and (older is None or max(first_seen.get(path, NOW), path.stat().st_mtime)
                         <= NOW - older * 86400)):
                expected.add(path)
                sidecar = sidecar_path(path)
                if sidecar.is_file() and not sidecar.is_symlink():
                    expected.add(sidecar)
                legacy = path.with_suffix(".json")
                if legacy.is_file() and not legacy.is_symlink() and legacy.read_bytes() == LEGACY_OURS:
                    expected.add(legacy)

        result = storage.delete_videos(root, older_than_days=older, now=NOW, protected=protected,
                                       first_seen=first_seen, to_trash=to_trash, dry_run=False)

        after = _snapshot(tmp)
        gone = set(before) - set(after)
        assert gone == expected
        assert {Path(d["path"]) for d in result.deleted} == \
            {p for p in expected if is_finished_video_name(p.name)}
        for path, content in after.items():  # nothing that stayed was changed
            assert before[path] == content
        assert outside_file.read_bytes() == b"outside"


def _snapshot(tmp: Path) -> dict[Path, bytes | str]:
    """Every file and link: content for files, target for links (the trash is elsewhere)."""
    out: dict[Path, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(tmp):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            p = Path(dirpath) / name
            out[p] = ("link:" + os.readlink(p)) if p.is_symlink() else p.read_bytes()
    return out


# What happens to a planned video between the plan (the question) and its execution (the answer).
CHANGES = ["none", "none", "touch", "append", "delete", "replace", "sidecar_touch", "sidecar_delete",
           "sidecar_new"]
VIDEO_CHANGES = ("touch", "append", "delete", "replace")


def _change(root: Path, name: str, sidecar: bool, change: str) -> None:
    """Make ``change`` to the planned video ``name`` (or to its sidecar) after the plan."""
    video, side = root / f"{name}.mp4", root / f"{name}.vidtray.json"
    if change == "touch":
        os.utime(video, (NOW, NOW))
    elif change == "append":
        with video.open("ab") as fh:
            fh.write(b"more")
    elif change == "delete":
        video.unlink()
    elif change == "replace":  # same name, size and mtime, another file (another inode)
        tmp_file = root / f".{name}.new"
        tmp_file.write_bytes(os.urandom(16))
        st_old = video.stat()
        os.utime(tmp_file, ns=(st_old.st_atime_ns, st_old.st_mtime_ns))
        os.replace(tmp_file, video)
    elif change == "sidecar_touch" and sidecar:
        os.utime(side, (NOW, NOW))
    elif change == "sidecar_delete" and sidecar:
        side.unlink()
    elif change == "sidecar_new" and not sidecar:
        side.write_text("{}")


def _fate(root: Path, name: str, sidecar: bool, change: str) -> tuple[set[Path], set[Path]]:
    """What executing the plan must do after ``change``: the files that go, and those left alone."""
    video, side = root / f"{name}.mp4", root / f"{name}.vidtray.json"
    if change in VIDEO_CHANGES:
        return set(), {video}  # it and its sidecar stay
    if sidecar and change in ("sidecar_touch", "sidecar_delete"):
        return {video}, {side}  # touched or gone: not the planned sidecar
    return ({video, side} if sidecar else {video}), set()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(videos=st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"]), st.booleans(),
                                 st.sampled_from(CHANGES)), max_size=8, unique_by=lambda v: v[0]),
       newcomers=st.integers(0, 3), to_trash=st.booleans())
def test_executing_a_plan_deletes_only_what_was_planned_and_is_unchanged(videos, newcomers, to_trash):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "videos"
        root.mkdir()
        old = NOW - 50 * 86400
        for name, sidecar, _ in videos:
            (root / f"{name}.mp4").write_bytes(os.urandom(16))
            os.utime(root / f"{name}.mp4", (old, old))
            if sidecar:
                (root / f"{name}.vidtray.json").write_text("{}")
        plan = storage.plan_videos(root, older_than_days=None, now=NOW)

        expected_gone: set[Path] = set()
        expected_skipped: set[Path] = set()
        for name, sidecar, change in videos:
            _change(root, name, sidecar, change)
            gone, skipped = _fate(root, name, sidecar, change)
            expected_gone |= gone
            expected_skipped |= skipped
        for n in range(newcomers):  # arrived while the question was open: never planned
            (root / f"new{n}.mp4").write_bytes(b"new")
            os.utime(root / f"new{n}.mp4", (old, old))

        before = _snapshot(root)
        result = storage.execute_plan(plan, to_trash=to_trash)
        after = _snapshot(root)
        assert set(before) - set(after) == expected_gone
        assert set(result.deleted_paths) == {p for p in expected_gone if p.suffix == ".mp4"}
        assert {Path(s["path"]) for s in result.skipped} == expected_skipped
        assert result.freed_bytes == sum(len(before[p]) for p in expected_gone)
        for path, content in after.items():
            assert before[path] == content
