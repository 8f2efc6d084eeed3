"""The ``--json`` contract over every command that takes ``--json``, found in the real parser (a new one
is covered, or this fails until it has its cases): stdout is exactly one JSON document that starts with
the envelope (``ok``, ``vidtray_json``), ``ok`` agrees with the exit status, and a failure also prints
its one ``vidtray: error:`` line on stderr. Each run is a fresh ``python -m vidtray`` (real exit codes)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from hf_cache import make_repo

from vidtray.cli import JSON_VERSION, JSON_VERSION_KEY, build_parser
from vidtray.config import Config

KIND_EXIT = {"usage": 2, "failed": 1, "interrupted": 130}
ITEM_ID = "0123456789ab"
REPO_ID = "org/tiny"


def json_commands() -> list[tuple[str, ...]]:
    """Every (sub)command whose parser has ``--json``, walked from ``vidtray.cli.build_parser()``."""
    found: list[tuple[str, ...]] = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        if any("--json" in action.option_strings for action in parser._actions):
            found.append(path)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, (*path, name))

    walk(build_parser(), ())
    return found


def check(res: subprocess.CompletedProcess[str]) -> dict:
    """The contract for one run; returns its document."""
    doc = json.loads(res.stdout)  # exactly one document: nothing before or after it
    assert isinstance(doc, dict) and list(doc)[:2] == ["ok", JSON_VERSION_KEY], res.stdout
    assert doc[JSON_VERSION_KEY] == JSON_VERSION
    assert doc["ok"] is (res.returncode == 0), (res.returncode, res.stdout, res.stderr)
    if doc["ok"]:
        assert "vidtray: error:" not in res.stderr
        return doc
    assert set(doc) == {"ok", JSON_VERSION_KEY, "error"}
    error = doc["error"]
    assert set(error) == {"kind", "message"} and error["message"], error
    assert KIND_EXIT[error["kind"]] == res.returncode, (error, res.returncode)
    # The same one line as without --json, last on stderr (warnings may come before it).
    line = "vidtray: " if error["kind"] == "interrupted" else "vidtray: error: "
    assert res.stderr.splitlines()[-1] == line + error["message"], res.stderr
    assert "Traceback" not in res.stderr
    return doc


# -- what each command gets: a cheap success (None: no cheap one, and where it is covered) and a failure


@dataclass(frozen=True)
class Case:
    ok: list[str] | None
    bad: list[str]
    kind: str  # of the failure
    env: Callable[[dict[str, Path]], None] | None = None  # prepares the failure's state


def _library(cfg: Config) -> None:
    item = {"id": ITEM_ID, "type": "video", "path": str(cfg.videos_dir / "a.mp4"), "title": "a", "status": "ready"}
    cfg.library_file.write_text(json.dumps({"version": 1, "items": [item]}))


def _model_folder(tmp: Path) -> str:
    folder = tmp / "pipeline"
    folder.mkdir(exist_ok=True)
    (folder / "model_index.json").write_text("{}")
    return str(folder)


def _file_where(folder: str) -> Callable[[dict[str, Path]], None]:
    """A file where an XDG folder's subfolder goes: writes there fail (exit 1)."""
    def make(dirs: dict[str, Path]) -> None:
        base, _, sub = folder.partition("/")
        shutil.rmtree(dirs[base] / sub, ignore_errors=True)  # the success case may have made it
        (dirs[base] / sub).write_text("")
    return make


NOPE = ["--config", "/nonexistent/vidtray.toml"]  # a config file that is not there: exit 2, from the handler

CASES: dict[tuple[str, ...], Case] = {
    ("storage",): Case([], NOPE, "usage"),
    ("storage", "plan"): Case(["--budget", "1000"], ["--budget", "lots"], "usage"),
    ("config", "show"): Case([], NOPE, "usage"),
    ("doctor",): Case(None, NOPE, "usage"),  # success: tests/test_doctor.py (it imports torch in a child)
    ("autostart", "enable"): Case([], [], "failed", _file_where("XDG_CONFIG_HOME/autostart")),
    ("autostart", "disable"): Case([], [], "failed", _file_where("XDG_CONFIG_HOME/autostart")),
    ("autostart", "status"): Case([], ["--no-such-flag"], "usage"),
    ("desktop-entry", "install"): Case([], [], "failed", _file_where("XDG_DATA_HOME/applications")),
    ("desktop-entry", "remove"): Case([], [], "failed", _file_where("XDG_DATA_HOME/applications")),
    ("desktop-entry", "status"): Case([], ["--no-such-flag"], "usage"),
    ("library", "list"): Case([], NOPE, "usage"),
    ("library", "show"): Case([ITEM_ID], ["nope"], "usage"),
    ("library", "pin"): Case([ITEM_ID], ["nope"], "usage"),
    ("library", "unpin"): Case([ITEM_ID], ["nope"], "usage"),
    ("library", "remove"): Case([ITEM_ID], ["nope"], "usage"),
    ("library", "edit"): Case([ITEM_ID, "--title", "b"], [ITEM_ID], "usage"),  # nothing to change
    ("library", "rescan"): Case([], NOPE, "usage"),
    ("queue", "list"): Case([], NOPE, "usage"),
    ("queue", "add"): Case(["a fox", "--model", "{model}"], ["a fox", "--model", "/nonexistent/model"], "usage"),
    ("queue", "cancel"): Case(["{job}"], ["nope"], "usage"),
    ("queue", "pause"): Case([], NOPE, "usage"),
    ("queue", "resume"): Case([], NOPE, "usage"),
    ("queue", "move"): Case(["{job}", "--first"], ["nope", "--first"], "usage"),
    ("queue", "edit"): Case(["{job}", "--steps", "10"], ["nope", "--steps", "10"], "usage"),
    ("queue", "retry"): Case(["{cancelled}"], ["nope"], "usage"),
    ("queue", "clear"): Case(["--finished"], ["--finished", *NOPE], "usage"),
    ("models", "list"): Case([], NOPE, "usage"),
    ("models", "pull"): Case(None, ["not a repo id"], "usage"),  # success downloads: never in tests
    # A run's success: test_generate_cli; --estimate runs nothing (tests/test_estimate_cli.py).
    ("generate",): Case(["a fox", "--model", "{model}", "--estimate"], ["a fox", "--model", "/nonexistent/model"],
                        "usage"),
    ("clean",): Case(["--to-budget", "--budget", "1000", "--dry-run"], ["--to-budget"], "usage"),  # no budget set
    ("server", "status"): Case([], NOPE, "usage"),  # a running server: tests/test_server_cli.py
    ("clean", "videos"): Case(["--dry-run"], NOPE, "usage"),
    ("clean", "model"): Case([REPO_ID, "--dry-run"], ["org/not-cached"], "usage"),
    ("clean", "models"): Case(["--all", "--dry-run"], ["--all"], "usage"),  # no --yes, no terminal: refused
}


