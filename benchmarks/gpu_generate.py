"""GPU benchmark: a zeroscope-sized text-to-video pipeline with random weights, 576x320, 24 frames, fp16.

Seconds per denoising step and peak GPU memory for
  plain                    the model card's recipe: pipe.to("cuda") in fp16, nothing else (the baseline)
  vidtray-auto             what vidtray's worker picks for this card's free memory
  vidtray-8gb              what vidtray picks for an 8 GB card (7.5 GiB free); its peak must fit in 8 GB
  model-offload            offload = "model"
  model-offload+chunking   model offload plus feed-forward chunking (diffusers' chunk_size=1, dim=1)
  sequential               offload = "sequential" (fewer steps: it is slow)
Each runs in its own process (a clean CUDA context, so peaks do not leak between rows). The memory plan is
chosen and applied by ``vidtray.services.memplan`` — the same functions the worker uses.

Needs only torch, diffusers, transformers and accelerate, plus this source tree on PYTHONPATH. Not part of
the test suite. Writes ``$OUT/gpu_generate.json`` when ``$OUT`` is set (or ``--json PATH``).

    python benchmarks/gpu_generate.py                       # the real run, on CUDA (< 5 min on an H100)
    python benchmarks/gpu_generate.py --tiny --device cpu   # a logic check on any machine (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tests"))
from gen_fixtures import write_tokenizer_files  # noqa: E402  (the test suite's tokenizer for the tiny model)

from vidtray.services.memplan import GIB, MemoryPlan, apply_plan, choose_plan  # noqa: E402

SCENARIOS: dict[str, str] = {
    "plain": "model card recipe: pipe.to(device), fp16",
    "vidtray-auto": "vidtray's plan for this card's free memory",
    "vidtray-8gb": "vidtray's plan for an 8 GB card (7.5 GiB free)",
    "model-offload": "offload = model",
    "model-offload+chunking": "model offload + forward chunking",
    "sequential": "offload = sequential",
}
EIGHT_GB_FREE = int(7.5 * GIB)
CUDA_CONTEXT = int(0.5 * GIB)  # what the CUDA context and cuBLAS/cuDNN handles take outside torch's allocator
PROMPT = "a red fox running through fresh snow at sunrise, cinematic"


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


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = args.device
    cuda = device == "cuda"
    t_build = time.perf_counter()
    pipe = build_pipeline(args.tiny, device)
    build_s = time.perf_counter() - t_build
    modules = [m for m in (pipe.unet, pipe.vae, pipe.text_encoder)]
    weights = sum(module_bytes(m) for m in modules)
    largest = max(module_bytes(m) for m in modules)
    frames, height, width = args.frames, args.height, args.width
    steps = args.steps if name not in ("sequential", "model-offload+chunking") else max(2, args.steps // 2)

    plan: MemoryPlan | None = None
    if name == "plain":
        pipe.to(device)
    else:
        # vidtray loads on the CPU and decides with the card empty, as the worker does
        pipe.to("cpu")
        if cuda:
            torch.cuda.empty_cache()
        free = torch.cuda.mem_get_info()[0] if cuda else None
        common = dict(weights_bytes=weights, largest_bytes=largest, frames=frames, height=height, width=width,
                      can_chunk=True)
        plan_device = device if device != "cpu" else "cuda"  # on the CPU, exercise the GPU decisions anyway
        if name == "vidtray-auto":
            plan = choose_plan("auto", device, free_bytes=free, **common)
        elif name == "vidtray-8gb":
            plan = choose_plan("auto", plan_device, free_bytes=EIGHT_GB_FREE, **common)
        elif name == "model-offload":
            plan = choose_plan("model", plan_device, free_bytes=free, **common)
        elif name == "model-offload+chunking":
            base = choose_plan("model", plan_device, free_bytes=free, **common)
            plan = MemoryPlan("model", True, True, "model offload + chunking (forced)", base.free_bytes,
                              base.weights_bytes, base.activation_bytes)
        elif name == "sequential":
            if not cuda:
                return {"scenario": name, "skipped": "sequential offload needs an accelerator"}
            plan = choose_plan("sequential", device, free_bytes=free, **common)
        if plan.offload != "none" and device == "mps":
            return {"scenario": name, "skipped": "offload timing on MPS not measured"}
        apply_plan(pipe, plan, device)

    marks: list[float] = []

    def on_step(_i: int, _t: Any, _latents: Any) -> None:
        if cuda:
            torch.cuda.synchronize()
        marks.append(time.perf_counter())

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    generator = torch.Generator("cuda" if cuda else "cpu").manual_seed(0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = pipe(PROMPT, height=height, width=width, num_frames=frames, num_inference_steps=steps,
                   generator=generator, output_type="np", callback=on_step, callback_steps=1)
    if cuda:
        torch.cuda.synchronize()
    t_end = time.perf_counter()
    shape = list(out.frames[0].shape)
    per_step = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    result: dict[str, Any] = {
        "scenario": name,
        "what": SCENARIOS[name],
        "steps": steps,
        "output_shape": shape,
        "sec_per_step": statistics.median(per_step) if per_step else None,
        "first_step_s": marks[0] - t0 if marks else None,  # prompt encoding, transfers, kernel warm-up
        "decode_s": t_end - marks[-1] if marks else None,
        "call_s": t_end - t0,
        "build_s": build_s,
        "weights_bytes": weights,
        "largest_bytes": largest,
        "unet_params": sum(p.numel() for p in pipe.unet.parameters()),
        "plan": plan.as_dict() if plan is not None else None,
    }
    if cuda:
        peak_alloc = torch.cuda.max_memory_allocated()
        peak_reserved = torch.cuda.max_memory_reserved()
        result.update(peak_allocated_bytes=peak_alloc, peak_reserved_bytes=peak_reserved,
                      fits_8gb=peak_reserved + CUDA_CONTEXT <= 8 * GIB, gpu=torch.cuda.get_device_name(0),
                      total_memory_bytes=torch.cuda.get_device_properties(0).total_memory)
    return result


# -- the parent: one child per scenario, a table, a JSON file --------------------------------------------


def gib(n: Any) -> str:
    return f"{n / GIB:.2f}" if isinstance(n, int | float) else "-"


def secs(n: Any) -> str:
    return f"{n:.3f}" if isinstance(n, int | float) else "-"


def run_scenarios(args: argparse.Namespace, names: list[str]) -> list[dict[str, Any]]:
    """Each scenario in its own process, within the time budget."""
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for name in names:
        if time.perf_counter() - started > args.budget:
            results.append({"scenario": name, "skipped": f"time budget of {args.budget:g}s used up"})
            continue
        cmd = [sys.executable, __file__, "--child", name, "--device", args.device, "--steps", str(args.steps),
               "--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width)]
        if args.tiny:
            cmd.append("--tiny")
        t0 = time.perf_counter()
        # never run past budget + 30 s in all, whatever one scenario does
        timeout = min(args.timeout, max(30.0, args.budget + 30 - (time.perf_counter() - started)))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                      p for p in (os.environ.get("PYTHONPATH", ""), str(ROOT)) if p)})
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            result = json.loads(lines[-1][7:]) if lines else {
                "scenario": name, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"}
        except subprocess.TimeoutExpired:
            result = {"scenario": name, "error": f"timed out after {timeout:.0f}s"}
        result["process_s"] = round(time.perf_counter() - t0, 1)
        results.append(result)
        status = "ok" if "sec_per_step" in result else result.get("error") or result.get("skipped")
        print(f"  {name}: {status} ({result['process_s']}s)", file=sys.stderr, flush=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu", "mps"))
    ap.add_argument("--tiny", action="store_true", help="tiny random model (logic check; CPU-friendly)")
    ap.add_argument("--steps", type=int, default=8, help="denoising steps per run (halved for the slow rows)")
    ap.add_argument("--frames", type=int, default=None, help="default 24 (8 with --tiny)")
    ap.add_argument("--height", type=int, default=None, help="default 320 (32 with --tiny)")
    ap.add_argument("--width", type=int, default=None, help="default 576 (32 with --tiny)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    ap.add_argument("--timeout", type=float, default=150.0, help="seconds per scenario process")
    ap.add_argument("--budget", type=float, default=270.0,
                    help="skip the remaining scenarios once this many seconds have passed")
    ap.add_argument("--json", type=Path, help="write the results here (default: $OUT/gpu_generate.json)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
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
    results = run_scenarios(args, names)

    base = next((r for r in results if r["scenario"] == "plain" and r.get("sec_per_step")), None)
    for r in results:
        if base and r.get("sec_per_step"):
            r["step_ratio_vs_plain"] = r["sec_per_step"] / base["sec_per_step"]
        if base and r.get("peak_allocated_bytes") and base.get("peak_allocated_bytes"):
            r["peak_ratio_vs_plain"] = r["peak_allocated_bytes"] / base["peak_allocated_bytes"]

    first = next((r for r in results if r.get("gpu") or r.get("sec_per_step")), {})
    model = "tiny" if args.tiny else "UNet3D default config"
    print(f"\nzeroscope-sized text-to-video ({model}), random weights, "
          f"{args.width}x{args.height}, {args.frames} frames, {args.device}"
          + (f" — {first.get('gpu')}" if first.get("gpu") else ""))
    if first.get("unet_params"):
        print(f"UNet parameters: {first['unet_params'] / 1e9:.3f} B; "
              f"all weights {gib(first['weights_bytes'])} GiB")
    head = (f"{'scenario':<24}{'offload':<11}{'chunk':<6}{'steps':>5}{'s/step':>8}{'x plain':>8}"
            f"{'1st step':>9}{'decode':>8}{'peak GiB':>9}{'resv GiB':>9}{'8GB ok':>7}")
    print(head)
    print("-" * len(head))
    for r in results:
        if "sec_per_step" not in r:
            print(f"{r['scenario']:<24}{r.get('error') or r.get('skipped')}")
            continue
        plan = r.get("plan") or {"offload": "none", "forward_chunking": False}
        ratio = r.get("step_ratio_vs_plain")
        fits = r.get("fits_8gb")
        print(f"{r['scenario']:<24}{plan['offload']:<11}{'yes' if plan['forward_chunking'] else 'no':<6}"
              f"{r['steps']:>5}{secs(r['sec_per_step']):>8}{(f'{ratio:.2f}' if ratio else '-'):>8}"
              f"{secs(r['first_step_s']):>9}{secs(r['decode_s']):>8}{gib(r.get('peak_allocated_bytes')):>9}"
              f"{gib(r.get('peak_reserved_bytes')):>9}{'-' if fits is None else 'yes' if fits else 'NO':>7}")
    auto = next((r for r in results if r["scenario"] == "vidtray-auto" and r.get("plan")), None)
    if auto and auto.get("peak_allocated_bytes") and auto["plan"]["offload"] == "none":
        measured = auto["peak_allocated_bytes"] - auto["weights_bytes"]
        print(f"memplan activation estimate {gib(auto['plan']['activation_bytes'])} GiB; measured transient "
              f"(vidtray-auto peak - weights) {gib(measured)} GiB")
    doc = {"args": {k: v for k, v in vars(args).items() if k not in ("child", "json")}, "results": results,
           "versions": _versions(), "wall_s": round(time.perf_counter() - started, 1)}
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
