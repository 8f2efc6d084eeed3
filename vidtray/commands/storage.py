"""``vidtray storage [--json]``: what uses space (videos, model cache, library, trash, budget) and how much is
free; ``vidtray storage plan [--budget GB] [--json]``: what would be freed, in order, to get under the budget."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vidtray.cli import Context, Subparsers
    from vidtray.config import Config
    from vidtray.services.storage import StorageReport


def budget_gb(text: str) -> float:
    """``--budget GB``: a number of GiB above 0; anything else is a usage error naming the option."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of GiB above 0, got {text!r}")
    return value


def register(sub: Subparsers) -> None:
    p = sub.add_parser("storage", help="show what uses space: videos, model cache, trash, budget, free disk")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(handler=run)
    ssub = p.add_subparsers(dest="storage_command", metavar="ACTION")
    plan = ssub.add_parser("plan", help="what would be freed, in order, to get under the storage budget")
    plan.add_argument("--budget", metavar="GB", type=budget_gb, help="this budget instead of storage_budget_gb")
    plan.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    plan.set_defaults(handler=run_plan)


def build_report(cfg: Config) -> StorageReport:
    from vidtray.services import modeluse, storage, trash
    from vidtray.services.fsutil import tree_size
    from vidtray.services.library import open_library

    models = storage.models_report(last_used=modeluse.read_use(cfg.paths.model_use_file))
    summary = open_library(cfg).summary()
    videos = storage.videos_report(cfg.videos_dir, cfg.partial_dir)
    return storage.StorageReport(
        library=storage.LibraryReport(str(cfg.library_file), summary.items, summary.pinned, summary.scheduled,
                                      summary.missing),
        videos=videos,
        models=models,
        disk=storage.disk_report({"videos": cfg.videos_dir, "models": Path(models.cache_dir)},
                                 cfg.min_free_gb, cfg.warn_free_gb),
        trash=trash.report(cfg.paths.trash_record_file),
        budget=storage.budget_report(cfg.storage_budget_gb, videos, tree_size(cfg.thumbnails_dir)[1], models),
        latents=storage.latents_report(cfg.partial_dir, lambda: _job_states(cfg), time.time()),
    )


def _job_states(cfg: Config) -> dict[str, str] | None:
    """Each queued job's state, to say whose latents are kept (None: the queue cannot be read). A report
    creates no queue: without one every job is gone."""
    from vidtray.errors import VidtrayError
    from vidtray.services.queue import JobQueue

    if not cfg.queue_dir.is_dir():
        return {}
    try:
        with JobQueue(cfg.queue_dir) as queue:
            return {job.id: job.state for job in queue.list()}
    except VidtrayError:
        return None


def run(args: argparse.Namespace, ctx: Context) -> int:
    report = build_report(ctx.cfg)
    if args.json:
        ctx.print_json(report.as_dict())
    else:
        print(render(report))
    return 0


def run_plan(args: argparse.Namespace, ctx: Context) -> int:
    from vidtray.services import budget
    from vidtray.services.library import open_library

    cfg = ctx.cfg
    plan = budget.plan(cfg, open_library(cfg), budget_bytes=budget.budget_bytes_from(cfg, args.budget),
                       now=time.time())
    if args.json:
        ctx.print_json(plan.as_dict())
    else:
        print("\n".join(budget.render_plan(plan)))
    return 0


def render(report: StorageReport) -> str:

    return "\n".join([*_videos(report), "", *_models(report), *_trash_and_budget(report), "", *_disk(report)])


def _videos(report: StorageReport) -> list[str]:
    from vidtray.services.fsutil import human_size as hs
    from vidtray.services.fsutil import plural

    v, lib = report.videos, report.library
    lines = [f"Videos   {v.dir}",
             f"  {plural(v.count, 'video')}, {hs(v.size_bytes)}"
             + (f" (oldest {(v.oldest or '')[:10]}, newest {(v.newest or '')[:10]})" if v.count else ""),
             f"  library {lib.path}: {plural(lib.items, 'item')}, {lib.pinned} pinned, "
             f"{lib.scheduled} scheduled, {lib.missing} missing"]
    if v.partial.count:
        lines.append(f"  in progress (.partial/): {plural(v.partial.count, 'file')}, {hs(v.partial.size_bytes)}")
    lat = report.latents
    if lat is not None and lat.count:
        from vidtray.services.estimate import duration

        lines.append(f"  latents kept until their videos land: {plural(lat.count, 'job')}, {hs(lat.size_bytes)}, "
                     f"oldest {duration(lat.oldest_age_s or 0)} old")
        for f in lat.files:
            why = (f"job {f.state}" if f.state in ("queued", "running", "failed") else
                   f"no waiting job: removed once {duration(lat.orphan_age_s)} old")
            lines.append(f"    {f.job}: {hs(f.size_bytes)}, {duration(f.age_s)} old ({why})")
    return lines


