"""Denoised latents kept in ``.partial/`` until the video has landed: ``<job id>.latents.safetensors``.

The backend writes and reads the tensor (safetensors' torch API, in the one module that imports torch);
this module is the rest, standard library only, so the CLI, the storage report and the cleanup use it
without torch: the file's name for a job, the header that says what the latents are (model, revision,
pipeline, size, frames, steps, seed, dtype, a hash of the whole recipe), reading that header back with a
check that the file is whole (a safetensors file is an 8-byte header length, a JSON header, then the
data, whose end the header names), and the cleanup rule: the latents of a job that is queued, running or
failed (it may be retried) stay; any others go once they are a day old.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("vidtray.worker")

SUFFIX = ".latents.safetensors"
#: The latents header's format; a file written by another format is not resumed from.
FORMAT = "1"
#: Orphaned latents (no queued, running or failed job of that id) are removed once this old.
ORPHAN_AGE_S = 86400.0
#: The longest safetensors header vidtray reads (its own are under 2 KB).
MAX_HEADER = 1 << 20
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class BadLatents(ValueError):
    """A latents file that cannot be resumed from (the message says why)."""


def file_name(job_id: str) -> str:
    """``<job id>.latents.safetensors``; an id that is not a plain name is hashed (never a path)."""
    safe = job_id if _SAFE_ID.match(job_id) else "job-" + hashlib.sha256(job_id.encode()).hexdigest()[:16]
    return safe + SUFFIX


def path_for(partial_dir: Path, job_id: str) -> Path:
    return partial_dir / file_name(job_id)


def job_of(path: Path) -> str | None:
    """The job id a latents file belongs to (None: not a latents file)."""
    return path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else None


def header_for(params: Mapping[str, object], *, model: str, revision: str | None, pipeline: str, device: str,
               dtype: str, recipe_hash: str) -> dict[str, str]:
    """What a latents file says about itself (safetensors metadata: strings only). Everything that decides
    the latents is in it, so a file from another model, size or recipe is never decoded as this job's."""
    return {
        "vidtray_latents": FORMAT, "model": model, "revision": revision or "", "pipeline": pipeline,
        "width": str(params["width"]), "height": str(params["height"]), "frames": str(params["frames"]),
        "steps": str(params["steps"]), "seed": str(params["seed"]), "device": device, "dtype": dtype,
        "recipe": recipe_hash, "created": str(round(time.time(), 3)),
    }


#: The header keys that must match for a file to be this job's latents (``created`` is only informative).
MATCH_KEYS = ("vidtray_latents", "model", "revision", "pipeline", "width", "height", "frames", "steps", "seed",
              "device", "dtype", "recipe")


def mismatch(found: Mapping[str, str], expected: Mapping[str, str]) -> str | None:
    """Why a file's header is not this job's latents ("made at 64x64, this job is 32x32"), or None."""
    for key in MATCH_KEYS:
        if found.get(key) != expected.get(key):
            if key in ("width", "height"):
                return (f"made at {found.get('width')}x{found.get('height')}, this job is "
                        f"{expected.get('width')}x{expected.get('height')}")
            return f"its {key} is {found.get(key)!r}, this job's is {expected.get(key)!r}"
    return None


def read_header(path: Path) -> dict[str, str]:
    """The metadata of a vidtray latents file, after checking that the file is whole; BadLatents (saying
    why) for a truncated, foreign or unreadable file."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise BadLatents(f"truncated ({size} bytes)")
            (length,) = struct.unpack("<Q", head)
            if not 2 <= length <= MAX_HEADER or 8 + length > size:
                raise BadLatents(f"truncated or not a safetensors file (header of {length} bytes, file of {size})")
            doc = json.loads(f.read(length).decode("utf-8"))
    except OSError as exc:
        raise BadLatents(f"cannot be read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError):
        raise BadLatents("its header is not JSON (not a safetensors file)") from None
    if not isinstance(doc, dict):
        raise BadLatents("its header is not a JSON object")
    meta = doc.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("vidtray_latents") is None:
        raise BadLatents("not a vidtray latents file")
    tensors = [t for name, t in doc.items() if name != "__metadata__" and isinstance(t, dict)]
    ends = [t.get("data_offsets", [0, 0])[-1] for t in tensors]
    if not ends or not all(isinstance(e, int) for e in ends):
        raise BadLatents("it holds no tensor")
    if 8 + length + max(ends) != size:
        raise BadLatents(f"truncated: {size} bytes where its header says {8 + length + max(ends)}")
    return {str(k): str(v) for k, v in meta.items()}


def discard(path: Path, why: str) -> None:
    log.warning("discarding the saved latents %s: %s; denoising again", path.name, why)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def remove(partial_dir: Path, job_id: str) -> bool:
    """Remove a job's latents (its video has landed, or it was cancelled); whether there were any."""
    try:
        path_for(partial_dir, job_id).unlink()
    except FileNotFoundError:
        return False
    log.info("removed the saved latents of job %s", job_id)
    return True


def exists(partial_dir: Path, job_id: str) -> bool:
    return path_for(partial_dir, job_id).is_file()


@dataclass(frozen=True)
class Kept:
    """One latents file in ``.partial/``, for the storage report."""

    path: str
    job: str
    size_bytes: int
    modified: float  # epoch seconds

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.modified)


def list_kept(partial_dir: Path) -> list[Kept]:
    """Every latents file in ``.partial/``, oldest first."""
    found: list[Kept] = []
    try:
        entries = list(os.scandir(partial_dir))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        if not entry.name.endswith(SUFFIX) or entry.name.startswith("."):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        job = job_of(Path(entry.path))
        if job is not None and entry.is_file(follow_symlinks=False):
            found.append(Kept(entry.path, job, st.st_size, st.st_mtime))
    return sorted(found, key=lambda k: k.modified)


def clean_orphans(partial_dir: Path, keep_jobs: Collection[str] | None, now: float | None = None,
                  max_age_s: float = ORPHAN_AGE_S) -> list[Path]:
    """Remove latents whose job is not in ``keep_jobs`` (queued, running or failed jobs) once they are
    ``max_age_s`` old. ``keep_jobs`` None (the queue could not be read): nothing goes."""
    removed: list[Path] = []
    if keep_jobs is None:
        return removed
    keep = {file_name(j) for j in keep_jobs}
    now = time.time() if now is None else now
    for kept in list_kept(partial_dir):
        path = Path(kept.path)
        if path.name in keep or kept.age_s(now) < max_age_s:
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    if removed:
        log.info("removed %d orphaned latents file(s) from %s", len(removed), partial_dir)
    return removed
