"""The library page in a real headless Chromium: the grid, search, pin, delete, playing a video, live
updates from the watcher and from another app, and the queue panel with a real generation."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import gen_fixtures
import pytest
from hf_cache import make_repo
from media_helpers import write_mp4
from page_helpers import (
    Served,
    add_video,
    item_by_name,
    open_page,
    rescan,
    served,
    wait_for,
)

from vidtray.config import Config
from vidtray.services.daemon import Daemon
from vidtray.services.library import open_library
from vidtray.services.sidecar import sidecar_path

pytestmark = pytest.mark.browser
# the session-scoped tiny pipeline (gen_fixtures.py), shared by the generation test modules
tiny_pipeline = gen_fixtures.tiny_pipeline


def _titles(page: Any) -> list[str]:
    return page.locator("#grid .card .title").all_inner_texts()


def test_grid_shows_the_items_newest_first_and_search_narrows_it(cfg: Config, page_server: Served,
                                                                 browser: Any) -> None:
    add_video(cfg, "fox.mp4", prompt="a red fox jumping over a frozen creek", created="2025-05-13T14:03:00+00:00")
    add_video(cfg, "city.mp4", prompt="a city at night, neon rain", created="2025-05-14T09:00:00+00:00",
              model="Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    add_video(cfg, "holiday.mp4", mtime=time.time() - 86400 * 365 * 5)  # imported, no prompt: titled by its name
    rescan(cfg)
    page = open_page(browser, page_server)
    assert page.url == page_server.base + "/"  # the token left the address bar at once
    assert _titles(page) == ["a city at night, neon rain", "a red fox jumping over a frozen creek", "holiday"]
    card = page.locator("#grid .card").first
    assert "Generated" in card.inner_text() and "2.0 s" in card.inner_text()
    # the thumbnails are real images the browser decoded
    wait_for(lambda: page.evaluate("[...document.querySelectorAll('#grid img')].every(i => i.naturalWidth > 0)"),
             what="the thumbnails to load")

    page.fill("#q", "FOX creek")
    wait_for(lambda: _titles(page) == ["a red fox jumping over a frozen creek"], what="the search to narrow the grid")
    assert page.url.endswith("/?q=FOX+creek")  # bookmarkable
    page.fill("#q", "wan2.1")  # the model name matches too
    wait_for(lambda: _titles(page) == ["a city at night, neon rain"], what="a search by model")
    page.fill("#q", "")
    page.select_option("select[name=source]", "imported")
    wait_for(lambda: _titles(page) == ["holiday"], what="the source filter")
    page.select_option("select[name=source]", "")
    page.select_option("select[name=sort]", "oldest")
    wait_for(lambda: _titles(page) == ["holiday", "a red fox jumping over a frozen creek",
                                       "a city at night, neon rain"], what="oldest first")
    assert page.url.endswith("/?sort=oldest")

    # the bookmark, opened again, shows the same search
    page.goto(page_server.base + "/?q=neon")
    assert _titles(page) == ["a city at night, neon rain"] and page.input_value("#q") == "neon"
    assert page.js_errors == []


def _asked(page: Any) -> str:
    """The confirmation's question, once the dialog is open."""
    wait_for(lambda: page.evaluate("document.querySelector('#confirm').open"), what="the confirmation")
    return str(page.inner_text("#confirm-text"))


def _library_text(cfg: Config) -> str:
    return cfg.library_file.read_text(encoding="utf-8")


