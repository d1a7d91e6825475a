"""The shared queue and the class's policy: `GET /api/queue` for everyone; pause, resume, front, the
limits and the pinned models for a facilitator (each such action goes to the audit log).

Without accounts the local owner is the facilitator of their own machine and may do all of it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from localdiffusion.errors import LocalDiffusionError
from localdiffusion.server.admission import PINNED_KEY, Limits, checkpoint_named, load_limits, save_limits
from localdiffusion.server.api import find_job, job_json, refused
from localdiffusion.server.deps import CallerDep, ManagerDep, get_studio
from localdiffusion.server.queueview import queue_entries
from localdiffusion.server.studio import Studio

router = APIRouter(prefix="/api", tags=["class"])

StudioDep = Annotated[Studio, Depends(get_studio)]


# --- the queue ---------------------------------------------------------------------------------


@router.get("/queue")
def get_queue(studio: StudioDep, caller: CallerDep) -> list[dict[str, Any]]:
    """The whole queue in run order: the running jobs, then the queued ones as the scheduler will pick them.
    Each entry: position (queued jobs ahead of it), mine, owner (a name, only for your own jobs or for a
    facilitator), kind, estimated_seconds, status; your own queued jobs also eta_seconds."""
    return queue_entries(studio.queue, studio.db.owner_names(), caller.owner_id, caller.manages)


def _queue_state(studio: Studio) -> dict[str, Any]:
    return {"paused": studio.queue.paused, **studio.queue.counts()}


@router.post("/class/queue/pause")
def pause_queue(studio: StudioDep, caller: ManagerDep) -> dict[str, Any]:
    """Start no new job until resumed; a running job finishes. A restart of the server resumes."""
    studio.queue.pause()
    studio.db.record_action(caller.name, "queue.pause")
    return _queue_state(studio)


@router.post("/class/queue/resume")
def resume_queue(studio: StudioDep, caller: ManagerDep) -> dict[str, Any]:
    studio.queue.resume()
    studio.db.record_action(caller.name, "queue.resume")
    return _queue_state(studio)


@router.post("/jobs/{job_id}/front", responses={409: {"description": "The job is not queued."}})
def front_job(job_id: int, studio: StudioDep, caller: ManagerDep) -> dict[str, Any]:
    """Move a queued job before every other (a later move goes before an earlier one)."""
    job = find_job(studio, caller, job_id)
    if job.status != "queued" or not studio.queue.front(job_id):
        status = (studio.queue.get(job_id) or job).status
        raise refused(409, f"Job {job_id} is {status}; only a queued job can be moved to the front.")
    studio.db.record_action(caller.name, "queue.front", f"job {job_id}", {"owner_id": job.owner_id, "kind": job.kind})
    return job_json(studio, find_job(studio, caller, job_id))


# --- limits and models ---------------------------------------------------------------------------


@router.get("/class/limits")
def get_limits(studio: StudioDep, caller: CallerDep) -> Limits:
    """The participants' limits (null: none) and the checkpoints they may use (null: every one)."""
    return load_limits(studio)


@router.put("/class/limits")
def put_limits(body: Limits, studio: StudioDep, caller: ManagerDep) -> Limits:
    """Set the participants' limits and allowed checkpoints (the whole object); a model not in the library is a 404."""
    limits = save_limits(studio, body)
    studio.db.record_action(caller.name, "limits", "participant", limits.model_dump(mode="json"))
    return limits


class PinnedModels(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[str] = Field(default_factory=list, max_length=32, description="Checkpoints to keep loaded")


def pinned_json(studio: Studio) -> dict[str, Any]:
    names = studio.db.policy(PINNED_KEY, [])
    loaded = {key[0] for key in studio.engine.models.cache.keys() if isinstance(key, tuple) and key and isinstance(key[0], str)}
    return {"models": names, "loaded": [n for n in names if _loaded(studio, n, loaded)]}


def _loaded(studio: Studio, name: str, paths: set[str]) -> bool:
    try:
        return str(studio.library.get(name, kind="checkpoint").path) in paths
    except LocalDiffusionError:
        return False


def apply_pins(studio: Studio) -> None:
    """Tell the engine's cache which checkpoints to keep (at start-up, and when a facilitator changes them);
    a pinned model that is no longer installed is skipped."""
    infos = []
    for name in studio.db.policy(PINNED_KEY, []):
        try:
            infos.append(studio.library.get(name, kind="checkpoint"))
        except LocalDiffusionError:
            continue
    studio.engine.models.pin(infos)


@router.get("/class/pinned")
def get_pinned(studio: StudioDep, caller: ManagerDep) -> dict[str, Any]:
    """The pinned checkpoints, and which of them are loaded now."""
    return pinned_json(studio)


@router.put("/class/pinned")
def put_pinned(body: PinnedModels, studio: StudioDep, caller: ManagerDep) -> dict[str, Any]:
    """Pin checkpoints so they stay loaded once loaded (the engine's cache never evicts them); the whole list.
    They load with the first job that uses them; a model not in the library is a 404."""
    names = list(dict.fromkeys(checkpoint_named(studio, name).name for name in body.models))
    studio.db.set_policy(PINNED_KEY, names)
    apply_pins(studio)
    studio.db.record_action(caller.name, "pin", ", ".join(names), {"models": names})
    return pinned_json(studio)
