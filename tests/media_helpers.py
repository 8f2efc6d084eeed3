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


def write_source(path: Path, seconds: float = 6.0, fps: int = 8, size: str = "160x120") -> Path:
    """A real H.264 mp4 of ffmpeg's moving test pattern, ``seconds`` long (the input of a live writer)."""
    import subprocess

    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate={fps}", "-t", f"{seconds:g}", "-c:v", "libx264", "-g", "4",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def start_live_writer(src: Path, dest: Path):  # -> subprocess.Popen[bytes]
    """Start ffmpeg re-encoding ``src`` into ``dest`` (Matroska or WebM, by its extension) at real-time
    speed (``-re``), flushing every cluster: the file grows for as long as ``src`` lasts, as a recorder's
    output does, and gets its duration only when ffmpeg finishes."""
    import subprocess

    import imageio_ffmpeg

    codec = (["-c:v", "libvpx", "-deadline", "realtime"] if dest.suffix == ".webm"
             else ["-c:v", "libx264", "-preset", "ultrafast"])
    return subprocess.Popen(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-nostdin", "-re", "-i", str(src), *codec,
         "-g", "4", "-cluster_time_limit", "250", "-flush_packets", "1", str(dest)],
        stdin=subprocess.DEVNULL)
