"""An A1111 request turned into a Recipe, with every name and number checked before it is queued."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import ValidationError

from localdiffusion.engine.images import as_mask
from localdiffusion.engine.inputs import HomeInputs
from localdiffusion.engine.plan import check_loras, check_size, hires_size
from localdiffusion.engine.samplers import Sampler, resolve_sampler
from localdiffusion.errors import BadInput
from localdiffusion.infotext import A1111_SCHEDULERS, from_infotext
from localdiffusion.models.info import ModelInfo
from localdiffusion.recipe import Recipe
from localdiffusion.server.a1111.checkpoints import current_checkpoint, find_checkpoint
from localdiffusion.server.a1111.controlnet import with_controls
from localdiffusion.server.a1111.images import a1111_mask, fit_image, image_from_base64
from localdiffusion.server.a1111.options import checked_setting, randn_device, setting
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
    (sizes, sampler, hires, mode inputs, controls, references, LoRAs); its BadInput answers 400.

    Sizes and LoRAs are also checked before any image is decoded or resized, and input images are kept under
    HOME/inputs only once those have passed, so that such a refused request costs no memory and leaves no file.
    """
    fields, model = _common_fields(req, studio, state)
    if isinstance(req, Txt2ImgRequest):
        fields.update(_hires_fields(req, studio, fields))
    else:
        fields.update(_img2img_settings(req))  # type: ignore[arg-type]
    recipe = _validated(fields)
    max_side = studio.library.settings.max_side
    check_size(recipe.width or model.native_size, recipe.height or model.native_size, max_side)
    if recipe.enable_hr:
        check_size(*hires_size(recipe), max_side, what="hires size")
    check_loras(recipe, studio.library)
    images = _img2img_images(req) if isinstance(req, Img2ImgRequest) else None
    recipe = with_controls(recipe, req.alwayson_scripts, studio, model)
    if isinstance(req, Img2ImgRequest) and images is not None:
        recipe = recipe.model_copy(update=_kept_inputs(req, studio, recipe, *images))
    studio.engine.prepare(recipe, HomeInputs(studio.home.root, paths=False))  # the engine's one validator
    return recipe


def _validated(fields: dict[str, Any]) -> Recipe:
    try:
        return Recipe(**fields)
    except ValidationError as e:
        raise _validation_error(e) from None


def _common_fields(req: GenerationRequest, studio: Studio, state: A1111State) -> tuple[dict[str, Any], ModelInfo]:
    sampler, schedule = resolve_sampler(req.sampler_name or req.given("sampler_index"), _schedule_label(req.scheduler))
    model = current_checkpoint(studio, state, (req.override_settings or {}).get("sd_model_checkpoint"))
    rng = randn_device(str(setting(req, state, "randn_source")), "override_settings.randn_source")
    fields: dict[str, Any] = {name: req.given(name) for name in _SAME_FIELDS}
    fields.update(sampler_name=sampler.name, scheduler=schedule, model=model.name, rng=rng,
                  clip_skip=setting(req, state, "CLIP_stop_at_last_layers"), **_sampler_settings(req, state, sampler))
    if req.refiner_checkpoint and req.refiner_checkpoint != "None":
        fields["refiner_checkpoint"] = find_checkpoint(studio, req.refiner_checkpoint, "refiner_checkpoint").name
        fields["refiner_switch_at"] = req.refiner_switch_at if req.refiner_switch_at is not None else 0.8
    return _with_infotext(req, fields), model


def _sampler_settings(req: GenerationRequest, state: A1111State, sampler: Sampler) -> dict[str, Any]:
    """A1111's options that change how its samplers run, for this request: the request's `eta` (else the
    "eta (ancestral)" or "eta DDIM" option, when not its default), ENSD, SGM noise multiplier, pad conds."""
    fields: dict[str, Any] = {}
    for key in ("eta_noise_seed_delta", "sgm_noise_multiplier", "pad_cond_uncond"):
        fields[key] = checked_setting(key, setting(req, state, key))
    eta = req.eta
    if eta is None and sampler.takes_eta:
        key = "eta_ddim" if sampler.is_timestep_sampler else "eta_ancestral"
        eta = checked_setting(key, setting(req, state, key))
        eta = None if eta == sampler.default_eta else eta
    fields["eta"] = eta
    return fields


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
    try:
        stated, _ = from_infotext(req.infotext)  # a text beyond the infotext limit is refused, not parsed
    except BadInput as e:
        raise BadInput(e.message, field="infotext") from None
    sent = req.model_fields_set | ({"sampler_name"} if "sampler_index" in req.model_fields_set else set())
    return {**fields, **{k: v for k, v in stated.items() if k in fields and k not in sent}}


