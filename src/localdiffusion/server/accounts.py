"""Signing in: who a request comes from once the home has accounts, and the /api/auth routes.

With no account in the home, `AccountsMiddleware` hands every request to the access token check of
server/auth.py, exactly as before. Once an account exists, every request on every address is
authenticated here, in one of three ways:

- the `ld_session` cookie from `POST /api/auth/login` (HttpOnly, SameSite=Lax, Secure over https); a
  change (POST, PUT, PATCH, DELETE) made with it also needs the `X-CSRF-Token` header equal to the
  session's token, which login and `/api/auth/me` give to the page;
- `Authorization: Bearer TOKEN`, a personal API token (`POST /api/auth/tokens`);
- HTTP Basic with the user name and the password or a personal token (what A1111 clients send).

The server's access token (`serve --token`, or the one generated for a public address) still works as
a bearer token or Basic password and acts as the home's own owner, who manages everything: a way in for
the operator's scripts. The signed-in user's `Caller` goes into the request's scope, where `get_caller`
finds it; `server/access.py` then decides what the route allows them. Failed sign-ins are counted per
user name: ten within 5 minutes close that name for 5 minutes (429).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from localdiffusion.server.access import ACCOUNTS_SCOPE_KEY, SIGN_IN
from localdiffusion.server.auth import TokenMiddleware, refuse, token_matches
from localdiffusion.server.deps import CALLER_SCOPE_KEY, Caller, get_caller
from localdiffusion.store.accounts import TOKEN_PREFIX, Accounts, User

SESSION_COOKIE = "ld_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_SCOPE_KEY = "localdiffusion.csrf"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# Signing in, joining and out need no CSRF token: the page has none yet (a page of another origin is refused
# by OriginMiddleware before this).
NO_CSRF_PATHS = {"/api/auth/login", "/api/auth/join", "/api/auth/logout"}
ONLINE_SECONDS = 300
WRONG_LOGIN = "The user name or password is not right."
BAD_CSRF = (f"This change needs the {CSRF_HEADER} header of your session (the studio's pages send it); "
            f"reload the page and try again.")


class LoginThrottle:
    """Failed sign-ins per user name: after `limit` within `window` seconds, the name waits `lockout` seconds."""

    def __init__(self, limit: int = 10, window: float = 300.0, lockout: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.lockout, self.clock = limit, window, lockout, clock
        self._failures: dict[str, list[float]] = {}
        self._locked: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, name: str) -> int:
        """Seconds until `name` may try again; 0 when it may now."""
        with self._lock:
            until = self._locked.get(name.lower(), 0.0) - self.clock()
            return max(1, int(until + 0.999)) if until > 0 else 0

    def failed(self, name: str) -> None:
        key, now = name.lower(), self.clock()
        with self._lock:
            recent = [t for t in self._failures.get(key, []) if now - t <= self.window] + [now]
            self._failures[key] = recent
            if len(recent) >= self.limit:
                self._locked[key] = now + self.lockout
                self._failures[key] = []
            if len(self._failures) > 10_000:  # names nobody uses: forget the old ones
                self._failures = {k: v for k, v in self._failures.items() if v and now - v[-1] <= self.window}

    def refusal(self, name: str, what: str | None = None) -> tuple[int, str, dict[str, str]] | None:
        """429 with a sentence that says when to try again, while `name` waits; else None."""
        wait = self.wait(name)
        if not wait:
            return None
        at = time.strftime("%H:%M", time.localtime(time.time() + wait))
        return (429, f"Too many {what or f'failed sign-ins for {name[:40]!r}'} in the last 5 minutes; try again in "
                     f"{wait} seconds (at {at}).", {"Retry-After": str(wait)})


@dataclass
class AccountsState:
    """What signing in needs for one app: the accounts, the server token, the join code, the throttle, who is online."""

    accounts: Accounts
    owner: Caller  # the home's own owner, for the server's access token
    token: str | None = None
    join_code: str | None = None
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    seen: dict[str, float] = field(default_factory=dict)  # user name -> when they last asked something
    sockets: dict[str, int] = field(default_factory=dict)  # user name -> open event sockets
    _verified: dict[tuple[int, str], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def caller(user: User) -> Caller:
        return Caller(user.owner_id, user.name, user.role, user.frozen)

    def password_ok(self, user: User, password: str) -> bool:
        """argon2 verification (slow on purpose), remembered for this password hash, so that an A1111 client
        sending Basic on every request pays it once; a new password forgets it."""
        key = (user.id, hashlib.sha256(password.encode("utf-8", "replace")).hexdigest())
        with self._lock:
            if self._verified.get(key) == user.password_hash:
                return True
        if not self.accounts.verify_password(user, password):
            return False
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[key] = user.password_hash
        return True

    def online(self, name: str) -> bool:
        return self.sockets.get(name, 0) > 0 or time.time() - self.seen.get(name, 0.0) < ONLINE_SECONDS


def accounts_state(connection: HTTPConnection) -> AccountsState:
    return connection.app.state.accounts


Refusal = tuple[int, str, dict[str, str] | None]


class AccountsMiddleware:
    """Authenticate every request once the home has accounts (see the module's docstring); before that, the token check."""

    def __init__(self, app: ASGIApp, state: AccountsState) -> None:
        self.app, self.state = app, state
        self.guarded = TokenMiddleware(app, state.token) if state.token else app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        enabled, caller, csrf, refusal = await anyio.to_thread.run_sync(self.authenticate, scope)
        if not enabled:
            return await self.guarded(scope, receive, send)
        if refusal is not None:
            status, detail, headers = refusal
            return await refuse(scope, receive, send, status, detail, headers)
        scope[ACCOUNTS_SCOPE_KEY] = True
        if caller is None:
            if scope["type"] == "websocket":
                return await refuse(scope, receive, send, 401, SIGN_IN)
            return await self.app(scope, receive, send)
        scope[CALLER_SCOPE_KEY] = caller
        scope[CSRF_SCOPE_KEY] = csrf
        self.state.seen[caller.name] = time.time()
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        self.state.sockets[caller.name] = self.state.sockets.get(caller.name, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.sockets[caller.name] -= 1
            self.state.seen[caller.name] = time.time()

    def authenticate(self, scope: Scope) -> tuple[bool, Caller | None, str | None, Refusal | None]:
        """(accounts on, the caller or None for anonymous, the session's CSRF token, a refusal)."""
        accounts = self.state.accounts
        if not accounts.enabled():
            return False, None, None, None
        connection = HTTPConnection(scope)
        scheme, _, value = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            caller, refusal = self.bearer(value.strip())
            return True, caller, None, refusal
        if scheme.lower() == "basic":
            try:
                name, _, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, ValueError, UnicodeDecodeError):
                return True, None, None, (401, "The Authorization header is not valid HTTP Basic (base64 of name:password).", None)
            caller, refusal = self.basic(name, secret)
            return True, caller, None, refusal
        session = connection.cookies.get(SESSION_COOKIE)
        found = accounts.session(session) if session else None
        if found is None:
            return True, None, None, None  # anonymous: public routes answer, the others 401 (server/access.py)
        user, csrf = found
        if (scope["type"] == "http" and scope["method"] in UNSAFE_METHODS and scope["path"] not in NO_CSRF_PATHS
                and not secrets.compare_digest(connection.headers.get(CSRF_HEADER, "").encode("utf-8", "replace"), csrf.encode())):
            return True, None, None, (403, BAD_CSRF, None)
        return True, self.state.caller(user), csrf, None

    def bearer(self, token: str) -> tuple[Caller | None, Refusal | None]:
        user = self.state.accounts.token_user(token)
        if user is not None:
            return self.state.caller(user), None
        if self.state.token and token_matches(token, self.state.token):
            return self.state.owner, None
        return None, (401, "This API token is not valid (it may have been deleted); make a new one in the studio's user menu.", None)

    def basic(self, name: str, secret: str) -> tuple[Caller | None, Refusal | None]:
        throttled = self.state.throttle.refusal(name)
        if throttled:
            return None, throttled
        if secret.startswith(TOKEN_PREFIX):
            user = self.state.accounts.token_user(secret)
            if user is not None and user.name.lower() == name.lower():
                return self.state.caller(user), None
        else:
            user = self.state.accounts.get(name)
            if user is not None and self.state.password_ok(user, secret):
                return self.state.caller(user), None
        if self.state.token and token_matches(secret, self.state.token):
            return self.state.owner, None
        self.state.throttle.failed(name)
        return None, (401, WRONG_LOGIN, None)


# --- the routes ------------------------------------------------------------------------------------

router = APIRouter(prefix="/api", tags=["accounts"])


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)


