"""The "panels" job: several comic panels generated in one job with shared attention.

The panels are rendered by the comic layer's `render_shared`, the one code path for shared attention
(the CLI's book uses it too): the first recipe's run keeps a share of its up-block self-attention
tokens and every later recipe attends to them, so the cast keeps its look. Each image is saved to
the gallery like a plain generation; the result lists them in the recipes' order.
"""

from __future__ import annotations

from typing import Any

from localdiffusion.comic.generate import render_shared
from localdiffusion.engine import Progress
from localdiffusion.jobs.tasks import TaskContext
from localdiffusion.recipe import Recipe, Result


def panels(ctx: TaskContext) -> dict[str, Any]:
    recipes = [Recipe.model_validate(r) for r in ctx.job.params["recipes"]]
    saved: dict[str, list] = {"images": [], "infotexts": []}

    def progress(i: int, p: Progress) -> None:  # panels stand in for iterations
        ctx.on_progress(Progress(p.step, p.total, i, len(recipes), p.phase, p.preview))

    def keep(i: int, result: Result) -> None:
        for key, values in ctx.save(result).items():
            if isinstance(values, list):
                saved.setdefault(key, []).extend(values)

    shared = render_shared(ctx.engine, recipes, ctx.job.params["share"], keep, on_progress=progress, cancel=ctx.cancel)
    return {**saved, "shared_attention": shared.share if shared else 0.0, "kept_bytes": shared.nbytes() if shared else 0}
