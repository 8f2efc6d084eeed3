"""The prompt popup: field checks and model logic without a display, then the real Tk window under Xvfb
(driven in-process, and as its own process through xdotool) queuing into the real job queue."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tkinter as tk
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hf_cache import make_repo

from vidtray.config import DEFAULT_MODEL, Config
from vidtray.errors import UserError
from vidtray.services import hub
from vidtray.services.fsutil import human_size
from vidtray.services.queue import open_queue
from vidtray.tray import form
from vidtray.tray.popup import PopupWindow

ROOT = Path(__file__).resolve().parent.parent


def pipeline_folder(root: Path, class_name: str = "TextToVideoSDPipeline") -> Path:
    """A folder the generation service accepts as a diffusers pipeline (no weights: nothing runs it here)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": class_name, "unet": ["diffusers", "X"]}))
    return root


# -- field checks -----------------------------------------------------------------------------------


def test_field_checks_say_what_is_wrong() -> None:
    assert form.check_prompt("   ") == "Type what the video should show"
    assert form.check_prompt("a fox") is None
    assert form.check_int("frames", "0") == "Must be between 1 and 1024"
    assert form.check_int("frames", "abc") == "Must be a whole number"
    assert form.check_int("steps", "") == "Required"
    assert form.check_int("width", "570") == "Must be a multiple of 8 (try 568 or 576)"
    assert form.check_int("height", "16") == "Must be between 32 and 2048"
    assert form.check_seed("") is None
    assert form.check_seed("12x") == "Must be a whole number, or empty for a random seed"
    assert form.check_seed("-1").startswith("Must be between 0 and")


def test_model_check_uses_the_generation_services_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert form.check_model("") == "Choose a model"
    assert "neither a folder nor a Hugging Face repo id" in (form.check_model("not a repo id!") or "")
    assert "no model_index.json" in (form.check_model(str(tmp_path)) or "")
    assert form.check_model(str(pipeline_folder(tmp_path / "pipe"))) is None
    # Offline (the tests' setting) a repo that is not cached cannot be used...
    assert "HF_HUB_OFFLINE is set" in (form.check_model("someone/not-cached") or "")
    # ...online it can: it is downloaded on first use.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert form.check_model("someone/not-cached") is None


def test_validate_builds_a_request_or_lists_every_problem(tmp_path: Path) -> None:
    model = str(pipeline_folder(tmp_path / "pipe"))
    good = {"prompt": "  a red   fox ", "negative_prompt": "", "model": model, "frames": "16", "steps": "4",
            "seed": "7", "width": "64", "height": "32"}
    spec, errors = form.validate(good)
    assert errors == {} and spec is not None
    req = spec.request()
    assert (req.prompt, req.negative_prompt, req.model, req.frames, req.seed) == ("a red fox", None, model, 16, 7)
    req.validate()

    spec, errors = form.validate({**good, "prompt": "", "seed": "x", "frames": "9999"})
    assert spec is None
    assert set(errors) == {"prompt", "seed", "frames"}


# -- models -------------------------------------------------------------------------------------------


def test_cached_pipelines_come_first_then_config_and_default(cfg: Config, isolated_env: dict[str, Path]) -> None:
    cache = isolated_env["HF_HOME"] / "hub"
    make_repo(cache, "org/video-model", {"model_index.json": b'{"_class_name": "WanPipeline"}',
                                         "unet/config.json": b"{}"})
    make_repo(cache, "org/text-model", {"config.json": b"{}"})  # not a diffusers pipeline
    cached, warnings = hub.cached_pipelines(cache)
    assert [m.repo_id for m in cached] == ["org/video-model"] and warnings == []
    assert form.model_choices(cfg, cached) == ["org/video-model", DEFAULT_MODEL]
    other = Config.from_mapping({"model": "me/mine"}, "<test>")
    assert form.model_choices(other, cached) == ["org/video-model", "me/mine", DEFAULT_MODEL]


