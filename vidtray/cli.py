"""Command line: argument parsing, and the one place that maps errors to exit codes.

Exit codes: 0 success, 1 the operation failed, 2 bad usage or bad input, 130 interrupted. Errors are
one ``vidtray: error:`` line on stderr; tracebacks go to the log file (and to stderr with --debug).
With ``--json`` stdout carries exactly one JSON document, failures included (see ``Context.print_json``).
Command groups live in ``vidtray.commands.*``; they stay light (heavy imports inside handlers).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import pkgutil
import sys
import traceback
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from vidtray import __version__, commands
from vidtray.errors import Interrupted, OperationFailed, UserError, VidtrayError

if TYPE_CHECKING:
    from vidtray.config import Config

    #: What each ``vidtray.commands`` module's ``register`` adds its commands to.
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

log = logging.getLogger("vidtray.cli")

#: The envelope every ``--json`` document starts with: ``"ok"`` (true exactly when the exit status is 0)
#: and this version under ``JSON_VERSION_KEY``. The version goes up only when a document changes in a way
#: that breaks a reader (a key renamed or removed, a meaning changed); new keys do not raise it.
JSON_VERSION_KEY = "vidtray_json"
JSON_VERSION = 1


class Parser(argparse.ArgumentParser):
    """argparse that raises UserError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


