"""Generation without torch: requests and their validation, model families, output names, disk checks,
and finding a model (local folder or Hugging Face cache).

Everything here is cheap to import: the CLI and the supervisor use it to refuse bad input before a
worker process (and torch) is started; the worker uses the same functions so both sides agree.
huggingface_hub is imported lazily, inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidtray import params
from vidtray.config import Config, Generation
from vidtray.errors import OperationFailed, UserError
from vidtray.params import MAX_FRAMES, Source
from vidtray.services.fsutil import human_size

log = logging.getLogger("vidtray.generation")

GIB = 1024**3
# Extra room on the cache volume beyond the download itself: temp files during the download and the
# videos the user will make next.
DOWNLOAD_MARGIN = 0.10
DOWNLOAD_MARGIN_MIN = int(0.5 * GIB)


# -- model families ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """What differs between diffusers text-to-video pipelines, keyed by model_index.json's _class_name."""

    name: str
    height: int
    width: int
    frames: int
    fps: int
    size_multiple: int = 8
    # frames must satisfy frames % frames_mod == frames_rem (the video VAE's temporal compression)
    frames_mod: int = 1
    frames_rem: int = 0
    max_frames: int = MAX_FRAMES
    gpu_dtype: str = "float16"
    # per-component dtype overrides on a GPU (Wan's VAE is meant to run in float32)
    component_dtypes: Mapping[str, str] = field(default_factory=dict)
    # memplan's activation estimate is calibrated on UNet3D latents (8x spatial, no temporal compression);
    # video VAEs that also compress time give fewer latents. A rough factor, not a measurement.
    activation_scale: float = 1.0


FAMILIES: dict[str, Family] = {
    # zeroscope / ModelScope UNet3D: only the legacy `callback` (cancel by raising from it)
    "TextToVideoSDPipeline": Family("zeroscope", 320, 576, 24, 8),
    # 32x spatial and 8x temporal compression
    "LTXPipeline": Family("ltx-video", 480, 704, 121, 24, size_multiple=32, frames_mod=8, frames_rem=1,
                          gpu_dtype="bfloat16", activation_scale=0.05),
    # 8x spatial, 4x temporal
    "WanPipeline": Family("wan", 480, 832, 81, 16, size_multiple=16, frames_mod=4, frames_rem=1,
                          gpu_dtype="bfloat16", component_dtypes={"vae": "float32"}, activation_scale=0.25),
    "CogVideoXPipeline": Family("cogvideox", 480, 720, 49, 8, frames_mod=4, frames_rem=1, max_frames=49,
                                activation_scale=0.25),
}
GENERIC = Family("generic", 320, 576, 24, 8)


def family_for(class_name: str | None) -> Family:
    return FAMILIES.get(class_name or "", GENERIC)


@dataclass(frozen=True)
class KnownModel:
    repo_id: str
    pipeline: str
    download: str
    gpu_memory: str
    licence: str
    note: str = ""


# Figures are approximate (model cards, fp16/bf16); `vidtray models pull` checks the real size first.
KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("cerspense/zeroscope_v2_576w", "TextToVideoSDPipeline", "~3.5 GB",
               "~8 GB (fp16, 576x320, 24 frames, model offload)", "cc-by-nc-4.0",
               "non-commercial use only; the default model"),
    KnownModel("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "WanPipeline", "~17 GB",
               "~8 GB (bf16, 832x480, model offload)", "Apache-2.0", "commercial use allowed"),
    KnownModel("THUDM/CogVideoX-2b", "CogVideoXPipeline", "~13 GB",
               "~12.5 GB (fp16, 720x480; less with offload)", "Apache-2.0", "49 frames max"),
)


def known_pipeline(model: str) -> str | None:
    """The pipeline class of a model in :data:`KNOWN_MODELS` (its family before it is downloaded)."""
    return next((k.pipeline for k in KNOWN_MODELS if k.repo_id.lower() == model.strip().lower()), None)


