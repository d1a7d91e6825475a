"""The studio's explanation API.

- `POST /api/anatomy`: a prompt's tokens, chunks, schedule and structure;
- `POST /api/images/{id}/explain`, `GET /api/images/{id}/explanation` (+ `/files/...`): the "Why does it
  look like this?" panel's data, computed by an "explain" job;
- `GET /api/parameters/{name}` (+ `/illustration.svg`), `POST /api/parameters/{name}/try`: the parameter
  guide's cards and their quick comparisons ("compare" jobs, files under `/api/jobs/{id}/files/...`);
- `GET /api/axes`, `POST /api/compare/check`, `POST /api/compare`: the Compare page's X/Y/Z sweeps of the
  user's own recipe (also "compare" jobs).
"""

from __future__ import annotations

import csv
import io
import math
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from localdiffusion.engine.noise import resolve_seed
from localdiffusion.errors import BadInput, LocalDiffusionError, one_of
from localdiffusion.explain.anatomy import MAX_STEPS, AnatomyReport, anatomy_report, library_context, load_lexicon
from localdiffusion.explain.axes import ALIASES, FIELDS, MAX_VALUES, Axis, parse_axis
from localdiffusion.explain.compare import check_axes, parse_axes
from localdiffusion.explain.illustrations import illustration
from localdiffusion.explain.parameters import CARDS, parameter_table, try_axis
from localdiffusion.jobs import Event, Job
from localdiffusion.jobs.tasks.compare import compare_dir
from localdiffusion.jobs.tasks.explain import covers, explanation_dir, read_explanation
from localdiffusion.models.tokenizer import load_tokenizer
from localdiffusion.recipe import Recipe
from localdiffusion.server.api import (
    CallerDep, InvalidField, check_recipe, find_image, find_job, job_json, refused, resolve_model,
)
from localdiffusion.server.deps import Caller, client_id, get_studio
from localdiffusion.server.admission import queue_job
from localdiffusion.server.studio import Studio

router = APIRouter(prefix="/api", tags=["explain"])

StudioDep = Annotated[Studio, Depends(get_studio)]
ClientDep = Annotated[str, Depends(client_id)]


class AnatomyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    prompt: str = Field(max_length=20_000)
    negative_prompt: str = Field("", max_length=20_000)
    model: str | None = None
    steps: int = Field(20, ge=1, le=MAX_STEPS)


@lru_cache(maxsize=4)
def _tokenizer(cache_dir: Path) -> Any:
    # Building a CLIPTokenizer reads a 49408-entry vocabulary; once per home is enough.
    return load_tokenizer(cache_dir)


@router.post("/anatomy", response_model=AnatomyReport)
def anatomy(request: AnatomyRequest, studio: StudioDep) -> AnatomyReport:
    """The prompt's token view and structure check; the same JSON as `localdiffusion anatomy --json`."""
    embeddings, family, model = library_context(studio.library, request.model)
    return anatomy_report(request.prompt, _tokenizer(studio.home.cache), negative_prompt=request.negative_prompt,
                          steps=request.steps, embeddings=embeddings, lexicon=load_lexicon(studio.home),
                          model=model, family=family)


# --- explanations of gallery images ----------------------------------------------------------
#
# Explaining re-runs the recipe on the shared engine, so it is always a queued job ("explain"),
# never work on a request thread. Its artefacts are served only when listed in its explain.json.

class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cfg_steps: list[Annotated[int, Field(ge=1, le=MAX_STEPS)]] | None = Field(None, max_length=8)
    attention: bool = True


def explanation_json(image_id: int, summary: dict[str, Any]) -> dict[str, Any]:
    """explain.json with where to fetch each artefact: `files_base` + a name from `files`, or `urls`."""
    base = f"/api/images/{image_id}/explanation/files/"
    return {**summary, "image_id": image_id, "files_base": base, "urls": {name: base + name for name in summary.get("files", [])}}


def _pending_explanation(studio: Studio, caller: Caller, image_id: int) -> Job | None:
    for job in studio.queue.list(owner_id=caller.owner_id, limit=200):
        if job.kind == "explain" and not job.finished and job.params.get("image_id") == image_id:
            return job
    return None


