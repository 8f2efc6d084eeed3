"""GPU benchmark: a zeroscope-sized text-to-video pipeline with random weights, 576x320, 24 frames, fp16.

Seconds per denoising step, peak GPU memory and (for the speed rows) the output's difference from the plain
recipe, for
  plain                    the model card's recipe: pipe.to("cuda") in fp16, nothing else (the baseline)
  decode-oom               the plain placement with GPU memory capped (set_per_process_memory_fraction)
                           between the plain row's denoising peak and its one-piece decode peak: the video must
                           still land through vidtray's own decode recovery (the worker's Render and
                           LoadedPipeline: memplan.decode_attempts in turn)
  cudnn_benchmark, channels_last, fused_qkv
                           plain + that one option of vidtray.services.speedopts.SPEEDUPS
  compile                  plain + speedopts "compile" (torch.compile of the UNet); its first step (the
                           compile) is reported apart from the steady s/step
  all-speedups             plain + compile + every option above
  vidtray-auto             what vidtray's worker picks for this card's free memory
  vidtray-8gb              what vidtray picks for an 8 GB card (7.5 GiB free); its peak must fit in 8 GB
  model-offload            offload = "model"
  model-offload+chunking   model offload plus feed-forward chunking (diffusers' chunk_size=1, dim=1)
  sequential               offload = "sequential" (fewer steps: it is slow)
The most wanted rows come first: the time budget skips the rest. Each runs in its own process (a clean CUDA
context, so peaks do not leak between rows); the rows after plain compare their uint8 frames (same seed) with
plain's, kept in a scratch folder. The memory plan is chosen and applied by ``vidtray.services.memplan`` and
the speed options by ``vidtray.services.speedopts`` -- the same functions the worker uses.

Needs torch, diffusers, transformers and accelerate, plus this source tree on PYTHONPATH; the decode-oom row
also imports vidtray's worker, which needs platformdirs and orjson (gpu_run.sh installs them from .whl/).
Not part of the test suite. Writes ``$OUT/gpu_generate.json`` when ``$OUT`` is set (or ``--json PATH``).

    python benchmarks/gpu_generate.py                       # the real run, on CUDA (about 6 min on an H200)
    python benchmarks/gpu_generate.py --tiny --device cpu   # a logic check on any machine (a minute)
    python benchmarks/gpu_generate.py --self-check          # the decode-oom cap's arithmetic (no torch)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tests"))
from gen_fixtures import write_tokenizer_files  # noqa: E402  (the test suite's tokenizer for the tiny model)

from vidtray.services import speedopts  # noqa: E402
from vidtray.services.memplan import GIB, MemoryPlan, apply_plan, choose_plan, decode_attempts  # noqa: E402

#: the speed rows and the speedopts names each applies (compile first, as speedopts.applicable orders them).
#: The cheap rows run before the compiling ones: a compile that runs long cannot cost them their figures.
SPEED_ROWS: dict[str, tuple[str, ...]] = {**{n: (n,) for n in speedopts.SPEEDUPS}, "compile": ("compile",),
                                          "all-speedups": ("compile", *speedopts.SPEEDUPS)}
SCENARIOS: dict[str, str] = {
    "plain": "model card recipe: pipe.to(device), fp16",
    "decode-oom": "plain placement, memory capped below the one-piece decode: vidtray's decode recovery",
    **{name: "plain + " + " + ".join(opts) for name, opts in SPEED_ROWS.items()},
    "vidtray-auto": "vidtray's plan for this card's free memory",
    "vidtray-8gb": "vidtray's plan for an 8 GB card (7.5 GiB free)",
    "model-offload": "offload = model",
    "model-offload+chunking": "model offload + forward chunking",
    "sequential": "offload = sequential",
}
#: the slow rows get half the steps; the compiling rows a longer per-process limit
HALF_STEPS = ("sequential", "model-offload+chunking")
COMPILING = tuple(name for name, opts in SPEED_ROWS.items() if "compile" in opts)
EIGHT_GB_FREE = int(7.5 * GIB)
CUDA_CONTEXT = int(0.5 * GIB)  # what the CUDA context and cuBLAS/cuDNN handles take outside torch's allocator
PROMPT = "a red fox running through fresh snow at sunrise, cinematic"
MIB = 1024**2
#: decode-oom: the cap sits this far above the denoising's reserved peak at least (the latents' copy to the
#: CPU, allocator slack), and only a gap this wide to the one-piece decode peak is worth the row
CAP_MARGIN = 512 * MIB
CAP_MIN_GAP = GIB


def decode_cap(denoise_reserved: int, decode_allocated: int, total: int) -> tuple[int | None, str]:
    """A memory cap (bytes) that lets the plain recipe denoise but not decode all frames in one piece: halfway
    between the denoising's reserved peak (plus a margin) and the one-piece decode's allocated peak, both
    measured by the plain row; None (and why) when the two are too close for a cap to tell them apart."""
    low = denoise_reserved + CAP_MARGIN
    if decode_allocated - low < CAP_MIN_GAP:
        return None, (f"the one-piece decode peak ({decode_allocated / GIB:.2f} GiB) is not {CAP_MIN_GAP / GIB:g} "
                      f"GiB above the denoising peak + margin ({low / GIB:.2f} GiB): no cap separates them")
    cap = min((low + decode_allocated) // 2, total)
    return cap, (f"cap {cap / GIB:.2f} GiB: above the denoising peak {denoise_reserved / GIB:.2f} GiB (reserved) "
                 f"+ {CAP_MARGIN // MIB} MiB, below the one-piece decode peak {decode_allocated / GIB:.2f} GiB")


def self_check() -> int:
    """The decode-oom row's arithmetic and the ladder it expects, checked without torch."""
    total = 140 * GIB
    # the H200 figures of the plain row (README): ~6 GiB denoising, 11.9 GiB with the one-piece decode
    cap, why = decode_cap(int(6.2 * GIB), int(11.9 * GIB), total)
    assert cap is not None and int(6.2 * GIB) + CAP_MARGIN < cap < int(11.9 * GIB), why
    assert decode_cap(5 * GIB, int(5.9 * GIB), total)[0] is None  # too close: the row is skipped, not faked
    assert decode_cap(5 * GIB, 4 * GIB, total)[0] is None  # a decode below the denoising peak
    assert decode_cap(GIB, 300 * GIB, total)[0] == total
    plan = plain_plan()
    ladder = [a.label() for a in decode_attempts(plan, device_type="cuda", can_tile=True, framewise=True)]
    assert ladder == ["no tiling, all frames at once", "VAE tiling, all frames at once",
                      "VAE tiling, 1 frame at a time", "on the CPU: VAE tiling, 1 frame at a time"], ladder
    assert set(SPEED_ROWS["all-speedups"]) == {"compile", *speedopts.SPEEDUPS}
    print(f"self-check ok: {why}; decode ladder: {' -> '.join(ladder)}")
    return 0


