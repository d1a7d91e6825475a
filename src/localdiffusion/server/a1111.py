"""The AUTOMATIC1111-compatible API under /sdapi/v1, so that existing clients and plugins work unchanged.

Request fields and their defaults follow A1111's `StableDiffusionProcessing*` API models (v1.10),
responses follow its response models: `images` as base64 PNG without a prefix (carrying the
infotext), `info` as a JSON *string*. Each generation becomes a job in the studio's one queue
(client `a1111:<host>`); the handler waits for it without blocking the event loop.

What differs from A1111, on purpose:
- the studio keeps every image in its gallery, so `save_images` and `do_not_save_samples` change nothing;
- an interrupted job answers with no images (the engine keeps none of an unfinished batch);
- `interrupt` and `skip` stop the running job only when it came through this API;
- names in a request are looked up in the model library, never opened as paths;
- the options set here (`sd_model_checkpoint`, ...) live in memory, for this server's lifetime.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localdiffusion import __version__
from localdiffusion.engine.generate import IMAGE_UPSCALERS, LATENT_UPSCALERS
from localdiffusion.engine.images import as_mask
from localdiffusion.engine.plan import check_size, hires_size
from localdiffusion.engine.samplers import SAMPLERS, SCHEDULE_TYPES, resolve_sampler
from localdiffusion.errors import BadInput, LocalDiffusionError, ModelNotFound, one_of
from localdiffusion.infotext import (
    A1111_SAMPLER_ALIASES, A1111_SCHEDULERS, RE_IMAGESIZE, from_infotext, parse_params, split_lines,
    split_sampler_name, to_infotext,
)
from localdiffusion.jobs import Job
from localdiffusion.metadata import read_image_metadata
from localdiffusion.models.info import ModelInfo, base_family
from localdiffusion.prompts.extra_networks import extract_loras
from localdiffusion.recipe import Recipe
from localdiffusion.server.studio import Studio
from localdiffusion.store.inputs import MAX_UPLOAD_BYTES, decode_image, keep_input

router = APIRouter(prefix="/sdapi/v1", tags=["A1111-compatible API"])

CLIENT_PREFIX = "a1111:"
VERSION = f"localdiffusion {__version__}"

# --- requests: A1111's StableDiffusionProcessing* API models --------------------------------
# A1111 generates these from its processing classes, every field optional; `null` means "the default".


class _Generation(BaseModel):
    model_config = ConfigDict(extra="allow")  # extension fields are accepted and ignored, as in A1111

    prompt: str | None = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: int | None = -1
    subseed: int | None = -1
    subseed_strength: float | None = 0.0
    seed_resize_from_h: int | None = -1
    seed_resize_from_w: int | None = -1
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int | None = 1
    n_iter: int | None = 1
    steps: int | None = 50
    cfg_scale: float | None = 7.0
    width: int | None = 512
    height: int | None = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = False
    do_not_save_grid: bool | None = False
    eta: float | None = None
    denoising_strength: float | None = 0.75
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool | None = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    sampler_index: str | None = "Euler"
    script_name: str | None = None
    script_args: list[Any] | None = Field(default_factory=list)
    send_images: bool | None = True
    save_images: bool | None = False
    alwayson_scripts: dict[str, Any] | None = Field(default_factory=dict)
    force_task_id: str | None = None
    infotext: str | None = None

    def given(self, name: str) -> Any:
        """The field's value, or its A1111 default where the client sent null."""
        value = getattr(self, name)
        if value is None:
            info = type(self).model_fields[name]
            return info.get_default(call_default_factory=True)
        return value


class Txt2ImgRequest(_Generation):
    enable_hr: bool | None = False
    firstphase_width: int | None = 0
    firstphase_height: int | None = 0
    hr_scale: float | None = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int | None = 0
    hr_resize_x: int | None = 0
    hr_resize_y: int | None = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = ""
    hr_negative_prompt: str | None = ""


class Img2ImgRequest(_Generation):
    init_images: list[str] | None = None
    resize_mode: int | None = Field(0, ge=0, le=3)
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int | None = 4
    mask_blur_y: int | None = 4
    mask_blur: int | None = None
    mask_round: bool | None = True
    inpainting_fill: int | None = 0
    inpaint_full_res: bool | None = True
    inpaint_full_res_padding: int | None = 0
    inpainting_mask_invert: int | None = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool | None = False


class PngInfoRequest(BaseModel):
    image: str = Field(description="The base64 encoded image (a data-URL prefix is allowed).")


# --- what this API remembers: options set by clients, jobs it waits on ------------------------

