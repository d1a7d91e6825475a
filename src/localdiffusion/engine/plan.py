"""Check a Recipe against the model and settings, and prepare its input images.

A Plan is a Recipe resolved for one model: concrete size, sampler, and the images at the
size the model will work at. Every bad value is caught here, before any model work; the
pictures come from an `Inputs` source by name (engine/inputs.py), never from a path.
`Engine.prepare` (engine/prepare.py) calls this after resolving the models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from localdiffusion.engine import images as im
from localdiffusion.engine.inputs import Inputs, open_input
from localdiffusion.engine.samplers import resolve_sampler
from localdiffusion.errors import BadInput, ModelNotFound, one_of
from localdiffusion.models.info import ModelInfo
from localdiffusion.models.upscalers import find_upscaler, list_upscalers
from localdiffusion.prompts.extra_networks import extract_loras
from localdiffusion.recipe import ControlUnit, Outpaint, Recipe, Reference
from localdiffusion.store.home import Settings

LATENT_UPSCALERS = {"Latent": "bilinear", "Latent (nearest)": "nearest", "Latent (bicubic)": "bicubic", "Latent (antialiased)": "bilinear-aa"}
IMAGE_UPSCALERS = {"Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST, "None": None}


def hires_upscalers(library: Any) -> list[str]:
    """What the hires pass can upscale with: the latent modes, Lanczos, Nearest, None, then the library's upscaler models."""
    return [*LATENT_UPSCALERS, *IMAGE_UPSCALERS, *(u.name for u in list_upscalers(library) if u.is_model)]


def check_hires_upscaler(name: str, library: Any) -> None:
    if name in LATENT_UPSCALERS or name in IMAGE_UPSCALERS:
        return
    try:
        find_upscaler(name, library)
    except ModelNotFound:
        raise BadInput(f"Unknown hires upscaler '{name}'; choose one of {one_of(hires_upscalers(library))}.",
                       field="hr_upscaler") from None


def check_loras(recipe: Recipe, library: Any) -> list[ModelInfo]:
    """Every `<lora:name:w>` tag of the prompts names a LoRA in the library: by name or hash, never a path.
    Returns them in the order of the tags (prompt, then negative prompt); errors name the prompt's field."""
    found = []
    for field_name in ("prompt", "negative_prompt"):
        for ref in extract_loras(getattr(recipe, field_name))[1]:
            if "/" in ref.name or "\\" in ref.name:
                raise BadInput(f"The LoRA name '{ref.name}' looks like a path; name a LoRA from the library, e.g. <lora:name:0.8>.",
                               field=field_name)
            found.append(library.get(ref.name, kind="lora", field=field_name))
    return found


@dataclass
class ModeImages:
    """The images a mode works from, at the processing size."""

    image: Image.Image  # RGB, what img2img/inpaint start from
    mask: Image.Image | None = None  # "L", white = repaint, blurred by mask_blur
    original: Image.Image | None = None  # the full image that results are pasted back into
    crop: tuple[int, int, int, int] | None = None  # "only masked": the region of `original` we work on


@dataclass
class Plan:
    recipe: Recipe  # with width, height and sampler resolved
    inputs: ModeImages | None
    control_maps: list[Image.Image] = field(default_factory=list)  # one raw map per ControlNet unit, RGB
    reference_images: list[Image.Image] = field(default_factory=list)  # one picture per reference, RGB


def make_plan(recipe: Recipe, model: ModelInfo, settings: Settings, inputs: Inputs) -> Plan:
    resolve_sampler(recipe.sampler_name, recipe.scheduler)
    control_maps = [_control_map(i, unit, inputs) for i, unit in enumerate(recipe.controls)]
    reference_images = [_reference_image(i, reference, inputs) for i, reference in enumerate(recipe.references)]
    if recipe.enable_hr and recipe.mode != "txt2img":
        raise BadInput(f"Hires fix works on txt2img only, not on {recipe.mode}; upscale the finished image instead.", field="enable_hr")
    if recipe.mode == "txt2img":
        side = model.native_size
        recipe = recipe.model_copy(update={"width": recipe.width or side, "height": recipe.height or side})
        images = None
    else:
        check_size(recipe.width, recipe.height, settings.max_side)  # a size that is given, before any image work
        recipe, images = _prepare_inputs(recipe, inputs, settings.max_side)
    check_size(recipe.width, recipe.height, settings.max_side)
    if recipe.enable_hr:
        check_size(*hires_size(recipe), settings.max_side, what="hires size")
    return Plan(recipe, images, control_maps, reference_images)


