"""The generation sidecar beside a video (``<stem>.json``: prompt, seed, model, ...), read for its library
item. A sidecar that is missing or unusable makes the video ``imported``, never an error."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vidtray.services.libitem import Fields

log = logging.getLogger("vidtray.library")

#: Sidecar keys an import copies onto the video's library item.
ITEM_KEYS = ("prompt", "model", "seed", "created")


def sidecar_path(video: Path) -> Path:
    return video.with_suffix(".json")


def read_sidecar(video: Path) -> dict[str, Any] | None:
    """The generation sidecar ``<stem>.json`` beside a video, or None if absent or unusable."""
    side = sidecar_path(video)
    try:
        raw = side.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as exc:
        log.warning("cannot read sidecar %s: %s", side, exc)
        return None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        log.warning("ignoring sidecar %s: not valid JSON (%s)", side, exc)
        return None
    if not isinstance(doc, dict):
        log.warning("ignoring sidecar %s: not a JSON object", side)
        return None
    return doc


def sidecar_fields(video: Path) -> Fields:
    """Item fields from the sidecar: prompt/model/seed/created and ``source: generated``; else imported."""
    doc = read_sidecar(video)
    if doc is None:
        return {"source": "imported"}
    out: Fields = {"source": "generated"}
    for key in ITEM_KEYS:
        if key in doc:
            out[key] = doc[key]
    return out
