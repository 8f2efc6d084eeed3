"""CLI command groups. Each module has ``register(subparsers)``; handlers take ``(args, ctx)``.

Handlers print; they raise ``vidtray.errors`` types and never call ``sys.exit``:
``vidtray.cli`` is the one place that maps errors to exit codes.
"""

from __future__ import annotations

from collections.abc import Callable


def whole_number(lo: int, hi: int, out_of_range: str) -> Callable[[str], int]:
    """An argparse ``type=`` for a whole number from ``lo`` to ``hi``: argparse's message then names the flag.
    ``out_of_range`` is the message for a number outside, with ``{value}`` in it."""

    def parse(text: str) -> int:
        import argparse

        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(out_of_range.format(value=value))
        return value

    return parse
