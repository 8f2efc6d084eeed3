"""The library page's ASGI app: the pages (gallery, item, queue, storage), their fragments for live updates,
the media files and the JSON API under ``/api/`` (documented in the README), all behind ``security.Guard``.

Pages are rendered on the server (Jinja2, autoescaped); the page's script only swaps in fragments the server
rendered, so text from library.json reaches the browser escaped, always by the same templates.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from vidtray import __version__
from vidtray.config import Config
from vidtray.errors import OperationFailed, UserError, VidtrayError
from vidtray.services import generation as gen
from vidtray.services.recipe import recipe_details, recipe_for
from vidtray.web import jobs, space, views
from vidtray.web import token as tokens
from vidtray.web.gallery import PAGE, SORTS, Conflict, LibraryStore, NotFound, Query, Row
from vidtray.web.security import Activity, Guard

log = logging.getLogger("vidtray.web")

STATIC = Path(__file__).with_name("static")
MAX_BODY = 1 << 20
#: Thumbnails and videos may be kept by the browser for a while (they change name when they change).
MEDIA_CACHE = "private, max-age=300"
EDITABLE = ("title", "tags", "scheduled_at", "pinned")

Handler = Callable[[Request], Awaitable[Response]]


class Page:
    """What the routes share: the config, the library store, pending storage plans, the templates."""

    def __init__(self, cfg: Config, token: str) -> None:
        self.cfg = cfg
        self.store = LibraryStore(cfg)
        self.plans = space.Plans()
        self.csrf = tokens.csrf_for(token)
        self._active: tuple[str, int] = ("", 0)
        self.env = Environment(loader=PackageLoader("vidtray.web", "templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(size=views.size, duration=views.duration, date=views.date, iso=views.iso,
                                ref=views.ref, local_input=views.local_input)
        self.env.globals.update(static=self.static, version=__version__, sorts=SORTS)

    def static(self, name: str) -> str:
        try:
            stamp = int((STATIC / name).stat().st_mtime)
        except OSError:
            stamp = 0
        return f"/static/{name}?v={__version__}-{stamp}"

    def active_jobs(self) -> int:
        """How many jobs are running or queued (the header's count), read again only when the queue changed."""
        version = jobs.version(self.cfg)
        if self._active[0] != version:
            overview = jobs.overview(self.cfg, recent=0)
            self._active = (version, len(overview["active"]))
        return self._active[1]

    def render(self, name: str, context: Mapping[str, Any], status: int = 200) -> HTMLResponse:
        """A page (with what every page needs), or a fragment (a template named ``_*``)."""
        context = dict(context)
        if not name.startswith("_"):
            context.update(csrf=self.csrf, library_version=self.store.version(),
                           queue_version=jobs.version(self.cfg), active_jobs=self.active_jobs())
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})


# -- helpers ------------------------------------------------------------------------------------------------


def _runnable(item: Any) -> bool:
    """Whether "Generate again" can run this item's recipe (one whose values break the schema cannot)."""
    try:
        return recipe_for(item) is not None
    except UserError:
        return False


def _int(value: str | None, default: int, low: int = 0, high: int = 1 << 30) -> int:
    try:
        return max(low, min(high, int(value))) if value is not None else default
    except ValueError:
        return default


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object (UserError for anything else)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise UserError("send a JSON object (Content-Type: application/json)")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise UserError("the request is too large")
    try:
        doc = json.loads(raw or b"{}")
    except ValueError as exc:
        raise UserError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UserError("send a JSON object")
    return doc


def _item_id(request: Request) -> str:
    return views.unref(str(request.path_params["ref"]))


def _ok(**doc: Any) -> JSONResponse:
    return JSONResponse({"ok": True, **doc}, headers={"cache-control": "no-store"})


def _item_json(row: Row) -> dict[str, Any]:
    return {**row.item, "urls": {"page": f"/item/{views.ref(row.id)}", "video": f"/media/{views.ref(row.id)}/video",
                                 "thumbnail": f"/media/{views.ref(row.id)}/thumb"}}


