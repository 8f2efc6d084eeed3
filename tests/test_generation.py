"""Generation logic that needs no torch: validation, defaults per family, names, the disk check and the
memory planner (model lookup and downloads: test_hub.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vidtray.config import Config
from vidtray.errors import OperationFailed, UserError
from vidtray.services import generation as gen
from vidtray.services.memplan import GIB, choose_plan


def test_request_validation_refuses_bad_values() -> None:
    ok = gen.Request(prompt="a cat", frames=8, steps=4, height=320, width=576, fps=7.5, seed=0, device="cpu")
    ok.validate()
    bad = [
        (dict(prompt="   \n"), "prompt is empty"),
        (dict(prompt=""), "prompt is empty"),
        (dict(prompt="x", frames=0), "frames must be between 1 and 1024, got 0"),
        (dict(prompt="x", steps=-1), "steps must be between 1 and 1000, got -1"),
        (dict(prompt="x", height=321), "height must be a multiple of 8 (try 320 or 328), got 321"),
        (dict(prompt="x", width=4096), "width must be between 32 and 2048, got 4096"),
        (dict(prompt="x", height=8), "height must be between"),
        (dict(prompt="x", seed=-5), "seed must be between 0 and 9223372036854775807"),
        (dict(prompt="x", seed="12"), "seed must be a whole number, got '12'"),
        (dict(prompt="x", fps=0), "fps must be a number from 0.1 to 120, got 0"),
        (dict(prompt="x", fps=1e-300), "fps must be a number from 0.1 to 120"),
        (dict(prompt="x", device="tpu"), "device must be one of auto, cuda, mps, cpu, got 'tpu'"),
        (dict(prompt="x", model=" "), "model must be a Hugging Face repo id or a folder"),
        (dict(prompt="x", negative_prompt="n" * 4001), "the negative prompt must be at most 4000 characters"),
    ]
    for kwargs, message in bad:
        with pytest.raises(UserError, match=re.escape(message)):
            gen.Request(**kwargs).validate()
    with pytest.raises(UserError, match="unknown job field"):
        gen.Request.from_dict({"prompt": "x", "strength": 1})


def test_errors_name_where_the_bad_value_came_from() -> None:
    from vidtray.params import Source

    req = gen.Request(prompt="x", height=4096)
    for source, message in [
        (Source.cli(), "--height: must be between 32 and 2048, got 4096"),
        (Source.popup(), "the popup's Height field must be between 32 and 2048, got 4096"),
        (Source.job("abc123"), "job abc123: height must be between 32 and 2048, got 4096"),
        (Source.named("recipe clip.mp4"), "recipe clip.mp4: height must be between 32 and 2048, got 4096"),
    ]:
        with pytest.raises(UserError) as info:
            req.validate(source)
        assert str(info.value) == message
    with pytest.raises(UserError) as info:
        gen.Request.from_dict({"prompt": "x", "frames": "many"}, Source.job("abc123"))
    assert str(info.value) == "job abc123: frames must be a whole number, got 'many'"
    with pytest.raises(UserError) as info:
        gen.Request.from_dict({"prompt": "x", "strength": 1}, Source.job("abc123"))
    assert str(info.value) == "job abc123: unknown job field(s): strength"
    with pytest.raises(UserError) as info:
        gen.Request.from_dict({"frames": 8}, Source.job("abc123"))
    assert str(info.value) == "job abc123: the prompt is missing"
    with pytest.raises(UserError) as info:
        gen.Request(prompt=" ").validate(Source.cli())
    assert str(info.value) == "the prompt is empty: describe the video to generate"


def test_defaults_come_from_request_then_config_then_family(isolated_env: dict[str, Path]) -> None:
    cfg = Config.from_mapping({}, "<test>")
    wan = gen.FAMILIES["WanPipeline"]
    zero = gen.FAMILIES["TextToVideoSDPipeline"]
    p = gen.resolve_params(gen.Request(prompt=" a cat "), cfg, zero)
    assert (p.prompt, p.frames, p.height, p.width, p.fps, p.steps) == ("a cat", 24, 320, 576, 8, 40)
    assert 0 <= p.seed < 2**32 and p.model == cfg.model
    p = gen.resolve_params(gen.Request(prompt="a cat", model="Wan-AI/x"), cfg, wan)
    assert (p.frames, p.height, p.width, p.fps) == (81, 480, 832, 16)  # the family's own defaults
    custom = Config.from_mapping({"generation": {"frames": 33, "fps": 12}}, "<test>")
    p = gen.resolve_params(gen.Request(prompt="a cat", width=640), custom, wan)
    assert (p.frames, p.fps, p.width, p.height) == (33, 12, 640, 480)  # user's settings win
    with pytest.raises(UserError, match=r"frames must be 4k\+1 for wan models \(try 29 or 33\), got 30"):
        gen.resolve_params(gen.Request(prompt="a cat", frames=30), cfg, wan)
    with pytest.raises(UserError, match=r"height must be a multiple of 16 for wan models \(try 480 or 496\)"):
        gen.resolve_params(gen.Request(prompt="a cat", height=488), cfg, wan)
    with pytest.raises(UserError, match="frames must be at most 49 for cogvideox models, got 81"):
        gen.resolve_params(gen.Request(prompt="a cat", frames=81), cfg, gen.FAMILIES["CogVideoXPipeline"])


def test_resolved_parameters_name_the_flag_or_the_config_key(isolated_env: dict[str, Path]) -> None:
    """The family's rules are checked on the resolved values; each error names where its value came from."""
    from vidtray.errors import ConfigError
    from vidtray.params import Source

    ltx = gen.FAMILIES["LTXPipeline"]
    cfg = Config.from_string("[generation]\nwidth = 600\nframes = 97\n", "/home/me/config.toml", env={})
    # The config's width reaches an LTX model: the error names the file and the key.
    with pytest.raises(ConfigError) as info:
        gen.resolve_params(gen.Request(prompt="a cat"), cfg, ltx, Source.cli())
    assert str(info.value) == ("/home/me/config.toml: generation.width: must be a multiple of 32 for "
                               "ltx-video models (try 576 or 608), got 600")
    assert info.value.key == "generation.width"
    # A flag that overrides it is the value used, and the flag is what a bad one names.
    p = gen.resolve_params(gen.Request(prompt="a cat", width=640), cfg, ltx, Source.cli())
    assert (p.width, p.frames, p.height) == (640, 97, 480)
    with pytest.raises(UserError) as info:
        gen.resolve_params(gen.Request(prompt="a cat", width=640, frames=96), cfg, ltx, Source.cli())
    assert str(info.value) == "--frames: must be 8k+1 for ltx-video models (try 89 or 97), got 96"
    with pytest.raises(UserError) as info:
        gen.resolve_params(gen.Request(prompt="a cat", width=624), cfg, ltx, Source.job("abc123"))
    assert str(info.value) == "job abc123: width must be a multiple of 32 for ltx-video models " \
                              "(try 608 or 640), got 624"


