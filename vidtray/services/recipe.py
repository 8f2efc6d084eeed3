"""A video's recipe: how it was made, in one versioned shape that travels inside the mp4 and in the sidecar.

The worker builds it (``build``) and writes it twice: as container metadata in the same ffmpeg pass as the
encode (``container_tags``: ``title`` = the start of the prompt, ``comment`` = the recipe as compact JSON;
ffprobe, exiftool and players read both), and as the sidecar ``<stem>.vidtray.json`` (the same keys, plus
the memory plan and timings). Version 1::

    {"vidtray_recipe": 1, "prompt": ..., "negative_prompt": ..., "seed": ..., "steps": ..., "frames": ...,
     "width": ..., "height": ..., "fps": ..., "guidance_scale": ..., "scheduler": ..., "model": ...,
     "revision": ..., "pipeline": ..., "device": ..., "dtype": ..., "torch_version": ...,
     "diffusers_version": ..., "vidtray_version": ..., "created": ...}

Reading it back (``read_recipe``): the sidecar first (a sidecar from before the recipe had a version holds
the same parameter keys), else the metadata of the file itself (one ffmpeg run; the watcher's batched
probe reads the same tags in its one run, see ``media``). From a recipe: the library item's fields on
import (``import_fields``), a generation request with overrides (``Recipe.request``: "generate again" and
"vary"), and what differs from this machine (``Recipe.differences``: other torch, diffusers or model
revision, so the frames may differ). ``load_from`` takes what a user types after ``--from`` (a library id
or prefix, or a path); ``recipe_for`` is the library page's "Generate again".
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidtray import params
from vidtray.errors import UserError
from vidtray.services import generation as gen
from vidtray.services.libitem import Fields, LibraryItem, is_video_item
from vidtray.services.sidecar import SUFFIX, fields_of, is_vidtray_doc, read_sidecar, sidecar_fields

if TYPE_CHECKING:
    from vidtray.config import Config

log = logging.getLogger("vidtray.recipe")

VERSION = 1
#: The version field: present in every recipe vidtray embeds, and in its sidecars.
VERSION_KEY = "vidtray_recipe"
#: The container tags: ``title`` (the prompt, shortened) and ``comment`` (the recipe as JSON). Both are
#: standard mp4 tags (the ``©nam`` and ``©cmt`` atoms), kept by remuxing and read by every tool.
TITLE_TAG = "title"
RECIPE_TAG = "comment"
#: The request fields a recipe carries (the device is this machine's choice, not the recipe's).
REQUEST_KEYS = ("prompt", "negative_prompt", "model", "frames", "steps", "height", "width", "fps", "seed")
#: Libraries whose versions change the frames for the same seed.
LIBRARIES = ("torch", "diffusers")


# -- writing ------------------------------------------------------------------------------------------------


def build(p: gen.Params, *, revision: str | None, pipeline: str, device: str, dtype: str,
          guidance_scale: float | None, scheduler: str | None, versions: Mapping[str, str | None],
          created: str) -> dict[str, Any]:
    """The recipe of a finished job (``versions``: torch and diffusers as the worker ran them)."""
    from vidtray import __version__

    return {
        VERSION_KEY: VERSION,
        "prompt": p.prompt, "negative_prompt": p.negative_prompt, "seed": p.seed, "steps": p.steps,
        "frames": p.frames, "width": p.width, "height": p.height, "fps": p.fps,
        "guidance_scale": guidance_scale, "scheduler": scheduler,
        "model": p.model, "revision": revision, "pipeline": pipeline, "device": device, "dtype": dtype,
        **{f"{lib}_version": versions.get(lib) for lib in LIBRARIES},
        "vidtray_version": __version__,
        "created": created,
    }


def container_tags(doc: Mapping[str, Any]) -> dict[str, str]:
    """The mp4 tags of a recipe: ``title`` and ``comment`` (compact JSON: JSON escapes every control
    character, so the value is one line that any command line can carry)."""
    from vidtray.services.libdoc import prompt_title

    prompt = doc.get("prompt")
    title = prompt_title(prompt) if isinstance(prompt, str) else ""
    # prompt_title folds whitespace; other control characters (a NUL cannot be a process argument) go too.
    title = "".join(ch for ch in title if ch.isprintable())
    return {TITLE_TAG: title, RECIPE_TAG: json.dumps(doc, ensure_ascii=False, separators=(",", ":"))}


# -- reading ------------------------------------------------------------------------------------------------


def from_tags(tags: Mapping[str, str]) -> dict[str, Any] | None:
    """The recipe in a file's container tags (keys lower-case), or None if it carries none of vidtray's."""
    text = tags.get(RECIPE_TAG)
    if not text or VERSION_KEY not in text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    version = doc.get(VERSION_KEY)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return None
    return doc


def import_fields(video: Path, tags: Mapping[str, str] | None) -> Fields:
    """What an import learns of how ``video`` was made: from vidtray's sidecar, else from the recipe in the
    file's tags (a clip that travelled without its sidecar); else only ``source: imported``."""
    fields = sidecar_fields(video)
    if fields.get("source") == "generated" or not tags:
        return fields
    doc = from_tags(tags)
    return fields_of(doc) if doc is not None else fields


