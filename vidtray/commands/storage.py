"""``vidtray storage [--json]``: what uses space (videos, model cache, library) and how much is free."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vidtray.cli import Context, Subparsers
    from vidtray.config import Config
    from vidtray.services.storage import StorageReport


def register(sub: Subparsers) -> None:
    p = sub.add_parser("storage", help="show what uses space: videos, model cache, free disk")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(handler=run)


def build_report(cfg: Config) -> StorageReport:
    from vidtray.services import storage
    from vidtray.services.library import open_library

    models = storage.models_report()
    summary = open_library(cfg).summary()
    return storage.StorageReport(
        library=storage.LibraryReport(str(cfg.library_file), summary.items, summary.pinned, summary.scheduled,
                                      summary.missing),
        videos=storage.videos_report(cfg.videos_dir, cfg.partial_dir),
        models=models,
        disk=storage.disk_report({"videos": cfg.videos_dir, "models": Path(models.cache_dir)},
                                 cfg.min_free_gb, cfg.warn_free_gb),
    )


def run(args: argparse.Namespace, ctx: Context) -> int:
    report = build_report(ctx.cfg)
    if args.json:
        ctx.print_json(report.as_dict())
    else:
        print(render(report))
    return 0


def render(report: StorageReport) -> str:
    from vidtray.services.fsutil import gib, plural
    from vidtray.services.fsutil import human_size as hs

    v, m, d, lib = report.videos, report.models, report.disk, report.library
    lines = [f"Videos   {v.dir}",
             f"  {plural(v.count, 'video')}, {hs(v.size_bytes)}"
             + (f" (oldest {(v.oldest or '')[:10]}, newest {(v.newest or '')[:10]})" if v.count else ""),
             f"  library {lib.path}: {plural(lib.items, 'item')}, {lib.pinned} pinned, "
             f"{lib.scheduled} scheduled, {lib.missing} missing"]
    if v.partial.count:
        lines.append(f"  in progress (.partial/): {plural(v.partial.count, 'file')}, {hs(v.partial.size_bytes)}")
    lines += ["", f"Model cache   {m.cache_dir}", f"  total {hs(m.size_bytes)}"]
    rows = [(r.repo_id if r.repo_type == "model" else f"{r.repo_type}/{r.repo_id}",
             hs(r.size_bytes), str(r.files), str(len(r.revisions)),
             (r.last_accessed or "")[:10], (r.last_modified or "")[:10]) for r in m.repos]
    rows += [(f"{b.repo_id} (BROKEN)", hs(b.size_bytes), str(b.files), "-", "", "") for b in m.broken]
    if rows:
        lines.append(_table(("REPO", "SIZE", "FILES", "REVS", "ACCESSED", "MODIFIED"), rows, indent=2))
    for b in m.broken:
        lines.append(f"  ! {b.repo_id}: {b.reason}")
    if m.incomplete_bytes:
        lines.append(f"  partial downloads (.incomplete): {hs(m.incomplete_bytes)}")
    lines += ["", f"Disk   (warn below {gib(d.warn_free_gb)}, generation refused below {gib(d.min_free_gb)})"]
    for vol in d.volumes:
        free = "unknown" if vol.free_bytes is None else \
            f"{hs(vol.free_bytes)} free of {hs(vol.total_bytes or 0)}"
        flag = {"ok": "", "warn": "  LOW: below warn_free_gb", "low": "  TOO LOW: below min_free_gb"}.get(
            vol.status, "  (unknown)")
        lines.append(f"  {' + '.join(vol.roles):<15} {free}{flag}   {vol.path}")
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], indent: int = 0) -> str:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    pad = " " * indent
    return "\n".join(pad + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in (header, *rows))