def parse_changes(doc: Mapping[str, Any]) -> dict[str, object]:
    """An item edit from the page or another app: title, tags (a list, or comma-separated text), scheduled_at
    (ISO-8601 date-time, or null/"" to clear) and pinned; checked as ``vidtray library edit`` checks them."""
    from vidtray.commands.library import parse_schedule

    unknown = sorted(set(doc) - set(EDITABLE))
    if unknown:
        raise UserError(f"cannot change {', '.join(unknown)} (only {', '.join(EDITABLE)})")
    changes: dict[str, object] = {}
    if "title" in doc:
        title = doc["title"]
        if not isinstance(title, str) or not title.strip():
            raise UserError("title must be a non-empty text")
        changes["title"] = title.strip()
    if "tags" in doc:
        tags = doc["tags"]
        if isinstance(tags, str):
            tags = tags.split(",")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise UserError("tags must be a list of texts (or one comma-separated text)")
        changes["tags"] = list(dict.fromkeys(t.strip() for t in tags if t.strip()))
    if "scheduled_at" in doc:
        when = doc["scheduled_at"]
        if when is not None and not isinstance(when, str):
            raise UserError("scheduled_at must be an ISO-8601 date-time, or null")
        changes["scheduled_at"] = parse_schedule(when or "none")
    if "pinned" in doc:
        if not isinstance(doc["pinned"], bool):
            raise UserError("pinned must be true or false")
        changes["pinned"] = doc["pinned"]
    if not changes:
        raise UserError("nothing to change (give title, tags, scheduled_at or pinned)")
    return changes


# -- the app ------------------------------------------------------------------------------------------------


def create_app(cfg: Config, *, token: str, port: int, activity: Activity | None = None) -> Guard:
    """The page as an ASGI app for ``port`` (the Host check needs it), behind its guard."""
    page = Page(cfg, token)
    routes = _page_routes(page) + _api_routes(page) + [
        Route("/media/{ref}/{kind}", _media(page)),
        Route("/icon.png", _icon),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={VidtrayError: _error(page), HTTPException: _http_error(page)})
    app.state.page = page
    return Guard(app, token=token, port=port, activity=activity)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error(page: Page) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else \
            400 if isinstance(exc, UserError) else 500
        if status == 500:
            log.warning("%s %s failed: %s", request.method, request.url.path, exc)
        if _wants_json(request) or request.method != "GET":
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=status)
        return await run_in_threadpool(page.render, "error.html",
                                       {"page_name": "error", "message": str(exc), "code": status}, status)

    return handle


def _http_error(page: Page) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        text = exc.detail if isinstance(exc, HTTPException) else "error"
        if _wants_json(request) or request.method != "GET" or request.url.path.startswith(("/static/", "/media/")):
            return JSONResponse({"ok": False, "error": text}, status_code=status)
        return await run_in_threadpool(page.render, "error.html",
                                       {"page_name": "error", "message": text, "code": status}, status)

    return handle


async def _icon(request: Request) -> Response:
    from vidtray.icons import icon_path

    return FileResponse(icon_path("idle"), headers={"cache-control": MEDIA_CACHE})


