"""The tray's child processes: the prompt popup, confirmation dialogs (Tk, each its own process, so the tray
never imports Tk) and ``vidtray`` CLI children (reports such as ``storage --json``, and ``clean model``).

Which thread calls it: ``open_popup`` from the main thread (its wait runs on ``tray-popup``); ``dialog``
and ``run_cli`` from ``tray-action`` and ``tray-storage``; ``end`` from the quit. Every child runs this
vidtray with this config (``config_arg``) and the environment of ``childenv``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from vidtray.services.childenv import child_env
from vidtray.tray import tkhelp

log = logging.getLogger("vidtray.tray")

CHILD_TIMEOUT_S = 600.0


class Children:
    def __init__(self, config_arg: str | None, stopping: threading.Event) -> None:
        self.config_arg = config_arg
        self.stopping = stopping  # set when the tray quits: a child that then fails is no news
        self._popup: subprocess.Popen[bytes] | None = None
        self._dialogs: set[subprocess.Popen[str]] = set()
        self._reports: set[subprocess.Popen[str]] = set()  # running read-only children

    def _config_args(self) -> list[str]:
        return ["--config", str(Path(self.config_arg).expanduser().absolute())] if self.config_arg else []

    # -- the prompt popup (main thread) --------------------------------------------------------------------
    def popup_open(self) -> bool:
        return self._popup is not None and self._popup.poll() is None

    def open_popup(self, on_done: Callable[[str], None], on_error: Callable[[str], None],
                   spawn: Callable[[str, Callable[[], None]], None]) -> None:
        """Start the prompt window; ``on_done(its line)`` when it queued a job, ``on_error(reason)`` when it
        could not open or failed (called on ``tray-popup``, which ``spawn`` starts). OSError if it cannot
        be started at all."""
        argv = [sys.executable, "-m", "vidtray.tray.popup", *self._config_args()]
        proc = subprocess.Popen(argv, env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self._popup = proc
        spawn("tray-popup", lambda: self._wait_popup(proc, on_done, on_error))

    def _wait_popup(self, proc: subprocess.Popen[bytes], on_done: Callable[[str], None],
                    on_error: Callable[[str], None]) -> None:
        out, err = proc.communicate()
        if proc.returncode == 0:
            on_done(out.decode(errors="replace").strip())
            return
        text = err.decode(errors="replace")
        # 1 without a word: closed without queueing. Anything else is something the user must hear
        # about, or the click that opened nothing would say nothing.
        if self.stopping.is_set() or (proc.returncode == 1 and "vidtray: error:" not in text):
            return
        on_error(child_error(text, proc.returncode, "the prompt window"))

    # -- dialogs and CLI children (tray-action, tray-storage) ----------------------------------------------
    def dialog(self, kind: str, message: str, ok: str, default: float | None = None) -> str | None:
        """A Tk dialog child: its stdout when confirmed, None when cancelled; RuntimeError, saying why,
        when it could not open (Tk missing, no display)."""
        argv = [sys.executable, "-m", "vidtray.tray.dialog", kind, "--title", "vidtray", "--message", message,
                "--ok", ok]
        if default is not None:
            argv += ["--default", f"{default:g}"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                                stdin=subprocess.DEVNULL)
        self._dialogs.add(proc)
        try:
            out, err = proc.communicate()
        finally:
            self._dialogs.discard(proc)
        if proc.returncode == 0:
            return out.strip()
        if proc.returncode == 1 or self.stopping.is_set():
            return None
        raise RuntimeError(child_error(err, proc.returncode, "the confirmation dialog"))

    def run_cli(self, args: Sequence[str], timeout: float = CHILD_TIMEOUT_S, *, read_only: bool = False) -> str:
        """Run ``vidtray ARGS`` (this vidtray, this config) in a child; its stdout, or RuntimeError.

        A ``read_only`` child (a report) is stopped when the tray quits; one that deletes is left to finish.
        """
        argv = [sys.executable, "-m", "vidtray", *self._config_args(), *args]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                                stdin=subprocess.DEVNULL)
        if read_only:
            self._reports.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError(f"`vidtray {' '.join(args)}` took longer than {timeout:.0f} s") from None
        finally:
            self._reports.discard(proc)
        if proc.returncode != 0:
            if self.stopping.is_set():
                raise RuntimeError("stopped: the tray is quitting")
            lines = err.strip().splitlines()
            message = lines[-1] if lines else f"exit status {proc.returncode}"
            raise RuntimeError(message.removeprefix("vidtray: error: "))
        return out

    # -- the quit ------------------------------------------------------------------------------------------
    def end_windows(self) -> None:
        """The Tk children (prompt window, dialogs) go with the tray; `vidtray clean` children finish."""
        for proc in [self._popup, *self._dialogs]:
            if proc is not None and proc.poll() is None:
                proc.terminate()

    def end_reports(self) -> None:
        for proc in list(self._reports):
            proc.terminate()


def child_error(stderr: str, code: int | None, what: str) -> str:
    """The reason a Tk child gave (its ``vidtray: error:`` line), or what is known without one."""
    lines = [line for line in stderr.strip().splitlines() if line.startswith("vidtray: error: ")]
    if lines:
        return lines[-1].removeprefix("vidtray: error: ")
    if code == tkhelp.EXIT_MISSING_TK:
        return tkhelp.missing_tk_message(what[:1].upper() + what[1:])
    tail = stderr.strip().splitlines()
    return f"{what} exited with status {code}" + (f": {tail[-1]}" if tail else "")