def test_model_defaults_follow_the_pipeline_family(cfg: Config, tmp_path: Path,
                                                    isolated_env: dict[str, Path]) -> None:
    assert form.model_defaults(DEFAULT_MODEL, cfg) == {"frames": 24, "steps": 40, "width": 576, "height": 320}
    # A known model that is not downloaded: its family from the list of known models.
    assert form.model_defaults("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", cfg) == {
        "frames": 81, "steps": 40, "width": 832, "height": 480}
    # A local folder: its family from model_index.json.
    ltx = pipeline_folder(tmp_path / "ltx", "LTXPipeline")
    assert form.model_defaults(str(ltx), cfg) == {"frames": 121, "steps": 40, "width": 704, "height": 480}
    # What the user set in [generation] wins.
    mine = Config.from_mapping({"generation": {"frames": 33, "width": 512}}, "<test>")
    assert form.model_defaults(DEFAULT_MODEL, mine)["frames"] == 33


def test_submit_job_lands_in_the_queue(cfg: Config, tmp_path: Path) -> None:
    model = str(pipeline_folder(tmp_path / "pipe"))
    spec, _ = form.validate({"prompt": "a fox", "negative_prompt": "blur", "model": model, "frames": "8",
                             "steps": "4", "seed": "", "width": "32", "height": "32"})
    assert spec is not None
    sub = form.submit_job(cfg, spec)
    [job] = open_queue(cfg).list()
    assert job.id == sub.job_id and job.state == "queued"
    assert job.request == {"prompt": "a fox", "negative_prompt": "blur", "model": model, "frames": 8,
                              "steps": 4, "height": 32, "width": 32, "fps": None, "seed": None, "device": None}


def test_submit_checks_the_models_own_rules_and_names_the_popup_field(cfg: Config, tmp_path: Path) -> None:
    ltx = str(pipeline_folder(tmp_path / "ltx", "LTXPipeline"))
    spec, errors = form.validate({"prompt": "a fox", "model": ltx, "frames": "97", "steps": "4", "seed": "",
                                  "width": "600", "height": "480"})
    assert spec is not None and errors == {}  # each field is fine on its own...
    with pytest.raises(UserError) as info:  # ...but an LTX model needs multiples of 32
        form.submit_job(cfg, spec)
    assert str(info.value) == ("the popup's Width field must be a multiple of 32 for ltx-video models "
                               "(try 576 or 608), got 600")
    assert open_queue(cfg).list() == []


# -- a recipe from a video ------------------------------------------------------------------------------


def recipe_clip(path: Path, model: str, **kw: object) -> Path:
    """A real mp4 carrying a recipe in its own tags (as the worker writes it), no sidecar beside it."""
    import numpy as np

    from vidtray.services import recipe
    from vidtray.services.worker.output import encode_mp4

    doc = {"vidtray_recipe": 1, "prompt": "a red fox\nin \"deep\" snow", "negative_prompt": "blurry", "seed": 77,
           "steps": 6, "frames": 16, "width": 64, "height": 48, "fps": 12, "model": model, **kw}
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_mp4(np.zeros((4, 32, 32, 3), dtype=np.uint8), path, 8.0, tags=recipe.container_tags(doc))
    return path


def test_load_recipe_gives_the_form_its_fields(tmp_path: Path) -> None:
    from media_helpers import write_mp4

    model = str(pipeline_folder(tmp_path / "pipe"))
    loaded = form.load_recipe(recipe_clip(tmp_path / "clip.mp4", model))
    assert loaded.values == {"prompt": 'a red fox\nin "deep" snow', "negative_prompt": "blurry", "seed": "77",
                             "model": model, "frames": "16", "steps": "6", "width": "64", "height": "48"}
    assert loaded.fps == 12
    with pytest.raises(UserError, match="plain.mp4 carries no vidtray recipe"):
        form.load_recipe(write_mp4(tmp_path / "plain.mp4"))


# -- the window, under Xvfb -------------------------------------------------------------------------------


