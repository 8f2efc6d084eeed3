"""The built wheel ships the package data and the entry points a user relies on."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_icons_and_entry_points(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    [wheel] = tmp_path.glob("vidtray-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for icon in ("idle", "busy", "warning"):
        assert f"vidtray/icons/{icon}.png" in names and f"vidtray/icons/{icon}.ico" in names
    for sub in ("services", "tray", "icons", "commands"):
        assert f"vidtray/{sub}/__init__.py" in names
    # the library page's templates and static files
    assert {"vidtray/web/templates/base.html", "vidtray/web/static/app.js", "vidtray/web/static/app.css"} <= names
    assert not any(n.startswith(("tests/", "services/", "tray/")) for n in names)
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "vidtray = vidtray.cli:main" in entry_points
    assert "vidtray-tray = vidtray.cli:tray_main" in entry_points


def test_icons_load_from_the_package():
    from PIL import Image

    from vidtray.icons import NAMES, icon_path

    for name in NAMES:
        with Image.open(icon_path(name)) as img:
            assert img.size == (64, 64)
        assert icon_path(name, "ico").stat().st_size > 0


def test_python_dash_m_works(cli):
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("vidtray ")
