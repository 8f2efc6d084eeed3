"""What vidtray creates holds prompts: new files are 0600 and new folders 0700 whatever the umask; an
existing file keeps its mode (library.json is shared with other apps)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT
from test_queue import RecordingNotifier

from vidtray.config import Config
from vidtray.services.jobs import Jobs
from vidtray.services.library import Library
from vidtray.services.queue import JobQueue


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)  # the most permissive umask a person could have
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_library_is_private_an_existing_one_keeps_its_mode(tmp_path: Path, open_umask: None) -> None:
    lib = Library(tmp_path / "new" / "folder" / "library.json")
    lib.add_video(tmp_path / "a.mp4", prompt="a secret prompt")
    assert mode(lib.path) == 0o600
    assert mode(lib.path.parent) == 0o700 and mode(lib.path.parent.parent) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    (shared / "library.json").write_text('{"version": 1, "items": []}')
    (shared / "library.json").chmod(0o644)  # another app's library, readable by design
    Library(shared / "library.json").add_video(tmp_path / "b.mp4")
    assert mode(shared / "library.json") == 0o644 and mode(shared) == 0o755


def test_queue_files_and_state_are_private(tmp_path: Path, open_umask: None) -> None:
    cfg = Config.from_mapping({"data_dir": str(tmp_path / "new-data")}, "<test>", env={})
    q = JobQueue(cfg.queue_dir)
    q.submit({"prompt": "a secret prompt"})
    assert mode(cfg.queue_dir) == 0o700 and mode(cfg.data_dir) == 0o700
    # the database and the files SQLite makes beside it while it is open
    files = sorted(p.name for p in cfg.queue_dir.iterdir())
    assert files == ["queue.sqlite3", "queue.sqlite3-shm", "queue.sqlite3-wal"]
    assert all(mode(cfg.queue_dir / name) == 0o600 for name in files)
    q.close()
    jobs = Jobs(cfg, RecordingNotifier())
    jobs._record_prune(1.0)
    assert mode(jobs.state_file) == 0o600 and mode(jobs.state_file.parent) == 0o700


def test_the_log_is_private(tmp_path: Path) -> None:
    logs = tmp_path / "new-logs" / "deeper"
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    res = subprocess.run([sys.executable, "-m", "vidtray", "queue", "add", "a secret prompt", "--model",
                          str(model)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "VIDTRAY_LOG_DIR": str(logs)}, preexec_fn=lambda: os.umask(0))  # noqa: PLW1509
    assert res.returncode == 0, res.stderr
    log_file = logs / "vidtray.log"
    assert "queued job" in log_file.read_text()
    assert mode(log_file) == 0o600 and mode(logs) == 0o700 and mode(logs.parent) == 0o700
