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

VAE tiling is the decode's option, for VAEs that have it (all four families' VAEs do): it decodes the frames
tile by tile with blended seams, so the decode peak no longer grows with the frame size. It changes the
pixels a little at the seams, so it is on only where memory is tight (every offloading plan), and as the
first step of the decode's recovery after running out of memory (:func:`decode_attempts`).

After the device runs out of memory anyway (the estimate is a rough one), the worker steps down this list
(:func:`next_plan`) and tries again, and decodes with :func:`decode_attempts` in turn.
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
    #: decode tile by tile (the VAE's own tiling), for a VAE that has it
    vae_tiling: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def rank(self) -> int:
        """How far down the list of plans this one is (0: everything resident; 3: sequential offload)."""
        if self.offload == "sequential":
            return 3
        if self.offload == "model":
            return 2 if self.forward_chunking else 1
        return 0

    def label(self, tiling: bool = True) -> str:
        """A person's words for it: "CPU offload", "CPU offload with forward chunking"... (``tiling``: and
        whether the VAE decodes in tiles)."""
        words = {"none": "everything on the GPU", "model": "CPU offload",
                 "sequential": "sequential CPU offload"}[self.offload]
        if self.forward_chunking:
            words += " with forward chunking"
        if self.vae_tiling and tiling:
            words += " and VAE tiling"
        return words


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
    can_tile: bool = False,
) -> MemoryPlan:
    """Pick offload / VAE slicing / forward chunking for one run.

    ``offload`` is the config value (auto|none|model|sequential); an explicit value is obeyed on an
    accelerator and ignored on the CPU, where diffusers' offload methods raise and everything is in
    RAM already. ``free_bytes`` is the accelerator memory free now (None when it cannot be measured,
    as on MPS: then nothing is offloaded automatically). ``activation_scale`` adapts the UNet3D-calibrated
    activation estimate to families whose VAE also compresses time (Wan, CogVideoX, LTX: fewer latents).
    ``can_tile``: the VAE can decode tile by tile; every offloading plan then does.
    """
    if offload not in OFFLOADS:
        raise ValueError(f"offload must be one of {', '.join(OFFLOADS)}, got {offload!r}")
    act = int(activation_bytes(frames, height, width, bytes_per_element=bytes_per_element) * activation_scale)
    figures: dict[str, Any] = {"free_bytes": free_bytes, "weights_bytes": weights_bytes, "activation_bytes": act}
    if device_type == "cpu":
        # VAE slicing still lowers the RAM peak of decoding many frames and costs next to nothing.
        why = "CPU run: everything in RAM" + (f" (offload = {offload} ignored)" if offload != "auto" else "")
        return MemoryPlan("none", True, False, why, **figures)
    if offload != "auto":
        # Sequential offload is the "smallest at any cost" choice, so it chunks too; "model" and "none"
        # leave chunking off (it costs time on every step).
        chunk = can_chunk and offload == "sequential"
        return MemoryPlan(offload, True, chunk, f"offload = {offload} from the settings", **figures,
                          vae_tiling=can_tile and offload != "none")
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
        return MemoryPlan("model", True, False, f"{free_gib}: model CPU offload", **figures, vae_tiling=can_tile)
    if can_chunk and fits(largest_bytes, chunked):
        return MemoryPlan("model", True, True, f"{free_gib}: model CPU offload with forward chunking",
                          **figures, vae_tiling=can_tile)
    return MemoryPlan("sequential", True, can_chunk, f"{free_gib}: sequential CPU offload (slow)", **figures,
                      vae_tiling=can_tile)


# -- after running out of memory ------------------------------------------------------------------------


def next_plan(plan: MemoryPlan, *, can_chunk: bool = True, can_tile: bool = False) -> MemoryPlan | None:
    """The next plan down the list after ``plan`` ran out of memory while denoising (model offload, then
    forward chunking, then sequential offload), VAE tiling on where the VAE has it; None after sequential
    offload (nothing smaller is left)."""
    figures: dict[str, Any] = {"free_bytes": plan.free_bytes, "weights_bytes": plan.weights_bytes,
                               "activation_bytes": plan.activation_bytes}
    why = "after running out of GPU memory"
    tile = can_tile or plan.vae_tiling
    if plan.rank == 0:
        return MemoryPlan("model", True, False, f"model CPU offload {why}", **figures, vae_tiling=tile)
    if plan.rank == 1 and can_chunk:
        return MemoryPlan("model", True, True, f"model CPU offload with forward chunking {why}", **figures,
                          vae_tiling=tile)
    if plan.rank < 3:
        return MemoryPlan("sequential", True, can_chunk, f"sequential CPU offload {why}", **figures,
                          vae_tiling=tile)
    return None


