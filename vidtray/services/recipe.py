"""The recipe of a library video: what made it (prompt, negative prompt, seed, steps, frames, size, fps,
model and revision, device, timings), and a request that makes it again.

The one reader of recipes: the library page's item view and its "Generate again" / "Vary" call
``recipe_details`` and ``recipe_for`` and nothing else. Today a recipe is the generation sidecar the
worker writes beside the video (``<stem>.json``, read by ``library.read_sidecar``); a sidecar that is
missing, unreadable or not a generation's (no prompt) means no recipe. Where recipes are kept may grow
(a renamed sidecar, the recipe inside the mp4): only this module changes then.

Cheap to import (no torch, no huggingface_hub).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vidtray import params
from vidtray.errors import UserError
from vidtray.services.generation import Request
from vidtray.services.sidecar import read_sidecar

log = logging.getLogger("vidtray.recipe")

#: What a recipe may record besides the request's own fields, in the order a person reads them.
DETAIL_KEYS = ("revision", "pipeline", "device", "remote", "dtype", "created", "vidtray_version", "timings",
               "memory")
#: The request fields "Generate again" takes from a recipe: all but ``device`` (where it runs is this
#: machine's choice, from the config, not the recipe's).
REQUEST_KEYS = tuple(name for name in params.FIELDS if name != "device")


def _video(item_or_path: Mapping[str, Any] | Path | str) -> Path | None:
    raw = item_or_path.get("path") if isinstance(item_or_path, Mapping) else item_or_path
    if isinstance(raw, Path):
        return raw
    if isinstance(raw, str) and raw and "\0" not in raw and os.path.isabs(raw):
        return Path(raw)
    return None


def recipe_details(item_or_path: Mapping[str, Any] | Path | str) -> dict[str, Any] | None:
    """Everything the recipe of this video (a library item, or the video's path) records, or None when
    it has none. The values are as recorded (another program may have written the file)."""
    video = _video(item_or_path)
    if video is None:
        return None
    doc = read_sidecar(video)
    if doc is None:
        return None
    prompt = doc.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return None  # a JSON file beside the video that is not a generation's
    return doc


def recipe_for(item_or_path: Mapping[str, Any] | Path | str) -> Request | None:
    """A request that makes this video again (same seed, same everything the recipe records; device from
    the config), or None when it has no recipe, or one whose values vidtray cannot use (logged)."""
    doc = recipe_details(item_or_path)
    if doc is None:
        return None
    values = {key: doc[key] for key in REQUEST_KEYS if doc.get(key) is not None}
    try:
        return Request.from_dict(values, params.Source.named(f"the recipe of {_video(item_or_path)}"))
    except UserError as exc:
        log.warning("recipe not usable: %s", exc)
        return None
