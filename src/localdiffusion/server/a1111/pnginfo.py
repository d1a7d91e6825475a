"""png-info: the generation settings stored in an image, as A1111 reports them."""

from __future__ import annotations

from typing import Any

from localdiffusion.errors import BadInput
from localdiffusion.infotext import RE_IMAGESIZE, parse_params, split_lines, split_sampler_name, to_infotext
from localdiffusion.metadata import read_image_metadata
from localdiffusion.server.a1111.images import bytes_from_base64, checked_image


def read_png_info(image_base64: str) -> dict[str, Any]:
    """The image's A1111 infotext, its other stored texts, and the infotext's parsed fields."""
    data = bytes_from_base64(image_base64, "image", "image")
    checked_image(data, "image", "image")
    try:  # texts beyond the infotext limit are refused, not parsed
        info, items = _image_infotext(data)
        return {"info": info, "items": items, "parameters": parse_generation_parameters(info)}
    except BadInput as e:
        raise BadInput(e.message, field="image") from None


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
