"""The sd-webui-controlnet extension's API: units in `alwayson_scripts`, and its /controlnet/* lists.

A request's units arrive as the extension takes them (`alwayson_scripts: {"controlnet": {"args":
[{image or input_image (base64), module, model, weight, resize_mode, processor_res, threshold_a,
threshold_b, guidance_start, guidance_end, pixel_perfect, control_mode, enabled, ...}]}}`). Each
becomes a ControlUnit whose image is kept as an input, then the control feature prepares its map
(pixel perfect: at the resolution it is used at) and picks its model. `control_mode` is the
extension's name ("Balanced", "My prompt is more important", "ControlNet is more important") or,
as its older API took it, the index 0-2. Fields we have no use for (low_vram, hr_option) are
accepted and ignored.

The extension runs IP-Adapters as units too (module `ip-adapter_clip_sd15`, `ip-adapter_clip_sdxl`,
`ip-adapter_clip_sdxl_plus_vith` or `ip-adapter-auto`; model `ip-adapter_sd15 [hash]`). Those become the
recipe's references: the picture, the weight as the scale, and the adapter by library name. The engine
picks the image encoder from the adapter's own shape, so the module only says "this is an IP-Adapter".
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from PIL import Image
from pydantic import ValidationError

from localdiffusion.control.preprocessors import MODULES
from localdiffusion.control.units import prepare_controls
from localdiffusion.errors import BadInput, LocalDiffusionError, one_of
from localdiffusion.infotext import IP_ADAPTER_PREFIX
from localdiffusion.models.controlnet import check_fits
from localdiffusion.models.info import ModelInfo
from localdiffusion.models.ip_adapter import find_adapter, image_encoder_folder
from localdiffusion.recipe import CONTROL_MODES, ControlUnit, Recipe, Reference
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
# The extension's IP-Adapter preprocessors that need only the CLIP image encoding (FaceID and PuLID ones need insightface).
IP_ADAPTER_MODULES = ["ip-adapter_clip_sd15", "ip-adapter_clip_sdxl", "ip-adapter_clip_sdxl_plus_vith", "ip-adapter-auto"]


# --- units in a generation request -------------------------------------------------------------


def controlnet_args(alwayson_scripts: dict[str, Any] | None) -> list[Any]:
    """The ControlNet script's args; A1111 finds an always-on script by its title, in any case."""
    for name, script in (alwayson_scripts or {}).items():
        if name.lower() == "controlnet" and isinstance(script, dict):
            return list(script.get("args") or [])
    return []


def with_controls(recipe: Recipe, alwayson_scripts: dict[str, Any] | None, studio: Studio, model: ModelInfo) -> Recipe:
    """The recipe with the request's enabled units: ControlNet units with their maps prepared and models
    picked and checked, and IP-Adapter units as references."""
    enabled = [(i, arg) for i, arg in enumerate(controlnet_args(alwayson_scripts))
               if not isinstance(arg, dict) or arg.get("enabled", True)]
    adapters = [(i, arg) for i, arg in enabled if is_ip_adapter_unit(arg)]
    controls = [(i, arg) for i, arg in enabled if not is_ip_adapter_unit(arg)]
    if adapters:
        recipe = recipe.model_copy(update={"references": [reference(i, arg, studio, model) for i, arg in adapters]})
    if not controls:
        return recipe
    units = [control_unit(i, arg, studio) for i, arg in controls]
    indexes = [i for i, _ in controls]
    try:
        ready = prepare_controls(recipe.model_copy(update={"controls": units}), studio.home.root, studio.library)
    except LocalDiffusionError as e:
        raise _naming_unit(e, "controls", indexes) from None
    for i, unit in zip(indexes, ready.controls):
        check_fits(studio.library.get(unit.model, kind="controlnet"), model, field=f"{_where(i)}.model")
    return ready


def _where(index: int) -> str:
    return f"alwayson_scripts.controlnet.args.{index}"


def _naming_unit(error: LocalDiffusionError, prefix: str, indexes: list[int]) -> LocalDiffusionError:
    """The error with its recipe field (`controls.N.model`) renamed to the request's unit (`...args.M.model`)."""
    found = re.fullmatch(rf"{prefix}\.(\d+)\.(\w+)", error.field or "")
    if found and int(found[1]) < len(indexes):
        error.field = f"{_where(indexes[int(found[1])])}.{found[2]}"
    return error


def is_ip_adapter_unit(arg: Any) -> bool:
    return isinstance(arg, dict) and str(arg.get("module") or "").lower().startswith(IP_ADAPTER_PREFIX)