DEFAULT_OPTIONS: dict[str, Any] = {
    "samples_format": "png",
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "randn_source": "CPU",  # A1111's default is GPU; ours draws noise on the CPU so recipes reproduce
    "eta_noise_seed_delta": 0,
    "live_previews_enable": True,
    "show_progress_every_n_steps": 1,
    "enable_pnginfo": True,
    "samples_save": True,
    "sd_checkpoints_limit": 1,
}
RANDN_SOURCES = {"CPU": "cpu", "GPU": "device", "NV": "device"}
VAE_CHOICES = ("Automatic", "None")


@dataclass
class A1111State:
    checkpoint: str | None = None  # the model chosen with sd_model_checkpoint; None: the library's default
    options: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_OPTIONS))
    pending: set[int] = field(default_factory=set)  # jobs submitted here and not answered yet
    stopped: dict[int, str] = field(default_factory=dict)  # job id -> "interrupted" or "skipped"
    lock: threading.Lock = field(default_factory=threading.Lock)


_STATE_LOCK = threading.Lock()


def a1111_state(request: Request) -> A1111State:
    """This app's A1111 state (one per app, so that two apps in one process never share a model choice)."""
    with _STATE_LOCK:
        state = getattr(request.app.state, "a1111", None)
        if state is None:
            state = request.app.state.a1111 = A1111State()
        return state


def _studio(request: Request) -> Studio:
    return request.app.state.studio


def _client(request: Request) -> str:
    return CLIENT_PREFIX + (request.client.host if request.client else "unknown")


# --- models by name: titles as A1111 shows them, never a path ----------------------------------

_TITLE = re.compile(r"(.*?)\s*\[([0-9a-fA-F]{8,64})\]")


def model_title(info: ModelInfo) -> str:
    """A1111's checkpoint title: the file name and, once known, the short hash ('name.safetensors [1a2b3c4d5e]')."""
    return f"{info.path.name} [{info.short_hash}]" if info.short_hash else info.path.name


def find_checkpoint(studio: Studio, name: str, field_name: str = "sd_model_checkpoint") -> ModelInfo:
    """A checkpoint by A1111 title, file name, model name or hash; any folder part is dropped, so a
    name from a request can never point outside the library."""
    match = _TITLE.fullmatch(name.strip())
    base, short = (match.group(1), match.group(2)) if match else (name.strip(), None)
    safe = re.split(r"[\\/]", base)[-1].strip()
    query = f"{safe} [{short}]" if safe and short else safe or (short or "")
    checkpoints = studio.library.list("checkpoint")
    if not query or not checkpoints:
        titles = [model_title(m) for m in checkpoints]
        raise ModelNotFound(f"No checkpoint named '{name}'; the library has {one_of(titles) if titles else 'none'}.", field=field_name)
    try:
        return studio.library.get(query, kind="checkpoint")
    except ModelNotFound:
        titles = [model_title(m) for m in checkpoints]
        raise ModelNotFound(f"No checkpoint named '{name}'; the library has {one_of(titles)}.", field=field_name) from None


def current_checkpoint(studio: Studio, state: A1111State, override: str | None = None) -> ModelInfo:
    if override:
        return find_checkpoint(studio, override)
    if state.checkpoint:
        try:
            return find_checkpoint(studio, state.checkpoint)
        except ModelNotFound:
            state.checkpoint = None  # removed since it was chosen: fall back to the default
    return studio.library.default_checkpoint()


# --- images in and out --------------------------------------------------------------------------


def bytes_from_base64(text: str, field_name: str, what: str) -> bytes:
    """The bytes of an A1111 base64 upload (a data-URL prefix is allowed); addresses are never fetched."""
    text = (text or "").strip()
    if text.startswith(("http://", "https://")):
        raise BadInput(f"The {what} is an address; this server fetches nothing, so send the image itself as base64.", field=field_name)
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) * 3 // 4 > MAX_UPLOAD_BYTES + 3:
        raise BadInput(f"The {what} is above the upload limit of {MAX_UPLOAD_BYTES // 2**20} MiB.", field=field_name)
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise BadInput(f"The {what} is not valid base64; send a PNG, JPEG or WEBP file encoded as base64.", field=field_name) from None


def checked_image(data: bytes, field_name: str, what: str) -> Image.Image:
    """Decode upload bytes, refusing oversize files, non-images and decompression bombs."""
    try:
        return decode_image(data, what=what)
    except BadInput as e:
        raise BadInput(e.message, field=field_name) from None


