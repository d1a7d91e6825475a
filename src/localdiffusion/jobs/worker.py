"""One local worker with a scheduler of its own: the simplest way to run a queue's jobs in this process.

`Worker(queue, engine, events)` is a `Scheduler` (jobs/executor.py) over a `LocalExecutor` of one
`LocalWorker` on `engine`: `start()` dispatches the queue's jobs to it in the fair order, `run(job)` runs one
claimed job in the calling thread. The server builds its scheduler itself (server/studio.py), with one local
worker per device or Ray workers. `start()` never re-queues running jobs: recovery is the server's, once per
start (`Scheduler.start(recover=True)`), so a second worker on the same database never re-runs another's job.
"""

from __future__ import annotations

from typing import Any

from localdiffusion.engine import Engine, Progress
from localdiffusion.engine.inputs import BytesInputs, HomeInputs, Inputs
from localdiffusion.jobs.events import EventBus
from localdiffusion.jobs.executor import LocalExecutor, LocalWorker, Scheduler, publish
from localdiffusion.jobs.queue import Job, JobQueue
from localdiffusion.jobs.results import ResultStore
from localdiffusion.jobs.runner import unexpected
from localdiffusion.jobs.tasks import Task

__all__ = ["Worker", "cancel_job", "publish", "unexpected"]


class Worker:
    def __init__(self, queue: JobQueue, engine: Engine, events: EventBus, results: ResultStore | None = None) -> None:
        self.queue = queue
        self.engine = engine
        self.events = events
        if results is None and engine is not None:  # the engine's home and database, as the server has them
            results = ResultStore(engine.home.outputs, engine.library.db, engine.home.model_dir)
        self.results = results
        self.local = LocalWorker(engine, job_inputs=lambda job: self.job_inputs(job))
        self.scheduler = Scheduler(queue, events, results, LocalExecutor([self.local]),
                                   home_root=engine.home.root if engine is not None else None)
        self.local.scheduler = self.scheduler
        self.device_name = self.local.device

    @property
    def tasks(self) -> dict[str, Task]:
        return self.local.runner.tasks

    def start(self) -> None:
        """Run the queue's jobs on a thread until `stop`. Jobs left running stay as they are (see the docstring)."""
        self.scheduler.start(recover=False)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop within a step; a job cut short goes back to the queue for the next start."""
        self.scheduler.stop(timeout)

    def run(self, job: Job) -> None:
        """Run one claimed job here and now."""
        self.scheduler.run_now(job, self.local)

    def job_inputs(self, job: Job) -> Inputs:
        """The pictures a job names. This worker shares the server's home, so it reads them there; a worker
        on another machine is handed their bytes with the job instead (`engine.inputs.BytesInputs`)."""
        return HomeInputs(self.engine.home.root) if self.engine is not None else BytesInputs({})

    def _progress(self, job: Job, p: Progress, loads: Any = None) -> None:
        self.scheduler.publish_progress(job, p)


def cancel_job(queue: JobQueue, events: EventBus, job_id: int) -> bool:
    """Cancel a queued job at once, or a running one within a step (through the queue, whoever runs it, here or on
    another machine). False if it had finished.

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
