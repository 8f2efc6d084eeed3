"""Probe videos (duration, fps, size, codec, and: does it decode to the end?) and make thumbnails.

Everything runs imageio-ffmpeg's bundled ffmpeg. Starting ffmpeg costs ~20 ms of CPU, more than
decoding a short clip, so ``probe_many`` hands up to ``BATCH`` files to one ffmpeg process (one input
and one null output each) and reads per-input results from its verbose log; a batch that ffmpeg
refuses as a whole (one file that does not open) is retried file by file. The same run copies each input's
container tags (title, comment: where vidtray keeps a video's recipe) into a small ``ffmetadata`` file per
input: the verbose log cuts every tag value at 255 bytes, too short for a recipe, and a second ffmpeg run
per file would cost more than the probe.

A file is ``ok`` only if it is a video that decodes to its end: it opens as a video container (not a
still image under a video name), its header states a duration, it decodes without errors, the demuxer
did not run out of file mid-element, and it yields about as many frames as duration x fps. The duration
matters most for Matroska/WebM: a writer fills it in only when it finishes, so a file still being
written (or whose writer was killed) decodes cleanly up to its cut and says ``Duration: N/A``.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from vidtray.services import recipe
from vidtray.services.fsutil import atomic_write_bytes, private_dir
from vidtray.services.libitem import Fields, abs_path, item_id_for

log = logging.getLogger("vidtray.media")

#: Files per ffmpeg process when probing or thumbnailing many at once.
BATCH = 32
#: ffmpeg processes at a time: one more than the cores, since part of each run waits on the disk.
PARALLEL = min(4, (os.cpu_count() or 1) + 1)
THUMB_MAX = (320, 320)
PROBE_TIMEOUT_S = 120.0


@cache
def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


@dataclass
class ProbeResult:
    path: Path
    ok: bool = False
    duration_s: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    size_bytes: int | None = None
    frames: int | None = None
    #: ffmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "png_pipe"
    container: str | None = None
    error: str | None = None
    #: the failure may pass without the file changing (permission, I/O, ffmpeg could not run): try again
    transient: bool = False
    #: error lines ffmpeg printed for this input (for the log)
    messages: list[str] = field(default_factory=list)
    #: the container's global tags, keys lower-case (``title``, ``comment``, ...)
    tags: dict[str, str] = field(default_factory=dict)

    def fields(self) -> Fields:
        """Library item fields: the metadata, and ``status`` ready or broken (with ``error``)."""
        out: Fields = {
            "size_bytes": self.size_bytes, "duration_s": self.duration_s, "fps": self.fps,
            "width": self.width, "height": self.height, "codec": self.codec,
            "status": "ready" if self.ok else "broken",
        }
        if not self.ok:
            out["error"] = self.error or "does not decode"
        return out


def probe(path: Path) -> ProbeResult:
    return probe_many([path])[0]


def probe_many(paths: Sequence[Path], *, batch: int = BATCH, parallel: int = PARALLEL) -> list[ProbeResult]:
    """Probe and fully decode each file; results in the order of ``paths``."""
    paths = [Path(p) for p in paths]
    if not paths:
        return []
    chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
    if len(chunks) == 1 or parallel <= 1:
        results = [_probe_chunk(c) for c in chunks]
    else:
        with ThreadPoolExecutor(min(parallel, len(chunks)), thread_name_prefix="probe") as pool:
            results = list(pool.map(_probe_chunk, chunks))
    return [r for chunk in results for r in chunk]


def _probe_chunk(paths: list[Path]) -> list[ProbeResult]:
    results = [ProbeResult(p) for p in paths]
    todo: list[int] = []
    for n, r in enumerate(results):
        try:
            st = os.stat(r.path)
        except OSError as exc:
            r.error = f"cannot read: {exc.strerror or exc}"
            r.transient = not isinstance(exc, FileNotFoundError)
            continue
        r.size_bytes = st.st_size
        if st.st_size == 0:
            r.error = "empty file (0 bytes)"
            continue
        try:
            # Unreadable (permission) is a passing state, not a verdict on the content: say so without ffmpeg.
            os.close(os.open(r.path, os.O_RDONLY))
        except OSError as exc:
            r.error = f"cannot read: {exc.strerror or exc}"
            r.transient = not isinstance(exc, FileNotFoundError)
            continue
        todo.append(n)
    if not todo:
        return results
    rc, text = _run_ffmpeg_probe([results[n] for n in todo])
    if rc == 0 or len(todo) == 1:
        _parse_probe_log(text, [results[n] for n in todo], rc)
    else:
        # One bad input makes ffmpeg give up on all of them: find out which, one by one.
        for n in todo:
            rc1, text1 = _run_ffmpeg_probe([results[n]])
            _parse_probe_log(text1, [results[n]], rc1)
    for n in todo:
        r = results[n]
        if not r.ok:
            log.debug("not a usable video: %s: %s", r.path, r.error)
    return results


def _run_ffmpeg_probe(results: list[ProbeResult]) -> tuple[int, str]:
    """Decode every input to a null output, and copy each one's tags into ``results[k].tags``; returns
    ffmpeg's status and verbose log. The tags are extra: where their small files cannot be written (a full
    temp folder), the inputs are probed without them rather than failed."""
    try:
        with tempfile.TemporaryDirectory(prefix="vidtray-probe-", ignore_cleanup_errors=True) as tmp:
            rc, text = _run_ffmpeg(results, Path(tmp))
            if rc != 0 and tmp in text:
                log.info("probing without tags: ffmpeg could not write them in %s", tmp)
                return _run_ffmpeg(results, None)
            for k, r in enumerate(results):
                r.tags = _read_tag_file(Path(tmp) / f"{k}.txt")
            return rc, text
    except OSError as exc:
        log.info("probing without tags: no temp folder for them (%s)", exc)
        return _run_ffmpeg(results, None)


def _run_ffmpeg(results: list[ProbeResult], tags_dir: Path | None) -> tuple[int, str]:
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "verbose"]
    for r in results:
        # One decoder thread per input: tiny clips decode faster without the thread start-up.
        cmd += ["-threads", "1", "-i", _arg(r.path)]
    for k in range(len(results)):
        cmd += ["-map", f"{k}:V:0", "-f", "null", "-"]
    if tags_dir is not None:
        for k in range(len(results)):
            cmd += _tags_output(k, tags_dir / f"{k}.txt")
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=PROBE_TIMEOUT_S * max(1, len(results) // 8))
    except subprocess.TimeoutExpired:
        return -1, "probe timed out"
    except OSError as exc:
        return -1, f"cannot run ffmpeg: {exc}"
    return proc.returncode, proc.stderr.decode("utf-8", "replace")


def _tags_output(k: int, dest: Path) -> list[str]:
    """An ``ffmetadata`` output of input ``k``'s global tags (no streams, no chapters: nothing decodes)."""
    return ["-map_metadata", f"{k}", "-map_chapters", "-1", "-f", "ffmetadata", "-y", os.fspath(dest)]


