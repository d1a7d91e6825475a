"""The worker: one thread that takes jobs from the queue and runs them on the engine, one at a time.

A task gives back artefacts; the worker hands them to the result store, which writes them with the
job's owner, then records the job's result. While a job runs, the worker reports its progress to the
queue and asks the queue whether to stop (`cancel_job` asks there), so that nothing outside reads or
changes the worker's memory.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import nullcontext
from typing import Any

from localdiffusion.engine import Engine, Progress
from localdiffusion.engine.device import device_name
from localdiffusion.engine.inputs import BytesInputs, HomeInputs, Inputs
from localdiffusion.errors import BadInput, Cancelled, LocalDiffusionError
from localdiffusion.jobs.artefacts import TaskOutput
from localdiffusion.jobs.events import Event, EventBus
from localdiffusion.jobs.queue import Job, JobProgress, JobQueue
from localdiffusion.jobs.results import ResultStore
from localdiffusion.jobs.tasks import Task, TaskContext, default_tasks

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, queue: JobQueue, engine: Engine, events: EventBus, results: ResultStore | None = None) -> None:
        self.queue = queue
        self.engine = engine
        self.events = events
        if results is None and engine is not None:  # the engine's home and database, as the server has them
            results = ResultStore(engine.home.outputs, engine.library.db)
        self.results = results
        self.tasks: dict[str, Task] = default_tasks()
        self.device_name = device_name(engine.device) if engine is not None else "cpu"  # recorded with each job
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    def start(self) -> None:
        for job in self.queue.recover():
            log.warning("Re-queued job %s, which was running when the server stopped.", job.id)
        self._thread = threading.Thread(target=self._loop, name="localdiffusion-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop within a step; a job cut short goes back to the queue for the next start."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.queue.claim(timeout=0.5)
            if job is not None:
                self.run(job)

    # --- running ---

    def run(self, job: Job) -> None:
        """Run one claimed job. Before it ends, the queue learns where it ran and how long it held the device
        (its GPU-seconds); a run that finished without loading a model also teaches it the model's speed."""
        started = time.monotonic()
        loads: list[bool] = []  # one entry per "load" progress report

        def ran(learn: bool = False) -> None:
            self.queue.record_run(job.id, self.device_name, time.monotonic() - started, learn=learn and not loads)

        self.queue.report(JobProgress(job, total=job.recipe.steps, started=time.time()))
        try:
            if self.queue.cancel_requested(job.id):  # cancelled at the instant it was claimed: it never starts
                raise Cancelled("The job was cancelled before it started.")
            self._publish("started", job)
            task = self.tasks.get(job.kind)
            if task is None:
                raise BadInput(f"This server cannot run jobs of kind '{job.kind}'; it knows {', '.join(sorted(self.tasks))}.")
            on_progress = lambda p: self._progress(job, p, loads)  # noqa: E731
            stopping = lambda: self._stop.is_set() or self.queue.cancel_requested(job.id)  # noqa: E731
            inputs = self.job_inputs(job)
            context = TaskContext(job, self.engine, on_progress=on_progress, cancel=stopping, inputs=inputs,
                                  lookup=self.results.read_json if self.results is not None else lambda name: None)
            # Models the task loads (the first job of a model) are announced as "loading" events; whatever the
            # task goes through, the engine reads the job's pictures from what the worker handed over.
            with self.engine.reporting_loads(on_progress) if self.engine is not None else nullcontext(), \
                    self.engine.reading(inputs) if self.engine is not None else nullcontext():
                output = task(context)
            ran(learn=True)
            self.queue.finish(job.id, self._save(job, output))
            self._publish("done", self.queue.get(job.id) or job)
        except Cancelled:
            if self._stop.is_set() and not self.queue.cancel_requested(job.id):
                self.queue.requeue(job.id)
                return
            ran()
            self.queue.mark_cancelled(job.id)
            self._publish("cancelled", job)
        except LocalDiffusionError as e:
            ran()
            self._fail(job, e.message)
        except Exception as e:  # the worker must go on to the next job whatever happens
            log.exception("Job %s failed", job.id)
            ran()
            self._fail(job, _unexpected(e))

    def job_inputs(self, job: Job) -> Inputs:
        """The pictures a job names. This worker shares the server's home, so it reads them there; a worker
        on another machine is handed their bytes with the job instead (`engine.inputs.BytesInputs`)."""
        return HomeInputs(self.engine.home.root) if self.engine is not None else BytesInputs({})

    def _progress(self, job: Job, p: Progress, loads: list[bool] | None = None) -> None:
        if p.phase == "load" and loads is not None:
            loads.append(True)
        last = self.queue.progress(job.id)
        running = JobProgress(job, p.step, p.total, p.iteration, p.iterations, p.phase, p.preview,
                              last.started if last is not None else time.time(), p.loading, p.loaded, p.parts)
        self.queue.report(running)
        kind = "loading" if p.phase == "load" else "step"  # clients that count steps see only steps
        self.events.publish(Event(kind, job.id, job.owner_id, job.client, running.data(), p.preview))

    def _save(self, job: Job, output: TaskOutput | dict[str, Any]) -> dict[str, Any]:
        """The task's artefacts written by the result store with the job's owner; the job's JSON result."""
        if not isinstance(output, TaskOutput):
            return output  # a task without artefacts
        if self.results is None:
            raise RuntimeError("This worker has no result store for the job's artefacts.")
        return self.results.save(output, owner_id=job.owner_id)

    def _fail(self, job: Job, reason: str) -> None:
        self.queue.fail(job.id, reason)
        self._publish("failed", job, {"error": reason})

    def _publish(self, kind: str, job: Job, data: dict[str, Any] | None = None) -> None:
        publish(self.events, kind, job, data)


def publish(events: EventBus, kind: str, job: Job, data: dict[str, Any] | None = None) -> None:
    """A job's lifecycle event (started, done, failed, cancelled) to its subscribers."""
    payload = {"status": kind, **(data or {})}
    if kind == "done":
        payload["result"] = job.result
    events.publish(Event(kind, job.id, job.owner_id, job.client, payload))


def cancel_job(queue: JobQueue, events: EventBus, job_id: int) -> bool:
    """Cancel a queued job at once, or a running one within a step (through the queue, whoever runs it).
    False if it had finished.

    A worker may claim the job at any instant in between, so the stop request goes up first: a job
    claimed from then on stops before its first step, and only the side that ends it reports it."""
    job = queue.get(job_id)
    if job is None or job.finished:
        return False
    queue.request_cancel(job_id)
    if queue.cancel_queued(job_id):  # still queued: it will never run
        publish(events, "cancelled", job)
        return True
    now = queue.get(job_id)
    return now is not None and now.status in ("running", "cancelled")  # the worker stops it (or already has)


def _unexpected(error: Exception) -> str:
    name = type(error).__name__
    if "OutOfMemory" in name or "out of memory" in str(error).lower():
        return "The GPU ran out of memory; try a smaller size or batch, or turn on VAE tiling or CPU offload."
    return f"Unexpected error ({name}: {str(error).splitlines()[0] if str(error) else 'no message'})."