# -- requests ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One generation as asked for. ``None`` means "the default" (config, then the model family)."""

    prompt: str
    negative_prompt: str | None = None
    model: str | None = None
    frames: int | None = None
    steps: int | None = None
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    seed: int | None = None
    device: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: Source = params.REQUEST) -> Request:
        """A checked request from a dict (a job file, the daemon's callers); UserError naming ``source``."""
        return cls(**params.check_request(raw, source))

    def validate(self, source: Source = params.REQUEST) -> None:
        """Checks that need no model (the schema's limits). Raises UserError (exit 2) naming the bad value
        and where it came from."""
        params.check_request(self.as_dict(), source)


@dataclass(frozen=True)
class Params:
    """A request with every default filled in: what the pipeline is called with and what the sidecar keeps."""

    prompt: str
    negative_prompt: str | None
    model: str
    frames: int
    steps: int
    height: int
    width: int
    fps: float
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_params(req: Request, cfg: Config, family: Family, source: Source = params.REQUEST) -> Params:
    """Fill defaults: the request, then a [generation] value the user changed, then the family's, then
    the config's. The built-in [generation] defaults are zeroscope's, so for other families the family
    default wins unless the user set the key. The result is checked against the schema and the family's
    rules, each value named by where it came from (``source``, the config's key, the family)."""
    builtin = Generation()
    origins: dict[str, Source] = {}

    def pick(name: str) -> Any:
        given = getattr(req, name)
        if given is not None:
            origins[name] = source
            return given
        configured = getattr(cfg.generation, name)
        if configured != getattr(builtin, name) or not hasattr(family, name):
            origins[name] = Source.config(cfg.source)
            return configured
        origins[name] = Source.family(family.name)
        return getattr(family, name)

    result = Params(
        prompt=req.prompt.strip(),
        negative_prompt=(req.negative_prompt.strip() or None) if req.negative_prompt else None,
        model=req.model or cfg.model,
        frames=pick("frames"),
        steps=pick("steps"),
        height=pick("height"),
        width=pick("width"),
        fps=pick("fps"),
        seed=req.seed if req.seed is not None else new_seed(),
    )
    params.check_resolved(result.as_dict(), family, origins, default=source)
    return result


def new_seed() -> int:
    """A random seed that fits every generator (32 bits, like most UIs show)."""
    return secrets.randbelow(2**32)


# -- names ------------------------------------------------------------------------------------------


def model_slug(model: str) -> str:
    """``zeroscope`` for the zeroscope models, else the last path/repo part, lower-case ``[a-z0-9-]``."""
    if "zeroscope" in model.lower():
        return "zeroscope"
    last = re.split(r"[/\\]", model.rstrip("/\\"))[-1].lower()
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", last)).strip("-")
    return slug or "video"


def params_hash(params: Params) -> str:
    """First 8 hex digits of a hash of prompt + parameters + seed (stable across runs and machines)."""
    doc = json.dumps(params.as_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()[:8]


def video_stem(params: Params, when: float, videos_dir: Path) -> str:
    """``<slug>_<YYYYMMDD-HHMMSS>_<hash8>``, with ``-2``, ``-3`` ... only if that name is taken
    (the same job twice in one second)."""
    import time

    base = f"{model_slug(params.model)}_{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}_" \
           f"{params_hash(params)}"
    stem, n = base, 1
    while (videos_dir / f"{stem}.mp4").exists() or (videos_dir / f"{stem}.json").exists():
        n += 1
        stem = f"{base}-{n}"
    return stem


# -- disk --------------------------------------------------------------------------------------------


def free_bytes(path: Path) -> int | None:
    """Free space on the volume holding ``path`` (its nearest existing parent); None if unknown."""
    p = Path(path).absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def check_output_space(cfg: Config) -> None:
    """Refuse (OperationFailed) when the videos folder's volume has less than ``min_free_gb`` free."""
    need = int(cfg.min_free_gb * GIB)
    free = free_bytes(cfg.videos_dir)
    if free is not None and free < need:
        raise OperationFailed(
            f"not enough disk space for a new video: {human_size(free)} free where videos go "
            f"({cfg.videos_dir}), {human_size(need)} needed (min_free_gb = {cfg.min_free_gb:g})"
        )


# -- models: local folder or Hugging Face cache -------------------------------------------------------

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)?$")


