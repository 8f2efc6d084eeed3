"""File names with a newline, a tab or bytes that are not UTF-8: imported where JSON can hold them,
skipped with a reason where it cannot, and every log record stays one line (no "--- Logging error ---")."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from conftest import run_cli
from media_helpers import write_mp4

from vidtray.services.library import Library

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[")


def test_odd_names_are_imported_or_skipped_and_logged_one_line_each(isolated_env: dict[str, Path]) -> None:
    videos = isolated_env["VIDTRAY_DATA_DIR"] / "generated" / "videos"
    clip = write_mp4(videos / "plain.mp4")
    shutil.copyfile(clip, videos / "line\nbreak.mp4")
    shutil.copyfile(clip, videos / "tab\there.mp4")
    undecodable = os.fsencode(videos) + b"/latin1-\xe9.mp4"
    with open(undecodable, "wb") as fh:
        fh.write(clip.read_bytes())
    env = {"PYTHONIOENCODING": "utf-8:strict"}  # a desktop's UTF-8 locale (the C locale escapes instead)
    res = run_cli("library", "rescan", "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert "Logging error" not in res.stderr and res.stderr == ""
    report = json.loads(res.stdout)
    assert sorted(Path(p).name for p in report["imported"]) == ["line\nbreak.mp4", "plain.mp4", "tab\there.mp4"]
    (skipped,) = report["skipped"]
    assert skipped["reason"] == "name is not valid UTF-8"
    names = sorted(Path(i.path).name for i in Library(isolated_env["VIDTRAY_DATA_DIR"] / "library.json").items())
    assert names == ["line\nbreak.mp4", "plain.mp4", "tab\there.mp4"]
    # the human report too, on a terminal that accepts only UTF-8
    again = run_cli("library", "rescan", env=env)
    assert again.returncode == 0 and "not valid UTF-8" in again.stdout, again.stderr
    log = (isolated_env["VIDTRAY_LOG_DIR"] / "vidtray.log").read_text(encoding="utf-8")
    lines = log.splitlines()
    assert lines and all(STAMP.match(line) for line in lines), log
    assert "latin1-\\udce9.mp4: name is not valid UTF-8" in log
