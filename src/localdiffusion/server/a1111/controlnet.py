"""The sd-webui-controlnet extension's API: units in `alwayson_scripts`, and its /controlnet/* lists.

A request's units arrive as the extension takes them (`alwayson_scripts: {"controlnet": {"args":
[{image or input_image (base64), module, model, weight, resize_mode, processor_res, threshold_a,
threshold_b, guidance_start, guidance_end, enabled, ...}]}}`). Each becomes a ControlUnit whose
image is kept as an input, then the control feature prepares its map and picks its model.
Fields we have no use for (low_vram, pixel_perfect, control_mode, hr_option) are accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from localdiffusion.control.preprocessors import MODULES
from localdiffusion.control.units import prepare_controls
from localdiffusion.errors import BadInput, one_of
from localdiffusion.models.controlnet import check_fits
from localdiffusion.models.info import ModelInfo
from localdiffusion.recipe import ControlUnit, Recipe
from localdiffusion.server.a1111.images import image_from_base64
from localdiffusion.server.deps import get_studio
from localdiffusion.server.studio import Studio
from localdiffusion.store.inputs import keep_input

router = APIRouter(prefix="/controlnet", tags=["A1111 ControlNet extension API"])

RESIZE_MODES = ["Just Resize", "Crop and Resize", "Resize and Fill"]
# The extension's older names for the resize modes.
RESIZE_ALIASES = {"Inner Fit (Scale to Fit)": "Crop and Resize", "Outer Fit (Shrink to Fit)": "Resize and Fill",
                  "Scale to Fit (Inner Fit)": "Crop and Resize", "Envelope (Outer Fit)": "Resize and Fill",
                  "Just Resize (Latent upscale)": "Just Resize"}
UNIT_FIELDS = ("weight", "guidance_start", "guidance_end", "threshold_a", "threshold_b")


# --- units in a generation request -------------------------------------------------------------


def controlnet_args(alwayson_scripts: dict[str, Any] | None) -> list[Any]:
    """The ControlNet script's args; A1111 finds an always-on script by its title, in any case."""
    for name, script in (alwayson_scripts or {}).items():
        if name.lower() == "controlnet" and isinstance(script, dict):
            return list(script.get("args") or [])
    return []


def with_controls(recipe: Recipe, alwayson_scripts: dict[str, Any] | None, studio: Studio, model: ModelInfo) -> Recipe:
    """The recipe with the request's enabled ControlNet units, maps prepared, models picked and checked."""
    args = controlnet_args(alwayson_scripts)
    units = [control_unit(i, arg, studio) for i, arg in enumerate(args) if not isinstance(arg, dict) or arg.get("enabled", True)]
    if not units:
        return recipe
    ready = prepare_controls(recipe.model_copy(update={"controls": units}), studio.home.root, studio.library)
    for i, unit in enumerate(ready.controls):
        check_fits(studio.library.get(unit.model, kind="controlnet"), model, field=f"{_where(i)}.model")
    return ready


def _where(index: int) -> str:
    return f"alwayson_scripts.controlnet.args.{index}"


def control_unit(index: int, arg: Any, studio: Studio) -> ControlUnit:
    where = _where(index)
    if not isinstance(arg, dict):
        raise BadInput(f"ControlNet unit {index} is not an object; send each unit as a JSON object with image, module, model and weight.", field=where)
    image = arg.get("image", arg.get("input_image"))
    if isinstance(image, dict):  # {"image": ..., "mask": ...}
        image = image.get("image")
    if not image:
        raise BadInput(f"ControlNet unit {index} has no image; send it as base64 in 'image'.", field=f"{where}.image")
    picture = image_from_base64(image, f"{where}.image", f"ControlNet unit {index} image")
    fields: dict[str, Any] = {k: arg[k] for k in UNIT_FIELDS if arg.get(k) is not None}
    if arg.get("guidance") is not None and "guidance_end" not in fields:  # the extension's old name
        fields["guidance_end"] = arg["guidance"]
    if isinstance(arg.get("processor_res"), (int, float)) and arg["processor_res"] > 0:  # -1: the default
        fields["processor_res"] = arg["processor_res"]
    module, model = module_name(index, str(arg.get("module") or "none")), model_name(index, arg.get("model"))
    mode = resize_mode(index, arg.get("resize_mode", 1))
    try:
        unit = ControlUnit(module=module, model=model, resize_mode=mode, **fields)
    except ValidationError as e:
        first = e.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "unit"
        raise BadInput(f"ControlNet unit {index} has {name} {first.get('input')!r}, which is not allowed: {first['msg']}.",
                       field=f"{where}.{name}") from None
    return unit.model_copy(update={"image": keep_input(studio.home.root, picture.convert("RGB"))})


def module_name(index: int, module: str) -> str:
    """Our preprocessor for an extension module name: 'canny', or a variant such as 'depth_midas' or 'openpose_full'."""
    base = module.split("_")[0].lower()
    if module in MODULES:
        return module
    if base in MODULES:
        return base
    raise BadInput(f"The ControlNet module '{module}' is not available; choose one of {one_of(list(MODULES))}.",
                   field=f"{_where(index)}.module")


def model_name(index: int, model: Any) -> str:
    """The unit's ControlNet by library name or 'name [hash]' title; 'None' or empty lets the studio pick one."""
    text = str(model or "").strip()
    if text in ("", "None"):
        return ""
    if "/" in text or "\\" in text:
        raise BadInput(f"The ControlNet model '{text}' looks like a path; name one from /controlnet/model_list.", field=f"{_where(index)}.model")
    return text


def resize_mode(index: int, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return RESIZE_MODES[value] if 0 <= value < len(RESIZE_MODES) else "Just Resize"
    text = RESIZE_ALIASES.get(str(value), str(value))
    if text not in RESIZE_MODES:
        raise BadInput(f"The resize mode '{value}' is unknown; use one of {one_of(RESIZE_MODES)} (or 0, 1, 2).",
                       field=f"{_where(index)}.resize_mode")
    return text


# --- the extension's lists ---------------------------------------------------------------------


@router.get("/version")
def version() -> dict[str, int]:
    return {"version": 2}


@router.get("/model_list")
def model_list(request: Request, update: bool = True) -> dict[str, list[str]]:
    """The installed ControlNets by A1111 title, 'name [hash]' (the extension's 8-digit hash)."""
    library = get_studio(request).library
    if update:
        library.rescan()
    models = sorted(library.list("controlnet"), key=lambda m: m.name.lower())
    return {"model_list": [f"{m.name} [{library.ensure_hash(m).short_hash}]" for m in models]}


@router.get("/module_list")
def module_list(alias_names: bool = False) -> dict[str, Any]:
    return {"module_list": list(MODULES), "module_detail": {m: {"model_free": False, "sliders": []} for m in MODULES}}


@router.get("/settings")
def settings() -> dict[str, int]:
    return {"control_net_unit_count": 3}