def image_from_base64(text: str, field_name: str, what: str) -> Image.Image:
    return checked_image(bytes_from_base64(text, field_name, what), field_name, what)


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def file_base64(path: str | Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def a1111_mask(image: Image.Image, round_mask: bool) -> Image.Image:
    """A1111's `create_binary_mask`: the alpha channel when the mask has transparency (opaque =
    repaint), otherwise its luminance; white repaints."""
    if image.mode == "RGBA" and image.getchannel("A").getextrema() != (255, 255):
        mask = image.getchannel("A")
    else:
        mask = image.convert("L")
    return mask.point(lambda v: 255 if v > 128 else 0) if round_mask else mask


def fit_image(image: Image.Image, resize_mode: int, width: int, height: int) -> Image.Image:
    """A1111's img2img resize modes: 0 just resize (and 3, latent upscale, done here in pixels),
    1 crop and resize, 2 resize and fill (the margins stretched from the edges)."""
    if image.size == (width, height):
        return image
    lanczos = Image.Resampling.LANCZOS
    if resize_mode in (0, 3):
        return image.resize((width, height), lanczos)
    ratio, source = width / height, image.width / image.height
    cover = resize_mode == 1
    if (ratio > source) == cover:
        w, h = width, max(1, image.height * width // image.width)
    else:
        w, h = max(1, image.width * height // image.height), height
    resized = image.resize((w, h), lanczos)
    if cover:
        left, top = (w - width) // 2, (h - height) // 2
        return resized.crop((left, top, left + width, top + height))
    canvas = Image.new(image.mode, (width, height))
    x, y = (width - w) // 2, (height - h) // 2
    canvas.paste(resized, (x, y))
    if y > 0:  # stretch the top and bottom rows into the margins
        canvas.paste(resized.crop((0, 0, w, 1)).resize((w, y)), (x, 0))
        canvas.paste(resized.crop((0, h - 1, w, h)).resize((w, height - y - h)), (x, y + h))
    if x > 0:
        canvas.paste(resized.crop((0, 0, 1, h)).resize((x, h)), (0, y))
        canvas.paste(resized.crop((w - 1, 0, w, h)).resize((width - x - w, h)), (x + w, y))
    return canvas


# --- request -> Recipe ---------------------------------------------------------------------------

# Recipe fields whose request field has another name (for 422s that name what the client sent).
_REQUEST_FIELD = {"model": "override_settings.sd_model_checkpoint", "init_image": "init_images", "rng": "override_settings.randn_source"}


def _schedule_label(name: str | None) -> str:
    """A1111 accepts a schedule type by label ('Karras') or by name ('karras')."""
    if not name:
        return "Automatic"
    by_name = {n: label for label, n in A1111_SCHEDULERS.items()}
    return by_name.get(name, by_name.get(name.lower(), name))


def _setting(req: _Generation, state: A1111State, key: str) -> Any:
    overrides = req.override_settings or {}
    return overrides.get(key, state.options.get(key, DEFAULT_OPTIONS.get(key)))


def _safe_loras(prompt: str) -> None:
    """LoRA tags name files in the library; a tag holding a path is refused rather than opened."""
    for ref in extract_loras(prompt)[1]:
        if "/" in ref.name or "\\" in ref.name:
            raise BadInput(f"The LoRA '{ref.name}' is a path; name a LoRA from the library by its file name.", field="prompt")


def _common_fields(req: _Generation, studio: Studio, state: A1111State) -> tuple[dict[str, Any], ModelInfo]:
    sampler, schedule = resolve_sampler(req.sampler_name or req.given("sampler_index"), _schedule_label(req.scheduler))
    model = current_checkpoint(studio, state, (req.override_settings or {}).get("sd_model_checkpoint"))
    rng = str(_setting(req, state, "randn_source"))
    if rng not in RANDN_SOURCES:
        raise BadInput(f"Unknown randn_source '{rng}'; use {one_of(list(RANDN_SOURCES))}.", field="override_settings.randn_source")
    fields: dict[str, Any] = {
        name: req.given(name)
        for name in ("prompt", "negative_prompt", "seed", "subseed", "subseed_strength", "steps", "cfg_scale",
                     "width", "height", "batch_size", "n_iter", "denoising_strength")
    }
    fields.update(sampler_name=sampler.name, scheduler=schedule, model=model.name, rng=RANDN_SOURCES[rng],
                  clip_skip=_setting(req, state, "CLIP_stop_at_last_layers"))
    if req.refiner_checkpoint and req.refiner_checkpoint != "None":
        fields["refiner_checkpoint"] = find_checkpoint(studio, req.refiner_checkpoint, "refiner_checkpoint").name
        fields["refiner_switch_at"] = req.refiner_switch_at if req.refiner_switch_at is not None else 0.8
    _safe_loras(fields["prompt"])
    _safe_loras(fields["negative_prompt"])
    return _with_infotext(req, fields), model


def _with_infotext(req: _Generation, fields: dict[str, Any]) -> dict[str, Any]:
    """A1111's `infotext` request field: its values fill in whatever the request itself did not set."""
    if not req.infotext:
        return fields
    stated, _ = from_infotext(req.infotext)
    sent = req.model_fields_set | ({"sampler_name"} if "sampler_index" in req.model_fields_set else set())
    return {**fields, **{k: v for k, v in stated.items() if k in fields and k not in sent}}


def _txt2img_fields(req: Txt2ImgRequest) -> dict[str, Any]:
    if not req.enable_hr:
        return {}
    upscaler = req.hr_upscaler or "Latent"
    allowed = [*LATENT_UPSCALERS, *IMAGE_UPSCALERS]
    if upscaler not in allowed:
        raise BadInput(f"Unknown hires upscaler '{upscaler}'; choose one of {one_of(allowed)}.", field="hr_upscaler")
    scale = req.given("hr_scale")
    if req.hr_resize_x or req.hr_resize_y:  # A1111's "resize to": the scale that reaches the larger side
        width, height = req.given("width"), req.given("height")
        scale = max((req.hr_resize_x or 0) / width, (req.hr_resize_y or 0) / height)
    return {"enable_hr": True, "hr_scale": scale, "hr_upscaler": upscaler, "hr_second_pass_steps": req.given("hr_second_pass_steps")}


def _img2img_fields(req: Img2ImgRequest, studio: Studio) -> dict[str, Any]:
    if not req.init_images:
        raise BadInput("img2img needs an image in init_images (base64).", field="init_images")
    width, height = req.given("width"), req.given("height")
    resize_mode = req.given("resize_mode")
    image = image_from_base64(req.init_images[0], "init_images", "init image")
    if image.mode not in ("RGB", "RGBA"):  # CMYK, palette, 16-bit...: the modes a PNG input keeps exactly
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    fields: dict[str, Any] = {"mode": "img2img", "width": width, "height": height}
    mask = None
    if req.mask:
        mask = a1111_mask(image_from_base64(req.mask, "mask", "mask"), req.given("mask_round"))
        invert = bool(req.given("inpainting_mask_invert"))
        if as_mask(mask, invert=invert).getbbox() is None:
            raise BadInput("The mask is empty (nothing is white), so there is nothing to inpaint; "
                           "paint the area to change in white.", field="mask")
        full_res = req.given("inpaint_full_res")
        fields.update(
            mode="inpaint", mask_blur=req.mask_blur if req.mask_blur is not None else req.given("mask_blur_x"),
            inpainting_fill=req.given("inpainting_fill"), inpaint_full_res=full_res,
            inpaint_full_res_padding=req.given("inpaint_full_res_padding"), inpainting_mask_invert=int(invert),
        )
        if full_res:  # "only masked" works on the original and pastes the result back into it
            mask = mask.resize(image.size, Image.Resampling.LANCZOS) if mask.size != image.size else mask
        else:
            image, mask = fit_image(image, resize_mode, width, height), fit_image(mask, resize_mode, width, height)
        fields["mask"] = keep_input(studio.home.root, mask)
    else:
        image = fit_image(image, resize_mode, width, height)
    fields["init_image"] = keep_input(studio.home.root, image)
    return fields


def build_recipe(req: _Generation, studio: Studio, state: A1111State) -> Recipe:
    """The Recipe for an A1111 request, with every name and number checked before it is queued."""
    fields, model = _common_fields(req, studio, state)
    if isinstance(req, Txt2ImgRequest):
        fields.update(_txt2img_fields(req))
    else:
        fields.update(_img2img_fields(req, studio))  # type: ignore[arg-type]
    try:
        recipe = Recipe(**fields)
    except ValidationError as e:
        raise _validation_error(e) from None
    max_side = studio.library.settings.max_side
    check_size(recipe.width or model.native_size, recipe.height or model.native_size, max_side)
    if recipe.enable_hr:
        check_size(*hires_size(recipe), max_side, what="hires size")
    return recipe


def _validation_error(error: ValidationError) -> RequestValidationError:
    errors = []
    for e in error.errors():
        name = str(e["loc"][0]) if e["loc"] else ""
        errors.append({"loc": ("body", *_REQUEST_FIELD.get(name, name).split(".")), "msg": e["msg"], "type": e["type"]})
    return RequestValidationError(errors)


# --- running a job and answering as A1111 ---------------------------------------------------------


async def wait_for_job(studio: Studio, job_id: int, client: str, poll: float = 0.5) -> Job | None:
    """Wait, without blocking the event loop, until the job has finished; live events wake us early."""
    loop = asyncio.get_running_loop()
    subscription, events = studio.events.subscribe_async(loop, client=client)
    try:
        while True:
            job = await asyncio.to_thread(studio.queue.get, job_id)
            if job is None or job.finished:
                return job
            try:
                await asyncio.wait_for(_until_finished(events, job_id), timeout=poll)
            except asyncio.TimeoutError:
                pass
    finally:
        studio.events.unsubscribe(subscription)


async def _until_finished(events: asyncio.Queue, job_id: int) -> None:
    while True:
        event = await events.get()
        if event.job_id == job_id and event.type in ("done", "failed", "cancelled"):
            return


async def run_request(request: Request, req: _Generation) -> dict[str, Any]:
    studio, state, client = _studio(request), a1111_state(request), _client(request)
    recipe = await asyncio.to_thread(build_recipe, req, studio, state)
    job_id = (await asyncio.to_thread(studio.queue.submit, recipe, studio.owner_id, client)).id
    with state.lock:
        state.pending.add(job_id)
    try:
        job = await wait_for_job(studio, job_id, client)
    finally:
        with state.lock:
            state.pending.discard(job_id)
            stopped = state.stopped.pop(job_id, None)
    if job is None:
        raise HTTPException(status_code=500, detail=f"Job {job_id} disappeared from the queue before it finished.")
    if job.status == "failed":
        raise HTTPException(status_code=500, detail=job.error or "The generation failed.")
    return await asyncio.to_thread(_response, studio, req, job, stopped)


def _response(studio: Studio, req: _Generation, job: Job, stopped: str | None) -> dict[str, Any]:
    rows = [row for row in (studio.db.get_image(i) for i in job.result.get("images", [])) if row is not None]
    images = [file_base64(row.path) for row in rows] if req.given("send_images") else []
    parameters = req.model_dump()
    if isinstance(req, Img2ImgRequest) and not req.include_init_images:
        parameters.update(init_images=None, mask=None)
    info = job_info(studio, req, job, [Recipe.from_json(r.recipe_json) for r in rows], [r.infotext for r in rows])
    if stopped:
        info["extra_generation_params"][stopped.capitalize()] = True
    return {"images": images, "parameters": parameters, "info": json.dumps(info, default=lambda o: None)}


# Infotext keys that A1111's `info` reports as fields of their own, not in `extra_generation_params`.
_CORE_KEYS = {"Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model", "Version", "Clip skip",
              "Denoising strength", "Variation seed", "Variation seed strength"}


def job_info(studio: Studio, req: _Generation, job: Job, recipes: list[Recipe], infotexts: list[str]) -> dict[str, Any]:
    """A1111's `Processed.js()` for a finished job (empty lists when it was interrupted early)."""
    first = recipes[0] if recipes else job.recipe
    try:
        model = studio.library.get(job.recipe.model or "", kind="checkpoint")
    except LocalDiffusionError:
        model = None
    extra = {k: v for k, v in parse_params(split_lines(infotexts[0])[2]).items() if k not in _CORE_KEYS} if infotexts else {}
    started = job.started_at or job.created_at
    return {
        "prompt": first.prompt,
        "all_prompts": [r.prompt for r in recipes],
        "negative_prompt": first.negative_prompt,
        "all_negative_prompts": [r.negative_prompt for r in recipes],
        "seed": first.seed,
        "all_seeds": [r.seed for r in recipes],
        "subseed": first.subseed,
        "all_subseeds": [r.subseed for r in recipes],
        "subseed_strength": first.subseed_strength,
        "width": first.width,
        "height": first.height,
        "sampler_name": first.sampler_name,
        "scheduler": first.scheduler,
        "cfg_scale": first.cfg_scale,
        "steps": first.steps,
        "batch_size": job.recipe.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model.name if model else job.recipe.model,
        "sd_model_hash": model.short_hash if model else None,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": req.given("seed_resize_from_w"),
        "seed_resize_from_h": req.given("seed_resize_from_h"),
        "denoising_strength": first.denoising_strength,
        "extra_generation_params": extra,
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": req.styles or [],
        "job_timestamp": datetime.fromtimestamp(started).strftime("%Y%m%d%H%M%S"),
        "clip_skip": first.clip_skip,
        "is_using_inpainting_conditioning": bool(model and model.inpaint and first.mode != "txt2img"),
        "version": VERSION,
    }


@router.post("/txt2img")
async def txt2img(request: Request, req: Txt2ImgRequest) -> dict[str, Any]:
    """Generate from a prompt (A1111's StableDiffusionProcessingTxt2Img fields)."""
    return await run_request(request, req)


@router.post("/img2img")
async def img2img(request: Request, req: Img2ImgRequest) -> dict[str, Any]:
    """Generate from init_images; with a mask, inpaint (white repaints)."""
    return await run_request(request, req)


# --- progress, interrupt, skip ---------------------------------------------------------------------


def _progress_state(job: str = "", job_count: int = 0, job_no: int = 0, step: int = 0, steps: int = 0,
                    timestamp: str = "0", skipped: bool = False, interrupted: bool = False) -> dict[str, Any]:
    return {"skipped": skipped, "interrupted": interrupted, "stopping_generation": False, "job": job,
            "job_count": job_count, "job_timestamp": timestamp, "job_no": job_no,
            "sampling_step": step, "sampling_steps": steps}


@router.get("/progress")
def progress(request: Request, skip_current_image: bool = False) -> dict[str, Any]:
    """The running A1111-API job's progress (0..1), its ETA and its latest step preview."""
    studio, state = _studio(request), a1111_state(request)
    running = studio.worker.current
    # Jobs this API still waits on: a job whose answer has gone out no longer counts, even while the
    # worker is finishing it, so that a client sees "idle" right after its request returns.
    if running is None or running.job.id not in state.pending:
        if not state.pending:
            return {"progress": 0, "eta_relative": 0, "state": _progress_state(), "current_image": None, "textinfo": None}
        waiting = _progress_state(job="queued", job_count=1)
        return {"progress": 0.01, "eta_relative": 0, "state": waiting, "current_image": None,
                "textinfo": "Waiting for the jobs ahead in the queue."}
    stopped = state.stopped.get(running.job.id)
    iterations = max(running.iterations, 1)
    done = 0.01 + running.iteration / iterations + (running.step / running.total / iterations if running.total else 0)
    elapsed = time.time() - running.started
    preview = running.preview
    return {
        "progress": min(done, 1.0),
        "eta_relative": elapsed / done - elapsed,
        "state": _progress_state(
            job=f"scripts_{'txt2img' if running.job.recipe.mode == 'txt2img' else 'img2img'}",
            job_count=iterations, job_no=running.iteration, step=running.step, steps=running.total,
            timestamp=datetime.fromtimestamp(running.started).strftime("%Y%m%d%H%M%S"),
            skipped=stopped == "skipped", interrupted=stopped == "interrupted",
        ),
        "current_image": png_base64(preview) if preview is not None and not skip_current_image else None,
        "textinfo": f"Step {running.step} of {running.total} ({running.phase})",
    }


def _stop_running(request: Request, how: str) -> None:
    """Stop the running job within a step, when it came through this API (other clients' jobs are theirs)."""
    studio, state = _studio(request), a1111_state(request)
    running = studio.worker.current
    if running is None or not running.job.client.startswith(CLIENT_PREFIX):
        return
    with state.lock:
        if running.job.id in state.pending:
            state.stopped[running.job.id] = how
    studio.worker.cancel(running.job.id)


@router.post("/interrupt")
def interrupt(request: Request) -> dict[str, Any]:
    _stop_running(request, "interrupted")
    return {}


@router.post("/skip")
def skip(request: Request) -> None:
    _stop_running(request, "skipped")


# --- png-info ------------------------------------------------------------------------------------


def parse_generation_parameters(infotext: str) -> dict[str, Any]:
    """A1111's `parse_generation_parameters` shape: 'Prompt', 'Negative prompt', every key as written,
    sizes split into 'Size-1'/'Size-2', 'Clip skip' defaulting to '1'."""
    if not infotext.strip():
        return {}
    prompt, negative, line = split_lines(infotext)
    parsed: dict[str, Any] = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in parse_params(line).items():
        size = RE_IMAGESIZE.match(value)
        if size:
            parsed[f"{key}-1"], parsed[f"{key}-2"] = size.group(1), size.group(2)
        else:
            parsed[key] = value
    parsed.setdefault("Clip skip", "1")
    if "Sampler" in parsed and "Schedule type" not in parsed:
        name, schedule = split_sampler_name(parsed["Sampler"])
        parsed["Sampler"] = name
        if schedule:
            parsed["Schedule type"] = schedule
    return parsed


def _image_infotext(data: bytes) -> tuple[str, dict[str, Any]]:
    """(the image's infotext, its other stored texts); other tools' settings are written as infotext."""
    meta = read_image_metadata(data)
    items = {k: v for k, v in meta.raw.items() if k != "parameters"}
    if meta.raw.get("parameters"):
        return meta.raw["parameters"], items
    if meta.is_empty():
        return "", items
    recipe = meta.to_recipe(strict=False)
    return to_infotext(recipe, model_name=meta.model_name, model_hash=meta.model_hash), items


@router.post("/png-info")
def png_info(req: PngInfoRequest) -> dict[str, Any]:
    """The generation settings stored in an image: A1111 infotext, other texts, and the parsed fields."""
    data = bytes_from_base64(req.image, "image", "image")
    checked_image(data, "image", "image")
    info, items = _image_infotext(data)
    return {"info": info, "items": items, "parameters": parse_generation_parameters(info)}


# --- options -------------------------------------------------------------------------------------


@router.get("/options")
def get_options(request: Request) -> dict[str, Any]:
    studio, state = _studio(request), a1111_state(request)
    options = dict(state.options)
    try:
        model = studio.library.ensure_hash(current_checkpoint(studio, state))
        options.update(sd_model_checkpoint=model_title(model), sd_checkpoint_hash=model.sha256)
    except ModelNotFound:
        options.update(sd_model_checkpoint=None, sd_checkpoint_hash=None)
    return options


@router.post("/options")
def set_options(request: Request, options: dict[str, Any]) -> None:
    """Set options; `sd_model_checkpoint` switches the model later requests of this API use."""
    studio, state = _studio(request), a1111_state(request)
    checked = {key: _checked_option(studio, key, value) for key, value in options.items()}
    with state.lock:
        model = checked.pop("sd_model_checkpoint", None)
        if model is not None:
            state.checkpoint = model.name
        state.options.update(checked)


def _checked_option(studio: Studio, key: str, value: Any) -> Any:
    if key == "sd_model_checkpoint":
        if not isinstance(value, str):
            raise _option_error(key, "must be a checkpoint title such as 'name.safetensors [hash]'")
        return studio.library.ensure_hash(find_checkpoint(studio, value))
    if key == "CLIP_stop_at_last_layers":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or not 1 <= value <= 12:
            raise _option_error(key, "must be a whole number from 1 to 12")
        return int(value)
    if key == "samples_format":
        if str(value).lower() != "png":
            raise BadInput(f"The samples_format '{value}' is not supported; this server answers with 'png' images.", field=key)
        return "png"
    if key == "sd_vae" and value not in VAE_CHOICES:
        raise BadInput(f"The sd_vae '{value}' cannot be chosen here; use {one_of(list(VAE_CHOICES))} (the model's own VAE).", field=key)
    if key == "randn_source" and value not in RANDN_SOURCES:
        raise BadInput(f"Unknown randn_source '{value}'; use {one_of(list(RANDN_SOURCES))}.", field=key)
    return value


def _option_error(key: str, why: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", key), "msg": why, "type": "value_error"}])


# --- lists: models, samplers, schedulers, upscalers, LoRAs, embeddings -------------------------


@router.get("/sd-models")
def sd_models(request: Request) -> list[dict[str, Any]]:
    return [
        {"title": model_title(m), "model_name": m.name, "hash": m.short_hash, "sha256": m.sha256,
         "filename": str(m.path), "config": None}
        for m in _studio(request).library.list("checkpoint")
    ]


@router.post("/refresh-checkpoints")
def refresh_checkpoints(request: Request) -> None:
    _studio(request).library.rescan()


@router.post("/refresh-loras")
def refresh_loras(request: Request) -> None:
    _studio(request).library.rescan()


@router.get("/sd-vae")
def sd_vae(request: Request) -> list[dict[str, Any]]:
    return [{"model_name": m.name, "filename": str(m.path)} for m in _studio(request).library.list("vae")]


@router.get("/samplers")
def samplers() -> list[dict[str, Any]]:
    aliases: dict[str, list[str]] = {}
    for alias, name in A1111_SAMPLER_ALIASES.items():
        aliases.setdefault(name, []).append(alias)
    return [
        {"name": s.name, "aliases": aliases.get(s.name, []),
         "options": {"scheduler": A1111_SCHEDULERS[s.automatic]} if s.automatic != "Automatic" else {}}
        for s in SAMPLERS.values()
    ]


# A1111's schedulers (modules/sd_schedulers.py) that the samplers here can follow.
_SCHEDULER_ITEMS = {
    "Automatic": {"aliases": None, "default_rho": -1, "need_inner_model": False},
    "Karras": {"aliases": None, "default_rho": 7.0, "need_inner_model": False},
    "Exponential": {"aliases": None, "default_rho": -1, "need_inner_model": False},
    "SGM Uniform": {"aliases": ["SGMUniform"], "default_rho": -1, "need_inner_model": True},
}


@router.get("/schedulers")
def schedulers() -> list[dict[str, Any]]:
    return [{"name": A1111_SCHEDULERS[label], "label": label, **_SCHEDULER_ITEMS[label]} for label in SCHEDULE_TYPES]


@router.get("/upscalers")
def upscalers() -> list[dict[str, Any]]:
    """The upscalers hires fix can use: the latent modes, then A1111's None, Lanczos and Nearest."""
    items = [{"name": n, "model_name": None, "model_path": None, "model_url": None, "scale": None} for n in LATENT_UPSCALERS]
    items += [{"name": n, "model_name": None, "model_path": None, "model_url": None, "scale": 4} for n in ("None", "Lanczos", "Nearest")]
    return items


@router.get("/latent-upscale-modes")
def latent_upscale_modes() -> list[dict[str, str]]:
    return [{"name": n} for n in LATENT_UPSCALERS]


@lru_cache(maxsize=512)
def _safetensors_metadata(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    """A safetensors file's `__metadata__`, JSON values decoded as A1111 does (header only, no tensors)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            raw = f.metadata() or {}
    except Exception:  # an unreadable header leaves the metadata empty; listing must not fail
        return {}
    parsed: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str) and value[:1] == "{":
            try:
                value = json.loads(value)
            except ValueError:
                pass
        parsed[key] = value
    return parsed


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


@router.get("/loras")
def loras(request: Request) -> list[dict[str, Any]]:
    items = []
    for m in _studio(request).library.list("lora"):
        metadata = _safetensors_metadata(*_file_key(m.path)) if m.path.suffix.lower() == ".safetensors" else {}
        items.append({"name": m.name, "alias": metadata.get("ss_output_name") or m.name, "path": str(m.path), "metadata": metadata})
    return items


@lru_cache(maxsize=512)
def _embedding_item(path: str, size: int, mtime_ns: int) -> tuple[dict[str, Any], bool] | None:
    """(A1111's EmbeddingItem, whether it is an SDXL pair), or None for a file that cannot be read."""
    from localdiffusion.prompts.embeddings import load_embedding

    try:
        emb = load_embedding(Path(path))
    except LocalDiffusionError:
        return None
    if emb.vectors is not None:
        shape, sdxl = int(emb.vectors.shape[-1]), False
    else:
        shape, sdxl = int(emb.clip_l.shape[-1] + emb.clip_g.shape[-1]), True  # type: ignore[union-attr]
    metadata = _safetensors_metadata(path, size, mtime_ns) if path.lower().endswith(".safetensors") else {}
    step = metadata.get("step")
    item = {"step": int(step) if str(step).isdigit() else None, "sd_checkpoint": metadata.get("sd_checkpoint"),
            "sd_checkpoint_name": metadata.get("sd_checkpoint_name"), "shape": shape, "vectors": emb.length}
    return item, sdxl


@router.get("/embeddings")
def embeddings(request: Request) -> dict[str, Any]:
    """Embeddings that fit the current model are 'loaded'; the others 'skipped', as A1111 sorts them."""
    studio = _studio(request)
    try:
        sdxl_model = base_family(current_checkpoint(studio, a1111_state(request)).family).startswith("sdxl")
    except ModelNotFound:
        sdxl_model = False
    loaded: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    for m in studio.library.list("embedding"):
        found = _embedding_item(*_file_key(m.path)) if m.path.is_file() else None
        if found is not None:
            item, sdxl = found
            (loaded if sdxl == sdxl_model else skipped)[m.name] = item
    return {"loaded": loaded, "skipped": skipped}


# --- scripts, flags, memory and the lists A1111 has but this server leaves empty -------------------


@router.get("/scripts")
def scripts() -> dict[str, list]:
    return {"txt2img": [], "img2img": []}


@router.get("/cmd-flags")
def cmd_flags(request: Request) -> dict[str, Any]:
    home = _studio(request).home
    return {
        "api": True, "nowebui": False, "listen": request.url.hostname not in ("127.0.0.1", "localhost", "::1"),
        "port": request.url.port, "data_dir": str(home.root), "ckpt_dir": str(home.model_dir("checkpoint")),
        "lora_dir": str(home.model_dir("lora")), "vae_dir": str(home.model_dir("vae")),
        "embeddings_dir": str(home.model_dir("embedding")), "esrgan_models_path": str(home.model_dir("upscaler")),
        "api_auth": None, "api_log": False, "disable_safe_unpickle": home.load_settings().allow_pickle,
    }


@router.get("/memory")
def memory(request: Request) -> dict[str, Any]:
    return {"ram": _ram(), "cuda": _cuda(_studio(request))}


def _ram() -> dict[str, Any]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total, free = os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return {"error": "unavailable on this system"}
    return {"free": free, "used": total - free, "total": total}


def _cuda(studio: Studio) -> dict[str, Any]:
    if studio.engine.device.type != "cuda":
        return {"error": f"this server runs on {studio.engine.device.type}, not CUDA"}
    import torch

    free, total = torch.cuda.mem_get_info(studio.engine.device)
    stats = torch.cuda.memory_stats(studio.engine.device)
    return {
        "system": {"free": free, "used": total - free, "total": total},
        "active": {"current": stats.get("active_bytes.all.current", 0), "peak": stats.get("active_bytes.all.peak", 0)},
        "allocated": {"current": stats.get("allocated_bytes.all.current", 0), "peak": stats.get("allocated_bytes.all.peak", 0)},
        "reserved": {"current": stats.get("reserved_bytes.all.current", 0), "peak": stats.get("reserved_bytes.all.peak", 0)},
    }


def _empty_list() -> list:
    return []


for _path in ("/hypernetworks", "/face-restorers", "/realesrgan-models", "/prompt-styles", "/script-info", "/extensions"):
    router.add_api_route(_path, _empty_list, methods=["GET"], name=f"a1111{_path.replace('/', '_').replace('-', '_')}")
