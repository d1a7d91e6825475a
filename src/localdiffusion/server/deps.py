"""FastAPI dependencies: the studio's services and who is asking."""

from __future__ import annotations

from fastapi import Request

from localdiffusion.server.studio import Studio


def get_studio(request: Request) -> Studio:
    return request.app.state.studio


def client_id(request: Request) -> str:
    """Which browser tab or API client is asking: the UI sends X-Client-Id; other clients are told apart by address."""
    given = request.headers.get("x-client-id") or request.query_params.get("client")
    if given:
        return given[:64]
    host = request.client.host if request.client else "unknown"
    return f"api:{host}"
