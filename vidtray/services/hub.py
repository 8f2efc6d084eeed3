"""The Hugging Face hub and its cache: the one owner of what vidtray knows about them.

- Naming a model: a local diffusers folder or a repo id (``looks_like_path``, ``is_repo_id``,
  ``check_repo_id``), found with ``resolve_model`` / ``cached_snapshot``; ``hf_offline``.
- The cache scan (``scan_cache``): complete repos, broken ones, partial downloads and the shared blob store,
  read with ``os.scandir`` as du would (huggingface_hub's layout, judged by its rules). The storage report,
  the budget plan, ``vidtray models list``, the popup's model list (``cached_pipelines``) and model cleanup
  are views of it; every delete goes through huggingface_hub (``delete_revisions``).
- Downloads: what a pipeline download fetches (``select_pipeline_files``, ``plan_download``,
  ``estimate_download``, ``download_size``), the room it needs (``check_download_space``), and the
  download itself (``pull_model``).

huggingface_hub is imported only inside functions, so the CLI stays light and the tray never imports it.
The cache folder is ``vidtray.paths.hf_cache_dir()``, passed to every huggingface_hub call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidtray.errors import OperationFailed, UserError
from vidtray.paths import free_bytes, hf_cache_dir
from vidtray.services.fsutil import human_size, tree_stats

if TYPE_CHECKING:
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
# One pass of os.scandir over the cache, as du walks it (no huggingface_hub import: the storage report, the
# popup and `models list` stay light), reading the layout huggingface_hub writes and judging it by the rules
# of its own ``scan_cache_dir``: a repo folder it would call corrupted is a BrokenRepo here too. Every delete
# still goes through huggingface_hub (``delete_revisions``), which scans again for itself.

_REPO_PREFIXES = {"models": "model", "datasets": "dataset", "spaces": "space"}
#: What huggingface_hub's scan passes over inside a repo folder.
_IGNORED = frozenset({".DS_Store"})
#: huggingface_hub's cache-wide shared blob store (``huggingface_hub.utils._shared_blobs``): one payload per
#: Xet file at ``<cache>/blobs/<2 hex>/<xet hash>`` with a ``<hash>.refs`` manifest; each repo's
#: ``blobs/<etag>`` is a symlink to it. The store counts only when its marker file says so.
_STORE_DIR, _STORE_MARKER, _STORE_VERSION = "blobs", ".huggingface-shared-blobs", "1\n"
_XET_HASH = re.compile(r"[0-9a-f]{64}")
_INCOMPLETE = ".incomplete"


@dataclass(frozen=True)
class PartialDownload:
    """An interrupted download, ``<repo>/blobs/<etag>.incomplete``: a pull resumes it."""

    path: Path
    size_bytes: int
    mtime_ns: int
    dev: int
    ino: int

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9

    @classmethod
    def of(cls, path: str, st: os.stat_result) -> PartialDownload:
        return cls(Path(path), st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)


@dataclass(frozen=True)
class SharedBlob:
    """A payload of the shared blob store and the repo folders whose ``blobs/`` link to it. huggingface_hub
    removes it when it deletes the last repo that links to it, and only through its manifest."""

    path: Path
    size_bytes: int
    repos: tuple[Path, ...]
    manifest: bool


@dataclass(frozen=True)
class CachedRepo:
    """A complete repo in the cache (one huggingface_hub can read and delete)."""

    repo_id: str
    repo_type: str  # model | dataset | space
    path: Path
    size_bytes: int  # its files (shared ones included), without its partial downloads
    files: int
    revisions: tuple[str, ...]  # commit hashes, sorted
    refs: tuple[str, ...]  # sorted
    last_accessed: float
    last_modified: float
    incomplete_bytes: int  # its partial downloads
    model_index: Path | None  # a revision's top-level model_index.json: the repo is a diffusers pipeline
    own_bytes: int = 0  # what only this folder holds: its plain blobs and its partial downloads
    shared_bytes: int = 0  # of size_bytes, what lies in the shared blob store
    frees_bytes: int = 0  # what deleting this repo alone frees (own, and shared blobs no other repo links to)
    partials: tuple[PartialDownload, ...] = ()
    shared_blobs: tuple[Path, ...] = ()  # the shared payloads its blobs link to

    def pipeline(self) -> str | None:
        """The diffusers pipeline class it holds, or None."""
        return None if self.model_index is None else pipeline_class(self.model_index)


@dataclass(frozen=True)
class BrokenRepo:
    """A repo folder huggingface_hub cannot read (a download interrupted before its first snapshot, a
    half-deleted or damaged layout): still shown with its size on disk, and still removable."""

    repo_id: str
    repo_type: str
    path: Path
    size_bytes: int
    files: int
    reason: str
    modified: float = 0.0  # the newest modification inside it (an interrupted download's age)
    partials: tuple[PartialDownload, ...] = ()
    shared_blobs: tuple[Path, ...] = ()

    @property
    def own_bytes(self) -> int:
        return self.size_bytes


@dataclass(frozen=True)
class CacheScan:
    cache_dir: Path
    repos: tuple[CachedRepo, ...] = ()  # by (repo_type, repo_id)
    broken: tuple[BrokenRepo, ...] = ()
    warnings: tuple[str, ...] = ()  # why each broken repo is broken
    size_bytes: int = 0  # everything on disk: repos, broken repos, partial downloads, the shared store
    incomplete_bytes: int = 0  # all partial downloads
    shared: tuple[SharedBlob, ...] = ()
    shared_store_bytes: int = 0  # the shared store's payloads (each counted once)

    def frees(self, repo_paths: Iterable[Path]) -> int:
        """What deleting these repo folders together frees: what each holds alone, and each shared payload
        that only they link to (huggingface_hub collects it with the last complete repo of them)."""
        chosen = set(repo_paths)
        complete = {r.path for r in self.repos} & chosen
        own = sum(r.own_bytes for r in self.folders() if r.path in chosen)
        return own + sum(b.size_bytes for b in self.shared
                         if b.manifest and b.repos and set(b.repos) <= chosen and complete & set(b.repos))

    def folders(self) -> list[CachedRepo | BrokenRepo]:
        """Every repo folder, complete or broken."""
        return [*self.repos, *self.broken]

    @property
    def unreferenced_shared_bytes(self) -> int:
        """Shared payloads no repo links to any more (``hf cache prune`` removes them)."""
        return sum(b.size_bytes for b in self.shared if not b.repos)


class _Broken(Exception):
    """Why huggingface_hub's scan would call a repo folder corrupted."""


