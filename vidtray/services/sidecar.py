"""The sidecar beside a generated video: its name (the one place that spells it), reading it, and which files
beside a video are vidtray's.

vidtray writes ``<stem>.vidtray.json`` (the recipe, plus the memory plan and timings). Before that name it
wrote ``<stem>.json``: such a file is read, and goes with its video, only when it is vidtray's own
(recognised by the ``vidtray_version`` key every vidtray sidecar has held). Another tool's ``clip.json``
beside ``clip.mp4`` neither makes the video a generated one nor is deleted with it. A sidecar that is
missing or unusable makes the video ``imported``, never an error.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vidtray.services.fsutil import VIDEO_EXTENSIONS
from vidtray.services.libitem import Fields

log = logging.getLogger("vidtray.library")

SUFFIX = ".vidtray.json"
LEGACY_SUFFIX = ".json"
#: The key that marks a JSON file as vidtray's sidecar (every sidecar vidtray ever wrote has it).
MARKER = "vidtray_version"
#: Sidecar keys an import copies onto the video's library item.
ITEM_KEYS = ("prompt", "model", "seed", "created")
#: A sidecar is a few KiB (two prompts of at most 4,000 characters); a bigger ``<stem>.json`` is someone
#: else's file, and is not read whole to find out.
MAX_BYTES = 1024 * 1024


def sidecar_path(video: Path) -> Path:
    """Where vidtray writes the sidecar of ``video``: ``<stem>.vidtray.json``."""
    return video.with_name(video.stem + SUFFIX)


def legacy_sidecar_path(video: Path) -> Path:
    """The name older vidtray versions used (``<stem>.json``), read only when the file is vidtray's."""
    return video.with_suffix(LEGACY_SUFFIX)


def is_vidtray_doc(doc: object) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get(MARKER), str)


def read_sidecar(video: Path) -> dict[str, Any] | None:
    """The sidecar of ``video`` (``<stem>.vidtray.json``, else an old ``<stem>.json`` that is vidtray's),
    or None if there is none that vidtray can use."""
    doc = _read_json(sidecar_path(video), ours=True)
    if doc is not None:
        return doc
    legacy = _read_json(legacy_sidecar_path(video), ours=False)
    return legacy if is_vidtray_doc(legacy) else None


def owned_sidecars(video: Path) -> list[Path]:
    """The sidecar files beside ``video`` that vidtray wrote, so go with it (clean, prune): the
    ``.vidtray.json`` one if it is there, and an old ``<stem>.json`` only if it is vidtray's."""
    out = []
    new = sidecar_path(video)
    if new.is_file():
        out.append(new)
    legacy = legacy_sidecar_path(video)
    if legacy != video and is_vidtray_doc(_read_json(legacy, ours=False)):
        out.append(legacy)
    return out


def videos_of_sidecar(path: Path) -> list[Path]:
    """The videos a file named like a sidecar may belong to (``x.vidtray.json`` or ``x.json`` ->
    ``x.mp4``, ``x.webm``, ...), for a watcher that sees the sidecar arrive after its video. Whether an
    old-style ``x.json`` is vidtray's is for ``read_sidecar`` to say."""
    name = path.name
    stem = name[:-len(SUFFIX)] if name.lower().endswith(SUFFIX) else path.stem
    return [path.with_name(stem + ext) for ext in VIDEO_EXTENSIONS]


def _read_json(path: Path, *, ours: bool) -> dict[str, Any] | None:
    # Problems with another program's file (``ours`` False) are its business: logged at debug level only.
    level = logging.WARNING if ours else logging.DEBUG
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as exc:
        log.log(level, "cannot read sidecar %s: %s", path, exc)
        return None
    if len(raw) > MAX_BYTES:
        log.log(level, "ignoring %s: larger than a sidecar (%d bytes or more)", path, MAX_BYTES)
        return None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        log.log(level, "ignoring sidecar %s: not valid JSON (%s)", path, exc)
        return None
    if not isinstance(doc, dict):
        log.log(level, "ignoring sidecar %s: not a JSON object", path)
        return None
    return doc


def fields_of(doc: dict[str, Any]) -> Fields:
    """Item fields of a generated video from its recipe or sidecar: prompt/model/seed/created (the ones
    of a usable type) and ``source: generated``."""
    out: Fields = {"source": "generated"}
    for key in ITEM_KEYS:
        value = doc.get(key)
        if key in doc and _usable(key, value):
            out[key] = value
    return out


def _usable(key: str, value: object) -> bool:
    if key == "seed":
        return value is None or (isinstance(value, int) and not isinstance(value, bool))
    return value is None or isinstance(value, str)


def sidecar_fields(video: Path) -> Fields:
    """Item fields from the sidecar: prompt/model/seed/created and ``source: generated``; else imported."""
    doc = read_sidecar(video)
    if doc is None:
        return {"source": "imported"}
    return fields_of(doc)
