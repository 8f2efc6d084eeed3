"""Probe and thumbnails on real files in every supported container, whole, truncated and fake."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from media_helpers import start_live_writer, write_mp4, write_source
from PIL import Image

from vidtray.services import media


def _ffmpeg(*args: str) -> None:
    subprocess.run([media.ffmpeg_exe(), "-y", "-v", "error", *args], check=True)


def _cut(src: Path, dest: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real 3 s, 64x48, 8 fps clip in each container, plus broken variants."""
    d = tmp_path_factory.mktemp("samples")
    mp4 = write_mp4(d / "clip.mp4", frames=24, width=64, height=48, fps=8)
    out = {"mp4": mp4}
    out["m4v"] = shutil.copyfile(mp4, d / "clip.m4v")
    _ffmpeg("-i", str(mp4), "-c", "copy", str(d / "clip.mov"))
    out["mov"] = d / "clip.mov"
    _ffmpeg("-i", str(mp4), "-c", "copy", str(d / "clip.mkv"))
    out["mkv"] = d / "clip.mkv"
    _ffmpeg("-i", str(mp4), "-c:v", "libvpx-vp9", "-deadline", "realtime", str(d / "clip.webm"))
    out["webm"] = d / "clip.webm"
    _ffmpeg("-i", str(mp4), "-c", "copy", "-movflags", "+faststart", str(d / "faststart.mp4"))
    # mp4 as ffmpeg writes it: the index (moov) comes last, so a cut file has none
    out["cut_mp4"] = _cut(mp4, d / "cut.mp4", 0.6)
    # index first: a cut file has an index that points past its end
    out["cut_faststart"] = _cut(d / "faststart.mp4", d / "cut_faststart.mp4", 0.7)
    out["cut_webm"] = _cut(out["webm"], d / "cut.webm", 0.6)
    out["cut_mkv"] = _cut(out["mkv"], d / "cut.mkv", 0.6)
    fake = d / "fake.mp4"
    fake.write_bytes(b"this is not a video at all\n" * 100)
    out["fake"] = fake
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    out["empty"] = empty
    return out


@pytest.mark.parametrize("kind,codec", [("mp4", "h264"), ("m4v", "h264"), ("mov", "h264"), ("mkv", "h264"),
                                        ("webm", "vp9")])
def test_probe_reads_metadata_of_every_container(samples: dict[str, Path], kind: str, codec: str) -> None:
    r = media.probe(samples[kind])
    assert r.ok, r.error
    assert (r.duration_s, r.fps, r.width, r.height, r.codec) == (3.0, 8.0, 64, 48, codec)
    assert r.size_bytes == samples[kind].stat().st_size and r.frames == 24
    fields = r.fields()
    assert fields["status"] == "ready" and fields["duration_s"] == 3.0 and "error" not in fields


@pytest.mark.parametrize("kind,why", [
    ("cut_mp4", "moov atom not found"),
    ("cut_faststart", "decode error"),
    ("cut_webm", "frames decode"),
    ("cut_mkv", "frames decode"),
    ("fake", "moov atom not found"),
    ("empty", "empty file"),
])
def test_truncated_or_fake_files_are_not_ok(samples: dict[str, Path], kind: str, why: str) -> None:
    r = media.probe(samples[kind])
    assert not r.ok
    assert why in (r.error or ""), r.error
    assert r.fields()["status"] == "broken"


def test_a_batch_attributes_each_result_to_its_own_file(samples: dict[str, Path], tmp_path: Path) -> None:
    # The broken ones make ffmpeg reject the batch: the probe must fall back and still get every answer right.
    order = ["mp4", "cut_mp4", "webm", "cut_webm", "mkv", "fake", "cut_faststart", "mov", "empty"]
    missing = tmp_path / "gone.mp4"
    results = media.probe_many([samples[k] for k in order] + [missing], batch=4)
    assert [r.ok for r in results] == [k in ("mp4", "webm", "mkv", "mov") for k in order] + [False]
    assert [r.path for r in results] == [samples[k] for k in order] + [missing]
    assert "cannot read" in (results[-1].error or "")


def test_a_batch_of_good_files_is_one_ffmpeg_and_all_ok(samples: dict[str, Path], tmp_path: Path) -> None:
    files = [shutil.copyfile(samples["mp4"], tmp_path / f"c{i}.mp4") for i in range(10)]
    results = media.probe_many(files)
    assert all(r.ok and r.duration_s == 3.0 for r in results)


@pytest.mark.parametrize("name", ["-starts with dash.mp4", "spaces and 'quotes'.mp4", "colon:name.mp4",
                                  "ünïcødé 视频.mp4", "x" * 200 + ".mp4"])
def test_odd_but_legal_names_probe_fine(samples: dict[str, Path], tmp_path: Path, name: str) -> None:
    path = shutil.copyfile(samples["mp4"], tmp_path / name)
    assert media.probe(path).ok