def test_pin_from_the_page_lands_in_library_json_with_other_apps_data_kept(cfg: Config, page_server: Served,
                                                                            browser: Any) -> None:
    add_video(cfg, "fox.mp4", prompt="a red fox")
    rescan(cfg)
    # Another app's data: a top-level key, an item of its own, a key on our item, a number spelled its way.
    doc = json.loads(_library_text(cfg))
    doc["app_settings"] = {"theme": "dark"}
    doc["items"][0]["x_rating"] = "__RATING__"
    doc["items"].append({"type": "note", "text": "keep me"})
    cfg.library_file.write_text(json.dumps(doc, indent=2).replace('"__RATING__"', "4.50"), encoding="utf-8")
    fox = item_by_name(cfg, "fox.mp4")

    page = open_page(browser, page_server, f"/item/{fox['id']}")
    page.click("button[data-action=pin]")
    wait_for(lambda: "Pinned: cleanup never deletes it." in page.inner_text("#item-msg"), what="the pin to land")
    assert page.inner_text("button[data-action=pin]") == "Unpin"
    text = _library_text(cfg)
    after = json.loads(text)
    assert after["items"][0]["pinned"] is True
    assert after["app_settings"] == {"theme": "dark"} and {"type": "note", "text": "keep me"} in after["items"]
    assert '"x_rating": 4.50' in text  # the other app's number, exactly as it wrote it

    # edit title, tags and schedule through the form
    page.fill("#edit input[name=title]", "The fox <b>one</b>")
    page.fill("#edit input[name=tags]", "winter, fox, winter")
    page.fill("#edit input[name=scheduled_at]", "2031-05-01T09:30")
    page.click("#edit button[type=submit]")
    wait_for(lambda: "Saved." in page.inner_text("#item-msg"), what="the edit to land")
    item = item_by_name(cfg, "fox.mp4")
    assert item["title"] == "The fox <b>one</b>" and item["tags"] == ["winter", "fox"]
    assert item["scheduled_at"].startswith("2031-05-01T09:30:00")
    assert page.inner_text("#item-title") == "The fox <b>one</b>"  # shown as text, not markup
    # pinned and scheduled: the page will not delete it
    assert page.is_disabled("button[data-action=delete]")
    assert page.js_errors == []


def test_delete_from_the_page_goes_to_the_trash(cfg: Config, page_server: Served, browser: Any,
                                                 trash_in_tmp: Path) -> None:
    video = add_video(cfg, "failure.mp4", prompt="a failed attempt")
    add_video(cfg, "keeper.mp4", prompt="a good one")
    rescan(cfg)
    item = item_by_name(cfg, "failure.mp4")
    thumb = Path(item["thumbnail"])
    assert thumb.is_file()

    page = open_page(browser, page_server, f"/item/{item['id']}")
    page.click("button[data-action=delete]")
    assert "to the trash" in _asked(page)
    page.click("#confirm button[value=cancel]")  # asked first: cancel keeps it
    assert video.exists()
    page.click("button[data-action=delete]")
    _asked(page)
    with page.expect_navigation():
        page.click("#confirm-ok")
    assert page.url == page_server.base + "/"
    assert not video.exists() and not sidecar_path(video).exists() and not thumb.exists()
    assert (trash_in_tmp / "files" / "failure.mp4").is_file()
    assert (trash_in_tmp / "files" / sidecar_path(video).name).is_file()
    assert [Path(i["path"]).name for i in json.loads(_library_text(cfg))["items"]] == ["keeper.mp4"]
    assert _titles(page) == ["a good one"]


def test_a_video_plays_seeks_and_plays_on_hover(cfg: Config, page_server: Served, browser: Any) -> None:
    add_video(cfg, "clip.mp4", prompt="a moving gradient", frames=40)
    rescan(cfg)
    item = item_by_name(cfg, "clip.mp4")
    page = open_page(browser, page_server)
    page.hover("#grid .card .thumb")
    wait_for(lambda: page.evaluate("(() => { const v = document.querySelector('#grid .thumb video');"
                                   " return !!v && v.readyState >= 3 && v.currentTime > 0; })()"),
             what="the card's clip to play on hover")
    page.mouse.move(1200, 790)
    wait_for(lambda: page.locator("#grid .thumb video").count() == 0, what="the hover clip to go")

    page.goto(f"{page_server.base}/item/{item['id']}")
    player = "document.querySelector('#player')"
    page.evaluate(f"{player}.play()")
    wait_for(lambda: page.evaluate(f"{player}.readyState >= 3 && {player}.currentTime > 0 && !{player}.error"),
             what="the video to play")
    page.evaluate(f"{player}.pause(); {player}.currentTime = 4.2")  # a seek: the browser asks for a byte range
    wait_for(lambda: page.evaluate(f"!{player}.seeking && Math.abs({player}.currentTime - 4.2) < 0.2"),
             what="the seek")
    assert page.evaluate(f"{player}.duration") == pytest.approx(5.0, abs=0.2)
    assert page.js_errors == []


