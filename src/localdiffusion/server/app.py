"""The app factory: one FastAPI app, one router per area, the web UI as static files."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from localdiffusion import __version__
from localdiffusion.errors import BadInput, LocalDiffusionError, ModelNotFound
from localdiffusion.server.access import enforce_access
from localdiffusion.server.accounts import AccountsMiddleware, AccountsState
from localdiffusion.server.console import stored_join_code
from localdiffusion.server.auth import OriginMiddleware
from localdiffusion.server.deps import Caller
from localdiffusion.server.admission import AllowedModelsMiddleware
from localdiffusion.server.openapi import add_docs, use_described_schema
from localdiffusion.server.studio import Studio

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

# What a browser may load for a page of this server: its own files, previews as data: URLs, blobs the UI
# makes (downloads, picked files); style attributes set by the UI, but no inline scripts or style sheets.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data: blob:; media-src 'self' blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # The printed address carries the token: no page of this server tells another site where it came from.
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
}


def create_app(studio: Studio, start_worker: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_worker:
            from localdiffusion.server.classqueue import apply_pins

            apply_pins(studio)  # the facilitator's pinned models stay loaded once loaded
            studio.scheduler.start(recover=True)  # jobs a dead server left running go back once, here only
        yield
        if start_worker:
            studio.scheduler.stop()

    settings = studio.library.settings
    app = FastAPI(title="Local Diffusion", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="The studio's JSON API (/api) and an AUTOMATIC1111-compatible API (/sdapi/v1).",
                  dependencies=[Depends(enforce_access)])
    app.state.studio = studio
    accounts = app.state.accounts = AccountsState(studio.accounts, Caller(studio.owner_id, studio.owner_name),
                                                  token=studio.token, join_code=studio.join_code or stored_join_code(studio.db))
    _add_error_handlers(app)
    _add_routers(app)
    add_docs(app)
    use_described_schema(app)
    # The last one added sees a request first: headers on every answer, then names and origins, then who asks
    # (accounts once the home has any, else the token when there is one: server/accounts.py).
    # A participant's allowed models come after authentication, which names the caller.
    app.add_middleware(AllowedModelsMiddleware, studio=studio)
    app.add_middleware(BodyLimitMiddleware, limit=_body_limit(studio))
    app.add_middleware(AccountsMiddleware, state=accounts)
    # With accounts every request signs in, so any name may reach the server (a class opens it by the machine's name).
    app.add_middleware(OriginMiddleware, check_host=not (studio.token or studio.accounts.enabled()),
                       allowed_hosts=settings.allowed_hosts)
    app.add_middleware(SecurityHeadersMiddleware)
    if WEB_DIR.is_dir():
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


def _body_limit(studio: Studio) -> int:
    # Base64 (the A1111 API's JSON images) is 4/3 the size of the file, plus the other fields.
    return studio.library.settings.max_upload_mb * 2**20 * 3 // 2 + 2**20


class BodyTooLarge(StarletteHTTPException):
    """Raised while the body arrives; FastAPI passes HTTP exceptions from reading the body on to the error handler."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(413, f"The request is {size / 2**20:.1f} MiB or more, above the limit of {limit // 2**20} MiB; "
                              f"upload a smaller image.")


class BodyLimitMiddleware:
    """Refuse oversized request bodies: at once from Content-Length, else by counting the bytes as they arrive
    (a chunked upload has no length), so that nothing reads more than the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            return await self.refuse(BodyTooLarge(int(length), self.limit), scope, receive, send)
        received, started = 0, False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(received, self.limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as too_large:  # read outside a route (nothing answered it yet)
            if started:
                raise
            await self.refuse(too_large, scope, receive, send)

    @staticmethod
    async def refuse(error: BodyTooLarge, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"detail": error.detail, "field": None}, status_code=413)(scope, receive, send)


class SecurityHeadersMiddleware:
    """Every HTTP answer says what its page may load and that no other site may frame or sniff it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()
                            if name.encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _add_routers(app: FastAPI) -> None:
    from localdiffusion.server import (
        a1111, accounts, api, class_users, classqueue, comic, console, control, events, explain, finish, wall,
    )
    from localdiffusion.server import model_downloads

    app.include_router(accounts.router)
    app.include_router(class_users.router)
    app.include_router(api.router)
    app.include_router(classqueue.router)
    app.include_router(console.router)
    app.include_router(control.router)
    app.include_router(comic.router)
    app.include_router(explain.router)
    app.include_router(finish.router)
    app.include_router(events.router)
    app.include_router(a1111.router)
    app.include_router(wall.router)
    app.include_router(model_downloads.router)
    from localdiffusion.server import library, train

    app.include_router(library.router)
    app.include_router(train.router)


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
                             "field": first["field"] or None, "errors": errors,
                             # a stable code and its values beside the English detail (which A1111 clients read),
                             # so the studio can say it in the person's language
                             "code": "invalid_field", "values": {"field": first["field"], "message": first["message"]}},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail, "field": None}, status_code=exc.status_code, headers=exc.headers)
