"""``vidtray models list [--json]`` and ``vidtray models pull REPO_ID``: the Hugging Face cache, read
through huggingface_hub (never by guessing paths), plus a short list of models known to work."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidtray.errors import UserError

if TYPE_CHECKING:
    from vidtray.cli import Context, Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser("models", help="list cached and known-good models, or download one")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ls = msub.add_parser("list", help="models in the Hugging Face cache, and known-good ones")
    ls.add_argument("--json", action="store_true", help="print one JSON document")
    ls.set_defaults(handler=_list)
    pull = msub.add_parser("pull", help="download a model into the Hugging Face cache (checks disk first)")
    pull.add_argument("repo_id", metavar="REPO_ID", help="e.g. cerspense/zeroscope_v2_576w")
    pull.add_argument("--json", action="store_true", help="print one JSON document when done")
    pull.set_defaults(handler=_pull)


def cached_models(cache_dir: Path, last_used: dict[str, float] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Model repos in the hub cache (size, revisions, pipeline class, when vidtray last used it) and the
    scan's warnings."""
    from vidtray.services.hub import scan_cache

    scan = scan_cache(cache_dir)
    used = last_used or {}
    out = [{"repo_id": r.repo_id, "size_bytes": r.size_bytes, "files": r.files, "revisions": list(r.revisions),
            "refs": list(r.refs), "last_modified": r.last_modified, "pipeline": r.pipeline(), "path": str(r.path),
            "last_used": used.get(r.repo_id), "frees_bytes": r.frees_bytes, "incomplete_bytes": r.incomplete_bytes}
           for r in sorted(scan.repos, key=lambda r: r.repo_id.lower()) if r.repo_type == "model"]
    return out, list(scan.warnings)


def _list(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.paths import hf_cache_dir
    from vidtray.services.fsutil import human_size
    from vidtray.services.generation import KNOWN_MODELS
    from vidtray.services.modeluse import read_use

    cache = hf_cache_dir()
    cached, warnings = cached_models(cache, read_use(ctx.cfg.paths.model_use_file))
    have = {m["repo_id"] for m in cached}
    known = [{"repo_id": k.repo_id, "pipeline": k.pipeline, "download": k.download,
              "gpu_memory": k.gpu_memory, "licence": k.licence, "note": k.note, "cached": k.repo_id in have}
             for k in KNOWN_MODELS]
    if args.json:
        ctx.print_json({"cache_dir": str(cache), "cached": cached, "warnings": warnings, "known": known,
                        "default": ctx.cfg.model})
        return 0
    print(f"Cached models ({cache}):")
    if not cached:
        print("  (none)")
    for m in cached:
        pipe = m["pipeline"] or "not a diffusers pipeline"
        print(f"  {m['repo_id']:<44} {human_size(m['size_bytes']):>9}  {pipe}")
    for w in warnings:
        print(f"  warning: {w}")
    print("\nKnown-good text-to-video models (sizes approximate):")
    for k in known:
        mark = "cached" if k["cached"] else ""
        print(f"  {k['repo_id']:<44} download {k['download']:<8} GPU {k['gpu_memory']}")
        print(f"  {'':<44} licence {k['licence']}" + (f" ({k['note']})" if k["note"] else "") +
              (f"  [{mark}]" if mark else ""))
    print(f"\nDefault model: {ctx.cfg.model}")
    return 0


def _pull(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.paths import hf_cache_dir
    from vidtray.services import hub
    from vidtray.services.fsutil import human_size, plural

    repo_id = args.repo_id.strip()
    if hub.looks_like_path(repo_id):
        raise UserError(f"{repo_id} is a folder: models pull takes a Hugging Face repo id (owner/name)")
    if not hub.is_repo_id(repo_id):
        raise UserError(f"{repo_id!r} is not a Hugging Face repo id (owner/name)")
    if hub.hf_offline():
        raise UserError(f"cannot download {repo_id}: HF_HUB_OFFLINE is set (unset it to allow downloads)")
    cache = hf_cache_dir()
    plan = hub.plan_download(repo_id, cache_dir=cache)
    hub.check_download_space(plan, cache_dir=cache)
    tty = sys.stderr.isatty()
    if not args.json:
        print(f"{repo_id} @ {plan.revision[:12]}: {plural(len(plan.files), 'file')}, {human_size(plan.total_bytes)}; "
              f"{human_size(plan.missing_bytes)} to download into {cache}", file=sys.stderr)
    tqdm_class = None
    if not tty:
        from tqdm.auto import tqdm

        class _Silent(tqdm):  # type: ignore[type-arg]  # generic in its stubs only
            def __init__(self, *a: Any, **kw: Any) -> None:
                kw["disable"] = True
                super().__init__(*a, **kw)

        tqdm_class = _Silent
    folder = hub.pull_model(plan, cache_dir=cache, tqdm_class=tqdm_class)
    doc = {"repo_id": repo_id, "revision": plan.revision, "path": str(folder), "size_bytes": plan.total_bytes,
           "downloaded_bytes": plan.missing_bytes}
    if args.json:
        ctx.print_json(doc)
    else:
        print(folder)
    return 0
