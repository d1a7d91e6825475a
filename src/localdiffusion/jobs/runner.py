"""The worker's side of a job: run it on an engine and give back what it made, writing nothing.

A worker, in the server's process (the `local` executor) or in a Ray actor on another machine (the `ray`
executor), receives a job (its Recipe, kind and parameters) and the bytes of the pictures it names
(`engine.inputs.BytesInputs`; a local worker reads the server's home instead), runs the job's task, streams
its progress through `on_progress` (step, total, preview), stops within a step when `cancel` says so, and
returns an `Outcome`: the task's artefacts (PNG bytes with their metadata, named files) or why it did not
finish. Only the server writes files and database rows (jobs/executor.py hands the artefacts to the result
store).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

from localdiffusion.engine import Engine, Progress
from localdiffusion.engine.inputs import Inputs
from localdiffusion.errors import BadInput, Cancelled, LocalDiffusionError
from localdiffusion.jobs.artefacts import TaskOutput
from localdiffusion.jobs.queue import Job
from localdiffusion.jobs.tasks import Task, TaskContext, default_tasks

log = logging.getLogger(__name__)

OutcomeStatus = Literal["done", "failed", "cancelled", "stopped"]


@dataclass
class Outcome:
    """How a job ended on its worker. `stopped`: the worker itself was stopping (the job goes back to the queue
    without counting the attempt); `seconds`: how long it held the device; `loaded`: whether models loaded during
    it (then its time says nothing about the model's speed); `models`: the checkpoints the worker holds after it."""

    status: OutcomeStatus
    output: TaskOutput | dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0
    loaded: bool = False
    models: list[str] = field(default_factory=list)


class JobRunner:
    """Runs jobs on one engine, one at a time, with the job kinds of `jobs/tasks`."""

    def __init__(self, engine: Engine | None, tasks: dict[str, Task] | None = None) -> None:
        self.engine = engine
        self.tasks: dict[str, Task] = tasks if tasks is not None else default_tasks()

    def execute(self, job: Job, inputs: Inputs, on_progress: Callable[[Progress], None], cancel: Callable[[], bool],
                stopping: Callable[[], bool] = lambda: False, lookup: Callable[[str], Any] = lambda name: None) -> Outcome:
        """Run one job; `cancel` (the job was cancelled) and `stopping` (the worker stops) are polled every step."""
        started = time.monotonic()
        loads: list[bool] = []

        def progress(p: Progress) -> None:
            if p.phase == "load":
                loads.append(True)
            on_progress(p)

        def ended(status: OutcomeStatus, output: Any = None, error: str | None = None) -> Outcome:
            return Outcome(status, output, error, time.monotonic() - started, bool(loads), self.held_models())

        try:
            if cancel():  # cancelled at the instant it was handed over: it never starts
                raise Cancelled("The job was cancelled before it started.")
            task = self.tasks.get(job.kind)
            if task is None:
                raise BadInput(f"This server cannot run jobs of kind '{job.kind}'; it knows {', '.join(sorted(self.tasks))}.")
            context = TaskContext(job, self.engine, on_progress=progress, cancel=lambda: stopping() or cancel(),  # type: ignore[arg-type]
                                  inputs=inputs, lookup=lookup)
            # Models the task loads (the first job of a model) are announced as "load" progress; whatever the task
            # goes through, the engine reads the job's pictures from what the worker was handed.
            engine = self.engine
            with engine.reporting_loads(progress) if engine is not None else nullcontext(), \
                    engine.reading(inputs) if engine is not None else nullcontext():
                output = task(context)
            return ended("done", output)
        except Cancelled:
            return ended("stopped" if stopping() and not cancel() else "cancelled")
        except LocalDiffusionError as e:
            return ended("failed", error=e.message)
        except Exception as e:  # the worker must go on to the next job whatever happens
            log.exception("Job %s failed", job.id)
            return ended("failed", error=unexpected(e))

    def held_models(self) -> list[str]:
        """The checkpoints whose pipelines this worker's engine holds in memory now, by name."""
        return held_models(self.engine)

    def available_models(self) -> list[str] | None:
        """The checkpoints this worker can load (its library's), by name; None without an engine (no models)."""
        if self.engine is None:
            return None
        return sorted(info.name for info in self.engine.library.list("checkpoint"))


def held_models(engine: Engine | None) -> list[str]:
    if engine is None:
        return []
    paths = {key[0] for key in engine.models.cache.keys() if isinstance(key, tuple) and key and isinstance(key[0], str)}
    if not paths:
        return []
    return sorted(info.name for info in engine.library.list("checkpoint") if str(info.path) in paths)


def unexpected(error: Exception) -> str:
    name = type(error).__name__
    if "OutOfMemory" in name or "out of memory" in str(error).lower():
        return "The GPU ran out of memory; try a smaller size or batch, or turn on VAE tiling or CPU offload."
    return f"Unexpected error ({name}: {str(error).splitlines()[0] if str(error) else 'no message'})."
