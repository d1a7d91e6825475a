"""Who may ask: the access token, and which names and pages the server answers.

The token is required on every request when the server listens beyond this machine. It is accepted
as a bearer token or HTTP Basic password (API clients), as `?token=` in the address (which sets the
`ld_token` cookie and wins over an old one), or from that cookie (the UI). Wrong tokens are throttled
per client address.

Without a token (the server listens on this machine only), a request must name the server as
localhost, 127.0.0.1 or [::1] (or a name in the setting `allowed_hosts`) in its Host header, so that a
web page whose own name resolves to 127.0.0.1 (DNS rebinding) gets nothing. In every mode a request
that changes something, and the event socket, are refused when they come from a page of another
origin. Both are pure ASGI middlewares, so that they guard the WebSocket too: a refused socket is
accepted and closed at once with code 1008 and the reason, which a browser can read.
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "ld_token"
POLICY_VIOLATION = 1008  # WebSocket close code for a refused connection
# The names of this machine that a page on it uses. `testserver` is the name test clients
# (Starlette's, Django's) give the server: a single-label name that no public DNS answers.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "testserver")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
WEAK_TOKEN_LENGTH = 16


def new_token() -> str:
    return secrets.token_urlsafe(18)


def weak_token_reason(token: str) -> str | None:
    """Why a token is easy to guess (too short, or too few different characters), or None."""
    if len(token) < WEAK_TOKEN_LENGTH:
        return f"it has {len(token)} characters, fewer than {WEAK_TOKEN_LENGTH}"
    if len(set(token)) < 8:
        return f"it uses only {len(set(token))} different characters"
    return None


def presented_token(connection: HTTPConnection) -> tuple[str | None, str]:
    """The token a request carries and where: "header", "address" (`?token=`, which wins over an old cookie) or "cookie"."""
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip(), "header"
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value).decode("utf-8").partition(":")[2], "header"
        except (ValueError, UnicodeDecodeError):
            return None, "header"
    if connection.query_params.get("token"):
        return connection.query_params["token"], "address"
    return connection.cookies.get(COOKIE), "cookie"


def token_matches(given: str | None, token: str) -> bool:
    # As bytes: compare_digest refuses str with characters beyond ASCII.
    return given is not None and secrets.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


async def refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str,
                 headers: dict[str, str] | None = None) -> None:
    """Answer `status` with the sentence; a WebSocket is accepted and closed with 1008 and the sentence as reason."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        reason = detail.encode("utf-8")[:123].decode("utf-8", "ignore")  # a close reason holds at most 123 bytes
        await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": reason})
        return
    await JSONResponse({"detail": detail, "field": None}, status_code=status, headers=headers)(scope, receive, send)


