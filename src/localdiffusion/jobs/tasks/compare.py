"""The "compare" job: a small X (and Y) comparison of a recipe, the parameter guide's "Try it".

The grid, the cells and compare.json are artefacts for HOME/outputs/compares/job-<job id>/, which the
result store writes; the result names them and carries each axis's plain-language explanation.
"""

from __future__ import annotations

from pathlib import Path

from localdiffusion.engine import Progress
from localdiffusion.explain.compare import SUMMARY, CompareProgress, compare as run_compare
from localdiffusion.jobs.artefacts import FileArtefact, TaskOutput
from localdiffusion.jobs.tasks import TaskContext, draft_decode

FOLDER = "compares"


def compare_name(job_id: int) -> str:
    """The comparison's folder relative to HOME/outputs: compares/job-<job id>."""
    return f"{FOLDER}/job-{int(job_id)}"


def compare_dir(outputs: Path, job_id: int) -> Path:
    return outputs / compare_name(job_id)


def compare(ctx: TaskContext) -> TaskOutput:
    params = ctx.job.params

    def progress(p: CompareProgress) -> None:
        # Cells stand in for batches, so "step s of t" reads as the running engine call's step.
        ctx.on_progress(Progress(p.step, p.steps, min(p.done, max(p.total - 1, 0)), p.total, "sample"))

    result = run_compare(ctx.job.recipe, params["x"], params["y"], params.get("z"), out_dir=None, engine=ctx.engine,
                         on_progress=progress, cancel=ctx.cancel, vae_decode=draft_decode(ctx))
    files = [*result.grid_files, *(c.file for c in result.cells), SUMMARY]
    axes = {name.lower(): {"field": a.field, "label": a.label, "labels": [a.value_label(v) for v in a.values],
                           "explanation": result.explanations[name]} for name, a in result.axes.items()}
    folder = compare_name(ctx.job.id)
    return TaskOutput({"parameter": params.get("parameter"), "folder": folder, "grid": result.grid_files[0], "files": files,
                       "axes": axes, "engine_calls": result.engine_calls},
                      [FileArtefact(name, data) for name, data in result.files.items()], folder=folder)