def _queued(studio: Studio, job: Job) -> dict[str, Any]:
    body = job_json(studio, studio.queue.get(job.id) or job)
    if body["status"] == "queued":  # the worker may have started it already
        studio.events.publish(Event("queued", job.id, job.owner_id, job.client, {"status": "queued", "position": body["position"]}))
    return body


@router.post("/images/{image_id}/explain")
def explain_image(image_id: int, studio: StudioDep, client: ClientDep, caller: CallerDep,
                  body: ExplainRequest | None = None) -> JSONResponse:
    """Queue an explanation of a gallery image (timeline, CFG views, word heatmaps), or give the finished
    one at once when it already covers the request: {"job": ..., "explanation": ...}, one of them null."""
    body = body or ExplainRequest()
    row = find_image(studio, caller, image_id)
    summary = read_explanation(explanation_dir(studio.home.outputs, image_id))
    if summary is not None and covers(summary, body.cfg_steps, body.attention):
        return JSONResponse({"job": None, "explanation": explanation_json(image_id, summary)})
    pending = _pending_explanation(studio, caller, image_id)
    if pending is not None:
        return JSONResponse({"job": job_json(studio, pending), "explanation": None}, status_code=202)
    recipe = check_recipe(studio, Recipe.from_json(row.recipe_json))
    job = queue_job(studio, caller, recipe, client, kind="explain",
                    params={"image_id": image_id, "cfg_steps": body.cfg_steps, "attention": body.attention})
    return JSONResponse({"job": _queued(studio, job), "explanation": None}, status_code=202)


@router.get("/images/{image_id}/explanation")
def get_explanation(image_id: int, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    find_image(studio, caller, image_id)
    summary = read_explanation(explanation_dir(studio.home.outputs, image_id))
    if summary is None:
        raise refused(404, f"Image {image_id} has no explanation yet; ask for one with POST /api/images/{image_id}/explain.")
    return explanation_json(image_id, summary)


MEDIA_TYPES = {".png": "image/png", ".webp": "image/webp", ".json": "application/json"}


def _listed_file(folder: Path, listed: list[str], name: str, what: str) -> FileResponse:
    """A file of `folder` named in `listed` (written by our own task), never anything else."""
    path = (folder / name).resolve()
    if name not in listed or not path.is_relative_to(folder.resolve()) or not path.is_file():
        raise refused(404, f"The {what} has no file '{name[:80]}'.")
    return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
                        headers={"Cache-Control": "private, max-age=3600"})


@router.get("/images/{image_id}/explanation/files/{name:path}")
def get_explanation_file(image_id: int, name: str, studio: StudioDep, caller: CallerDep) -> FileResponse:
    find_image(studio, caller, image_id)
    folder = explanation_dir(studio.home.outputs, image_id)
    summary = read_explanation(folder)
    if summary is None:
        raise refused(404, f"Image {image_id} has no explanation yet; ask for one with POST /api/images/{image_id}/explain.")
    return _listed_file(folder, summary.get("files", []), name, f"explanation of image {image_id}")


# --- the parameter guide ---------------------------------------------------------------------

TRY_SIDE = 256  # the longer side of a "Try it" comparison's images, at most
TRY_STEPS = 10


class TryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: Recipe


def _card(studio: Studio, name: str) -> dict[str, Any]:
    table = {n: entry for n, entry in parameter_table(max_side=studio.library.settings.max_side).items() if entry["card"]}
    if name not in table:  # the mask editor's settings explain themselves in place and have no card
        raise refused(404, f"There is no parameter '{name[:80]}'; the guide has {one_of(sorted(table))}.")
    return {"name": name, **table[name], "illustration_url": f"/api/parameters/{name}/illustration.svg",
            "can_try": table[name]["card"]["try_values"] is not None}


@router.get("/parameters/{name}")
def get_parameter(name: str, studio: StudioDep) -> dict[str, Any]:
    """One parameter's guide card: label, explanation, one plain sentence, typical values, limits,
    its illustration and whether 'Try it on my prompt' can show it."""
    return _card(studio, name)


