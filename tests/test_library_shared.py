"""library.json is shared with other programs: nothing of theirs is lost, nothing deleted without consent.

Each test is a repro of issue 10 (items 2, 4, 5, 6, 11, 13): a slow in-place writer, foreign numbers,
another writer's temp files, a symlinked library, items vidtray cannot understand, and deep JSON.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_helpers import write_mp4

from vidtray.config import Config
from vidtray.errors import OperationFailed
from vidtray.services import fsutil
from vidtray.services.library import Change, Library, open_library
from vidtray.services.storage import clean_videos

ROOT = Path(__file__).resolve().parent.parent
OLD = time.time() - 90 * 86400


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_mp4(tmp_path_factory.mktemp("clip") / "clip.mp4").read_bytes()


def old_video(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (OLD, OLD))
    return path


SURROGATE = re.compile("[\ud800-\udfff]")


def text_of(doc: dict) -> str:
    """A document in the canonical style (what JSON.stringify(doc, null, 2) and vidtray write)."""
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    return SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@pytest.fixture(autouse=True)
def fresh_skip_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees its own "logged once" (the record is per process)."""
    from vidtray.services import libitem

    monkeypatch.setattr(libitem, "_skipped_logged", set())


def corrupt_copies(lib_file: Path) -> list[Path]:
    return sorted(lib_file.parent.glob(lib_file.name + ".corrupt-*"))


def clean_all(cfg: Config, lib: Library):
    # No age filter: these videos were listed a moment ago (age counts from max(added, mtime)).
    return clean_videos(cfg, lib, older_than_days=None, now=time.time(), to_trash=False, dry_run=False)


# -- item 2: a slow in-place writer; rebuilds carry protection over --------------------------------------------

IN_PLACE_WRITER = textwrap.dedent("""
    # Another app rewriting library.json in place: truncate, then chunks over about a second; no lock,
    # no temp file. It starts the chunks once vidtray holds its lock, so vidtray surely reads mid-write.
    import fcntl, os, sys, time
    path, src = sys.argv[1], sys.argv[2]
    data = open(src, "rb").read()
    fd = os.open(path, os.O_WRONLY)
    os.ftruncate(fd, 0)
    step = len(data) // 20 + 1
    os.write(fd, data[:step])
    print("started", flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        probe = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(probe, fcntl.LOCK_UN)
        except BlockingIOError:
            break  # vidtray holds it: it is reading our half-written file now
        finally:
            os.close(probe)
        time.sleep(0.005)
    for start in range(step, len(data), step):
        time.sleep(0.05)
        os.write(fd, data[start:start + step])
    os.close(fd)
    print("done", flush=True)
""")


def other_apps_library(videos: Path, clip: bytes, n_foreign: int) -> dict:
    keep = old_video(videos, "keep.mp4", clip)
    plain = old_video(videos, "plain.mp4", clip)
    return {
        "version": 1,
        "appSettings": {"theme": "dark", "zoom": 1.25},
        "items": [
            *({"id": f"img{k}", "type": "image", "path": f"/pictures/{k}.png", "crop": [0, 0, k, k]}
              for k in range(n_foreign)),
            {"id": "vid-keep", "type": "video", "path": str(keep), "title": "Keep me", "pinned": True,
             "tags": ["best"], "status": "ready", "theirNote": "pinned in the other app"},
            {"id": "vid-plain", "type": "video", "path": str(plain), "title": "plain", "pinned": False,
             "scheduled_at": None, "tags": [], "status": "ready"},
        ],
    }


