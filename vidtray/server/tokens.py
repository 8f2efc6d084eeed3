"""Per-person access tokens of a GPU server, stored hashed.

``tokens.json`` (0600, beside the server's other files) maps a name to the SHA-256 of that person's token and
when it was made. The token itself is shown once, by ``vidtray server token create NAME``; revoking deletes
the entry. Tokens are 256 random bits, so an unsalted hash is enough (nothing to guess from it), and the
check compares the presented token's hash with every stored one by ``hmac.compare_digest`` without stopping
at a match, so its time says nothing about which or how many tokens exist.

The running service re-reads the file when it changes (its size, mtime or inode), so a token made or
revoked takes effect at the next request, without a restart. Standard library and filelock only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from filelock import FileLock

from vidtray.errors import OperationFailed, UserError
from vidtray.services.fsutil import atomic_write_text, private_dir

log = logging.getLogger("vidtray.server")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: What a token starts with (so a leaked one is recognisable in a log or a paste).
PREFIX = "vt1_"
VERSION = 1


@dataclass(frozen=True)
class TokenEntry:
    name: str
    created: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


class TokenStore:
    """The token file: create, revoke, list (the CLI) and check (the service, on every request)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = FileLock(str(self.path.with_name(self.path.name + ".lock")), timeout=30)
        self._cache_key: tuple[int, int, int] | None = None
        self._hashes: tuple[tuple[str, bytes], ...] = ()
        self._mu = threading.Lock()

    # -- the CLI
    def create(self, name: str) -> str:
        """A new token for ``name`` (UserError if the name is taken or not a plain name); returns it."""
        if not NAME_RE.match(name):
            raise UserError(f"a token name is 1-64 letters, digits, '.', '_' or '-' (starting with a letter or "
                            f"digit), got {name!r}")
        token = new_token()
        with self._locked():
            doc = self._read_doc()
            if name in doc:
                raise UserError(f"there is a token named {name!r} already; revoke it first "
                                f"(`vidtray server token revoke {name}`)")
            doc[name] = {"sha256": _digest(token), "created": datetime.now().astimezone().isoformat(timespec="seconds")}
            self._write_doc(doc)
        log.info("token %r created", name)
        return token

    def revoke(self, name: str) -> None:
        with self._locked():
            doc = self._read_doc()
            if name not in doc:
                known = ", ".join(sorted(doc)) or "none"
                raise UserError(f"no token named {name!r} (tokens: {known})")
            del doc[name]
            self._write_doc(doc)
        log.info("token %r revoked", name)

    def entries(self) -> list[TokenEntry]:
        return [TokenEntry(name, str(v.get("created", ""))) for name, v in sorted(self._read_doc().items())]

    # -- the service
    def check(self, authorization: str | None) -> str | None:
        """The name whose token an ``Authorization: Bearer …`` header carries, else None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = bytes.fromhex(_digest(token.strip()))
        found: str | None = None
        for name, digest in self._current():
            # No early exit: every stored hash is compared, whatever matched.
            if hmac.compare_digest(presented, digest):
                found = name
        return found

    def _current(self) -> tuple[tuple[str, bytes], ...]:
        try:
            st = self.path.stat()
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            return ()
        except OSError as exc:
            log.error("cannot read the token file %s: %s; refusing every request", self.path, exc)
            return ()
        with self._mu:
            if key != self._cache_key:
                try:
                    doc = self._read_doc()
                    self._hashes = tuple((name, bytes.fromhex(str(v["sha256"]))) for name, v in doc.items())
                except (OperationFailed, KeyError, ValueError, TypeError) as exc:
                    log.error("the token file %s is not usable (%s); refusing every request", self.path, exc)
                    self._hashes = ()
                self._cache_key = key
            return self._hashes

    # -- the file
    def _locked(self) -> FileLock:
        private_dir(self.path.parent)
        return self._lock

    def _read_doc(self) -> dict[str, dict[str, object]]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise OperationFailed(f"cannot read the token file {self.path}: {exc}") from None
        tokens = raw.get("tokens") if isinstance(raw, dict) else None
        if not isinstance(tokens, dict) or not all(isinstance(v, dict) for v in tokens.values()):
            raise OperationFailed(f"the token file {self.path} is not vidtray's (no \"tokens\" table)")
        return tokens

    def _write_doc(self, tokens: dict[str, dict[str, object]]) -> None:
        try:
            atomic_write_text(self.path, json.dumps({"version": VERSION, "tokens": tokens}, indent=2) + "\n")
            os.chmod(self.path, 0o600)
        except OSError as exc:
            raise OperationFailed(f"cannot write the token file {self.path}: {exc.strerror or exc}") from None