class _Store:
    """The shared blob store as listed: payload path -> its lstat, and the hashes that have a manifest."""

    def __init__(self) -> None:
        self.payloads: dict[str, os.stat_result] = {}
        self.manifests: set[str] = set()

    @classmethod
    def read(cls, root: str) -> _Store:
        store = cls()
        folder = os.path.join(root, _STORE_DIR)
        try:
            with open(os.path.join(folder, _STORE_MARKER), encoding="utf-8") as fh:
                if fh.read() != _STORE_VERSION:
                    return store
            prefixes = [e for e in os.scandir(folder) if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
        except (OSError, UnicodeError):
            return store  # no store (or not one huggingface_hub would use)
        for prefix in prefixes:
            try:
                entries = list(os.scandir(prefix.path))
            except OSError as exc:
                log.warning("cannot list %s: %s", prefix.path, exc)
                continue
            for entry in entries:
                name = entry.name
                if name.endswith(".refs"):
                    store.manifests.add(name[:-5])
                elif _XET_HASH.fullmatch(name) and name.startswith(prefix.name) \
                        and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        store.payloads[entry.path] = entry.stat(follow_symlinks=False)
        return store


class _Blobs:
    """A repo's ``blobs/`` folder: plain blobs, links into the shared store, and partial downloads."""

    def __init__(self) -> None:
        self.plain: dict[str, os.stat_result] = {}
        self.linked: dict[str, str] = {}  # name -> the shared payload it links to (one that exists)
        self.partials: list[PartialDownload] = []

    @classmethod
    def read(cls, folder: str, store: _Store) -> _Blobs:
        blobs = cls()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return blobs
        except OSError as exc:
            raise _Broken(f"cannot read {folder}: {exc.strerror or exc}") from None
        for entry in entries:
            if entry.is_symlink():
                target = _link_target(entry.path)
                if target in store.payloads:
                    blobs.linked[entry.name] = target
            elif entry.is_file(follow_symlinks=False):
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.name.endswith(_INCOMPLETE):
                    blobs.partials.append(PartialDownload.of(entry.path, st))
                else:
                    blobs.plain[entry.name] = st
        return blobs


def _link_target(link: str) -> str | None:
    try:
        return os.path.normpath(os.path.join(os.path.dirname(link), os.readlink(link)))
    except OSError:
        return None


def _read_refs(folder: str) -> dict[str, set[str]]:
    """commit hash -> the refs naming it (``refs/main``, ``refs/refs/pr/1``)."""
    out: dict[str, set[str]] = {}
    if os.path.isfile(folder):
        raise _Broken(f"Refs directory cannot be a file: {folder}")
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise _Broken(f"cannot read {current}: {exc.strerror or exc}") from None
        for entry in entries:
            if entry.is_dir():
                stack.append(entry.path)
            elif entry.name not in _IGNORED:
                try:
                    with open(entry.path, encoding="utf-8") as fh:
                        commit = fh.read()
                except (OSError, UnicodeError) as exc:
                    raise _Broken(f"cannot read the ref {entry.path}: {exc}") from None
                name = os.path.relpath(entry.path, folder).replace(os.sep, "/")
                out.setdefault(commit, set()).add(name)
    return out


class _Snapshots:
    def __init__(self) -> None:
        self.revisions: list[str] = []
        self.model_index: Path | None = None
        self.files: dict[str, os.stat_result] = {}  # files a snapshot holds itself or links outside blobs/


def _read_snapshots(repo: str, blobs: _Blobs) -> _Snapshots:
    folder = os.path.join(repo, "snapshots")
    if not os.path.isdir(folder):
        raise _Broken(f"Snapshots dir doesn't exist in cached repo: {folder}")
    out = _Snapshots()
    blobs_dir = os.path.join(repo, "blobs")
    for rev in sorted(_list(folder), key=lambda e: e.name):
        if rev.name in _IGNORED:
            continue
        if not rev.is_dir():
            raise _Broken(f"Snapshots folder corrupted. Found a file: {rev.path}")
        out.revisions.append(rev.name)
        stack = [rev.path]
        while stack:
            for entry in _list(stack.pop()):
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                _snapshot_file(entry, blobs_dir, blobs, out)
                if entry.name == "model_index.json" and out.model_index is None \
                        and os.path.dirname(entry.path) == rev.path:
                    out.model_index = Path(entry.path)
    return out


def _snapshot_file(entry: os.DirEntry[str], blobs_dir: str, blobs: _Blobs, out: _Snapshots) -> None:
    """Check one file of a snapshot: its blob must be there (a link into ``blobs/`` is the usual case)."""
    if entry.is_symlink():
        target = _link_target(entry.path)
        if target is not None and os.path.dirname(target) == blobs_dir:
            name = os.path.basename(target)
            if name in blobs.plain or name in blobs.linked:
                return
            raise _Broken(f"Blob missing (broken symlink): {target}")
        path = target or entry.path
    else:
        path = entry.path
    try:
        out.files[path] = os.stat(path)
    except OSError:
        raise _Broken(f"Blob missing (broken symlink): {path}") from None


def _list(folder: str) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(folder))
    except OSError as exc:
        raise _Broken(f"cannot read {folder}: {exc.strerror or exc}") from None


