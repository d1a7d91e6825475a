"""A1111's Extras tab over the API: `POST /sdapi/v1/extra-single-image` (upscaling), and the full upscaler list.

The upscale runs as an "upscale" job in the studio's one queue (it needs the shared device), and the
handler waits for it as generations do. Face restoration (GFPGAN, CodeFormer) is not offered: its
visibility fields are accepted and must stay 0.
"""

from __future__ import annotations

import asyncio
import html
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.exceptions import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from localdiffusion.errors import BadInput
from localdiffusion.finish.extras import ExtrasUpscale
from localdiffusion.models.upscalers import list_upscalers
from localdiffusion.jobs.tasks.upscale import UpscaleParams
from localdiffusion.models.library import ModelLibrary
from localdiffusion.recipe import Recipe
from localdiffusion.server.a1111.images import file_base64, image_from_base64
from localdiffusion.server.a1111.jobs import a1111_client, run_job
from localdiffusion.server.a1111.listings import upscaler_items
from localdiffusion.server.a1111.state import a1111_state
from localdiffusion.server.deps import get_caller, get_studio
from localdiffusion.server.studio import Studio
from localdiffusion.store.inputs import keep_input

router = APIRouter()  # included by routes.py under /sdapi/v1


def all_upscalers(library: ModelLibrary) -> list[dict[str, Any]]:
    """A1111's /upscalers: the hires-fix latent modes and None, Lanczos, Nearest, then the library's models."""
    models = [
        {"name": u.name, "model_name": u.name, "model_path": str(u.info.path), "model_url": None, "scale": u.scale}
        for u in list_upscalers(library) if u.info is not None
    ]
    return upscaler_items() + models


class ExtrasSingleImageRequest(BaseModel):
    """A1111's ExtrasSingleImageRequest (v1.10) and its defaults."""

    model_config = ConfigDict(extra="ignore")

    image: str = ""
    resize_mode: Literal[0, 1] = 0  # 0: upscaling_resize times; 1: to upscaling_resize_w x upscaling_resize_h
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0, ge=0, le=1)
    codeformer_visibility: float = Field(0, ge=0, le=1)
    codeformer_weight: float = Field(0, ge=0, le=1)
    upscaling_resize: float = Field(2, gt=0, le=8)
    upscaling_resize_w: int = Field(512, ge=1, le=16384)
    upscaling_resize_h: int = Field(512, ge=1, le=16384)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1)
    upscale_first: bool = False


@router.post("/extra-single-image")
async def extra_single_image(request: Request, req: ExtrasSingleImageRequest) -> dict[str, Any]:
    """Upscale one base64 image; answers {html_info, image} as A1111 does."""
    studio, state = get_studio(request), a1111_state(request)
    params = await asyncio.to_thread(_params, studio, req)
    if params is None:  # A1111: with upscaler_1 "None" the image passes through unchanged
        return {"html_info": "", "image": req.image.partition(",")[2] if req.image.startswith("data:") else req.image}
    job, stopped = await run_job(studio, state, Recipe(mode="img2img", init_image=params.image), a1111_client(request),
                                 "upscale", params.model_dump(), caller=get_caller(request))
    if job.status != "done":
        raise HTTPException(status_code=500, detail=f"The upscale was {stopped or 'cancelled'}.")
    row = studio.db.get_image(job.result["images"][0])
    infotext = job.result["infotexts"][0]
    return {"html_info": f"<p>{html.escape(infotext).replace(chr(10), '<br>')}</p>", "image": file_base64(Path(row.path))}


def _params(studio: Studio, req: ExtrasSingleImageRequest) -> UpscaleParams | None:
    if req.gfpgan_visibility > 0 or req.codeformer_visibility > 0:
        raise BadInput("Face restoration (GFPGAN, CodeFormer) is not available here; set its visibility to 0.", field="gfpgan_visibility")
    image = image_from_base64(req.image, "image", "image")
    if req.upscaler_1 == "None":
        return None
    by_size = req.resize_mode == 1
    extras = ExtrasUpscale(req.upscaler_1, req.upscaling_resize, req.upscaling_resize_w if by_size else None,
                           req.upscaling_resize_h if by_size else None, req.upscaling_crop, req.upscaler_2,
                           req.extras_upscaler_2_visibility)
    extras.check(studio.library)
    source_info = image.info.get("parameters", "")
    ref = keep_input(studio.home.root, image.convert("RGB"))
    return UpscaleParams(image=ref, upscaler=extras.upscaler, scale=extras.scale, width=extras.width, height=extras.height,
                         crop=extras.crop, upscaler_2=extras.upscaler_2, visibility_2=extras.visibility_2,
                         infotext=source_info if isinstance(source_info, str) else "")
