"""The cache scan (``hub.scan_cache``: os.scandir, no huggingface_hub) on real cache layouts, checked against
huggingface_hub's own ``scan_cache_dir`` and delete strategy: the same repos, sizes, revisions and refs, the
same broken repos, and what deleting a repo really frees where repos share blobs (the shared blob store)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import unprivileged
from conftest import ROOT
from hf_cache import age, make_broken_repo, make_partial, make_repo, make_shared_repo

from vidtray.services import hub, storage

KiB = 1024


def _cache(root: Path) -> Path:
    """Every layout the scan must read: plain repos, repos sharing payloads in the shared store, partial
    downloads, a dataset, a repo interrupted before its first snapshot, a half-deleted repo, a dangling ref."""
    cache = root / "hub"
    shared = os.urandom(8 * KiB)
    make_repo(cache, "org/plain", {"model_index.json": b'{"_class_name": "TextToVideoSDPipeline"}',
                                   "unet/w.bin": os.urandom(4 * KiB)}, incomplete=b"i" * 300)
    make_repo(cache, "org/plain", {"model_index.json": b'{"v": 2}'}, commit="b" * 40, ref="refs/pr/1")
    make_shared_repo(cache, "org/a", {"model_index.json": b'{"a": 1}', "unet/w.bin": shared,
                                      "vae/w.bin": os.urandom(2 * KiB)})
    make_shared_repo(cache, "org/b", {"model_index.json": b'{"b": 1}', "unet/w.bin": shared})
    make_repo(cache, "org/data", {"a.csv": b"1,2"}, repo_type="dataset")
    make_broken_repo(cache, "org/interrupted", b"y" * 500)
    half = make_repo(cache, "org/half", {"x.bin": b"h" * 700, "y.bin": b"k" * 50})
    (half / "blobs" / __import__("hashlib").sha256(b"h" * 700).hexdigest()).unlink()  # half-deleted
    dangling = make_repo(cache, "org/dangling", {"x.bin": b"d" * 10})
    (dangling / "refs" / "old").write_text("c" * 40)
    (cache / ".locks").mkdir()
    (cache / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55")
    return cache


def test_the_scan_reads_what_huggingface_hub_reads(tmp_path: Path) -> None:
    from huggingface_hub import scan_cache_dir

    cache = _cache(tmp_path)
    ours = hub.scan_cache(cache)
    theirs = scan_cache_dir(cache)
    by_id = {(r.repo_type, r.repo_id): r for r in theirs.repos}
    assert [(r.repo_type, r.repo_id) for r in ours.repos] == sorted(by_id)
    for repo in ours.repos:
        ref = by_id[(repo.repo_type, repo.repo_id)]
        assert repo.path == ref.repo_path
        assert (repo.size_bytes, repo.files) == (ref.size_on_disk, ref.nb_files), repo.repo_id
        assert repo.revisions == tuple(sorted(r.commit_hash for r in ref.revisions))
        assert repo.refs == tuple(sorted(x for r in ref.revisions for x in r.refs))
        assert (repo.last_modified, repo.last_accessed) == (ref.last_modified, ref.last_accessed)
    assert [b.repo_id for b in ours.broken] == ["org/dangling", "org/half", "org/interrupted"]
    assert len(theirs.warnings) == 3
    assert "Snapshots dir doesn't exist" in ours.broken[2].reason
    assert "Blob missing" in ours.broken[1].reason and "missing commit hashes" in ours.broken[0].reason
    # Physical size: huggingface_hub's (shared payloads once) plus what it leaves out: partial downloads and
    # the broken repos' files.
    assert ours.size_bytes == theirs.size_on_disk + 300 + sum(b.size_bytes for b in ours.broken)
    assert ours.incomplete_bytes == theirs.incomplete_size_on_disk == 300 + 500
    plain = next(r for r in ours.repos if r.repo_id == "org/plain")
    assert plain.pipeline() == "TextToVideoSDPipeline" and [p.size_bytes for p in plain.partials] == [300]
    shared = [r for r in ours.repos if r.repo_id in ("org/a", "org/b")]
    assert all(r.shared_bytes == r.size_bytes for r in shared)
    assert ours.shared_store_bytes == 8 * KiB + 2 * KiB + 2 * len(b'{"a": 1}')


def test_what_deleting_repos_frees_is_what_huggingface_hub_frees(tmp_path: Path) -> None:
    """A payload two repos share goes only with the second of them; the scan says so before, and a re-scan
    after the delete agrees."""
    from huggingface_hub import scan_cache_dir

    cache = _cache(tmp_path)
    scan = hub.scan_cache(cache)
    theirs = scan_cache_dir(cache)
    repos = {r.repo_id: r for r in scan.repos}

    def expected(*ids: str) -> int:
        revisions = [r.commit_hash for x in theirs.repos if x.repo_id in ids for r in x.revisions]
        partial = sum(p.size_bytes for i in ids for p in repos[i].partials)
        return theirs.delete_revisions(*revisions).expected_freed_size + partial

    for ids in (("org/a",), ("org/b",), ("org/a", "org/b"), ("org/plain",), ("org/plain", "org/a")):
        assert scan.frees(repos[i].path for i in ids) == expected(*ids), ids
    assert repos["org/a"].frees_bytes == 2 * KiB + len(b'{"a": 1}')  # the unet payload is shared with org/b
    assert scan.frees([repos["org/a"].path, repos["org/b"].path]) == \
        repos["org/a"].frees_bytes + repos["org/b"].frees_bytes + 8 * KiB

    plan = storage.model_clean_plan(scan, [repos["org/a"]])
    assert storage.execute_model_cleanup(plan) == plan.expected_freed_bytes == repos["org/a"].frees_bytes
    again = hub.scan_cache(cache)
    plan = storage.model_clean_plan(again, [r for r in again.repos if r.repo_id == "org/b"])
    assert plan.expected_freed_bytes == len(b'{"b": 1}') + 8 * KiB  # now it holds the shared payload alone
    assert storage.execute_model_cleanup(plan) == plan.expected_freed_bytes
    assert hub.scan_cache(cache).shared_store_bytes == 0


def test_a_repo_folder_that_cannot_be_read_is_reported_not_fatal(tmp_path: Path) -> None:
    """Run where file modes bind (as root too): an unreadable repo folder is a broken repo with its reason,
    in the report and the plan; an unreadable cache is one line and exit 1."""
    cache = tmp_path / "hf" / "hub"
    make_repo(cache, "org/fine", {"model_index.json": b"{}"})
    locked = make_repo(cache, "org/locked", {"model_index.json": b"{}"})
    os.chmod(locked / "snapshots", 0)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    try:
        res = unprivileged.run([sys.executable, "-m", "vidtray", "storage", "--json"], env=env, cwd=ROOT,
                               timeout=60)
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert [r["repo_id"] for r in doc["models"]["repos"]] == ["org/fine"]
        [broken] = doc["models"]["broken"]
        assert broken["repo_id"] == "org/locked" and "ermission denied" in broken["reason"]
        res = unprivileged.run([sys.executable, "-m", "vidtray", "storage", "plan", "--budget", "0.000001"],
                               env=env, cwd=ROOT, timeout=60)
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        os.chmod(cache, 0)
        res = unprivileged.run([sys.executable, "-m", "vidtray", "storage", "--json"], env=env, cwd=ROOT,
                               timeout=60)
        assert res.returncode == 1
        assert res.stderr.strip().splitlines()[-1].startswith("vidtray: error: cannot read the model cache")
        assert json.loads(res.stdout)["error"]["kind"] == "failed"
    finally:
        os.chmod(cache, 0o755)
        os.chmod(locked / "snapshots", 0o755)


def test_a_cache_that_is_a_file_or_missing_is_empty(tmp_path: Path) -> None:
    assert hub.scan_cache(tmp_path / "absent") == hub.CacheScan(tmp_path / "absent")
    (tmp_path / "file").write_text("")
    assert hub.scan_cache(tmp_path / "file").repos == ()


def test_partial_downloads_carry_their_age(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    repo = make_repo(cache, "org/m", {"a.bin": b"a"})
    make_partial(repo, b"p" * 40, days=9)
    interrupted = make_broken_repo(cache, "org/gone", b"q" * 60)
    age(interrupted / "blobs" / "deadbeef.incomplete", 12)
    scan = hub.scan_cache(cache)
    [p] = scan.repos[0].partials
    assert p.size_bytes == 40 and 8.9 < (os.path.getmtime(p.path) - p.mtime) + 9 < 9.1
    assert abs(scan.broken[0].modified - os.path.getmtime(interrupted / "blobs" / "deadbeef.incomplete")) < 1e-6


def test_the_scan_imports_no_huggingface_hub() -> None:
    import subprocess

    code = ("import sys; from vidtray.services import hub; hub.scan_cache(); "
            "sys.exit(3 if 'huggingface_hub' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


@pytest.fixture(autouse=True)
def _no_leftover_modes(tmp_path: Path):  # type: ignore[no-untyped-def]
    yield
    for path in tmp_path.rglob("*"):  # a failed test must not leave tmp_path unremovable
        if path.is_dir() and not path.is_symlink():
            os.chmod(path, 0o755)
    shutil.rmtree(tmp_path, ignore_errors=True)