@router.get("/parameters/{name}/illustration.svg")
def get_parameter_illustration(name: str) -> Response:
    card = CARDS.get(name)
    if card is None:
        raise refused(404, f"There is no parameter '{name[:80]}'.")
    return Response(illustration(card.illustration), media_type="image/svg+xml", headers={"Cache-Control": "max-age=3600"})


def try_recipe(studio: Studio, recipe: Recipe, name: str) -> Recipe:
    """The user's recipe made small and quick: text to image, at most TRY_SIDE pixels, few steps, one image."""
    if not recipe.prompt.strip():
        raise BadInput("Write a prompt on the Generate page first; the comparison runs on it.", field="prompt")
    model = resolve_model(studio.library, recipe.model)
    native = model.native_size or 512
    width, height = recipe.width or native, recipe.height or native
    scale = min(1.0, TRY_SIDE / max(width, height))
    steps = recipe.steps if name == "steps" else min(recipe.steps, TRY_STEPS)
    return recipe.model_copy(update={
        "model": model.name, "mode": "txt2img", "init_image": None, "mask": None, "outpaint": None, "enable_hr": False,
        "width": max(64, round(width * scale / 8) * 8), "height": max(64, round(height * scale / 8) * 8),
        "steps": steps, "batch_size": 1, "n_iter": 1, "seed": resolve_seed(recipe.seed), "subseed_strength": 0.0,
    })


@router.post("/parameters/{name}/try", status_code=201)
def try_parameter(name: str, body: TryRequest, studio: StudioDep, client: ClientDep, caller: CallerDep) -> dict[str, Any]:
    """Queue a tiny comparison (3 values of this parameter) on the user's current recipe; the job's result
    names the grid (fetch it from /api/jobs/{id}/files/grid.png) and explains the axis."""
    card = _card(studio, name)
    recipe = try_recipe(studio, body.recipe, name)
    x = try_axis(name, recipe, min(TRY_SIDE, max(recipe.width or TRY_SIDE, recipe.height or TRY_SIDE)))
    if x is None:
        raise BadInput(f"'{card['label']}' has no quick comparison: {card['card']['why_not']}", field="name")
    y = f"steps={recipe.steps}" if name == "seed" else f"seed={recipe.seed}"
    recipe = check_recipe(studio, recipe, caller)
    check_axes(recipe, {"X": parse_axis(x, "X"), "Y": parse_axis(y, "Y")}, studio.engine)
    job = queue_job(studio, caller, recipe, client, kind="compare", params={"x": x, "y": y, "parameter": name})
    return _queued(studio, job)


# --- the Compare page: X/Y/Z sweeps of the user's own recipe ----------------------------------

MAX_CELLS = 64  # one comparison, all grids together; a typo such as seed=1-100 should not queue hours of work
LORA_AXIS = "lora:NAME"
# A value for the values box's placeholder, per field; the syntax hint covers ranges and quoting.
AXIS_EXAMPLES = {
    "seed": "1-4", "steps": "10,20,30", "cfg_scale": "3,7,12", "sampler_name": "Euler,Euler a,DPM++ 2M",
    "scheduler": "Automatic,Karras", "denoising_strength": "0.3-0.9 [4]", "clip_skip": "1,2", "width": "512,768",
    "height": "512,768", "size": "512x512,768x512", "prompt_sr": "red,blue,green", "control_weight": "0.5,1,1.5",
    LORA_AXIS: "0-1 (+0.25)",
}
AXIS_SYNTAX = ("Values are a comma list (3,7,12); numbers also take ranges: 1-5 (every whole number), "
               "1-10 (+2) (a step), 1-10 [5] (five values spread evenly); put text holding a comma in quotes: \"a, b\",c.")


