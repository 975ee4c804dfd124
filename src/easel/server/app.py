"""The FastAPI app factory: lifespan (schema, secret, pipeline, workers), errors, routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from easel import __version__
from easel.config import Settings, get_settings
from easel.errors import BadInput, EaselError, NotFound, PermissionDenied
from easel.server.jobs import JobRunner, PipelineFactory, QueueFull

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
MAX_REQUEST_BYTES = 32 * 1024 * 1024
"""Largest request body (32 MiB): a 20 MiB upload, or an A1111 JSON body with base64 images."""
API_PREFIXES = ("/api/", "/sdapi/", "/openapi", "/docs", "/redoc")


def status_for(exc: EaselError) -> int:
    """The HTTP status of an Easel error."""
    from easel.server.accounts import QuotaExceeded
    from easel.server.deps import NotAuthenticated

    explicit = getattr(exc, "http_status", None)
    if isinstance(explicit, int):
        return explicit
    if isinstance(exc, NotAuthenticated):
        return 401
    if isinstance(exc, QuotaExceeded | QueueFull):
        return 429
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, PayloadTooLarge):
        return 413
    if isinstance(exc, UnsupportedMediaType):
        return 415
    if isinstance(exc, BadInput):
        return 400
    return 400


class PayloadTooLarge(BadInput):
    """An upload or body over the limit (HTTP 413)."""


class UnsupportedMediaType(BadInput):
    """An upload whose content type is not an image we accept (HTTP 415)."""


def wants_json(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIXES)


def error_response(request: Request, status: int, message: str, hint: str | None = None,
                   retry_after: int | None = None) -> Response:
    """JSON for the API, an HTML page for the studio (401 on a page: go to the login page)."""
    headers: dict[str, str] = {}
    if status == 429:
        headers["Retry-After"] = str(retry_after or 5)
    if wants_json(request):
        if status == 401 and request.url.path.startswith("/sdapi/"):
            headers["WWW-Authenticate"] = 'Basic realm="easel"'
        body: dict[str, Any] = {"error": message, "hint": hint, "status": status}
        if status == 429:
            body["retry_after"] = int(headers["Retry-After"])
        return JSONResponse(body, status_code=status, headers=headers)
    if status == 401:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, "error.html", {
        "status": status, "message": message, "hint": hint, "user": None, "csrf": ""},
        status_code=status, headers=headers)


class BodyLimit(BaseHTTPMiddleware):
    """Refuse bodies over ``MAX_REQUEST_BYTES`` from their Content-Length, before reading them."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_REQUEST_BYTES):
            return error_response(request, 413, f"the request body is larger than "
                                  f"{MAX_REQUEST_BYTES // 2**20} MiB", "send a smaller file")
        return await call_next(request)


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once a body without Content-Length passes the limit."""


class StreamLimit:
    """The same limit for bodies sent without Content-Length (chunked): bytes are counted as
    the app reads them; past ``MAX_REQUEST_BYTES`` reading stops and the answer is 413, whatever
    the route was about to say (so nothing reaches the route's storing code)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0
        exceeded = False
        started = False

        async def counted() -> Any:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_REQUEST_BYTES:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if exceeded:
                if not started:
                    started = True
                    await self._refuse(scope, send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except _BodyTooLarge:
            if not started:
                started = True
                await self._refuse(scope, send)

    @staticmethod
    async def _refuse(scope: Any, send: Any) -> None:
        import json

        message = f"the request body is larger than {MAX_REQUEST_BYTES // 2**20} MiB"
        if str(scope.get("path", "")).startswith(API_PREFIXES):
            body = json.dumps({"error": message, "hint": "send a smaller file", "status": 413}).encode()
            ctype = b"application/json"
        else:
            body = f"<!doctype html><title>413</title><h1>Too large</h1><p>{message}.</p>".encode()
            ctype = b"text/html; charset=utf-8"
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings | None = None, pipeline_factory: PipelineFactory | None = None) -> FastAPI:
    """The web studio and HTTP API over ``settings`` (default: the environment's).

    Nothing heavy happens here: the schema upgrade, the session secret and the pipeline load
    run in the lifespan, once, when the server starts.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from easel.registry.store import upgrade
        from easel.server.security import session_secret

        settings.ensure_home()
        upgrade(settings.db_url)
        app.state.secret = session_secret(settings)
        runner = JobRunner(settings, pipeline_factory)
        runner.start()
        app.state.runner = runner
        log.info("easel server ready: model %s, %d worker(s), queue %d", runner.model_id,
                 settings.server_workers, settings.server_queue)
        try:
            yield
        finally:
            runner.stop()

    app = FastAPI(
        title="Easel", version=__version__, lifespan=lifespan,
        description="A consent-first AI art studio: generate images with content credentials, "
        "register works and decide their consent, verify any image. Also speaks a subset of "
        "the AUTOMATIC1111 API under /sdapi/v1.",
    )
    app.state.settings = settings
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.add_middleware(BodyLimit)
    app.add_middleware(StreamLimit)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(EaselError)
    async def _easel_error(request: Request, exc: EaselError) -> Response:
        return error_response(request, status_for(exc), exc.message, exc.hint,
                              getattr(exc, "retry_after", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "form"))
            parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
        return error_response(request, 422, "; ".join(parts) or "invalid request",
                              "see /docs for the fields this route takes")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(request, exc.status_code, str(exc.detail))

    from easel.server.api import pages
    from easel.server.api.routes import auth, images, jobs, sdapi, verify, works

    for module in (auth, works, jobs, images, verify, sdapi):
        app.include_router(module.router)
    app.include_router(pages.router)

    @app.get("/api/health", tags=["meta"], summary="Liveness and the model in use")
    def health(request: Request) -> dict[str, Any]:
        runner: JobRunner | None = getattr(request.app.state, "runner", None)
        return {"ok": runner is not None and runner.started, "version": __version__,
                "model_id": runner.model_id if runner else None,
                "model_sha256": runner.model_sha256 if runner else None,
                "queued": runner.queued() if runner else 0}

    return app
