"""Recipes: in the mp4's own tags and in the sidecar, read back by imports (watcher, rescan), by
``generate``/``queue add --from`` and by the popup's "Load from video..."; sidecars that cannot collide with
another tool's ``clip.json``. The generation parts run the tiny pipeline; the rest needs no torch."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import gen_fixtures
import numpy as np
import pytest
import tmpfs
from conftest import run_cli
from helpers import wait_for
from hf_cache import make_repo
from media_helpers import write_mp4

from vidtray.config import Config
from vidtray.services import media, recipe
from vidtray.services.library import open_library
from vidtray.services.queue import open_queue
from vidtray.services.sidecar import (
    legacy_sidecar_path,
    owned_sidecars,
    read_sidecar,
    sidecar_fields,
    sidecar_path,
    videos_of_sidecar,
)
from vidtray.services.worker.output import encode_mp4

# the session-scoped tiny pipeline (gen_fixtures.py), shared by the generation test modules
tiny_pipeline = gen_fixtures.tiny_pipeline
small_disk = tmpfs.small_disk  # a real full disk (a tmpfs)

#: A prompt that a careless writer would break: quotes, a newline, ffmetadata's own escapes, non-ASCII,
#: and few enough letters for the tiny pipeline's 77-token limit.
TRICKY = 'a "fox" = fast;\nit\'s #1 \\ ünï 日本 🎥'


def pipeline_folder(root: Path, class_name: str = "TextToVideoSDPipeline") -> Path:
    """A folder the CLI accepts as a diffusers pipeline (nothing runs it in these tests)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    return root


def a_recipe(**kw: Any) -> dict[str, Any]:
    doc = {"vidtray_recipe": 1, "prompt": TRICKY, "negative_prompt": "blurry", "seed": 1234, "steps": 4,
           "frames": 8, "width": 32, "height": 32, "fps": 8, "guidance_scale": 9.0, "scheduler": "DDIMScheduler",
           "model": "org/model", "revision": None, "pipeline": "TextToVideoSDPipeline", "device": "cpu",
           "dtype": "float32", "torch_version": metadata.version("torch"),
           "diffusers_version": metadata.version("diffusers"), "vidtray_version": "0.1.0",
           "created": "2026-01-02T03:04:05+00:00"}
    doc.update(kw)
    return doc


