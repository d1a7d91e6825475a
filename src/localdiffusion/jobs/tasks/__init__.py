"""Job kinds: what the worker can run besides a plain generation.

A task is a function `(TaskContext) -> TaskOutput` that does its work with the shared engine and
returns the job's JSON result with its artefacts (jobs/artefacts.py); it writes nothing itself, the
worker hands the artefacts to the result store (jobs/results.py). A task without artefacts may return
the plain JSON result. Each kind lives in its own module here and is listed in `default_tasks()`; the
server only names the kind when it submits a job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from localdiffusion.engine import Engine, Progress, RunHooks
from localdiffusion.engine.inputs import Inputs
from localdiffusion.errors import LocalDiffusionError
from localdiffusion.jobs.artefacts import TaskOutput, gallery_images, generation_result
from localdiffusion.jobs.estimate import engine_facts
from localdiffusion.jobs.queue import Job


@dataclass
class TaskContext:
    """What a task gets from the worker."""

    job: Job  # job.recipe, job.params
    engine: Engine  # shared: the worker runs one task at a time
    on_progress: Callable[[Progress], None]  # publishes step events (and previews) to the job's client
    cancel: Callable[[], bool]  # polled by the engine every step
    inputs: Inputs  # the job's pictures by name (uploads, maps, references), as its worker hands them over
    # A finished output's JSON file by its name under HOME/outputs (e.g. explanations/12/explain.json),
    # or None: read through the result store, so a task can reuse finished work without the home path.
    lookup: Callable[[str], Any] = lambda name: None


Task = Callable[[TaskContext], "TaskOutput | dict[str, Any]"]


def generate(ctx: TaskContext) -> TaskOutput:
    """The default kind: generate the job's recipe (with the decoder the request chose, `params["vae_decode"]`);
    its images go to the gallery. The result records what it ran on, for the estimates (jobs/estimate.py)."""
    result = ctx.engine.generate(ctx.job.recipe, hooks=RunHooks(on_progress=ctx.on_progress, cancel=ctx.cancel),
                                 vae_decode=ctx.job.params.get("vae_decode"))
    images = gallery_images(ctx.engine, result, ctx.job.recipe.mode)
    facts = engine_facts(ctx.engine, images[0].model_hash if images else None)
    return TaskOutput({**generation_result(result), "run": facts}, images)


def draft_decode(ctx: TaskContext) -> str | None:
    """The decoder of drafts (a comparison's cells, an explanation's image): TAESD ("fast") on a machine without
    a GPU when one is installed for the model, else the engine's default. Gallery images keep the full VAE unless
    their request asks."""
    engine = ctx.engine
    if getattr(getattr(engine, "device", None), "type", None) != "cpu" or not hasattr(engine, "models"):
        return None
    try:
        family = engine.checkpoint(ctx.job.recipe.model).family
    except LocalDiffusionError:
        return None
    return "fast" if engine.models.taesd_info(family) is not None else None


def default_tasks() -> dict[str, Task]:
    from localdiffusion.jobs.tasks import compare, explain, panels, train, upscale  # they import this module's TaskContext

    return {"generate": generate, "explain": explain.explain, "compare": compare.compare, "upscale": upscale.upscale,
            "panels": panels.panels, "train": train.train}