def hf_offline() -> bool:
    """HF_HUB_OFFLINE read now (huggingface_hub reads it once at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hf_cache_dir() -> Path:
    """The hub cache huggingface_hub would use, computed now from the environment."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(home).expanduser() / "hub"


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a local diffusers folder or a hub repo id (cached or not)."""

    model: str
    local_dir: Path | None = None
    repo_id: str | None = None
    snapshot: Path | None = None  # the cached snapshot folder (its name is the resolved revision)

    @property
    def revision(self) -> str | None:
        if self.snapshot is not None:
            return self.snapshot.name
        return None

    @property
    def folder(self) -> Path | None:
        return self.local_dir or self.snapshot

    def class_name(self) -> str | None:
        """model_index.json's ``_class_name`` when the folder is here; None otherwise."""
        folder = self.folder
        if folder is None:
            return None
        try:
            return json.loads((folder / "model_index.json").read_text(encoding="utf-8")).get("_class_name")
        except (OSError, ValueError, AttributeError):
            return None


def looks_like_path(model: str) -> bool:
    return model.startswith(("/", ".", "~", "\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", model)) \
        or model.count("/") > 1 or "\\" in model


def resolve_model(model: str, *, cache_dir: Path | None = None) -> ModelSource:
    """Find ``model``: an existing folder must be a diffusers pipeline (model_index.json); otherwise it
    must be a repo id. A repo id that is not cached while HF_HUB_OFFLINE is set is a UserError."""
    model = model.strip()
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"model {model!r} is a file, not a diffusers pipeline folder")
        if not (path / "model_index.json").is_file():
            raise UserError(f"{model} is not a diffusers pipeline folder (it has no model_index.json)")
        return ModelSource(model, local_dir=path.resolve())
    if looks_like_path(model):
        raise UserError(f"model folder not found: {model}")
    if not _REPO_ID.match(model):
        raise UserError(f"model {model!r} is neither a folder nor a Hugging Face repo id (owner/name)")
    snapshot = cached_snapshot(model, cache_dir=cache_dir)
    if snapshot is None and hf_offline():
        raise UserError(
            f"model {model} is not in the Hugging Face cache ({cache_dir or hf_cache_dir()}) and "
            f"HF_HUB_OFFLINE is set, so it cannot be downloaded; unset HF_HUB_OFFLINE and run "
            f"`vidtray models pull {model}`"
        )
    return ModelSource(model, repo_id=model, snapshot=snapshot)


