"""The jobs this API queues: running one and waiting for it, its progress, and interrupt or skip."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import Request
from fastapi.exceptions import HTTPException

from localdiffusion.jobs import Job
from localdiffusion.jobs.queue import JobProgress
from localdiffusion.jobs.worker import cancel_job
from localdiffusion.recipe import Recipe
from localdiffusion.server.a1111.images import png_base64
from localdiffusion.server.a1111.responses import a1111_timestamp
from localdiffusion.server.a1111.state import A1111State
from localdiffusion.server.admission import queue_job
from localdiffusion.server.deps import Caller
from localdiffusion.server.studio import Studio

CLIENT_PREFIX = "a1111:"


def a1111_client(request: Request) -> str:
    """The queue's client name for a request to this API, so that its jobs are told apart from the studio's."""
    return CLIENT_PREFIX + (request.client.host if request.client else "unknown")


async def run_job(studio: Studio, state: A1111State, recipe: Recipe, client: str, kind: str = "generate",
                  params: dict[str, Any] | None = None, caller: Caller | None = None) -> tuple[Job, str | None]:
    """Queue the job as the caller's (admitted first: limits, allowed models) and wait for it: (the finished job,
    'interrupted' or 'skipped' if it was stopped). Without a caller, the local owner's."""
    caller = caller or Caller(studio.owner_id, studio.owner_name)
    job_id = (await asyncio.to_thread(queue_job, studio, caller, recipe, client, kind, params)).id
    with state.lock:
        state.pending.add(job_id)
    try:
        job = await wait_for_job(studio, job_id, client)
    finally:
        with state.lock:
            state.pending.discard(job_id)
            stopped = state.stopped.pop(job_id, None)
    if job is None:
        raise HTTPException(status_code=500, detail=f"Job {job_id} disappeared from the queue before it finished.")
    if job.status == "failed":
        raise HTTPException(status_code=500, detail=job.error or "The generation failed.")
    return job, stopped


async def wait_for_job(studio: Studio, job_id: int, client: str, poll: float = 0.5) -> Job | None:
    """Wait, without blocking the event loop, until the job has finished; live events wake us early."""
    loop = asyncio.get_running_loop()
    subscription, events = studio.events.subscribe_async(loop, client=client)
    try:
        while True:
            job = await asyncio.to_thread(studio.queue.get, job_id)
            if job is None or job.finished:
                return job
            try:
                await asyncio.wait_for(_until_finished(events, job_id), timeout=poll)
            except asyncio.TimeoutError:
                pass
    finally:
        studio.events.unsubscribe(subscription)


async def _until_finished(events: asyncio.Queue, job_id: int) -> None:
    while True:
        event = await events.get()
        if event.job_id == job_id and event.type in ("done", "failed", "cancelled"):
            return


def progress_report(studio: Studio, state: A1111State, skip_current_image: bool) -> dict[str, Any]:
    """A1111's /progress answer for the running A1111-API job: progress (0..1), ETA, latest step preview."""
    # Jobs this API still waits on: a job whose answer has gone out no longer counts, even while the
    # worker is finishing it, so that a client sees "idle" right after its request returns.
    running = _running(studio, state)
    if running is None:
        return _waiting_report() if state.pending else _idle_report()
    return _running_report(running, state.stopped.get(running.job.id), skip_current_image)


def _idle_report() -> dict[str, Any]:
    return {"progress": 0, "eta_relative": 0, "state": _progress_state(), "current_image": None, "textinfo": None}


def _waiting_report() -> dict[str, Any]:
    return {"progress": 0.01, "eta_relative": 0, "state": _progress_state(job="queued", job_count=1), "current_image": None,
            "textinfo": "Waiting for the jobs ahead in the queue."}


def _running(studio: Studio, state: A1111State) -> JobProgress | None:
    """The running job among those this API waits on, with its progress (from the queue)."""
    with state.lock:
        pending = list(state.pending)
    return next((p for p in map(studio.queue.progress, pending) if p is not None), None)


def _running_report(running: JobProgress, stopped: str | None, skip_current_image: bool) -> dict[str, Any]:
    iterations = max(running.iterations, 1)
    done = 0.01 + running.iteration / iterations + (running.step / running.total / iterations if running.total else 0)
    elapsed = time.time() - running.started
    preview = running.preview
    return {
        "progress": min(done, 1.0),
        "eta_relative": elapsed / done - elapsed,
        "state": _progress_state(
            job=f"scripts_{'txt2img' if running.job.recipe.mode == 'txt2img' else 'img2img'}",
            job_count=iterations, job_no=running.iteration, step=running.step, steps=running.total,
            timestamp=a1111_timestamp(running.started),
            skipped=stopped == "skipped", interrupted=stopped == "interrupted",
        ),
        "current_image": png_base64(preview) if preview is not None and not skip_current_image else None,
        "textinfo": _textinfo(running),
    }


def _textinfo(running: JobProgress) -> str:
    """A1111's one line on what the job is doing: the model loading (its first job), then the steps."""
    if running.phase == "load":
        part = f", {min(running.loaded + 1, running.parts)} of {running.parts}" if running.parts > 1 else ""
        if running.loading:
            return f"Loading model ({running.loading}{part})"
        return "Model loaded; starting" if running.parts and running.loaded >= running.parts else "Loading model"
    return f"Step {running.step} of {running.total} ({running.phase})"


def _progress_state(job: str = "", job_count: int = 0, job_no: int = 0, step: int = 0, steps: int = 0,
                    timestamp: str = "0", skipped: bool = False, interrupted: bool = False) -> dict[str, Any]:
    return {"skipped": skipped, "interrupted": interrupted, "stopping_generation": False, "job": job,
            "job_count": job_count, "job_timestamp": timestamp, "job_no": job_no,
            "sampling_step": step, "sampling_steps": steps}


def _any_running(studio: Studio) -> JobProgress | None:
    """The running job, whoever queued it and however."""
    rows = studio.db.query("SELECT id FROM jobs WHERE status = 'running' ORDER BY started_at")
    return next((p for p in (studio.queue.progress(job_id) for (job_id,) in rows) if p is not None), None)


def stop_running(studio: Studio, state: A1111State, how: str, any_job: bool = False) -> None:
    """Stop the running job within a step, when it came through this API for this caller (other clients' and
    users' jobs are theirs); with `any_job` (a facilitator), whichever job is running."""
    running = _running(studio, state) or (_any_running(studio) if any_job else None)
    if running is None:
        return
    with state.lock:
        state.stopped[running.job.id] = how
    cancel_job(studio.queue, studio.events, running.job.id)
