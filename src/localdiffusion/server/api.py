"""The studio's JSON API under /api: status, models, generation jobs, the gallery, uploads and image metadata.

Routes stay thin: each one looks up or checks what it needs through the small functions beside
it, then hands the work to the studio's services (library, queue, worker, database). The web UI
uses this API only.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Callable, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict

from localdiffusion import __version__
from localdiffusion.engine.inputs import KEPT_INPUT, HomeInputs
from localdiffusion.engine.plan import hires_upscalers
from localdiffusion.engine.presets import detect_preset, recipe_preset
from localdiffusion.engine.samplers import SAMPLERS, SCHEDULE_TYPES
from localdiffusion.errors import BadInput, LocalDiffusionError
from localdiffusion.explain.parameters import SIZE_PRESETS, parameter_table
from localdiffusion.infotext import to_infotext
from localdiffusion.jobs import Event, Job
from localdiffusion.jobs.estimate import engine_facts, estimate
from localdiffusion.jobs.executor import input_refs
from localdiffusion.jobs.worker import cancel_job as stop_job
from localdiffusion.engine.replay import replay_differences
from localdiffusion.metadata import ImageMetadata, read_image_metadata
from localdiffusion.models.info import ModelInfo
from localdiffusion.models.library import ModelLibrary
from localdiffusion.models.provenance import provenance
from localdiffusion.recipe import Recipe
from localdiffusion.server.admission import queue_job, trained_by_other
from localdiffusion.server.deps import Caller, CallerDep, client_id, get_studio, new_client_secret
from localdiffusion.server.queueview import eta_seconds
from localdiffusion.server.studio import Studio
from localdiffusion.server.usage import job_usage
from localdiffusion.store.db import ImageRow
from localdiffusion.store.home import Home, add_models_help
from localdiffusion.store.inputs import decode_image, keep_input
from localdiffusion.store.thumbnails import ensure_thumbnail

router = APIRouter(prefix="/api", tags=["studio"])

StudioDep = Annotated[Studio, Depends(get_studio)]
ClientDep = Annotated[str, Depends(client_id)]

MAX_PAGE = 200
MAX_ID = 2**63 - 1  # SQLite's largest integer: a larger id or offset in a request would overflow the query


class InvalidField(LocalDiffusionError):
    """A field that parses but cannot be used (a size, a sampler, a reference); answered with 422 naming it."""


def refused(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


# --- status ------------------------------------------------------------------------------


def has_models(library: ModelLibrary) -> bool:
    return bool(library.list("checkpoint"))


@router.get("/status")
def status(studio: StudioDep) -> dict[str, Any]:
    """What the studio runs on, whether it has a model yet, and how busy the queue is."""
    return {
        "version": __version__,
        "device": str(studio.engine.device),
        "dtype": str(studio.engine.dtype).removeprefix("torch."),
        "has_models": has_models(studio.library),
        "add_models_help": add_models_help(studio.home),
        "queue": studio.queue.counts(),
    }


# --- models ------------------------------------------------------------------------------


class AddModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str


def model_json(library: ModelLibrary, info: ModelInfo) -> dict[str, Any]:
    try:
        library.ensure_hash(info)  # computed once per file, then cached in the database
    except LocalDiffusionError:
        pass  # an unreadable file is listed without a hash
    preset = detect_preset(info) if info.kind in ("checkpoint", "lora") else None
    return {"name": info.name, "kind": info.kind, "family": info.family, "format": info.format,
            "short_hash": info.short_hash, "size": info.size, "native_size": info.native_size,
            "provenance": provenance(info),
            "preset": preset.json() if preset is not None else None}  # a few-step model's settings (engine/presets.py)


@router.get("/models")
def list_models(studio: StudioDep, caller: CallerDep, kind: str | None = None) -> list[dict[str, Any]]:
    """Models in the library (all kinds, or one: checkpoint, lora, embedding, vae, controlnet, upscaler, ipadapter);
    a participant sees only the checkpoints the class allows (`admission.AllowedModelsMiddleware`), and of the files
    trained here only their own."""
    return [model_json(studio.library, m) for m in studio.library.list(kind) if not trained_by_other(m, caller)]


@router.post("/models", status_code=201)
def add_model(body: AddModel, studio: StudioDep) -> dict[str, Any]:
    """Register a model file or diffusers folder on this machine; it is read in place, never copied."""
    return model_json(studio.library, studio.library.add(body.path))


@router.post("/models/rescan")
def rescan_models(studio: StudioDep) -> list[dict[str, Any]]:
    return [model_json(studio.library, m) for m in studio.library.rescan()]


# --- choices and explanations ------------------------------------------------------------


@router.get("/samplers")
def samplers() -> list[dict[str, Any]]:
    return [{"name": s.name, "automatic": s.automatic, "schedule_types": ["Automatic", *s.schedule_types], "contract": s.contract}
            for s in SAMPLERS.values()]


@router.get("/schedulers")
def schedulers() -> list[str]:
    return list(SCHEDULE_TYPES)


@router.get("/upscalers")
def upscalers(studio: StudioDep) -> list[str]:
    """Upscalers for the hires pass: the latent modes, Lanczos, Nearest, None, then the upscaler models."""
    return hires_upscalers(studio.library)


@router.get("/presets")
def presets() -> dict[str, list[list[int]]]:
    """Width and height pairs per model family."""
    return SIZE_PRESETS


@router.get("/parameters")
def parameters(studio: StudioDep) -> dict[str, dict[str, Any]]:
    """Every parameter the UI shows, with a label, a plain-language explanation, limits and default."""
    return parameter_table(max_side=studio.library.settings.max_side)


# --- uploads and image metadata ----------------------------------------------------------


def upload_limit(studio: Studio) -> int:
    return studio.library.settings.max_upload_mb * 2**20


def read_limited(stream: BinaryIO, limit: int, what: str) -> bytes:
    """At most `limit` bytes; a larger file is refused without reading it all."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise refused(413, f"The {what} is larger than the limit of {limit / 2**20:.0f} MiB; send a smaller image.")
    return data


