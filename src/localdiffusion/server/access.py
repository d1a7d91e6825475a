"""Who may use which route: one table for the whole app, enforced in one place.

Every route of the app (`"METHOD /path"` as FastAPI declares it, `WS` for the socket, `MOUNT` for static
files) has one of four levels:

- PUBLIC: anyone, signed in or not (the sign-in routes, the web UI's files);
- ANY_USER: any signed-in user (lists, choices, making their own things);
- OWNER: any signed-in user, but the route acts on one thing (an image, a job, a comic, an upload) that
  only its owner or a facilitator may see; the route itself answers 404 for anyone else, exactly as for
  a thing that does not exist (`Caller.sees`);
- FACILITATOR: facilitators (and the home's owner) only; others get 403 with a sentence.

`QUEUES` names the routes that put work in the queue: a frozen participant gets 403 there.

With no accounts in the home nothing here applies (one local owner may do everything). With accounts,
`enforce_access` (an app-wide dependency) checks the level of the route a request reached; a route missing
from the table counts as FACILITATOR (closed), and `tests/test_accounts.py` fails on it. Routes that are not
FastAPI's (static files, the schema, the docs) must be PUBLIC: no dependency runs for them. To add a route,
add its line here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from fastapi import HTTPException, WebSocketException
from starlette.requests import HTTPConnection
from starlette.routing import Mount

from localdiffusion.server.auth import POLICY_VIOLATION
from localdiffusion.server.deps import CALLER_SCOPE_KEY

PUBLIC, ANY_USER, OWNER, FACILITATOR = "public", "any user", "owner or facilitator", "facilitator"
LEVELS = (PUBLIC, ANY_USER, OWNER, FACILITATOR)
ACCOUNTS_SCOPE_KEY = "localdiffusion.accounts"  # set (True) by the accounts middleware when accounts are on

SIGN_IN = "Sign in first: open the studio's address in a browser, or send your name and password (HTTP Basic) or a personal API token (Bearer)."
FACILITATORS_ONLY = "Only a facilitator may do this; ask the person running the class."
FROZEN = "Your account is paused by the facilitator: you can look at your work, but not queue new jobs for now."

ROUTES: dict[str, str] = {
    # the web UI, the schema and the docs: files anyone may read (they hold no one's work), so that the sign-in
    # page loads; these are plain Starlette routes, which no FastAPI dependency guards
    "MOUNT /": PUBLIC,
    "GET /openapi.json": PUBLIC,
    "GET /docs": PUBLIC,
    "GET /docs/init.js": PUBLIC,
    "MOUNT /docs/assets": PUBLIC,
    # accounts (server/accounts.py)
    "POST /api/auth/login": PUBLIC,
    "POST /api/auth/logout": PUBLIC,
    "GET /api/auth/me": PUBLIC,
    "POST /api/auth/join": PUBLIC,
    "POST /api/auth/tokens": ANY_USER,
    "GET /api/auth/tokens": ANY_USER,
    "DELETE /api/auth/tokens/{token_id}": ANY_USER,
    "GET /api/me/work.zip": ANY_USER,
    # the class (server/class_users.py)
    "GET /api/class/users": FACILITATOR,
    "POST /api/class/users/{name}/freeze": FACILITATOR,
    "POST /api/class/users/{name}/unfreeze": FACILITATOR,
    "POST /api/class/users/{name}/password": FACILITATOR,
    "GET /api/class/audit": FACILITATOR,
    # the queue and the class's limits (server/classqueue.py)
    "GET /api/queue": ANY_USER,
    "POST /api/class/queue/pause": FACILITATOR,
    "POST /api/class/queue/resume": FACILITATOR,
    "POST /api/jobs/{job_id}/front": FACILITATOR,
    "GET /api/class/limits": ANY_USER,  # a participant may read the limits that apply to them
    "PUT /api/class/limits": FACILITATOR,
    "GET /api/class/pinned": FACILITATOR,
    "PUT /api/class/pinned": FACILITATOR,
    # the console (server/console.py)
    "GET /api/class/join": FACILITATOR,
    "PUT /api/class/join": FACILITATOR,
    "GET /api/class/join/qr.svg": FACILITATOR,
    "GET /api/class/usage": FACILITATOR,
    "GET /api/workers": FACILITATOR,  # without accounts: anyone who may use the server
    "GET /api/class/export": FACILITATOR,
    "GET /api/me/export": ANY_USER,
    # the studio API (server/api.py)
    "GET /api/status": ANY_USER,
    "GET /api/models": ANY_USER,
    "POST /api/models": FACILITATOR,
    "POST /api/models/rescan": FACILITATOR,
    # a first model from the studio (server/model_downloads.py): only this uses the network, on a click
    "GET /api/models/known": ANY_USER,
    "POST /api/models/downloads": FACILITATOR,
    "GET /api/models/downloads": FACILITATOR,
    "GET /api/samplers": ANY_USER,
    "GET /api/schedulers": ANY_USER,
    "GET /api/upscalers": ANY_USER,
    "GET /api/presets": ANY_USER,
    "GET /api/parameters": ANY_USER,
    "POST /api/uploads": ANY_USER,
    "POST /api/pnginfo": ANY_USER,
    "POST /api/clients": ANY_USER,
    "POST /api/jobs": ANY_USER,
    "POST /api/estimate": ANY_USER,
    "GET /api/jobs": ANY_USER,
    "GET /api/jobs/{job_id}": OWNER,
    "DELETE /api/jobs/{job_id}": OWNER,
    "GET /api/images": ANY_USER,
    "GET /api/images/{image_id}": OWNER,
    "GET /api/images/{image_id}/file": OWNER,
    "GET /api/images/{image_id}/thumb": OWNER,
    "GET /api/images/{image_id}/comfyui": OWNER,
    "PATCH /api/images/{image_id}": OWNER,
    "DELETE /api/images/{image_id}": OWNER,
    # controls and poses (server/control.py)
    "GET /api/controls/modules": ANY_USER,
    "GET /api/inputs/{name}": OWNER,
    "POST /api/controls/preview": ANY_USER,
    "GET /api/poses/presets": ANY_USER,
    "POST /api/poses/render": ANY_USER,
    "POST /api/poses/detect": ANY_USER,
    # comics (server/comic.py)
    "GET /api/comics": ANY_USER,
    "POST /api/comics": ANY_USER,
    "GET /api/comics/templates": ANY_USER,
    "GET /api/comics/{project_id}": OWNER,
    "PUT /api/comics/{project_id}": OWNER,
    "POST /api/comics/{project_id}/layout": OWNER,
    "POST /api/comics/{project_id}/assets": OWNER,
    "GET /api/comics/{project_id}/panels/{panel_id}/prompt": OWNER,
    "POST /api/comics/{project_id}/panels/{panel_id}/generate": OWNER,
    "GET /api/comics/{project_id}/render": OWNER,
    "POST /api/comics/{project_id}/render": OWNER,
    "POST /api/comics/{project_id}/panels/{panel_id}/pick": OWNER,
    "GET /api/comics/{project_id}/assets/{name}": OWNER,
    "GET /api/comics/{project_id}/export/{fmt}": OWNER,
    # the class wall and the class comic (server/wall.py; the class comic's own rule is in server/comic.py `load`:
    # everyone opens it, a participant changes only the panels assigned to them)
    "GET /api/images/{image_id}/share": OWNER,
    "POST /api/images/{image_id}/share": OWNER,
    "DELETE /api/images/{image_id}/share": OWNER,
    "GET /api/comics/{project_id}/share": OWNER,
    "POST /api/comics/{project_id}/share": OWNER,
    "DELETE /api/comics/{project_id}/share": OWNER,
    "GET /api/wall": ANY_USER,
    "GET /api/wall/{share_id}/file": ANY_USER,
    "GET /api/wall/{share_id}/thumb": ANY_USER,
    "POST /api/wall/{share_id}/hide": FACILITATOR,
    "POST /api/wall/{share_id}/unhide": FACILITATOR,
    "PUT /api/comics/{project_id}/panels/{panel_id}": OWNER,
    "PUT /api/comics/{project_id}/panels/{panel_id}/assignee": FACILITATOR,
    # explanations, the guide, comparisons (server/explain.py)
    "POST /api/anatomy": ANY_USER,
    "POST /api/images/{image_id}/explain": OWNER,
    "GET /api/images/{image_id}/explanation": OWNER,
    "GET /api/images/{image_id}/explanation/files/{name:path}": OWNER,
    "GET /api/parameters/{name}": ANY_USER,
    "GET /api/parameters/{name}/illustration.svg": ANY_USER,
    "POST /api/parameters/{name}/try": ANY_USER,
    "GET /api/axes": ANY_USER,
    # training (server/train.py): datasets are their owner's; training is admitted by the class limits
    "GET /api/datasets": ANY_USER,
    "POST /api/datasets": ANY_USER,
    "GET /api/datasets/{dataset_id}": OWNER,
    "PATCH /api/datasets/{dataset_id}": OWNER,
    "DELETE /api/datasets/{dataset_id}": OWNER,
    "GET /api/train/settings": ANY_USER,
    "POST /api/train/estimate": ANY_USER,
    "POST /api/train": ANY_USER,
    "POST /api/compare/check": ANY_USER,
    "POST /api/compare": ANY_USER,
    "GET /api/jobs/{job_id}/files/{name:path}": OWNER,
    # finishing (server/finish.py)
    "GET /api/upscale/upscalers": ANY_USER,
    "POST /api/upscale": ANY_USER,
    "POST /api/masks/{op}": ANY_USER,
    # the reference library (server/library.py): everyone searches; facilitators import and set the NSFW threshold
    "GET /api/library/search": ANY_USER,
    "GET /api/library/similar": ANY_USER,
    "GET /api/library/sources": ANY_USER,
    "GET /api/library/styles": ANY_USER,
    "POST /api/library/styles": FACILITATOR,  # styles are the class's, one set for everyone
    "POST /api/library/imports": FACILITATOR,
    "GET /api/library/settings": ANY_USER,
    "PUT /api/library/settings": FACILITATOR,
    "GET /api/library/images/{image_id}/thumb": ANY_USER,
    # live events (server/events.py): each caller gets their own jobs' events
    "WS /api/events": ANY_USER,
    # the A1111-compatible API (server/a1111/): acts for the caller
    "POST /sdapi/v1/txt2img": ANY_USER,
    "POST /sdapi/v1/img2img": ANY_USER,
    "GET /sdapi/v1/progress": ANY_USER,
    "POST /sdapi/v1/interrupt": ANY_USER,
    "POST /sdapi/v1/skip": ANY_USER,
    "POST /sdapi/v1/png-info": ANY_USER,
    "GET /sdapi/v1/options": ANY_USER,
    "POST /sdapi/v1/options": ANY_USER,
    "GET /sdapi/v1/sd-models": ANY_USER,
    "POST /sdapi/v1/refresh-checkpoints": FACILITATOR,
    "POST /sdapi/v1/refresh-loras": FACILITATOR,
    "GET /sdapi/v1/sd-vae": ANY_USER,
    "GET /sdapi/v1/samplers": ANY_USER,
    "GET /sdapi/v1/schedulers": ANY_USER,
    "GET /sdapi/v1/upscalers": ANY_USER,
    "GET /sdapi/v1/latent-upscale-modes": ANY_USER,
    "GET /sdapi/v1/loras": ANY_USER,
    "GET /sdapi/v1/embeddings": ANY_USER,
    "GET /sdapi/v1/scripts": ANY_USER,
    "GET /sdapi/v1/cmd-flags": ANY_USER,
    "GET /sdapi/v1/memory": ANY_USER,
    "GET /sdapi/v1/hypernetworks": ANY_USER,
    "GET /sdapi/v1/face-restorers": ANY_USER,
    "GET /sdapi/v1/realesrgan-models": ANY_USER,
    "GET /sdapi/v1/prompt-styles": ANY_USER,
    "GET /sdapi/v1/script-info": ANY_USER,
    "GET /sdapi/v1/extensions": ANY_USER,
    "POST /sdapi/v1/extra-single-image": ANY_USER,
    "GET /controlnet/version": ANY_USER,
    "GET /controlnet/model_list": ANY_USER,
    "GET /controlnet/module_list": ANY_USER,
    "GET /controlnet/settings": ANY_USER,
}

# Routes that queue work: refused (403) for a frozen participant.
QUEUES: frozenset[str] = frozenset({
    "POST /api/jobs",
    "POST /api/comics/{project_id}/panels/{panel_id}/generate",
    "POST /api/comics/{project_id}/render",
    "POST /api/images/{image_id}/explain",
    "POST /api/parameters/{name}/try",
    "POST /api/compare",
    "POST /api/train",
    "POST /api/upscale",
    "POST /sdapi/v1/txt2img",
    "POST /sdapi/v1/img2img",
    "POST /sdapi/v1/extra-single-image",
})


def route_key(method: str, path: str) -> str:
    return f"{method} {path}"


def app_route_keys(routes: Iterable) -> Iterator[str]:
    """Every route of an app as a key of ROUTES (HEAD, which Starlette adds to each GET, is left out)."""
    for route in routes:
        if hasattr(route, "effective_candidates"):  # FastAPI's included router: its routes with their full paths
            yield from app_route_keys(route.effective_candidates())
            continue
        inner = getattr(route, "starlette_route", None) or route
        if isinstance(inner, Mount):
            yield route_key("MOUNT", inner.path or "/")
        elif getattr(inner, "methods", None) is None:
            yield route_key("WS", inner.path)
        else:
            for method in sorted(set(inner.methods) - {"HEAD"}):
                yield route_key(method, inner.path)


def level_of(key: str) -> str:
    return ROUTES.get(key, FACILITATOR)


def enforce_access(connection: HTTPConnection) -> None:
    """The app-wide dependency: with accounts on, the level of the route this request reached, for its caller."""
    if not connection.scope.get(ACCOUNTS_SCOPE_KEY):
        return
    route = connection.scope.get("route")
    websocket = connection.scope["type"] == "websocket"
    key = route_key("WS" if websocket else connection.scope["method"], getattr(route, "path", ""))
    if connection.scope["type"] == "http" and connection.scope["method"] == "HEAD":
        key = route_key("GET", getattr(route, "path", ""))
    level = level_of(key)
    if level == PUBLIC:
        return
    caller = connection.scope.get(CALLER_SCOPE_KEY)
    refusal = None
    if caller is None:
        refusal = (401, SIGN_IN)
    elif level == FACILITATOR and not caller.manages:
        refusal = (403, FACILITATORS_ONLY)
    elif key in QUEUES and caller.frozen:
        refusal = (403, FROZEN)
    if refusal is None:
        return
    if websocket:
        raise WebSocketException(POLICY_VIOLATION, refusal[1][:120])
    # No WWW-Authenticate: a browser would open its own password dialog over the studio's sign-in page.
    raise HTTPException(*refusal)
