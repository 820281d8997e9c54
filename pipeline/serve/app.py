"""The explorer's web application (FastAPI): read-only pages over one dataset.

    /                 status counts            /grid?status=...&query=...&page=N   the grid
    /row/<uid>        one row, its cluster     /search?text=... | ?like=<uid>      search
    /queries          top queries              /report                             the report
    /thumb?...        a signed thumbnail

Every route is a GET whose query string is the whole view. With a token (required off loopback),
every request must carry it: `?token=` once (the server answers with a cookie and the same URL
without it, so a shared link does not leak it), the cookie, or `Authorization: Bearer`.
"""

import hmac
import logging
from urllib.parse import urlencode

from pipeline.serve import pages, views
from pipeline.serve.data import BadRequest, DatasetView, Filters
from pipeline.serve.images import NEVER_SHOWN, Thumbnails

log = logging.getLogger(__name__)
COOKIE = "pipeline_serve_token"
# No script may run, whatever a caption holds; images only from this server (and the report's
# inline data: thumbnails); forms submit only here; no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; "
    "style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _caps(view: DatasetView) -> tuple[int, int]:
    """The build's image byte and pixel caps (run.json), so a thumbnail decodes nothing the
    build would not have."""
    import json

    from pipeline.images.resize import ImageConfig

    defaults = ImageConfig()
    try:
        images = json.loads(view.layout.run_json.read_text()).get("config", {}).get("images", {})
    except (OSError, ValueError):
        images = {}
    return (
        int(images.get("max_bytes", defaults.max_bytes)),
        int(images.get("max_pixels", defaults.max_pixels)),
    )


class Explorer:
    """What the routes share: the dataset, its thumbnails, the search model (loaded lazily)."""

    def __init__(self, root):
        self.view = DatasetView(root)
        self.thumbs = Thumbnails(self.view.layout, *_caps(self.view))
        self.name = self.view.layout.root.name or str(self.view.layout.root)
        self._searcher = None

    def page(self, template: str, here: str, title: str, **values) -> str:
        nav = [("/", "overview"), ("/grid", "grid"), ("/queries", "queries")]
        nav += [("/report", "report")]
        if self.view.has_embeddings():
            nav.append(("/search", "search"))
        return pages.render(template, dataset=self.name, nav=nav, here=here, title=title, **values)

    def thumb_urls(self, rows: list[dict], size: str = "s") -> list[str | None]:
        version = self.view.version()
        return [self.thumbs.url(version, row, size) for row in rows]

    def searcher(self):
        """The embeddings' searcher, loaded again when `pipeline embed` has written new ones."""
        from pipeline.embed import store
        from pipeline.embed.search import Searcher

        meta = store.embeddings_dir(self.view.layout.root) / "meta.json"
        key = (self.view.version(), meta.read_bytes() if meta.exists() else b"")
        if self._searcher is None or self._searcher[0] != key:
            self._searcher = (key, Searcher(self.view.layout.root, device="cpu"))
        return self._searcher[1]


def create_app(root, token: str | None = None):
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, RedirectResponse, Response

    explorer = Explorer(root)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)  # no API pages to serve

    def html(text: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(text, status_code=status)

    def error(status: int, title: str, message: str) -> HTMLResponse:
        return html(explorer.page("error.html", "", title, message=message), status)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token is not None:
            given = _given_token(request)
            if given is None or not hmac.compare_digest(given.encode(), token.encode()):
                response = Response("a valid token is required\n", 401, media_type="text/plain")
                return _secure(response)
            if "token" in request.query_params:
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                target = request.url.path + ("?" + urlencode(rest) if rest else "")
                response = RedirectResponse(target, status_code=303)
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
                return _secure(response)
        try:
            response = await call_next(request)
        except Exception:  # a bug or a damaged file: one logged traceback, a plain page
            log.exception("%s failed", request.url.path)
            response = error(500, "Something went wrong", "The server could not answer this.")
        return _secure(response)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        return error(400, "Bad request", str(exc))

    @app.exception_handler(404)
    async def not_found(request: Request, exc):
        return error(404, "Not found", "There is no such page in this explorer.")

    @app.get("/")
    def home():
        statuses = views.status_counts(explorer.view)
        total = sum(n for _, n in statuses)
        searchable = explorer.view.has_embeddings()
        return html(
            explorer.page(
                "home.html",
                "overview",
                "overview",
                statuses=statuses,
                total=total,
                searchable=searchable,
            )
        )

    @app.get("/grid")
    def grid(request: Request):
        filters = Filters.parse(request.query_params)
        page = views.grid(explorer.view, filters)
        values = dict(
            f=filters,
            page=page,
            thumbs=explorer.thumb_urls(page.rows),
            statuses=views.status_counts(explorer.view),
            languages=views.languages(explorer.view),
        )
        return html(explorer.page("grid.html", "grid", "grid", **values))

    @app.get("/row/{uid}")
    def row(uid: str):
        return _row_page(explorer, uid, html, error)

    @app.get("/queries")
    def queries():
        def link(query: str, status: str) -> str:
            return Filters(query=query, status=status).link()

        rows = views.top_queries(explorer.view)
        return html(explorer.page("queries.html", "queries", "queries", queries=rows, link=link))

    @app.get("/report")
    def report():
        from pipeline.report import render

        return html(explorer.view.cached("report", lambda: render(explorer.view.layout.root)))

    @app.get("/search")
    def search(request: Request):
        from pipeline.serve.search import search_page

        return html(search_page(explorer, request.query_params))

    @app.get("/thumb")
    def thumb(request: Request):
        jpeg = explorer.thumbs.get(explorer.view.version(), dict(request.query_params))
        if jpeg is None:
            return Response(status_code=404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private"})

    return app


def _given_token(request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query_params.get("token") or request.cookies.get(COOKIE)


def _secure(response):
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _row_page(explorer: Explorer, uid: str, html, error):
    view = explorer.view
    record = views.row(view, uid)
    if record is None:
        return error(404, "No such row", f"No manifest row has uid {uid}.")
    others = views.cluster(view, record)
    leak = views.eval_match(view, record.get("leak_of") or "")
    version = view.version()
    no_image = (
        "not shown: its site opted out or it was taken down"
        if record["status"] in NEVER_SHOWN
        else "no image stored for this row"
    )
    values = dict(
        row=record,
        thumb=explorer.thumbs.url(version, record, "l"),
        no_image=no_image,
        leak=leak,
        leak_thumb=explorer.thumbs.eval_url(version, leak["eval_id"]) if leak else None,
        leak_link=Filters(leak_of=leak["eval_id"]).link() if leak else "",
        cluster=others,
        cluster_thumbs=explorer.thumb_urls(others),
        cluster_link=Filters(cluster=uid).link(),
        similar=view.has_embeddings() and record["status"] == "kept",
        columns=[(k, pages.column_value(v)) for k, v in record.items() if k != "part"],
    )
    return html(explorer.page("row.html", "", record["caption"] or uid, **values))
