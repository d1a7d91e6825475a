"""Fooocus: a JSON `parameters` chunk with `fooocus_scheme` = 'fooocus', or A1111 infotext when the
scheme is 'a1111'."""

from __future__ import annotations

import re
from typing import Any

from localdiffusion.metadata import a1111
from localdiffusion.metadata._util import as_text, load_json_object, to_float, to_int
from localdiffusion.metadata.container import Container
from localdiffusion.metadata.samplers import from_comfy
from localdiffusion.metadata.types import ImageMetadata

_FOOOCUS_KEYS = {"base_model", "guidance_scale", "sharpness", "performance", "metadata_scheme"}
_RESOLUTION = re.compile(r"^\(?\s*(\d+)\s*,\s*(\d+)\s*\)?$")


def read(c: Container) -> ImageMetadata | None:
    params = c.texts.get("parameters")
    scheme = c.texts.get("fooocus_scheme")
    if not params:
        return None
    if scheme == "a1111":
        meta = a1111.from_text(params)
        meta.source = "fooocus"
        return meta
    data = load_json_object(params)
    if data is None or not (scheme == "fooocus" or _FOOOCUS_KEYS & data.keys()):
        return None
    return from_json(data)


def from_json(data: dict[str, Any]) -> ImageMetadata:
    fields: dict[str, Any] = {}
    used = {"base_model", "base_model_hash"}

    def take(key: str, field: str, convert) -> None:
        value = convert(data.get(key))
        if value is not None:
            fields[field] = value
            used.add(key)

    take("prompt", "prompt", lambda v: v if isinstance(v, str) else None)
    take("negative_prompt", "negative_prompt", lambda v: v if isinstance(v, str) else None)
    take("steps", "steps", to_int)
    take("guidance_scale", "cfg_scale", to_float)
    take("seed", "seed", to_int)
    take("clip_skip", "clip_skip", to_int)
    fields.update(from_comfy(data.get("sampler"), data.get("scheduler")))
    size = _RESOLUTION.match(str(data.get("resolution", "")))
    if size:
        fields["width"], fields["height"] = int(size.group(1)), int(size.group(2))
        used.add("resolution")
    refiner = data.get("refiner_model")
    if isinstance(refiner, str) and refiner not in ("", "None"):
        fields["refiner_checkpoint"] = refiner
        used.add("refiner_model")
        take("refiner_switch", "refiner_switch_at", to_float)
    return ImageMetadata(
        source="fooocus",
        fields=fields,
        model_name=data.get("base_model"),
        model_hash=data.get("base_model_hash"),
        extra={k: as_text(v) for k, v in data.items() if k not in used},
    )
