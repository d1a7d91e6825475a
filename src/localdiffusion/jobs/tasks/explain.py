"""The "explain" job: re-run an image's recipe with the timeline, CFG and word-heatmap observers.

The artefacts (timeline frames and filmstrip, CFG triptychs, word heatmaps, and explain.json, which
lists them) are for HOME/outputs/explanations/<image id>/ (job-<job id>/ for a recipe without an
image); the result store writes them there, replacing an older explanation. A finished explanation
that already covers what is asked is reused, not recomputed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localdiffusion.explain.guidance import clamp_steps
from localdiffusion.explain.report import SUMMARY, explain_files
from localdiffusion.jobs.artefacts import FileArtefact, TaskOutput
from localdiffusion.jobs.tasks import TaskContext, draft_decode

FOLDER = "explanations"


def explanation_name(image_id: int | None, job_id: int | None = None) -> str:
    """The explanation's folder relative to HOME/outputs: explanations/<image id> (or job-<job id>)."""
    return f"{FOLDER}/" + (str(int(image_id)) if image_id is not None else f"job-{int(job_id or 0)}")


def explanation_dir(outputs: Path, image_id: int | None, job_id: int | None = None) -> Path:
    return outputs / explanation_name(image_id, job_id)


def read_explanation(folder: Path) -> dict[str, Any] | None:
    """explain.json of a finished explanation, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def covers(summary: dict[str, Any], cfg_steps: list[int] | None, attention: bool) -> bool:
    """Whether a finished explanation already shows what is asked (its steps, its heatmaps)."""
    if "timeline" not in summary or (attention and "attention" not in summary):
        return False
    if not cfg_steps or "cfg" not in summary:
        return True  # no particular steps asked, or CFG was off for this recipe
    total = len(summary["timeline"].get("steps", [])) or 1
    return set(clamp_steps(cfg_steps, total)) <= {view["step"] for view in summary["cfg"]}


def explain(ctx: TaskContext) -> TaskOutput:
    params, recipe = ctx.job.params, ctx.job.recipe
    image_id = params.get("image_id")
    cfg_steps = [int(s) for s in params.get("cfg_steps") or []] or None
    attention = bool(params.get("attention", True))
    folder = explanation_name(image_id, ctx.job.id)
    summary = ctx.lookup(f"{folder}/{SUMMARY}")
    if summary is not None and covers(summary, cfg_steps, attention):
        return TaskOutput({"image_id": image_id, "folder": folder, "files": summary.get("files", []), "reused": True})
    guided = recipe.cfg_scale > 1.0  # CFG views need guidance; without it they are left out
    files = explain_files(ctx.engine, recipe, timeline=True, cfg_steps=cfg_steps if guided else None, default_cfg=guided,
                          attention=attention, on_progress=ctx.on_progress, cancel=ctx.cancel, frames=True,
                          vae_decode=draft_decode(ctx))
    # The folder is replaced whole: an older explanation with other options leaves no files behind.
    return TaskOutput({"image_id": image_id, "folder": folder, "files": list(files), "reused": False},
                      [FileArtefact(name, data) for name, data in files.items()], folder=folder)