def plain_plan() -> MemoryPlan:
    """The model card's placement as a vidtray memory plan: everything on the GPU, the VAE decoding all
    frames in one piece (vidtray's own plans slice the VAE, so its first attempt would already be frame by
    frame: this is the decode that can run out of memory)."""
    return MemoryPlan("none", False, False, "the model card's recipe: everything on the GPU, one-piece decode")


# -- the child: build, apply one scenario, run, report -----------------------------------------------


def build_pipeline(tiny: bool, device: str) -> Any:
    """zeroscope_v2_576w's architecture with random weights (or a tiny one), in fp16 on a GPU."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    # Build on the GPU when there is one: random init of ~1.7B parameters is seconds there, minutes on a CPU.
    with torch.device("cuda" if device == "cuda" else "cpu"):
        if tiny:
            unet = UNet3DConditionModel(
                block_out_channels=(4, 8), layers_per_block=1, sample_size=32, norm_num_groups=2,
                down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=8,
                attention_head_dim=4)
            vae = AutoencoderKL(block_out_channels=(4, 8), latent_channels=4, norm_num_groups=2,
                                down_block_types=("DownEncoderBlock2D",) * 2,
                                up_block_types=("UpDecoderBlock2D",) * 2)
            text_config = CLIPTextConfig(hidden_size=8, intermediate_size=16, num_attention_heads=2,
                                         num_hidden_layers=2, projection_dim=8, vocab_size=100,
                                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
        else:
            # diffusers' default UNet3DConditionModel config is zeroscope_v2_576w's unet config
            unet = UNet3DConditionModel()
            # the Stable Diffusion 2 VAE and the OpenCLIP ViT-H text tower that zeroscope ships
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4, sample_size=768)
            text_config = CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                                         num_hidden_layers=23, projection_dim=1024, hidden_act="gelu",
                                         vocab_size=49408, max_position_embeddings=77,
                                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
        text_encoder = CLIPTextModel(text_config)
    dtype = torch.float16 if device != "cpu" else torch.float32
    for module in (unet, vae, text_encoder):
        module.to(dtype).eval()
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = (str(p) for p in write_tokenizer_files(Path(tmp)))
        tokenizer = CLIPTokenizer(vocab, merges, model_max_length=77)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                 scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def module_bytes(module: Any) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


class StepClock:
    """The step callback (the pipeline's legacy ``callback(i, t, latents)`` or the worker's ``on_step(i)``):
    a time mark per step and, on CUDA, the memory peaks so far (the last step's: the denoising's peaks)."""

    def __init__(self, torch: Any, cuda: bool) -> None:
        self.torch, self.cuda = torch, cuda
        self.marks: list[float] = []
        self.peaks = (0, 0)

    def __call__(self, *_: Any) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.peaks = (self.torch.cuda.max_memory_allocated(), self.torch.cuda.max_memory_reserved())
        self.marks.append(time.perf_counter())

    def figures(self, t0: float, t_end: float) -> dict[str, Any]:
        marks = self.marks
        per_step = [b - a for a, b in zip(marks, marks[1:], strict=False)]
        out: dict[str, Any] = {
            "sec_per_step": statistics.median(per_step) if per_step else None,
            "step_max_s": max(per_step) if per_step else None,  # a recompile or an algorithm search shows here
            "first_step_s": marks[0] - t0 if marks else None,  # prompt, warm-up, compile / cuDNN search
            "decode_s": t_end - marks[-1] if marks else None,
            "call_s": t_end - t0,
        }
        if self.cuda:
            out.update(denoise_peak_allocated_bytes=self.peaks[0], denoise_peak_reserved_bytes=self.peaks[1])
        return out


def uint8_frames(frames: Any) -> Any:
    """The pipeline's float [0, 1] frames as uint8, by the worker's ``to_uint8`` formula (not imported: the
    rows other than decode-oom need nothing of vidtray's worker)."""
    import numpy as np

    return (np.clip(np.asarray(frames, dtype=np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)


def memory_plan(name: str, pipe: Any, args: argparse.Namespace, weights: int, largest: int) -> MemoryPlan | str:
    """The memory rows' plan (placed on the device), or why the row is skipped."""
    import torch

    device = args.device
    cuda = device == "cuda"
    # vidtray loads on the CPU and decides with the card empty, as the worker does
    pipe.to("cpu")
    if cuda:
        torch.cuda.empty_cache()
    free = torch.cuda.mem_get_info()[0] if cuda else None
    common = dict(weights_bytes=weights, largest_bytes=largest, frames=args.frames, height=args.height,
                  width=args.width, can_chunk=True)
    plan_device = device if device != "cpu" else "cuda"  # on the CPU, exercise the GPU decisions anyway
    if name == "sequential" and not cuda:
        return "sequential offload needs an accelerator"
    if name == "vidtray-8gb":
        plan = choose_plan("auto", plan_device, free_bytes=EIGHT_GB_FREE, **common)
    elif name == "model-offload+chunking":
        base = choose_plan("model", plan_device, free_bytes=free, **common)
        plan = MemoryPlan("model", True, True, "model offload + chunking (forced)", base.free_bytes,
                          base.weights_bytes, base.activation_bytes)
    else:
        offload = {"vidtray-auto": "auto", "model-offload": "model", "sequential": "sequential"}[name]
        plan = choose_plan(offload, device if offload in ("auto", "sequential") else plan_device,
                           free_bytes=free, **common)
    if plan.offload != "none" and device == "mps":
        return "offload timing on MPS not measured"
    apply_plan(pipe, plan, device)
    return plan


def speed_options(name: str, pipe: Any, device: str) -> dict[str, Any]:
    """Put ``pipe`` on ``device`` (the plain recipe) and apply the row's speed options with vidtray's own
    ``speedopts``; {"skipped": why} where none can apply."""
    import torch

    asked = SPEED_ROWS[name]
    use, why_not = speedopts.applicable("compile" in asked, tuple(o for o in asked if o != "compile"),
                                        device=device, offload="none")
    if device != "cuda":
        # vidtray applies none off CUDA (why_not says so); the options other than compile are applied here
        # anyway, so that their code path runs on any machine
        use = [o for o in asked if o != "compile"]
        if not use:
            return {"skipped": f"not measured: vidtray says {why_not[0]!r}"}
        why_not = [f"vidtray would apply none here ({line}); applied anyway so that the code path runs"
                   for line in why_not]
    pipe.to(device)
    applied = speedopts.apply(pipe, torch, use)
    return {"speed_applied": applied, "speed_notes": why_not}


def dynamo_counts() -> dict[str, int]:
    """How many graphs torch.compile made and how often it broke the model up (0 and 0 without compile)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return {}
    return {"dynamo_graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values()))}


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    device = args.device
    cuda = device == "cuda"
    t_build = time.perf_counter()
    pipe = build_pipeline(args.tiny, device)
    build_s = time.perf_counter() - t_build
    modules = [m for m in (pipe.unet, pipe.vae, pipe.text_encoder)]
    weights = sum(module_bytes(m) for m in modules)
    largest = max(module_bytes(m) for m in modules)
    about: dict[str, Any] = {"scenario": name, "what": SCENARIOS[name], "build_s": build_s, "weights_bytes": weights,
                             "largest_bytes": largest, "unet_params": sum(p.numel() for p in pipe.unet.parameters())}
    if name == "decode-oom":
        return {**about, **decode_oom(pipe, args, largest)}
    steps = args.steps if name not in HALF_STEPS else max(2, args.steps // 2)

    plan: MemoryPlan | None = None
    extra: dict[str, Any] = {}
    if name == "plain":
        pipe.to(device)
    elif name in SPEED_ROWS:
        extra = speed_options(name, pipe, device)
        if "skipped" in extra:
            return {"scenario": name, **extra}
    else:
        placed = memory_plan(name, pipe, args, weights, largest)
        if isinstance(placed, str):
            return {"scenario": name, "skipped": placed}
        plan = placed

    clock = StepClock(torch, cuda)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    generator = torch.Generator("cuda" if cuda else "cpu").manual_seed(0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = pipe(PROMPT, height=args.height, width=args.width, num_frames=args.frames, num_inference_steps=steps,
                   generator=generator, output_type="np", callback=clock, callback_steps=1)
    if cuda:
        torch.cuda.synchronize()
    result: dict[str, Any] = {**about, "steps": steps, **clock.figures(t0, time.perf_counter()), **extra,
                              "plan": plan.as_dict() if plan is not None else None}
    frames = uint8_frames(out.frames[0])
    result["output_shape"] = list(frames.shape)
    if name in SPEED_ROWS:
        result.update(dynamo_counts())
    if args.work is not None:  # for the parent's comparison with plain's frames
        np.save(args.work / f"{name}.npy", frames)
    if cuda:
        result.update(cuda_figures(torch))
    return result


def cuda_figures(torch: Any) -> dict[str, Any]:
    peak_alloc = torch.cuda.max_memory_allocated()
    peak_reserved = torch.cuda.max_memory_reserved()
    return dict(peak_allocated_bytes=peak_alloc, peak_reserved_bytes=peak_reserved,
                fits_8gb=peak_reserved + CUDA_CONTEXT <= 8 * GIB, gpu=torch.cuda.get_device_name(0),
                total_memory_bytes=torch.cuda.get_device_properties(0).total_memory)


class _Warnings(logging.Handler):
    """The worker's warnings while it renders (each decode attempt that ran out of memory is one)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def decode_oom(pipe: Any, args: argparse.Namespace, largest: int) -> dict[str, Any]:
    """The plain placement, GPU memory capped below the one-piece decode: vidtray's worker (Render over a
    LoadedPipeline) denoises to latents, saves them, and decodes with memplan.decode_attempts in turn."""
    import numpy as np
    import torch

    try:  # vidtray's worker: these need platformdirs and orjson (gpu_run.sh installs them from .whl/)
        from vidtray.config import Config
        from vidtray.services import generation as gen
        from vidtray.services import hub
        from vidtray.services.worker.diffusers_backend import LoadedPipeline, decode_kind
        from vidtray.services.worker.render import Render
    except ImportError as exc:
        return {"error": f"vidtray's worker cannot be imported ({exc}): carry the wheel of {exc.name} in .whl/ "
                         "(see benchmarks/gpu_run.sh)"}
    device, cuda = args.device, args.device == "cuda"
    work: Path = args.work or Path(tempfile.mkdtemp(prefix="vidtray-gpubench-"))
    cap: int | None = None
    total = torch.cuda.get_device_properties(0).total_memory if cuda else 0
    if cuda:
        plain_file = work / "plain.json"
        plain = json.loads(plain_file.read_text()) if plain_file.exists() else {}
        if not plain.get("denoise_peak_reserved_bytes"):
            return {"skipped": "needs the plain row's memory figures: run plain first (in the same run)"}
        cap, why = decode_cap(plain["denoise_peak_reserved_bytes"], plain["peak_allocated_bytes"], total)
        if cap is None:
            return {"skipped": why}
    else:
        why = f"no memory cap on {device}: the recovery's wiring runs, its first attempt decodes"
    folder = work / "model"
    # the last attempt (on the CPU) reads a float32 VAE from the model's files, as the worker does
    pipe.vae.save_pretrained(str(folder / "vae"))
    plan = plain_plan()
    pipe.to(device)
    loaded = LoadedPipeline(
        pipe=pipe, where=str(folder), source=hub.ModelSource(str(folder), local_dir=folder),
        family=gen.family_for(type(pipe).__name__), class_name=type(pipe).__name__, device=device,
        dtype=pipe.unet.dtype, plan=plan, offload="none", load_s=0.0, callback_style="legacy",
        token_limit=pipe.tokenizer.model_max_length, largest_bytes=largest, kind=decode_kind(pipe))
    params = gen.Params(prompt=PROMPT, negative_prompt=None, model=str(folder), frames=args.frames,
                        steps=args.steps, height=args.height, width=args.width, fps=8.0, seed=0)
    clock = StepClock(torch, cuda)
    recovered: list[str] = []
    render = Render(Config(data_dir=work / "data"), loaded, params, "decode-oom", {"benchmark": "decode-oom"},
                    on_step=clock, cancel=threading.Event(), warn=recovered.append, plan_key="benchmark")
    warnings = _Warnings()
    logging.getLogger("vidtray.worker").addHandler(warnings)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.set_per_process_memory_fraction(cap / total, 0)
    t0 = time.perf_counter()
    made = render.run()
    t_end = time.perf_counter()
    if args.work is not None:
        np.save(args.work / "decode-oom.npy", made.frames)
    result: dict[str, Any] = {
        "steps": params.steps, **clock.figures(t0, t_end), "decode_s": made.decode_s, "denoise_s": made.denoise_s,
        "cap": why, "cap_bytes": cap, "plan": loaded.plan.as_dict(), "output_shape": list(made.frames.shape),
        "decoded_with": made.decode.label(), "failed_attempts": [w for w in warnings.lines if "while decoding" in w],
        "worker_warnings": warnings.lines, "recovered": made.recovered,
        "latents_file_bytes": render.path.stat().st_size if render.path.exists() else None,
    }
    if cuda:
        result.update(cuda_figures(torch))
    return result


# -- the parent: one child per scenario, a table, a JSON file --------------------------------------------


def gib(n: Any) -> str:
    return f"{n / GIB:.2f}" if isinstance(n, int | float) else "-"


def secs(n: Any) -> str:
    return f"{n:.3f}" if isinstance(n, int | float) else "-"


def run_one(name: str, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", name, "--device", args.device, "--steps", str(args.steps),
           "--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width),
           "--work", str(args.work)]
    if args.tiny:
        cmd.append("--tiny")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                  p for p in (os.environ.get("PYTHONPATH", ""), str(ROOT)) if p)})
    except subprocess.TimeoutExpired:
        return {"scenario": name, "error": f"timed out after {timeout:.0f}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if lines:
        result: dict[str, Any] = json.loads(lines[-1][7:])
        return result
    return {"scenario": name, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"}


def compare_with_plain(work: Path, name: str) -> dict[str, Any]:
    """How far this row's uint8 frames are from plain's (same seed): "same output" in numbers."""
    import numpy as np

    mine, plain = work / f"{name}.npy", work / "plain.npy"
    if name == "plain" or not mine.exists() or not plain.exists():
        return {}
    a, b = np.load(plain), np.load(mine)
    mine.unlink()
    if a.shape != b.shape:
        return {"diff_vs_plain": f"shape {list(b.shape)} vs plain's {list(a.shape)}"}
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"max_abs_diff_vs_plain": int(diff.max()), "mean_abs_diff_vs_plain": float(diff.mean()),
            "share_off_by_over_8_vs_plain": float((diff > 8).mean())}


def run_scenarios(args: argparse.Namespace, names: list[str]) -> list[dict[str, Any]]:
    """Each scenario in its own process, within the time budget."""
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for name in names:
        if time.perf_counter() - started > args.budget:
            results.append({"scenario": name, "skipped": f"time budget of {args.budget:g}s used up"})
            continue
        t0 = time.perf_counter()
        # never run past budget + 30 s in all, whatever one scenario does; compiling takes minutes
        limit = max(args.timeout, args.compile_timeout) if name in COMPILING else args.timeout
        timeout = min(limit, max(30.0, args.budget + 30 - (time.perf_counter() - started)))
        result = run_one(name, args, timeout)
        result.update(compare_with_plain(args.work, name))
        if name == "plain" and "sec_per_step" in result:  # the decode-oom row's cap comes from these figures
            (args.work / "plain.json").write_text(json.dumps(result))
        result["process_s"] = round(time.perf_counter() - t0, 1)
        results.append(result)
        status = "ok" if "sec_per_step" in result else result.get("error") or result.get("skipped")
        print(f"  {name}: {status} ({result['process_s']}s)", file=sys.stderr, flush=True)
    return results


def add_ratios(results: list[dict[str, Any]]) -> None:
    base = next((r for r in results if r["scenario"] == "plain" and r.get("sec_per_step")), None)
    if base is None:
        return
    for r in results:
        if r.get("sec_per_step"):
            r["step_ratio_vs_plain"] = r["sec_per_step"] / base["sec_per_step"]
            r["speedup_vs_plain"] = base["sec_per_step"] / r["sec_per_step"]
        if r.get("peak_allocated_bytes") and base.get("peak_allocated_bytes"):
            r["peak_ratio_vs_plain"] = r["peak_allocated_bytes"] / base["peak_allocated_bytes"]
        if r["scenario"] in COMPILING and r.get("first_step_s") and "compile" in r.get("speed_applied", ()):
            r["compile_s"] = r["first_step_s"] - base["first_step_s"]  # the first step's extra over plain's


def ratio(r: dict[str, Any], key: str) -> str:
    value = r.get(key)
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def print_memory_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'scenario':<24}{'offload':<11}{'chunk':<6}{'steps':>5}{'s/step':>8}{'x plain':>8}"
            f"{'1st step':>9}{'decode':>8}{'peak GiB':>9}{'resv GiB':>9}{'8GB ok':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "sec_per_step" not in r:
            print(f"{r['scenario']:<24}{r.get('error') or r.get('skipped')}")
            continue
        plan = r.get("plan") or {"offload": "none", "forward_chunking": False}
        fits = r.get("fits_8gb")
        print(f"{r['scenario']:<24}{plan['offload']:<11}{'yes' if plan['forward_chunking'] else 'no':<6}"
              f"{r['steps']:>5}{secs(r['sec_per_step']):>8}{ratio(r, 'step_ratio_vs_plain'):>8}"
              f"{secs(r['first_step_s']):>9}{secs(r['decode_s']):>8}{gib(r.get('peak_allocated_bytes')):>9}"
              f"{gib(r.get('peak_reserved_bytes')):>9}{'-' if fits is None else 'yes' if fits else 'NO':>7}")


