"""The "compare" job: a small X (and Y) comparison of a recipe, the parameter guide's "Try it".

The grid, the cells and compare.json go to HOME/outputs/compares/job-<job id>/; the result names
them and carries each axis's plain-language explanation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localdiffusion.engine import Progress
from localdiffusion.explain.compare import CompareProgress, compare as run_compare
from localdiffusion.jobs.tasks import TaskContext

FOLDER = "compares"


def compare_dir(outputs: Path, job_id: int) -> Path:
    return outputs / FOLDER / f"job-{int(job_id)}"


def compare(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.job.params
    outputs = ctx.engine.home.outputs
    folder = compare_dir(outputs, ctx.job.id)

    def progress(p: CompareProgress) -> None:
        # Cells stand in for batches, so "step s of t" reads as the running engine call's step.
        ctx.on_progress(Progress(p.step, p.steps, min(p.done, max(p.total - 1, 0)), p.total, "sample"))

    result = run_compare(ctx.job.recipe, params["x"], params["y"], params.get("z"), out_dir=folder, engine=ctx.engine,
                         on_progress=progress, cancel=ctx.cancel)
    files = [*result.grid_files, *(c.file for c in result.cells), result.json_path.name]
    axes = {name.lower(): {"field": a.field, "label": a.label, "labels": [a.value_label(v) for v in a.values],
                           "explanation": result.explanations[name]} for name, a in result.axes.items()}
    return {"parameter": params.get("parameter"), "folder": folder.relative_to(outputs).as_posix(),
            "grid": result.grid_files[0], "files": files, "axes": axes, "engine_calls": result.engine_calls}
