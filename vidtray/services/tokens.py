"""How long a prompt is in the model's own tokens, counted before a job is queued (``vidtray queue add``).

The worker refuses a prompt longer than the model's text encoder reads (``diffusers_backend.check_prompt``,
with transformers' tokenizer, once the pipeline is loaded). So that a batch of prompts is refused at once,
with the line that is too long, the CLI counts too -- cheaply: with the ``tokenizers`` library (an import
of about 10 ms, where transformers costs seconds), from the model folder's ``tokenizer/``: a
``tokenizer.json`` as it is, or a CLIP vocabulary (``vocab.json`` + ``merges.txt``, what zeroscope ships)
built exactly as transformers' ``CLIPTokenizer`` builds it.

Counted only where that can agree with the worker: the model's folder is here (a local folder or the hub
cache), and its pipeline's limit is the tokenizer's ``model_max_length`` (zeroscope's UNet3D pipelines and
unknown ones). The T5 pipelines (Wan, LTX-Video, CogVideoX) read up to their ``max_sequence_length``, which
only the pipeline class knows: their prompts are checked by the worker. Without ``tokenizers`` (installed
with the ``gen`` extra) nothing is counted here; the character limit of ``vidtray.params`` still holds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("vidtray.tokens")

#: Families whose pipelines cut prompts at ``max_sequence_length``, not at the tokenizer's own limit.
SEQUENCE_LIMITED = frozenset({"wan", "ltx-video", "cogvideox"})
#: transformers' CLIPTokenizer pre-tokenizer (transformers 5), special tokens first.
CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@dataclass(frozen=True)
class TokenLimit:
    """The model's prompt limit and a counter that agrees with its tokenizer (special tokens included)."""

    limit: int
    family: str
    count: Callable[[str], int]

    def problem(self, text: str, label: str = "prompt") -> str | None:
        """The worker's refusal, word for word, for a text over the limit; None when it fits."""
        n = self.count(text)
        if n <= self.limit:
            return None
        return (f"the {label} is {n} tokens long; {self.family} models read at most {self.limit} "
                "(vidtray refuses rather than cutting it): shorten it")


def token_limit(model_folder: Path | None, family: str) -> TokenLimit | None:
    """The limit of the model in ``model_folder`` (a diffusers pipeline folder), None when it cannot be
    counted here cheaply and exactly (see the module docstring)."""
    if model_folder is None or family in SEQUENCE_LIMITED:
        return None
    folder = model_folder / "tokenizer"
    limit = _max_length(folder / "tokenizer_config.json")
    if limit is None:
        return None
    try:
        tokenizer = _load(folder)
    except Exception as exc:  # a broken or foreign tokenizer: the worker still checks with its own
        log.info("cannot count tokens with %s: %s", folder, exc)
        return None
    if tokenizer is None:
        return None

    def count(text: str) -> int:
        return len(tokenizer.encode(text).ids)

    return TokenLimit(limit, family, count)


def _max_length(config: Path) -> int | None:
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = doc.get("model_max_length") if isinstance(doc, dict) else None
    # transformers' "no limit" is a huge number (int(1e30)); the worker ignores those too.
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 100_000:
        return value
    return None


def _load(folder: Path) -> Any:
    try:
        import tokenizers
    except ImportError:
        return None
    if (folder / "tokenizer.json").is_file():
        return tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    if config.get("tokenizer_class") not in ("CLIPTokenizer", "CLIPTokenizerFast") or not (
            vocab.is_file() and merges.is_file()):
        return None
    return _clip(tokenizers, vocab, merges, config)


def _special(config: dict[str, Any], name: str, default: str) -> str:
    value = config.get(name, default)
    if isinstance(value, dict):  # an AddedToken written out
        value = value.get("content", default)
    return str(value)


def _clip(tk: Any, vocab: Path, merges: Path, config: dict[str, Any]) -> Any:
    """transformers' CLIPTokenizer, built from its files with ``tokenizers`` alone (same model, normalizer,
    pre-tokenizer and post-processor)."""
    bos = _special(config, "bos_token", "<|startoftext|>")
    eos = _special(config, "eos_token", "<|endoftext|>")
    unk = _special(config, "unk_token", "<|endoftext|>")
    model = tk.models.BPE.from_file(str(vocab), str(merges), dropout=None, continuing_subword_prefix="",
                                    end_of_word_suffix="</w>", fuse_unk=False, unk_token=unk)
    tokenizer = tk.Tokenizer(model)
    tokenizer.normalizer = tk.normalizers.Sequence(
        [tk.normalizers.NFC(), tk.normalizers.Replace(tk.Regex(r"\s+"), " "), tk.normalizers.Lowercase()])
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Sequence([
        tk.pre_tokenizers.Split(tk.Regex(CLIP_SPLIT), behavior="removed", invert=True),
        tk.pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.add_special_tokens([t for t in dict.fromkeys((bos, eos, unk))])
    tokenizer.post_processor = tk.processors.RobertaProcessing(
        (eos, tokenizer.token_to_id(eos)), (bos, tokenizer.token_to_id(bos)), trim_offsets=False,
        add_prefix_space=False)
    return tokenizer