def print_speed_table(rows: list[dict[str, Any]], goal: float, measured: bool) -> None:
    print(f"\nspeed options (vidtray.services.speedopts) on the plain recipe; goal {goal:g}x plain's speed, "
          "same output")
    head = (f"{'scenario':<17}{'applied':<44}{'s/step':>8}{'speedup':>8}{'1st step':>9}{'compile':>8}"
            f"{'max diff':>9}{'mean diff':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "sec_per_step" not in r:
            print(f"{r['scenario']:<17}{r.get('error') or r.get('skipped')}")
            continue
        applied = ",".join(r.get("speed_applied", ())) or "(none)"
        print(f"{r['scenario']:<17}{applied:<44}{secs(r['sec_per_step']):>8}{ratio(r, 'speedup_vs_plain'):>8}"
              f"{secs(r['first_step_s']):>9}{secs(r.get('compile_s')):>8}"
              f"{r.get('max_abs_diff_vs_plain', '-'):>9}{ratio(r, 'mean_abs_diff_vs_plain'):>10}")
        for note in r.get("speed_notes", ()):
            print(f"{'':<17}note: {note}")
    done = [r for r in rows if r.get("speedup_vs_plain")]
    if done:
        best = max(done, key=lambda r: r["speedup_vs_plain"])
        met = "met" if best["speedup_vs_plain"] >= goal else "NOT met"
        print(f"best: {best['scenario']} at {best['speedup_vs_plain']:.2f}x plain's speed (goal {goal:g}x: {met}; "
              f"max frame difference {best.get('max_abs_diff_vs_plain', '-')} of 255)"
              + ("" if measured else " -- a logic check, not a measurement"))


def print_decode_oom(r: dict[str, Any]) -> None:
    print("\ndecode-oom: " + (r.get("error") or r.get("skipped") or r.get("cap", "")))
    if "output_shape" not in r:
        return
    for line in r.get("failed_attempts", ()):
        print(f"  ran out: {line}")
    print(f"  decoded with: {r['decoded_with']} in {secs(r['decode_s'])} s; frames {r['output_shape']}; "
          f"denoised {r['steps']} steps at {secs(r['sec_per_step'])} s/step"
          f"{' under the cap' if r.get('cap_bytes') else ''}; "
          f"peak {gib(r.get('peak_allocated_bytes'))} GiB; max difference from plain's frames "
          f"{r.get('max_abs_diff_vs_plain', '-')} of 255")
    for line in r.get("recovered", ()):
        print(f"  the worker said: {line}")


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    first = next((r for r in results if r.get("gpu") or r.get("sec_per_step")), {})
    model = "tiny" if args.tiny else "UNet3D default config"
    print(f"\nzeroscope-sized text-to-video ({model}), random weights, "
          f"{args.width}x{args.height}, {args.frames} frames, {args.device}"
          + (f" — {first.get('gpu')}" if first.get("gpu") else ""))
    if first.get("unet_params"):
        print(f"UNet parameters: {first['unet_params'] / 1e9:.3f} B; "
              f"all weights {gib(first['weights_bytes'])} GiB")
    speed = [r for r in results if r["scenario"] in SPEED_ROWS]
    print_memory_table([r for r in results if r["scenario"] not in SPEED_ROWS and r["scenario"] != "decode-oom"])
    if speed:
        print_speed_table(speed, args.goal, measured=args.device == "cuda" and not args.tiny)
    for r in results:
        if r["scenario"] == "decode-oom":
            print_decode_oom(r)
    auto = next((r for r in results if r["scenario"] == "vidtray-auto" and r.get("plan")), None)
    if auto and auto.get("peak_allocated_bytes") and auto["plan"]["offload"] == "none":
        measured = auto["peak_allocated_bytes"] - auto["weights_bytes"]
        print(f"memplan activation estimate {gib(auto['plan']['activation_bytes'])} GiB; measured transient "
              f"(vidtray-auto peak - weights) {gib(measured)} GiB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu", "mps"))
    ap.add_argument("--tiny", action="store_true", help="tiny random model (logic check; CPU-friendly)")
    ap.add_argument("--steps", type=int, default=8, help="denoising steps per run (halved for the slow rows)")
    ap.add_argument("--frames", type=int, default=None, help="default 24 (8 with --tiny)")
    ap.add_argument("--height", type=int, default=None, help="default 320 (32 with --tiny)")
    ap.add_argument("--width", type=int, default=None, help="default 576 (32 with --tiny)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset, run in this order")
    ap.add_argument("--timeout", type=float, default=150.0, help="seconds per scenario process")
    ap.add_argument("--compile-timeout", type=float, default=300.0,
                    help="seconds per process for the rows that compile")
    ap.add_argument("--budget", type=float, default=360.0,
                    help="skip the remaining scenarios once this many seconds have passed")
    ap.add_argument("--goal", type=float, default=1.3, help="the speed rows' goal, as a multiple of plain's speed")
    ap.add_argument("--json", type=Path, help="write the results here (default: $OUT/gpu_generate.json)")
    ap.add_argument("--self-check", action="store_true", help="check the decode-oom cap's arithmetic and exit")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.self_check:
        return self_check()
    args.frames = args.frames or (8 if args.tiny else 24)
    args.height = args.height or (32 if args.tiny else 320)
    args.width = args.width or (32 if args.tiny else 576)

    if args.child:
        try:
            result = run_child(args.child, args)
        except Exception as exc:  # an OOM in one row must not lose the others
            first_line = (str(exc).splitlines() or [""])[0][:300]
            result = {"scenario": args.child, "error": f"{type(exc).__name__}: {first_line}"}
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(unknown)}")
    started = time.perf_counter()
    args.work = Path(tempfile.mkdtemp(prefix="vidtray-gpubench-"))  # plain's frames and figures, the rest's
    try:
        results = run_scenarios(args, names)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    add_ratios(results)
    report(args, results)
    doc = {"args": {k: v for k, v in vars(args).items() if k not in ("child", "json", "work")},
           "results": results, "versions": _versions(), "wall_s": round(time.perf_counter() - started, 1)}
    out = args.json or (Path(os.environ["OUT"]) / "gpu_generate.json" if os.environ.get("OUT") else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2, default=str))
        print(f"wrote {out}")
    return 0


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in ("torch", "diffusers", "transformers", "accelerate"):
        try:
            out[name] = __import__(name).__version__
        except Exception as exc:  # report, don't fail: the rows already ran
            out[name] = f"unavailable ({type(exc).__name__})"
    return out


if __name__ == "__main__":
    sys.exit(main())