def at_least(plan: MemoryPlan, floor: MemoryPlan | None) -> MemoryPlan:
    """``plan``, or ``floor`` (a plan that worked before for jobs like this one) where that is further down
    the list: a plan remembered after running out of memory is where the next such job starts."""
    if floor is None or (floor.rank, floor.vae_tiling) <= (plan.rank, plan.vae_tiling):
        return plan
    return MemoryPlan(floor.offload, True, floor.forward_chunking,
                      f"{floor.reason} (remembered from an earlier job like this one)",
                      plan.free_bytes, plan.weights_bytes, plan.activation_bytes,
                      vae_tiling=plan.vae_tiling or floor.vae_tiling)


@dataclass(frozen=True)
class DecodeAttempt:
    """One way to decode the latents: with the VAE's tiling or not, so many frames at a time (None: all at
    once, as the pipeline would), on the job's device or on the CPU (a float32 copy of the VAE)."""

    tiling: bool
    frames_per_batch: int | None
    on_cpu: bool = False

    def label(self) -> str:
        parts = ["VAE tiling" if self.tiling else "no tiling",
                 "all frames at once" if self.frames_per_batch is None else
                 f"{self.frames_per_batch} frame{'s' if self.frames_per_batch != 1 else ''} at a time"]
        return ("on the CPU: " if self.on_cpu else "") + ", ".join(parts)


def decode_attempts(plan: MemoryPlan, *, device_type: str, can_tile: bool, framewise: bool) -> list[DecodeAttempt]:
    """The decode attempts, in order, each tried after the one before ran out of memory: as planned; with
    VAE tiling (where the VAE has it); with smaller batches of frames too (``framewise``: a VAE that decodes
    every frame on its own, so batching does not change the frames); then on the CPU (not when the job runs
    on the CPU already: that is the same device)."""
    attempts = [DecodeAttempt(plan.vae_tiling and can_tile, None)]
    if can_tile and not plan.vae_tiling:
        attempts.append(DecodeAttempt(True, None))
    if framewise:
        attempts.append(DecodeAttempt(can_tile, 1))
    if device_type != "cpu":
        attempts.append(DecodeAttempt(can_tile, 1 if framewise else None, on_cpu=True))
    return attempts


# -- applying a plan (duck-typed on the diffusers pipeline: no torch import here) -----------------------


def denoiser_of(pipe: Any) -> Any:
    """The denoising model: ``unet`` (UNet3D, zeroscope) or ``transformer`` (Wan, LTX, CogVideoX)."""
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


def apply_plan(pipe: Any, plan: MemoryPlan, device: str) -> None:
    """Put ``pipe`` (loaded on the CPU, or placed by an earlier plan) on ``device`` the way ``plan`` says."""
    if getattr(pipe, "_all_hooks", None) and hasattr(pipe, "remove_all_hooks"):
        pipe.remove_all_hooks()  # an earlier plan's model offload: one set of hooks at a time
    if plan.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif plan.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    set_runtime_options(pipe, plan)


def vae_can_tile(vae: Any) -> bool:
    """Whether a VAE decodes tile by tile on request."""
    return vae is not None and hasattr(vae, "enable_tiling") and hasattr(vae, "disable_tiling")


def can_tile(pipe: Any) -> bool:
    """Whether the pipeline's VAE decodes tile by tile on request."""
    return vae_can_tile(getattr(pipe, "vae", None))


def set_tiling(vae: Any, on: bool) -> None:
    """The VAE's tiling on or off (nothing for a VAE without it)."""
    if vae_can_tile(vae):
        (vae.enable_tiling if on else vae.disable_tiling)()


def set_runtime_options(pipe: Any, plan: MemoryPlan) -> None:
    """VAE slicing and tiling, feed-forward chunking; cheap to change between jobs."""
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "enable_slicing"):
        # pipe.enable_vae_slicing() is gone from diffusers; the VAE's own switch remains
        (vae.enable_slicing if plan.vae_slicing else vae.disable_slicing)()
    set_tiling(getattr(pipe, "vae", None), plan.vae_tiling)
    denoiser = denoiser_of(pipe)
    if denoiser is not None and hasattr(denoiser, "enable_forward_chunking"):
        if plan.forward_chunking:
            # diffusers' recipe for zeroscope on small cards: the feed-forward one sequence slice at a time
            denoiser.enable_forward_chunking(chunk_size=1, dim=1)
        elif hasattr(denoiser, "disable_forward_chunking"):
            denoiser.disable_forward_chunking()