def _read_tag_file(path: Path) -> dict[str, str]:
    try:
        return parse_ffmetadata(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return {}


def read_tags(path: Path) -> dict[str, str]:
    """The container tags of one file (keys lower-case); {} when it has none or does not open."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", _arg(Path(path)),
           "-map_metadata", "0", "-map_chapters", "-1", "-f", "ffmetadata", "pipe:1"]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT_S)
    except (subprocess.TimeoutExpired, OSError) as exc:
        log.info("cannot read the tags of %s: %s", path, exc)
        return {}
    if proc.returncode != 0:
        return {}
    return parse_ffmetadata(proc.stdout.decode("utf-8", "replace"))


def parse_ffmetadata(text: str) -> dict[str, str]:
    """The global section of ffmpeg's ``ffmetadata`` format as {key (lower-case): value}.

    A backslash escapes the next character (``=``, ``;``, ``#``, a backslash, or a newline that belongs
    to the value); ``;`` or ``#`` starts a comment line; the first ``[SECTION]`` ends the global tags."""
    tags: dict[str, str] = {}
    line: list[tuple[str, bool]] = []  # (character, escaped)
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            line.append((next(chars, ""), True))
        elif ch == "\n":
            if not _tag_line(line, tags):
                return tags
            line = []
        else:
            line.append((ch, False))
    _tag_line(line, tags)
    return tags


def _tag_line(line: list[tuple[str, bool]], tags: dict[str, str]) -> bool:
    """Add one logical line's ``key=value`` to ``tags``; False at a section header (the global tags end)."""
    if not line or (not line[0][1] and line[0][0] in ";#"):
        return True
    if not line[0][1] and line[0][0] == "[":
        return False
    for n, (ch, escaped) in enumerate(line):
        if ch == "=" and not escaped:
            key = "".join(c for c, _ in line[:n]).lower()
            tags[key] = "".join(c for c, _ in line[n + 1:])
            break
    return True


def _arg(path: Path) -> str:
    # A name starting with '-' would read as an option; "file:" also stops ffmpeg treating ':' as a protocol.
    return "file:" + os.fspath(abs_path(path))


_INPUT = re.compile(r"^Input #(\d+), (.*?), from ")
_DURATION = re.compile(r"^\s+Duration: (?:(\d+):(\d+):(\d+(?:\.\d+)?)|N/A)")
_STREAM = re.compile(r"^\s+Stream #(\d+):\d+\S*: Video: ([A-Za-z0-9_]+)(.*)$")
_SIZE = re.compile(r", (\d+)x(\d+)")
_FPS = re.compile(r", (\d+(?:\.\d+)?)(k?) (fps|tbr)")
_STATS = re.compile(
    r"^\[in#(\d+)/[^\]]*\]\s+Input stream #\d+:\d+ \(video\): (\d+) packets read \(\d+ bytes\); "
    r"(\d+) frames decoded; (\d+) decode errors")
_PREFIX = re.compile(r"^\[in#(\d+)[/ ]")
#: Demuxers of single images (and image sequences/animations): a picture renamed .mp4 is not a video.
_IMAGE_DEMUXERS = ("image2", "gif", "apng", "webp", "ico", "tiff")
#: Demuxer lines saying the file stops before its data does (Matroska/WebM cut mid-element).
_TRUNCATED = ("File ended prematurely", "Truncating packet", "stream ends prematurely")
#: Messages of a failure that may pass without the file changing.
_TRANSIENT = ("Permission denied", "Input/output error", "Too many open files", "Resource temporarily")


def _parse_probe_log(text: str, results: list[ProbeResult], rc: int) -> None:
    """Fill ``results`` (input k = results[k]) from ffmpeg's verbose log."""
    current: int | None = None
    stats: dict[int, tuple[int, int, int]] = {}
    errors: list[str] = []
    cut: set[int] = set()
    for line in text.splitlines():
        m = _INPUT.match(line)
        if m:
            current = int(m.group(1))
            if current < len(results):
                results[current].container = m.group(2)
            continue
        if current is not None and current < len(results):
            r = results[current]
            m = _DURATION.match(line)
            if m and m.group(1) is not None:
                r.duration_s = round(int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)), 3)
                continue
            m = _STREAM.match(line)
            if m and r.codec is None and "(attached pic)" not in line:
                r.codec = m.group(2)
                size = _SIZE.search(m.group(3))
                if size:
                    r.width, r.height = int(size.group(1)), int(size.group(2))
                fps = _FPS.search(m.group(3))
                if fps:
                    r.fps = float(fps.group(1)) * (1000 if fps.group(2) else 1)
                continue
        m = _STATS.match(line)
        if m:
            k = int(m.group(1))
            packets, frames, errs = int(m.group(2)), int(m.group(3)), int(m.group(4))
            old = stats.get(k)
            if old is None or frames > old[1]:
                stats[k] = (packets, frames, errs)
            continue
        m = _PREFIX.match(line)
        if m and line[line.find("] ") + 2:].startswith(_TRUNCATED):
            cut.add(int(m.group(1)))
        low = line.lower()
        if ("error" in low or "invalid" in low or "not found" in low or "no such" in low
                or "denied" in low) and "decode errors" not in low and "error rate" not in low:
            errors.append(line.strip())
    for k, r in enumerate(results):
        r.messages = errors[-5:]
        if rc != 0:
            r.error = _reason(errors) or f"ffmpeg exited with status {rc}"
            r.transient = rc == -1 or any(t in e for e in errors for t in _TRANSIENT)
            continue
        r.error = _verdict(r, stats.get(k), k in cut)
        r.ok = r.error is None


