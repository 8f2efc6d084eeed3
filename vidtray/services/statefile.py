"""vidtray's small records in its state folder: which models it used (:mod:`.modeluse`), what it moved to the
trash (:mod:`.trash`), the memory plans that worked (:mod:`.planmemory`); and the state documents of a running
library page or GPU server (:func:`read_doc`, :func:`write_doc`: its pid, port and URL).

Each is a versioned JSON document holding one section (``{"version": 1, "models": {...}}``). Reading is
lenient: a missing, unreadable or damaged file reads as nothing (logged, except missing), since each record
only refines what vidtray would do without it. Writing is a read-modify-write under the record's file lock
(two processes may write at once), replaced atomically, and never raises (logged): losing one update costs
as little as losing the record. Standard library and filelock only: the worker, the CLI and the tray use it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("vidtray.state")

T = TypeVar("T", dict[str, object], list[object])

LOCK_TIMEOUT_S = 10.0


def read_section(path: Path, section: str, kind: type[T]) -> T | None:
    """The ``section`` of the record at ``path`` when it is a ``kind`` (dict or list); else None."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None
    value = doc.get(section) if isinstance(doc, dict) else None
    return value if isinstance(value, kind) else None


def update_section(path: Path, version: int, section: str, change: Callable[[], object | None], what: str,
                   *, indent: int | None = None) -> bool:
    """Under the record's lock, ``change()`` reads the record (with :func:`read_section`) and returns the new
    section, or None to leave the file as it is; it is written atomically. False when the record could not be
    written (logged as "cannot ``what``")."""
    from filelock import FileLock

    from vidtray.services.fsutil import atomic_write_text, private_dir

    try:
        private_dir(path.parent)
        with FileLock(str(path.with_name(f".{path.name}.lock")), timeout=LOCK_TIMEOUT_S):
            new = change()
            if new is not None:
                atomic_write_text(path, json.dumps({"version": version, section: new}, indent=indent) + "\n")
        return True
    except (OSError, TimeoutError) as exc:
        log.warning("cannot %s (%s): %s", what, path, exc)
        return False


def read_doc(path: Path) -> dict[str, Any] | None:
    """A running server's state document; None when there is none or it cannot be read (a server that died
    while writing it: the caller treats it as not running)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_doc(path: Path, doc: dict[str, Any]) -> None:
    """Write a running server's state document, atomically, in a private folder."""
    from vidtray.services.fsutil import atomic_write_text, private_dir

    private_dir(path.parent)
    atomic_write_text(path, json.dumps(doc, indent=2, default=str) + "\n")
