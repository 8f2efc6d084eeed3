"""Each family's latents decode as its own pipeline decodes them (diffusers' Wan, LTX-Video and CogVideoX
pipelines with tiny random weights, built here; zeroscope's is the tiny pipeline of the other tests).

vidtray denoises with ``output_type="latent"`` and decodes itself (so the latents can be kept and the
decode retried another way); the frames must be exactly the pipeline's ``output_type="np"`` frames. The
pipelines run from prompt embeddings (no text encoder to build), two steps, on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.gen

torch = pytest.importorskip("torch")

from vidtray.services import memplan  # noqa: E402
from vidtray.services.worker import diffusers_backend  # noqa: E402


def wan() -> tuple[Any, dict[str, int], int]:
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0))
    return pipe, {"height": 32, "width": 32, "num_frames": 9}, 32


def ltx() -> tuple[Any, dict[str, int], int]:
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
        cross_attention_dim=32, num_layers=1, caption_channels=32)
    vae = AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(4, 4, 4, 4), spatio_temporal_scaling=(True, True, False, False),
        layers_per_block=(1, 1, 1, 1, 1), patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False)
    pipe = LTXPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler())
    return pipe, {"height": 32, "width": 32, "num_frames": 9}, 32


def cogvideox() -> tuple[Any, dict[str, int], int]:
    from diffusers import AutoencoderKLCogVideoX, CogVideoXPipeline, CogVideoXTransformer3DModel, DDIMScheduler

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=32, num_layers=1, sample_width=2, sample_height=2, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=16)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4)
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=vae,
                             scheduler=DDIMScheduler())
    return pipe, {"height": 32, "width": 32, "num_frames": 9}, 32


@pytest.mark.parametrize("build", [wan, ltx, cogvideox], ids=["wan", "ltx", "cogvideox"])
def test_vidtrays_decode_of_the_latents_gives_the_pipelines_own_frames(build: Any) -> None:
    pipe, size, dim = build()
    pipe.set_progress_bar_config(disable=True)
    kind = diffusers_backend.decode_kind(pipe)
    assert kind == {"WanPipeline": "wan", "LTXPipeline": "ltx", "CogVideoXPipeline": "cogvideox"}[type(pipe).__name__]
    assert memplan.can_tile(pipe)  # every family's VAE tiles: the planner may use it
    embeds = torch.randn(1, 16, dim, generator=torch.Generator().manual_seed(3))
    negative = torch.randn(1, 16, dim, generator=torch.Generator().manual_seed(4))
    kwargs: dict[str, Any] = {"prompt_embeds": embeds, "negative_prompt_embeds": negative,
                              "num_inference_steps": 2, **size}
    if kind == "ltx":
        kwargs.update(prompt_attention_mask=torch.ones(1, 16), negative_prompt_attention_mask=torch.ones(1, 16))
    whole = pipe(**kwargs, generator=torch.Generator().manual_seed(1), output_type="np").frames[0]
    latents = pipe(**kwargs, generator=torch.Generator().manual_seed(1), output_type="latent").frames
    ours = diffusers_backend.frames_from_latents(pipe, kind, latents.cpu(), frames=size["num_frames"],
                                                 height=size["height"], width=size["width"])
    assert np.array_equal(ours, diffusers_backend.to_uint8(whole))