@dataclass(frozen=True)
class Recipe:
    """A recipe as read, and where from (for messages: ``the recipe in /x/clip.mp4``)."""

    doc: dict[str, Any]
    where: str
    #: Only what a library item holds (prompt, model, seed): the other settings are the defaults.
    partial: bool = False

    @property
    def source(self) -> params.Source:
        return params.Source.named(self.where)

    def values(self) -> dict[str, object]:
        return {key: self.doc[key] for key in REQUEST_KEYS if self.doc.get(key) is not None}

    def request(self, overrides: Mapping[str, object] | None = None, *, vary_seed: bool = False) -> gen.Request:
        """A generation request: the recipe's values, then the ``overrides`` that are not None (a flag,
        a form field). ``vary_seed``: a new random seed, never the recipe's. A recipe value that breaks
        the schema is a UserError naming the recipe."""
        values = self.values()
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        for name, value in values.items():
            if name not in given:  # a bad value in the recipe is named as the recipe's
                params.check(name, value, self.source)
        if vary_seed:
            old = values.get("seed")
            seed = gen.new_seed()
            while seed == old:
                seed = gen.new_seed()
            given["seed"] = seed
        return gen.Request.from_dict({**values, **given}, self.source)

    def differences(self, revision_here: str | None, device_here: str | None = None) -> list[str]:
        """What differs from the recipe here, so that the same seed may not give the same frames: torch
        and diffusers (their installed versions; nothing is imported), the model's revision, and the
        device when this one is known. Each as ``diffusers 0.41.0 -> 0.42.1``."""
        out = []
        for lib in LIBRARIES:
            was, now = self.doc.get(f"{lib}_version"), installed_version(lib)
            if isinstance(was, str) and now is not None and was != now:
                out.append(f"{lib} {was} -> {now}")
        was_rev = self.doc.get("revision")
        if isinstance(was_rev, str) and was_rev != revision_here:
            out.append(f"model revision {was_rev[:12]} -> {revision_here[:12] if revision_here else 'unknown'}")
        was_dev = self.doc.get("device")
        if isinstance(was_dev, str) and device_here not in (None, "auto") and device_here != was_dev:
            out.append(f"device {was_dev} -> {device_here}")
        return out


