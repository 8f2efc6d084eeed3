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
    (folder / "refs").mkdir(exist_ok=True)
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
