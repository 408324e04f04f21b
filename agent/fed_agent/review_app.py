"""The review page's web app (FastAPI): the queue, its images, and the three actions.

Routes: `GET /` the page, `GET /review.js` its script, `GET /thumb/<sha256>.jpg` and
`GET /image/<sha256>.jpg` a stored image made small, `POST /label` (sha, label),
`POST /skip` (sha), `POST /not-usable` (sha), each with the page's form token (`csrf`) and
answered by a redirect to the page, which shows what was done and the next image.

Why every request goes through one middleware: the host and token checks (review_auth)
must hold for every path, the page's security headers must be on every answer, and nothing a
browser sends may take the page down: a malformed form is a 400 naming the field, an image
not waiting for review any more changes nothing and says so on the page, a busy store is a
503 asking to reload, and a failed move a 500 saying what failed (logged).
"""

from __future__ import annotations

import signal
from typing import Optional
from urllib.parse import parse_qs

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from .review_auth import COOKIE, PageGuard, bearer_of
from .review_page import PAGE_HEADERS, SCRIPT, render_message, render_page
from .review_queue import SHA256, NotInQueue, ReviewQueue
from .review_thumbs import SIZES, NotAnImage, thumbnail
from .store_writer import IndexBusy

MAX_FORM_BYTES = 4096
IMAGE_CACHE = "private, max-age=604800, immutable"  # keyed by content: never changes


class BadRequest(ValueError):
    """A request the page cannot act on; `status` and the message (naming the field) go back."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def message(status: int, title: str, text: str, **headers) -> HTMLResponse:
    return HTMLResponse(render_message(title, text), status_code=status, headers=headers)


def create_review_app(queue: ReviewQueue, guard: PageGuard, agent: str, log) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def checked(request: Request, call_next):
        answer = _refusal(request, guard, log) or await _token_in_query(request, guard) or await call_next(request)
        answer.headers.update(PAGE_HEADERS)
        return answer

    @app.get("/")
    async def page() -> Response:
        def build() -> str:
            notice = queue.last.text if queue.last else None
            return render_page(agent, queue.items(), queue.labels, guard.form_token, notice)
        return await _store_call(build, log, lambda text: HTMLResponse(text, headers={"Cache-Control": "no-store"}))

    @app.get("/review.js")
    async def script() -> Response:
        return Response(SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/{kind}/{name}")
    async def image(kind: str, name: str, request: Request) -> Response:
        sha = name.removesuffix(".jpg")
        if kind not in SIZES or not name.endswith(".jpg") or not SHA256.match(sha):
            return message(404, "Not found", "no such page")
        if request.headers.get("if-none-match") == f'"{sha}-{kind}"':
            return Response(status_code=304, headers={"ETag": f'"{sha}-{kind}"', "Cache-Control": IMAGE_CACHE})
        return await _store_call(lambda: thumbnail(queue.stored_file(queue.entry(sha)), SIZES[kind]), log,
                                 lambda data: Response(data, media_type="image/jpeg", headers={
                                     "ETag": f'"{sha}-{kind}"', "Cache-Control": IMAGE_CACHE}))

    @app.post("/label")
    async def label(request: Request) -> Response:
        return await _act(request, guard, queue, log, "label")

    @app.post("/skip")
    async def skip(request: Request) -> Response:
        return await _act(request, guard, queue, log, "skip")

    @app.post("/not-usable")
    async def not_usable(request: Request) -> Response:
        return await _act(request, guard, queue, log, "not-usable")

    return app


def _refusal(request: Request, guard: PageGuard, log) -> Optional[Response]:
    """The answer for a request the host or token check refuses (None: it may go on)."""
    host = request.headers.get("host", "")
    problem = guard.host_problem(host)
    status = 421 if problem else guard.token_status(bearer_of(request.headers.get("authorization")),
                                                     request.cookies.get(COOKIE),
                                                     request.query_params.get("token") if request.method == "GET"
                                                     else None)
    if status == 200:
        return None
    reason = problem or ("no token" if status == 401 else "wrong token")
    log.warning("review_request_refused", path=request.url.path, status=status, reason=reason,
                client=request.client.host if request.client else None)
    if status == 401:
        return message(401, "Token needed", "open this page once as /?token=<the token in review.token_file>",
                       **{"WWW-Authenticate": "Bearer"})
    return message(status, "Refused", reason)


async def _token_in_query(request: Request, guard: PageGuard) -> Optional[Response]:
    """A right `?token=` (checked already) becomes the cookie, and the address loses it."""
    if guard.token is None or request.method != "GET" or "token" not in request.query_params:
        return None
    answer = RedirectResponse(request.url.path, status_code=303)
    answer.set_cookie(COOKIE, guard.token, httponly=True, samesite="lax", path="/")
    return answer


async def _store_call(work, log, respond) -> Response:
    """`respond(work())`, with the store's failures as pages, run off the event loop."""
    try:
        return respond(await run_in_threadpool(work))
    except NotInQueue as exc:
        return message(404, "Not found", str(exc))
    except NotAnImage as exc:
        return message(422, "Not an image", str(exc))
    except IndexBusy as exc:
        return message(503, "Store busy", f"{exc}; reload in a moment", **{"Retry-After": "2"})
    except OSError as exc:
        log.error("review_store_failed", error=str(exc)[:300])
        return message(500, "Store error", f"the store could not be read or changed: {exc.strerror or exc}")


