"""Error types. ``vidtray.cli`` maps them to exit codes: UserError -> 2, OperationFailed -> 1,
Interrupted -> 130; ``kind`` is what ``--json`` output calls them (``"error": {"kind": ...}``)."""


class VidtrayError(Exception):
    """Base of every error vidtray raises on purpose; its message is one line for a person."""

    exit_code = 1
    kind = "failed"


class UserError(VidtrayError):
    """Bad usage or bad input (a flag, an id, a config value). Nothing was changed."""

    exit_code = 2
    kind = "usage"


class ConfigError(UserError):
    """A config file that cannot be used; names the file and, where there is one, the key."""

    def __init__(self, source: str, message: str, key: str | None = None) -> None:
        self.source = source
        self.key = key
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class OperationFailed(VidtrayError):
    """The input was fine but the operation could not be done (disk full, no GPU, I/O error)."""

    exit_code = 1


class Interrupted(VidtrayError):
    """Stopped by the user (Ctrl-C) before it was done; nothing half-made is left behind."""

    exit_code = 130
    kind = "interrupted"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): a library's
    multi-line error, said in one line."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
