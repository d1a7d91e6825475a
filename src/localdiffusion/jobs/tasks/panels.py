"""The "panels" job: several comic panels generated in one job with shared attention.

The first recipe's run keeps a share of its up-block self-attention tokens; every later recipe
attends to them (engine/shared_attention.py), so the cast keeps its look. Each image is saved to
the gallery like a plain generation; the result lists them in the recipes' order.
"""

from __future__ import annotations

from typing import Any

from localdiffusion.engine import Progress, RunHooks
from localdiffusion.engine.shared_attention import SharedAttention
from localdiffusion.jobs.tasks import TaskContext
from localdiffusion.recipe import Recipe


def panels(ctx: TaskContext) -> dict[str, Any]:
    recipes = [Recipe.model_validate(r) for r in ctx.job.params["recipes"]]
    shared = SharedAttention(ctx.job.params["share"])
    saved: dict[str, list] = {"images": [], "infotexts": []}
    for i, recipe in enumerate(recipes):
        def progress(p: Progress, i: int = i) -> None:  # panels stand in for iterations
            ctx.on_progress(Progress(p.step, p.total, i, len(recipes), p.phase, p.preview))

        result = ctx.engine.generate(recipe, hooks=RunHooks(on_progress=progress, cancel=ctx.cancel, shared=shared))
        shared.writing = False
        for key, values in ctx.save(result).items():
            if isinstance(values, list):
                saved.setdefault(key, []).extend(values)
    return {**saved, "shared_attention": shared.share, "kept_bytes": shared.nbytes()}
