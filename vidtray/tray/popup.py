"""The prompt popup: a small Tk window, run as its own process (``python -m vidtray.tray.popup``).

Own process because Tk and pystray's GTK loop each want the main thread, and because the
popup imports huggingface_hub (model cache, download sizes), which the tray never pays for.
Fields are checked on every keystroke; a field with a problem says what is wrong under it,
and nothing is queued until every field is fine. Under the fields, an estimate of the job (time, peak GPU
memory, video size: ``services.estimate``, from this install's sidecars or a guess, and said to be one)
follows the model, size, frames and steps ``ESTIMATE_DELAY_MS`` after the last change, worked out on a
thread (it reads the sidecars) so typing never waits for it. Enter submits, Esc closes. "Load from video..."
(Ctrl+O) fills the fields from the recipe of a video (its sidecar, or the recipe inside the mp4).

Exit status: 0 a job was queued (its id printed as one JSON line), 1 closed without queueing (or
the window could not open: then a ``vidtray: error:`` line says why), 2 bad config, 3 Tk is not
installed (``tkhelp.EXIT_MISSING_TK``; the line names the package).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import queue as thread_queue
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from vidtray import params
from vidtray.config import Config
from vidtray.errors import VidtrayError
from vidtray.paths import free_bytes, hf_cache_dir
from vidtray.services import estimate, hub
from vidtray.services.fsutil import VIDEO_EXTENSIONS, gib, human_size, tree_stats
from vidtray.tray import form, tkhelp

try:
    import tkinter as tk
    from tkinter import ttk
except ImportError as exc:  # Debian/Ubuntu ship Tk apart (python3-tk): main() says so in one line
    _TK_MISSING: ImportError | None = exc
else:
    _TK_MISSING = None

log = logging.getLogger("vidtray.popup")

WINDOW_CLASS = "VidtrayPopup"
TITLE = "vidtray - Generate video"
ERROR_FG = "#b00020"
ERROR_BG = "#ffe8ec"
NUMBER_FIELDS = ("frames", "steps", "seed", "width", "height")
# Shown under a field while it has no error.
HINTS = {"seed": "empty = random"}
LABELS = {name: params.FIELDS[name].label for name in form.FIELDS}
#: The fields an estimate depends on, and how long after the last change to one of them it is worked out.
ESTIMATE_FIELDS = ("model", "frames", "steps", "width", "height")
ESTIMATE_DELAY_MS = 300
POLL_MS = 50


class PopupWindow:
    """The form inside ``master``. Every outside effect comes in as a callable, so a test can
    drive the real widgets in-process and still queue through the real queue."""

    def __init__(
        self,
        master: tk.Tk,
        cfg: Config,
        *,
        models: Sequence[str],
        cached: dict[str, int],
        submit: Callable[[form.JobSpec], form.Submitted],
        size_lookup: Callable[[str], tuple[int | None, str]] = hub.download_size,
        free_space: Callable[[Path], int | None] = free_bytes,
        cache_dir: Path | None = None,
        prefill: str = "",
        initial_model: str | None = None,
        choose_video: Callable[[tk.Misc, Path], str] | None = None,
    ) -> None:
        self.master = master
        self.cfg = cfg
        self.cached = dict(cached)
        self.submit_fn = submit
        self.size_lookup = size_lookup
        self.free_space = free_space
        self.cache_dir = cache_dir
        self.choose_video = choose_video or ask_video
        #: the fps of a recipe loaded from a video (the form has no fps field), until another model is chosen
        self.loaded_fps: float | None = None
        self.submitted: form.Submitted | None = None
        self.vars: dict[str, tk.StringVar] = {}
        self.entries: dict[str, ttk.Entry] = {}
        self.error_labels: dict[str, ttk.Label] = {}
        self.touched: set[str] = set()
        self.errors: dict[str, str] = {}
        self._results: thread_queue.Queue[tuple[int, str, int | None, str]] = thread_queue.Queue()
        self._lookup_token = 0
        self._download_bytes: int | None = None
        self.history = estimate.History(cfg.videos_dir)
        self._history_lock = threading.Lock()  # one estimate at a time reads the sidecars
        self._estimates: thread_queue.Queue[tuple[int, str]] = thread_queue.Queue()
        self._estimate_token = 0  # the newest estimate asked for; older answers are dropped
        self._estimate_after: str | None = None
        self._estimate_waiting = False  # a thread works on the newest estimate; polled for until it answers
        self._estimate_polling = False
        self.closed = False
        #: estimates worked out so far (a change that comes within ESTIMATE_DELAY_MS of the next makes none)
        self.estimates_made = 0

        master.title(TITLE)
        master.resizable(True, False)
        style = ttk.Style(master)
        if "clam" in style.theme_names():
            style.theme_use("clam")  # the one built-in theme that honours fieldbackground
        style.configure("Error.TEntry", fieldbackground=ERROR_BG)
        style.configure("Error.TCombobox", fieldbackground=ERROR_BG)
        style.configure("Error.TLabel", foreground=ERROR_FG)
        style.configure("Hint.TLabel", foreground="#555555")

        frame = ttk.Frame(master, padding=12)
        frame.grid(sticky="nsew")
        master.columnconfigure(0, weight=1)
        frame.columnconfigure(1, weight=1)
        row = 0
        for name in ("prompt", "negative_prompt"):
            row = self._text_field(frame, name, row, width=60)
        self.vars["prompt"].set(prefill)

        ttk.Label(frame, text=LABELS["model"]).grid(row=row, column=0, sticky="w", padx=(0, 8))
        first = initial_model or (cfg.model if cfg.model in models else models[0])
        self.vars["model"] = tk.StringVar(master, value=first)
        combo = ttk.Combobox(frame, textvariable=self.vars["model"], values=list(models), width=58)
        combo.grid(row=row, column=1, sticky="ew")
        combo.bind("<<ComboboxSelected>>", lambda _e: self._model_chosen())
        self.entries["model"] = combo
        row += 1
        self.error_labels["model"] = self._error_label(frame, row, 1)
        row += 1
        self.model_info = ttk.Label(frame, text="", style="Hint.TLabel")
        self.model_info.grid(row=row, column=1, sticky="w")
        row += 1

        numbers = ttk.Frame(frame)
        numbers.grid(row=row, column=0, columnspan=2, sticky="ew", pady=(8, 0))
        defaults = form.model_defaults(self.vars["model"].get(), cfg)
        for col, name in enumerate(NUMBER_FIELDS):
            ttk.Label(numbers, text=LABELS[name]).grid(row=0, column=col, sticky="w", padx=(0, 10))
            value = "" if name == "seed" else str(defaults[name])
            self.vars[name] = tk.StringVar(master, value=value)
            entry = ttk.Entry(numbers, textvariable=self.vars[name], width=11)
            entry.grid(row=1, column=col, sticky="w", padx=(0, 10))
            self.entries[name] = entry
            self.error_labels[name] = ttk.Label(numbers, text="", style="Error.TLabel", wraplength=170)
            self.error_labels[name].grid(row=2, column=col, sticky="nw", padx=(0, 10))
        row += 1

        self.estimate_info = ttk.Label(frame, text="", style="Hint.TLabel", wraplength=560)
        self.estimate_info.grid(row=row, column=0, columnspan=2, sticky="w", pady=(10, 0))
        row += 1
        self.disk_info = ttk.Label(frame, text="", style="Hint.TLabel")
        self.disk_info.grid(row=row, column=0, columnspan=2, sticky="w")
        row += 1
        self.status = ttk.Label(frame, text="", style="Error.TLabel", wraplength=520)
        self.status.grid(row=row, column=0, columnspan=2, sticky="w")
        row += 1

        buttons = ttk.Frame(frame)
        buttons.grid(row=row, column=0, columnspan=2, sticky="e", pady=(10, 0))
        self.load_button = ttk.Button(buttons, text="Load from video...", command=self.load_from_video)
        self.load_button.grid(row=0, column=0, padx=(0, 24))
        ttk.Button(buttons, text="Cancel", command=self.close).grid(row=0, column=1, padx=(0, 8))
        self.generate_button = ttk.Button(buttons, text="Generate", command=self.submit, default="active")
        self.generate_button.grid(row=0, column=2)

        for name, var in self.vars.items():
            var.trace_add("write", lambda *_a, n=name: self._changed(n))
        master.bind("<Return>", lambda _e: self.submit())
        master.bind("<KP_Enter>", lambda _e: self.submit())
        master.bind("<Escape>", lambda _e: self.close())
        master.bind("<Control-o>", lambda _e: self.load_from_video())
        master.protocol("WM_DELETE_WINDOW", self.close)

        for name in self.vars:
            self._check(name)
        self._update_model_info()
        self._schedule_estimate()
        self.entries["prompt"].focus_set()

    # -- layout helpers ---------------------------------------------------------------------
    def _text_field(self, frame: ttk.Frame, name: str, row: int, width: int) -> int:
        ttk.Label(frame, text=LABELS[name]).grid(row=row, column=0, sticky="w", padx=(0, 8))
        self.vars[name] = tk.StringVar(self.master)
        entry = ttk.Entry(frame, textvariable=self.vars[name], width=width)
        entry.grid(row=row, column=1, sticky="ew")
        self.entries[name] = entry
        self.error_labels[name] = self._error_label(frame, row + 1, 1)
        return row + 2

    @staticmethod
    def _error_label(frame: ttk.Frame, row: int, column: int) -> ttk.Label:
        label = ttk.Label(frame, text="", style="Error.TLabel", wraplength=480)
        label.grid(row=row, column=column, sticky="w")
        return label

    # -- validation -------------------------------------------------------------------------
    def values(self) -> dict[str, str]:
        return {name: var.get() for name, var in self.vars.items()}

    def _changed(self, name: str) -> None:
        self.touched.add(name)
        self._check(name)
        self.status.configure(text="")
        if name == "model":
            self._update_model_info()
        if name in ESTIMATE_FIELDS:
            self._schedule_estimate()

    def _check(self, name: str) -> None:
        message = form.check_field(name, self.vars[name].get())
        if message is None:
            self.errors.pop(name, None)
        else:
            self.errors[name] = message
        # An untouched empty prompt is not an error yet: nobody wants red before typing.
        shown = message if (name in self.touched or name != "prompt") else None
        self.error_labels[name].configure(text=shown or HINTS.get(name, ""),
                                          style="Error.TLabel" if shown else "Hint.TLabel")
        base = "TCombobox" if name == "model" else "TEntry"
        self.entries[name].configure(style=f"Error.{base}" if shown else base)

    def _model_chosen(self) -> None:
        """A model picked from the list brings its own frame count and size (and its own fps)."""
        self.loaded_fps = None
        for name, value in form.model_defaults(self.vars["model"].get(), self.cfg).items():
            if name in ("frames", "width", "height"):
                self.vars[name].set(str(value))

    # -- model and disk info ----------------------------------------------------------------
    def _update_model_info(self) -> None:
        model = self.vars["model"].get().strip()
        self._lookup_token += 1
        self._download_bytes = None
        if "model" in self.errors:
            self.model_info.configure(text="")
        elif model in self.cached:
            self.model_info.configure(text=f"cached ({human_size(self.cached[model])})")
        elif hub.looks_like_path(model):
            self.model_info.configure(text="a local pipeline folder")
        else:
            self.model_info.configure(text="not downloaded yet: checking the download size...")
            token = self._lookup_token
            threading.Thread(target=self._lookup, args=(token, model), name="popup-size", daemon=True).start()
            self.master.after(100, self._poll_lookup)
        self._update_disk_info()

    def _lookup(self, token: int, model: str) -> None:
        try:
            size, text = self.size_lookup(model)
        except Exception as exc:  # a lookup is advice; never let it break the form
            size, text = None, f"download size unknown ({exc})"
        self._results.put((token, model, size, text))

    def _poll_lookup(self) -> None:
        try:
            token, _model, size, text = self._results.get_nowait()
        except thread_queue.Empty:
            self.master.after(100, self._poll_lookup)
            return
        if token == self._lookup_token:  # a newer model was typed meanwhile: drop the old answer
            self._download_bytes = size
            self.model_info.configure(text=text)
            self._update_disk_info()
            if size is not None:  # the model's size makes a better guess
                self._schedule_estimate()
        else:
            self.master.after(100, self._poll_lookup)

    def _update_disk_info(self) -> None:
        free = self.free_space(self.cfg.videos_dir)
        parts = [f"Free space: {'unknown' if free is None else human_size(free)} for videos"]
        warn = ""
        if free is not None and free < self.cfg.min_free_gb * 1024**3:
            warn = f" - below min_free_gb ({gib(self.cfg.min_free_gb)}): generation waits for space"
        if self._download_bytes is not None and self.cache_dir is not None:
            cache_free = self.free_space(self.cache_dir)
            if cache_free is not None:
                parts.append(f"{human_size(cache_free)} for the model cache")
                if cache_free < hub.space_needed(self._download_bytes):
                    warn = " - not enough space for the model download"
        self.disk_info.configure(text=", ".join(parts) + warn, style="Error.TLabel" if warn else "Hint.TLabel")

    # -- the estimate -----------------------------------------------------------------------
    def _schedule_estimate(self) -> None:
        """Work the estimate out ESTIMATE_DELAY_MS after the last change (a change meanwhile starts the wait
        again)."""
        if self._estimate_after is not None:
            self.master.after_cancel(self._estimate_after)
        self._estimate_after = self.master.after(ESTIMATE_DELAY_MS, self._start_estimate)

    def _start_estimate(self) -> None:
        self._estimate_after = None
        if self.closed:
            return
        self._estimate_token += 1
        self._estimate_waiting = False
        if any(name in self.errors for name in ESTIMATE_FIELDS):
            self.estimate_info.configure(text="")
            return
        model = form.model_name(self.vars["model"].get())
        shape = tuple(int(self.vars[name].get()) for name in ("frames", "width", "height", "steps"))
        weights = self.cached[model] if model in self.cached else self._download_bytes
        self.estimates_made += 1
        self._estimate_waiting = True
        threading.Thread(target=self._estimate, args=(self._estimate_token, model, shape, weights),
                         name="popup-estimate", daemon=True).start()
        if not self._estimate_polling:
            self._estimate_polling = True
            self.master.after(POLL_MS, self._poll_estimate)

    def _estimate(self, token: int, model: str, shape: tuple[int, ...], weights: int | None) -> None:
        """popup-estimate: the line for ``model`` at ``shape`` (frames, width, height, steps)."""
        try:
            if weights is None and hub.looks_like_path(model):
                weights = tree_stats(Path(model))[1] or None  # a local pipeline: its files are its weights
            family = form.model_family(model)
            with self._history_lock:
                runs = self.history.runs()
            device = estimate.likely_device(runs, model, self.cfg.device)
            job = estimate.Job(model, device, *shape)
            est = estimate.estimate(runs, job, estimate.Figures(weights, family.activation_scale))
            text = f"Estimate: {estimate.summary(est)}"
        except Exception as exc:  # an estimate is advice; never let it break the form
            log.warning("popup: no estimate: %s", exc, exc_info=True)
            text = ""
        self._estimates.put((token, text))

    def _poll_estimate(self) -> None:
        if self.closed:
            return
        while True:
            try:
                token, text = self._estimates.get_nowait()
            except thread_queue.Empty:
                break
            if token == self._estimate_token and self._estimate_waiting:
                self.estimate_info.configure(text=text)
                self._estimate_waiting = False
        self._estimate_polling = self._estimate_waiting
        if self._estimate_polling:
            self.master.after(POLL_MS, self._poll_estimate)

    # -- actions ----------------------------------------------------------------------------
    def load_from_video(self) -> bool:
        """Ask for a video and fill the fields from its recipe."""
        path = self.choose_video(self.master, self.cfg.videos_dir)
        return bool(path) and self.load_recipe(path)

    def load_recipe(self, path: str | Path) -> bool:
        """Fill the fields from the recipe of the video at ``path``; on failure say why and change nothing."""
        try:
            loaded = form.load_recipe(path)
        except (VidtrayError, OSError) as exc:
            self._say(f"Not loaded: {exc}", error=True)
            return False
        for name, value in loaded.values.items():
            self.vars[name].set(value)
        self.loaded_fps = loaded.fps
        self.touched.update(loaded.values)
        fps = f", {loaded.fps:g} fps" if loaded.fps is not None else ""
        self._say(f"Loaded from {Path(path).name}{fps}", error=False)
        log.info("popup: loaded %s", loaded.where)
        return True

    def _say(self, text: str, *, error: bool) -> None:
        self.status.configure(text=text, style="Error.TLabel" if error else "Hint.TLabel")

    def submit(self) -> bool:
        """Queue the job if every field is fine; else show every problem and queue nothing."""
        self.touched.update(self.vars)
        for name in self.vars:
            self._check(name)
        spec, errors = form.validate(self.values())
        if spec is None:
            first = next(n for n in form.FIELDS if n in errors)
            self.entries[first].focus_set()
            self._say("Not queued: fix the fields marked in red.", error=True)
            return False
        if self.loaded_fps is not None:
            spec = dataclasses.replace(spec, fps=self.loaded_fps)
        try:
            self.submitted = self.submit_fn(spec)
        except (VidtrayError, OSError) as exc:
            log.warning("could not queue the job: %s", exc, exc_info=True)
            self._say(f"Not queued: {exc}", error=True)
            return False
        log.info("queued job %s from the popup", self.submitted.job_id)
        self.close()
        return True

    def close(self) -> None:
        self.closed = True  # an estimate that answers later has no window to go to
        if self._estimate_after is not None:
            self.master.after_cancel(self._estimate_after)
        self.master.destroy()


def ask_video(master: tk.Misc, start: Path) -> str:
    """Tk's file dialog for a video (or a sidecar); "" when cancelled."""
    from tkinter import filedialog

    videos = " ".join(f"*{ext}" for ext in sorted(VIDEO_EXTENSIONS))
    chosen = filedialog.askopenfilename(
        parent=master, title="Load the recipe of a video", initialdir=str(start) if start.is_dir() else None,
        filetypes=[("Videos", videos), ("vidtray sidecars", "*.json"), ("All files", "*")])
    return chosen if isinstance(chosen, str) else ""