def test_thumbnails_are_jpegs_of_an_early_frame(samples: dict[str, Path], tmp_path: Path) -> None:
    thumbs = tmp_path / "thumbs"
    big = write_mp4(tmp_path / "big.mp4", frames=12, width=640, height=360, fps=8)
    made = media.make_thumbnails([(samples["mp4"], 3.0), (samples["webm"], 3.0), (big, 1.5),
                                  (samples["cut_mp4"], None)], thumbs)
    assert set(made) == {samples["mp4"], samples["webm"], big}
    for video, thumb in made.items():
        assert thumb == media.thumbnail_path(thumbs, video) and thumb.parent == thumbs
        with Image.open(thumb) as im:
            assert im.format == "JPEG"
            assert max(im.size) <= 320
    with Image.open(made[big]) as im:
        assert im.size == (320, 180)  # scaled, aspect kept
    assert not list(thumbs.glob(".thumbs-*"))  # temp folder cleaned up


def test_import_entries_keeps_only_clean_videos_and_reads_sidecars(samples: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    good = shutil.copyfile(samples["mp4"], tmp_path / "gen.mp4")
    (tmp_path / "gen.vidtray.json").write_text('{"prompt": "a fox", "model": "zeroscope", "seed": 5, "steps": 4}')
    old = shutil.copyfile(samples["mp4"], tmp_path / "old.mp4")  # an older vidtray's sidecar name
    (tmp_path / "old.json").write_text('{"prompt": "a hare", "seed": 6, "vidtray_version": "0.1.0"}')
    plain = shutil.copyfile(samples["mkv"], tmp_path / "plain.mkv")
    # another tool's clip.json beside its clip: not vidtray's, so not a recipe
    (tmp_path / "plain.json").write_text('{"prompt": "not ours", "seed": 1}')
    cut = shutil.copyfile(samples["cut_mp4"], tmp_path / "cut.mp4")
    entries, skipped = media.import_entries([good, old, plain, cut])
    fields = dict(entries)
    assert fields[good]["source"] == "generated" and fields[good]["prompt"] == "a fox"
    assert fields[good]["seed"] == 5 and "steps" not in fields[good]
    assert (fields[old]["source"], fields[old]["prompt"], fields[old]["seed"]) == ("generated", "a hare", 6)
    assert fields[plain]["source"] == "imported" and fields[plain]["codec"] == "h264"
    assert "prompt" not in fields[plain]
    assert [p for p, _ in skipped] == [cut]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "PPM"])
def test_a_still_image_renamed_to_a_video_name_is_refused(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"photo-{fmt.lower()}.mp4"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path, fmt)
    r = media.probe(path)
    assert not r.ok
    assert "still image" in (r.error or "") and "not a video" in (r.error or ""), r.error


def test_an_animated_gif_renamed_to_a_video_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "anim.mkv"
    frames = [Image.new("RGB", (64, 48), (k * 60, 0, 0)) for k in range(4)]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100)
    r = media.probe(path)
    assert not r.ok and "animated image (gif)" in (r.error or ""), r.error


def test_a_one_frame_video_with_a_duration_is_a_video(tmp_path: Path) -> None:
    r = media.probe(write_mp4(tmp_path / "one.mp4", frames=1))
    assert r.ok, r.error
    assert r.frames == 1 and r.duration_s


@pytest.mark.parametrize("ext", [".mkv", ".webm"])
def test_a_matroska_file_being_written_is_not_ok_until_its_writer_finishes(tmp_path: Path, ext: str) -> None:
    src = write_source(tmp_path / "src.mp4", seconds=4)
    dest = tmp_path / f"live{ext}"
    writer = start_live_writer(src, dest)
    verdicts = []
    try:
        while writer.poll() is None:
            if dest.exists() and (size := dest.stat().st_size) > 0:
                # the size the probe started from: the file grows while it runs, and a probe that opened
                # 706 bytes says "End of file" however big the file is when it is done
                r = media.probe(dest)
                if writer.poll() is None:  # still writing when the probe finished
                    verdicts.append((size, r.ok, r.error))
            time.sleep(0.2)
    finally:
        writer.wait(30)
    assert writer.returncode == 0
    assert len(verdicts) >= 3, verdicts
    assert not any(ok for _, ok, _ in verdicts), verdicts
    # Once the header and a first cluster are there, the reason names the cause.
    assert all("still being written" in why for size, _, why in verdicts if size > 5000), verdicts
    done = media.probe(dest)
    assert done.ok, done.error
    assert done.duration_s == 4.0 and done.frames == 32


@pytest.mark.parametrize("ext", [".mkv", ".webm"])
def test_a_matroska_file_whose_writer_was_killed_is_never_ok(tmp_path: Path, ext: str) -> None:
    src = write_source(tmp_path / "src.mp4", seconds=8)
    dest = tmp_path / f"killed{ext}"
    writer = start_live_writer(src, dest)
    try:
        deadline = time.monotonic() + 20
        while (not dest.exists() or dest.stat().st_size < 20_000) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert dest.stat().st_size >= 20_000
    r = media.probe(dest)
    assert not r.ok
    assert "writer stopped" in (r.error or ""), r.error


def test_media_and_the_library_store_do_not_import_each_other() -> None:
    # media needs an item's key and its sidecar (libitem, sidecar), not the store; the store imports media
    # only to rebuild a corrupt library.
    import sys

    code = ("import sys, vidtray.services.media; "
            "print(sorted(m for m in sys.modules if m in ('vidtray.services.library', 'vidtray.services.libdoc')))")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