@pytest.fixture
def tk_root(xdisplay, monkeypatch: pytest.MonkeyPatch) -> Iterator[tk.Tk]:
    monkeypatch.setenv("DISPLAY", xdisplay.name)
    root = tk.Tk(className="VidtrayPopupTest")
    yield root
    try:
        root.destroy()
    except tk.TclError:
        pass  # the popup destroyed itself


def _window(root: tk.Tk, cfg: Config, model: str) -> PopupWindow:
    return PopupWindow(root, cfg, models=[model, DEFAULT_MODEL], cached={}, initial_model=model,
                       submit=lambda spec: form.submit_job(cfg, spec),
                       size_lookup=lambda m: (None, "size lookup off in tests"))


def _type(root: tk.Tk, entry: tk.Widget, text: str) -> None:
    entry.delete(0, "end")  # type: ignore[attr-defined]
    for ch in text:
        entry.insert("end", ch)  # type: ignore[attr-defined]
        root.update()


def _press(root: tk.Tk, key: str) -> None:
    root.focus_force()
    root.update()
    root.event_generate(key)
    root.update()


@pytest.mark.gui
def test_popup_refuses_bad_fields_and_queues_nothing(tk_root: tk.Tk, cfg: Config, tmp_path: Path) -> None:
    win = _window(tk_root, cfg, str(pipeline_folder(tmp_path / "pipe")))
    assert win.error_labels["prompt"].cget("text") == ""  # nothing red before the user typed

    _press(tk_root, "<Return>")  # empty prompt
    assert win.error_labels["prompt"].cget("text") == "Type what the video should show"
    assert win.status.cget("text") == "Not queued: fix the fields marked in red."

    _type(tk_root, win.entries["prompt"], "a red fox")
    assert win.error_labels["prompt"].cget("text") == ""
    _type(tk_root, win.entries["seed"], "12a")  # checked as typed
    assert win.error_labels["seed"].cget("text") == "Must be a whole number, or empty for a random seed"
    _type(tk_root, win.entries["frames"], "0")
    assert win.error_labels["frames"].cget("text") == "Must be between 1 and 1024"
    assert str(win.entries["frames"].cget("style")) == "Error.TEntry"
    _press(tk_root, "<Return>")
    assert win.submitted is None and open_queue(cfg).list() == []

    _type(tk_root, win.entries["frames"], "8")
    _type(tk_root, win.entries["seed"], "")
    assert win.error_labels["seed"].cget("text") == "empty = random"


@pytest.mark.gui
def test_popup_queues_the_job_on_enter(tk_root: tk.Tk, cfg: Config, tmp_path: Path) -> None:
    model = str(pipeline_folder(tmp_path / "pipe"))
    win = _window(tk_root, cfg, model)
    assert win.vars["width"].get() == "576" and win.vars["height"].get() == "320"  # the model's defaults
    _type(tk_root, win.entries["prompt"], "a red fox in the snow")
    _type(tk_root, win.entries["negative_prompt"], "blurry")
    _type(tk_root, win.entries["steps"], "4")
    _type(tk_root, win.entries["seed"], "42")
    _press(tk_root, "<Return>")
    assert win.submitted is not None
    [job] = open_queue(cfg).list()
    assert job.id == win.submitted.job_id
    req = job.request
    assert (req["prompt"], req["negative_prompt"], req["model"], req["steps"], req["seed"], req["frames"]) == (
        "a red fox in the snow", "blurry", model, 4, 42, 24)
    assert not _alive(tk_root)  # the window closed itself


@pytest.mark.gui
def test_popup_escape_closes_without_queueing(tk_root: tk.Tk, cfg: Config, tmp_path: Path) -> None:
    win = _window(tk_root, cfg, str(pipeline_folder(tmp_path / "pipe")))
    _type(tk_root, win.entries["prompt"], "never queued")
    _press(tk_root, "<Escape>")
    assert win.submitted is None and not _alive(tk_root)
    assert open_queue(cfg).list() == []