def test_a_new_video_in_a_watched_folder_and_another_apps_edit_show_up_without_a_reload(
        tmp_path: Path, isolated_env: dict[str, Path], browser: Any) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    cfg = Config.from_mapping({"watch_dirs": [str(watched)]}, "<test>")
    add_video(cfg, "first.mp4", prompt="the first one")
    rescan(cfg)
    daemon = Daemon(cfg, settle_s=0.3)  # what `vidtray watch` and the tray run: the watcher among it
    daemon.start()
    try:
        with served(cfg) as server:
            page = open_page(browser, server)
            page.evaluate("window.__sameDocument = true")
            assert _titles(page) == ["the first one"]

            clip = write_mp4(tmp_path / "elsewhere" / "new arrival.mp4")
            shutil.move(clip, watched / "new arrival.mp4")
            wait_for(lambda: "new arrival" in _titles(page), 20, "the imported video to appear")
            card = page.locator("#grid .card", has_text="new arrival")
            wait_for(lambda: card.locator("img").count() == 1, 20, "its thumbnail")  # made after the import

            # Another app rewrites library.json (not through vidtray): the page follows.
            doc = json.loads(cfg.library_file.read_text(encoding="utf-8"))
            first = next(i for i in doc["items"] if i["title"] == "the first one")
            first["title"], first["pinned"] = "renamed elsewhere", True
            cfg.library_file.write_text(json.dumps(doc), encoding="utf-8")
            wait_for(lambda: "renamed elsewhere" in _titles(page), 10, "another app's edit to appear")
            assert "Pinned" in page.locator("#grid .card", has_text="renamed elsewhere").inner_text()
            assert page.evaluate("window.__sameDocument") is True  # no reload happened
            assert page.js_errors == []
    finally:
        daemon.stop()


