"""The "panels" job: several comic panels generated in one job with shared attention.

The panels are rendered by the comic layer's `render_shared`, the one code path for shared attention
(the CLI's book uses it too): the first recipe's run keeps a share of its up-block self-attention
tokens and every later recipe attends to them, so the cast keeps its look. Each image goes to the
gallery like a plain generation (artefacts the result store saves); the result lists them in the
recipes' order.
"""

from __future__ import annotations

from localdiffusion.comic.generate import render_shared
from localdiffusion.engine import Progress
from localdiffusion.jobs.artefacts import TaskOutput, gallery_images, generation_result
from localdiffusion.jobs.tasks import TaskContext
from localdiffusion.recipe import Recipe, Result


def panels(ctx: TaskContext) -> TaskOutput:
    recipes = [Recipe.model_validate(r) for r in ctx.job.params["recipes"]]
    saved: dict[str, list] = {"infotexts": []}
    images = []

    def progress(i: int, p: Progress) -> None:  # panels stand in for iterations
        ctx.on_progress(Progress(p.step, p.total, i, len(recipes), p.phase, p.preview))

    def keep(i: int, result: Result) -> None:
        images.extend(gallery_images(ctx.engine, result, ctx.job.recipe.mode))
        for key, values in generation_result(result).items():
            if isinstance(values, list):
                saved.setdefault(key, []).extend(values)

    shared = render_shared(ctx.engine, recipes, ctx.job.params["share"], keep, on_progress=progress, cancel=ctx.cancel)
    result = {**saved, "shared_attention": shared.share if shared else 0.0, "kept_bytes": shared.nbytes() if shared else 0}
    return TaskOutput(result, images)
