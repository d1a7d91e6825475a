"""Live job events over a WebSocket: `WS /api/events?client=<id>` streams one client's own jobs
(`&tabs=all`: all of the caller's own jobs, whichever tab queued them).

The client id is the secret from POST /api/clients (browsers cannot set headers on a WebSocket, so
it comes in the address). The access token and the page's origin are checked before this route
(server/auth.py); a refused socket is accepted and closed with code 1008 and the reason.

Messages: {"type": "queued|started|step|done|failed|cancelled", "job_id", "data", "preview"?}; step
events carry the step preview as a WEBP data URL when the engine made one. Every socket also gets the
class-wide events: {"type": "comic-changed", "job_id": null, "data": {"project_id", "version"}} when a class
comic changes (saved, a candidate picked, queued or finished).
"""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.encoders import jsonable_encoder

from localdiffusion.errors import BadInput
from localdiffusion.jobs import Event
from localdiffusion.server.auth import POLICY_VIOLATION
from localdiffusion.server.deps import CLIENT_HEADER, get_caller, named_client
from localdiffusion.server.studio import Studio

router = APIRouter(tags=["events"])


def preview_data_url(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=70)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def event_message(event: Event) -> dict[str, Any]:
    message = {"type": event.type, "job_id": None if event.everyone else event.job_id, "data": jsonable_encoder(event.data)}
    if event.preview is not None:
        message["preview"] = preview_data_url(event.preview)
    return message


def socket_client(websocket: WebSocket) -> str | None:
    """The client this socket serves (`?client=`, else as for HTTP: X-Client-Id, else the address); None if refused."""
    try:
        return named_client(websocket, websocket.query_params.get("client") or websocket.headers.get(CLIENT_HEADER))
    except BadInput:
        return None


async def _send_events(websocket: WebSocket, events: "asyncio.Queue[Event]") -> None:
    # The API announces "queued" after the queue accepted the job, and the worker may start it
    # first; a late "queued" would then undo "started" in the UI, so it is dropped.
    begun: set[int] = set()
    while True:
        event = await events.get()
        if event.type == "queued" and event.job_id in begun:
            continue
        if event.type != "queued" and not event.everyone:
            begun.add(event.job_id)
        await websocket.send_json(event_message(event))


async def _wait_for_close(websocket: WebSocket) -> None:
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
    except WebSocketDisconnect:
        return


@router.websocket("/api/events")
async def job_events(websocket: WebSocket) -> None:
    studio: Studio = websocket.app.state.studio
    client = socket_client(websocket)
    await websocket.accept()
    if client is None:
        await websocket.close(code=POLICY_VIOLATION, reason="This client id is one the server keeps for itself; ask POST /api/clients for one.")
        return
    # `?tabs=all`: the caller's jobs from every tab (the presenter view shows what the facilitator's other tab runs)
    every_tab = websocket.query_params.get("tabs") == "all"
    subscription, events = studio.events.subscribe_async(asyncio.get_running_loop(), owner_id=get_caller(websocket).owner_id,
                                                         client=None if every_tab else client, everyone=True)
    try:
        # anyio, as Starlette itself uses, so that the server's own cancellation reaches both halves.
        async with anyio.create_task_group() as group:
            group.start_soon(_send_events, websocket, events)
            await _wait_for_close(websocket)
            group.cancel_scope.cancel()
    finally:
        studio.events.unsubscribe(subscription)