def test_a_slow_in_place_writer_is_waited_for_and_nothing_is_lost(cli, cfg: Config, clip: bytes,
                                                                   tmp_path: Path) -> None:
    doc = other_apps_library(cfg.videos_dir, clip, 20_000)
    cfg.library_file.write_text(text_of(doc), encoding="utf-8")
    # What the other app writes now: its own change on top (a new key, one more item).
    doc["appSettings"]["zoom"] = 1.5
    doc["revision"] = 2
    doc["items"].insert(0, {"id": "img-new", "type": "image", "path": "/pictures/new.png"})
    new_text = tmp_path / "new.json"
    new_text.write_text(text_of(doc), encoding="utf-8")

    writer = subprocess.Popen([sys.executable, "-c", IN_PLACE_WRITER, str(cfg.library_file), str(new_text)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "started"
        r = cli("library", "edit", "vid-plain", "--title", "Edited by vidtray")
        assert writer.wait(timeout=120) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
    assert r.returncode == 0, r.stderr
    assert corrupt_copies(cfg.library_file) == [], r.stderr  # waited for the writer: nothing set aside
    after = json.loads(cfg.library_file.read_bytes())
    assert after["revision"] == 2 and after["appSettings"] == {"theme": "dark", "zoom": 1.5}
    assert sum(1 for i in after["items"] if i["type"] == "image") == 20_001
    items = {i["id"]: i for i in after["items"] if i["type"] == "video"}
    assert items["vid-keep"]["pinned"] is True and items["vid-keep"]["theirNote"] == "pinned in the other app"
    assert items["vid-plain"]["title"] == "Edited by vidtray"
    # and a following clean keeps the pinned video
    r = cli("clean", "videos", "--older-than", "30", "--yes", "--permanent")
    assert r.returncode == 0, r.stderr
    assert (cfg.videos_dir / "keep.mp4").exists() and not (cfg.videos_dir / "plain.mp4").exists()


def test_a_rebuild_carries_pins_schedules_edits_and_foreign_data_over(cfg: Config, clip: bytes) -> None:
    videos = [old_video(cfg.videos_dir, f"{n}.mp4", clip) for n in ("pinned", "scheduled", "edited", "plain")]
    lib = open_library(cfg)
    ids = [i["id"] for i in lib.add_videos([(v, {"duration_s": 1.0}) for v in videos])]
    lib.edit(ids[0], pinned=True)
    lib.edit(ids[1], scheduled_at="2030-01-01T09:00:00+00:00")
    lib.edit(ids[2], title="My title", tags=["a", "b"])

    def foreign(doc: dict) -> Change[None]:
        doc["theirs"] = {"big": 10**30}
        doc["items"].append({"id": "note-1", "type": "note", "text": "from the other app"})
        return Change(None, True)

    lib.update(foreign)
    lib.path.write_bytes(b"\x00\x00 a disk error, nothing decodes")
    # A new process (a fresh Library) notices: it has only the last good copy beside the file.
    fresh = open_library(cfg)
    fresh.settle_s = 0.3  # how long a writer may pause is item 2's other test; this one is about the rebuild
    items = {Path(i.path).name: i.data for i in fresh.items()}
    assert [p.read_bytes() for p in corrupt_copies(lib.path)] == [b"\x00\x00 a disk error, nothing decodes"]
    assert items["pinned.mp4"]["pinned"] is True
    assert items["scheduled.mp4"]["scheduled_at"] == "2030-01-01T09:00:00+00:00"
    assert items["edited.mp4"]["title"] == "My title" and items["edited.mp4"]["tags"] == ["a", "b"]
    assert [i["id"] for i in items.values()] == ids
    doc = fresh.document()
    assert doc["theirs"] == {"big": 10**30}
    assert {"id": "note-1", "type": "note", "text": "from the other app"} in doc["items"]
    result = clean_all(cfg, fresh)
    assert sorted(Path(d["path"]).name for d in result.deleted) == ["edited.mp4", "plain.mp4"]
    assert videos[0].exists() and videos[1].exists()


def test_a_damaged_file_keeps_what_still_decodes_and_never_loses_protection(cfg: Config, clip: bytes) -> None:
    a, b, c = (old_video(cfg.videos_dir, f"{n}.mp4", clip) for n in ("a", "b", "c"))
    lib = open_library(cfg)
    lib.settle_s = 0.3
    ia, ib, ic = lib.add_videos([(a, {}), (b, {}), (c, {})])
    lib.edit(ia["id"], pinned=True)
    # The other app then wrote a newer file (a's pin undone by mistake, a new key, b's title), which got
    # cut off in the middle of c's entry.
    doc = lib.document()
    doc["items"][0]["pinned"] = False
    doc["items"][1]["title"] = "renamed by the other app"
    doc["newKey"] = [1.50, "x"]
    doc = {"newKey": doc.pop("newKey"), **doc}
    text = text_of(doc).replace('"newKey": [\n    1.5,', '"newKey": [\n    1.50,')
    lib.path.write_text(text[: text.index(ic["id"])], encoding="utf-8")
    items = {Path(i.path).name: i.data for i in lib.items()}
    assert items["a.mp4"]["pinned"] is True  # protected in the last good copy: stays protected
    assert items["b.mp4"]["title"] == "renamed by the other app"  # the newer text wins where it decodes
    assert items["c.mp4"]["id"] == ic["id"]  # cut off: from the last good copy
    assert b'"newKey": [\n    1.50,' in lib.path.read_bytes()
    assert len(corrupt_copies(lib.path)) == 1


def test_without_a_last_good_copy_a_cut_off_file_still_gives_its_pins(cfg: Config, clip: bytes) -> None:
    doc = other_apps_library(cfg.videos_dir, clip, 3)
    text = text_of(doc)
    cfg.library_file.write_text(text[: text.index('"vid-plain"')], encoding="utf-8")
    lib = open_library(cfg)
    lib.settle_s = 0.3
    items = {i.id: i.data for i in lib.items()}
    assert items["vid-keep"]["pinned"] is True and items["vid-keep"]["title"] == "Keep me"
    assert Path(items[next(k for k in items if k != "vid-keep")]["path"]).name == "plain.mp4"  # from disk
    assert lib.document()["appSettings"] == {"theme": "dark", "zoom": 1.25}
    assert [p.name for p in clean_all(cfg, lib).deleted_paths] == ["plain.mp4"]


FLICKER = textwrap.dedent("""
    # A program that keeps rewriting library.json in place with bytes that never parse.
    import os, sys, time
    fd = os.open(sys.argv[1], os.O_WRONLY)
    k = 0
    while True:
        os.pwrite(fd, b"{ not json yet %d " % k, 0)
        k += 1
        time.sleep(0.05)
""")


def test_a_file_that_keeps_changing_is_never_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "library.json"
    path.write_text(text_of({"version": 1, "items": [], "theirs": True}))
    proc = subprocess.Popen([sys.executable, "-c", FLICKER, str(path)])
    try:
        time.sleep(0.5)
        lib = Library(path)
        lib.settle_s, lib.writer_wait_s = 1.0, 2.5
        with pytest.raises(OperationFailed, match="still changing"):
            lib.add_video(tmp_path / "a.mp4")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert corrupt_copies(path) == [] and path.exists()


# -- item 4: foreign values are kept byte for byte --------------------------------------------------------------

ODD_NUMBERS = ["1e400", "-1e400", "1.50", "1E5", "1e-7", "2.5e+10", "-0", "-0.0", "0.1", "100", "3.0",
               "12345678901234567890123", "-98765432109876543210", "NaN", "Infinity", "-Infinity",
               "0.30000000000000004", "1" + "0" * 5000]


def test_foreign_numbers_and_strings_keep_their_exact_text(tmp_path: Path) -> None:
    path = tmp_path / "library.json"
    numbers = ",\n    ".join(ODD_NUMBERS)
    strings = '"\\ud83c lone", "caf\u00e9 \U0001f3ac", "tab\\t quote\\" \\\\ \\u0001"'
    text = (f'{{\n  "version": 1,\n  "numbers": [\n    {numbers}\n  ],\n  "strings": [{strings}],\n'
            f'  "items": [\n    {{\n      "id": "t",\n      "type": "video",\n      "path": "/v/t.mp4",\n'
            f'      "duration_s": 3.50,\n      "mine": 1e400\n    }}\n  ]\n}}\n')
    path.write_text(text, encoding="utf-8")
    lib = Library(path)
    assert lib.get("t").duration_s == 3.5  # vidtray still reads its own field as a number
    lib.add_video(tmp_path / "new.mp4")
    lib.edit("t", tags=["x"])
    out = path.read_text(encoding="utf-8")
    assert f'"numbers": [\n    {numbers}\n  ],' in out
    for s in ('"\\ud83c lone"', '"café 🎬"', '"tab\\t quote\\" \\\\ \\u0001"'):
        assert s in out
    assert '"duration_s": 3.50,' in out and '"mine": 1e400' in out


def canonical_string(s: str) -> str:
    return SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(s, ensure_ascii=False))


numbers = st.from_regex(r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,4})?", fullmatch=True)
scalars = (numbers | st.text().map(canonical_string)
           | st.sampled_from(["true", "false", "null", "NaN", "Infinity", "-Infinity"])).map(lambda t: ("raw", t))
