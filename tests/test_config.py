from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vidtray.config import Config, load_config
from vidtray.errors import ConfigError


def test_defaults_and_derived_paths(isolated_env):
    cfg = Config.from_mapping({}, "<test>")
    assert cfg.data_dir == isolated_env["VIDTRAY_DATA_DIR"]
    assert cfg.videos_dir == cfg.data_dir / "generated" / "videos"
    assert cfg.partial_dir == cfg.videos_dir / ".partial"
    assert cfg.library_file == cfg.data_dir / "library.json"
    assert cfg.model == "cerspense/zeroscope_v2_576w"
    assert cfg.generation.frames == 24 and cfg.generation.width == 576


def test_every_key(tmp_path):
    text = f"""
data_dir = "{tmp_path / 'd'}"
library_path = "{tmp_path / 'lib.json'}"
watch_dirs = ["{tmp_path / 'w'}"]
model = "some/model"
device = "cpu"
offload = "model"
keep_alive_s = 10
min_free_gb = 0.5
warn_free_gb = 2
disk_check_interval_s = 5
prune_after_days = 0
prune_interval_s = 60
prune_to_trash = false
notifications = false
library_port = 8123
library_page_idle_s = 600
[generation]
frames = 8
steps = 4
height = 64
width = 64
fps = 4
"""
    cfg = Config.from_string(text, "x.toml", env={})
    assert cfg.library_file == tmp_path / "lib.json"
    assert cfg.watch_dirs == (tmp_path / "w",)
    assert cfg.device == "cpu" and cfg.offload == "model" and not cfg.prune_to_trash
    assert cfg.generation.frames == 8 and cfg.generation.fps == 4
    assert cfg.data_dir == tmp_path / "d"
    assert cfg.library_port == 8123 and cfg.library_page_idle_s == 600


def test_env_data_dir_wins(tmp_path):
    cfg = Config.from_string('data_dir = "/elsewhere"', "x.toml", env={"VIDTRAY_DATA_DIR": str(tmp_path)})
    assert cfg.data_dir == tmp_path


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("frobs = 1", "frobs", "unknown key"),
        ("prune_after_days = -5", "prune_after_days", ">= 0"),
        ("min_free_gb = -1", "min_free_gb", ">= 0"),
        ("disk_check_interval_s = 0", "disk_check_interval_s", "> 0"),
        ("prune_interval_s = -3", "prune_interval_s", "> 0"),
        ("keep_alive_s = 'soon'", "keep_alive_s", "must be a number"),
        ("notifications = 1", "notifications", "true or false"),
        ("device = 'tpu'", "device", "one of"),
        ("watch_dirs = '/x'", "watch_dirs", "list"),
        ("warn_free_gb = 0.5", "warn_free_gb", ">= min_free_gb"),
        ("[generation]\nheight = 100", "generation.height", "multiple of 8"),
        # the generation-parameter schema's limits, the same as the CLI's (these used to fail late, or run)
        ("[generation]\nheight = 16", "generation.height", "must be between 32 and 2048, got 16"),
        ("[generation]\nsteps = 5000", "generation.steps", "must be between 1 and 1000, got 5000"),
        ("[generation]\nwidth = 4096", "generation.width", "must be between 32 and 2048, got 4096"),
        ("[generation]\nfps = 100000", "generation.fps", "must be a number from 0.1 to 120, got 100000"),
        ("[generation]\nframes = 2000", "generation.frames", "must be between 1 and 1024, got 2000"),
        ("[generation]\nframes = '24'", "generation.frames", "must be a whole number, got '24'"),
        ("model = '  '", "model", "must be a Hugging Face repo id or a folder"),
        ("[generation]\ncolour = 1", "generation.colour", "unknown key"),
        ("generation = 3", "generation", "table"),
        # timers overflow (OverflowError in APScheduler/threading) long before these
        ("disk_check_interval_s = 1e300", "disk_check_interval_s", "at most 31536000"),
        ("prune_interval_s = 1e20", "prune_interval_s", "at most 31536000"),
        ("keep_alive_s = 1e300", "keep_alive_s", "at most 31536000"),
        ("prune_after_days = 1e300", "prune_after_days", "at most 36500"),
        ("library_port = 70000", "library_port", "must be a port from 1 to 65535, or 0 for the default"),
        ("library_port = 80.5", "library_port", "must be a whole number"),
        ("library_port = true", "library_port", "must be a whole number"),
        ("library_page_idle_s = -1", "library_page_idle_s", ">= 0"),
    ],
)
def test_bad_values_name_file_and_key(text, key, fragment):
    with pytest.raises(ConfigError) as info:
        Config.from_string(text, "my.toml", env={})
    assert info.value.key == key
    assert str(info.value).startswith(f"my.toml: {key}: ")
    assert fragment in str(info.value)


def test_generation_fps_takes_the_same_numbers_as_the_cli() -> None:
    cfg = Config.from_string("[generation]\nfps = 7.5\n", "my.toml", env={})
    assert cfg.generation.fps == 7.5


def test_not_toml():
    with pytest.raises(ConfigError, match=r"^bad\.toml: not valid TOML"):
        Config.from_string("x = [", "bad.toml")