def test_slug_hash_and_names() -> None:
    assert gen.model_slug("cerspense/zeroscope_v2_576w") == "zeroscope"
    assert gen.model_slug("cerspense/zeroscope_v2_XL") == "zeroscope"
    assert gen.model_slug("Wan-AI/Wan2.1-T2V-1.3B-Diffusers") == "wan2-1-t2v-1-3b-diffusers"
    assert gen.model_slug("/models/My Model!/") == "my-model"
    assert gen.model_slug("___") == "video"
    p = gen.Params("a cat", None, "cerspense/zeroscope_v2_576w", 24, 40, 320, 576, 8, 7)
    h = gen.params_hash(p)
    assert re.fullmatch(r"[0-9a-f]{8}", h)
    assert gen.params_hash(p) == h
    assert gen.params_hash(gen.Params("a cat", None, p.model, 24, 40, 320, 576, 8, 8)) != h
    assert gen.params_hash(gen.Params("a dog", None, p.model, 24, 40, 320, 576, 8, 7)) != h


def test_video_stem_is_unique_in_the_folder(tmp_path: Path) -> None:
    p = gen.Params("a cat", None, "cerspense/zeroscope_v2_576w", 24, 40, 320, 576, 8, 7)
    stem = gen.video_stem(p, 1_700_000_000.0, tmp_path)
    assert re.fullmatch(r"zeroscope_\d{8}-\d{6}_[0-9a-f]{8}", stem)
    (tmp_path / f"{stem}.mp4").write_bytes(b"")
    assert gen.video_stem(p, 1_700_000_000.0, tmp_path) == f"{stem}-2"


def test_low_disk_refusal_names_need_and_free(isolated_env: dict[str, Path]) -> None:
    cfg = Config.from_mapping({"min_free_gb": 1e7, "warn_free_gb": 1e7}, "<test>")
    with pytest.raises(OperationFailed, match=r"not enough disk space for a new video: .* free .* needed"):
        gen.check_output_space(cfg)
    gen.check_output_space(Config.from_mapping({"min_free_gb": 0.0}, "<test>"))


def test_memory_plan_steps_down_as_memory_shrinks() -> None:
    # zeroscope-like: ~3.7 GB fp16 weights, UNet ~2.8 GB, 24 frames of 576x320
    args = dict(weights_bytes=int(3.7 * GIB), largest_bytes=int(2.8 * GIB), frames=24, height=320, width=576)
    plans = {gb: choose_plan("auto", "cuda", free_bytes=int(gb * GIB), **args) for gb in (79, 10, 7.5, 5, 2)}
    assert (plans[79].offload, plans[79].forward_chunking) == ("none", False)
    assert (plans[7.5].offload, plans[7.5].forward_chunking) == ("model", False)  # an 8 GB card
    assert plans[2].offload == "sequential"
    order = ["none", "model", "sequential"]
    ranks = [order.index(plans[gb].offload) for gb in (79, 10, 7.5, 5, 2)]
    assert ranks == sorted(ranks)
    assert all(p.vae_slicing for p in plans.values())
    cpu = choose_plan("model", "cpu", free_bytes=None, **args)
    assert cpu.offload == "none" and "ignored" in cpu.reason  # diffusers' offload raises without a GPU
    assert choose_plan("sequential", "cuda", free_bytes=int(79 * GIB), **args).offload == "sequential"
    assert choose_plan("auto", "mps", free_bytes=None, **args).offload == "none"
    with pytest.raises(ValueError):
        choose_plan("lots", "cuda", free_bytes=0, **args)
    # a family whose VAE also compresses time (Wan, CogVideoX) has fewer latents to carry
    wan = gen.FAMILIES["WanPipeline"]
    full = choose_plan("auto", "cuda", free_bytes=int(79 * GIB), **args)
    scaled = choose_plan("auto", "cuda", free_bytes=int(79 * GIB), activation_scale=wan.activation_scale,
                         **args)
    assert scaled.activation_bytes == int(full.activation_bytes * wan.activation_scale)
