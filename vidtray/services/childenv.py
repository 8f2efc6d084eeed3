"""The environment for vidtray's own child processes (the worker, the tray's popup, dialogs and reports).

Each child runs ``python -m vidtray...`` with this interpreter and must import this same vidtray. An
installed one it finds by itself; a source checkout run in place (``python -m vidtray`` from the checkout,
or a second checkout beside an editable install) needs its folder on ``PYTHONPATH``. Only that case gets
it: prepending an installed vidtray's folder would put site-packages ahead of the standard library in the
child. Standard library only, so it runs before anything else is importable.
"""

from __future__ import annotations

import functools
import os
import site
import sysconfig
from collections.abc import Mapping
from pathlib import Path

#: The folder that holds the ``vidtray`` package (a checkout's root, or site-packages when installed).
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def library_dirs() -> frozenset[str]:
    """Where this interpreter imports installed packages and the standard library from (real paths)."""
    dirs = set(site.getsitepackages()) if hasattr(site, "getsitepackages") else set()
    dirs.add(site.getusersitepackages())
    paths = sysconfig.get_paths()
    dirs.update(paths[key] for key in ("purelib", "platlib", "stdlib", "platstdlib") if key in paths)
    return frozenset(os.path.realpath(d) for d in dirs)


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment), with this vidtray's folder put first on
    ``PYTHONPATH`` when a child would not import it otherwise."""
    env = dict(os.environ if base is None else base)
    existing = env.get("PYTHONPATH", "")
    on_path = {os.path.realpath(p) for p in existing.split(os.pathsep) if p}
    if str(PACKAGE_PARENT) in library_dirs() | on_path:
        return env
    env["PYTHONPATH"] = str(PACKAGE_PARENT) + (os.pathsep + existing if existing else "")
    return env