class AxesText(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: str = Field(max_length=2000)
    y: str = Field(max_length=2000)
    z: str | None = Field(None, max_length=2000)

    @property
    def given_z(self) -> str | None:
        """The Z axis, or None when it was left out or blank."""
        return self.z if self.z and self.z.strip() else None


class CompareRequest(AxesText):
    recipe: Recipe


def _csv_line(values: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


@router.get("/axes")
def list_axes(studio: StudioDep) -> dict[str, Any]:
    """The fields a comparison can vary (label, value type, other spellings, an example value), the limits
    and the value syntax, so the Compare page builds its choices from here."""
    models = [m.name for m in studio.library.list("checkpoint")][:3]
    examples = {**AXIS_EXAMPLES, "model": _csv_line(models) if models else "model-a,model-b"}
    fields = [{"field": name, "label": kind.label, "type": kind.type, "example": examples[name],
               "aliases": sorted(alias for alias, field in ALIASES.items() if field == name)}
              for name, kind in FIELDS.items()]
    fields.append({"field": LORA_AXIS, "label": "LoRA weight", "type": "float", "example": examples[LORA_AXIS], "aliases": []})
    return {"fields": fields, "max_cells": MAX_CELLS, "max_values": MAX_VALUES, "syntax": AXIS_SYNTAX}


def compare_axes(text: AxesText) -> dict[str, Axis]:
    """The axes as the compare job will read them: a bad axis, a field on two axes or too many cells
    is refused (422) with a sentence; `field` names the axis (x, y, z) where one is to blame."""
    try:  # compare()'s own reading of the axes, so the server refuses exactly what the job would
        axes = parse_axes(text.x, text.y, text.given_z)
    except BadInput as e:
        raise InvalidField(e.message, field=e.field) from None
    cells = cell_count(axes)
    if cells > MAX_CELLS:
        sizes = " × ".join(f"{len(axis.values)} {name} values" for name, axis in axes.items())
        raise InvalidField(f"This comparison has {cells} cells ({sizes}); at most {MAX_CELLS} cells are allowed, "
                           "so give an axis fewer values.")
    return axes


def cell_count(axes: dict[str, Axis]) -> int:
    return math.prod(len(axis.values) for axis in axes.values())


def _axes_json(axes: dict[str, Axis]) -> dict[str, Any]:
    return {name.lower(): {"field": a.field, "label": a.label, "labels": [a.value_label(v) for v in a.values]}
            for name, a in axes.items()}


@router.post("/compare/check")
def check_compare(body: AxesText) -> dict[str, Any]:
    """How the axes read and how many cells they make, without queueing anything (the values are checked
    against the recipe only by POST /api/compare)."""
    axes = compare_axes(body)
    return {"cells": cell_count(axes), "axes": _axes_json(axes)}


@router.post("/compare", status_code=201)
def queue_compare(body: CompareRequest, studio: StudioDep, client: ClientDep, caller: CallerDep) -> dict[str, Any]:
    """Queue an X/Y/Z comparison of the user's recipe: every axis value is checked first, and the seed is fixed
    once, so the grid reproduces. The job's result names the grids, cells and compare.json (under
    /api/jobs/{id}/files/) and explains each axis."""
    axes = compare_axes(body)
    recipe = check_recipe(studio, body.recipe, caller)
    recipe = recipe.model_copy(update={"seed": resolve_seed(recipe.seed), "batch_size": 1, "n_iter": 1})
    for name, axis in axes.items():
        try:
            check_axes(recipe, {name: axis}, studio.engine)
        except LocalDiffusionError as e:
            raise InvalidField(e.message, field=name.lower()) from None
    job = queue_job(studio, caller, recipe, client, kind="compare", params={"x": body.x, "y": body.y, "z": body.given_z})
    return _queued(studio, job)


@router.get("/jobs/{job_id}/files/{name:path}")
def get_job_file(job_id: int, name: str, studio: StudioDep, caller: CallerDep) -> FileResponse:
    """A file a finished compare job wrote (its grid, cells, compare.json)."""
    job = find_job(studio, caller, job_id)
    if job.kind != "compare" or job.status != "done":
        raise refused(404, f"Job {job_id} has no files; only finished comparisons have.")
    folder = compare_dir(studio.home.outputs, job.id)
    return _listed_file(folder, job.result.get("files", []), name, f"comparison of job {job_id}")
