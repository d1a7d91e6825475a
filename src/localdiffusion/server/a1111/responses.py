"""A finished job as A1111 answers it: base64 images, the request echoed back, `info` as a JSON string."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from localdiffusion import __version__
from localdiffusion.errors import LocalDiffusionError
from localdiffusion.infotext import parse_params, split_lines
from localdiffusion.jobs import Job
from localdiffusion.models.info import ModelInfo
from localdiffusion.recipe import Recipe
from localdiffusion.server.a1111.images import file_base64
from localdiffusion.server.a1111.schemas import GenerationRequest, Img2ImgRequest
from localdiffusion.server.studio import Studio

VERSION = f"localdiffusion {__version__}"

# Infotext keys that A1111's `info` reports as fields of their own, not in `extra_generation_params`.
_CORE_KEYS = {"Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model", "Version", "Clip skip",
              "Denoising strength", "Variation seed", "Variation seed strength"}


def a1111_timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y%m%d%H%M%S")


def generation_response(studio: Studio, req: GenerationRequest, job: Job, stopped: str | None) -> dict[str, Any]:
    """A1111's txt2img/img2img answer; `stopped` ('interrupted' or 'skipped') is marked in the info."""
    rows = [row for row in (studio.db.get_image(i) for i in job.result.get("images", [])) if row is not None]
    images = [file_base64(row.path) for row in rows] if req.given("send_images") else []
    parameters = req.model_dump()
    if isinstance(req, Img2ImgRequest) and not req.include_init_images:
        parameters.update(init_images=None, mask=None)
    info = job_info(studio, req, job, [Recipe.from_json(r.recipe_json) for r in rows], [r.infotext for r in rows])
    if stopped:
        info["extra_generation_params"][stopped.capitalize()] = True
    return {"images": images, "parameters": parameters, "info": json.dumps(info, default=lambda o: None)}


def job_info(studio: Studio, req: GenerationRequest, job: Job, recipes: list[Recipe], infotexts: list[str]) -> dict[str, Any]:
    """A1111's `Processed.js()` for a finished job (empty lists when it was interrupted early)."""
    first = recipes[0] if recipes else job.recipe
    model = _job_model(studio, job)
    extra = {k: v for k, v in parse_params(split_lines(infotexts[0])[2]).items() if k not in _CORE_KEYS} if infotexts else {}
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
        "job_timestamp": a1111_timestamp(job.started_at or job.created_at),
        "clip_skip": first.clip_skip,
        "is_using_inpainting_conditioning": bool(model and model.inpaint and first.mode != "txt2img"),
        "version": VERSION,
    }


def _job_model(studio: Studio, job: Job) -> ModelInfo | None:
    """The job's checkpoint as the library knows it now; None once it is gone."""
    try:
        return studio.library.get(job.recipe.model or "", kind="checkpoint")
    except LocalDiffusionError:
        return None
