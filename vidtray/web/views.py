"""How the page words and links things: item references in URLs, sizes, lengths and dates, the recipe as
rows, jobs as rows. Plain functions (the templates call them as filters); no web stack imported."""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from vidtray.services.fsutil import human_size
from vidtray.web.gallery import Row, Snapshot

_PLAIN_ID = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def ref(item_id: str) -> str:
    """An item id as one URL path segment: itself when it is plain (vidtray's ids, UUIDs), else ``~`` and
    its base64url (another app's id may hold ``/``, ``?`` or anything)."""
    if _PLAIN_ID.fullmatch(item_id) and item_id not in (".", ".."):
        return item_id
    raw = item_id.encode("utf-8", "surrogatepass")
    return "~" + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def unref(value: str) -> str:
    """The id ``ref`` made ``value`` from (a value that is not one decodes to an id no item has)."""
    if not value.startswith("~"):
        return value
    try:
        raw = base64.b64decode(value[1:] + "=" * (-len(value[1:]) % 4), altchars=b"-_", validate=True)
        return raw.decode("utf-8", "surrogatepass")
    except (binascii.Error, ValueError):
        return "\0"


def size(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return human_size(value)
    return "?"


def duration(value: object) -> str:
    """3.0 s under a minute, else m:ss (h:mm:ss)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        return "?"
    if value < 60:
        return f"{value:.1f} s"
    total = int(round(value))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def date(value: datetime | None, now: datetime | None = None) -> str:
    """``Tue 14 May, 14:03`` this year, ``Tue 14 May 2024`` before (the weekday helps find "the one from
    Tuesday"); local time."""
    if value is None:
        return "?"
    now = now or datetime.now().astimezone()
    day = f"{value:%a} {value.day} {value:%b}"
    return f"{day}, {value:%H:%M}" if value.year == now.year else f"{day} {value.year}"


def iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(timespec="seconds")


def local_input(value: object) -> str:
    """An ISO-8601 date-time as a ``datetime-local`` input's value (local time), or ""."""
    if not isinstance(value, str) or not value.strip():
        return ""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return ""
    if when.tzinfo is not None:
        when = when.astimezone()
    return when.strftime("%Y-%m-%dT%H:%M")


def _shown(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def recipe_rows(row: Row, recipe: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The recipe as (label, text) rows in reading order; without a recipe, what the library item records."""
    src: Mapping[str, Any] = recipe if recipe is not None else row.item
    rows: list[tuple[str, str]] = []

    def add(label: str, *keys: str, sep: str = " x ", unit: str = "") -> None:
        values = [src.get(k) for k in keys]
        if all(v is not None and v != "" for v in values):
            rows.append((label, sep.join(_shown(v) for v in values) + unit))

    add("Prompt", "prompt")
    add("Negative prompt", "negative_prompt")
    add("Seed", "seed")
    add("Steps", "steps")
    add("Frames", "frames")
    add("Size", "width", "height", unit=" px")
    add("FPS", "fps")
    add("Model", "model")
    add("Revision", "revision")
    add("Pipeline", "pipeline")
    add("Device", "device")
    remote = src.get("remote")
    if isinstance(remote, Mapping) and isinstance(remote.get("server"), str):
        where = ", ".join(str(remote[k]) for k in ("device_name", "node") if remote.get(k))
        slot = f"slot {remote['index']}" if isinstance(remote.get("index"), int) else ""
        detail = "; ".join(x for x in (slot, where) if x)
        rows.append(("Made on", remote["server"] + (f" ({detail})" if detail else "")))
    add("Precision", "dtype")
    add("Made", "created")
    add("vidtray", "vidtray_version")
    timings = src.get("timings")
    if isinstance(timings, Mapping):
        text = ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.2f} s" for k, v in timings.items()
                         if isinstance(v, int | float) and not isinstance(v, bool))
        if text:
            rows.append(("Timings", text))
    return rows


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def job_row(job: Mapping[str, Any], snap: Snapshot) -> dict[str, Any]:
    """A queue job as the queue panel shows it, linked to its video once the library lists it."""
    request, progress, result = (_mapping(job.get(key)) for key in ("request", "progress", "result"))
    step, steps = progress.get("step"), progress.get("steps")
    item = None
    library_id = result.get("library_id")
    if isinstance(library_id, str):
        item = snap.by_id.get(library_id)
    if item is None and isinstance(result.get("path"), str):
        item = snap.at_path(result["path"])
    return {
        "id": str(job.get("id")), "state": str(job.get("state")), "prompt": str(request.get("prompt") or ""),
        "model": str(request.get("model") or ""),
        "step": step if isinstance(step, int) else None, "steps": steps if isinstance(steps, int) else None,
        "created": str(job.get("created") or ""), "finished": str(job.get("finished") or ""),
        "error": str(job.get("error") or ""), "cancelling": bool(job.get("cancel_requested")),
        "item": item,
    }