def cached_snapshot(repo_id: str, *, cache_dir: Path | None = None) -> Path | None:
    """The cached snapshot folder of ``repo_id`` (main), if its model_index.json is in the cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "model_index.json",
                                       cache_dir=str(cache_dir or hf_cache_dir()))
    except Exception as exc:  # a malformed id or cache: treat as not cached, the load says why
        log.debug("cache lookup for %s failed: %s", repo_id, exc)
        return None
    return Path(found).parent if isinstance(found, str) else None


# -- downloads ---------------------------------------------------------------------------------------

_WEIGHT_EXT = (".safetensors", ".bin", ".ckpt", ".pth", ".pt", ".msgpack", ".onnx", ".h5", ".gguf")
_VARIANT = re.compile(r"\.(fp16|bf16|fp32|non_ema|ema|int8|fp8)\.")


@dataclass(frozen=True)
class DownloadPlan:
    repo_id: str
    revision: str
    files: tuple[tuple[str, int], ...]  # (name in repo, size in bytes) diffusers would fetch
    missing_bytes: int  # the part not in the cache yet

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


def select_pipeline_files(siblings: list[tuple[str, int]], components: list[str]) -> list[tuple[str, int]]:
    """The files ``DiffusionPipeline.from_pretrained`` would download, like diffusers chooses them:
    model_index.json, the component folders, safetensors in preference to pickles when every weighted
    component has them, no variants (fp16 ...), nothing outside the component folders."""
    picked = [(n, s) for n, s in siblings if n == "model_index.json" or n.split("/", 1)[0] in components]
    weights = [(n, s) for n, s in picked if n.endswith(_WEIGHT_EXT)]
    with_weights = {n.split("/", 1)[0] for n, _ in weights}
    safe = {n.split("/", 1)[0] for n, _ in weights if n.endswith(".safetensors") and not _VARIANT.search(n)}
    prefer_safetensors = bool(with_weights) and with_weights <= safe
    out = []
    for name, size in picked:
        if name.endswith(_WEIGHT_EXT):
            if _VARIANT.search(name):
                continue
            if prefer_safetensors and not name.endswith(".safetensors"):
                continue
            if not prefer_safetensors and name.endswith(".safetensors"):
                continue
            if name.endswith((".msgpack", ".onnx", ".h5", ".gguf", ".ckpt")):
                continue
        if fnmatch.fnmatch(name, "*.index.*json") and prefer_safetensors and ".safetensors" not in name:
            continue
        out.append((name, size))
    return out


def plan_download(repo_id: str, *, cache_dir: Path | None = None, timeout: float = 15.0) -> DownloadPlan:
    """Ask the hub what ``repo_id`` weighs (model_info with file sizes) and what of it is missing here."""
    from huggingface_hub import hf_hub_download, model_info, try_to_load_from_cache

    cache = str(cache_dir or hf_cache_dir())
    try:
        info = model_info(repo_id, files_metadata=True, timeout=timeout)
    except Exception as exc:
        raise _hub_error(repo_id, exc) from None
    revision = info.sha or "main"
    siblings = [(s.rfilename, int(s.size or 0)) for s in (info.siblings or [])]
    try:
        index_path = hf_hub_download(repo_id, "model_index.json", revision=revision, cache_dir=cache)
        index = json.loads(Path(index_path).read_text(encoding="utf-8"))
    except Exception as exc:
        raise _hub_error(repo_id, exc) from None
    if not isinstance(index, dict) or "_class_name" not in index:
        raise UserError(f"{repo_id} is not a diffusers pipeline (its model_index.json has no _class_name)")
    components = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list)]
    files = select_pipeline_files(siblings, components)
    missing = 0
    for name, size in files:
        if not isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache, revision=revision), str):
            missing += size
    return DownloadPlan(repo_id, revision, tuple(files), missing)


def check_download_space(plan: DownloadPlan, *, cache_dir: Path | None = None) -> None:
    if plan.missing_bytes == 0:
        return
    cache = cache_dir or hf_cache_dir()
    need = plan.missing_bytes + max(DOWNLOAD_MARGIN_MIN, int(plan.missing_bytes * DOWNLOAD_MARGIN))
    free = free_bytes(cache)
    if free is not None and free < need:
        raise OperationFailed(
            f"not enough disk space to download {plan.repo_id}: it needs {human_size(need)} "
            f"({human_size(plan.missing_bytes)} plus margin) in {cache}, {human_size(free)} free"
        )


def pull_model(plan: DownloadPlan, *, cache_dir: Path | None = None, tqdm_class: Any = None) -> Path:
    """Download the files of ``plan`` into the hub cache (resumes partial downloads); returns the snapshot."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            plan.repo_id, revision=plan.revision, cache_dir=str(cache_dir or hf_cache_dir()),
            allow_patterns=[name for name, _ in plan.files], tqdm_class=tqdm_class,
        )
    except Exception as exc:
        raise _hub_error(plan.repo_id, exc) from None
    return Path(folder)


def _hub_error(repo_id: str, exc: Exception) -> Exception:
    name = type(exc).__name__
    if name in ("RepositoryNotFoundError", "RevisionNotFoundError"):
        return UserError(f"no model {repo_id} on the Hugging Face hub (or it is private)")
    if name == "GatedRepoError":
        return OperationFailed(f"{repo_id} is gated: accept its licence on the hub and log in "
                               "(hf auth login)")
    if name in ("OfflineModeIsEnabled", "LocalEntryNotFoundError"):
        return UserError(f"model {repo_id} is not cached and HF_HUB_OFFLINE is set")
    log.info("hub request for %s failed", repo_id, exc_info=exc)
    return OperationFailed(f"cannot reach the Hugging Face hub for {repo_id} ({name}: {exc})")
