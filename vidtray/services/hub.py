"""The Hugging Face hub and its cache: the one owner of what vidtray knows about them.

- Naming a model: a local diffusers folder or a repo id (``looks_like_path``, ``is_repo_id``,
  ``check_repo_id``), found with ``resolve_model`` / ``cached_snapshot``; ``hf_offline``.
- The cache scan (``scan_cache``): complete repos, broken ones and partial downloads, read through
  ``huggingface_hub.scan_cache_dir``. The storage report, ``vidtray models list``, the popup's model list
  (``cached_pipelines``) and model cleanup are views of it.
- Downloads: what a pipeline download fetches (``select_pipeline_files``, ``plan_download``,
  ``estimate_download``, ``download_size``), the room it needs (``check_download_space``), and the
  download itself (``pull_model``).

huggingface_hub is imported only inside functions, so the CLI stays light and the tray never imports it.
The cache folder is ``vidtray.paths.hf_cache_dir()``, passed to every huggingface_hub call.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidtray.errors import OperationFailed, UserError
from vidtray.paths import free_bytes, hf_cache_dir
from vidtray.services.fsutil import human_size, tree_size

if TYPE_CHECKING:
    from huggingface_hub import CachedRepoInfo, HFCacheInfo
    from tqdm.auto import tqdm

log = logging.getLogger("vidtray.hub")

# Extra room on the cache volume beyond the download itself: temp files during the download and the
# videos the user will make next.
DOWNLOAD_MARGIN = 0.10
DOWNLOAD_MARGIN_MIN = int(0.5 * 1024**3)


def hf_offline() -> bool:
    """HF_HUB_OFFLINE read now (huggingface_hub reads it once at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


# -- naming a model --------------------------------------------------------------------------------


def looks_like_path(model: str) -> bool:
    """True when ``model`` names a folder rather than a repo id: it exists, or it is spelled like a path."""
    return model.startswith(("/", ".", "~", "\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", model)) \
        or model.count("/") > 1 or "\\" in model or Path(model).expanduser().exists()


def is_repo_id(text: str) -> bool:
    """huggingface_hub's own rule (``name`` or ``owner/name``, ASCII letters, digits, ``-_.``, no ``--`` or
    ``..``, at most 96 characters a part), so an id accepted here is one the hub can be asked about."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is one (``is_repo_id``), else UserError."""
    if not is_repo_id(repo_id):
        raise UserError(f"{repo_id!r} is not a valid repo id (expected 'org/name')")
    return repo_id


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
        return None if folder is None else pipeline_class(folder / "model_index.json")


def pipeline_class(model_index: Path) -> str | None:
    """The ``_class_name`` a diffusers ``model_index.json`` names; None if it cannot be read."""
    try:
        name = json.loads(model_index.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


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
    if not is_repo_id(model):
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


# -- the cache scan --------------------------------------------------------------------------------

_REPO_PREFIXES = {"models": "model", "datasets": "dataset", "spaces": "space"}


@dataclass(frozen=True)
class CachedRepo:
    """A complete repo in the cache (one huggingface_hub can read and delete)."""

    repo_id: str
    repo_type: str  # model | dataset | space
    path: Path
    size_bytes: int  # on disk, without its partial downloads
    files: int
    revisions: tuple[str, ...]  # commit hashes, sorted
    refs: tuple[str, ...]  # sorted
    last_accessed: float
    last_modified: float
    incomplete_bytes: int  # its partial downloads
    model_index: Path | None  # a revision's top-level model_index.json: the repo is a diffusers pipeline

    def pipeline(self) -> str | None:
        """The diffusers pipeline class it holds, or None."""
        return None if self.model_index is None else pipeline_class(self.model_index)


@dataclass(frozen=True)
class BrokenRepo:
    """A repo folder huggingface_hub cannot read (a download interrupted before its first snapshot, a
    damaged layout): still shown with its size on disk, and still removable."""

    repo_id: str
    repo_type: str
    path: Path
    size_bytes: int
    files: int
    reason: str


@dataclass(frozen=True)
class CacheScan:
    cache_dir: Path
    repos: tuple[CachedRepo, ...] = ()  # by (repo_type, repo_id)
    broken: tuple[BrokenRepo, ...] = ()
    warnings: tuple[str, ...] = ()  # what the scan reported (broken or partial repos)
    size_bytes: int = 0  # everything on disk: repos, broken repos, the repos' partial downloads
    incomplete_bytes: int = 0  # all partial downloads


def scan_cache(cache_dir: Path | None = None) -> CacheScan:
    """What the hub cache holds (``huggingface_hub.scan_cache_dir``); OperationFailed if it cannot be read.
    A cache that does not exist yet is empty."""
    cache_dir = Path(cache_dir) if cache_dir is not None else hf_cache_dir()
    # No repo folders, nothing to scan: skip importing the scanner (~0.1 s) for a cache with no models.
    info = _scan_info(cache_dir) if _repo_folders(cache_dir) else None
    if info is None:
        return CacheScan(cache_dir)
    incomplete: dict[Path, int] = {}
    for f in info.incomplete_files:
        incomplete[f.file_path.parent.parent] = incomplete.get(f.file_path.parent.parent, 0) + f.size_on_disk
    repos = tuple(_cached_repo(r, incomplete.get(r.repo_path, 0))
                  for r in sorted(info.repos, key=lambda r: (r.repo_type, r.repo_id)))
    good = {r.path for r in repos}
    warnings = tuple(str(w) for w in info.warnings)
    broken = []
    # The folder as the scan resolved it (newer huggingface_hub versions type it as optional).
    scanned = Path(info.cache_dir) if info.cache_dir is not None else cache_dir
    for path, (repo_type, repo_id) in sorted(_repo_folders(scanned).items()):
        if path not in good:
            files, size = tree_size(path)
            reason = next((w for w in warnings if str(path) in w), "not a complete cached repo")
            broken.append(BrokenRepo(repo_id, repo_type, path, size, files, reason))
    size = info.size_on_disk + sum(b.size_bytes for b in broken) + sum(v for k, v in incomplete.items() if k in good)
    return CacheScan(cache_dir, repos, tuple(broken), warnings, size,
                     sum(f.size_on_disk for f in info.incomplete_files))


def _scan_info(cache_dir: Path) -> HFCacheInfo | None:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        return scan_cache_dir(cache_dir)
    except CacheNotFound:
        return None
    except (ValueError, OSError) as exc:  # the cache path is a file, or a folder we may not read
        raise OperationFailed(f"cannot read the model cache {cache_dir}: {exc}") from exc


def _cached_repo(repo: CachedRepoInfo, incomplete_bytes: int) -> CachedRepo:
    index = next((Path(f.file_path) for rev in repo.revisions for f in rev.files
                  if f.file_name == "model_index.json" and f.file_path.parent == rev.snapshot_path), None)
    return CachedRepo(
        repo_id=repo.repo_id, repo_type=repo.repo_type, path=Path(repo.repo_path), size_bytes=repo.size_on_disk,
        files=repo.nb_files, revisions=tuple(sorted(r.commit_hash for r in repo.revisions)),
        refs=tuple(sorted(ref for r in repo.revisions for ref in r.refs)), last_accessed=repo.last_accessed,
        last_modified=repo.last_modified, incomplete_bytes=incomplete_bytes, model_index=index,
    )


def _repo_folders(cache_dir: Path) -> dict[Path, tuple[str, str]]:
    """Repo folders in the cache (``models--org--name``) -> (repo_type, repo_id)."""
    out: dict[Path, tuple[str, str]] = {}
    try:
        entries = list(os.scandir(cache_dir))
    except OSError:
        return out
    for entry in entries:
        prefix, sep, rest = entry.name.partition("--")
        if sep and prefix in _REPO_PREFIXES and entry.is_dir(follow_symlinks=False):
            out[Path(entry.path)] = (_REPO_PREFIXES[prefix], rest.replace("--", "/"))
    return out


def cached_pipelines(cache_dir: Path | None = None) -> tuple[list[CachedRepo], list[str]]:
    """Diffusers pipelines in the cache (model repos with a model_index.json), most recently used first,
    plus the scan's warnings (broken or partial repos, or why the cache could not be read)."""
    try:
        scan = scan_cache(cache_dir)
    except OperationFailed as exc:
        return [], [str(exc)]
    found = [r for r in scan.repos if r.repo_type == "model" and r.model_index is not None]
    found.sort(key=lambda r: -r.last_accessed)
    return found, list(scan.warnings)


def delete_revisions(cache_dir: Path, revisions: list[str]) -> None:
    """Delete these revisions (commit hashes) with huggingface_hub, which knows which blobs they share."""
    info = _scan_info(cache_dir)
    if info is not None and revisions:
        info.delete_revisions(*revisions).execute()


# -- downloads -------------------------------------------------------------------------------------

_WEIGHT_EXT = (".safetensors", ".bin", ".ckpt", ".pth", ".pt", ".msgpack", ".onnx", ".h5", ".gguf")
_VARIANT = re.compile(r"\.(fp16|bf16|fp32|non_ema|ema|int8|fp8)\.")
_CONFIGS = ("config.json", "scheduler_config.json", "tokenizer_config.json", "preprocessor_config.json")


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


def estimate_download(files: Mapping[str, int]) -> int:
    """Bytes a pipeline download fetches, from the repo's ``{path: size}``, without fetching anything.

    The component folders are guessed (top-level folders with a config file: model_index.json would
    name them, but reading it writes to the cache) and the files chosen as ``plan_download`` chooses
    them (``select_pipeline_files``). Original checkpoints in other folders, as zeroscope ships, are not
    counted.
    """
    components = sorted({path.split("/", 1)[0] for path in files
                         if path.count("/") == 1 and path.split("/", 1)[1] in _CONFIGS})
    return sum(size for _name, size in select_pipeline_files(list(files.items()), components))


def download_size(repo_id: str, timeout: float = 10.0) -> tuple[int | None, str]:
    """(bytes, text) for the popup's model info line; (None, why) when offline or the Hub is unreachable."""
    from huggingface_hub import HfApi

    if hf_offline():
        return None, "not downloaded yet; download size unknown (offline)"
    try:
        info = HfApi().model_info(repo_id, files_metadata=True, timeout=timeout)
    except Exception as exc:  # any network/HTTP error means "we could not find out"
        name = type(exc).__name__
        if "NotFound" in name:
            return None, f"{repo_id} is not on the Hugging Face Hub"
        log.info("model_info(%s) failed: %s", repo_id, exc)
        return None, "not downloaded yet; download size unknown (Hub not reachable)"
    size = estimate_download({s.rfilename: s.size or 0 for s in info.siblings or []})
    return size, f"not downloaded yet: about {human_size(size)} to download"


def space_needed(download_bytes: int) -> int:
    """Free bytes a download of this size needs on the cache's volume: itself plus a margin."""
    return download_bytes + max(DOWNLOAD_MARGIN_MIN, int(download_bytes * DOWNLOAD_MARGIN))


def check_download_space(plan: DownloadPlan, *, cache_dir: Path | None = None) -> None:
    if plan.missing_bytes == 0:
        return
    cache = cache_dir or hf_cache_dir()
    need = space_needed(plan.missing_bytes)
    free = free_bytes(cache)
    if free is not None and free < need:
        raise OperationFailed(
            f"not enough disk space to download {plan.repo_id}: it needs {human_size(need)} "
            f"({human_size(plan.missing_bytes)} plus margin) in {cache}, {human_size(free)} free"
        )


def pull_model(plan: DownloadPlan, *, cache_dir: Path | None = None,
               tqdm_class: type[tqdm[Any]] | None = None) -> Path:
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
