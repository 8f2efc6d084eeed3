"""Icon images shipped as package data."""

from importlib.resources import files
from pathlib import Path

NAMES = ("idle", "busy", "warning")


def icon_path(name: str, ext: str = "png") -> Path:
    """Path of a shipped icon (``idle``, ``busy`` or ``warning``; ``png`` or ``ico``)."""
    if name not in NAMES:
        raise ValueError(f"unknown icon {name!r}")
    return Path(str(files(__package__) / f"{name}.{ext}"))
