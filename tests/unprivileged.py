"""Run a child process for which file permissions hold, even when the tests run as root.

Root reads a chmod-000 file anyway (CAP_DAC_OVERRIDE), so "unreadable" cannot be tried in-process. The
child drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from its capability bounding set before exec: it
stays uid 0 (it can still use the root-owned Python and test folders) but mode bits apply to it.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from typing import Any

import pytest

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _drop_dac() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """subprocess.run(args) in a child that file modes apply to (skips the test where that is impossible)."""
    preexec = None
    if os.geteuid() == 0:
        if not sys.platform.startswith("linux"):
            pytest.skip("running as root, and dropping file-permission capabilities needs Linux")
        try:
            subprocess.run(["true"], preexec_fn=_drop_dac, capture_output=True, check=True)  # noqa: PLW1509
        except (subprocess.SubprocessError, OSError):
            pytest.skip("running as root without the right to drop capabilities: chmod does not bind root")
        preexec = _drop_dac
    return subprocess.run(args, preexec_fn=preexec, capture_output=True, text=True, **kw)  # noqa: PLW1509