@pytest.mark.gui
def test_choosing_a_model_brings_its_size(tk_root: tk.Tk, cfg: Config, tmp_path: Path) -> None:
    ltx = str(pipeline_folder(tmp_path / "ltx", "LTXPipeline"))
    win = PopupWindow(tk_root, cfg, models=[DEFAULT_MODEL, ltx], cached={}, submit=lambda spec: None,  # type: ignore[arg-type,return-value]
                      size_lookup=lambda m: (None, "x"), initial_model=DEFAULT_MODEL)
    win.vars["model"].set(ltx)
    win.entries["model"].event_generate("<<ComboboxSelected>>")
    tk_root.update()
    assert (win.vars["width"].get(), win.vars["height"].get(), win.vars["frames"].get()) == ("704", "480", "121")
    assert win.model_info.cget("text") == "a local pipeline folder"


def _settle(root: tk.Tk, cond: Callable[[], object], timeout: float = 20.0) -> bool:
    """Run Tk's loop until ``cond`` holds (the popup's threads answer through it)."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        root.update()
        time.sleep(0.02)
    return bool(cond())


@pytest.mark.gui
def test_the_estimate_follows_the_fields_from_this_installs_runs(tk_root: tk.Tk, cfg: Config,
                                                                 tmp_path: Path) -> None:
    from helpers import write_run

    model = str(pipeline_folder(tmp_path / "pipe"))
    # Three runs of this model here: 2 s a step, 3 s to load, 1.5 s to decode and encode, on the CPU.
    sizes = [write_run(cfg.videos_dir, f"run{i}", model=model).with_name(f"run{i}.mp4").stat().st_size
             for i in range(3)]
    video = human_size(sorted(sizes)[1])
    win = _window(tk_root, cfg, model)
    for name, value in (("frames", "8"), ("width", "64"), ("height", "64"), ("steps", "10")):
        win.vars[name].set(value)
    assert _settle(tk_root, lambda: "from 3 runs" in win.estimate_info.cget("text"))
    assert win.estimate_info.cget("text") == f"Estimate: about 25 s, video about {video} (from 3 runs of pipe on cpu)"

    # Typing is never held up: the estimate comes once the typing pauses, one for the whole burst.
    made = win.estimates_made
    for text in ("2", "20"):
        win.vars["steps"].set(text)
    assert win.estimates_made == made  # nothing yet: the wait starts again with each change
    assert _settle(tk_root, lambda: "about 45 s" in win.estimate_info.cget("text"))  # 3 + 20 x 2 + 1.5
    assert win.estimates_made == made + 1

    # A field with a problem: no estimate (the field says what is wrong); fixed, the estimate is back.
    _type(tk_root, win.entries["frames"], "0")
    assert _settle(tk_root, lambda: win.estimate_info.cget("text") == "")
    _type(tk_root, win.entries["frames"], "16")  # twice the frames: each step does twice the work
    assert _settle(tk_root, lambda: "about 1 min" in win.estimate_info.cget("text"))  # 3 + 20 x 4 + 3


@pytest.mark.gui
def test_the_estimate_is_a_guess_for_a_model_without_runs(tk_root: tk.Tk, cfg: Config, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import write_run

    from vidtray.services import estimate

    write_run(cfg.videos_dir, "other", model=str(pipeline_folder(tmp_path / "other")))  # another model ran here
    monkeypatch.delenv("HF_HUB_OFFLINE")  # the model can be downloaded (the size lookup is faked: no network)
    size = 3 * 1024**3
    win = PopupWindow(tk_root, cfg, models=["org/new-model"], cached={}, submit=lambda spec: None,  # type: ignore[arg-type,return-value]
                      size_lookup=lambda m: (size, "not downloaded yet: about 3 GiB to download"),
                      initial_model="org/new-model")
    # The download size comes, then the guess made with it (the planner's figures for 3 GiB of weights).
    job = estimate.Job("org/new-model", "cpu", 24, 576, 320, 40)
    guess = estimate.guess(job, estimate.Figures(size), loaded=False, why="no runs of new-model on cpu here yet")
    assert _settle(tk_root, lambda: win.estimate_info.cget("text") == f"Estimate: {estimate.summary(guess)}")
    assert "(a guess: no runs of new-model on cpu here yet)" in win.estimate_info.cget("text")


@pytest.mark.gui
def test_the_popup_warns_when_the_worker_would_refuse_the_download(tk_root: tk.Tk, cfg: Config, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Room for the files but not for the margin the worker's check_download_space asks: the popup used to
    # say nothing, and the job then failed for lack of space.
    monkeypatch.delenv("HF_HUB_OFFLINE")  # the model can be downloaded (the size lookup is faked: no network)
    cache = tmp_path / "cache"
    size = 1000
    free = {cfg.videos_dir: 100 * 1024**3, cache: size + 1}
    win = PopupWindow(tk_root, cfg, models=["org/new-model"], cached={}, submit=lambda spec: None,  # type: ignore[arg-type,return-value]
                      size_lookup=lambda m: (size, "not downloaded yet: about 1000 B to download"),
                      free_space=lambda p: free.get(p, 100 * 1024**3), cache_dir=cache, initial_model="org/new-model")
    deadline = time.monotonic() + 10
    while "model cache" not in win.disk_info.cget("text") and time.monotonic() < deadline:
        tk_root.update()
        time.sleep(0.02)
    assert win.disk_info.cget("text").endswith("not enough space for the model download")
    assert hub.space_needed(size) > size + 1


@pytest.mark.gui
def test_load_from_video_fills_the_fields_and_the_job_gets_the_recipe(tk_root: tk.Tk, cfg: Config,
                                                                       tmp_path: Path) -> None:
    from media_helpers import write_mp4

    model = str(pipeline_folder(tmp_path / "pipe"))
    clip = recipe_clip(tmp_path / "elsewhere" / "clip.mp4", model)
    plain = write_mp4(tmp_path / "plain.mp4")
    chosen = [str(plain)]
    asked: list[Path] = []

    def choose(master: tk.Misc, start: Path) -> str:
        asked.append(start)
        return chosen.pop(0) if chosen else ""

    win = PopupWindow(tk_root, cfg, models=[DEFAULT_MODEL], cached={}, submit=lambda spec: form.submit_job(cfg, spec),
                      size_lookup=lambda m: (None, "off"), choose_video=choose)
    _type(tk_root, win.entries["prompt"], "my own prompt")
    win.load_button.invoke()  # a video without a recipe: said, nothing changed
    tk_root.update()
    assert asked == [cfg.videos_dir]
    assert win.status.cget("text") == "Not loaded: plain.mp4 carries no vidtray recipe (no sidecar beside it, " \
                                      "none in the file)"
    assert win.vars["prompt"].get() == "my own prompt"
    win.load_button.invoke()  # cancelled: nothing happens
    assert win.vars["prompt"].get() == "my own prompt"

    chosen.append(str(clip))
    _press(tk_root, "<Control-o>")  # the keyboard way
    assert win.status.cget("text") == "Loaded from clip.mp4, 12 fps"
    values = win.values()
    assert {k: values[k] for k in ("negative_prompt", "model", "frames", "steps", "seed", "width", "height")} == {
        "negative_prompt": "blurry", "model": model, "frames": "16", "steps": "6", "seed": "77", "width": "64",
        "height": "48"}
    assert win.errors == {}
    _press(tk_root, "<Return>")
    assert win.submitted is not None
    [job] = open_queue(cfg).list()
    req = job.request
    assert (req["prompt"], req["seed"], req["steps"], req["frames"], req["fps"], req["model"]) == (
        'a red fox in "deep" snow', 77, 6, 16, 12, model)


def _start_popup(desktop, config: Path) -> subprocess.Popen[str]:
    """The real popup process on the test desktop, shown and ready for keys."""
    env = {**desktop.env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "vidtray.tray.popup", "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        found = desktop.run(["xdotool", "search", "--sync", "--onlyvisible", "--class", "VidtrayPopup"], timeout=30)
        assert found.stdout.split(), found.stderr
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    time.sleep(1.0)  # the popup puts the keyboard into its prompt field 150 ms after it maps
    return proc


@pytest.mark.gui
def test_load_from_video_through_tks_own_file_dialog(desktop, cfg: Config, tmp_path: Path) -> None:
    """The real popup process: Ctrl+O opens Tk's file dialog, a person types the video's path and presses
    Enter, then Enter again queues the job with the recipe's values."""
    model = pipeline_folder(tmp_path / "pipe")
    clip = recipe_clip(tmp_path / "clips" / "fox.mp4", str(model))
    config = tmp_path / "config.toml"
    config.write_text(f'model = "{model}"\n')
    proc = _start_popup(desktop, config)
    try:
        desktop.run(["xdotool", "key", "ctrl+o"])
        dialog = desktop.run(["xdotool", "search", "--sync", "--onlyvisible", "--name", "Load the recipe of a video"],
                             timeout=30)
        assert dialog.stdout.split(), dialog.stderr
        time.sleep(0.5)
        desktop.run(["xdotool", "type", "--delay", "10", str(clip)])
        desktop.run(["xdotool", "key", "Return"])
        time.sleep(1.0)
        desktop.run(["xdotool", "key", "Return"])
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    job = open_queue(Config.from_path(config)).get(json.loads(out)["queued"])
    req = job.request
    assert (req["prompt"], req["seed"], req["frames"], req["fps"], req["model"]) == (
        'a red fox in "deep" snow', 77, 16, 12, str(model))


