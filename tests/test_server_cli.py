"""``vidtray server ...`` from the command line: tokens (fast, no Ray), the refusals of ``server up``, and
(slow, Ray) the whole contract in real processes: ``server up`` prints its URL and CA, ``vidtray generate
--on remote`` makes a video through it, ``server status`` and ``server down``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import gen_fixtures
import pytest
from conftest import ROOT, run_cli
from gen_fixtures import TINY_REPO, install_in_hf_cache
from ray_server import free_port, ray_available

from vidtray.config import Config
from vidtray.services.sidecar import sidecar_path

tiny_pipeline = gen_fixtures.tiny_pipeline


def test_token_create_list_revoke(cfg: Config) -> None:
    res = run_cli("server", "token", "create", "alice")
    assert res.returncode == 0, res.stderr
    token = res.stdout.splitlines()[-1]
    assert token.startswith("vt1_") and len(token) > 40
    tokens_file = cfg.paths.server_tokens_file
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    stored = tokens_file.read_text()
    assert token not in stored and "alice" in stored  # only its hash is kept
    again = run_cli("server", "token", "create", "alice")
    assert again.returncode == 2 and "revoke it first" in again.stderr
    bad = run_cli("server", "token", "create", "al ice")
    assert bad.returncode == 2 and "token name" in bad.stderr
    assert "alice  (created " in run_cli("server", "token", "list").stdout
    assert run_cli("server", "token", "revoke", "alice").returncode == 0
    gone = run_cli("server", "token", "revoke", "alice")
    assert gone.returncode == 2 and gone.stderr == "vidtray: error: no token named 'alice' (tokens: none)\n"


def test_the_token_check_is_by_hash_and_names_the_owner(tmp_path: Path) -> None:
    from vidtray.server.tokens import TokenStore

    store = TokenStore(tmp_path / "tokens.json")
    a, b = store.create("a"), store.create("b")
    assert store.check(f"Bearer {a}") == "a" and store.check(f"bearer  {b} ") == "b"
    assert store.check(None) is None and store.check("Bearer ") is None and store.check(f"Basic {a}") is None
    assert store.check(f"Bearer {a}x") is None
    (tmp_path / "tokens.json").write_text("not json")
    assert store.check(f"Bearer {a}") is None  # a broken file refuses everyone


@pytest.mark.parametrize("args, message", [
    ([], "the server speaks HTTPS only: give --cert FILE --key FILE, or --self-signed"),
    (["--cert", "c.pem"], "--cert and --key go together"),
    (["--self-signed", "--cert", "c.pem", "--key", "k.pem"], "--self-signed or --cert/--key, not both"),
    (["--self-signed", "--port", "0"], "argument --port: a port is 1-65535, got 0"),
    (["--self-signed", "--slots", "0"], "argument --slots: 1-64 slots, got 0"),
])
def test_server_up_refuses_before_starting_anything(args: list[str], message: str) -> None:
    res = run_cli("server", "up", *args)
    assert res.returncode == 2 and res.stderr == f"vidtray: error: {message}\n" and res.stdout == ""


def test_status_and_down_when_nothing_runs() -> None:
    res = run_cli("server", "status")
    assert res.returncode == 0 and res.stdout.startswith("no vidtray server runs here")
    doc = json.loads(run_cli("server", "status", "--json").stdout)
    assert doc["ok"] is True and doc["running"] is False
    res = run_cli("server", "down")
    assert res.returncode == 0 and res.stdout == "no vidtray server runs here\n"


def test_generate_on_remote_without_a_server_configured_is_a_usage_error() -> None:
    res = run_cli("generate", "a fox", "--on", "remote")
    assert res.returncode == 2 and "--on remote: no server configured" in res.stderr
    res = run_cli("queue", "add", "a fox", "--on", "remote")
    assert res.returncode == 2 and "--on remote: no server configured" in res.stderr


def test_a_local_folder_cannot_be_sent_to_the_server(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    token = tmp_path / "t"
    token.write_text("x")
    conf.write_text(f'[remote]\nurl = "https://gpu:8443"\ntoken_file = "{token}"\n')
    res = run_cli("--config", str(conf), "queue", "add", "a fox", "--on", "remote", "--model", str(tmp_path))
    assert res.returncode == 2 and "cannot be used on the server" in res.stderr


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.gen
def test_server_up_generate_on_remote_status_down(isolated_env: dict[str, Path], tmp_path: Path,
                                                  tiny_pipeline: Path) -> None:
    """The CLI contract in real processes: its own local Ray cluster, the real worker, the tiny pipeline in the
    server's Hugging Face cache."""
    if not ray_available():
        if os.environ.get("CI"):
            pytest.fail("Ray Serve is not installed: CI installs the 'server' extra and runs these tests")
        pytest.skip("Ray Serve is not installed (pip install -e '.[server]')")
    install_in_hf_cache(tiny_pipeline, isolated_env["HF_HOME"] / "hub")
    token = run_cli("server", "token", "create", "alice").stdout.splitlines()[-1]
    port = free_port()
    up = subprocess.Popen([sys.executable, "-m", "vidtray", "server", "up", "--self-signed", "--device", "cpu",
                           "--slots", "1", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert up.stdout is not None
        url = up.stdout.readline().strip()
        ca = up.stdout.readline().strip()
        assert url == f"https://127.0.0.1:{port}", up.stderr.read() if not url else url
        assert Path(ca).name == "ca.pem" and Path(ca).is_file()
        # A desktop (its own data folder) pointed at it.
        token_file = tmp_path / "token"
        token_file.write_text(token)
        conf = tmp_path / "desktop.toml"
        conf.write_text(f'[remote]\nurl = "{url}"\ntoken_file = "{token_file}"\nca_file = "{ca}"\n')
        desktop = {"VIDTRAY_DATA_DIR": str(tmp_path / "desktop-data")}
        res = run_cli("--config", str(conf), "generate", "a fox on the server", "--on", "remote", "--model",
                      TINY_REPO, "--frames", "8", "--steps", "3", "--height", "32", "--width", "32", "--seed", "4",
                      "--json", env=desktop, timeout=300)
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        video = Path(doc["path"])
        assert video.parent == tmp_path / "desktop-data" / "generated" / "videos" and video.stat().st_size > 0
        assert doc["seed"] == 4 and doc["device"] == "cpu" and doc["library_id"]
        sidecar = json.loads(sidecar_path(video).read_text())
        assert sidecar["remote"]["server"] == url
        # status (from the server's own status file, refreshed every few seconds)
        status = json.loads(run_cli("server", "status", "--json").stdout)
        assert status["running"] is True and status["url"] == url and status["slots"] == 1
        deadline = time.monotonic() + 30
        while "health" not in status and time.monotonic() < deadline:
            time.sleep(1)
            status = json.loads(run_cli("server", "status", "--json").stdout)
        assert status["health"]["slots"][0]["device"] == "cpu"
        text = run_cli("server", "status").stdout
        assert text.startswith(f"running (pid {up.pid}) at {url}") and f"CA file for desktops: {ca}" in text
        # A second `up` is refused while this one runs.
        again = run_cli("server", "up", "--self-signed", "--device", "cpu", "--port", str(free_port()))
        assert again.returncode == 2 and "already runs here" in again.stderr
        down = run_cli("server", "down", timeout=120)
        assert down.returncode == 0 and down.stdout == f"stopped the server at {url}\n"
        assert up.wait(30) == 0
        assert not Path(isolated_env["VIDTRAY_DATA_DIR"], "server", "server.json").exists()
    finally:
        if up.poll() is None:
            up.terminate()
            up.wait(60)