def clip_with_tags(path: Path, tags: dict[str, str]) -> Path:
    """A real 8-frame mp4 whose container carries ``tags``, written as the worker writes its videos."""
    frames = np.full((8, 32, 32, 3), 128, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_mp4(frames, path, 8.0, tags=tags)
    return path


def ffmetadata_by_hand(path: Path) -> dict[str, str]:
    """The file's global tags through the bundled ffmpeg's own ``-f ffmetadata`` output, unescaped here
    independently of vidtray's parser (a backslash escapes the next character, newlines included)."""
    out = subprocess.run([media.ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                         capture_output=True, check=True).stdout.decode()
    tags = {}
    for line in re.findall(r"((?:[^\\\n]|\\.)*)\n", out, flags=re.S)[1:]:  # after ";FFMETADATA1"
        if line.startswith("["):
            break
        found = re.match(r"((?:[^\\=]|\\.)*)=(.*)", line, flags=re.S)
        if found:
            tags[found.group(1)] = re.sub(r"\\(.)", r"\1", found.group(2), flags=re.S)
    return tags


def decoded(path: Path) -> list[np.ndarray]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    next(reader)
    return [np.frombuffer(f, dtype=np.uint8) for f in reader]


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("vidtray: error: ") and "Traceback" not in proc.stderr
    return lines[0]


# -- sidecars: vidtray's own name, and the old one only when it is vidtray's -------------------------------


def test_sidecar_names_and_which_json_files_are_vidtrays(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    assert sidecar_path(video) == tmp_path / "clip.vidtray.json"
    assert legacy_sidecar_path(video) == tmp_path / "clip.json"
    assert sorted(p.name for p in videos_of_sidecar(tmp_path / "clip.vidtray.json"))[:2] == ["clip.m4v", "clip.mkv"]
    assert tmp_path / "clip.mp4" in videos_of_sidecar(tmp_path / "clip.json")

    # another tool's clip.json: not read, not owned
    (tmp_path / "clip.json").write_text('{"prompt": "notes of another tool", "seed": 3}')
    assert read_sidecar(video) is None and owned_sidecars(video) == []
    assert sidecar_fields(video) == {"source": "imported"}
    # an older vidtray's sidecar (it has vidtray_version): read and owned
    (tmp_path / "clip.json").write_text('{"prompt": "old", "seed": 3, "vidtray_version": "0.1.0"}')
    assert sidecar_fields(video) == {"source": "generated", "prompt": "old", "seed": 3}
    assert owned_sidecars(video) == [tmp_path / "clip.json"]
    # the new name wins, and both go with the video
    sidecar_path(video).write_text('{"prompt": "new", "seed": 4, "model": "m"}')
    assert sidecar_fields(video) == {"source": "generated", "prompt": "new", "seed": 4, "model": "m"}
    assert owned_sidecars(video) == [tmp_path / "clip.vidtray.json", tmp_path / "clip.json"]
    # values of the wrong type never reach the library
    sidecar_path(video).write_text('{"prompt": ["x"], "seed": "7", "vidtray_version": "0.1.0"}')
    assert sidecar_fields(video) == {"source": "generated"}


def test_the_ffmetadata_parser_reads_escapes_comments_and_stops_at_sections() -> None:
    text = (";FFMETADATA1\ntitle=a \\= b \\; c \\# d \\\\ e\nComment={\"p\":\"x\\\\ny\"}\n# a comment\n"
            "multi=first\\\nsecond\n\n[STREAM]\ntitle=not global\n")
    assert media.parse_ffmetadata(text) == {"title": "a = b ; c # d \\ e", "comment": '{"p":"x\\ny"}',
                                            "multi": "first\nsecond"}


# -- the recipe in the mp4 ---------------------------------------------------------------------------------


def test_the_recipe_in_the_mp4_survives_any_prompt_and_is_read_by_ordinary_tools(tmp_path: Path) -> None:
    long_prompt = TRICKY + "\x00\t" + " words" * 660  # 4,000 characters with a NUL and a tab
    doc = a_recipe(prompt=long_prompt[:4000], seed=2**63 - 1)
    tags = recipe.container_tags(doc)
    assert "\n" not in tags["comment"] and "\x00" not in tags["title"]
    path = clip_with_tags(tmp_path / "clip.mp4", tags)
    # ffmpeg's own dump, unescaped by hand
    by_hand = ffmetadata_by_hand(path)
    assert json.loads(by_hand["comment"]) == doc
    assert by_hand["title"] == tags["title"] and by_hand["title"].startswith('a "fox" = fast; it\'s #1')
    # vidtray's readers: one file, and the batched probe (the same run that decodes it)
    assert recipe.from_tags(media.read_tags(path)) == doc
    [probed] = media.probe_many([path])
    assert probed.ok and recipe.from_tags(probed.tags) == doc
    # exiftool, where it is installed (Debian: libimage-exiftool-perl)
    if shutil.which("exiftool"):
        out = subprocess.run(["exiftool", "-j", "-Title", "-Comment", str(path)], capture_output=True,
                             text=True, check=True).stdout
        shown = json.loads(out)[0]
        assert json.loads(shown["Comment"]) == doc and shown["Title"] == tags["title"]


def test_a_batch_probe_gives_each_file_its_own_tags(tmp_path: Path) -> None:
    a = clip_with_tags(tmp_path / "a.mp4", recipe.container_tags(a_recipe(seed=1)))
    plain = write_mp4(tmp_path / "plain.mp4")
    b = clip_with_tags(tmp_path / "b.mp4", recipe.container_tags(a_recipe(seed=2)))
    foreign = clip_with_tags(tmp_path / "foreign.mp4", {"title": "holiday", "comment": '{"seed": 9}'})
    results = media.probe_many([a, plain, b, foreign])
    assert all(r.ok for r in results)
    found = [recipe.from_tags(r.tags) for r in results]
    assert [d and d["seed"] for d in found] == [1, None, 2, None]
    assert results[3].tags["title"] == "holiday"


def test_a_full_temp_folder_never_fails_a_probe(tmp_path: Path, small_disk: tmpfs.SmallDisk,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The tags go through small files in the temp folder; with no room there, the probe runs without them
    # (the file is imported, as before recipes) instead of reporting every video as broken.
    clip = clip_with_tags(tmp_path / "clip.mp4", recipe.container_tags(a_recipe(seed=8)))
    monkeypatch.setattr(tempfile, "tempdir", str(small_disk.root))
    (small_disk.root / "vidtray-probe-room").mkdir()  # a folder made before the disk filled: mkdtemp's way
    small_disk.fill()
    [r] = media.probe_many([clip])  # no room for a folder
    assert r.ok and r.error is None and r.tags == {}, r.error
    with monkeypatch.context() as m:  # a folder, no room for the files in it
        m.setattr(tempfile, "mkdtemp", lambda *a, **kw: str(small_disk.root / "vidtray-probe-room"))
        [r] = media.probe_many([clip])
    assert r.ok and r.error is None and r.tags == {}, r.error
    small_disk.free()
    [r] = media.probe_many([clip])
    assert r.ok and recipe.from_tags(r.tags) == a_recipe(seed=8)


def test_an_import_reads_the_embedded_recipe_when_no_sidecar_says_more(tmp_path: Path) -> None:
    moved = clip_with_tags(tmp_path / "moved.mp4", recipe.container_tags(a_recipe(seed=77)))
    beside = clip_with_tags(tmp_path / "beside.mp4", recipe.container_tags(a_recipe(seed=78)))
    sidecar_path(beside).write_text(json.dumps({"prompt": "from the sidecar", "seed": 5}))
    other = clip_with_tags(tmp_path / "other.mp4", {"comment": "shot on my phone"})
    entries, skipped = media.import_entries([moved, beside, other])
    fields = dict(entries)
    assert skipped == []
    assert {k: fields[moved][k] for k in ("source", "prompt", "seed", "model", "created")} == {
        "source": "generated", "prompt": TRICKY, "seed": 77, "model": "org/model",
        "created": "2026-01-02T03:04:05+00:00"}
    assert (fields[beside]["prompt"], fields[beside]["seed"]) == ("from the sidecar", 5)
    assert fields[other]["source"] == "imported" and "prompt" not in fields[other]


def test_library_rescan_of_another_data_dir_fills_the_item_from_the_file(tmp_path: Path, cfg: Config) -> None:
    # a clip copied into the videos folder without its sidecar, as from another machine
    clip = clip_with_tags(cfg.videos_dir / "from-elsewhere.mp4", recipe.container_tags(a_recipe(seed=31)))
    proc = run_cli("library", "rescan", "--json")
    assert proc.returncode == 0, proc.stderr
    item = open_library(cfg).find_by_path(clip)
    assert item is not None
    assert (item.data["source"], item.data["prompt"], item.data["seed"]) == ("generated", TRICKY, 31)
    assert item.title == 'a "fox" = fast; it\'s #1 \\ ünï 日本 🎥'


# -- recipe -> request ---------------------------------------------------------------------------------------


def test_recipe_for_an_item_a_dict_or_a_path(tmp_path: Path, cfg: Config) -> None:
    clip = clip_with_tags(cfg.videos_dir / "c.mp4", recipe.container_tags(a_recipe(seed=5)))
    lib = open_library(cfg)
    [item] = lib.add_videos([(clip, media.import_fields(clip))])
    view = lib.get(item["id"])
    for source in (view, view.data, clip, str(clip)):
        req = recipe.recipe_for(source)
        assert req is not None and (req.prompt, req.seed, req.steps, req.model) == (TRICKY, 5, 4, "org/model")
    assert recipe.recipe_for(write_mp4(tmp_path / "plain.mp4")) is None
    # an item another app wrote (a prompt, no file): a partial recipe from the item
    req = recipe.recipe_for({"id": "x1", "type": "video", "path": str(tmp_path / "gone.mp4"), "prompt": "a cat",
                             "seed": 3})
    assert req is not None and (req.prompt, req.seed, req.frames) == ("a cat", 3, None)


def test_a_recipe_with_a_bad_value_is_named_as_the_recipes(tmp_path: Path) -> None:
    from vidtray.errors import UserError

    clip = write_mp4(tmp_path / "clip.mp4")
    sidecar_path(clip).write_text(json.dumps(a_recipe(width=570)))
    found = recipe.read_recipe(clip)
    assert found is not None
    with pytest.raises(UserError, match=r"the sidecar of .*clip.mp4: width must be a multiple of 8"):
        found.request()
    assert found.request({"width": 576}).width == 576  # an override replaces the bad value


# -- the CLI: --from, --vary-seed and bad input ---------------------------------------------------------------


@pytest.fixture
def recipe_clip(cfg: Config, tmp_path: Path) -> Path:
    """A video (not in the library) whose recipe is inside it, for a pipeline folder that exists here."""
    model = pipeline_folder(tmp_path / "pipe")
    return clip_with_tags(tmp_path / "elsewhere" / "clip.mp4", recipe.container_tags(a_recipe(model=str(model))))


def test_queue_add_from_a_video_takes_its_recipe_with_overrides(recipe_clip: Path, cfg: Config) -> None:
    proc = run_cli("queue", "add", "--from", str(recipe_clip), "--steps", "6", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr  # same torch, diffusers; a folder has no revision
    job = json.loads(proc.stdout)
    req = job["request"]
    assert (req["prompt"], req["negative_prompt"], req["seed"], req["frames"], req["width"], req["fps"]) == (
        TRICKY, "blurry", 1234, 8, 32, 8)
    assert req["steps"] == 6
    # a new prompt and --vary-seed
    proc = run_cli("queue", "add", "a new prompt", "--from", str(recipe_clip), "--vary-seed", "--json")
    assert proc.returncode == 0, proc.stderr
    req = json.loads(proc.stdout)["request"]
    assert req["prompt"] == "a new prompt" and req["seed"] != 1234 and req["frames"] == 8
    # the sidecar file itself, given instead of its video
    side = sidecar_path(recipe_clip.with_name("other.mp4"))
    side.write_text(json.dumps(a_recipe(model=req["model"], seed=555)))
    proc = run_cli("queue", "add", "--from", str(side), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["request"]["seed"] == 555
    assert len(open_queue(cfg).list()) == 3


def test_from_a_library_id_prefix(recipe_clip: Path, cfg: Config) -> None:
    lib = open_library(cfg)
    [item] = lib.add_videos([(recipe_clip, media.import_fields(recipe_clip))])
    proc = run_cli("queue", "add", "--from", item["id"][:6], "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["request"]["seed"] == 1234
    # the item's video is gone, its sidecar too: the prompt, model and seed the library holds, said so
    recipe_clip.unlink()
    proc = run_cli("queue", "add", "--from", item["id"], "--json")
    assert proc.returncode == 0, proc.stderr
    assert "has only a prompt, model and seed" in proc.stderr
    assert json.loads(proc.stdout)["request"]["seed"] == 1234


def test_from_says_before_running_when_versions_or_the_revision_differ(cfg: Config, tmp_path: Path,
                                                                        isolated_env: dict[str, Path]) -> None:
    cache = isolated_env["HF_HOME"] / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    make_repo(cache, "org/model", {"model_index.json": b'{"_class_name": "TextToVideoSDPipeline"}'}, commit=commit)
    same = clip_with_tags(tmp_path / "same.mp4", recipe.container_tags(a_recipe(revision=commit)))
    proc = run_cli("queue", "add", "--from", str(same))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    older = clip_with_tags(tmp_path / "older.mp4", recipe.container_tags(
        a_recipe(revision="feedfacefeedfacefeedfacefeedfacefeedface", torch_version="2.0.0",
                 diffusers_version="0.30.0")))
    proc = run_cli("queue", "add", "--from", str(older), "--device", "cuda")
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line == (f"vidtray: warning: this may not give the recipe's frames: torch 2.0.0 -> "
                    f"{metadata.version('torch')}, diffusers 0.30.0 -> {metadata.version('diffusers')}, "
                    f"model revision feedfacefeed -> 0123456789ab, device cpu -> cuda")


def test_bad_from_is_one_line_and_exit_2(recipe_clip: Path, tmp_path: Path, cfg: Config) -> None:
    plain = write_mp4(tmp_path / "plain.mp4")
    (tmp_path / "plain.json").write_text('{"prompt": "another tool", "seed": 1}')
    open_library(cfg).add_videos([(plain, {})])
    cases = [
        (["generate", "--from", "nosuchid"], "--from: 'nosuchid' is neither a file nor a library item id"),
        (["generate", "--from", str(tmp_path / "gone.mp4")], "is not a file, nor a library id"),
        (["generate", "--from", str(tmp_path)], "is a folder, not a video"),
        (["generate", "--from", str(plain)], "plain.mp4 carries no vidtray recipe"),
        (["generate", "--from", str(tmp_path / "plain.json")], "plain.json carries no vidtray recipe"),
        (["queue", "add", "--from", str(plain)], "plain.mp4 carries no vidtray recipe"),
        (["generate", "--vary-seed", "x"], "--vary-seed needs --from"),
        (["generate", "--from", str(recipe_clip), "--seed", "1", "--vary-seed"], "exclude each other"),
        (["generate"], "give a PROMPT, or --from ID_OR_PATH"),
    ]
    item = open_library(cfg).items()[0]
    cases.append((["generate", "--from", item.id], f"library item {item.id} ({plain}) has no recipe"))
    for args, message in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in error_line(proc), (args, proc.stderr)
    assert open_queue(cfg).list() == []


# -- with the tiny pipeline ----------------------------------------------------------------------------------


@pytest.mark.gen
def test_the_worker_embeds_the_recipe_it_used(cfg: Config, tiny_pipeline: Path) -> None:
    from gen_fixtures import SMALL

    from vidtray.services.generation import Request
    from vidtray.services.worker.output import RUN_KEYS
    from vidtray.services.worker.runner import Worker

    result = Worker(cfg).run_job("j1", Request(prompt=TRICKY, negative_prompt="grey\nfog", model=str(tiny_pipeline),
                                               seed=99, **SMALL))
    video = Path(result["path"])
    assert Path(result["sidecar"]) == video.with_name(video.stem + ".vidtray.json")
    side = json.loads(Path(result["sidecar"]).read_text())
    embedded = json.loads(ffmetadata_by_hand(video)["comment"])  # read back with the bundled ffmpeg
    # the file carries the sidecar's recipe, less what the run took
    assert embedded == {k: v for k, v in side.items() if k not in RUN_KEYS}
    assert {k: embedded[k] for k in ("prompt", "negative_prompt", "seed", "steps", "frames", "width", "height",
                                     "fps", "model", "device", "dtype")} == {
        "prompt": TRICKY, "negative_prompt": "grey\nfog", "seed": 99, **SMALL, "model": str(tiny_pipeline),
        "device": "cpu", "dtype": "float32"}
    assert embedded["vidtray_recipe"] == 1 and embedded["revision"] is None
    assert (embedded["pipeline"], embedded["scheduler"], embedded["guidance_scale"]) == (
        "TextToVideoSDPipeline", "DDIMScheduler", 9.0)
    import diffusers
    import torch

    assert (embedded["torch_version"], embedded["diffusers_version"]) == (torch.__version__, diffusers.__version__)
    assert ffmetadata_by_hand(video)["title"] == 'a "fox" = fast; it\'s #1 \\ ünï 日本 🎥'


@pytest.mark.gen
def test_a_clip_moved_without_its_sidecar_into_another_data_dirs_watch_folder_keeps_its_story(
        cfg: Config, tiny_pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gen_fixtures import SMALL

    from vidtray.services.generation import Request
    from vidtray.services.watcher import watcher_for
    from vidtray.services.worker.runner import Worker

    result = Worker(cfg).run_job("j1", Request(prompt=TRICKY, model=str(tiny_pipeline), seed=4242, **SMALL))
    inbox = tmp_path / "other-machine" / "inbox"
    inbox.mkdir(parents=True)
    monkeypatch.setenv("VIDTRAY_DATA_DIR", str(tmp_path / "other-machine" / "data"))
    other = Config.from_mapping({"watch_dirs": [str(inbox)]}, "<other>")
    assert other.library_file != cfg.library_file
    other.videos_dir.mkdir(parents=True)
    lib = open_library(other)
    watcher = watcher_for(other, lib, settle_s=0.2)
    watcher.start()
    try:
        shutil.move(result["path"], inbox / "fox.mp4")  # the video only: its sidecar stays behind
        assert not sidecar_path(inbox / "fox.mp4").exists()
        assert wait_for(lambda: lib.find_by_path(inbox / "fox.mp4") is not None, timeout=30)
    finally:
        watcher.stop()
    item = lib.find_by_path(inbox / "fox.mp4")
    assert item is not None
    assert {k: item.data[k] for k in ("source", "prompt", "seed", "model")} == {
        "source": "generated", "prompt": TRICKY, "seed": 4242, "model": str(tiny_pipeline)}
    assert item.title == 'a "fox" = fast; it\'s #1 \\ ünï 日本 🎥'


@pytest.mark.gen
def test_generate_from_gives_the_same_frames_and_vary_seed_other_ones(cfg: Config, tiny_pipeline: Path) -> None:
    from gen_fixtures import SMALL

    flags = [x for k, v in SMALL.items() for x in (f"--{k}", str(v))]
    first = run_cli("generate", TRICKY, "--model", str(tiny_pipeline), *flags, "--seed", "5", "--json", timeout=300)
    assert first.returncode == 0, first.stderr
    a = json.loads(first.stdout)
    again = run_cli("generate", "--from", a["path"], "--json", timeout=300)
    assert again.returncode == 0, again.stderr
    assert "warning" not in again.stderr
    b = json.loads(again.stdout)
    varied = run_cli("generate", "--from", a["library_id"][:8], "--vary-seed", "--json", timeout=300)
    assert varied.returncode == 0, varied.stderr
    c = json.loads(varied.stdout)
    assert b["path"] != a["path"] and b["seed"] == 5 and c["seed"] != 5
    fa, fb, fc = (decoded(Path(d["path"])) for d in (a, b, c))
    assert len(fa) == len(fb) == len(fc) == SMALL["frames"]
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(fa, fc, strict=True))
    side_a, side_b = (json.loads(Path(d["sidecar"]).read_text()) for d in (a, b))
    same = ("prompt", "negative_prompt", "seed", "steps", "frames", "width", "height", "fps", "model")
    assert {k: side_a[k] for k in same} == {k: side_b[k] for k in same}