def _control_map(index: int, unit: ControlUnit, inputs: Inputs) -> Image.Image:
    """A unit's control map. The engine never runs preprocessors: the map must be ready (or be the image)."""
    where = f"controls.{index}"
    if not unit.model:
        raise BadInput(f"ControlNet unit {index} names no ControlNet model; name one from models/ControlNet.", field=f"{where}.model")
    if unit.guidance_start > unit.guidance_end:
        raise BadInput(
            f"ControlNet unit {index} starts at {unit.guidance_start} but ends at {unit.guidance_end}; the start must not come after the end.",
            field=f"{where}.guidance_start",
        )
    ref = unit.map or (unit.image if unit.module == "none" else None)
    if ref is None:
        if unit.image is None:
            raise BadInput(f"ControlNet unit {index} has no image; give the control image, or a ready-made map with module 'none'.", field=f"{where}.image")
        raise BadInput(
            f"ControlNet unit {index} uses the preprocessor '{unit.module}' but its map was not prepared; "
            f"prepare it first (localdiffusion.control.units.prepare_controls), or give a ready-made map with module 'none'.",
            field=f"{where}.map",
        )
    # A plain conversion, not `as_rgb`: a transparent map area means "no signal" (black), not white paper.
    return open_input(inputs, ref, f"ControlNet unit {index} map").convert("RGB")


def _reference_image(index: int, reference: Reference, inputs: Inputs) -> Image.Image:
    if not reference.image:
        raise BadInput(f"Reference {index} has no image; give the picture the image should resemble.", field=f"references.{index}.image")
    try:
        return im.as_rgb(open_input(inputs, reference.image, f"reference {index} image"))
    except BadInput as e:
        raise BadInput(e.message, field=f"references.{index}.image") from None


def check_size(width: int | None, height: int | None, max_side: int, what: str = "size") -> None:
    """Each side a multiple of 8 and at most `max_side`; a side that is None (not given yet) is not checked."""
    for name, value in (("width", width), ("height", height)):
        if value is None:
            continue
        if value % 8:
            lower, upper = value // 8 * 8, value // 8 * 8 + 8
            raise BadInput(f"The {what} {name} {value} is not a multiple of 8; use {lower} or {upper}.", field=name)
        if value > max_side:
            raise BadInput(f"The {what} {name} {value} is above the limit of {max_side} pixels; lower it or raise max_side in settings.json.", field=name)


def hires_size(recipe: Recipe) -> tuple[int, int]:
    return im.round_to_8(recipe.width * recipe.hr_scale), im.round_to_8(recipe.height * recipe.hr_scale)


def _prepare_inputs(recipe: Recipe, inputs: Inputs, max_side: int) -> tuple[Recipe, ModeImages]:
    """The input images at the processing size; every size is checked before an image is resized or made."""
    if not recipe.init_image:
        raise BadInput(f"Mode {recipe.mode} needs an input image; give one with init_image (--init on the command line).", field="init_image")
    image = im.as_rgb(open_input(inputs, recipe.init_image, "input image"))
    if recipe.mode == "img2img":
        return _resized(recipe, image, None, max_side)
    if recipe.mode == "outpaint":
        return _outpaint(recipe, image, max_side)
    if not recipe.mask:
        raise BadInput("Inpainting needs a mask; give one with mask (--mask on the command line), white where the image should change.", field="mask")
    mask_image = open_input(inputs, recipe.mask, "mask")
    if mask_image.size != image.size:
        raise BadInput(
            f"The mask is {mask_image.width}x{mask_image.height} but the image is {image.width}x{image.height}; they must be the same size.",
            field="mask",
        )
    mask = im.as_mask(mask_image, invert=bool(recipe.inpainting_mask_invert))
    if mask.getbbox() is None:
        raise BadInput("The mask is empty (nothing is white), so there is nothing to inpaint; paint the area to change in white.", field="mask")
    return _inpaint_inputs(recipe, image, mask, max_side)