class Join(Login):
    code: str = Field(max_length=200)


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field("", max_length=100)


def user_json(caller: Caller) -> dict[str, Any]:
    return {"name": caller.name, "role": caller.role, "frozen": caller.frozen}


def signed_in(request: Request, user: User, status: int = 200) -> JSONResponse:
    """A new session for `user`: the answer with its CSRF token and the cookie."""
    state = accounts_state(request)
    token, csrf = state.accounts.new_session(user)
    response = JSONResponse({"user": user_json(state.caller(user)), "csrf_token": csrf}, status_code=status)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=request.url.scheme == "https",
                        max_age=30 * 86400, path="/")
    return response


def no_accounts() -> HTTPException:
    return HTTPException(404, "This server has no accounts, so there is nothing to sign in to; open the studio directly.")


@router.post("/auth/login", responses={429: {"description": "Too many failed sign-ins for this name."}})
def login(body: Login, request: Request) -> JSONResponse:
    """Sign in: {"user": {"name", "role"}, "csrf_token"} and the `ld_session` cookie."""
    state = accounts_state(request)
    if not state.accounts.enabled():
        raise no_accounts()
    throttled = state.throttle.refusal(body.username)
    if throttled:
        raise HTTPException(throttled[0], throttled[1], headers=throttled[2])
    user = state.accounts.get(body.username)
    if user is None or not state.password_ok(user, body.password):
        state.throttle.failed(body.username)
        raise HTTPException(401, WRONG_LOGIN)
    return signed_in(request, user)