class FailureThrottle:
    """Wrong access tokens per client address: after `limit` different ones within `window` seconds, the address waits.

    Different ones, so that a browser that keeps sending one old cookie is not taken for someone guessing."""

    def __init__(self, limit: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: dict[str, dict[str, float]] = {}  # address -> {digest of a wrong token: when it was last sent}

    def _recent(self, address: str) -> dict[str, float]:
        now = self.clock()
        for addr in [a for a, seen in self._failures.items() if all(now - t > self.window for t in seen.values())]:
            del self._failures[addr]
        seen = self._failures.get(address, {})
        for digest in [d for d, t in seen.items() if now - t > self.window]:
            del seen[digest]
        return seen

    def failed(self, address: str, token: str) -> None:
        digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        self._recent(address)
        self._failures.setdefault(address, {})[digest] = self.clock()

    def wait(self, address: str) -> int:
        """Seconds until `address` may try again; 0 when it may now."""
        times = sorted(self._recent(address).values())
        if len(times) < self.limit:
            return 0
        return max(1, math.ceil(times[len(times) - self.limit] + self.window - self.clock()))


def token_cookie(token: str) -> tuple[bytes, bytes]:
    """The raw Set-Cookie header that keeps the token in the browser (HttpOnly, SameSite=Strict)."""
    response = Response()
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
    return next(h for h in response.raw_headers if h[0] == b"set-cookie")


class TokenMiddleware:
    """Every HTTP request and WebSocket must present the token."""

    def __init__(self, app: ASGIApp, token: str, throttle: FailureThrottle | None = None) -> None:
        self.app, self.token = app, token
        self.throttle = throttle or FailureThrottle()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        connection = HTTPConnection(scope)
        address = connection.client.host if connection.client else "unknown"
        wait = self.throttle.wait(address)
        if wait:
            return await refuse(scope, receive, send, 429,
                                f"Too many wrong access tokens came from {address} in the last minute; try again in {wait} seconds.",
                                {"Retry-After": str(wait)})
        given, source = presented_token(connection)
        if not token_matches(given, self.token):
            if given:
                self.throttle.failed(address, given)
            return await refuse(scope, receive, send, 401,
                                "This server needs its access token: open the address it printed at start, "
                                "or send 'Authorization: Bearer TOKEN'.", {"WWW-Authenticate": 'Basic realm="localdiffusion"'})
        if source == "header" or scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        cookie = token_cookie(self.token)
        if source == "address" and scope["method"] == "GET" and not scope["path"].startswith(("/api", "/sdapi")):
            # The printed address: keep the token in the cookie and show the page without it in the address bar.
            url = str(HTTPConnection(scope).url.remove_query_params("token"))
            redirect = RedirectResponse(url, status_code=303)
            redirect.raw_headers.append(cookie)
            return await redirect(scope, receive, send)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append(cookie)
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def split_host(host: str) -> tuple[str, str]:
    """'Name:port' as (lowercase name, port or ''); an IPv6 address keeps its brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host.partition("]")
        return name + "]", rest.removeprefix(":")
    name, _, port = host.partition(":")
    return name.rstrip("."), port


class OriginMiddleware:
    """Refuse other Host names (loopback mode only) and pages of other origins that change things or open the socket."""

    def __init__(self, app: ASGIApp, check_host: bool, allowed_hosts: Iterable[str] = ()) -> None:
        self.app, self.check_host = app, check_host
        self.extra = [split_host(h) for h in allowed_hosts]
        self.allowed = [split_host(h) for h in LOOPBACK_HOSTS] + self.extra

    @staticmethod
    def named(host: str, names: list[tuple[str, str]]) -> bool:
        name, port = split_host(host)
        return any(name == allowed and (not allowed_port or port == allowed_port) for allowed, allowed_port in names)

    def origin_allowed(self, origin: str, host: str) -> bool:
        """The page's origin is this server as the request names it, or a name from `allowed_hosts`
        (not any port of localhost: another program there is another origin)."""
        try:
            netloc = urlsplit(origin).netloc.lower()
        except ValueError:
            return False
        return bool(netloc) and (netloc == host.lower() or self.named(netloc, self.extra))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.check_host and not self.named(host, self.allowed):
            return await refuse(scope, receive, send, 403,
                                f"The name '{host[:60]}' is not one this server answers to; use localhost, 127.0.0.1 or [::1], "
                                f"or add the name to \"allowed_hosts\" in settings.json.")
        if scope["type"] == "http" and scope["method"] in SAFE_METHODS:
            return await self.app(scope, receive, send)
        origin = headers.get("origin")
        if origin is not None:
            refused = not self.origin_allowed(origin, host)
        else:  # no Origin: curl and scripts; a browser that sends Sec-Fetch-Site says where the request comes from
            refused = headers.get("sec-fetch-site") in ("cross-site", "same-site")
            origin = "another site"
        if refused:
            what = "open the event socket" if scope["type"] == "websocket" else "change anything here"
            return await refuse(scope, receive, send, 403,
                                f"A page from {origin[:80]} may not {what}; only the studio's own pages may.")
        await self.app(scope, receive, send)
