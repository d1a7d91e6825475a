"""FastAPI dependencies: the studio's services and who is asking."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException
from starlette.requests import HTTPConnection

from localdiffusion.errors import BadInput
from localdiffusion.server.studio import Studio

CLIENT_HEADER = "X-Client-Id"
# Client names the server gives itself, from the caller's address: a caller cannot claim them.
RESERVED_PREFIXES = ("api:", "a1111:")


def get_studio(request: HTTPConnection) -> Studio:
    return request.app.state.studio


CALLER_SCOPE_KEY = "localdiffusion.caller"  # where authentication leaves the Caller in the ASGI scope


@dataclass(frozen=True)
class Caller:
    """Who is asking: the owner whose work a request sees and makes, and their role.

    Without accounts there is one caller, the home's local owner, who may do everything ("owner").
    With accounts, authentication puts the signed-in user's Caller in the request's scope."""

    owner_id: int
    name: str
    role: str = "owner"  # "owner" (no accounts), "participant" or "facilitator"
    frozen: bool = False  # a frozen participant may look but not queue

    @property
    def manages(self) -> bool:
        """May see and manage everyone's work (the local owner, a facilitator)."""
        return self.role in ("owner", "facilitator")

    def sees(self, owner_id: int) -> bool:
        """May see and change work made by `owner_id`: their own, and a facilitator everyone's. The home's owner
        sees their own only, as before accounts (work left by removed accounts stays theirs)."""
        return self.role == "facilitator" or owner_id == self.owner_id


def get_caller(request: HTTPConnection) -> Caller:
    """The Caller of this request (the local owner unless authentication named another)."""
    caller = request.scope.get(CALLER_SCOPE_KEY)
    if caller is not None:
        return caller
    studio = get_studio(request)
    return Caller(studio.owner_id, studio.owner_name)


def require_manager(request: HTTPConnection) -> Caller:
    """The Caller, who must manage the class (a facilitator, or the local owner): 403 with a sentence otherwise."""
    caller = get_caller(request)
    if not caller.manages:
        raise HTTPException(403, "Only a facilitator may do this; ask the person running the class.")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
ManagerDep = Annotated[Caller, Depends(require_manager)]


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