@pytest.mark.gen
def test_the_queue_panel_shows_a_real_jobs_progress_and_its_video(isolated_env: dict[str, Path], browser: Any,
                                                                  tiny_pipeline: Path) -> None:
    cfg = Config.from_mapping({"keep_alive_s": 5.0}, "<test>")
    cfg.videos_dir.mkdir(parents=True)
    daemon = Daemon(cfg, settle_s=0.2)
    daemon.start()
    try:
        with served(cfg) as server:
            page = open_page(browser, server, "/queue")
            page.evaluate("window.__sameDocument = true")
            # a model's defaults fill the size fields, as in the popup
            page.fill("#new-video [name=model]", str(tiny_pipeline))
            page.press("#new-video [name=model]", "Tab")
            wait_for(lambda: page.get_attribute("#new-video", "data-defaults-for") == str(tiny_pipeline),
                     what="the model's defaults")
            fields = {"prompt": "a tiny test clip", "frames": "8", "steps": "30", "width": "36", "height": "32",
                      "seed": "5"}
            for name, value in fields.items():
                page.fill(f"#new-video [name={name}]", value)
            # the popup's check, word for word, under the field; nothing is queued
            width_error = ".field-error[data-for=width]"
            wait_for(lambda: "Must be a multiple of 8 (try 32 or 40)" in page.inner_text(width_error),
                     what="the width check while typing")
            page.click("#new-video button[type=submit]")
            wait_for(lambda: "some fields need a change" in page.inner_text("#form-msg"), what="the refusal")
            assert daemon.supervisor.queue.list() == []

            page.fill("#new-video [name=width]", "32")
            page.click("#new-video button[type=submit]")
            wait_for(lambda: "Queued as job" in page.inner_text("#form-msg"), what="the job to be queued")
            # live progress from the worker, without a reload
            wait_for(lambda: page.evaluate(
                "(() => { const p = document.querySelector('.job.state-running progress');"
                " return !!p && p.value > 0 && p.max == 30; })()"), 120, "the running job's progress")
            assert "step" in page.inner_text(".job.state-running .steps")
            wait_for(lambda: page.locator(".job.state-done a.result").count() == 1, 120, "the finished video")
            assert page.evaluate("window.__sameDocument") is True

            page.click(".job.state-done a.result")
            page.wait_for_url("**/item/*")
            player = "document.querySelector('#player')"
            page.evaluate(f"{player}.play()")
            wait_for(lambda: page.evaluate(f"{player}.readyState >= 2 && !{player}.error"), what="its video to load")
            recipe = dict(zip(page.locator(".recipe th").all_inner_texts(),
                              page.locator(".recipe td").all_inner_texts(), strict=True))
            assert recipe["Prompt"] == "a tiny test clip" and recipe["Seed"] == "5" and recipe["Steps"] == "30"
            assert recipe["Size"] == "32 x 32 px"

            # "Vary" queues the same recipe with a new seed, through the same queue
            page.click("button[data-action=vary]")
            wait_for(lambda: "Queued as job" in page.inner_text("#item-msg"), what="the variation")
            jobs = daemon.supervisor.queue.list()
            assert len(jobs) == 2
            varied = jobs[-1].request
            assert varied["prompt"] == "a tiny test clip" and varied["steps"] == 30 and varied["seed"] != 5
            assert varied["model"] == str(tiny_pipeline)
            assert page.js_errors == []
    finally:
        daemon.stop()


def test_the_storage_panel_deletes_what_it_showed_after_asking(cfg: Config, page_server: Served, browser: Any,
                                                               isolated_env: dict[str, Path],
                                                               trash_in_tmp: Path) -> None:
    add_video(cfg, "old.mp4", prompt="old one")
    add_video(cfg, "kept.mp4", prompt="pinned one")
    rescan(cfg)
    open_library(cfg).edit(item_by_name(cfg, "kept.mp4")["id"], pinned=True)
    make_repo(isolated_env["HF_HOME"] / "hub", "org/some-model", {"model_index.json": b"{}", "w.bin": b"w" * 2048})
    page = open_page(browser, page_server, "/storage")
    assert "org/some-model" in page.inner_text("#storage")
    assert page.locator("meter").count() >= 3  # volume, videos, the model

    page.click("button[data-plan=videos]")
    question = _asked(page)
    assert question.startswith("Delete 1 video (") and "to the trash? 1 video stays (pinned" in question
    assert page.locator("#confirm-list li").all_inner_texts() == ["old.mp4"]
    page.click("#confirm-ok")
    wait_for(lambda: "Deleted 1 video" in page.inner_text("#storage-msg"), what="the deletion")
    assert (trash_in_tmp / "files" / "old.mp4").exists() and (cfg.videos_dir / "kept.mp4").exists()

    page.click("button[data-plan=model][data-repo='org/some-model']")
    assert "Delete org/some-model" in _asked(page)
    page.click("#confirm button[value=cancel]")
    assert (isolated_env["HF_HOME"] / "hub" / "models--org--some-model").exists()
    page.click("button[data-plan=model][data-repo='org/some-model']")
    _asked(page)
    page.click("#confirm-ok")
    wait_for(lambda: "Freed" in page.inner_text("#storage-msg"), what="the model deletion")
    assert not (isolated_env["HF_HOME"] / "hub" / "models--org--some-model").exists()
    assert "No models are cached." in page.inner_text("#storage")
    assert page.js_errors == []