def _models(report: StorageReport) -> list[str]:
    from vidtray.services.fsutil import human_size as hs

    m = report.models
    lines = [f"Model cache   {m.cache_dir}", f"  total {hs(m.size_bytes)}"
             + (f" (of which shared blobs {hs(m.shared_store_bytes)})" if m.shared_store_bytes else "")]
    rows = [(r.repo_id if r.repo_type == "model" else f"{r.repo_type}/{r.repo_id}",
             hs(r.size_bytes), hs(r.frees_bytes), str(r.files), str(len(r.revisions)),
             (r.last_used or "never" if r.repo_type == "model" else "")[:10], (r.last_modified or "")[:10])
            for r in m.repos]
    rows += [(f"{b.repo_id} (BROKEN)", hs(b.size_bytes), hs(b.size_bytes), str(b.files), "-", "",
              (b.modified or "")[:10]) for b in m.broken]
    if rows:
        lines.append(_table(("REPO", "SIZE", "FREES", "FILES", "REVS", "LAST USED", "MODIFIED"), rows, indent=2))
    for b in m.broken:
        lines.append(f"  ! {b.repo_id}: {b.reason}")
    if m.incomplete_bytes:
        lines.append(f"  partial downloads (.incomplete): {hs(m.incomplete_bytes)}")
        for r in m.repos:
            for p in r.partial_downloads:
                lines.append(f"    {r.repo_id}: {hs(p.size_bytes)}, last written {(p.modified or '')[:10]}")
    if m.unreferenced_shared_bytes:
        lines.append(f"  shared blobs no repo uses: {hs(m.unreferenced_shared_bytes)} (`hf cache prune` removes them)")
    lines.append(f"  xet/ (hf_xet's cache, {m.xet_dir}): {hs(m.xet_bytes)}")
    return lines


def _trash_and_budget(report: StorageReport) -> list[str]:
    from vidtray.services.fsutil import human_size as hs
    from vidtray.services.fsutil import plural

    lines = []
    t, b = report.trash, report.budget
    if t is not None:
        own = (f"{plural(t.files, 'file')}, {hs(t.size_bytes)}, moved there by vidtray: still on the disk, it "
               "frees when the trash is emptied" if t.files else "nothing vidtray moved there")
        lines += ["", f"Trash   {own if t.available else t.note}"]
    if b is not None:
        parts = (f"videos {hs(b.videos_bytes)}, thumbnails {hs(b.thumbnails_bytes)}, model cache "
                 f"{hs(b.cache_bytes)}, xet/ {hs(b.xet_bytes)}")
        head = (f"{hs(b.used_bytes)} of {hs(b.budget_bytes)}" + (f", {hs(b.over_bytes)} OVER" if b.over_bytes else "")
                if b.budget_bytes else f"{hs(b.used_bytes)} (no budget: storage_budget_gb = 0)")
        lines += ["", f"Budget   {head}", f"  {parts}"]
        if b.over_bytes:
            lines.append("  `vidtray storage plan` shows what would go, `vidtray clean --to-budget` frees it")
    return lines


def _disk(report: StorageReport) -> list[str]:
    from vidtray.services.fsutil import gib
    from vidtray.services.fsutil import human_size as hs

    d = report.disk
    lines = [f"Disk   (warn below {gib(d.warn_free_gb)}, generation refused below {gib(d.min_free_gb)})"]
    for vol in d.volumes:
        free = "unknown" if vol.free_bytes is None else \
            f"{hs(vol.free_bytes)} free of {hs(vol.total_bytes or 0)}"
        flag = {"ok": "", "warn": "  LOW: below warn_free_gb", "low": "  TOO LOW: below min_free_gb"}.get(
            vol.status, "  (unknown)")
        lines.append(f"  {' + '.join(vol.roles):<15} {free}{flag}   {vol.path}")
    return lines


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], indent: int = 0) -> str:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    pad = " " * indent
    return "\n".join(pad + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in (header, *rows))