def read_upload(studio: Studio, file: UploadFile) -> Image.Image:
    """An uploaded image, size-limited, decoded, turned upright and in a mode PNG keeps as it is."""
    limit = upload_limit(studio)
    image = ImageOps.exif_transpose(decode_image(read_limited(file.file, limit, "upload"), "upload", max_bytes=limit))
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        return image
    return image.convert("RGBA" if "transparency" in image.info or image.mode == "PA" else "RGB")


def keep_for(studio: Studio, caller: Caller, image: Image.Image) -> str:
    """Keep an input picture and let `caller` use it (by its ref, in a recipe or at /api/inputs/)."""
    ref = keep_input(studio.home.root, image)
    studio.db.own_inputs(caller.owner_id, [ref])
    return ref


def may_use_input(studio: Studio, caller: Caller, ref: str) -> bool:
    """Kept inputs are named by their content: a caller may use those they uploaded or were given (facilitators: all)."""
    return caller.manages or studio.db.owns_input(caller.owner_id, ref)


@router.post("/uploads", status_code=201)
def upload(file: UploadFile, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    """Keep an input image (img2img source, mask); refer to it in a job by the returned `ref`."""
    image = read_upload(studio, file)
    return {"ref": keep_for(studio, caller, image), "width": image.width, "height": image.height}


def metadata_infotext(meta: ImageMetadata, recipe: Recipe | None) -> str:
    """A1111's own text when the image has it, else the settings written as infotext."""
    for key in ("parameters", "UserComment", "stealth_pnginfo"):
        if meta.source == "a1111" and meta.raw.get(key):
            return meta.raw[key]
    return to_infotext(recipe, model_name=meta.model_name, model_hash=meta.model_hash) if recipe else ""


@router.post("/pnginfo")
def pnginfo(file: UploadFile, studio: StudioDep) -> dict[str, Any]:
    """The generation settings stored in an image made by this studio, A1111, ComfyUI, InvokeAI, Fooocus or NovelAI."""
    limit = upload_limit(studio)
    data = read_limited(file.file, limit, "image")
    decode_image(data, "image", max_bytes=limit)  # refuses non-images and decompression bombs first
    try:
        meta = read_image_metadata(data)  # texts beyond the infotext limit are refused, not parsed
    except BadInput as e:
        raise BadInput(e.message, field="file") from None
    try:
        recipe = None if meta.is_empty() else meta.to_recipe(strict=False)
    except BadInput:
        recipe = None
    differences = replay_differences(meta, recipe, studio.library, studio.engine.device) if recipe else []
    return {"source": meta.source, "fields": jsonable_encoder(meta.fields), "model_name": meta.model_name,
            "model_hash": meta.model_hash, "recipe": recipe.model_dump(mode="json") if recipe else None,
            "infotext": metadata_infotext(meta, recipe), "extra": meta.extra, "differences": differences}


# --- jobs --------------------------------------------------------------------------------


def resolve_model(library: ModelLibrary, name: str | None, kind: str = "checkpoint", field: str = "model") -> ModelInfo:
    """A model by name, title or hash (None: the default checkpoint), by the library's one lookup; the
    studio's library never opens a path, since the name comes from a request."""
    try:
        return library.get(name, kind=kind, field=field)
    except BadInput as e:  # a path, or no name
        raise InvalidField(e.message, field=field) from None


def check_input_ref(home: Home, ref: str | None, field: str, usable: Callable[[str], bool] | None = None) -> None:
    """Input images must be uploads (`inputs/<hash>.png` from /api/uploads), never paths on the server; with
    `usable`, ones the caller may use (another's upload is answered as one that does not exist)."""
    if ref is None:
        return
    if not KEPT_INPUT.fullmatch(ref) or not (home.root / ref).is_file() or (usable is not None and not usable(ref)):
        raise InvalidField(f"The {field} '{ref[:80]}' is not an uploaded image; upload it to /api/uploads and use the 'ref' it returns.",
                           field=field)


def _as_field_error(error: BadInput) -> InvalidField:
    return InvalidField(error.message, field=error.field)


def check_input_refs(recipe: Recipe, home: Home, usable: Callable[[str], bool] | None = None) -> None:
    """Every picture a recipe names is an upload (the caller's, with `usable`): the studio never opens a path a request gives."""
    for field, ref in input_refs(recipe).items():
        check_input_ref(home, ref, field, usable)


def ready_controls(studio: Studio, recipe: Recipe) -> Recipe:
    """The recipe with each ControlNet unit's map made and kept and its model picked (the control feature's
    work, done here before queueing so that the job carries ready maps)."""
    from localdiffusion.control.units import prepare_controls

    try:
        return prepare_controls(recipe, studio.home.root, studio.library)
    except BadInput as e:
        raise _as_field_error(e) from None


def check_recipe(studio: Studio, recipe: Recipe, caller: Caller | None = None) -> Recipe:
    """Everything that can be checked before queueing, by the engine's one validator (`Engine.prepare`:
    models, sampler, upscaler, sizes, mode inputs, controls, references, LoRAs), on uploads only.
    Returns the recipe to queue: ControlNet units come back with their maps prepared and models picked.
    A bad value answers 422 naming its field; a model that is not in the library 404. With `caller` (a
    recipe from a request), its pictures must be the caller's, and the maps made for it become theirs."""
    check_input_refs(recipe, studio.home, None if caller is None else lambda ref: may_use_input(studio, caller, ref))
    if recipe.controls:
        recipe = ready_controls(studio, recipe)
    try:
        studio.engine.prepare(recipe, HomeInputs(studio.home.root, paths=False))
    except BadInput as e:
        raise _as_field_error(e) from None
    if caller is not None:
        studio.db.own_inputs(caller.owner_id, [ref for ref in input_refs(recipe).values() if ref])
    return recipe


def job_progress(studio: Studio, job: Job) -> dict[str, Any] | None:
    running = studio.queue.progress(job.id)
    return running.data() if running is not None else None


def job_json(studio: Studio, job: Job) -> dict[str, Any]:
    # Never the job's client: that id is the submitter's secret (whoever holds it may cancel and watch the job).
    queued = job.status == "queued"
    return {
        "id": job.id, "kind": job.kind, "params": job.params, "status": job.status, "position": studio.queue.position(job.id) if queued else 0,
        "eta_seconds": eta_seconds(studio.queue, job.id) if queued else None, "queue_paused": studio.queue.paused,
        "estimated_seconds": round(job.estimated_seconds, 1), "demo": job.demo, "device": job.device, "gpu_seconds": job.gpu_seconds,
        "usage": job_usage(job.device, job.gpu_seconds),  # what it used: device, GPU-seconds, an energy estimate
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
        "attempts": job.attempts, "recipe": job.recipe.model_dump(mode="json"), "error": job.error,
        "result": jsonable_encoder(job.result) if job.result else None,
        "progress": job_progress(studio, job) if job.status == "running" else None,
    }


def find_job(studio: Studio, caller: Caller, job_id: int) -> Job:
    """The job, if `caller` may see it (its owner, a facilitator); 404 otherwise, as for one that does not exist."""
    job = studio.queue.get(job_id) if 0 < job_id <= MAX_ID else None
    if job is None or not caller.sees(job.owner_id):
        raise refused(404, f"There is no job {job_id}.")
    return job


@router.post("/clients", status_code=201)
def new_client() -> dict[str, str]:
    """A new client id: a secret to send as X-Client-Id (and as `?client=` on the event socket). Its holder alone
    lists, cancels and watches the jobs it submits; the server never shows it in any answer."""
    return {"client": new_client_secret()}


def check_decoder(studio: Studio, recipe: Recipe, vae_decode: str | None) -> dict[str, Any]:
    """The job's decoder choice as its params: "full" (the model's VAE) or "fast" (TAESD, when one is installed
    for the model's family); 422 naming `vae_decode` otherwise. Not part of the recipe (it is a run option)."""
    if vae_decode is None:
        return {}
    try:
        studio.engine.decoder_for(vae_decode, studio.engine.checkpoint(recipe.model))
    except BadInput as e:
        raise _as_field_error(e) from None
    return {"vae_decode": vae_decode}


@router.post("/jobs", status_code=201)
def submit_job(recipe: Recipe, studio: StudioDep, client: ClientDep, caller: CallerDep,
               demo: bool = Query(False, description="A facilitator's demo for the room: runs before every other job"),
               vae_decode: str | None = Query(None, description="full (the model's VAE) or fast (TAESD); a run option, not part of the recipe")) -> dict[str, Any]:
    """Queue a generation. `init_image`, `mask` and the control units' images are refs from /api/uploads.
    Bad values, and jobs over a participant's limits, are refused before queueing."""
    recipe = check_recipe(studio, recipe, caller)
    job = queue_job(studio, caller, recipe, client, params=check_decoder(studio, recipe, vae_decode), demo=demo)
    body = job_json(studio, studio.queue.get(job.id) or job)
    if body["status"] == "queued":  # the worker may have started it already
        studio.events.publish(Event("queued", job.id, job.owner_id, job.client, {"status": "queued", "position": body["position"]}))
    return body


@router.post("/estimate")
def estimate_job(recipe: Recipe, studio: StudioDep) -> dict[str, Any]:
    """How long this recipe will take on this machine, from its finished generations with the same model, backend
    and device (jobs/estimate.py; `seconds` null: no estimate yet), and the fast preset its model calls for."""
    try:
        info = studio.library.ensure_hash(studio.engine.checkpoint(recipe.model))
    except LocalDiffusionError:
        return {"seconds": None, "runs": 0, "basis": "none", "preset": None}
    found = estimate(studio.db, recipe, engine_facts(studio.engine, info.short_hash), info.native_size)
    preset = recipe_preset(recipe, studio.library)
    return {**found.json(), "preset": preset.json() if preset is not None else None}


@router.get("/jobs")
def list_jobs(studio: StudioDep, client: ClientDep, caller: CallerDep,
              limit: int = Query(50, ge=1, le=MAX_PAGE)) -> list[dict[str, Any]]:
    """This client's recent jobs, newest first."""
    return [job_json(studio, j) for j in studio.queue.list(owner_id=caller.owner_id, client=client, limit=limit)]


@router.get("/jobs/{job_id}")
def get_job(job_id: int, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    return job_json(studio, find_job(studio, caller, job_id))


@router.delete("/jobs/{job_id}", responses={409: {"description": "The job has already finished."}})
def cancel_job(job_id: int, studio: StudioDep, client: ClientDep, caller: CallerDep) -> dict[str, Any]:
    """Cancel a queued job at once, or a running one within a step; only the client that submitted it may,
    or a facilitator (any job; the audit log records it when the job is another person's)."""
    job = find_job(studio, caller, job_id)
    facilitator = caller.role == "facilitator"
    if not facilitator and not secrets.compare_digest(job.client.encode(), client.encode()):
        raise refused(403, f"Job {job_id} was submitted by another client; only that client can cancel it.")
    if job.finished or not stop_job(studio.queue, studio.events, job_id):
        raise refused(409, f"Job {job_id} has already finished ({find_job(studio, caller, job_id).status}), so it cannot be cancelled.")
    if facilitator and job.owner_id != caller.owner_id:
        studio.db.record_action(caller.name, "cancel", f"job {job_id}", {"owner_id": job.owner_id, "kind": job.kind})
    return job_json(studio, find_job(studio, caller, job_id))


# --- gallery -----------------------------------------------------------------------------


class ImagePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    starred: bool


def image_item(row: ImageRow) -> dict[str, Any]:
    return {"id": row.id, "created_at": row.created_at, "width": row.width, "height": row.height, "prompt": row.prompt,
            "starred": row.starred, "url": f"/api/images/{row.id}/file", "thumb": f"/api/images/{row.id}/thumb"}


def image_detail(row: ImageRow, decoder: str | None = None) -> dict[str, Any]:
    return {**image_item(row), "model_hash": row.model_hash, "recipe": json.loads(row.recipe_json), "infotext": row.infotext,
            "decoder": decoder}


def image_decoder(studio: Studio, row: ImageRow) -> str | None:
    """Which decoder made an image ("full" or "fast": TAESD), as the job that made it recorded; None when unknown
    (an image from the CLI or another tool). Not in the recipe: it is a run option."""
    found = studio.db.query("SELECT json_extract(result, '$.decoder') FROM jobs WHERE owner_id = ? AND status = 'done' "
                            "AND EXISTS (SELECT 1 FROM json_each(jobs.result, '$.images') WHERE value = ?) LIMIT 1",
                            (row.owner_id, row.id))
    return found[0][0] if found else None


def find_image(studio: Studio, caller: Caller, image_id: int) -> ImageRow:
    """The image, if `caller` may see it (its owner, a facilitator); 404 otherwise, as for one that does not exist."""
    row = studio.db.get_image(image_id) if 0 < image_id <= MAX_ID else None
    if row is None or row.deleted or not caller.sees(row.owner_id):
        raise refused(404, f"There is no image {image_id}.")
    return row


def image_file(row: ImageRow) -> Path:
    path = Path(row.path)  # written by this studio; never a name from a request
    if not path.is_file():
        raise refused(404, f"The file of image {row.id} is missing from {path.parent}.")
    return path


@router.get("/images")
def list_images(
    studio: StudioDep,
    caller: CallerDep,
    offset: int = Query(0, ge=0, le=MAX_ID),
    limit: int = Query(50, ge=1, le=MAX_PAGE),
    q: str | None = Query(None, max_length=500, description="Words the prompt must contain"),
    starred: bool | None = None,
) -> dict[str, Any]:
    """One page of the gallery, newest first."""
    rows = studio.db.list_images(caller.owner_id, offset, limit + 1, q, starred=starred)
    return {"items": [image_item(r) for r in rows[:limit]], "offset": offset, "limit": limit, "has_more": len(rows) > limit}


@router.get("/images/{image_id}")
def get_image(image_id: int, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    row = find_image(studio, caller, image_id)
    return image_detail(row, image_decoder(studio, row))


@router.get("/images/{image_id}/file")
def get_image_file(image_id: int, studio: StudioDep, caller: CallerDep, download: bool = False) -> FileResponse:
    row = find_image(studio, caller, image_id)
    seed = json.loads(row.recipe_json).get("seed")
    return FileResponse(image_file(row), media_type="image/png", filename=f"{row.id}-{seed}.png",
                        content_disposition_type="attachment" if download else "inline")


@router.get("/images/{image_id}/comfyui", responses={200: {"content": {"application/json": {}}}})
def get_image_workflow(image_id: int, studio: StudioDep, caller: CallerDep,
                       format: Literal["ui", "api"] = Query("ui", description="ui: what ComfyUI's editor opens; api: what its /prompt route queues"),
                       download: bool = False) -> JSONResponse:
    """The image's settings as a ComfyUI workflow (the UI format carries what differs in a Note node)."""
    from localdiffusion.interop.comfyui import workflow_for

    row = find_image(studio, caller, image_id)
    workflow = workflow_for(Recipe.from_json(row.recipe_json), studio.library)
    headers = {"Content-Disposition": f'attachment; filename="{row.id}-comfyui-{format}.json"'} if download else {}
    return JSONResponse(workflow.as_format(format), headers=headers)


@router.get("/images/{image_id}/thumb")
def get_image_thumb(image_id: int, studio: StudioDep, caller: CallerDep) -> FileResponse:
    row = find_image(studio, caller, image_id)
    thumb = ensure_thumbnail(image_file(row), studio.home.cache, row.id)
    return FileResponse(thumb, media_type="image/webp", headers={"Cache-Control": "private, max-age=86400"})


@router.patch("/images/{image_id}")
def patch_image(image_id: int, body: ImagePatch, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    find_image(studio, caller, image_id)
    studio.db.set_image_flags(image_id, starred=body.starred)
    return image_detail(find_image(studio, caller, image_id))


@router.delete("/images/{image_id}")
def delete_image(image_id: int, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    """Hide an image from the gallery (its file stays on disk)."""
    find_image(studio, caller, image_id)
    studio.db.set_image_flags(image_id, deleted=True)
    return {"id": image_id, "deleted": True}
