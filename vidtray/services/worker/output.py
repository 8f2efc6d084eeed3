"""A job's frames -> a finished video: encode into ``.partial/`` with the recipe in the mp4's own tags (the
same ffmpeg pass), write the sidecar, rename the video into the videos folder (atomic), then add it to
library.json with a thumbnail. A failed or cancelled write leaves nothing in the videos folder.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from vidtray.config import Config
from vidtray.errors import first_line
from vidtray.services import generation as gen
from vidtray.services import recipe
from vidtray.services.fsutil import atomic_write_bytes, private_dir
from vidtray.services.records import JsonObject
from vidtray.services.worker.backend import FrameArray, JobCancelled
from vidtray.services.worker.partials import land

log = logging.getLogger("vidtray.worker")

#: The memory plan's keys the sidecar keeps (the rest are the figures the decision used).
SIDECAR_MEMORY_KEYS = ("offload", "vae_slicing", "forward_chunking", "vae_tiling", "weights_bytes", "peak_bytes")
#: What the run took: the sidecar's keys beyond the recipe (the file's tags leave them out).
RUN_NOTES = ("resumed_from_latents", "decode", "speed", "recovered")
RUN_KEYS = (*RUN_NOTES, "memory", "timings")


@dataclass(frozen=True)
class HowMade:
    """How the frames were made, beside the parameters: what the recipe and the sidecar record."""

    revision: str | None
    pipeline: str
    device: str
    dtype: str
    memory: JsonObject
    #: Seconds so far (download, load, denoise, decode, per step); encode and total are added on writing.
    timings: dict[str, float]
    #: ``time.perf_counter()`` when the job started, for the total.
    started: float
    guidance_scale: float | None = None
    scheduler: str | None = None
    #: torch and diffusers versions as the worker ran them
    versions: Mapping[str, str | None] = field(default_factory=dict)
    #: more sidecar keys, of :data:`RUN_NOTES`: ``resumed_from_latents``, ``decode`` (how it was decoded),
    #: ``speed`` (the speed options in use), ``recovered`` (what was done after running out of memory)
    notes: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class Saved:
    path: Path
    sidecar: Path
    doc: JsonObject  # the sidecar's content


def encode_mp4(frames: FrameArray, path: Path, fps: float, should_stop: Callable[[], bool] | None = None,
               tags: Mapping[str, str] | None = None) -> None:
    """Write an H.264 mp4 (yuv420p, plays everywhere) with imageio-ffmpeg's bundled ffmpeg; ``tags``
    (title, comment) go into the container in the same pass."""
    import imageio_ffmpeg

    count, height, width, _ = frames.shape
    metadata = [arg for key, value in (tags or {}).items() for arg in ("-metadata", f"{key}={value}")]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1,
        quality=None, output_params=["-crf", "18", "-movflags", "+faststart", *metadata],
        ffmpeg_log_level="error",
    )
    writer.send(None)
    try:
        for i in range(count):
            if should_stop is not None and should_stop():
                raise JobCancelled()
            writer.send(frames[i])
    finally:
        writer.close()


def write_video(cfg: Config, params: gen.Params, frames: FrameArray, made: HowMade,
                should_stop: Callable[[], bool]) -> Saved:
    """Encode into ``.partial/`` and land it with its sidecar (:func:`.partials.land`)."""
    created = datetime.now().astimezone()
    recipe_doc = recipe.build(
        params, revision=made.revision, pipeline=made.pipeline, device=made.device, dtype=made.dtype,
        guidance_scale=made.guidance_scale, scheduler=made.scheduler, versions=made.versions,
        created=created.isoformat(timespec="seconds"))
    t_enc = time.perf_counter()

    def encode(partial: Path) -> None:
        encode_mp4(frames, partial, params.fps, should_stop=should_stop, tags=recipe.container_tags(recipe_doc))
        if should_stop():
            raise JobCancelled()

    def sidecar_doc() -> JsonObject:
        timings = {**made.timings, "encode_s": time.perf_counter() - t_enc,
                   "total_s": time.perf_counter() - made.started}
        # The sidecar: the recipe, and what the run took (which the file's tags leave out).
        return {
            **recipe_doc,
            **made.notes,  # of RUN_NOTES (test_recipe checks that the tags hold the rest)
            "memory": {k: v for k, v in made.memory.items() if k in SIDECAR_MEMORY_KEYS},
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }

    stem = gen.video_stem(params, created.timestamp(), cfg.videos_dir)
    return Saved(*land(cfg.partial_dir, cfg.videos_dir, stem, encode, sidecar_doc))


def add_to_library(cfg: Config, saved: Saved, params: gen.Params, frames: FrameArray,
                   warn: Callable[[str], None]) -> str | None:
    """Add the video to library.json now (the watcher would too; the upsert is idempotent), with a
    thumbnail made from the frames in memory (no second decode); its library id. A failure here is
    logged and passed to ``warn``, not fatal: the video and its sidecar are in place for the watcher."""
    try:
        from vidtray.services.library import open_library
        from vidtray.services.media import thumbnail_path

        thumb = thumbnail_path(cfg.thumbnails_dir, saved.path)
        write_thumbnail(frames, params.fps, thumb)
        item = open_library(cfg).add_video(
            saved.path, prompt=params.prompt, model=params.model, seed=params.seed, created=saved.doc["created"],
            source="generated", fps=params.fps, width=int(frames.shape[2]), height=int(frames.shape[1]),
            duration_s=round(frames.shape[0] / params.fps, 3), size_bytes=saved.path.stat().st_size,
            codec="h264", thumbnail=str(thumb), status="ready",
        )
        item_id = item.get("id") if isinstance(item, dict) else None
        return item_id if isinstance(item_id, str) else None
    except Exception as exc:
        log.warning("could not add %s to the library: %s", saved.path, exc, exc_info=True)
        warn(f"video saved, but library.json was not updated: {first_line(exc)}")
        return None


def write_thumbnail(frames: FrameArray, fps: float, dest: Path) -> None:
    """JPEG of an early frame (10% in, at most 1 s, like the watcher's), written atomically."""
    from PIL import Image

    from vidtray.services.media import THUMB_MAX

    index = min(len(frames) - 1, int(min(1.0, len(frames) / fps * 0.1) * fps))
    image = Image.fromarray(frames[index])
    image.thumbnail(THUMB_MAX)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    private_dir(dest.parent)
    atomic_write_bytes(dest, buf.getvalue())
