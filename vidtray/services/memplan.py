"""How to fit a video pipeline into the GPU: the one decision function the worker and the GPU benchmark share.

Standard library only, on purpose: ``benchmarks/gpu_generate.py`` imports it on a GPU box that has
torch/diffusers but not vidtray's other dependencies.

The plan is chosen from three numbers the worker measures (free accelerator memory, the bytes of all
weights in the target dtype, the bytes of the largest component) plus the activation estimate below.
Cheapest first, because every step down costs speed:

1. everything resident (``none``), VAE slicing on (it only lowers the decode peak);
2. model CPU offload: one component at a time on the GPU (diffusers moves them). It costs one transfer of
   each component per run (well under a second), so it comes before chunking;
3. model CPU offload plus feed-forward chunking of the denoiser, where the model supports it. Chunking
   (diffusers' recipe: ``chunk_size=1, dim=1``) runs the MLPs slice by slice and costs time on every step;
4. sequential CPU offload: weights streamed layer by layer (slowest, smallest), chunking too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

GIB = 1024**3
OFFLOADS = ("auto", "none", "model", "sequential")

# Activation bytes per latent position (batch x frames x h/8 x w/8) during one UNet3D step in half
# precision with classifier-free guidance (batch 2). Measured scale for zeroscope-class UNet3D models:
# the largest transient is the feed-forward of the first transformer blocks (320 channels x 4 x GEGLU)
# plus the resnet/group-norm intermediates. benchmarks/gpu_generate.py prints the estimate next to the
# measured peak so this constant can be checked on real hardware.
ACT_BYTES_PER_POSITION = 24 * 1024
# Feed-forward chunking runs those MLPs one slice at a time; it removes most of their share.
CHUNKED_FRACTION = 0.6
# Headroom for the CUDA context, allocator fragmentation, the VAE decode of one frame and cuDNN workspaces.
FIXED_MARGIN = int(0.75 * GIB)
RELATIVE_MARGIN = 0.10


@dataclass(frozen=True)
class MemoryPlan:
    offload: str  # none | model | sequential
    vae_slicing: bool
    forward_chunking: bool
    reason: str
    # The figures the decision used (bytes); None where not known (CPU, MPS, explicit choice).
    free_bytes: int | None = None
    weights_bytes: int | None = None
    activation_bytes: int | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def activation_bytes(frames: int, height: int, width: int, *, guidance: bool = True,
                     bytes_per_element: int = 2) -> int:
    """Estimated transient memory of one denoising step (bytes)."""
    batch = 2 if guidance else 1
    positions = batch * frames * max(1, height // 8) * max(1, width // 8)
    return int(positions * ACT_BYTES_PER_POSITION * bytes_per_element / 2)


def choose_plan(
    offload: str,
    device_type: str,
    *,
    free_bytes: int | None,
    weights_bytes: int,
    largest_bytes: int,
    frames: int,
    height: int,
    width: int,
    can_chunk: bool = True,
    bytes_per_element: int = 2,
    activation_scale: float = 1.0,
) -> MemoryPlan:
    """Pick offload / VAE slicing / forward chunking for one run.

    ``offload`` is the config value (auto|none|model|sequential); an explicit value is obeyed on an
    accelerator and ignored on the CPU, where diffusers' offload methods raise and everything is in
    RAM already. ``free_bytes`` is the accelerator memory free now (None when it cannot be measured,
    as on MPS: then nothing is offloaded automatically). ``activation_scale`` adapts the UNet3D-calibrated
    activation estimate to families whose VAE also compresses time (Wan, CogVideoX, LTX: fewer latents).
    """
    if offload not in OFFLOADS:
        raise ValueError(f"offload must be one of {', '.join(OFFLOADS)}, got {offload!r}")
    act = int(activation_bytes(frames, height, width, bytes_per_element=bytes_per_element) * activation_scale)
    figures = {"free_bytes": free_bytes, "weights_bytes": weights_bytes, "activation_bytes": act}
    if device_type == "cpu":
        # VAE slicing still lowers the RAM peak of decoding many frames and costs next to nothing.
        why = "CPU run: everything in RAM" + (f" (offload = {offload} ignored)" if offload != "auto" else "")
        return MemoryPlan("none", True, False, why, **figures)
    if offload != "auto":
        # Sequential offload is the "smallest at any cost" choice, so it chunks too; "model" and "none"
        # leave chunking off (it costs time on every step).
        chunk = can_chunk and offload == "sequential"
        return MemoryPlan(offload, True, chunk, f"offload = {offload} from the settings", **figures)
    if free_bytes is None:
        return MemoryPlan("none", True, can_chunk, f"{device_type}: free memory unknown, nothing offloaded",
                          **figures)
    chunked = int(act * CHUNKED_FRACTION) if can_chunk else act

    def fits(resident: int, transient: int) -> bool:
        need = resident + transient + FIXED_MARGIN
        return free_bytes >= need * (1 + RELATIVE_MARGIN)

    free_gib = f"{free_bytes / GIB:.1f} GiB free"
    if fits(weights_bytes, act):
        return MemoryPlan("none", True, False, f"{free_gib}: whole pipeline fits", **figures)
    if fits(largest_bytes, act):
        return MemoryPlan("model", True, False, f"{free_gib}: model CPU offload", **figures)
    if can_chunk and fits(largest_bytes, chunked):
        return MemoryPlan("model", True, True, f"{free_gib}: model CPU offload with forward chunking",
                          **figures)
    return MemoryPlan("sequential", True, can_chunk, f"{free_gib}: sequential CPU offload (slow)", **figures)


# -- applying a plan (duck-typed on the diffusers pipeline: no torch import here) -----------------------


def denoiser_of(pipe: Any) -> Any:
    """The denoising model: ``unet`` (UNet3D, zeroscope) or ``transformer`` (Wan, LTX, CogVideoX)."""
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


def apply_plan(pipe: Any, plan: MemoryPlan, device: str) -> None:
    """Put ``pipe`` (loaded on the CPU) on ``device`` the way ``plan`` says."""
    if plan.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif plan.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    set_runtime_options(pipe, plan)


def set_runtime_options(pipe: Any, plan: MemoryPlan) -> None:
    """VAE slicing and feed-forward chunking; cheap to change between jobs."""
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "enable_slicing"):
        # pipe.enable_vae_slicing() is gone from diffusers; the VAE's own switch remains
        (vae.enable_slicing if plan.vae_slicing else vae.disable_slicing)()
    denoiser = denoiser_of(pipe)
    if denoiser is not None and hasattr(denoiser, "enable_forward_chunking"):
        if plan.forward_chunking:
            # diffusers' recipe for zeroscope on small cards: the feed-forward one sequence slice at a time
            denoiser.enable_forward_chunking(chunk_size=1, dim=1)
        elif hasattr(denoiser, "disable_forward_chunking"):
            denoiser.disable_forward_chunking()