trees = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=16)


def render(tree, level: int) -> str:
    """JSON text of ``tree`` (leaves are raw texts) at ``level``, in the canonical 2-space style."""
    pad = "  " * (level + 1)
    if isinstance(tree, tuple):
        return tree[1]
    if isinstance(tree, list):
        if not tree:
            return "[]"
        return "[\n" + ",\n".join(pad + render(v, level + 1) for v in tree) + "\n" + "  " * level + "]"
    if not tree:
        return "{}"
    return ("{\n" + ",\n".join(f"{pad}{canonical_string(k)}: {render(v, level + 1)}" for k, v in tree.items())
            + "\n" + "  " * level + "}")


def nested(tree, depth: int):
    for n in range(depth):
        tree = [tree] if n % 2 else {"k": tree}
    return tree


def value_at(text: str, marker: str) -> str:
    start = text.index(marker) + len(marker)
    return text[start:json.JSONDecoder().raw_decode(text, start)[1]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(top=trees, inner=trees, depth=st.integers(0, 400))
def test_arbitrary_foreign_json_round_trips_byte_exact(tmp_path_factory: pytest.TempPathFactory, top, inner,
                                                       depth: int) -> None:
    """"Byte-exact": in a file written in the canonical style, the text of every foreign value (numbers as
    spelled, strings with their escapes, nesting up to 400 levels) is the same after vidtray's writes."""
    folder = tmp_path_factory.mktemp("lib")
    path = folder / "library.json"
    top_text, inner_text = render(nested(top, depth), 1), render(inner, 3)
    path.write_text(
        f'{{\n  "version": 1,\n  "foreign": {top_text},\n  "items": [\n    {{\n      "id": "theirs",\n'
        f'      "type": "video",\n      "path": "/v/theirs.mp4",\n      "extra": {inner_text}\n    }}\n  ]\n}}\n',
        encoding="utf-8")
    lib = Library(path)
    lib.add_video(folder / "new.mp4")
    lib.edit("theirs", tags=["t"])
    out = path.read_bytes().decode("utf-8")
    assert value_at(out, '\n  "foreign": ') == top_text
    assert value_at(out, '\n      "extra": ') == inner_text


# -- item 5: other programs' temp files -------------------------------------------------------------------------

OTHER_WRITER = textwrap.dedent("""
    # Another app saving library.json its own atomic way (write-file-atomic style temp names, no lock).
    import json, os, random, sys, time
    path, n = sys.argv[1], int(sys.argv[2])
    folder, name = os.path.split(path)
    failed = 0
    for k in range(n):
        tmp = os.path.join(folder, ".%s.%08x.tmp" % (name, random.getrandbits(32)))
        with open(tmp, "w") as fh:
            fh.write(json.dumps({"version": 1, "items": [], "otherWrites": k}))
        time.sleep(0.01)  # in flight
        try:
            os.replace(tmp, path)
        except FileNotFoundError:
            failed += 1
        time.sleep(0.002)
    print(failed)
""")


def test_another_writers_temp_files_are_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "library.json"
    path.write_text('{"version": 1, "items": []}')
    other = subprocess.Popen([sys.executable, "-c", OTHER_WRITER, str(path), "150"], stdout=subprocess.PIPE,
                             text=True)
    lib = Library(path)
    n = 0
    while other.poll() is None:
        lib.add_video(tmp_path / f"v{n}.mp4")
        n += 1
    assert other.returncode == 0 and n > 20
    assert other.stdout.read().strip() == "0"  # none of its writes lost its temp file


def test_only_vidtrays_own_stale_temp_files_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "library.json"
    Library(path).add_video(tmp_path / "a.mp4")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ours = fsutil.temp_prefix(path)
        host = fsutil._HOST
        names = {
            "dead": f"{ours}{dead}.{host}-aaaa.tmp",          # its writer was killed: removed
            "alive": f"{ours}{alive.pid}.{host}-bbbb.tmp",    # its writer may be writing: kept
            "alive_old": f"{ours}{alive.pid}.{host}-cccc.tmp",  # ... unless it is old: removed
            "elsewhere": f"{ours}{dead}.ffffff-dddd.tmp",     # another machine's, young: kept
            "theirs_old": ".library.json.a1b2c3.tmp",          # another program's, however old: kept
        }
        for key, name in names.items():
            (tmp_path / name).write_bytes(b"partial")
            if key.endswith("old"):
                os.utime(tmp_path / name, (time.time() - 3600,) * 2)
        Library(path).add_video(tmp_path / "b.mp4")
        left = {key for key, name in names.items() if (tmp_path / name).exists()}
        assert left == {"alive", "elsewhere", "theirs_old"}
    finally:
        alive.kill()
        alive.wait()


# -- item 6: a symlinked library ----------------------------------------------------------------------------------


def test_a_symlinked_library_is_written_through_the_link(tmp_path: Path) -> None:
    real = tmp_path / "other-app" / "data" / "library.json"
    real.parent.mkdir(parents=True)
    real.write_text(text_of({"version": 1, "items": [], "owner": "other-app"}))
    os.chmod(real, 0o644)
    ours = tmp_path / "vidtray"
    ours.mkdir()
    link = ours / "library.json"
    link.symlink_to(os.path.relpath(real, ours))
    lib = Library(link)
    lib.add_video(tmp_path / "a.mp4")
    assert link.is_symlink() and json.loads(real.read_bytes())["owner"] == "other-app"
    assert [Path(i["path"]).name for i in json.loads(real.read_bytes())["items"]] == ["a.mp4"]
    assert stat.S_IMODE(real.stat().st_mode) == 0o644
    assert sorted(p.name for p in ours.iterdir()) == ["library.json"]  # lock, temps, copies: beside the target
    assert lib.lock_path == real.with_name("library.json.lock") and lib.lock_path.exists()
    # A program (or another vidtray) using the real path shares the lock and sees the write.
    assert Library(real).lock_path == lib.lock_path
    assert Library(real).find_by_path(tmp_path / "a.mp4") is not None
    # A corrupt target is set aside beside itself; the link stays a link.
    real.write_bytes(b"{{{")
    lib.settle_s = 0.3
    assert [Path(i.path).name for i in lib.items()] == ["a.mp4"]
    assert link.is_symlink() and len(corrupt_copies(real)) == 1


# -- item 11: items vidtray cannot understand -----------------------------------------------------------------

MALFORMED = {
    "path is a list": {"id": "bad-path", "type": "video", "path": ["a"], "pinned": False},
    "id is a list": {"id": ["x"], "type": "video", "path": "/elsewhere/x.mp4"},
    "id is a number": {"id": 7, "type": "video", "path": "/elsewhere/seven.mp4"},
    "thumbnail is a number": {"id": "thumb3", "type": "video", "path": "/elsewhere/t.mp4", "thumbnail": 3},
    "path is null": {"id": "nopath", "type": "video", "path": None},
    "path no file can have": {"id": "sur", "type": "video", "path": "/elsewhere/a\ud800.mp4", "pinned": True},
    "fields of every type": {"id": "odd", "type": "video", "path": "/elsewhere/odd.mp4", "title": {"a": 1},
                             "duration_s": "long", "tags": "x,y", "status": 5, "size_bytes": [1]},
}


@pytest.mark.parametrize("bad", MALFORMED.values(), ids=MALFORMED.keys())
def test_an_item_vidtray_cannot_understand_stops_nothing(cfg: Config, clip: bytes, bad: dict,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    from vidtray.services.watcher import Watcher

    good = old_video(cfg.videos_dir, "good.mp4", clip)
    cfg.library_file.write_text(text_of({"version": 1, "items": [bad]}))
    lib = open_library(cfg)
    caplog.set_level(logging.WARNING, "vidtray.library")
    # every reader: list, show, summary, prefix lookup, protection
    lib.items()
    lib.summary()
    lib.protected_paths()
    lib.find_by_path(good)
    # every writer: the watcher's import and thumbnails, missing marks, edits, clean
    watcher = Watcher(lib, [cfg.videos_dir], thumbnails_dir=cfg.thumbnails_dir)
    report = watcher.reconcile()
    assert report.imported == [str(good)]
    mine = lib.find_by_path(good)
    assert mine is not None and mine.thumbnail
    lib.mark_missing([cfg.videos_dir / "gone.mp4"])
    lib.edit(mine.id, pinned=True)
    assert lib.get(mine.id[:6]).pinned is True
    lib.edit(mine.id, pinned=False)
    assert clean_all(cfg, lib).deleted_paths == [good]
    assert json.loads(cfg.library_file.read_bytes())["items"] == [bad]  # kept exactly as it was
    if isinstance(bad.get("id"), str) and isinstance(bad.get("path"), str):
        return  # usable: each reader checks the odd fields it needs, and none crashed
    # skipped, and said once however often it was read
    said = [r.getMessage() for r in caplog.records if "kept as it is" in r.getMessage()]
    assert said and len(set(said)) == len(said)


def test_malformed_items_do_not_stop_any_command(cli, cfg: Config, clip: bytes) -> None:
    good = old_video(cfg.videos_dir, "good.mp4", clip)
    cfg.library_file.write_text(text_of({"version": 1, "items": list(MALFORMED.values())}))
    original = [dict(i) for i in MALFORMED.values()]
    for args in (["library", "rescan"], ["library", "list"], ["library", "list", "--json"],
                 ["library", "show", "thumb3"], ["library", "show", "odd"], ["storage"],
                 ["clean", "videos", "--older-than", "30", "--yes", "--dry-run"]):
        r = cli(*args)
        assert r.returncode == 0, (args, r.stderr)
        assert "Traceback" not in r.stderr
    doc = json.loads(cfg.library_file.read_bytes())
    assert doc["items"][: len(original)] == original  # kept exactly (the ones it understands: unchanged too)
    assert [Path(i["path"]).name for i in doc["items"][len(original):]] == [good.name]


@pytest.mark.parametrize(("pinned", "scheduled", "protected"), [
    (True, None, True), (1, None, True), ("yes", None, True), ([1], None, True),
    (None, "2030-01-01", True), (None, "next tuesday", True), (None, 12345, True),
    (False, None, False), (0, None, False), (None, "", False), ("", False, False),
])
def test_any_truthy_pin_and_any_schedule_protect(cfg: Config, clip: bytes, pinned, scheduled, protected) -> None:
    video = old_video(cfg.videos_dir, "v.mp4", clip)
    cfg.library_file.write_text(text_of({"version": 1, "items": [
        {"id": "v", "type": "video", "path": str(video), "pinned": pinned, "scheduled_at": scheduled}]}))
    clean_all(cfg, open_library(cfg))
    assert video.exists() == protected


def test_a_pinned_item_whose_path_cannot_be_read_still_protects_its_file(cfg: Config, clip: bytes) -> None:
    video = old_video(cfg.videos_dir, "v.mp4", clip)
    other = old_video(cfg.videos_dir, "other.mp4", clip)
    cfg.library_file.write_text(text_of({"version": 1, "items": [
        {"id": "v", "type": "video", "path": [str(video)], "pinned": True},
        {"id": ["w"], "type": "video", "path": str(other), "pinned": 1}]}))
    result = clean_all(cfg, open_library(cfg))
    assert video.exists() and other.exists() and result.deleted == []


# -- item 13: deep JSON ---------------------------------------------------------------------------------------


def test_deep_json_is_set_aside_and_everything_else_is_carried_over(cli, cfg: Config, clip: bytes) -> None:
    doc = other_apps_library(cfg.videos_dir, clip, 2)
    text = text_of(doc)
    deep = "[" * 5000 + "]" * 5000
    text = text.replace('"appSettings": {', f'"deep": {deep},\n  "appSettings": {{', 1)
    text = text.replace('"theirNote": ', f'"deepToo": {deep}, "theirNote": ', 1)
    cfg.library_file.write_text(text, encoding="utf-8")
    r = cli("library", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert "moved to" in r.stderr
    [aside] = corrupt_copies(cfg.library_file)
    assert aside.read_text(encoding="utf-8") == text
    after = json.loads(cfg.library_file.read_bytes())
    assert "deep" not in after and after["appSettings"] == doc["appSettings"]
    assert [i["id"] for i in after["items"][:2]] == ["img0", "img1"]
    items = {i["id"]: i for i in json.loads(r.stdout)["items"]}
    assert set(items) == {"vid-keep", "vid-plain"}
    # The pinned item held a deep value itself: it keeps everything else, its pin included.
    assert items["vid-keep"]["pinned"] is True and "deepToo" not in items["vid-keep"]
    assert items["vid-keep"]["theirNote"] == "pinned in the other app"
    r = cli("clean", "videos", "--older-than", "30", "--yes", "--permanent")
    assert r.returncode == 0, r.stderr
    assert (cfg.videos_dir / "keep.mp4").exists() and not (cfg.videos_dir / "plain.mp4").exists()


def test_nesting_the_parser_takes_is_not_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "library.json"
    deep = "[" * 600 + "1.50" + "]" * 600
    path.write_text(f'{{"version": 1, "deep": {deep}, "items": []}}')
    lib = Library(path)
    lib.add_video(tmp_path / "a.mp4")
    assert lib.find_by_path(tmp_path / "a.mp4").id
    assert corrupt_copies(path) == []
    out = path.read_text()
    assert re.sub(r"\s", "", out).count("[" * 600 + "1.50" + "]" * 600) == 1


# -- also: privacy of a new library -------------------------------------------------------------------------


def test_a_new_library_is_private_and_an_existing_one_keeps_its_mode(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        lib = Library(tmp_path / "new" / "folder" / "library.json")
        lib.add_video(tmp_path / "a.mp4")
        assert stat.S_IMODE(lib.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(lib.path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(lib.path.parent.parent.stat().st_mode) == 0o700
        shared = tmp_path / "shared.json"
        shared.write_text('{"version": 1, "items": []}')
        os.chmod(shared, 0o664)
        Library(shared).add_video(tmp_path / "b.mp4")
        assert stat.S_IMODE(shared.stat().st_mode) == 0o664
    finally:
        os.umask(old)


def test_the_last_good_copy_is_hidden_and_follows_the_library(tmp_path: Path) -> None:
    lib = Library(tmp_path / "library.json")
    lib.add_video(tmp_path / "a.mp4")
    assert lib.last_good_path.name.startswith(".") and lib.last_good_path.read_bytes() == lib.path.read_bytes()
    # another program's valid change, read by vidtray: the copy follows it
    doc = json.loads(lib.path.read_bytes())
    doc["theirs"] = 1
    lib.path.write_text(text_of(doc))
    lib.items()
    assert json.loads(lib.last_good_path.read_bytes())["theirs"] == 1
    shutil.rmtree(tmp_path / "nothing", ignore_errors=True)
