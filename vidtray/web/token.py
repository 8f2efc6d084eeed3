"""The library page's access token: one random secret per user (per data folder), kept in the state
folder with mode 0600 and reused across restarts, so a bookmarked page keeps working.

Standard library only: the tray's launcher reads it to ask a running page server whether it is vidtray's.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from vidtray.errors import OperationFailed
from vidtray.services.fsutil import PRIVATE_FILE, private_dir

#: 32 random bytes, URL-safe: what the URL carries once and the cookie carries after.
TOKEN_BYTES = 32
_MIN_CHARS = 32  # a file holding less than this is not a token vidtray wrote: made anew


def load_or_create(path: Path) -> str:
    """The token in ``path``; a new one (written 0600, atomically: two starting servers agree) if there is
    none. A token file that others can read is made private again (it is a password)."""
    token = _read(path)
    if token is not None:
        return token
    private_dir(path.parent)
    fresh = secrets.token_urlsafe(TOKEN_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(fresh + "\n")
        os.chmod(tmp, PRIVATE_FILE)  # the mode of os.open passes through the umask
        # link, not replace: if another process made one meanwhile, its token wins and both agree. A file
        # there that holds no token (emptied, or not written by vidtray) is replaced.
        try:
            os.link(tmp, path)
        except FileExistsError:
            if _read(path) is None:
                os.replace(tmp, path)
    except OSError as exc:
        raise OperationFailed(f"cannot write the library page's token {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    token = _read(path)
    if token is None:
        raise OperationFailed(f"cannot read back the library page's token {path}")
    return token


def read(path: Path) -> str | None:
    """The token if there is one (the launcher: it never creates one)."""
    return _read(path)


def _read(path: Path) -> str | None:
    try:
        st = os.stat(path)
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise OperationFailed(f"cannot read the library page's token {path}: {exc}") from None
    if len(text) < _MIN_CHARS or not text.replace("-", "").replace("_", "").isalnum():
        return None
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, PRIVATE_FILE)
    return text


def matches(token: str, given: str | None) -> bool:
    """True if ``given`` is the token (constant time)."""
    return given is not None and hmac.compare_digest(token.encode(), given.encode("utf-8", "surrogateescape"))


def csrf_for(token: str) -> str:
    """The anti-CSRF value the page sends in a header with every change (derived, so it needs no storage;
    it is not the token: a page script never sees the token itself, which stays in an HttpOnly cookie)."""
    return hmac.new(token.encode(), b"vidtray-page-csrf", hashlib.sha256).hexdigest()
