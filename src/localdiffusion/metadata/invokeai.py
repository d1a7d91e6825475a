"""InvokeAI, three generations of metadata:

- 3.x and later: an `invokeai_metadata` JSON chunk;
- 2.x: an `sd-metadata` JSON chunk (usually beside a `Dream` string);
- 1.x and older: only the `Dream` command line, `"prompt [negative]" -s 50 -S 42 -W 512 ...`.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from localdiffusion.metadata._util import as_text, load_json_object, split_bracket_negative, to_float, to_int
from localdiffusion.metadata.container import Container
from localdiffusion.metadata.samplers import from_invoke
from localdiffusion.metadata.types import ImageMetadata

_RAND_DEVICE = {"cpu": "cpu", "cuda": "device", "mps": "device"}
_FLAG = re.compile(r"^--?[A-Za-z]")
# Dream switches -> (Recipe field, converter); any other switch goes to `extra` by its name.
_DREAM_SWITCHES = {
    "s": ("steps", to_int), "steps": ("steps", to_int),
    "S": ("seed", to_int), "seed": ("seed", to_int),
    "W": ("width", to_int), "width": ("width", to_int),
    "H": ("height", to_int), "height": ("height", to_int),
    "C": ("cfg_scale", to_float), "cfg_scale": ("cfg_scale", to_float),
    "f": ("denoising_strength", to_float), "strength": ("denoising_strength", to_float),
}


def read(c: Container) -> ImageMetadata | None:
    if (data := load_json_object(c.texts.get("invokeai_metadata"))) is not None:
        return from_invoke3(data)
    if (data := load_json_object(c.texts.get("sd-metadata"))) is not None:
        return from_sd_metadata(data)
    if c.texts.get("Dream"):
        return from_dream(c.texts["Dream"])
    return None


def from_invoke3(data: dict[str, Any]) -> ImageMetadata:
    fields: dict[str, Any] = {}
    used = {"positive_prompt", "negative_prompt", "model"}
    for key, field in (("positive_prompt", "prompt"), ("negative_prompt", "negative_prompt")):
        if isinstance(data.get(key), str):
            fields[field] = data[key]
    for key, field, convert in (("width", "width", to_int), ("height", "height", to_int), ("seed", "seed", to_int),
                                ("cfg_scale", "cfg_scale", to_float), ("steps", "steps", to_int),
                                ("clip_skip", "clip_skip", to_int), ("strength", "denoising_strength", to_float)):
        value = convert(data.get(key))
        if value is not None:
            fields[field] = value
            used.add(key)
    if data.get("rand_device") in _RAND_DEVICE:
        fields["rng"] = _RAND_DEVICE[data["rand_device"]]
        used.add("rand_device")
    fields.update(from_invoke(data.get("scheduler")))
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    return ImageMetadata(
        source="invokeai",
        fields=fields,
        model_name=model.get("model_name") or model.get("name"),
        model_hash=model.get("hash"),
        extra={k: as_text(v) for k, v in data.items() if k not in used},
    )


def from_sd_metadata(data: dict[str, Any]) -> ImageMetadata:
    image = data.get("image") if isinstance(data.get("image"), dict) else {}
    fields = _prompt_fields(image.get("prompt"))
    for key, field, convert in (("steps", "steps", to_int), ("cfg_scale", "cfg_scale", to_float), ("seed", "seed", to_int),
                                ("width", "width", to_int), ("height", "height", to_int)):
        value = convert(image.get(key))
        if value is not None:
            fields[field] = value
    if image.get("type") == "img2img" and to_float(image.get("strength")) is not None:
        fields["denoising_strength"] = to_float(image["strength"])
    fields.update(from_invoke(image.get("sampler")))
    extra = {k: as_text(v) for k, v in data.items() if k not in ("image", "model_weights", "model_hash")}
    extra.update({k: as_text(v) for k, v in image.items() if k not in ("prompt", "steps", "cfg_scale", "seed", "width", "height")})
    return ImageMetadata(
        source="invokeai", fields=fields, model_name=data.get("model_weights"), model_hash=data.get("model_hash"), extra=extra
    )


def _prompt_fields(prompt: Any) -> dict[str, Any]:
    """InvokeAI 2 stores `[{"prompt": "...", "weight": 1.0}]` (or a plain string) with `[negative]` inline."""
    if isinstance(prompt, list):
        texts = [p["prompt"] for p in prompt if isinstance(p, dict) and isinstance(p.get("prompt"), str)]
        prompt = " ".join(texts) if texts else None
    if not isinstance(prompt, str):
        return {}
    positive, negative = split_bracket_negative(prompt)
    return {"prompt": positive, "negative_prompt": negative} if negative else {"prompt": positive}


def from_dream(text: str) -> ImageMetadata:
    try:
        tokens = shlex.split(text)
    except ValueError:
        tokens = text.split()
    prompt_words, switches = _split_switches(tokens)
    fields = _prompt_fields(" ".join(prompt_words))
    extra: dict[str, str] = {}
    for name, values in switches.items():
        if name in _DREAM_SWITCHES and len(values) == 1:
            field, convert = _DREAM_SWITCHES[name]
            value = convert(values[0])
            if value is not None:
                fields[field] = value
                continue
        if name in ("A", "sampler"):
            fields.update(from_invoke(values[0] if values else None))
            extra["sampler"] = " ".join(values)
            continue
        extra[name] = " ".join(values)
    return ImageMetadata(source="invokeai", fields=fields, extra=extra)


def _split_switches(tokens: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    prompt: list[str] = []
    switches: dict[str, list[str]] = {}
    current: list[str] | None = None
    for token in tokens:
        if _FLAG.match(token):
            current = switches.setdefault(token.lstrip("-"), [])
        elif current is None:
            prompt.append(token)
        else:
            current.append(token)
    return prompt, switches