def test_every_json_command_has_its_cases() -> None:
    assert set(json_commands()) == set(CASES)


@pytest.fixture
def state(cfg: Config, isolated_env: dict[str, Path], tmp_path: Path) -> dict[str, str]:
    """One library item, one cached model repo, a pipeline folder: what the success cases name."""
    _library(cfg)
    make_repo(isolated_env["HF_HOME"] / "hub", REPO_ID, {"model_index.json": b"{}"})
    return {"model": _model_folder(tmp_path)}


@pytest.mark.parametrize("command", sorted(CASES), ids="-".join)
def test_json_contract(command: tuple[str, ...], state: dict[str, str], isolated_env: dict[str, Path]) -> None:
    case = CASES[command]
    if case.ok is not None:
        if "{job}" in case.ok or "{cancelled}" in case.ok:
            added = check(run_cli("queue", "add", "a fox", "--model", state["model"], "--json"))
            state["job"] = state["cancelled"] = added["id"]
            if "{cancelled}" in case.ok:
                assert run_cli("queue", "cancel", added["id"]).returncode == 0
        res = run_cli(*command, *(a.format(**state) for a in case.ok), "--json")
        assert res.returncode == 0, res.stderr
        check(res)

    # A flag the command does not have: argparse's own error, in the envelope too.
    res = run_cli(*command, "--json", "--no-such-flag")
    assert check(res)["error"]["kind"] == "usage"

    if case.env is not None:
        case.env(isolated_env)
    res = run_cli(*command, *case.bad, "--json")
    assert check(res)["error"]["kind"] == case.kind


def test_a_missing_argument_and_an_abbreviated_flag_get_the_envelope() -> None:
    res = run_cli("library", "show", "--js")
    assert check(res)["error"]["message"] == "the following arguments are required: id"
    # After "--" it is an argument, not the flag: no JSON asked for, none printed.
    res = run_cli("library", "show", "--", "--json")
    assert res.returncode == 2 and res.stdout == ""


def test_without_json_nothing_changes() -> None:
    res = run_cli("library", "show", "nope")
    assert res.returncode == 2 and res.stdout == "" and res.stderr.startswith("vidtray: error: no library item")


def _patched(target: str, raises: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the real entry point with ``target`` (module.function) raising ``raises``: a bug, or Ctrl-C."""
    module, _, name = target.rpartition(".")
    code = (f"import sys, {module} as m\n"
            f"def boom(*a, **k):\n    raise {raises}\n"
            f"m.{name} = boom\n"
            "from vidtray.cli import main\n"
            f"sys.exit(main({list(argv)!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          stdin=subprocess.DEVNULL)


def test_a_bug_is_a_failed_document() -> None:
    res = _patched("vidtray.commands.storage.build_report", "ZeroDivisionError('division by zero')",
                   "storage", "--json")
    doc = check(res)
    assert res.returncode == 1 and doc["error"]["kind"] == "failed"
    assert doc["error"]["message"].startswith("ZeroDivisionError: division by zero (details in ")


def test_ctrl_c_is_an_interrupted_document() -> None:
    res = _patched("vidtray.commands.storage.build_report", "KeyboardInterrupt", "storage", "--json")
    doc = check(res)
    assert res.returncode == 130 and doc["error"] == {"kind": "interrupted", "message": "interrupted"}
    assert res.stderr == "vidtray: interrupted\n"


def test_envelope_keys_in_the_data_do_not_replace_the_envelope(cfg: Config) -> None:
    # library.json is shared: another app's item may carry any key, "ok" too.
    item = {"id": ITEM_ID, "type": "video", "path": "/v/a.mp4", "ok": "theirs", JSON_VERSION_KEY: 7}
    cfg.library_file.write_text(json.dumps({"version": 1, "items": [item]}))
    doc = check(run_cli("library", "show", ITEM_ID, "--json"))
    assert doc["ok"] is True and doc[JSON_VERSION_KEY] == JSON_VERSION and doc["id"] == ITEM_ID
    # The list keeps every item whole.
    listed = check(run_cli("library", "list", "--json"))
    assert listed["items"][0]["ok"] == "theirs"
