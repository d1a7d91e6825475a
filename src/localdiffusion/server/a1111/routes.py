"""The routes of the A1111-compatible API, thin: each hands its request to the module that does the work."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from localdiffusion.engine.generate import LATENT_UPSCALERS
from localdiffusion.server.a1111.extras import all_upscalers
from localdiffusion.server.a1111.extras import router as extras_router
from localdiffusion.server.a1111.jobs import a1111_client, progress_report, run_job, stop_running
from localdiffusion.server.a1111.listings import (
    checkpoint_items, embedding_lists, lora_items, sampler_items, scheduler_items, vae_items,
)
from localdiffusion.server.a1111.options import apply_options, read_options
from localdiffusion.server.a1111.pnginfo import read_png_info
from localdiffusion.server.a1111.recipes import build_recipe
from localdiffusion.server.a1111.responses import generation_response
from localdiffusion.server.a1111.schemas import GenerationRequest, Img2ImgRequest, PngInfoRequest, Txt2ImgRequest
from localdiffusion.server.a1111.state import a1111_state
from localdiffusion.server.admission import trained_by_other
from localdiffusion.server.a1111.system import command_line_flags, memory_report
from localdiffusion.server.deps import get_caller, get_studio

router = APIRouter(prefix="/sdapi/v1", tags=["A1111-compatible API"])

# The route functions' names and return annotations are part of the API: FastAPI makes the
# OpenAPI operation ids from the names and the response models from the annotations.


# --- generation ------------------------------------------------------------------------------------


@router.post("/txt2img")
async def txt2img(request: Request, req: Txt2ImgRequest) -> dict[str, Any]:
    """Generate from a prompt (A1111's StableDiffusionProcessingTxt2Img fields)."""
    return await _generate(request, req)


@router.post("/img2img")
async def img2img(request: Request, req: Img2ImgRequest) -> dict[str, Any]:
    """Generate from init_images; with a mask, inpaint (white repaints)."""
    return await _generate(request, req)


async def _generate(request: Request, req: GenerationRequest) -> dict[str, Any]:
    """Build the recipe, queue it as this client's job, wait for it and answer as A1111."""
    studio, state = get_studio(request), a1111_state(request)
    recipe = await asyncio.to_thread(build_recipe, req, studio, state)
    job, stopped = await run_job(studio, state, recipe, a1111_client(request), caller=get_caller(request))
    return await asyncio.to_thread(generation_response, studio, req, job, stopped)


# --- progress, interrupt, skip -----------------------------------------------------------------------


@router.get("/progress")
def progress(request: Request, skip_current_image: bool = False) -> dict[str, Any]:
    """The running A1111-API job's progress (0..1), its ETA and its latest step preview."""
    return progress_report(get_studio(request), a1111_state(request), skip_current_image)


@router.post("/interrupt")
def interrupt(request: Request) -> dict[str, Any]:
    stop_running(get_studio(request), a1111_state(request), "interrupted", _facilitator(request))
    return {}


@router.post("/skip")
def skip(request: Request) -> None:
    stop_running(get_studio(request), a1111_state(request), "skipped", _facilitator(request))


def _facilitator(request: Request) -> bool:
    """A facilitator's interrupt and skip stop whichever job runs; anyone else's, only their own."""
    return get_caller(request).role == "facilitator"


# --- png-info and options ------------------------------------------------------------------------------


@router.post("/png-info")
def png_info(req: PngInfoRequest) -> dict[str, Any]:
    """The generation settings stored in an image: A1111 infotext, other texts, and the parsed fields."""
    return read_png_info(req.image)


@router.get("/options")
def get_options(request: Request) -> dict[str, Any]:
    return read_options(get_studio(request), a1111_state(request))


@router.post("/options")
def set_options(request: Request, options: dict[str, Any]) -> None:
    """Set options; `sd_model_checkpoint` switches the model later requests of this API use."""
    apply_options(get_studio(request), a1111_state(request), options)


# --- lists: models, samplers, schedulers, upscalers, LoRAs, embeddings --------------------------------


@router.get("/sd-models")
def sd_models(request: Request) -> list[dict[str, Any]]:
    return checkpoint_items(get_studio(request).library)


@router.post("/refresh-checkpoints")
def refresh_checkpoints(request: Request) -> None:
    get_studio(request).library.rescan()


@router.post("/refresh-loras")
def refresh_loras(request: Request) -> None:
    get_studio(request).library.rescan()


@router.get("/sd-vae")
def sd_vae(request: Request) -> list[dict[str, Any]]:
    return vae_items(get_studio(request).library)


@router.get("/samplers")
def samplers() -> list[dict[str, Any]]:
    return sampler_items()


@router.get("/schedulers")
def schedulers() -> list[dict[str, Any]]:
    return scheduler_items()


@router.get("/upscalers")
def upscalers(request: Request) -> list[dict[str, Any]]:
    """The latent modes (hires fix), A1111's None, Lanczos and Nearest, then the models in models/ESRGAN."""
    return all_upscalers(get_studio(request).library)


@router.get("/latent-upscale-modes")
def latent_upscale_modes() -> list[dict[str, str]]:
    return [{"name": n} for n in LATENT_UPSCALERS]


@router.get("/loras")
def loras(request: Request) -> list[dict[str, Any]]:
    """The library's LoRAs; of those trained here, a participant sees their own."""
    caller = get_caller(request)
    return lora_items(get_studio(request).library, lambda info: not trained_by_other(info, caller))


@router.get("/embeddings")
def embeddings(request: Request) -> dict[str, Any]:
    """Embeddings that fit the current model are 'loaded'; the others 'skipped', as A1111 sorts them."""
    caller = get_caller(request)
    return embedding_lists(get_studio(request), a1111_state(request), lambda info: not trained_by_other(info, caller))


# --- scripts, flags, memory and the lists A1111 has but this server leaves empty ----------------------


@router.get("/scripts")
def scripts() -> dict[str, list]:
    return {"txt2img": [], "img2img": []}


@router.get("/cmd-flags")
def cmd_flags(request: Request) -> dict[str, Any]:
    return command_line_flags(get_studio(request).home, request.url.hostname, request.url.port)


@router.get("/memory")
def memory(request: Request) -> dict[str, Any]:
    return memory_report(get_studio(request))


def _empty_list() -> list:
    return []


for _path in ("/hypernetworks", "/face-restorers", "/realesrgan-models", "/prompt-styles", "/script-info", "/extensions"):
    router.add_api_route(_path, _empty_list, methods=["GET"], name=f"a1111{_path.replace('/', '_').replace('-', '_')}")


router.include_router(extras_router)  # /extra-single-image
