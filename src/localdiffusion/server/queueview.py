"""The queue as people see it: each queued job's wait (ETA) and `GET /api/queue`'s entries."""

from __future__ import annotations

import time
from typing import Any

from localdiffusion.jobs.queue import JobQueue


def etas(queue: JobQueue) -> dict[int, float]:
    """Seconds until each queued job starts, if nothing changes: what is left of the running jobs' estimates,
    then the estimates of the jobs before it in the run order. Empty while the queue is paused."""
    if queue.paused:
        return {}
    now = time.time()
    wait = sum(max(0.0, job.estimated_seconds - (now - (job.started_at or now))) for job in queue.running())
    waits = {}
    for queued in queue.order():
        waits[queued.id] = round(wait, 1)
        wait += queued.estimated_seconds
    return waits


def eta_seconds(queue: JobQueue, job_id: int) -> float | None:
    """Seconds until a queued job starts (None: not queued, or the queue is paused)."""
    return etas(queue).get(job_id)


def queue_entries(queue: JobQueue, owner_names: dict[int, str], viewer: int, manages: bool) -> list[dict[str, Any]]:
    """The running jobs, then the queued ones in run order, as `viewer` may see them: the owner's name only
    for their own jobs or for a facilitator; the job id likewise; `eta_seconds` on their own queued jobs."""
    entries = []
    for job in queue.running():
        entries.append(_entry(job.id, job.owner_id, job.kind, job.estimated_seconds, "running", 0, owner_names, viewer, manages))
    waits = etas(queue)
    for position, queued in enumerate(queue.order()):
        entry = _entry(queued.id, queued.owner_id, queued.kind, queued.estimated_seconds, "queued", position, owner_names,
                       viewer, manages)
        if entry["mine"]:
            entry["eta_seconds"] = waits.get(queued.id)
        if manages:
            entry.update(demo=queued.demo, front=queued.front)
        entries.append(entry)
    return entries


def _entry(job_id: int, owner: int, kind: str, estimate: float, status: str, position: int, owner_names: dict[int, str],
           viewer: int, manages: bool) -> dict[str, Any]:
    mine = owner == viewer
    entry: dict[str, Any] = {"position": position, "mine": mine, "owner": owner_names.get(owner) if mine or manages else None,
                             "kind": kind, "estimated_seconds": round(estimate, 1), "status": status}
    if mine or manages:
        entry["id"] = job_id
    return entry
