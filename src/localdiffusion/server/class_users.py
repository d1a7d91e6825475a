"""The facilitator's view of the class's people: who they are, what they are doing, freezing and passwords,
and the audit log of every facilitator action. Only facilitators (and the home's owner) reach these routes
(server/access.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from localdiffusion.errors import BadInput
from localdiffusion.server.accounts import accounts_state
from localdiffusion.server.deps import get_caller, get_studio
from localdiffusion.store.accounts import User, readable_password
from localdiffusion.store.db import Database

router = APIRouter(prefix="/api/class", tags=["class"])


class NewPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str | None = Field(None, max_length=256, description="the new password; left out, a readable one is made")


def _counts(db: Database, sql: str, params: tuple = ()) -> dict[int, float]:
    return {owner: value or 0 for owner, value in db.query(sql, params)}


def start_of_today() -> float:
    return datetime.now().replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def job_columns(db: Database) -> set[str]:
    return {row[1] for row in db.query("PRAGMA table_info(jobs)")}


def class_users(request: Request) -> list[dict[str, Any]]:
    studio, state = get_studio(request), accounts_state(request)
    db = studio.db
    queued = _counts(db, "SELECT owner_id, COUNT(*) FROM jobs WHERE status = 'queued' GROUP BY owner_id")
    running = _counts(db, "SELECT owner_id, COUNT(*) FROM jobs WHERE status = 'running' GROUP BY owner_id")
    images = _counts(db, "SELECT owner_id, COUNT(*) FROM images WHERE deleted = 0 GROUP BY owner_id")
    gpu: dict[int, float] = {}
    if "gpu_seconds" in job_columns(db):  # recorded by the worker once jobs measure their GPU time
        gpu = _counts(db, "SELECT owner_id, SUM(gpu_seconds) FROM jobs WHERE finished_at >= ? GROUP BY owner_id",
                      (start_of_today(),))
    return [{"name": u.name, "role": u.role, "frozen": u.frozen, "online": state.online(u.name),
             "queued": int(queued.get(u.owner_id, 0)), "running": int(running.get(u.owner_id, 0)),
             "gpu_seconds_today": round(float(gpu.get(u.owner_id, 0.0)), 1), "images": int(images.get(u.owner_id, 0)),
             "created_at": u.created_at}
            for u in state.accounts.list()]


@router.get("/users")
def list_users(request: Request) -> list[dict[str, Any]]:
    """Every account: name, role, frozen, online, queued and running jobs, GPU-seconds today, images made."""
    return class_users(request)


def find_user(request: Request, name: str) -> User:
    user = accounts_state(request).accounts.get(name)
    if user is None:
        raise HTTPException(404, f"There is no user '{name[:40]}'.")
    return user


def _freeze(request: Request, name: str, frozen: bool) -> dict[str, Any]:
    user = find_user(request, name)
    if user.role == "facilitator":
        raise BadInput(f"'{user.name}' is a facilitator; only participants can be frozen.", field="name")
    accounts_state(request).accounts.set_frozen(user.name, frozen)
    get_studio(request).db.record_action(get_caller(request).name, "freeze" if frozen else "unfreeze", user.name)
    return next(u for u in class_users(request) if u["name"] == user.name)


@router.post("/users/{name}/freeze")
def freeze(name: str, request: Request) -> dict[str, Any]:
    """Pause a participant: they can look at their work but queue nothing until unfrozen."""
    return _freeze(request, name, True)


@router.post("/users/{name}/unfreeze")
def unfreeze(name: str, request: Request) -> dict[str, Any]:
    return _freeze(request, name, False)


@router.post("/users/{name}/password")
def set_password(name: str, request: Request, body: NewPassword | None = None) -> dict[str, Any]:
    """Give a user a new password (a readable one is made when none is given), shown this once; their sessions end."""
    user = find_user(request, name)
    password = (body.password if body else None) or readable_password()
    accounts_state(request).accounts.set_password(user.name, password)
    get_studio(request).db.record_action(get_caller(request).name, "password", user.name)
    return {"name": user.name, "password": password}


@router.get("/audit")
def audit(request: Request, limit: int = Query(500, ge=1, le=5000)) -> list[dict[str, Any]]:
    """Every facilitator action, newest first: when, who, what, on whom or what, and details."""
    return [{"at": e.at, "actor": e.actor, "action": e.action, "target": e.target, "details": e.details}
            for e in get_studio(request).db.audit_log(limit)]