def _cached_repo(path: str, kind: tuple[str, str], store: _Store) -> CachedRepo:
    """One complete repo folder, or _Broken saying why huggingface_hub would not read it."""
    blobs = _Blobs.read(os.path.join(path, "blobs"), store)
    refs = _read_refs(os.path.join(path, "refs"))
    snaps = _read_snapshots(path, blobs)
    dangling = {commit: names for commit, names in refs.items() if commit not in snaps.revisions}
    if dangling:
        raise _Broken(f"Reference(s) refer to missing commit hashes: {dangling} ({path}).")
    shared = [store.payloads[t] for t in blobs.linked.values()]
    stats = [*blobs.plain.values(), *shared, *snaps.files.values()]
    if stats:
        accessed, modified = max(s.st_atime for s in stats), max(s.st_mtime for s in stats)
    else:
        st = os.stat(path)
        accessed, modified = st.st_atime, st.st_mtime
    inside = path + os.sep
    incomplete = sum(p.size_bytes for p in blobs.partials)
    own = sum(s.st_size for s in blobs.plain.values()) + incomplete + \
        sum(s.st_size for p, s in snaps.files.items() if p.startswith(inside))
    return CachedRepo(
        repo_id=kind[1], repo_type=kind[0], path=Path(path), size_bytes=sum(s.st_size for s in stats),
        files=len(stats), revisions=tuple(snaps.revisions),
        refs=tuple(sorted(name for names in refs.values() for name in names)), last_accessed=accessed,
        last_modified=modified, incomplete_bytes=incomplete, model_index=snaps.model_index, own_bytes=own,
        shared_bytes=sum(s.st_size for s in shared), partials=tuple(sorted(blobs.partials, key=lambda p: p.path)),
        shared_blobs=tuple(sorted({Path(t) for t in blobs.linked.values()})),
    )


