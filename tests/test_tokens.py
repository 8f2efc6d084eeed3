"""Counting a prompt's tokens before it is queued: the count agrees with transformers' CLIPTokenizer (what
the worker checks with), from a CLIP vocabulary or a tokenizer.json, without importing transformers."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from vidtray.services.tokens import CLIP_SPLIT, token_limit

tk = pytest.importorskip("tokenizers")

CORPUS = ["a red fox running through snow, cinematic 4k, 35mm film!!",
          "the cat's hat isn't there; O'Brien said 12,345 times", "Ünïcödé wörds — and émojis 🦊🦊"] * 40


def clip_vocabulary(folder: Path, max_length: int = 77) -> Path:
    """A real CLIP-style BPE vocabulary (vocab.json + merges.txt, merges included), trained here."""
    tokenizer = tk.Tokenizer(tk.models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    tokenizer.normalizer = tk.normalizers.Sequence(
        [tk.normalizers.NFC(), tk.normalizers.Replace(tk.Regex(r"\s+"), " "), tk.normalizers.Lowercase()])
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Sequence([
        tk.pre_tokenizers.Split(tk.Regex(CLIP_SPLIT), behavior="removed", invert=True),
        tk.pre_tokenizers.ByteLevel(add_prefix_space=False)])
    trainer = tk.trainers.BpeTrainer(vocab_size=300, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                     end_of_word_suffix="</w>", initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    (folder / "tokenizer").mkdir(parents=True)
    tokenizer.model.save(str(folder / "tokenizer"))
    (folder / "tokenizer" / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": max_length}))
    return folder


def samples(n: int) -> list[str]:
    rng = random.Random(7)
    alphabet = "abcdefghij klmnop'!,.  \n\tÜé🦊12345XYZ"
    out = [*CORPUS[:3], "", "<|endoftext|> inside", "a  b\n\nc"]
    out += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(n)]
    return out


def transformers_counts(folder: Path, texts: list[str]) -> list[int]:
    """What the worker counts (transformers' CLIPTokenizer), in a child: this process stays without it."""
    code = ("import json, sys\nfrom transformers import CLIPTokenizer\n"
            "tok = CLIPTokenizer.from_pretrained(sys.argv[1])\n"
            "texts = json.loads(sys.stdin.read())\n"
            "print(json.dumps([len(tok(t, add_special_tokens=True, truncation=False)['input_ids']) for t in texts]))")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], input=json.dumps(texts), capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    if out.returncode != 0 and "No module named 'transformers'" in out.stderr:
        pytest.skip("transformers is not installed")
    assert out.returncode == 0, out.stderr
    return [int(n) for n in json.loads(out.stdout)]


def test_counts_agree_with_transformers_from_a_clip_vocabulary(tmp_path: Path) -> None:
    model = clip_vocabulary(tmp_path / "model")
    limit = token_limit(model, "zeroscope")
    assert limit is not None and limit.limit == 77
    texts = samples(400)
    assert [limit.count(t) for t in texts] == transformers_counts(model / "tokenizer", texts)


def test_counts_agree_from_a_tokenizer_json(tmp_path: Path) -> None:
    """transformers 5 saves tokenizer.json next to the vocabulary (the tiny test pipeline has one)."""
    model = clip_vocabulary(tmp_path / "model")
    code = ("import sys\nfrom transformers import CLIPTokenizer\n"
            "CLIPTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])")
    out = subprocess.run([sys.executable, "-c", code, str(model / "tokenizer"), str(tmp_path / "saved" / "tokenizer")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    if out.returncode != 0 and "No module named 'transformers'" in out.stderr:
        pytest.skip("transformers is not installed")
    assert (tmp_path / "saved" / "tokenizer" / "tokenizer.json").is_file(), out.stderr
    limit = token_limit(tmp_path / "saved", "zeroscope")
    assert limit is not None
    texts = samples(100)
    assert [limit.count(t) for t in texts] == transformers_counts(model / "tokenizer", texts)
    assert limit.problem("a" * 200) is not None and limit.problem("a fox") is None


def test_no_count_where_it_could_disagree_with_the_worker(tmp_path: Path) -> None:
    model = clip_vocabulary(tmp_path / "model")
    assert token_limit(model, "wan") is None  # T5 pipelines cut at max_sequence_length, not the tokenizer's
    assert token_limit(None, "zeroscope") is None  # not downloaded yet
    assert token_limit(tmp_path / "nothing", "zeroscope") is None
    (model / "tokenizer" / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": int(1e30)}))
    assert token_limit(model, "zeroscope") is None  # transformers' "no limit"
    (model / "tokenizer" / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "T5Tokenizer", "model_max_length": 77}))
    assert token_limit(model, "generic") is None  # a vocabulary this module cannot build exactly
