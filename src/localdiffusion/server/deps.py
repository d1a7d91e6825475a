"""FastAPI dependencies: the studio's services and who is asking."""

from __future__ import annotations

import secrets

from starlette.requests import HTTPConnection

from localdiffusion.errors import BadInput
from localdiffusion.server.studio import Studio

CLIENT_HEADER = "X-Client-Id"
# Client names the server gives itself, from the caller's address: a caller cannot claim them.
RESERVED_PREFIXES = ("api:", "a1111:")


def get_studio(request: HTTPConnection) -> Studio:
    return request.app.state.studio


def new_client_secret() -> str:
    """A client id for a browser tab or script: random, so that only its holder can watch or cancel its jobs."""
    return secrets.token_urlsafe(24)


def client_id(request: HTTPConnection) -> str:
    """Which browser tab or API client is asking: X-Client-Id (or `?client=`), a secret from POST /api/clients
    that no answer ever shows. Clients that send none are told apart by their network address (`api:<address>`)."""
    return named_client(request, request.headers.get(CLIENT_HEADER) or request.query_params.get("client"))


def named_client(connection: HTTPConnection, given: str | None) -> str:
    """The client a request names (`given`), checked; else its address."""
    if given:
        if given.startswith(RESERVED_PREFIXES):
            raise BadInput(f"The {CLIENT_HEADER} '{given[:64]}' starts with a name this server keeps for itself "
                           f"({' or '.join(RESERVED_PREFIXES)}); ask POST /api/clients for a client id.", field=CLIENT_HEADER)
        return given[:64]
    host = connection.client.host if connection.client else "unknown"
    return f"api:{host}"
