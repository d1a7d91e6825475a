"""NovelAI: prompt in `Description`, settings as JSON in `Comment`, model and hash in `Source`."""

from __future__ import annotations

from typing import Any

from localdiffusion.metadata._util import as_text, load_json_object, to_float, to_int
from localdiffusion.metadata.container import Container
from localdiffusion.metadata.samplers import NOVELAI_SCHEDULES, from_k_name
from localdiffusion.metadata.types import ImageMetadata


def read(c: Container) -> ImageMetadata | None:
    comment = load_json_object(c.texts.get("Comment"))
    if c.texts.get("Software") != "NovelAI" and not (comment and {"uc", "scale"} <= comment.keys()):
        return None
    comment = comment or {}
    fields = _fields(comment, c.texts.get("Description"))
    name, model_hash = _split_source(c.texts.get("Source"))
    used = {"prompt", "uc", "steps", "scale", "seed", "width", "height"}
    extra = {k: as_text(v) for k, v in comment.items() if k not in used}
    extra.update({k: c.texts[k] for k in ("Title", "Software") if k in c.texts})
    return ImageMetadata(source="novelai", fields=fields, model_name=name, model_hash=model_hash, extra=extra)


def _fields(comment: dict[str, Any], description: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    prompt = comment.get("prompt") if isinstance(comment.get("prompt"), str) else description
    if prompt is not None:
        fields["prompt"] = prompt
    if isinstance(comment.get("uc"), str):
        fields["negative_prompt"] = comment["uc"]
    for key, field, convert in (("steps", "steps", to_int), ("scale", "cfg_scale", to_float), ("seed", "seed", to_int),
                                ("width", "width", to_int), ("height", "height", to_int)):
        value = convert(comment.get(key))
        if value is not None:
            fields[field] = value
    fields.update(from_k_name(comment.get("sampler")))
    schedule = NOVELAI_SCHEDULES.get(str(comment.get("noise_schedule")))
    if schedule:
        fields["scheduler"] = schedule
    return fields


def _split_source(source: str | None) -> tuple[str | None, str | None]:
    """'Stable Diffusion 1D44365E' -> ('Stable Diffusion', '1D44365E')."""
    if not source:
        return None, None
    name, _, last = source.rpartition(" ")
    if name and len(last) == 8 and all(ch in "0123456789abcdefABCDEF" for ch in last):
        return name, last
    return source, None