async def _act(request: Request, guard: PageGuard, queue: ReviewQueue, log, action: str) -> Response:
    """One POST: checked, done under the store lock, then back to the page."""
    try:
        form = await _form(request, ("sha", "csrf", "label") if action == "label" else ("sha", "csrf"))
        problem = guard.post_problem(form["csrf"], request.headers.get("origin"),
                                     request.headers.get("sec-fetch-site"), request.headers.get("host", ""))
        if problem:
            raise BadRequest(403, problem)
        sha = form["sha"]
        if not SHA256.match(sha):
            raise BadRequest(400, "field 'sha': must be 64 lowercase hex digits (a SHA-256)")
        if action == "label" and form["label"] not in queue.labels:
            raise BadRequest(400, f"field 'label': must be one of {', '.join(queue.labels)}")
    except BadRequest as exc:
        log.warning("review_request_refused", path=request.url.path, status=exc.status, reason=str(exc))
        return message(exc.status, "Refused", str(exc))
    work = {"label": lambda: queue.label(sha, form["label"]), "skip": lambda: queue.skip(sha),
            "not-usable": lambda: queue.not_usable(sha)}[action]

    def done_or_refused():
        try:
            work()
        except (NotInQueue, ValueError) as exc:  # ValueError: LabelRefused
            queue.refused(sha, str(exc))
    return await _store_call(done_or_refused, log, lambda _: RedirectResponse("/", status_code=303))


async def _form(request: Request, fields: tuple[str, ...]) -> dict[str, str]:
    """The url-encoded form, each of `fields` exactly once (bounded: MAX_FORM_BYTES)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadRequest(413, f"the form is larger than {MAX_FORM_BYTES} bytes")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(400, "the body must be a url-encoded form") from None
    values = {}
    for name in fields:
        given = parsed.get(name, [])
        if len(given) != 1:
            raise BadRequest(400, f"field {name!r}: required, once" if not given else f"field {name!r}: given twice")
        values[name] = given[0]
    return values


def run_server(app: FastAPI, host: str, port: int, on_started) -> bool:
    """Serve until SIGTERM / SIGINT; False when it could not start (uvicorn logged why: a
    port in use, an address not on this machine). `on_started` runs once it listens."""

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started:
                on_started()

    server = Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                   server_header=False, proxy_headers=False, lifespan="off"))
    for sig in (signal.SIGTERM, signal.SIGINT):  # uvicorn raises the signal again once stopped:
        signal.signal(sig, lambda *_: None)  # let that end here, so the stop is logged and exit is 0
    try:
        server.run()
    except SystemExit:  # uvicorn's answer to a failed bind, after logging it
        return False
    return server.started