def _verdict(r: ProbeResult, stats: tuple[int, int, int] | None, cut: bool) -> str | None:
    """Why the probed file is not a finished video (None: it is one)."""
    if r.codec is None:
        return "no video stream"
    frames = None
    if stats is not None:
        _packets, frames, errs = stats
        r.frames = frames
        if errs:
            return f"{errs} decode error(s) (truncated or damaged)"
        if frames == 0:
            return "no frame decodes"
    demuxer = (r.container or "").split(",")[0]
    if demuxer.endswith("_pipe") or demuxer in _IMAGE_DEMUXERS:
        kind = "an animated image" if frames is not None and frames > 1 else "a still image"
        return f"{kind} ({r.codec}) under a video name, not a video"
    if not r.duration_s:
        if frames is not None and frames <= 1:
            return f"a single frame with no duration ({r.codec}): a still image, not a video"
        # Matroska/WebM get their duration when the writer finishes: none means still being written,
        # or a writer that was killed (or streamed it); remuxing (ffmpeg -c copy) adds one.
        return "no duration in the file (still being written, or its writer stopped before finishing)"
    if frames is not None and r.fps:
        expected = r.duration_s * r.fps
        if frames < expected * 0.9 - 2:
            return (f"only {frames} of about {expected:.0f} frames decode "
                    f"(truncated or still being written)")
    if cut:
        return "the file ends early (truncated or still being written)"
    return None


