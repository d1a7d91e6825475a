"""Job kinds: what the worker can run besides a plain generation.

A task is a function `(TaskContext) -> dict` that does its work with the shared engine and
returns the job's JSON result. Each kind lives in its own module here and is listed in
`default_tasks()`; the server only names the kind when it submits a job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from localdiffusion.engine import Engine, Progress, RunHooks
from localdiffusion.jobs.queue import Job
from localdiffusion.recipe import Result


@dataclass
class TaskContext:
    """What a task gets from the worker."""

    job: Job  # job.recipe, job.params
    engine: Engine  # shared: the worker runs one task at a time
    on_progress: Callable[[Progress], None]  # publishes step events (and previews) to the job's client
    cancel: Callable[[], bool]  # polled by the engine every step
    save: Callable[[Result], dict[str, Any]]  # saves a Result's images to outputs and the gallery


Task = Callable[[TaskContext], dict[str, Any]]


def generate(ctx: TaskContext) -> dict[str, Any]:
    """The default kind: generate the job's recipe and save the images."""
    result = ctx.engine.generate(ctx.job.recipe, hooks=RunHooks(on_progress=ctx.on_progress, cancel=ctx.cancel))
    return ctx.save(result)


def default_tasks() -> dict[str, Task]:
    from localdiffusion.jobs.tasks import compare, explain, panels, upscale  # they import this module's TaskContext

    return {"generate": generate, "explain": explain.explain, "compare": compare.compare, "upscale": upscale.upscale,
            "panels": panels.panels}
