"""Access token: required on every request when the server listens beyond this machine.

Accepted as a bearer token or HTTP Basic password (API clients), an `ld_token` cookie (the UI),
or once as `?token=` in the address, which sets the cookie.
"""

from __future__ import annotations

import base64
import secrets

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.middleware.base import BaseHTTPMiddleware

COOKIE = "ld_token"


def new_token() -> str:
    return secrets.token_urlsafe(18)


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return None
    return request.cookies.get(COOKIE) or request.query_params.get("token")


class TokenMiddleware(BaseHTTPMiddleware):
    def __init__(self, app, token: str) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next):
        given = presented_token(request)
        # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, answered 500).
        if given is None or not secrets.compare_digest(given.encode("utf-8"), self.token.encode("utf-8")):
            return JSONResponse({"detail": "This server needs its access token: open the address it printed at start, "
                                 "or send 'Authorization: Bearer TOKEN'.", "field": None}, status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="localdiffusion"'})
        if request.query_params.get("token") and request.method == "GET" and not request.url.path.startswith(("/api", "/sdapi")):
            response = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
        else:
            response = await call_next(request)
        response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        return response