@router.post("/auth/logout")
def logout(request: Request) -> JSONResponse:
    """End this browser's session."""
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        accounts_state(request).accounts.end_session(session)
    response = JSONResponse({"signed_in": False})
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


@router.get("/auth/me", responses={401: {"description": "Accounts are on and nobody is signed in."}})
def me(request: Request) -> JSONResponse:
    """Who is signed in ({"accounts", "user", "csrf_token"}); 401 when accounts are on and nobody is
    (with "join": whether a join code lets a person make an account)."""
    state = accounts_state(request)
    if not request.scope.get(ACCOUNTS_SCOPE_KEY):
        return JSONResponse({"accounts": False, "user": user_json(get_caller(request)), "csrf_token": None})
    caller = request.scope.get(CALLER_SCOPE_KEY)
    if caller is None:
        return JSONResponse({"detail": "Sign in to use the studio.", "field": None, "join": bool(state.join_code)},
                            status_code=401)
    return JSONResponse({"accounts": True, "user": user_json(caller), "csrf_token": request.scope.get(CSRF_SCOPE_KEY)})


@router.post("/auth/join", status_code=201, responses={429: {"description": "Too many wrong join codes."}})
def join(body: Join, request: Request) -> JSONResponse:
    """Make a participant account with the class's join code, and sign in with it."""
    state = accounts_state(request)
    if not state.join_code or not state.accounts.enabled():
        raise HTTPException(404, "This server takes no sign-ups; ask the facilitator for an account.")
    address = "join@" + (request.client.host if request.client else "unknown")
    throttled = state.throttle.refusal(address, "wrong join codes from this address")
    if throttled:
        raise HTTPException(throttled[0], throttled[1], headers=throttled[2])
    if not secrets.compare_digest(body.code.encode("utf-8", "replace"), state.join_code.encode("utf-8")):
        state.throttle.failed(address)
        raise HTTPException(403, "The join code is not right; ask the facilitator for it.")
    user = state.accounts.add(body.username, body.password, "participant")
    return signed_in(request, user, status=201)


def account_of(request: Request) -> User:
    """The signed-in user's account (personal tokens belong to accounts)."""
    caller = get_caller(request)
    user = accounts_state(request).accounts.get(caller.name) if caller.role != "owner" else None
    if user is None:
        raise HTTPException(400, "Personal API tokens belong to accounts, and this caller has none; "
                                 "add accounts with 'localdiffusion users add', or use the server's access token.")
    return user


@router.post("/auth/tokens", status_code=201)
def new_token(body: NewToken, request: Request) -> dict[str, Any]:
    """A personal API token (shown this once): send it as 'Authorization: Bearer TOKEN', or as the password with your name."""
    token_id, token = accounts_state(request).accounts.new_token(account_of(request), body.label)
    return {"id": token_id, "token": token, "label": body.label}


@router.get("/auth/tokens")
def list_tokens(request: Request) -> list[dict[str, Any]]:
    """Your personal API tokens (never the tokens themselves)."""
    return [{"id": t.id, "label": t.label, "created_at": t.created_at, "last_used": t.last_used}
            for t in accounts_state(request).accounts.tokens(account_of(request))]


@router.delete("/auth/tokens/{token_id}")
def delete_token(token_id: int, request: Request) -> dict[str, Any]:
    if not accounts_state(request).accounts.delete_token(account_of(request), token_id):
        raise HTTPException(404, f"You have no API token {token_id}.")
    return {"id": token_id, "deleted": True}
