"""A tiny random-weight text-to-video pipeline, built offline with diffusers' own classes.

``build_tiny_pipeline(folder)`` writes a real ``TextToVideoSDPipeline`` (the zeroscope pipeline class:
UNet3D, a two-block VAE, a CLIP text model and a CLIP tokenizer from a written vocabulary) with
``save_pretrained``; the worker loads it through the same ``DiffusionPipeline.from_pretrained`` path as
the real model. ~0.4 MB, loads in ~0.2 s, 8 frames of 32x32 in 4 steps take ~1.5 s on a small CPU.

Import the fixtures into a test module with ``from gen_fixtures import tiny_pipeline  # noqa: F401``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

SMALL = {"frames": 8, "steps": 4, "height": 32, "width": 32, "fps": 8}
TINY_REPO = "vidtray-test/tiny-t2v"
TINY_REVISION = "0123456789abcdef0123456789abcdef01234567"


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """A CLIP BPE vocabulary of single letters (every letter is one token) and an empty merges list."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder / "vocab.json", folder / "merges.txt"


def build_tiny_pipeline(folder: Path) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet3DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=8, attention_head_dim=4, norm_num_groups=2,
    )
    # Two blocks = one downsample: with one block the latents stay full size and a CPU run is ~20x slower.
    vae = AutoencoderKL(
        block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=32,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=8, intermediate_size=16,
        num_attention_heads=2, num_hidden_layers=2, vocab_size=100, projection_dim=8, layer_norm_eps=1e-5,
    ))
    vocab, merges = write_tokenizer_files(folder.parent / f"{folder.name}-tokenizer-src")
    # model_max_length: the pipeline pads to it (the default is huge) and vidtray's token check reads it.
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False)
    pipe = TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                 scheduler=scheduler)
    pipe.save_pretrained(folder)
    shutil.rmtree(vocab.parent, ignore_errors=True)
    return folder


def install_in_hf_cache(src: Path, cache_dir: Path, repo_id: str = TINY_REPO,
                        revision: str = TINY_REVISION) -> Path:
    """Lay ``src`` out as huggingface_hub's cache does (blobs, snapshot symlinks, refs/main), as if it had
    been downloaded; returns the snapshot folder."""
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    for file in sorted(p for p in src.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")
    return snapshot


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny text-to-video pipeline folder (built once per test session)."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-pipeline") / "tiny-t2v")
