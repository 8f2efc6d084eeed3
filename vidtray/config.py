"""Settings: a TOML file (every key optional) plus env overrides, validated, with derived paths.

``load_config()`` finds the file (``--config`` > ``VIDTRAY_CONFIG`` > the platform config dir),
``Config.from_string()`` parses text so tests need no files. Every problem is a ``ConfigError``
naming the file and the key. The dataclasses below are the one list of keys: each carries its
default and a one-line description (``config_template()`` writes the settings file from them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

from vidtray import params
from vidtray.errors import ConfigError
from vidtray.params import DEVICES
from vidtray.paths import Paths, default_config_path, default_data_dir
from vidtray.services.speedopts import SPEEDUPS

DEFAULT_MODEL = "cerspense/zeroscope_v2_576w"
OFFLOADS = ("auto", "none", "model", "sequential")
#: Where a job runs: this machine's worker, or a vidtray GPU server (``[remote]``).
EXECUTORS = ("local", "remote")
#: What a remote job does while the server cannot be reached: wait for it, or run on this machine.
REMOTE_FALLBACKS = ("wait", "local")
#: The library page's port when ``library_port`` is 0 (and it is free; else any free port).
LIBRARY_PORT = 47480
BUDGET_ACTIONS = ("notify", "apply")


T = TypeVar("T")


@overload
def _key(doc: str, default: T) -> T: ...
@overload
def _key(doc: str, *, factory: Callable[[], T]) -> T: ...
def _key(doc: str, default: object = dataclasses.MISSING, *, factory: object = dataclasses.MISSING) -> Any:
    """A config key: its default and the short comment the settings file shows beside it."""
    return field(default=default, default_factory=factory, metadata={"doc": doc})  # type: ignore[call-overload]


def _gen_key(name: str, default: T) -> T:
    """A ``[generation]`` key: its limits and comment come from the generation-parameter schema."""
    return _key(params.FIELDS[name].describe(default=False), default)


@dataclass(frozen=True)
class Generation:
    """Defaults for new generation jobs (``[generation]`` table); the keys are ``params.CONFIG_KEYS``."""

    frames: int = _gen_key("frames", 24)
    steps: int = _gen_key("steps", 40)
    height: int = _gen_key("height", 320)
    width: int = _gen_key("width", 576)
    fps: float = _gen_key("fps", 8)


@dataclass(frozen=True)
class Remote:
    """A vidtray GPU server (``[remote]`` table): where ``executor = "remote"`` jobs run."""

    url: str = _key("https://gpu-box:8443 (HTTPS only)", "")
    token_file: str = _key("a file holding your token from `vidtray server token create` (keep it 0600)", "")
    ca_file: str = _key("the server's CA certificate, pinned (empty: the system's CAs)", "")

    @property
    def configured(self) -> bool:
        return bool(self.url)


@dataclass(frozen=True)
class Config:
    data_dir: Path = _key("videos go to <data_dir>/generated/videos", factory=default_data_dir)
    library_path: Path | None = _key("default <data_dir>/library.json", None)
    watch_dirs: tuple[Path, ...] = _key("more folders to import finished videos from", ())
    model: str = _key("a Hugging Face repo id or a local diffusers folder", DEFAULT_MODEL)
    device: str = _key(" | ".join(DEVICES), "auto")
    offload: str = _key(" | ".join(OFFLOADS) + " (GPU memory vs. speed)", "auto")
    keep_alive_s: float = _key("seconds idle before the worker unloads the model (frees GPU memory)", 300.0)
    min_free_gb: float = _key("GiB: below this free, generations wait (the queue pauses)", 1.0)
    warn_free_gb: float = _key("GiB: notify below this", 5.0)
    disk_check_interval_s: float = _key("seconds between free-space checks", 600.0)
    prune_after_days: float = _key("delete older videos (never pinned or scheduled ones); 0 = never", 30.0)
    prune_interval_s: float = _key("seconds between prunes", 86400.0)
    prune_to_trash: bool = _key("false: delete for good instead of to the trash", True)
    notifications: bool = _key("desktop notifications", True)
    library_port: int = _key(f"the library page's port (0 = {LIBRARY_PORT} if free, else any free one)", 0)
    library_page_idle_s: float = _key("seconds without a request before a library page started by the tray "
                                      "stops (0 = never)", 1800.0)
    storage_budget_gb: float = _key("GiB for videos, thumbnails, latents, the model cache, xet/ and "
                                    "partial downloads; 0 = off", 0.0)
    model_unused_days: float = _key("a model vidtray has not used for this long may go to meet the budget", 30.0)
    partial_keep_days: float = _key("younger interrupted downloads are kept (a pull resumes them)", 7.0)
    budget_action: str = _key(" | ".join(BUDGET_ACTIONS) + " (the plan), when over the budget or below "
                              "warn_free_gb", "notify")
    low_disk_empty_trash: bool = _key("below min_free_gb, empty what vidtray itself put in the trash", False)
    compile: bool = _key("torch.compile the denoiser (CUDA only; the first job of each size compiles for a "
                         "minute or more, the keep-alive worker keeps it)", False)
    speedups: tuple[str, ...] = _key(f"GPU speed options to use: any of {', '.join(SPEEDUPS)} (measure first: "
                                     "benchmarks/gpu_run.sh)", ())
    executor: str = _key(" | ".join(EXECUTORS) + ": where new jobs run (remote: the [remote] server)", "local")
    remote_fallback: str = _key(" | ".join(REMOTE_FALLBACKS) + ": remote jobs while the server cannot be reached",
                                "wait")
    generation: Generation = field(default_factory=Generation)
    remote: Remote = field(default_factory=Remote)
    # Where the settings came from (a path, "<string>", or "defaults"); not a TOML key.
    source: str = "defaults"

    # -- derived paths: what vidtray writes, under data_dir (README "Configuration"); owned by vidtray.paths --
    @property
    def paths(self) -> Paths:
        return Paths.of(self.data_dir, self.library_path)

    @property
    def videos_dir(self) -> Path:
        return self.paths.videos_dir

    @property
    def partial_dir(self) -> Path:
        return self.paths.partial_dir

    @property
    def library_file(self) -> Path:
        return self.paths.library_file

    @property
    def thumbnails_dir(self) -> Path:
        return self.paths.thumbnails_dir

    @property
    def queue_dir(self) -> Path:
        return self.paths.queue_dir

    @property
    def state_dir(self) -> Path:
        return self.paths.state_dir

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_string(cls, text: str, source: str = "<string>", env: Mapping[str, str] | None = None) -> Config:
        try:
            raw = tomllib.loads(text.removeprefix("\ufeff"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, f"not valid TOML ({exc})") from None
        return cls.from_mapping(raw, source, env)

    @classmethod
    def from_path(cls, path: Path, env: Mapping[str, str] | None = None) -> Config:
        try:
            # utf-8-sig: a file saved by Notepad and friends starts with a byte-order mark; TOML wants none.
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise ConfigError(str(path), "config file not found") from None
        except IsADirectoryError:
            raise ConfigError(str(path), "is a folder, not a config file") from None
        except UnicodeDecodeError:
            raise ConfigError(str(path), "not valid TOML (not UTF-8 text)") from None
        except OSError as exc:
            raise ConfigError(str(path), f"cannot be read ({exc.strerror})") from None
        return cls.from_string(text, str(path), env)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object], source: str, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        # Any: each key's parser returns its field's type, which the dataclass checks, not this dict.
        values: dict[str, Any] = {"source": source}
        for key, value in raw.items():
            if key == "generation":
                values["generation"] = _parse_generation(value, source)
            elif key == "remote":
                values["remote"] = _parse_remote(value, source)
            elif key in _PARSERS:
                values[key] = _PARSERS[key](value, source, key)
            else:
                raise ConfigError(source, "unknown key", key)
        if env.get("VIDTRAY_DATA_DIR"):
            values["data_dir"] = _path(env["VIDTRAY_DATA_DIR"], "VIDTRAY_DATA_DIR", "data_dir")
        cfg = cls(**values)
        if cfg.executor == "remote" and not cfg.remote.url:
            raise ConfigError(source, "is \"remote\" but [remote] has no url", "executor")
        if "warn_free_gb" in raw or "min_free_gb" in raw:
            if cfg.warn_free_gb < cfg.min_free_gb:
                raise ConfigError(source, "must be >= min_free_gb", "warn_free_gb")
        return cfg

    def as_dict(self) -> dict[str, object]:
        """JSON-ready view, derived paths included (``vidtray config show --json``)."""
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("generation", "remote"):
                value = dataclasses.asdict(value)
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [str(v) for v in value]
            out[f.name] = value
        out["library_path"] = str(self.library_file)
        out["videos_dir"] = str(self.videos_dir)
        out["thumbnails_dir"] = str(self.thumbnails_dir)
        out["queue_dir"] = str(self.queue_dir)
        return out


def config_template() -> str:
    """The settings file the tray's "Settings" item creates: every key, commented out, with its real
    default (this platform's paths) and what it is for. Uncommenting a line keeps the default."""
    lines = [
        "# vidtray settings. Every key is optional; remove the '#' in front of one to change it.",
        "# The values shown are the defaults. Reference: the README's \"Configuration\" section.",
        "# Restart the tray (or `vidtray watch`) after editing.",
        "",
    ]
    defaults = Config()

    def entries(obj: Config | Generation | Remote) -> list[str]:
        out = []
        for f in dataclasses.fields(obj):
            if "doc" not in f.metadata:
                continue
            value = getattr(obj, f.name)
            if value is None and f.name == "library_path":
                value = defaults.library_file
            out.append((f"# {f.name} = {_toml_value(value)}", f.metadata["doc"]))
        # One comment column; a long path pushes only its own comment further right.
        width = min(36, max(len(key) for key, _ in out))
        return [f"{key:<{width}}  # {doc}" for key, doc in out]

    lines += entries(defaults)
    lines += ["", "# [generation]  # defaults for new jobs (the popup and `vidtray generate` start from these)"]
    lines += entries(defaults.generation)
    lines += ["", "# [remote]  # a vidtray GPU server (`vidtray server up` on it); README \"Shared GPU servers\""]
    lines += entries(defaults.remote)
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # JSON's string escapes are TOML's (ensure_ascii=False: no surrogate pairs, which TOML refuses).
    return json.dumps(str(value), ensure_ascii=False)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load settings: ``path`` (must exist) > ``$VIDTRAY_CONFIG`` (must exist) > default file (optional)."""
    env = os.environ if env is None else env
    explicit = path if path is not None else env.get("VIDTRAY_CONFIG") or None
    if explicit is not None:
        return Config.from_path(Path(explicit).expanduser(), env)
    default = default_config_path()
    if default.is_file():
        return Config.from_path(default, env)
    return Config.from_mapping({}, "defaults", env)


def config_path(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The config file that ``load_config`` reads (or would read)."""
    env = os.environ if env is None else env
    explicit = path if path is not None else env.get("VIDTRAY_CONFIG") or None
    return Path(explicit).expanduser() if explicit is not None else default_config_path()


# -- value parsers: (value, source, key) -> typed value, or ConfigError ------------------------


def _type_name(value: object) -> str:
    return {bool: "a boolean", str: "a string", list: "a list", dict: "a table"}.get(
        type(value), type(value).__name__
    )


def _path(value: object, source: str, key: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(source, f"must be a non-empty path string, got {_type_name(value)}", key)
    return Path(value).expanduser()


#: Upper bounds for times: a timer (APScheduler, threading) overflows long before 1e300 s, and nothing
#: vidtray waits for is useful beyond these.
YEAR_S = 365 * 86400
MAX_DAYS = 36500
#: A budget beyond this (a billion GiB) is a typo, not a disk.
MAX_BUDGET_GB = 1e9


#: A key's parser: (value, source, key) -> the key's typed value, or ConfigError.
Parser = Callable[[object, str, str], T]


def _number(minimum: float, *, strict: bool, maximum: float | None = None) -> Parser[float]:
    def parse(value: object, source: str, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, f"must be a number, got {_type_name(value)}", key)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(source, "must be a finite number", key)
        if (strict and value <= minimum) or value < minimum:
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            raise ConfigError(source, f"must be {bound}, got {value}", key)
        if maximum is not None and value > maximum:
            raise ConfigError(source, f"must be at most {maximum:.0f}, got {value:g}", key)
        return float(value)

    return parse


def _port(value: object, source: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(source, f"must be a whole number (a TCP port), got {_type_name(value)}", key)
    if not 0 <= value <= 65535:
        raise ConfigError(source, f"must be a port from 1 to 65535, or 0 for the default, got {value}", key)
    return value


def _choice(choices: tuple[str, ...]) -> Parser[str]:
    def parse(value: object, source: str, key: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ConfigError(source, f"must be one of {', '.join(choices)}, got {value!r}", key)
        return value

    return parse


def _bool(value: object, source: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(source, f"must be true or false, got {_type_name(value)}", key)
    return value


def _schema(value: object, source: str, key: str) -> str:
    """A top-level key that is also a generation parameter (model, device): the schema's rule (a text
    field or a choice of texts, so what passes is a string)."""
    params.check(key, value, params.Source.config(source, table=""))
    return str(value).strip()


def _speedups(value: object, source: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(source, f"must be a list of option names, got {_type_name(value)}", key)
    unknown = [v for v in value if v not in SPEEDUPS]
    if unknown:
        raise ConfigError(source, f"unknown option {unknown[0]!r} (known: {', '.join(SPEEDUPS)})", key)
    return tuple(dict.fromkeys(value))


def _paths(value: object, source: str, key: str) -> tuple[Path, ...]:
    if not isinstance(value, list):
        raise ConfigError(source, f"must be a list of folder paths, got {_type_name(value)}", key)
    return tuple(_path(v, source, key) for v in value)


_PARSERS: dict[str, Parser[object]] = {
    "data_dir": _path,
    "library_path": _path,
    "watch_dirs": _paths,
    "model": _schema,
    "device": _schema,
    "offload": _choice(OFFLOADS),
    "keep_alive_s": _number(0, strict=False, maximum=YEAR_S),
    "min_free_gb": _number(0, strict=False),
    "warn_free_gb": _number(0, strict=False),
    "disk_check_interval_s": _number(0, strict=True, maximum=YEAR_S),
    "prune_after_days": _number(0, strict=False, maximum=MAX_DAYS),
    "prune_interval_s": _number(0, strict=True, maximum=YEAR_S),
    "prune_to_trash": _bool,
    "notifications": _bool,
    "library_port": _port,
    "library_page_idle_s": _number(0, strict=False, maximum=YEAR_S),
    "storage_budget_gb": _number(0, strict=False, maximum=MAX_BUDGET_GB),
    "model_unused_days": _number(0, strict=False, maximum=MAX_DAYS),
    "partial_keep_days": _number(0, strict=False, maximum=MAX_DAYS),
    "budget_action": _choice(BUDGET_ACTIONS),
    "low_disk_empty_trash": _bool,
    "compile": _bool,
    "speedups": _speedups,
    "executor": _choice(EXECUTORS),
    "remote_fallback": _choice(REMOTE_FALLBACKS),
}


def _parse_generation(value: object, source: str) -> Generation:
    """The ``[generation]`` table, checked by the generation-parameter schema (the CLI's limits)."""
    if not isinstance(value, dict):
        raise ConfigError(source, f"must be a table, got {_type_name(value)}", "generation")
    out: dict[str, Any] = {}  # Any: as in Config.from_mapping
    for key, v in value.items():
        if key not in params.CONFIG_KEYS:
            raise ConfigError(source, "unknown key", f"generation.{key}")
        out[key] = params.check(key, v, params.Source.config(source))
    return Generation(**out)


def _string(value: object, source: str, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(source, f"must be a string, got {_type_name(value)}", key)
    return value.strip()


def _remote_url(value: object, source: str, key: str) -> str:
    """``https://host[:port][/prefix]``; plain HTTP is refused (a token would cross the network readable)."""
    from urllib.parse import urlsplit

    url = _string(value, source, key)
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigError(source, f"is not a URL ({exc}): {url!r}", key) from None
    if parts.scheme != "https":
        raise ConfigError(source, f"must start with https:// (the server speaks HTTPS only), got {url!r}", key)
    if not parts.hostname or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(source, f"must be https://HOST[:PORT], got {url!r}", key)
    return url.rstrip("/")


def _file(value: object, source: str, key: str) -> str:
    text = _string(value, source, key)
    return str(Path(text).expanduser()) if text else ""


_REMOTE_PARSERS: dict[str, Parser[str]] = {"url": _remote_url, "token_file": _file, "ca_file": _file}


def _parse_remote(value: object, source: str) -> Remote:
    """The ``[remote]`` table."""
    if not isinstance(value, dict):
        raise ConfigError(source, f"must be a table, got {_type_name(value)}", "remote")
    out: dict[str, str] = {}
    for key, v in value.items():
        if key not in _REMOTE_PARSERS:
            raise ConfigError(source, "unknown key", f"remote.{key}")
        out[key] = _REMOTE_PARSERS[key](v, source, f"remote.{key}")
    if out.get("url") and not out.get("token_file"):
        raise ConfigError(source, "is needed with remote.url (a file with your token)", "remote.token_file")
    return Remote(**out)
