"""The app factory: one FastAPI app, one router per area, the web UI as static files."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from localdiffusion import __version__
from localdiffusion.errors import BadInput, LocalDiffusionError, ModelNotFound
from starlette.middleware.base import BaseHTTPMiddleware

from localdiffusion.server.auth import TokenMiddleware
from localdiffusion.server.studio import Studio

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def create_app(studio: Studio, start_worker: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_worker:
            studio.worker.start()
        yield
        studio.worker.stop()

    app = FastAPI(title="Local Diffusion", version=__version__, lifespan=lifespan,
                  description="The studio's JSON API (/api) and an AUTOMATIC1111-compatible API (/sdapi/v1).")
    app.state.studio = studio
    _add_error_handlers(app)
    _add_routers(app)
    app.add_middleware(BodyLimitMiddleware, limit=_body_limit(studio))
    if studio.token:
        app.add_middleware(TokenMiddleware, token=studio.token)
    if WEB_DIR.is_dir():
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


def _body_limit(studio: Studio) -> int:
    # Base64 (the A1111 API's JSON images) is 4/3 the size of the file, plus the other fields.
    return studio.library.settings.max_upload_mb * 2**20 * 3 // 2 + 2**20


class BodyLimitMiddleware(BaseHTTPMiddleware):
    """Refuse oversized request bodies from their Content-Length, before anything reads them."""

    def __init__(self, app, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def dispatch(self, request: Request, call_next):
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            return JSONResponse({"detail": f"The request is {int(length) / 2**20:.1f} MiB, above the limit of "
                                 f"{self.limit // 2**20} MiB; upload a smaller image.", "field": None}, status_code=413)
        return await call_next(request)


def _add_routers(app: FastAPI) -> None:
    from localdiffusion.server import a1111, api, comic, control, events, explain, finish

    app.include_router(api.router)
    app.include_router(control.router)
    app.include_router(comic.router)
    app.include_router(explain.router)
    app.include_router(finish.router)
    app.include_router(events.router)
    app.include_router(a1111.router)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LocalDiffusionError)
    async def person_error(request: Request, exc: LocalDiffusionError) -> JSONResponse:
        status = 404 if isinstance(exc, ModelNotFound) else 400 if isinstance(exc, BadInput) else 422
        return JSONResponse({"detail": exc.message, "field": exc.field}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]} for e in exc.errors()]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        return JSONResponse({"detail": f"The field '{first['field']}' is not valid: {first['message']}.",
                             "field": first["field"] or None, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail, "field": None}, status_code=exc.status_code, headers=exc.headers)
