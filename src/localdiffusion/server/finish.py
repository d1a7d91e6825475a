"""The studio's finishing API: the upscaler list, upscale jobs (plain or SD upscale) and mask operations.

`GET /api/upscalers` already lists the hires-fix upscalers for the generate form, so the finishing
list lives at `GET /api/upscale/upscalers`.
"""

from __future__ import annotations

import io
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, UploadFile
from fastapi.responses import Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from localdiffusion.errors import BadInput
from localdiffusion.finish import masks
from localdiffusion.finish.extras import ExtrasUpscale
from localdiffusion.finish.sd_upscale import DEFAULT_OVERLAP
from localdiffusion.models.upscalers import MAX_SCALE, list_upscalers, target_size
from localdiffusion.jobs import Event
from localdiffusion.jobs.tasks.upscale import UpscaleParams
from localdiffusion.recipe import Recipe
from localdiffusion.server.api import (
    CallerDep, InvalidField, check_input_ref, keep_for, may_use_input, find_image, image_file, job_json, read_upload, resolve_model,
)
from localdiffusion.server.admission import queue_job
from localdiffusion.server.deps import Caller, client_id, get_studio
from localdiffusion.server.studio import Studio

router = APIRouter(prefix="/api", tags=["finish"])

StudioDep = Annotated[Studio, Depends(get_studio)]
ClientDep = Annotated[str, Depends(client_id)]
MAX_RESULT_SIDE = 16384


@router.get("/upscale/upscalers")
def upscalers(studio: StudioDep) -> list[dict[str, Any]]:
    """Every upscaler for finished images: None, Lanczos, Nearest, then the models in models/ESRGAN."""
    return [{"name": u.name, "scale": u.scale, "model": u.is_model} for u in list_upscalers(studio.library)]


class UpscaleRequest(BaseModel):
    """An upscale of a gallery image (`image_id`) or an upload (`image`, a ref from /api/uploads)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    image_id: int | None = None
    image: str | None = None
    upscaler: str = "Lanczos"
    scale: float = Field(2.0, gt=0, le=MAX_SCALE)
    width: int | None = Field(None, ge=1, le=MAX_RESULT_SIDE)
    height: int | None = Field(None, ge=1, le=MAX_RESULT_SIDE)
    upscaler_2: str = "None"
    visibility_2: float = Field(0.0, ge=0, le=1)
    sd: bool = False
    denoise: float = Field(0.3, ge=0, le=1)
    prompt: str | None = None  # SD upscale: defaults to the source image's prompt
    negative_prompt: str | None = None
    model: str | None = None
    steps: int | None = Field(None, ge=1, le=150)
    tile: int | None = Field(None, ge=64, le=2048)
    overlap: int = Field(DEFAULT_OVERLAP, ge=0, le=1024)


@router.post("/upscale", status_code=201)
def upscale(body: UpscaleRequest, studio: StudioDep, client: ClientDep, caller: CallerDep) -> dict[str, Any]:
    """Queue an "upscale" job; the result lands in the gallery. Bad values are refused before queueing."""
    ref, recipe, infotext, size = _source(studio, caller, body)
    extras = ExtrasUpscale(body.upscaler, body.scale, body.width, body.height, True, body.upscaler_2, body.visibility_2)
    try:
        extras.check(studio.library)
        final = (body.width, body.height) if body.width else target_size(size, body.scale)
    except BadInput as e:
        raise InvalidField(e.message, field=e.field) from None
    if max(final) > MAX_RESULT_SIDE:
        raise InvalidField(f"The result would be {final[0]}x{final[1]}, above {MAX_RESULT_SIDE} pixels a side; use a smaller scale.", field="scale")
    if body.sd:
        recipe = _sd_recipe(studio, recipe, body)
    params = UpscaleParams(image=ref, upscaler=body.upscaler, scale=body.scale, width=body.width, height=body.height,
                           upscaler_2=body.upscaler_2, visibility_2=body.visibility_2, sd=body.sd, tile=body.tile,
                           overlap=body.overlap, infotext=infotext)
    job = queue_job(studio, caller, recipe, client, kind="upscale", params=params.model_dump())
    answer = job_json(studio, studio.queue.get(job.id) or job)
    if answer["status"] == "queued":
        studio.events.publish(Event("queued", job.id, job.owner_id, job.client, {"status": "queued", "position": answer["position"]}))
    return answer


def _source(studio: Studio, caller: Caller, body: UpscaleRequest) -> tuple[str, Recipe, str, tuple[int, int]]:
    """(input ref, the source's recipe, its infotext, its size) for a gallery image or an upload."""
    if (body.image_id is None) == (body.image is None):
        raise InvalidField("Give either image_id (a gallery image) or image (a ref from /api/uploads), not both.", field="image_id")
    if body.image is not None:
        check_input_ref(studio.home, body.image, "image", lambda ref: may_use_input(studio, caller, ref))
        with Image.open(studio.home.root / body.image) as im:
            return body.image, Recipe(mode="img2img", init_image=body.image), "", im.size
    row = find_image(studio, caller, body.image_id)
    with Image.open(image_file(row)) as im:
        im.load()
        ref = keep_for(studio, caller, im)
        size = im.size
    return ref, Recipe.model_validate(json.loads(row.recipe_json)), row.infotext or "", size


def _sd_recipe(studio: Studio, source: Recipe, body: UpscaleRequest) -> Recipe:
    """The recipe that repaints the tiles: the source's prompt and settings unless the request overrides them."""
    model = resolve_model(studio.library, body.model or source.model)
    changes: dict[str, Any] = {"model": model.name, "mode": "img2img", "denoising_strength": body.denoise,
                               "enable_hr": False, "controls": [], "references": []}
    for name in ("prompt", "negative_prompt", "steps"):
        if getattr(body, name) is not None:
            changes[name] = getattr(body, name)
    return source.model_copy(update=changes)


MaskOp = Literal["invert", "grow", "shrink", "feather", "colour", "luminance"]


@router.post("/masks/{op}")
def mask_op(
    op: MaskOp, file: UploadFile, studio: StudioDep,
    px: Annotated[int, Form(ge=0, le=masks.MAX_PX)] = 8,
    colour: Annotated[str, Form()] = "#ffffff",
    tolerance: Annotated[int, Form(ge=0, le=255)] = 32,
    space: Annotated[Literal["rgb", "hsv"], Form()] = "rgb",
    low: Annotated[int, Form(ge=0, le=255)] = 0,
    high: Annotated[int, Form(ge=0, le=255)] = 255,
) -> Response:
    """One mask operation on an uploaded mask (invert, grow, shrink, feather) or image (colour, luminance); a PNG mask back."""
    image = read_upload(studio, file)
    try:
        result = _apply(op, image, px, colour, tolerance, space, low, high)
    except BadInput as e:
        raise InvalidField(e.message, field=e.field) from None
    buffer = io.BytesIO()
    result.save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png")


def _apply(op: str, image: Image.Image, px: int, colour: str, tolerance: int, space: str, low: int, high: int) -> Image.Image:
    if op == "invert":
        return masks.invert(image)
    if op in ("grow", "shrink", "feather"):
        return getattr(masks, op)(image, px)
    if op == "colour":
        return masks.from_colour(image, masks.parse_colour(colour), tolerance, space)  # type: ignore[arg-type]
    return masks.from_luminance(image, low, high)