def _media(page: Page) -> Handler:
    async def media(request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in ("video", "thumb"):
            raise NotFound("no such file")
        path = await run_in_threadpool(page.store.media_file, _item_id(request), kind)
        if path is None:
            # Not served: absent, or outside the folders the page serves from (library.json is shared).
            raise NotFound(f"this item's {'video' if kind == 'video' else 'thumbnail'} is not available")
        return FileResponse(path, headers={"cache-control": MEDIA_CACHE})

    return media


# -- pages --------------------------------------------------------------------------------------------------


def _page_routes(page: Page) -> list[Route]:
    # Plain functions: Starlette runs them in its thread pool (they read files and render templates).
    def gallery(request: Request) -> Response:
        query = Query.of(request.query_params)
        offset = _int(request.query_params.get("offset"), 0)
        limit = _int(request.query_params.get("limit"), PAGE, 1, 500)
        snap = page.store.snapshot()
        rows, total = snap.select(query, offset, limit)
        end = offset + len(rows)
        context = {"page_name": "gallery", "query": query, "rows": rows, "total": total, "offset": offset,
                   "counts": snap.counts(), "models": snap.models(), "next_offset": end if end < total else None,
                   "next_params": urlencode({**query.params(), "offset": end})}
        fragment = request.query_params.get("fragment")
        name = {"cards": "_cards.html", "grid": "_grid.html"}.get(fragment or "", "gallery.html")
        return page.render(name, context)

    def item(request: Request) -> Response:
        row = page.store.row(_item_id(request))
        recipe = recipe_details(row.item)
        context = {"page_name": "item", "row": row, "recipe": views.recipe_rows(row, recipe),
                   "can_again": recipe is not None and _runnable(row.item),
                   "video_ok": page.store.media_file(row.id, "video") is not None,
                   "to_trash": page.cfg.prune_to_trash}
        fragment = request.query_params.get("fragment") == "details"
        return page.render("_item_details.html" if fragment else "item.html", context)

    def queue(request: Request) -> Response:
        overview = jobs.overview(page.cfg)
        snap = page.store.snapshot()
        context = {"page_name": "queue", "paused": overview["paused"],
                   "active": [views.job_row(j, snap) for j in overview["active"]],
                   "recent": [views.job_row(j, snap) for j in overview["recent"]]}
        if request.query_params.get("fragment") == "jobs":
            return page.render("_jobs.html", context)
        model = page.cfg.model
        context.update(fields=jobs.form_fields(), model=model, models=jobs.model_choices(page.cfg),
                       defaults=jobs.model_defaults(page.cfg, model))
        return page.render("queue.html", context)

    def storage_page(request: Request) -> Response:
        context = {"page_name": "storage", "report": space.report(page.cfg)}
        fragment = request.query_params.get("fragment") == "panel"
        return page.render("_storage.html" if fragment else "storage.html", context)

    return [Route("/", gallery), Route("/item/{ref}", item), Route("/queue", queue),
            Route("/storage", storage_page)]


# -- the JSON API -------------------------------------------------------------------------------------------


def _api_routes(page: Page) -> list[Route]:
    return _api_library(page) + _api_queue(page) + _api_storage(page)


def _api_library(page: Page) -> list[Route]:
    store = page.store

    async def ping(request: Request) -> Response:
        return _ok(app="vidtray", version=__version__, pid=os.getpid(), library=str(page.cfg.library_file))

    async def version(request: Request) -> Response:
        active = await run_in_threadpool(page.active_jobs)
        return _ok(library=store.version(), queue=jobs.version(page.cfg), active_jobs=active)

    async def items(request: Request) -> Response:
        query = Query.of(request.query_params)
        offset = _int(request.query_params.get("offset"), 0)
        limit = _int(request.query_params.get("limit"), PAGE, 1, 500)
        snap = await run_in_threadpool(store.snapshot)
        rows, total = snap.select(query, offset, limit)
        return _ok(version=snap.version, total=total, offset=offset, query=query.params(),
                   items=[_item_json(r) for r in rows])

    async def one(request: Request) -> Response:
        item_id = _item_id(request)
        if request.method == "PATCH":
            changes = parse_changes(await _body(request))
            await run_in_threadpool(store.edit, item_id, changes)
        elif request.method == "DELETE":
            result = await run_in_threadpool(store.delete, item_id)
            return _ok(**result.as_dict())
        row = await run_in_threadpool(store.row, item_id)
        return _ok(item=_item_json(row), recipe=await run_in_threadpool(recipe_details, row.item))

    async def entry(request: Request) -> Response:
        removed = await run_in_threadpool(store.remove_entry, _item_id(request))
        return _ok(removed=removed)

    async def again(request: Request) -> Response:
        vary = bool((await _body(request)).get("vary"))
        row = await run_in_threadpool(store.row, _item_id(request))
        req: gen.Request | None = await run_in_threadpool(recipe_for, row.item)
        if req is None:
            raise Conflict(f"{row.title!r} has no recipe vidtray can run again (it was not generated by vidtray)")
        job = await run_in_threadpool(lambda: jobs.again(page.cfg, req, vary=vary))
        return _ok(job=job)

    async def reveal(request: Request) -> Response:
        from vidtray.web.desktop import reveal as show

        row = await run_in_threadpool(store.row, _item_id(request))
        if not Path(row.path).exists():
            raise Conflict(f"{row.path} is not there (missing)")
        try:
            show(Path(row.path))
        except OSError as exc:
            raise OperationFailed(f"cannot show the folder: {exc}") from None
        return _ok()

    return [
        Route("/api/ping", ping), Route("/api/version", version), Route("/api/items", items),
        Route("/api/items/{ref}", one, methods=["GET", "PATCH", "DELETE"]),
        Route("/api/items/{ref}/entry", entry, methods=["DELETE"]),
        Route("/api/items/{ref}/again", again, methods=["POST"]),
        Route("/api/items/{ref}/reveal", reveal, methods=["POST"]),
    ]


def _api_queue(page: Page) -> list[Route]:
    cfg = page.cfg

    async def queue(request: Request) -> Response:
        if request.method == "POST":
            values = {k: str(v) if isinstance(v, str | int | float) and not isinstance(v, bool) else ""
                      for k, v in (await _body(request)).items()}
            job, errors = await run_in_threadpool(jobs.submit_form, cfg, values)
            if job is None:
                return JSONResponse({"ok": False, "error": "some fields need a change", "errors": errors},
                                    status_code=400)
            return JSONResponse({"ok": True, "job": job}, status_code=201)
        return _ok(**await run_in_threadpool(jobs.overview, cfg))

    async def cancel(request: Request) -> Response:
        return _ok(job=await run_in_threadpool(jobs.cancel, cfg, str(request.path_params["job"])))

    async def check(request: Request) -> Response:
        field = request.query_params.get("field", "")
        error = await run_in_threadpool(jobs.check_field, field, request.query_params.get("value", ""))
        return _ok(field=field, error=error)

    async def defaults(request: Request) -> Response:
        model = request.query_params.get("model", "").strip() or cfg.model
        return _ok(model=model, defaults=await run_in_threadpool(jobs.model_defaults, cfg, model))

    return [Route("/api/queue", queue, methods=["GET", "POST"]),
            Route("/api/queue/{job}/cancel", cancel, methods=["POST"]),
            Route("/api/form/check", check), Route("/api/form/defaults", defaults)]


def _api_storage(page: Page) -> list[Route]:
    cfg, plans, lib = page.cfg, page.plans, page.store.lib

    async def report(request: Request) -> Response:
        return _ok(**await run_in_threadpool(space.report, cfg))

    async def plan(request: Request) -> Response:
        doc = await _body(request)
        what = doc.get("what")
        if what == "videos":
            days = doc.get("older_than_days")
            if days is not None and (isinstance(days, bool) or not isinstance(days, int | float) or days < 0):
                raise UserError("older_than_days must be a number of days >= 0, or null for all")
            return _ok(**await run_in_threadpool(plans.plan_videos, cfg, lib, days))
        if what == "model":
            repo = doc.get("repo_id")
            if not isinstance(repo, str) or not repo.strip():
                raise UserError("repo_id: which model?")
            return _ok(**await run_in_threadpool(plans.plan_models, repo.strip()))
        if what == "models":
            return _ok(**await run_in_threadpool(plans.plan_models, None))
        raise UserError('what must be "videos", "model" or "models"')

    async def execute(request: Request) -> Response:
        plan_id = (await _body(request)).get("plan")
        if not isinstance(plan_id, str):
            raise UserError("plan: the id a plan answered with")
        return _ok(**await run_in_threadpool(plans.execute, plan_id, cfg, lib))

    return [Route("/api/storage", report), Route("/api/storage/plan", plan, methods=["POST"]),
            Route("/api/storage/execute", execute, methods=["POST"])]