def test_load_order(tmp_path, monkeypatch, isolated_env):
    default = isolated_env["XDG_CONFIG_HOME"] / "vidtray" / "config.toml"
    default.parent.mkdir(parents=True)
    default.write_text('model = "from/default"')
    assert load_config().model == "from/default"
    env_file = tmp_path / "env.toml"
    env_file.write_text('model = "from/env"')
    monkeypatch.setenv("VIDTRAY_CONFIG", str(env_file))
    assert load_config().model == "from/env"
    arg_file = tmp_path / "arg.toml"
    arg_file.write_text('model = "from/arg"')
    assert load_config(arg_file).model == "from/arg"
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_cli_config_show_and_errors(cli, tmp_path):
    res = cli("config", "show", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["model"] == "cerspense/zeroscope_v2_576w" and doc["generation"]["steps"] == 40
    assert Path(doc["videos_dir"]).name == "videos"

    bad = tmp_path / "bad.toml"
    bad.write_text("prune_after_days = -1\n")
    res = cli("--config", str(bad), "config", "show")
    assert res.returncode == 2
    assert res.stderr.strip() == f"vidtray: error: {bad}: prune_after_days: must be >= 0, got -1"
    assert "Traceback" not in res.stderr

    res = cli("--config", str(tmp_path / "nope.toml"), "config", "show")
    assert res.returncode == 2 and "config file not found" in res.stderr

    res = cli("--config", str(tmp_path / "nope.toml"), "config", "path")
    assert res.returncode == 0 and res.stdout.strip() == str(tmp_path / "nope.toml")


def test_cli_usage_errors_are_one_line(cli):
    for args in (["frobnicate"], ["config", "show", "--bogus"], []):
        res = cli(*args)
        assert res.returncode == 2, args
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vidtray: error: "), res.stderr


def test_atomic_write_keeps_mode_and_leaves_no_temp(tmp_path):
    import os
    import stat

    from vidtray.services.fsutil import atomic_write_text

    target = tmp_path / "out" / "library.json"
    target.parent.mkdir()
    umask = os.umask(0o002)
    try:
        atomic_write_text(target, "one")
    finally:
        os.umask(umask)
    # a new file holds prompts: private whatever the umask; an existing file keeps its mode
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    target.chmod(0o640)
    atomic_write_text(target, "two")
    assert target.read_text() == "two" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in target.parent.iterdir()] == ["library.json"]


def _uncomment(template: str) -> str:
    """The settings of a template, uncommented: "# key = ..." and "# [table]" lines."""
    return "\n".join(line[2:] if re.match(r"# ([a-z_]+ = |\[)", line) else line for line in template.splitlines())


def test_settings_template_shows_every_key_with_its_real_default(tmp_path) -> None:
    import dataclasses

    from vidtray.config import _PARSERS, _REMOTE_PARSERS, Generation, Remote, config_template, default_data_dir
    from vidtray.params import CONFIG_KEYS

    text = config_template()
    defaults = Config.from_mapping({}, "template", env={})
    # As written (all commented out) it is the defaults; so is every line uncommented.
    assert Config.from_string(text, "template", env={}) == defaults
    uncommented = Config.from_string(_uncomment(text), "template", env={})
    assert {k: v for k, v in uncommented.as_dict().items() if k != "source"} == \
        {k: v for k, v in defaults.as_dict().items() if k != "source"}
    # Every key, once, with a comment; the values are this platform's real defaults.
    settings = re.findall(r"^# ([a-z_]+) = (.+?)  +# \S", text, flags=re.M)
    keys = [k for k, _ in settings]
    assert keys == [*_PARSERS, *CONFIG_KEYS, *_REMOTE_PARSERS]
    assert len(set(keys)) == len(keys)
    assert [f.name for f in dataclasses.fields(Remote)] == list(_REMOTE_PARSERS)
    assert [f.name for f in dataclasses.fields(Generation)] == list(CONFIG_KEYS)
    values = dict(settings)
    assert values["data_dir"] == json.dumps(str(default_data_dir()))
    assert values["library_path"] == json.dumps(str(default_data_dir() / "library.json"))
    assert values["warn_free_gb"] == "5" and values["prune_to_trash"] == "true" and values["watch_dirs"] == "[]"
    assert values["keep_alive_s"] == "300" and values["offload"] == '"auto"'
    assert "# [generation]" in text and "# [remote]" in text
    # One source of truth: every field of the dataclasses is a documented key.
    for cls in (Config, Generation, Remote):
        for f in dataclasses.fields(cls):
            assert f.name in ("source", "generation", "remote") or f.metadata.get("doc"), f.name


def test_settings_template_paths_round_trip(monkeypatch, tmp_path) -> None:
    from vidtray.config import config_template, default_data_dir

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / 'Vidéos "ä" \\ 🎬'))  # platformdirs' data dir
    assert "🎬" in str(default_data_dir())
    cfg = Config.from_string(_uncomment(config_template()), "template", env={})
    assert cfg.data_dir == default_data_dir() and cfg.library_file == default_data_dir() / "library.json"


def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path, cli):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbfmodel = \"from/notepad\"\r\n")
    assert load_config(path).model == "from/notepad"
    res = cli("--config", str(path), "config", "show", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["model"] == "from/notepad"


def test_a_huge_interval_is_one_line_at_start_not_a_traceback(tmp_path, cli):
    path = tmp_path / "big.toml"
    path.write_text("disk_check_interval_s = 1e300\n")
    res = cli("--config", str(path), "watch", timeout=60)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        f"vidtray: error: {path}: disk_check_interval_s: must be at most 31536000, got 1e+300"]
