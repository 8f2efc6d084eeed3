"""Real video files for tests, written with imageio-ffmpeg's bundled ffmpeg."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_mp4(path: Path, frames: int = 8, width: int = 64, height: int = 48, fps: float = 8.0) -> Path:
    """Write a real H.264 mp4 of moving gradient frames; returns the path."""
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
        macro_block_size=1, ffmpeg_log_level="error",
    )
    writer.send(None)
    x = np.linspace(0, 255, width, dtype=np.float32)
    for i in range(frames):
        frame = np.empty((height, width, 3), dtype=np.uint8)
        frame[..., 0] = (x + i * 16) % 256
        frame[..., 1] = np.linspace(0, 255, height, dtype=np.float32)[:, None]
        frame[..., 2] = (i * 32) % 256
        writer.send(frame)
    writer.close()
    return path