class CommandParser(Parser):
    """A (sub)command's parser: also takes the global options, so ``vidtray storage --config X``
    means ``vidtray --config X storage``. SUPPRESS leaves the value given before the command alone
    when the option is not repeated after it; they stay out of each command's --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _global_options(self, hidden=True)


def _global_options(parser: argparse.ArgumentParser, *, hidden: bool) -> None:
    parser.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS if hidden else None,
                        help=argparse.SUPPRESS if hidden else
                        "config file (default: $VIDTRAY_CONFIG or the platform one); also after COMMAND")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if hidden else False,
                        help=argparse.SUPPRESS if hidden else
                        "print tracebacks and log debug messages; also after COMMAND")


class Context:
    """What every handler gets besides its args: the config (loaded on first use) and output helpers."""

    def __init__(self, config_arg: str | None) -> None:
        self.config_arg = config_arg
        self._document: dict[str, object] | None = None

    @cached_property
    def cfg(self) -> Config:
        from vidtray.config import load_config

        return load_config(self.config_arg)

    def print_json(self, doc: Mapping[str, object]) -> None:
        """The command's ``--json`` result: ``doc``'s keys at the top level, after the envelope's.

        Written when the command ends, by the boundary in this module, so stdout holds one document
        and its ``ok`` agrees with the exit status even when the command fails after calling this.
        A key of ``doc`` named like an envelope key is left out (the envelope's wins).
        """
        self._document = {"ok": True, JSON_VERSION_KEY: JSON_VERSION,
                          **{k: v for k, v in doc.items() if k not in ("ok", JSON_VERSION_KEY)}}

    def _write_json(self, rc: int, error: VidtrayError | None = None) -> None:
        """The one writer of ``--json`` output: the result when ``rc`` is 0, else the error's envelope."""
        if rc == 0 and error is None:
            doc = self._document or {"ok": True, JSON_VERSION_KEY: JSON_VERSION}
        else:
            kind, message = (error.kind, str(error)) if error else ("failed", f"exit status {rc}")
            doc = {"ok": False, JSON_VERSION_KEY: JSON_VERSION, "error": {"kind": kind, "message": message}}
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")

    @staticmethod
    def confirm(question: str, yes: bool) -> bool:
        """True if the user agreed. Without --yes, ask on a terminal; off a terminal refuse (UserError)."""
        if yes:
            return True
        if not sys.stdin or not sys.stdin.isatty():
            raise UserError("refusing to delete without --yes: there is no terminal to ask on")
        try:
            answer = input(f"{question} [y/N] ")
        except EOFError:
            answer = ""
        return answer.strip().lower() in ("y", "yes")


def build_parser(command: str | None = None) -> Parser:
    """The whole command line; with ``command`` (the one ``argv`` names, see ``_command_of``) only that
    command's module is imported, so a command does not pay at start for every other one's imports."""
    parser = Parser(prog="vidtray", description="Local AI video generation helper: tray, library, storage.")
    parser.add_argument("--version", action="version", version=f"vidtray {__version__}")
    _global_options(parser, hidden=False)
    # Nested subcommands inherit the class (argparse uses type(self)), so every level takes them.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    sub.required = True
    # Every module in vidtray.commands registers its own command, named like it (desktop_entry is
    # `desktop-entry`), alphabetical in --help.
    names = sorted(info.name for info in pkgutil.iter_modules(commands.__path__))
    wanted = command.replace("-", "_") if command and not command.startswith("_") else None
    for name in [wanted] if wanted in names else names:
        importlib.import_module(f"{commands.__name__}.{name}").register(sub)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names (its first word that is not a global option), if any."""
    args = iter(argv)
    for arg in args:
        if arg == "--config":
            next(args, None)
        elif arg == "--":
            return next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    rc: int | None = None
    try:
        try:
            rc = _main(argv)
            return rc
        finally:
            # Output to a pipe is block-buffered: flush here, where a closed reader can still be caught.
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`vidtray storage | head -1`): stop quietly, as a filter does.
        _stdout_gone()
        return rc or 1


def _stdout_gone() -> None:
    """Point stdout at devnull so the interpreter's own flush at exit does not fail again (Python docs,
    "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        # A file name that is not UTF-8 (surrogate-escaped) must not turn a report into a traceback.
        sys.stdout.reconfigure(errors="backslashreplace")
    debug = "--debug" in argv
    try:
        args = build_parser(_command_of(argv)).parse_args(argv)
    except UserError as exc:
        return _fail(exc, debug, Context(None) if _wants_json(argv) else None)
    from vidtray.logs import setup_logging

    setup_logging(verbose=args.debug)
    ctx = Context(args.config)
    json_ctx = ctx if getattr(args, "json", False) else None
    try:
        rc = int(args.handler(args, ctx) or 0)
    except BrokenPipeError:
        raise  # not a failure of the command: main() ends quietly
    except VidtrayError as exc:
        log.info("command failed: %s", exc, exc_info=True)
        return _fail(exc, args.debug, json_ctx)
    except KeyboardInterrupt:
        return _fail(Interrupted("interrupted"), False, json_ctx)
    except Exception as exc:  # the boundary: a bug still gets one line, the traceback goes to the log
        log.exception("unexpected error")
        from vidtray.logs import log_file

        if args.debug:
            traceback.print_exc()
        return _fail(OperationFailed(f"{type(exc).__name__}: {exc} (details in {log_file()})"), False, json_ctx)
    if json_ctx is not None:
        json_ctx._write_json(rc)
    return rc


def _wants_json(argv: Sequence[str]) -> bool:
    """Whether a command line that argparse refused asked for ``--json`` (or a prefix argparse takes for it)."""
    for arg in argv:
        if arg == "--":
            return False
        if arg.startswith("--j") and "--json".startswith(arg):
            return True
    return False


def _fail(exc: VidtrayError, debug: bool, json_ctx: Context | None) -> int:
    """The one line on stderr (and, under ``--json``, the error document on stdout); the exit code."""
    # An interruption is not an error of the command: "vidtray: interrupted", as a shell says it.
    interrupted = isinstance(exc, Interrupted)
    if debug and not interrupted:
        traceback.print_exception(exc)
    print(f"vidtray: {exc}" if interrupted else f"vidtray: error: {exc}", file=sys.stderr)
    if json_ctx is not None:
        try:
            json_ctx._write_json(exc.exit_code, exc)
            sys.stdout.flush()
        except BrokenPipeError:
            _stdout_gone()  # nobody reads the document; the failure keeps its status
    return exc.exit_code


def tray_main() -> int:
    """Entry point of the windowless ``vidtray-tray`` gui-script."""
    return main(["tray", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
