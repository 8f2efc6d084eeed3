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

NOW = time.time()
names = st.sampled_from(["a", "b", "clip", "x y", "ünï", "~lock", ".hidden", "c.part"])
exts = st.sampled_from([".mp4", ".webm", ".MOV", ".json", ".txt", ".mp4.tmp", ".crdownload"])
folders = st.lists(st.sampled_from(["", "sub", "sub/deep", ".partial", ".partial/x", "linkdir", "other"]),
                   min_size=1, max_size=1)
entry = st.tuples(folders.map(lambda f: f[0]), names, exts, st.integers(0, 90),
                  st.sampled_from(["file", "file", "file", "link_in", "link_out"]))


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
        for folder, name, ext, age, kind in entries:
            path = root / folder / f"{name}{ext}"
            if path.exists() or path.is_symlink():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "file":
                path.write_bytes(os.urandom(8))
                os.utime(path, (NOW - age * 86400,) * 2)
            elif kind == "link_in" and created:
                path.symlink_to(created[0])
            else:
                path.symlink_to(outside_file)
            created.append(path)
        protected = {created[i] for i in protect if i < len(created)}

        before = _snapshot(tmp)
        # The expected selection, computed independently of the implementation.
        expected: set[Path] = set()
        for path in created:
            rel = path.relative_to(root)
            in_real_dir = rel.parts[0] != "linkdir" and not any(p.startswith(".") for p in rel.parts[:-1])
            if (in_real_dir and not path.is_symlink() and is_finished_video_name(path.name)
                    and path not in protected
                    and (older is None or path.stat().st_mtime <= NOW - older * 86400)):
                expected.add(path)
                sidecar = path.with_suffix(".json")
                if sidecar.is_file() and not sidecar.is_symlink():
                    expected.add(sidecar)

        result = storage.delete_videos(root, older_than_days=older, now=NOW, protected=protected,
                                       to_trash=to_trash, dry_run=False)

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