def installed_version(dist: str) -> str | None:
    """The installed version of a distribution, without importing it (None if it is not installed)."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def read_recipe(path: Path) -> Recipe | None:
    """The recipe of a video: its sidecar (beside it; also when the video itself is gone), else the
    metadata in the file. None when neither has one (or the file is not a video)."""
    path = Path(path)
    doc = read_sidecar(path)
    if doc is not None:
        return Recipe(doc, f"the sidecar of {path}")
    if not path.is_file():
        return None
    from vidtray.services import media

    embedded = from_tags(media.read_tags(path))
    return Recipe(embedded, f"the recipe in {path}") if embedded is not None else None


def item_recipe(item: LibraryItem) -> Recipe | None:
    """The recipe of a library item: its video's (sidecar or metadata); else, when the item holds a prompt
    (another app wrote it, or the files are gone), a partial one from its prompt, model and seed."""
    found = read_recipe(Path(item.path))
    if found is not None:
        return found
    data = item.data
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return None
    doc: dict[str, Any] = {key: data[key] for key in ("prompt", "model", "seed") if key in data}
    return Recipe(doc, f"library item {item.id}", partial=True)


def find_recipe(item_or_path: LibraryItem | Mapping[str, Any] | str | os.PathLike[str]) -> Recipe | None:
    """The recipe of a library item (its typed view or its dict) or of the video at a path; None if none."""
    if isinstance(item_or_path, LibraryItem):
        return item_recipe(item_or_path)
    if isinstance(item_or_path, Mapping):
        item = dict(item_or_path)
        ok = is_video_item(item) and isinstance(item.get("id"), str) and isinstance(item.get("path"), str)
        return item_recipe(LibraryItem.of(item)) if ok else None
    return read_recipe(Path(item_or_path))


def recipe_for(item_or_path: LibraryItem | Mapping[str, Any] | str | os.PathLike[str]) -> gen.Request | None:
    """A request that makes the video again (same seed): from a library item (its typed view or its dict)
    or the path of any video. None when there is no recipe; UserError when the recipe breaks the schema."""
    found = find_recipe(item_or_path)
    return found.request() if found is not None else None


def recipe_details(item_or_path: LibraryItem | Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any] | None:
    """Everything the recipe records, as recorded (the library page's item view), or None."""
    found = find_recipe(item_or_path)
    return dict(found.doc) if found is not None else None


def load_from(text: str, cfg: Config) -> Recipe:
    """What follows ``--from``: an existing file (a video, or the sidecar itself), else a library id or a
    unique prefix. UserError (exit 2, one line) when it is neither, or has no recipe."""
    if not text.strip():
        raise UserError("--from: give a library id or a video file")
    path = Path(text).expanduser()
    if path.is_dir():
        raise UserError(f"--from: {text} is a folder, not a video")
    if path.is_file():
        found = from_file(path)
        if found is None:
            raise UserError(f"--from: {text} carries no vidtray recipe (no sidecar beside it, none in its "
                            "metadata)")
        return found
    item = _library_item(text, cfg)
    found = item_recipe(item)
    if found is None:
        raise UserError(f"--from: library item {item.id} ({item.path}) has no recipe: no sidecar, none in "
                        "the file, no prompt in the library")
    return found


def from_file(path: Path) -> Recipe | None:
    """The recipe of a video file (its sidecar, else its tags), or of a sidecar file itself."""
    if path.name.lower().endswith(".json"):  # the sidecar itself
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        if isinstance(doc, dict) and (path.name.lower().endswith(SUFFIX) or is_vidtray_doc(doc)):
            return Recipe(doc, f"the sidecar {path}")
        return None
    return read_recipe(path)


def _library_item(text: str, cfg: Config) -> LibraryItem:
    from vidtray.services.library import open_library

    if os.sep in text or (os.altsep and os.altsep in text) or "." in Path(text).name:
        # Reads as a path, and there is no file there: say so rather than "no library item".
        raise UserError(f"--from: {text} is not a file, nor a library id")
    try:
        return open_library(cfg).get(text)
    except UserError as exc:
        if "ambiguous" in str(exc):
            raise UserError(f"--from: {exc}") from None
        raise UserError(f"--from: {text!r} is neither a file nor a library item id (see `vidtray library "
                        "list`)") from None
