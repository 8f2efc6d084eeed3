"""The CLI's one error boundary and global options, through the real entry point."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from vidtray.config import Config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def long_library(cfg: Config) -> Config:
    """A library whose listing is far longer than a pipe's buffer (64 KiB), so writes must fail."""
    items = [{"id": f"{n:012x}", "type": "video", "path": f"/videos/clip-{n}.mp4", "title": f"clip {n} " * 4,
              "status": "ready", "duration_s": 1.0} for n in range(3000)]
    cfg.library_file.write_text(json.dumps({"version": 1, "items": items}))
    return cfg


def _closed_reader(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run vidtray with stdout on a pipe whose read end is already closed."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, "-m", "vidtray", *args], stdout=w, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, cwd=ROOT, timeout=120)
    finally:
        os.close(w)


@pytest.mark.parametrize("args", [("storage",), ("storage", "--json"), ("library", "list"),
                                  ("library", "list", "--json"), ("--help",)])
def test_closed_pipe_ends_quietly(long_library: Config, args: tuple[str, ...]) -> None:
    res = _closed_reader(*args)
    assert res.stderr == b"", res.stderr.decode()
    # 1 as in the Python docs' SIGPIPE recipe (a pipeline reports its last command anyway); argparse
    # itself swallows the error while printing --help.
    assert res.returncode == (0 if args == ("--help",) else 1)


def test_closed_pipe_keeps_the_status_of_a_failure() -> None:
    # The error document cannot be written, but the failure is still a usage error, said on stderr.
    res = _closed_reader("storage", "--json", "--no-such-flag")
    assert res.returncode == 2
    assert res.stderr.decode() == "vidtray: error: unrecognized arguments: --no-such-flag\n"


@pytest.mark.parametrize("args", ["storage", "library list", "library list --json"])
def test_pipe_into_head(long_library: Config, args: str) -> None:
    cmd = f"{shlex.quote(sys.executable)} -m vidtray {args} | head -1"
    res = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert res.stdout.count("\n") == 1 and res.stdout.strip()


def test_config_after_the_command(cli, tmp_path: Path) -> None:
    config = tmp_path / "custom.toml"
    data = tmp_path / "elsewhere"
    config.write_text(f"data_dir = {json.dumps(str(data))}\nwarn_free_gb = 7.5\n")
    env = {"VIDTRAY_DATA_DIR": ""}
    before = json.loads(cli("--config", str(config), "storage", "--json", env=env).stdout)
    after = cli("storage", "--config", str(config), "--json", env=env)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["disk"]["warn_free_gb"] == 7.5
    assert json.loads(after.stdout)["library"] == before["library"]
    # Nested commands, at either level; the one after the command wins over the one before.
    for argv in (["library", "list", "--json", "--config", str(config)],
                 ["library", "--config", str(config), "list", "--json"],
                 ["--config", str(tmp_path / "nope.toml"), "library", "list", "--config", str(config), "--json"]):
        res = cli(*argv, env=env)
        assert res.returncode == 0, (argv, res.stderr)
        assert json.loads(res.stdout)["library"] == str(data / "library.json")
    res = cli("config", "show", "--config", str(tmp_path / "nope.toml"))
    assert res.returncode == 2 and res.stderr.startswith("vidtray: error:") and "nope.toml" in res.stderr


def test_debug_after_the_command(cli, tmp_path: Path) -> None:
    res = cli("storage", "--debug", "--config", str(tmp_path / "nope.toml"))
    assert res.returncode == 2 and "Traceback" in res.stderr and "config file not found" in res.stderr


def test_help_stays_light() -> None:
    from vidtray.cli import build_parser

    parser = build_parser()
    top = parser.format_help()
    assert "--config PATH" in top and "also after COMMAND" in top
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["storage"].format_help()
    assert "--config" not in text and "--debug" not in text


def test_a_command_imports_only_its_own_module() -> None:
    """`vidtray storage` does not pay at start for `generate`'s imports (the worker protocol): the command
    line names one command, and only its module is imported (all of them for --help or a typo)."""
    from vidtray.cli import _command_of

    assert _command_of(["--config", "x.toml", "--debug", "storage", "plan"]) == "storage"
    assert _command_of(["--config=x.toml", "desktop-entry"]) == "desktop-entry"
    assert _command_of(["--version"]) is None and _command_of(["--", "queue"]) == "queue"
    code = ("import sys; from vidtray.cli import main; rc = main(['config', 'path']); "
            "print(sorted(m for m in sys.modules if m.startswith('vidtray.commands.'))); sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "['vidtray.commands.config']"