def build_window(cfg: Config, prefill: str = "", master: tk.Tk | None = None) -> PopupWindow:
    """The real popup: cached models from the Hugging Face cache, the real queue."""
    cached, warnings = hub.cached_pipelines()
    for w in warnings:
        log.info("model cache: %s", w)
    root = master or tk.Tk(className=WINDOW_CLASS)
    return PopupWindow(
        root, cfg,
        models=form.model_choices(cfg, cached),
        cached={m.repo_id: m.size_bytes for m in cached},
        submit=lambda spec: form.submit_job(cfg, spec),
        cache_dir=hf_cache_dir(),
        prefill=prefill,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidtray.tray.popup", description=TITLE)
    parser.add_argument("--config", metavar="PATH")
    parser.add_argument("--prompt", default="", help="text to start with")
    args = parser.parse_args(argv)
    from vidtray.config import load_config
    from vidtray.logs import setup_logging

    setup_logging()
    if _TK_MISSING is not None:
        return tkhelp.exit_missing_tk("The prompt window")
    try:
        cfg = load_config(args.config)
    except VidtrayError as exc:
        print(f"vidtray: error: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        window = build_window(cfg, args.prompt)
    except tk.TclError as exc:
        print(f"vidtray: error: cannot open the prompt window: {exc}", file=sys.stderr)
        return 1
    tkhelp.place_window(window.master)
    # Come to the front: the tray's click gave focus to the panel, not to us.
    window.master.lift()
    window.master.attributes("-topmost", True)
    window.master.after(300, lambda: window.master.attributes("-topmost", False))
    window.master.focus_force()
    # Once mapped, put the keyboard in the prompt field (the tray click left it with the panel).
    window.master.after(150, window.entries["prompt"].focus_force)
    window.master.mainloop()
    if window.submitted is None:
        return 1
    print(json.dumps({"queued": window.submitted.job_id}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