def _hires_fields(req: Txt2ImgRequest, studio: Studio, fields: dict[str, Any]) -> dict[str, Any]:
    """The first pass's size and the hires fields. As in A1111's StableDiffusionProcessingTxt2Img, a
    `firstphase_width`/`firstphase_height` (clients of A1111 before 1.0) is the first pass's size."""
    sizes: dict[str, Any] = {}
    if req.firstphase_width or req.firstphase_height:
        sizes = {"width": req.firstphase_width, "height": req.firstphase_height}
    if not req.enable_hr:
        return sizes
    upscaler = req.hr_upscaler or "Latent"
    scale = req.given("hr_scale")
    if req.hr_resize_x or req.hr_resize_y:  # A1111's "resize to": the scale that reaches the larger side
        width, height = sizes.get("width", fields["width"]), sizes.get("height", fields["height"])
        for name, value in (("width", width), ("height", height)):
            if value < 1:  # A1111 divides by it too
                raise _field_error(name, f"the first pass needs a width and a height to resize to hr_resize_x and hr_resize_y, "
                                         f"not {value}; give both (at least 64)")
        scale = max((req.hr_resize_x or 0) / width, (req.hr_resize_y or 0) / height)
    return {**sizes, "enable_hr": True, "hr_scale": scale, "hr_upscaler": upscaler,
            "hr_second_pass_steps": req.given("hr_second_pass_steps")}


def _img2img_settings(req: Img2ImgRequest) -> dict[str, Any]:
    """The img2img and inpaint fields, without the images: they are resized and kept once the rest is checked."""
    if not req.init_images:
        raise BadInput("img2img needs an image in init_images (base64).", field="init_images")
    fields: dict[str, Any] = {"mode": "img2img", "width": req.given("width"), "height": req.given("height")}
    if req.mask:
        fields.update(
            mode="inpaint", mask_blur=req.mask_blur if req.mask_blur is not None else req.given("mask_blur_x"),
            inpainting_fill=req.given("inpainting_fill"), inpaint_full_res=req.given("inpaint_full_res"),
            inpaint_full_res_padding=req.given("inpaint_full_res_padding"),
            inpainting_mask_invert=int(bool(req.given("inpainting_mask_invert"))),
        )
    return fields


def _img2img_images(req: Img2ImgRequest) -> tuple[Image.Image, Image.Image | None]:
    """(the init image, the mask or None), decoded and checked; an empty mask is refused."""
    image = _init_image((req.init_images or [""])[0])
    return image, _inpaint_mask(req)[0] if req.mask else None


def _kept_inputs(req: Img2ImgRequest, studio: Studio, recipe: Recipe, image: Image.Image, mask: Image.Image | None) -> dict[str, str]:
    """The init image (and mask) fitted to the checked size and kept under HOME/inputs: their refs."""
    width, height, resize_mode = recipe.width, recipe.height, req.given("resize_mode")
    if mask is None:
        return {"init_image": keep_input(studio.home.root, fit_image(image, resize_mode, width, height))}
    if recipe.inpaint_full_res:  # "only masked" works on the original and pastes the result back into it
        mask = mask.resize(image.size, Image.Resampling.LANCZOS) if mask.size != image.size else mask
    else:
        image, mask = fit_image(image, resize_mode, width, height), fit_image(mask, resize_mode, width, height)
    return {"mask": keep_input(studio.home.root, mask), "init_image": keep_input(studio.home.root, image)}


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


def _field_error(name: str, why: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", name), "msg": why, "type": "value_error"}])


def _validation_error(error: ValidationError) -> RequestValidationError:
    errors = []
    for e in error.errors():
        name = str(e["loc"][0]) if e["loc"] else ""
        errors.append({"loc": ("body", *_REQUEST_FIELD.get(name, name).split(".")), "msg": e["msg"], "type": e["type"]})
    return RequestValidationError(errors)