def reference(index: int, arg: dict[str, Any], studio: Studio, checkpoint: ModelInfo) -> Reference:
    """An IP-Adapter unit as a reference: its picture kept as an input, its weight as the scale and its
    adapter by library name, checked (fit, image encoder) as the studio checks a job's references."""
    where = _where(index)
    module = str(arg["module"])
    if module.lower() not in IP_ADAPTER_MODULES:
        raise BadInput(f"The IP-Adapter module '{module}' needs face embeddings that Local Diffusion does not compute; "
                       f"use one of {one_of(IP_ADAPTER_MODULES)}.", field=f"{where}.module")
    picture = unit_picture(index, arg)
    weight = arg.get("weight")
    try:
        scale = Reference(scale=1.0 if weight is None else weight).scale  # the extension's default weight is 1
    except ValidationError as e:
        raise BadInput(f"IP-Adapter unit {index} has weight {weight!r}, which is not allowed: {e.errors()[0]['msg']}.",
                       field=f"{where}.weight") from None
    name = model_name(index, arg.get("model"))
    try:
        if name:
            name = studio.library.get(name, kind="ipadapter").name  # 'ip-adapter_sd15 [hash]' names the file
        adapter, shape = find_adapter(index, name, checkpoint, studio.library)
        image_encoder_folder(adapter, shape, studio.home.root, field=f"references.{index}.model")
    except LocalDiffusionError as e:  # named for the studio's `references.N.model`, or not at all (the library's lookup)
        e.field = f"{where}.model" if not e.field or e.field.startswith("references.") else e.field
        raise
    return Reference(image=keep_input(studio.home.root, picture.convert("RGB")), scale=scale, model=name)


def unit_picture(index: int, arg: dict[str, Any]) -> Image.Image:
    """The unit's picture, from `image` (or the extension's older `input_image`), base64."""
    where = _where(index)
    image = arg.get("image", arg.get("input_image"))
    if isinstance(image, dict):  # {"image": ..., "mask": ...}
        image = image.get("image")
    if not image:
        raise BadInput(f"ControlNet unit {index} has no image; send it as base64 in 'image'.", field=f"{where}.image")
    return image_from_base64(image, f"{where}.image", f"ControlNet unit {index} image")


def control_unit(index: int, arg: Any, studio: Studio) -> ControlUnit:
    where = _where(index)
    if not isinstance(arg, dict):
        raise BadInput(f"ControlNet unit {index} is not an object; send each unit as a JSON object with image, module, model and weight.", field=where)
    picture = unit_picture(index, arg)
    fields: dict[str, Any] = {k: arg[k] for k in UNIT_FIELDS if arg.get(k) is not None}
    if arg.get("guidance") is not None and "guidance_end" not in fields:  # the extension's old name
        fields["guidance_end"] = arg["guidance"]
    if isinstance(arg.get("processor_res"), (int, float)) and arg["processor_res"] > 0:  # -1: the default
        fields["processor_res"] = arg["processor_res"]
    if arg.get("pixel_perfect") is not None:
        fields["pixel_perfect"] = arg["pixel_perfect"]
    module, model = module_name(index, str(arg.get("module") or "none")), model_name(index, arg.get("model"))
    mode = resize_mode(index, arg.get("resize_mode", 1))
    try:
        unit = ControlUnit(module=module, model=model, resize_mode=mode, control_mode=control_mode(index, arg.get("control_mode")), **fields)
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
    raise BadInput(f"The ControlNet module '{module}' is not available; choose one of {one_of([*MODULES, *IP_ADAPTER_MODULES])}.",
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


def control_mode(index: int, value: Any) -> str:
    """The extension's control mode by name, or by its index 0-2 (its older API); absent: Balanced."""
    if value is None:
        return "Balanced"
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(CONTROL_MODES):
        return CONTROL_MODES[value]
    if str(value) not in CONTROL_MODES:
        raise BadInput(f"The control mode {value!r} is unknown; use one of {one_of(list(CONTROL_MODES))} (or 0, 1, 2).",
                       field=f"{_where(index)}.control_mode")
    return str(value)


# --- the extension's lists ---------------------------------------------------------------------


@router.get("/version")
def version() -> dict[str, int]:
    return {"version": 2}


@router.get("/model_list")
def model_list(request: Request, update: bool = True) -> dict[str, list[str]]:
    """The installed ControlNets and IP-Adapters by A1111 title, 'name [hash]' (the extension's 8-digit hash)."""
    library = get_studio(request).library
    if update:
        library.rescan()
    models = sorted([*library.list("controlnet"), *library.list("ipadapter")], key=lambda m: m.name.lower())
    return {"model_list": [f"{m.name} [{library.ensure_hash(m).short_hash}]" for m in models]}


@router.get("/module_list")
def module_list(alias_names: bool = False) -> dict[str, Any]:
    modules = [*MODULES, *IP_ADAPTER_MODULES]
    return {"module_list": modules, "module_detail": {m: {"model_free": False, "sliders": []} for m in modules}}


@router.get("/settings")
def settings() -> dict[str, int]:
    return {"control_net_unit_count": 3}
