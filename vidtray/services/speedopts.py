"""GPU speed options for the denoiser: which exist, which apply where, and applying them.

Standard library only, like :mod:`vidtray.services.memplan` (and for the same reason: ``benchmarks/
gpu_generate.py`` imports it on a GPU box that has torch and diffusers but not vidtray's other
dependencies): the pipeline is duck-typed and torch is passed in by the caller (the worker's backend, or
the benchmark), so this module never imports it.

None is on by default: each is measured against the plain model-card recipe by the GPU benchmark, and
turned on (``compile = true``, ``speedups = [...]`` in the settings) only where it wins on that machine.
All keep the output within fp16 noise of the plain recipe (the benchmark reports the difference too):

- ``compile``: ``torch.compile`` of the denoiser (its ``forward``), once per loaded model. The first step
  of each new size compiles (a minute or more); the keep-alive worker keeps the compiled model for the
  next jobs. Only for a resident denoiser on CUDA: offload hooks move weights inside ``forward``, which
  compiling would break up into many graphs for no gain.
- ``cudnn_benchmark``: cuDNN picks the fastest convolution algorithm per shape (the first step of a size
  pays for the search). Helps convolution-heavy UNets (zeroscope); nothing for transformer models.
- ``channels_last``: the denoiser's 2-D convolution weights in NHWC, which tensor cores prefer.
- ``fused_qkv``: one matrix multiply for query, key and value in self-attention (diffusers'
  ``fuse_qkv_projections``), where the denoiser has it.
"""

from __future__ import annotations

import logging
from typing import Any

from vidtray.services.memplan import denoiser_of

log = logging.getLogger("vidtray.worker")

#: The options besides ``compile`` that ``speedups`` may name.
SPEEDUPS = ("cudnn_benchmark", "channels_last", "fused_qkv")


def applicable(compile_: bool, speedups: tuple[str, ...], *, device: str, offload: str) -> tuple[list[str], list[str]]:
    """Which of the asked-for options apply (names), and why the others do not (one line each)."""
    asked = (["compile"] if compile_ else []) + [s for s in speedups if s != "compile"]
    if not asked:
        return [], []
    if device != "cuda":
        return [], [f"{', '.join(asked)} ignored on {device}: the speed options are for CUDA GPUs "
                    "(torch.compile on a CPU takes many minutes and gains little)"]
    use, why_not = [], []
    for name in asked:
        if name == "compile" and offload != "none":
            why_not.append(f"compile skipped: the model is offloaded ({offload}), which compiling does not speed up")
        elif name != "compile" and name not in SPEEDUPS:
            why_not.append(f"unknown speed option {name!r} ignored")
        else:
            use.append(name)
    return use, why_not


def apply(pipe: Any, torch: Any, names: list[str]) -> list[str]:
    """Apply ``names`` (from :func:`applicable`) to ``pipe`` with this ``torch`` module; the names applied
    (an option the model lacks is left out, logged)."""
    denoiser = denoiser_of(pipe)
    done: list[str] = []
    for name in names:
        if name == "cudnn_benchmark":
            torch.backends.cudnn.benchmark = True
        elif name == "channels_last" and denoiser is not None:
            for module in denoiser.modules():
                weight = getattr(module, "weight", None)
                if isinstance(module, torch.nn.Conv2d) and weight is not None and weight.dim() == 4:
                    module.to(memory_format=torch.channels_last)
        elif name == "fused_qkv" and denoiser is not None and hasattr(denoiser, "fuse_qkv_projections"):
            denoiser.fuse_qkv_projections()
        elif name == "compile" and denoiser is not None and hasattr(denoiser, "compile"):
            # nn.Module.compile compiles in place: the pipeline keeps the same module object (and hooks).
            # The default mode: no CUDA graphs (the step callback and offload hooks run between steps) and no
            # minutes of autotuning on the first step.
            denoiser.compile()
        else:
            log.info("speed option %s does not apply to %s", name, type(denoiser).__name__)
            continue
        done.append(name)
    return done
