"""CLI command groups. Each module has ``register(subparsers)``; handlers take ``(args, ctx)``.

Handlers print; they raise ``vidtray.errors`` types and never call ``sys.exit``:
``vidtray.cli`` is the one place that maps errors to exit codes.
"""
