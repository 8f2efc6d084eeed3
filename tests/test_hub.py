"""The hub module: naming a model (folder or repo id), the cache scan and its views, download plans."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hf_cache import make_broken_repo, make_repo

from vidtray.errors import OperationFailed, UserError
from vidtray.services import hub

# -- naming a model ---------------------------------------------------------------------------------


def test_model_lookup_errors(tmp_path: Path) -> None:
    (tmp_path / "file.bin").write_bytes(b"")
    with pytest.raises(UserError, match="is a file"):
        hub.resolve_model(str(tmp_path / "file.bin"))
    with pytest.raises(UserError, match="no model_index.json"):
        hub.resolve_model(str(tmp_path))
    with pytest.raises(UserError, match="model folder not found"):
        hub.resolve_model(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="neither a folder nor a Hugging Face repo id"):
        hub.resolve_model("bad id with spaces")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        hub.resolve_model("cerspense/zeroscope_v2_576w")
    folder = tmp_path / "pipe"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    src = hub.resolve_model(str(folder))
    assert src.local_dir == folder and src.class_name() == "WanPipeline" and src.revision is None


def test_hf_offline_is_read_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub.hf_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    assert hub.hf_offline()


# One rule for repo ids (huggingface_hub's): `generate`/`queue add`/the popup (resolve_model), `models pull`
# and `clean model` (check_repo_id) accept and refuse the same ids. The old regex let "--", "..", ".git"
# and over-long names through resolve_model and `models pull`, to fail later in the worker or at the hub.
REPO_IDS = [("cerspense/zeroscope_v2_576w", True), ("gpt2", True), ("Org/Name-1.5_x", True),
            ("org/foo--bar", False), ("org/a..b", False), ("org/model.git", False), ("org/" + "x" * 97, False),
            ("bad id with spaces", False), ("org/-name", False), ("café/model", False)]


@pytest.mark.parametrize(("repo_id", "valid"), REPO_IDS)
def test_one_repo_id_rule_everywhere(repo_id: str, valid: bool) -> None:
    assert hub.is_repo_id(repo_id) is valid
    if valid:
        assert hub.check_repo_id(repo_id) == repo_id
        with pytest.raises(UserError, match="HF_HUB_OFFLINE"):  # a valid id, not cached, offline
            hub.resolve_model(repo_id)
    else:
        with pytest.raises(UserError, match="not a valid repo id"):
            hub.check_repo_id(repo_id)
        with pytest.raises(UserError, match="neither a folder nor a Hugging Face repo id"):
            hub.resolve_model(repo_id)


@pytest.mark.parametrize("args", [["models", "pull", "org/foo--bar"], ["generate", "x", "--model", "org/m.git"],
                                  ["queue", "add", "x", "--model", "org/a..b"]])
def test_the_cli_refuses_an_id_the_hub_would_refuse(cli, args: list[str]) -> None:
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert "repo id" in proc.stderr and "HF_HUB_OFFLINE" not in proc.stderr


def test_a_path_is_not_a_repo_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hub.looks_like_path("./x") and hub.looks_like_path("a/b/c") and hub.looks_like_path("C:\\m")
    assert not hub.looks_like_path("org/name")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    assert hub.looks_like_path("org/name")  # a folder that exists here is a folder, whatever its spelling


# -- the cache scan ---------------------------------------------------------------------------------


def test_scan_lists_repos_broken_ones_and_partial_downloads(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    make_repo(cache, "org/pipe", {"model_index.json": b'{"_class_name": "WanPipeline"}'}, incomplete=b"x" * 100)
    make_repo(cache, "org/data", {"a.csv": b"1,2"}, repo_type="dataset")
    make_broken_repo(cache, "org/broken", b"y" * 500)
    scan = hub.scan_cache(cache)
    assert [(r.repo_type, r.repo_id) for r in scan.repos] == [("dataset", "org/data"), ("model", "org/pipe")]
    pipe = scan.repos[1]
    assert pipe.pipeline() == "WanPipeline" and pipe.incomplete_bytes == 100
    assert len(pipe.revisions) == 1 and pipe.refs == ("main",)
    assert [(b.repo_id, b.size_bytes) for b in scan.broken] == [("org/broken", 500)]
    assert scan.incomplete_bytes == 600
    assert scan.size_bytes == sum(r.size_bytes for r in scan.repos) + 500 + 100
    assert hub.scan_cache(tmp_path / "absent") == hub.CacheScan(tmp_path / "absent")


def test_cached_pipelines_have_model_index_at_the_top(tmp_path: Path) -> None:
    # The popup lists what resolve_model finds as a pipeline: model_index.json at the snapshot's top, not a
    # file of that name in some subfolder.
    cache = tmp_path / "hub"
    make_repo(cache, "org/pipe", {"model_index.json": b'{"_class_name": "WanPipeline"}'})
    make_repo(cache, "org/nested", {"extra/model_index.json": b'{"_class_name": "WanPipeline"}'})
    make_repo(cache, "org/pipes", {"model_index.json": b"{}"}, repo_type="dataset")
    cached, warnings = hub.cached_pipelines(cache)
    assert [r.repo_id for r in cached] == ["org/pipe"] and warnings == []


def test_a_cache_path_that_is_a_file_is_an_empty_cache_everywhere(tmp_path: Path) -> None:
    # The popup's own scan used to raise here (scan_cache_dir's ValueError), so the window never opened.
    not_a_folder = tmp_path / "hub"
    not_a_folder.write_text("")
    assert hub.cached_pipelines(not_a_folder) == ([], [])
    assert hub.scan_cache(not_a_folder).repos == ()


def test_an_unreadable_cache_is_an_operation_failure(tmp_path: Path) -> None:
    """In a child that file modes bind (as root too): the scan fails with one clear error, and the popup's
    list is empty with that error as its warning."""
    import json
    import sys

    import unprivileged
    from conftest import ROOT

    cache = tmp_path / "hub"
    make_repo(cache, "org/pipe", {"model_index.json": b"{}"})
    code = ("import json, sys; from pathlib import Path; from vidtray.errors import OperationFailed\n"
            "from vidtray.services import hub\n"
            "try:\n    hub.scan_cache(Path(sys.argv[1])); error = None\n"
            "except OperationFailed as exc:\n    error = str(exc)\n"
            "print(json.dumps([error, hub.cached_pipelines(Path(sys.argv[1]))]))\n")
    os.chmod(cache, 0)
    try:
        res = unprivileged.run([sys.executable, "-c", code, str(cache)], cwd=ROOT, timeout=60)
    finally:
        os.chmod(cache, 0o755)
    assert res.returncode == 0, res.stderr
    error, (cached, warnings) = json.loads(res.stdout)
    assert error.startswith(f"cannot read the model cache {cache}")
    assert cached == [] and "cannot read the model cache" in warnings[0]


# -- downloads --------------------------------------------------------------------------------------


def test_space_needed_is_the_download_plus_a_margin() -> None:
    assert hub.space_needed(0) == hub.DOWNLOAD_MARGIN_MIN
    assert hub.space_needed(100 * 1024**3) == int(110 * 1024**3)


def test_download_space_check(tmp_path: Path) -> None:
    plan = hub.DownloadPlan("o/m", "abc", (("unet/w.safetensors", 10**18),), 10**18)
    with pytest.raises(OperationFailed, match=r"not enough disk space to download o/m: it needs .* free"):
        hub.check_download_space(plan, cache_dir=tmp_path)
    hub.check_download_space(hub.DownloadPlan("o/m", "abc", (("a", 10**18),), 0), cache_dir=tmp_path)
    hub.check_download_space(hub.DownloadPlan("o/m", "abc", (("a", 1000),), 1000), cache_dir=tmp_path)


def test_download_selection_is_like_diffusers() -> None:
    siblings = [
        ("model_index.json", 1), ("README.md", 5), ("zs2_576w/text2video_pytorch_model.pth", 3000),
        ("unet/config.json", 1), ("unet/diffusion_pytorch_model.bin", 2800),
        ("unet/diffusion_pytorch_model.safetensors", 2800),
        ("unet/diffusion_pytorch_model.fp16.safetensors", 1400),
        ("vae/config.json", 1), ("vae/diffusion_pytorch_model.safetensors", 160),
        ("text_encoder/config.json", 1), ("text_encoder/model.safetensors", 680),
        ("tokenizer/vocab.json", 1), ("tokenizer/merges.txt", 1), ("scheduler/scheduler_config.json", 1),
    ]
    components = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]
    names = {n for n, _ in hub.select_pipeline_files(siblings, components)}
    assert names == {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                     "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
                     "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt",
                     "scheduler/scheduler_config.json"}
    # an older repo with pickles only (zeroscope's unet has no safetensors in some revisions)
    pickles = [s for s in siblings if s[0] != "unet/diffusion_pytorch_model.safetensors"]
    names = {n for n, _ in hub.select_pipeline_files(pickles, components)}
    assert "unet/diffusion_pytorch_model.bin" in names
    assert "vae/diffusion_pytorch_model.safetensors" not in names


def test_download_estimate_counts_only_what_the_pipeline_fetches() -> None:
    mb = 1024**2
    files = {
        "model_index.json": 1000, "README.md": 5000,
        "unet/config.json": 1000, "unet/diffusion_pytorch_model.bin": 2800 * mb,
        "text_encoder/config.json": 1000, "text_encoder/pytorch_model.bin": 680 * mb,
        "vae/config.json": 1000, "vae/diffusion_pytorch_model.bin": 160 * mb,
        "scheduler/scheduler_config.json": 500, "tokenizer/tokenizer_config.json": 700,
        "tokenizer/vocab.json": 1 * mb,
        # zeroscope also ships the original ModelScope checkpoints, which diffusers never downloads
        "zs2_576w/text2video_pytorch_model.pth": 2800 * mb, "zs2_576w/configuration.json": 500,
    }
    expected = sum(v for k, v in files.items() if not k.startswith("zs2_576w/") and k != "README.md")
    assert hub.estimate_download(files) == expected


def test_download_size_is_unknown_offline() -> None:
    assert hub.download_size("cerspense/zeroscope_v2_576w") == (
        None, "not downloaded yet; download size unknown (offline)")