def _broken_repo(path: str, kind: tuple[str, str], reason: str, store: _Store) -> BrokenRepo:
    files, size, newest = tree_stats(Path(path))
    try:
        blobs = _Blobs.read(os.path.join(path, "blobs"), store)
    except _Broken:
        blobs = _Blobs()
    return BrokenRepo(kind[1], kind[0], Path(path), size, files, reason, newest,
                      tuple(sorted(blobs.partials, key=lambda p: p.path)),
                      tuple(sorted({Path(t) for t in blobs.linked.values()})))


def scan_cache(cache_dir: Path | None = None) -> CacheScan:
    """What the hub cache holds: complete repos, broken ones, partial downloads and the shared blob store.
    A cache that does not exist yet (or is a file) is empty; one that cannot be listed is OperationFailed.
    A repo folder that cannot be read is a broken repo, with the reason."""
    cache_dir = Path(cache_dir) if cache_dir is not None else hf_cache_dir()
    root = os.path.realpath(cache_dir)
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return CacheScan(cache_dir)
    except OSError as exc:
        raise OperationFailed(f"cannot read the model cache {cache_dir}: {exc.strerror or exc}") from exc
    store = _Store.read(root)
    repos: list[CachedRepo] = []
    broken: list[BrokenRepo] = []
    for path, kind in sorted(_repo_folders(entries).items(), key=lambda pk: (pk[1], pk[0])):
        try:
            repos.append(_cached_repo(path, kind, store))
        except (_Broken, OSError) as exc:
            broken.append(_broken_repo(path, kind, str(exc), store))
    folders: list[CachedRepo | BrokenRepo] = [*repos, *broken]
    shared = _shared(store, folders)
    alone = {b.repos[0]: 0 for b in shared}
    for b in shared:
        if b.manifest and len(b.repos) == 1:
            alone[b.repos[0]] += b.size_bytes
    repos = [dataclasses.replace(r, frees_bytes=r.own_bytes + alone.get(r.path, 0)) for r in repos]
    store_bytes = sum(b.size_bytes for b in shared)
    return CacheScan(
        cache_dir, tuple(repos), tuple(broken), tuple(b.reason for b in broken),
        size_bytes=sum(r.own_bytes for r in repos) + sum(b.size_bytes for b in broken) + store_bytes,
        incomplete_bytes=sum(p.size_bytes for r in folders for p in r.partials),
        shared=shared, shared_store_bytes=store_bytes)


def _shared(store: _Store, repos: Sequence[CachedRepo | BrokenRepo]) -> tuple[SharedBlob, ...]:
    linked: dict[Path, list[Path]] = {}
    for repo in repos:
        for blob in repo.shared_blobs:
            linked.setdefault(blob, []).append(repo.path)
    return tuple(SharedBlob(Path(p), st.st_size, tuple(sorted(linked.get(Path(p), []))),
                            os.path.basename(p) in store.manifests)
                 for p, st in sorted(store.payloads.items()))


def _repo_folders(entries: Iterable[os.DirEntry[str]]) -> dict[str, tuple[str, str]]:
    """Repo folders in the cache (``models--org--name``) -> (repo_type, repo_id)."""
    out: dict[str, tuple[str, str]] = {}
    for entry in entries:
        prefix, sep, rest = entry.name.partition("--")
        if sep and prefix in _REPO_PREFIXES and entry.is_dir(follow_symlinks=False):
            out[entry.path] = (_REPO_PREFIXES[prefix], rest.replace("--", "/"))
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
    """Delete these revisions (commit hashes) with huggingface_hub, which knows which blobs they share (and
    collects a shared payload with the last repo that links to it)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    if not revisions:
        return
    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return
    except (ValueError, OSError) as exc:
        raise OperationFailed(f"cannot read the model cache {cache_dir}: {exc}") from exc
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


def local_weights_bytes(folder: Path) -> int | None:
    """The bytes of the weights ``DiffusionPipeline.from_pretrained`` would load from a pipeline folder (a
    cached snapshot or a local folder), chosen as :func:`select_pipeline_files` chooses a download's; None
    when the folder names no components or holds no weights. Reads only model_index.json and file sizes."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict):
        return None
    components = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list)]
    files: list[tuple[str, int]] = []
    for component in components:
        try:
            entries = list(os.scandir(folder / component))
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith(_WEIGHT_EXT):
                with contextlib.suppress(OSError):
                    files.append((f"{component}/{entry.name}", entry.stat().st_size))  # through the snapshot's links
    weights = [s for n, s in select_pipeline_files(files, components) if n.endswith(_WEIGHT_EXT)]
    return sum(weights) or None


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
