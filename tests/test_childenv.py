"""Children import this same vidtray: a checkout run in place is put on PYTHONPATH, an installed vidtray is
not (its folder is site-packages, which must not go ahead of the standard library)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

from vidtray.services import worker_process
from vidtray.services.childenv import child_env
from vidtray.tray import children


def test_a_checkout_goes_first_on_pythonpath_once() -> None:
    assert child_env({})["PYTHONPATH"] == str(ROOT)
    assert child_env({"PYTHONPATH": "/x"})["PYTHONPATH"] == f"{ROOT}{os.pathsep}/x"
    # Already there (a test harness's shim before it stays before it): left as it is.
    shimmed = {"PYTHONPATH": f"/shim{os.pathsep}{ROOT}"}
    assert child_env(shimmed) == shimmed
    assert child_env({"A": "1"})["A"] == "1"


def test_the_tray_and_the_worker_use_it() -> None:
    assert children.child_env is child_env and worker_process.child_env is child_env


def test_a_worker_child_imports_this_vidtray(tmp_path: Path) -> None:
    # What WorkerProcess.start() gives its child, from a folder where nothing else would find this checkout.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", "import vidtray; print(vidtray.__file__)"], cwd=tmp_path,
                         env=child_env(env), capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == str(ROOT / "vidtray" / "__init__.py"), out.stderr


def test_an_installed_vidtray_leaves_pythonpath_alone(tmp_path: Path) -> None:
    # A real virtual environment with vidtray in its site-packages (the package alone: childenv needs
    # only the standard library), run from elsewhere without PYTHONPATH.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    shutil.copytree(ROOT / "vidtray", Path(site) / "vidtray", ignore=shutil.ignore_patterns("__pycache__"))
    probe = ("import json, vidtray.services.childenv as c\n"
             "print(json.dumps([c.PACKAGE_PARENT.as_posix(), c.child_env().get('PYTHONPATH')]))")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    out = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    parent, pythonpath = json.loads(out.stdout)
    assert Path(parent).resolve() == Path(site).resolve()
    assert pythonpath is None  # before: <venv>/lib/python3.X/site-packages, ahead of the standard library
