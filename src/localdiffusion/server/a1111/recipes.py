"""An A1111 request turned into a Recipe, with every name and number checked before it is queued."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import ValidationError

from localdiffusion.engine.images import as_mask
from localdiffusion.engine.inputs import HomeInputs
from localdiffusion.engine.samplers import resolve_sampler
from localdiffusion.errors import BadInput
from localdiffusion.infotext import A1111_SCHEDULERS, from_infotext
from localdiffusion.models.info import ModelInfo
from localdiffusion.recipe import Recipe
from localdiffusion.server.a1111.checkpoints import current_checkpoint, find_checkpoint
from localdiffusion.server.a1111.controlnet import with_controls
from localdiffusion.server.a1111.images import a1111_mask, fit_image, image_from_base64
from localdiffusion.server.a1111.options import randn_device, setting
from localdiffusion.server.a1111.schemas import GenerationRequest, Img2ImgRequest, Txt2ImgRequest
from localdiffusion.server.a1111.state import A1111State
from localdiffusion.server.studio import Studio
from localdiffusion.store.inputs import keep_input

# Request fields copied to the Recipe as they are (their A1111 default where the client sent null).
_SAME_FIELDS = ("prompt", "negative_prompt", "seed", "subseed", "subseed_strength", "steps", "cfg_scale",
                "width", "height", "batch_size", "n_iter", "denoising_strength")

# Recipe fields whose request field has another name (for 422s that name what the client sent).
_REQUEST_FIELD = {"model": "override_settings.sd_model_checkpoint", "init_image": "init_images", "rng": "override_settings.randn_source"}


def build_recipe(req: GenerationRequest, studio: Studio, state: A1111State) -> Recipe:
    """The Recipe for an A1111 request, with every name and number checked before it is queued: the request's
    own fields here (A1111's names and defaults), then the recipe by the engine's one validator, `Engine.prepare`
    (sizes, sampler, hires, mode inputs, controls, references, LoRAs); its BadInput answers 400."""
    fields, model = _common_fields(req, studio, state)
    if isinstance(req, Txt2ImgRequest):
        fields.update(_hires_fields(req, studio))
    else:
        fields.update(_img2img_fields(req, studio))  # type: ignore[arg-type]
    try:
        recipe = Recipe(**fields)
    except ValidationError as e:
        raise _validation_error(e) from None
    recipe = with_controls(recipe, req.alwayson_scripts, studio, model)
    studio.engine.prepare(recipe, HomeInputs(studio.home.root, paths=False))  # the engine's one validator
    return recipe


def _common_fields(req: GenerationRequest, studio: Studio, state: A1111State) -> tuple[dict[str, Any], ModelInfo]:
    sampler, schedule = resolve_sampler(req.sampler_name or req.given("sampler_index"), _schedule_label(req.scheduler))
    model = current_checkpoint(studio, state, (req.override_settings or {}).get("sd_model_checkpoint"))
    rng = randn_device(str(setting(req, state, "randn_source")), "override_settings.randn_source")
    fields: dict[str, Any] = {name: req.given(name) for name in _SAME_FIELDS}
    fields.update(sampler_name=sampler.name, scheduler=schedule, model=model.name, rng=rng,
                  clip_skip=setting(req, state, "CLIP_stop_at_last_layers"))
    if req.refiner_checkpoint and req.refiner_checkpoint != "None":
        fields["refiner_checkpoint"] = find_checkpoint(studio, req.refiner_checkpoint, "refiner_checkpoint").name
        fields["refiner_switch_at"] = req.refiner_switch_at if req.refiner_switch_at is not None else 0.8
    return _with_infotext(req, fields), model


def _schedule_label(name: str | None) -> str:
    """A1111 accepts a schedule type by label ('Karras') or by name ('karras')."""
    if not name:
        return "Automatic"
    by_name = {n: label for label, n in A1111_SCHEDULERS.items()}
    return by_name.get(name, by_name.get(name.lower(), name))


def _with_infotext(req: GenerationRequest, fields: dict[str, Any]) -> dict[str, Any]:
    """A1111's `infotext` request field: its values fill in whatever the request itself did not set."""
    if not req.infotext:
        return fields
    stated, _ = from_infotext(req.infotext)
    sent = req.model_fields_set | ({"sampler_name"} if "sampler_index" in req.model_fields_set else set())
    return {**fields, **{k: v for k, v in stated.items() if k in fields and k not in sent}}


def _hires_fields(req: Txt2ImgRequest, studio: Studio) -> dict[str, Any]:
    if not req.enable_hr:
        return {}
    upscaler = req.hr_upscaler or "Latent"
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
    image = _init_image(req.init_images[0])
    fields: dict[str, Any] = {"mode": "img2img", "width": width, "height": height}
    if req.mask:
        mask, invert = _inpaint_mask(req)
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


def _init_image(text: str) -> Image.Image:
    image = image_from_base64(text, "init_images", "init image")
    if image.mode not in ("RGB", "RGBA"):  # CMYK, palette, 16-bit...: the modes a PNG input keeps exactly
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    return image


def _inpaint_mask(req: Img2ImgRequest) -> tuple[Image.Image, bool]:
    """(the request's mask as A1111 reads it, whether to invert it); an empty mask is refused."""
    mask = a1111_mask(image_from_base64(req.mask or "", "mask", "mask"), req.given("mask_round"))
    invert = bool(req.given("inpainting_mask_invert"))
    if as_mask(mask, invert=invert).getbbox() is None:
        raise BadInput("The mask is empty (nothing is white), so there is nothing to inpaint; "
                       "paint the area to change in white.", field="mask")
    return mask, invert


def _validation_error(error: ValidationError) -> RequestValidationError:
    errors = []
    for e in error.errors():
        name = str(e["loc"][0]) if e["loc"] else ""
        errors.append({"loc": ("body", *_REQUEST_FIELD.get(name, name).split(".")), "msg": e["msg"], "type": e["type"]})
    return RequestValidationError(errors)
