"""Logging: a rotating file under the platform log dir; the format shows the thread.

The log holds prompts and file names, so the file is 0600 in a 0700 folder whatever the umask. One event
is one line: control characters in a message (a file name with a newline) are escaped, names that are
not valid UTF-8 are written with backslash escapes, and a log that cannot be written (a full disk) never
prints a traceback: the log says how many records it lost once it can be written again.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
from io import TextIOWrapper
from pathlib import Path

from vidtray.paths import log_dir

FORMAT = "%(asctime)s %(levelname)s [%(processName)s/%(threadName)s] %(name)s: %(message)s"
#: Control characters that would split or garble a log line, and their escapes.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0, 32), 127)} | {10: "\\n", 13: "\\r", 9: "\\t"}


def log_file() -> Path:
    return log_dir() / "vidtray.log"


class OneLineFormatter(logging.Formatter):
    """The message part of a record on one line: control characters escaped (the traceback, if any,
    follows on its own lines as usual)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        text = super().formatMessage(record)
        return text.translate(_ESCAPES) if any(ord(c) < 32 or ord(c) == 127 for c in text) else text


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files are created 0600 and that survives failing writes quietly."""

    def __init__(self, filename: Path, **kwargs: object) -> None:
        self._lost = 0
        self._why = ""
        self._wrote = True
        super().__init__(filename, encoding="utf-8", errors="backslashreplace", **kwargs)  # type: ignore[arg-type]

    def _open(self) -> TextIOWrapper:  # called at start and after each rollover
        try:
            fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            os.fchmod(fd, 0o600)  # os.open's mode passes through the umask
        except FileExistsError:
            fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND)
        # "a", the mode a RotatingFileHandler always has (it appends, and the fd is O_APPEND anyway).
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        self._wrote = True
        super().emit(record)
        if self._wrote and self._lost:
            # Writing works again: say in the log itself what is missing from it.
            lost, why, self._lost = self._lost, self._why, 0
            note = logging.LogRecord(record.name, logging.WARNING, __file__, 0,
                                     "%d log record(s) were lost: the log could not be written (%s)",
                                     (lost, why), None)
            super().emit(note)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        # Never a "--- Logging error ---" traceback on stderr (a full disk would print one per record,
        # after the command's own one-line error): count what was lost, and say so once writing works.
        self._wrote = False
        exc = sys.exc_info()[1]
        self._lost += 1
        self._why = getattr(exc, "strerror", None) or str(exc)
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.close()
            self.stream = None  # reopened on the next record


def setup_logging(verbose: bool = False) -> Path | None:
    """Send vidtray's log records to the rotating log file; returns its path (None if unwritable)."""
    from vidtray.services.fsutil import private_dir

    root = logging.getLogger("vidtray")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if any(getattr(h, "_vidtray", False) for h in root.handlers):
        return log_file()
    path = log_file()
    try:
        private_dir(path.parent)
        handler: logging.Handler = PrivateRotatingFileHandler(path, maxBytes=2_000_000, backupCount=3)
    except OSError:
        return None
    handler.setFormatter(OneLineFormatter(FORMAT))
    handler._vidtray = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    return path
