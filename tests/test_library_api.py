"""The library page's JSON API (what the page itself uses, and other local apps with the token): listing and
searching, one item with its recipe, edits, delete to the trash, removing an entry, "Generate again" and
"Vary", the queue and the New video form's checks, the storage panel's plans, "Show in folder"."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hf_cache import make_repo
from page_helpers import Served, add_video, item_by_name, rescan, served, wait_for
from test_popup import pipeline_folder

from vidtray.config import Config
from vidtray.errors import UserError
from vidtray.services.library import open_library
from vidtray.services.queue import open_queue
from vidtray.services.recipe import recipe_details, recipe_for
from vidtray.services.sidecar import sidecar_path
from vidtray.web.views import ref, unref


@pytest.fixture
def three(cfg: Config) -> dict[str, dict[str, Any]]:
    add_video(cfg, "fox.mp4", prompt="A red FOX in the snow", created="2025-05-13T10:00:00+00:00", seed=11)
    add_video(cfg, "owl.mp4", prompt="an owl at night", created="2025-05-14T10:00:00+00:00", frames=40,
              model="org/owl-model")
    add_video(cfg, "home.mp4")  # imported: no recipe
    rescan(cfg)
    return {name: item_by_name(cfg, f"{name}.mp4") for name in ("fox", "owl", "home")}


def test_list_searches_filters_sorts_and_pages(page_server: Served, three: dict[str, Any], cfg: Config) -> None:
    status, doc = page_server.json("GET", "/api/items")
    assert status == 200 and doc["total"] == 3
    assert [Path(i["path"]).name for i in doc["items"]] == ["home.mp4", "owl.mp4", "fox.mp4"]  # newest first
    assert doc["items"][1]["urls"] == {"page": f"/item/{three['owl']['id']}",
                                       "video": f"/media/{three['owl']['id']}/video",
                                       "thumbnail": f"/media/{three['owl']['id']}/thumb"}
    names = lambda q: [Path(i["path"]).name for i in page_server.json("GET", f"/api/items?{q}")[1]["items"]]  # noqa: E731
    assert names("q=fox") == names("q=FOX+snow") == ["fox.mp4"]
    assert names("q=owl-model") == ["owl.mp4"]  # the model matches
    assert names("q=fox+night") == []  # every word must match
    assert names("source=imported") == ["home.mp4"]
    assert names("model=org/owl-model") == ["owl.mp4"]
    assert names("sort=longest")[0] == "owl.mp4"
    assert names("sort=oldest") == ["fox.mp4", "owl.mp4", "home.mp4"]
    assert names("sort=nonsense") == names("")  # an unknown value counts as not given
    open_library(cfg).edit(three["fox"]["id"], pinned=True, tags=["Winter"])
    assert names("pinned=1") == ["fox.mp4"] and names("q=winter") == ["fox.mp4"]
    status, doc = page_server.json("GET", "/api/items?limit=1&offset=1")
    assert doc["total"] == 3 and len(doc["items"]) == 1 and doc["offset"] == 1


def test_one_item_with_its_recipe_and_exact_ids(page_server: Served, three: dict[str, Any]) -> None:
    status, doc = page_server.json("GET", f"/api/items/{three['fox']['id']}")
    assert status == 200 and doc["item"]["id"] == three["fox"]["id"]
    assert doc["recipe"]["seed"] == 11 and doc["recipe"]["timings"]["total_s"] == 14.0
    assert page_server.json("GET", f"/api/items/{three['home']['id']}")[1]["recipe"] is None
    # a prefix is not an id here (the CLI's shortening would be a guess on a page that deletes)
    assert page_server.json("GET", f"/api/items/{three['fox']['id'][:6]}")[0] == 404
    assert page_server.json("GET", "/api/items/nope")[0] == 404


def test_edits_are_checked_and_land_through_the_library(page_server: Served, three: dict[str, Any],
                                                        cfg: Config) -> None:
    path = f"/api/items/{three['owl']['id']}"
    before = page_server.json("GET", "/api/version")[1]["library"]
    status, doc = page_server.json("PATCH", path, {"title": "  Owl  ", "tags": "night, bird, night",
                                                   "scheduled_at": "2030-05-01T09:00:00+02:00", "pinned": True})
    assert status == 200 and doc["item"]["title"] == "Owl" and doc["item"]["tags"] == ["night", "bird"]
    assert doc["item"]["scheduled_at"] == "2030-05-01T09:00:00+02:00" and doc["item"]["pinned"] is True
    assert page_server.json("GET", "/api/version")[1]["library"] != before
    item = item_by_name(cfg, "owl.mp4")
    assert item["title"] == "Owl" and item["pinned"] is True
    assert page_server.json("PATCH", path, {"scheduled_at": None})[1]["item"]["scheduled_at"] is None
    for bad, words in (({"title": " "}, "title"), ({"tags": 3}, "tags"), ({"pinned": "yes"}, "pinned"),
                       ({"scheduled_at": "tomorrow"}, "ISO-8601"), ({"path": "/etc/passwd"}, "cannot change path"),
                       ({}, "nothing to change")):
        status, doc = page_server.json("PATCH", path, bad)
        assert status == 400 and words in doc["error"], (bad, doc)
    assert page_server.request("PATCH", path, body=b"[1]", headers={"Content-Type": "application/json"})[0] == 400
    assert page_server.request("PATCH", path, body=b"{", headers={"Content-Type": "application/json"})[0] == 400


def test_delete_refuses_protected_ones_and_trashes_the_rest(page_server: Served, three: dict[str, Any],
                                                            cfg: Config, trash_in_tmp: Path) -> None:
    open_library(cfg).edit(three["owl"]["id"], scheduled_at="2030-01-01T00:00:00+00:00")
    status, doc = page_server.json("DELETE", f"/api/items/{three['owl']['id']}")
    assert status == 409 and "scheduled" in doc["error"] and Path(three["owl"]["path"]).exists()
    status, doc = page_server.json("DELETE", f"/api/items/{three['fox']['id']}")
    assert status == 200 and [Path(d["path"]).name for d in doc["deleted"]] == ["fox.mp4"] and doc["to_trash"]
    assert sorted(doc["deleted"][0]["companions"]) == sorted([str(sidecar_path(Path(three["fox"]["path"]))),
                                                              three["fox"]["thumbnail"]])
    assert (trash_in_tmp / "files" / "fox.mp4").exists() and not Path(three["fox"]["path"]).exists()
    assert page_server.json("GET", f"/api/items/{three['fox']['id']}")[0] == 404


def test_remove_entry_keeps_the_file_and_keeps_it_out(page_server: Served, three: dict[str, Any],
                                                      cfg: Config) -> None:
    status, doc = page_server.json("DELETE", f"/api/items/{three['home']['id']}/entry")
    assert status == 200 and doc["removed"]["id"] == three["home"]["id"]
    assert Path(three["home"]["path"]).exists()
    assert "home.mp4" not in [Path(i["path"]).name for i in rescan(cfg)]  # later scans leave it out


def test_generate_again_and_vary_queue_the_recipe(page_server: Served, three: dict[str, Any], cfg: Config,
                                                  tmp_path: Path) -> None:
    model = pipeline_folder(tmp_path / "pipe")
    side = sidecar_path(Path(three["fox"]["path"]))
    side.write_text(json.dumps({**json.loads(side.read_text()), "model": str(model)}))
    status, doc = page_server.json("POST", f"/api/items/{three['fox']['id']}/again", {})
    assert status == 200
    again = doc["job"]["request"]
    assert again["prompt"] == "A red FOX in the snow" and again["seed"] == 11 and again["frames"] == 16
    assert again["model"] == str(model) and again["device"] is None  # where it runs: this machine's config
    status, doc = page_server.json("POST", f"/api/items/{three['fox']['id']}/again", {"vary": True})
    varied = doc["job"]["request"]
    assert {k: v for k, v in varied.items() if k != "seed"} == {k: v for k, v in again.items() if k != "seed"}
    assert varied["seed"] != 11
    assert [j.request["seed"] for j in open_queue(cfg).list()] == [11, varied["seed"]]
    status, doc = page_server.json("POST", f"/api/items/{three['home']['id']}/again", {})
    assert status == 409 and "no recipe" in doc["error"]
    # a recipe the worker could not run is not offered (the owl's model is not here, and HF_HUB_OFFLINE is set)
    status, doc = page_server.json("POST", f"/api/items/{three['owl']['id']}/again", {})
    assert status == 400 and "org/owl-model" in doc["error"]


def test_recipe_reader(cfg: Config, tmp_path: Path) -> None:
    video = add_video(cfg, "v.mp4", prompt="p", seed=3, device="cuda", negative_prompt="blur")
    item = {"type": "video", "id": "abc", "path": str(video)}
    req = recipe_for(item)
    assert req is not None and req.seed == 3 and req.negative_prompt == "blur" and req.device is None
    assert recipe_for(video) == req and recipe_details(str(video))["device"] == "cuda"
    side = sidecar_path(video)
    side.rename(video.with_suffix(".json"))
    video.with_suffix(".json").write_text('{"title": "not a generation"}')  # another tool's clip.json
    assert recipe_for(video) is None and recipe_details(video) is None
    side.write_text('{"prompt": "p", "frames": -4}')  # edited into something unusable: says so
    with pytest.raises(UserError, match="frames"):
        recipe_for(video)
    assert recipe_details(video) is not None
    side.write_text("{broken")
    assert recipe_for(video) is None
    assert recipe_for({"path": "relative.mp4"}) is None and recipe_for({"path": 3}) is None


def test_the_queue_and_the_new_video_form(page_server: Served, cfg: Config, tmp_path: Path) -> None:
    model = str(pipeline_folder(tmp_path / "pipe"))
    status, doc = page_server.json("POST", "/api/queue", {"prompt": " ", "model": model, "frames": "0",
                                                          "steps": "40", "width": "570", "height": "320"})
    assert status == 400
    assert doc["errors"] == {"prompt": "Type what the video should show", "frames": "Must be between 1 and 1024",
                             "width": "Must be a multiple of 8 (try 568 or 576)"}
    assert open_queue(cfg).list() == []
    good = {"prompt": "a  cat", "model": model, "frames": 16, "steps": "20", "width": "64", "height": "64", "seed": ""}
    status, doc = page_server.json("POST", "/api/queue", good)
    assert status == 201 and doc["job"]["request"]["prompt"] == "a cat" and doc["job"]["request"]["seed"] is None
    overview = page_server.json("GET", "/api/queue")[1]
    assert [j["id"] for j in overview["active"]] == [doc["job"]["id"]] and overview["paused"] is None
    assert page_server.json("GET", "/api/version")[1]["active_jobs"] == 1
    status, cancelled = page_server.json("POST", f"/api/queue/{doc['job']['id']}/cancel")
    assert status == 200 and cancelled["job"]["state"] == "cancelled"
    assert page_server.json("POST", f"/api/queue/{doc['job']['id']}/cancel")[0] == 400
    # the popup's checks while typing, and a model's defaults
    assert page_server.json("GET", "/api/form/check?field=height&value=33")[1]["error"].startswith("Must be a multiple")
    assert page_server.json("GET", "/api/form/check?field=steps&value=12")[1]["error"] is None
    assert page_server.json("GET", f"/api/form/defaults?model={model}")[1]["defaults"] == \
        {"frames": 24, "steps": 40, "width": 576, "height": 320}


def test_storage_report_and_its_confirmed_plans(page_server: Served, three: dict[str, Any], cfg: Config,
                                                isolated_env: dict[str, Path]) -> None:
    cache = isolated_env["HF_HOME"] / "hub"
    make_repo(cache, "org/big-model", {"model_index.json": b"{}", "unet/w.bin": b"x" * 4096})
    report = page_server.json("GET", "/api/storage")[1]
    assert report["videos"]["count"] == 3 and report["library"]["items"] == 3
    assert [r["repo_id"] for r in report["models"]["repos"]] == ["org/big-model"]

    open_library(cfg).edit(three["owl"]["id"], pinned=True)
    plan = page_server.json("POST", "/api/storage/plan", {"what": "videos", "older_than_days": None})[1]
    assert plan["count"] == 2 and plan["kept_count"] == 1 and plan["plan"]
    add_video(cfg, "arrived-after-the-question.mp4")
    done = page_server.json("POST", "/api/storage/execute", {"plan": plan["plan"]})[1]
    assert sorted(Path(d["path"]).name for d in done["deleted"]) == ["fox.mp4", "home.mp4"]
    assert (cfg.videos_dir / "arrived-after-the-question.mp4").exists()  # the plan that was shown, nothing more
    assert Path(three["owl"]["path"]).exists()
    assert page_server.json("POST", "/api/storage/execute", {"plan": plan["plan"]})[0] == 400  # used up

    plan = page_server.json("POST", "/api/storage/plan", {"what": "model", "repo_id": "org/big-model"})[1]
    assert plan["repos"][0]["repo_id"] == "org/big-model" and plan["expected_freed_bytes"] > 4096
    done = page_server.json("POST", "/api/storage/execute", {"plan": plan["plan"]})[1]
    assert done["freed_bytes"] > 4096 and not (cache / "models--org--big-model").exists()
    for bad in ({"what": "model", "repo_id": "not a repo"}, {"what": "everything"},
                {"what": "videos", "older_than_days": -1}, {"what": "model", "repo_id": "org/absent"}):
        assert page_server.json("POST", "/api/storage/plan", bad)[0] == 400, bad


def test_show_in_folder_asks_the_desktop(page_server: Served, three: dict[str, Any], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir, record = tmp_path / "bin", tmp_path / "opened.txt"
    bin_dir.mkdir()
    opener = bin_dir / "xdg-open"
    opener.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    opener.chmod(opener.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")  # no file manager there
    assert page_server.json("POST", f"/api/items/{three['fox']['id']}/reveal")[0] == 200
    opened = wait_for(lambda: record.exists() and record.read_text(), what="xdg-open to run")
    assert opened.strip() == str(Path(three["fox"]["path"]).parent)


def test_odd_ids_from_other_apps_round_trip(cfg: Config, isolated_env: dict[str, Path]) -> None:
    for odd in ("a/b?c#d", "..", "~x", "日本", "x" * 300, "12ab34cd56ef"):
        assert unref(ref(odd)) == odd
        assert "/" not in ref(odd) and "?" not in ref(odd)
    assert unref("~!!!") == "\0"
    video = add_video(cfg, "odd.mp4")
    rescan(cfg)
    doc = json.loads(cfg.library_file.read_text())
    doc["items"][0]["id"] = "other-app/42?x"
    cfg.library_file.write_text(json.dumps(doc))
    with served(cfg) as server:
        r = ref("other-app/42?x")
        assert server.request("GET", f"/item/{r}")[0] == 200
        assert server.request("GET", f"/media/{r}/video")[0] == 200
        assert server.json("PATCH", f"/api/items/{r}", {"title": "odd one"})[1]["item"]["title"] == "odd one"
        assert video.exists()