def _reason(errors: list[str]) -> str | None:
    """The most telling ffmpeg line, without its ``[ctx @ 0x...]`` prefix."""
    for line in errors:
        if "moov atom not found" in line:
            return "incomplete file (moov atom not found)"
    for line in reversed(errors):
        cleaned = re.sub(r"^(\[[^\]]*\]\s*)+", "", line).strip()
        if cleaned and not cleaned.startswith(("Error opening input file", "Error opening output file")):
            return cleaned
    return None


# -- library fields ------------------------------------------------------------------------------------------


def import_fields(path: Path, result: ProbeResult | None = None) -> Fields:
    """Everything an import writes to an item: probe fields + how it was made (vidtray's sidecar, else the
    recipe in the file's own tags)."""
    if result is None:
        result = probe(path)
    fields = result.fields()
    fields.update(recipe.import_fields(Path(path), result.tags))
    return fields


def import_entries(paths: Sequence[Path]) -> tuple[list[tuple[Path, Fields]], list[tuple[Path, str]]]:
    """Probe ``paths`` (batched) -> ([(path, item fields)] for clean videos, [(path, reason)] for the rest).

    Files that do not decode cleanly are not imported at all: other apps reading library.json know
    only ``ready`` and ``missing``, and a half-written file would otherwise show up as a broken clip.
    """
    entries: list[tuple[Path, Fields]] = []
    skipped: list[tuple[Path, str]] = []
    for result in probe_many(paths):
        if result.ok:
            entries.append((result.path, import_fields(result.path, result)))
        else:
            skipped.append((result.path, result.error or "does not decode"))
    return entries, skipped


# -- thumbnails ----------------------------------------------------------------------------------------------


def thumbnail_path(thumbnails_dir: Path, video: Path) -> Path:
    """Where the thumbnail of ``video`` goes: named by the path's hash, so it is found again."""
    return Path(thumbnails_dir) / f"{item_id_for(abs_path(video))}.jpg"


def make_thumbnails(videos: Iterable[tuple[Path, float | None]], thumbnails_dir: Path,
                    *, batch: int = BATCH) -> dict[Path, Path]:
    """JPEG of an early frame for each (video, duration_s); returns {video: thumbnail} for the ones made.

    ffmpeg writes one PNG per input into a temp folder (one process per batch); Pillow scales it and
    the JPEG lands atomically, so a reader never sees half a thumbnail.
    """
    todo = [(Path(v), d) for v, d in videos]
    out: dict[Path, Path] = {}
    if not todo:
        return out
    thumbnails_dir = Path(thumbnails_dir)
    private_dir(thumbnails_dir)
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        with tempfile.TemporaryDirectory(prefix=".thumbs-", dir=thumbnails_dir) as tmp:
            pngs = [Path(tmp) / f"{k}.png" for k in range(len(chunk))]
            rc = _run_ffmpeg_frames(chunk, pngs)
            if rc != 0 and len(chunk) > 1:
                for k, item in enumerate(chunk):
                    _run_ffmpeg_frames([item], [pngs[k]])
            for (video, _), png in zip(chunk, pngs, strict=True):
                if not png.is_file() or png.stat().st_size == 0:
                    log.info("no thumbnail for %s: no frame could be read", video)
                    continue
                try:
                    dest = thumbnail_path(thumbnails_dir, video)
                    atomic_write_bytes(dest, _jpeg_from(png))
                    out[video] = dest
                except OSError as exc:
                    log.warning("no thumbnail for %s: %s", video, exc)
    return out


def _jpeg_from(png: Path) -> bytes:
    """The frame in ``png`` scaled to fit THUMB_MAX, as JPEG bytes."""
    import io

    from PIL import Image

    with Image.open(png) as frame:
        rgb = frame.convert("RGB")
    rgb.thumbnail(THUMB_MAX)
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def make_thumbnail(video: Path, thumbnails_dir: Path, duration_s: float | None = None) -> Path | None:
    return make_thumbnails([(video, duration_s)], thumbnails_dir).get(Path(video))


def _run_ffmpeg_frames(chunk: list[tuple[Path, float | None]], pngs: list[Path]) -> int:
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y"]
    for video, duration in chunk:
        # An early frame, not the very first (often black): 10% in, at most 1 s.
        at = min(1.0, duration * 0.1) if duration else 0.0
        cmd += ["-threads", "1", "-ss", f"{at:.3f}", "-i", _arg(video)]
    for k, png in enumerate(pngs):
        cmd += ["-map", f"{k}:V:0", "-frames:v", "1", "-update", "1", "-c:v", "png", os.fspath(png)]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except OSError:
        return -1
    if hasattr(os, "setpriority"):
        # Thumbnails are background work: let imports (probes) have the CPU first.
        try:
            os.setpriority(os.PRIO_PROCESS, proc.pid, 10)
        except OSError:
            pass
    try:
        return proc.wait(PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -1
