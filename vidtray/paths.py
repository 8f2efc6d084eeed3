"""Where vidtray keeps things, and how much room there is: the one owner of every location.

- Per-user folders (platformdirs): the config file, the default data folder, the log folder, the tray lock.
- ``Paths.of(data_dir, library_path)``: everything under the data folder (DESIGN.md "Data").
  ``Config`` derives its paths through it; tests build one on ``tmp_path``.
- The Hugging Face hub cache and the Xet cache beside it, computed now from the environment.
- Free space of the volume that holds a path (a folder not created yet counts on its parent's volume).

Cheap to import (stdlib and platformdirs): the CLI, the tray and the popup all use it.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import platformdirs

log = logging.getLogger("vidtray.paths")

APP = "vidtray"
#: The queue's low-disk pause flag, in the queue folder beside its database (not a job file of the old queue).
PAUSE_FILE = "paused.json"


# -- per-user folders ------------------------------------------------------------------------------


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP, appauthor=False)) / "config.toml"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def log_dir() -> Path:
    """The log folder: ``VIDTRAY_LOG_DIR`` if set, else the platform's."""
    override = os.environ.get("VIDTRAY_LOG_DIR")
    return Path(override) if override else Path(platformdirs.user_log_dir(APP, appauthor=False))


def tray_lock_dir() -> Path:
    """The tray's lock and pid file: per user, not per data folder, so two configs cannot run two trays."""
    return Path(platformdirs.user_state_dir(APP, appauthor=False))


# -- the data folder -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    """Everything vidtray keeps under the data folder (``Paths.of``); tests may build one pointing anywhere."""

    data_dir: Path
    library_file: Path  # <data_dir>/library.json unless library_path moves it
    videos_dir: Path  # finished videos and their sidecars
    partial_dir: Path  # in-progress files and saved latents: never imported, never counted as finished
    thumbnails_dir: Path
    queue_dir: Path  # the job queue's database (queue.sqlite3), its pause flag, the old queue's backup
    pause_flag: Path  # exists while the queue is paused
    state_dir: Path  # small runtime state that is not user data
    removed_file: Path  # what the user removed from the library (kept out of later imports)
    jobs_state_file: Path  # the scheduled jobs' own state (when the last prune ran)
    page_token_file: Path  # the library page's access token (0600): per user, kept across restarts
    page_server_file: Path  # the running library page server's port, pid and URL (so a second open reuses it)
    model_use_file: Path  # when vidtray's worker last used each model (``services.modeluse``)
    trash_record_file: Path  # what vidtray moved to the trash (``services.trash``)
    memory_plans_file: Path  # the memory plan that worked after running out of GPU memory (``services.planmemory``)
    server_dir: Path  # a GPU server's own things (`vidtray server`): tokens, TLS, its slots' work folders

    @property
    def server_tokens_file(self) -> Path:
        """The server's access tokens, hashed (0600)."""
        return self.server_dir / "tokens.json"

    @property
    def server_tls_dir(self) -> Path:
        """``--self-signed``: the CA (``ca.pem``, handed to desktops) and the server's key and certificate."""
        return self.server_dir / "tls"

    @property
    def server_state_file(self) -> Path:
        """The running ``vidtray server up``: its pid, URL and Ray address (for ``status`` and ``down``)."""
        return self.server_dir / "server.json"

    @property
    def server_slots_dir(self) -> Path:
        """One work folder per slot (its worker's videos until a desktop fetched them)."""
        return self.server_dir / "slots"

    @classmethod
    def of(cls, data_dir: Path, library_path: Path | None = None) -> Paths:
        videos, queue, state = data_dir / "generated" / "videos", data_dir / "queue", data_dir / "state"
        return cls(
            data_dir=data_dir, library_file=library_path if library_path is not None else data_dir / "library.json",
            videos_dir=videos, partial_dir=videos / ".partial", thumbnails_dir=data_dir / "thumbnails",
            queue_dir=queue, pause_flag=queue / PAUSE_FILE,
            state_dir=state, removed_file=state / "removed.json", jobs_state_file=state / "jobs.json",
            page_token_file=state / "page-token", page_server_file=state / "page-server.json",
            model_use_file=state / "models_used.json", trash_record_file=state / "trashed.json",
            memory_plans_file=state / "memory_plans.json",
            server_dir=data_dir / "server",
        )


# -- the Hugging Face cache ------------------------------------------------------------------------


def hf_cache_dir() -> Path:
    """The hub cache, by huggingface_hub's own rules (``HF_HUB_CACHE`` > ``HUGGINGFACE_HUB_CACHE`` >
    ``HF_HOME``/hub > ``XDG_CACHE_HOME``/huggingface/hub, ``~`` and ``$VARS`` expanded) but read now:
    huggingface_hub reads them once at import. vidtray passes this folder to every huggingface_hub call,
    so reports, cleanups and downloads all name the same cache. An empty variable counts as unset."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(_expand(os.environ[name]))
    return hf_home() / "hub"


def hf_home() -> Path:
    """``HF_HOME``, else ``XDG_CACHE_HOME``/huggingface (``~/.cache/huggingface``): where huggingface_hub keeps
    the login token, the hub cache and the Xet cache."""
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(_expand(home))


def hf_xet_dir() -> Path:
    """The Xet cache of hf_xet (chunks and shards of Xet downloads): ``HF_XET_CACHE``, else ``HF_HOME``/xet."""
    override = os.environ.get("HF_XET_CACHE")
    return Path(_expand(override)) if override else hf_home() / "xet"


def _expand(path: str) -> str:
    return os.path.expandvars(os.path.expanduser(path))


# -- free space ------------------------------------------------------------------------------------


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (a folder not created yet lives on its parent's volume)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def disk_usage(path: Path) -> tuple[int, int] | None:
    """(free, total) bytes of the volume holding ``path``; None when it cannot be read."""
    where = nearest_existing(path)
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        log.warning("cannot read free space of %s: %s", where, exc)
        return None
    return usage.free, usage.total


def free_bytes(path: Path) -> int | None:
    """Free bytes of the volume holding ``path``; None when it cannot be read."""
    usage = disk_usage(path)
    return None if usage is None else usage[0]


def mount_point(path: Path) -> Path:
    """The mount point holding ``path`` (its nearest existing parent): the volume's name for a person."""
    path = nearest_existing(path)
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path
