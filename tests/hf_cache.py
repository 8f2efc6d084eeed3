"""Build a real Hugging Face hub cache layout (blobs, snapshot symlinks, refs) on disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def make_repo(cache: Path, repo_id: str, files: dict[str, bytes], *, commit: str | None = None,
              repo_type: str = "model", ref: str = "main", incomplete: bytes | None = None) -> Path:
    """Create ``<cache>/models--org--name`` as huggingface_hub would after a download; returns it."""
    folder = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
    (folder / "refs" / ref).write_text(commit)
    snap = folder / "snapshots" / commit
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    if incomplete is not None:
        (folder / "blobs" / (hashlib.sha256(incomplete).hexdigest() + ".incomplete")).write_bytes(incomplete)
    return folder


def make_broken_repo(cache: Path, repo_id: str, blob: bytes) -> Path:
    """A download interrupted before any snapshot: blobs and an .incomplete, no snapshots folder."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / "deadbeef.incomplete").write_bytes(blob)
    return folder


def age(path: Path, days: float, now: float | None = None) -> Path:
    """Set ``path``'s modification (and access) time ``days`` ago; returns it."""
    import time

    t = (time.time() if now is None else now) - days * 86400
    os.utime(path, (t, t), follow_symlinks=False)
    return path


def age_repo(folder: Path, days: float, now: float | None = None) -> Path:
    """Every plain file of a repo folder (its blobs: what "downloaded" or "modified" is read from) ``days`` old."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            age(path, days, now)
    return folder


def make_partial(repo: Path, data: bytes, days: float = 0, name: str | None = None) -> Path:
    """An interrupted download in a repo folder: ``blobs/<etag>.incomplete``, last written ``days`` ago."""
    path = repo / "blobs" / f"{name or hashlib.sha256(data).hexdigest()}.incomplete"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return age(path, days)


STORE_MARKER = ".huggingface-shared-blobs"


def make_shared_repo(cache: Path, repo_id: str, files: dict[str, bytes], *, commit: str | None = None,
                     repo_type: str = "model") -> Path:
    """A repo whose blobs live in huggingface_hub's cache-wide shared blob store, as its Xet downloads leave
    them (``huggingface_hub.utils._shared_blobs``): the payload at ``<cache>/blobs/<2 hex>/<hash>`` (here the
    sha256 of the content, a 64-hex name as a Xet hash is), its ``<hash>.refs`` manifest listing the repo
    blobs that link to it, the store's marker file, and ``<repo>/blobs/<etag>`` a relative symlink to it.
    Two repos given the same content share one payload."""
    folder = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    store = cache / "blobs"
    store.mkdir(parents=True, exist_ok=True)
    (store / STORE_MARKER).write_text("1\n")
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    snap = folder / "snapshots" / commit
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        payload = store / digest[:2] / digest
        payload.parent.mkdir(exist_ok=True)
        if not payload.exists():
            payload.write_bytes(data)
        etag = hashlib.sha1(data).hexdigest()
        blob = folder / "blobs" / etag
        if not blob.is_symlink():
            os.symlink(os.path.relpath(payload, blob.parent), blob)
            with open(store / digest[:2] / f"{digest}.refs", "a") as fh:
                fh.write(f"{blob.relative_to(cache).as_posix()}\n")
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return folder