def _processing_size(recipe: Recipe, image: Image.Image, max_side: int) -> tuple[int, int]:
    """The size the model works at: the recipe's, else the image's rounded to 8; checked."""
    width = recipe.width or im.round_to_8(image.width)
    height = recipe.height or im.round_to_8(image.height)
    check_size(width, height, max_side)
    return width, height


def _resized(recipe: Recipe, image: Image.Image, mask: Image.Image | None, max_side: int) -> tuple[Recipe, ModeImages]:
    width, height = _processing_size(recipe, image, max_side)
    recipe = recipe.model_copy(update={"width": width, "height": height})
    resized = image.resize((width, height), Image.Resampling.LANCZOS) if image.size != (width, height) else image
    resized_mask = mask.resize((width, height), Image.Resampling.LANCZOS) if mask is not None and mask.size != (width, height) else mask
    return recipe, ModeImages(resized, resized_mask, original=resized)


def _inpaint_inputs(recipe: Recipe, image: Image.Image, mask: Image.Image, max_side: int) -> tuple[Recipe, ModeImages]:
    width, height = _processing_size(recipe, image, max_side)
    blurred = im.blur_mask(mask, recipe.mask_blur)
    if not recipe.inpaint_full_res:
        recipe, inputs = _resized(recipe, image, blurred, max_side)
        return recipe, _filled(recipe, inputs)
    recipe = recipe.model_copy(update={"width": width, "height": height})
    crop = im.crop_region(mask, recipe.inpaint_full_res_padding, width, height)
    region = image.crop(crop).resize((width, height), Image.Resampling.LANCZOS)
    region_mask = blurred.crop(crop).resize((width, height), Image.Resampling.LANCZOS)
    return recipe, _filled(recipe, ModeImages(region, region_mask, original=image, crop=crop))


def _filled(recipe: Recipe, inputs: ModeImages) -> ModeImages:
    if recipe.inpainting_fill == 0:
        inputs.image = im.fill_masked(inputs.image, inputs.mask)
    return inputs


def _outpaint(recipe: Recipe, image: Image.Image, max_side: int) -> tuple[Recipe, ModeImages]:
    sides = recipe.outpaint or Outpaint()
    if sides.is_empty():
        raise BadInput("Outpainting needs at least one side to extend; give pixels for left, right, up or down.", field="outpaint")
    check_outpaint(image.width, image.height, sides, max_side)
    width, height = image.width + sides.left + sides.right, image.height + sides.up + sides.down
    # Round the canvas up to a multiple of 8 by extending the right and bottom edges a little more.
    sides = sides.model_copy(update={"right": sides.right + (-width) % 8, "down": sides.down + (-height) % 8})
    canvas = im.extend_canvas(image, sides, overlap=max(recipe.mask_blur, 4))
    size = {} if recipe.inpaint_full_res else {"width": canvas.image.width, "height": canvas.image.height}
    recipe = recipe.model_copy(update={"outpaint": sides, **size})
    return _inpaint_inputs(recipe, canvas.image, canvas.mask, max_side)


def outpaint_canvas(width: int, height: int, sides: Outpaint) -> tuple[int, int]:
    """The size of an image of `width` x `height` once extended by `sides`, rounded up to a multiple of 8."""
    return -(-(width + sides.left + sides.right) // 8) * 8, -(-(height + sides.up + sides.down) // 8) * 8


def check_outpaint(width: int, height: int, sides: Outpaint, max_side: int) -> None:
    """The extended canvas fits in `max_side` on each side; checked before the canvas is made (also with
    "only masked", where the model works at a smaller size but the canvas is still made whole)."""
    canvas = outpaint_canvas(width, height, sides)
    for name, side, value in (("width", "left and right", canvas[0]), ("height", "up and down", canvas[1])):
        if value > max_side:
            raise BadInput(f"Outpainting this {width}x{height} image makes a canvas {value} pixels in {name}, above the limit of "
                           f"{max_side}; add fewer pixels {side}, or raise max_side in settings.json.", field="outpaint")