def _alive(root: tk.Tk) -> bool:
    try:
        return bool(root.winfo_exists())
    except tk.TclError:
        return False


@pytest.mark.gui
def test_popup_process_typed_into_with_xdotool(desktop, cfg: Config, tmp_path: Path) -> None:
    """The real popup process: a person types the prompt and presses Enter; the job is in the queue."""
    model = pipeline_folder(tmp_path / "pipe")
    config = tmp_path / "config.toml"
    config.write_text(f'model = "{model}"\n')
    proc = _start_popup(desktop, config)
    try:
        desktop.run(["xdotool", "type", "--delay", "20", "a cat surfing a wave"])
        desktop.run(["xdotool", "key", "Return"])
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    job_id = json.loads(out)["queued"]
    job = open_queue(Config.from_path(config)).get(job_id)
    assert job.request["prompt"] == "a cat surfing a wave" and job.request["model"] == str(model)


@pytest.mark.gui
def test_popup_opens_under_the_pointer_on_the_screen(desktop, cfg: Config, tmp_path: Path) -> None:
    """Without a window manager a Tk window lands at 0,0; the popup opens where the user just clicked
    (the icon, top right here), kept on the screen."""
    from vidtray.tray.tkhelp import EDGE_MARGIN, POINTER_GAP

    desktop.run(["xdotool", "mousemove", "1200", "12"])
    env = {**desktop.env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "vidtray.tray.popup"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        found = desktop.run(["xdotool", "search", "--sync", "--onlyvisible", "--class", "VidtrayPopup"], timeout=30)
        window = found.stdout.split()[0]
        geo = desktop.run(["xdotool", "getwindowgeometry", "--shell", window]).stdout
        pos = dict(line.split("=") for line in geo.split())
        x, y, w, h = (int(pos[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
        screen = desktop.run(["xdotool", "getdisplaygeometry"]).stdout.split()
        sw, sh = int(screen[0]), int(screen[1])
    finally:
        proc.kill()
        proc.wait()
    assert (x, y) != (0, 0)
    assert x + w == sw - EDGE_MARGIN  # as near the pointer as the screen allows
    assert y == 12 + POINTER_GAP  # below the pointer, clear of a top panel
    assert x <= 1200 <= x + w and y + h <= sh
