"""Compare axes: `field=values` text as A1111's X/Y/Z plot reads it, and how a value changes a Recipe.

Value syntax (a port of A1111's `scripts/xyz_grid.py`, `process_axis`):
- a comma list, read as CSV so that `"a, b",c` holds two values;
- integer fields: `1-5` (1..5), `1-10 (+2)` (1,3,5,7,9), `1-10 [5]` (5 values spread evenly, truncated);
- float fields: `0-1 (+0.25)`, `0-1 [5]`, `1-3` (step 1, end included);
- `seed=-1` stays -1 here; `compare` resolves it once, so the grid can be reproduced.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from pydantic import ValidationError

from localdiffusion.errors import BadInput
from localdiffusion.infotext import number
from localdiffusion.recipe import Recipe

# A1111's patterns, kept as they are (the unescaped `.` included) so ranges parse exactly as there.
RANGE = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
RANGE_FLOAT = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*")
RANGE_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*])?\s*")
RANGE_COUNT_FLOAT = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*")

MAX_VALUES = 100  # per axis; a typo such as 1-10000 should not start a night-long run


@dataclass(frozen=True)
class FieldKind:
    label: str
    type: str  # "int", "float", "str" or "size"


FIELDS: dict[str, FieldKind] = {
    "seed": FieldKind("Seed", "int"),
    "steps": FieldKind("Steps", "int"),
    "cfg_scale": FieldKind("CFG scale", "float"),
    "sampler_name": FieldKind("Sampler", "str"),
    "scheduler": FieldKind("Schedule type", "str"),
    "denoising_strength": FieldKind("Denoising strength", "float"),
    "clip_skip": FieldKind("Clip skip", "int"),
    "width": FieldKind("Width", "int"),
    "height": FieldKind("Height", "int"),
    "size": FieldKind("Size", "size"),
    "model": FieldKind("Model", "str"),
    "prompt_sr": FieldKind("Prompt S/R", "str"),
    "control_weight": FieldKind("ControlNet weight", "float"),
}

# Other spellings people use: A1111's axis labels, the CLI's flag names.
ALIASES = {
    "cfg": "cfg_scale", "cfg scale": "cfg_scale", "sampler": "sampler_name", "schedule type": "scheduler",
    "denoise": "denoising_strength", "denoising": "denoising_strength", "clip skip": "clip_skip",
    "checkpoint": "model", "checkpoint name": "model", "prompt s/r": "prompt_sr", "s/r": "prompt_sr", "sr": "prompt_sr",
    "controlnet weight": "control_weight", "[controlnet] weight": "control_weight", "control weight": "control_weight",
}


@dataclass(frozen=True)
class Axis:
    """One axis of a comparison: which field it varies and its values, in order."""

    field: str  # a key of FIELDS, or "lora:NAME"
    values: tuple[Any, ...]
    text: str = ""  # as the user wrote it

    @property
    def label(self) -> str:
        if self.field.startswith("lora:"):
            return f"LoRA {self.lora_name} weight"
        return FIELDS[self.field].label

    @property
    def lora_name(self) -> str:
        return self.field.removeprefix("lora:")

    def value_label(self, value: Any) -> str:
        if isinstance(value, tuple):
            return f"{value[0]}x{value[1]}"
        if isinstance(value, float):
            return number(round(value, 8))
        return str(value)


def parse_axis(text: str, name: str = "X") -> Axis:
    """`field=values` into an Axis; a bad field or value raises BadInput naming axis `name`."""
    key, sep, values_text = text.partition("=")
    if not sep or not values_text.strip():
        raise BadInput(f"The {name} axis '{text}' is not field=values; write it like cfg_scale=3,7,12.", field=name.lower())
    field = _field(key.strip(), name)
    kind = "float" if field.startswith("lora:") else FIELDS[field].type
    items = [v for v in _csv(values_text) if v != ""]
    values: list[Any] = []
    for item in items:
        values.extend(_expand(item, kind, name, field))
    if not values:
        raise BadInput(f"The {name} axis '{text}' has no values; give a comma list such as 1,2,3.", field=name.lower())
    if len(values) > MAX_VALUES:
        raise BadInput(f"The {name} axis '{text}' gives {len(values)} values; at most {MAX_VALUES} are allowed.", field=name.lower())
    return Axis(field, tuple(values), text)


def _field(key: str, name: str) -> str:
    lowered = key.lower()
    if lowered.startswith("lora:") and len(key) > len("lora:"):
        return "lora:" + key[len("lora:"):].strip()
    field = ALIASES.get(lowered, lowered)
    if field not in FIELDS:
        allowed = ", ".join([*FIELDS, "lora:NAME"])
        raise BadInput(f"The {name} axis field '{key}' cannot be compared; use one of {allowed}.", field=name.lower())
    return field


def _csv(text: str) -> list[str]:
    """A1111's `csv_string_to_list_strip`: CSV cells, stripped."""
    return [cell.strip() for row in csv.reader(io.StringIO(text)) for cell in row]


def _expand(item: str, kind: str, name: str, field: str) -> list[Any]:
    if kind in ("int", "float"):
        count = _range_length(item, kind)
        if count > MAX_VALUES:
            raise BadInput(f"The {name} axis range '{item}' gives {count} values; at most {MAX_VALUES} are allowed.",
                           field=name.lower())
    if kind == "int":
        return [_number(v, int, name, field) for v in _int_range(item)]
    if kind == "float":
        return [round(_number(v, float, name, field), 8) for v in _float_range(item)]
    if kind == "size":
        return [_size(item, name)]
    return [item]


def _range_length(item: str, kind: str) -> int:
    """How many values a range gives, computed without making them (a typo like 1-10000000000 must not hang)."""
    if (m := RANGE.fullmatch(item)) and kind == "int":
        start, end = int(m.group(1).replace(" ", "")), int(m.group(2).replace(" ", "")) + 1
        step = int(m.group(3)) if m.group(3) is not None else 1
        return len(range(start, end, step)) if step else 1
    if (m := RANGE_FLOAT.fullmatch(item)) and kind == "float":
        start, end = _float(m.group(1)), _float(m.group(2))
        step = _float(m.group(3)) if m.group(3) is not None else 1.0
        return max(0, int((end - start) / step) + 1) if start is not None and end is not None and step else 1
    counted = (RANGE_COUNT if kind == "int" else RANGE_COUNT_FLOAT).fullmatch(item)
    count = _float(counted.group(3) or "1") if counted else None
    return int(count) if count is not None else 1


def _int_range(item: str) -> list[Any]:
    if m := RANGE.fullmatch(item):
        start, end = int(m.group(1).replace(" ", "")), int(m.group(2).replace(" ", "")) + 1
        step = int(m.group(3)) if m.group(3) is not None else 1
        return list(range(start, end, step)) if step else [item]
    if m := RANGE_COUNT.fullmatch(item):
        start, end = int(m.group(1).replace(" ", "")), int(m.group(2).replace(" ", ""))
        count = int(m.group(3)) if m.group(3) is not None else 1
        return [int(v) for v in np.linspace(start, end, count).tolist()]
    return [item]


def _float_range(item: str) -> list[Any]:
    if m := RANGE_FLOAT.fullmatch(item):
        start, end = _float(m.group(1)), _float(m.group(2))
        step = _float(m.group(3)) if m.group(3) is not None else 1.0
        if start is None or end is None or not step:
            return [item]
        return np.arange(start, end + step, step).tolist()
    if m := RANGE_COUNT_FLOAT.fullmatch(item):
        start, end, count = _float(m.group(1)), _float(m.group(2)), _float(m.group(3) or "1")
        if start is None or end is None or count is None:
            return [item]
        return np.linspace(start, end, int(count)).tolist()
    return [item]


def _float(text: str) -> float | None:
    try:
        return float(text.replace(" ", ""))
    except ValueError:  # A1111's unescaped `.` lets e.g. `1x5` through the pattern
        return None


def _number(value: Any, cast: Callable[[Any], Any], name: str, field: str) -> Any:
    if not isinstance(value, str):
        return cast(value)
    try:
        return cast(value)
    except ValueError:
        what = "a whole number" if cast is int else "a number"
        raise BadInput(f"The {name} axis value '{value}' for {field} is not {what} or a range such as 1-10 (+2) or 1-10 [5].",
                       field=name.lower()) from None


def _size(item: str, name: str) -> tuple[int, int]:
    parts = item.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise BadInput(f"The {name} axis value '{item}' is not a size; write sizes like 512x512,768x512.", field=name.lower())
    return int(parts[0]), int(parts[1])


# --- applying a value to a Recipe ---

def apply(recipe: Recipe, axis: Axis, value: Any, name: str = "X") -> Recipe:
    """`recipe` with this axis set to `value`; a value the Recipe refuses raises BadInput naming the axis."""
    changes = _changes(recipe, axis, value, name)
    try:
        return Recipe.model_validate({**recipe.model_dump(), **changes})
    except ValidationError as e:
        reason = e.errors()[0]["msg"]
        raise BadInput(f"The {name} axis value '{axis.value_label(value)}' for {axis.field} is not allowed: {reason}.",
                       field=name.lower()) from None


def _changes(recipe: Recipe, axis: Axis, value: Any, name: str) -> dict[str, Any]:
    if axis.field == "size":
        return {"width": value[0], "height": value[1]}
    if axis.field == "prompt_sr":
        return prompt_sr(recipe, axis.values[0], value, name)
    if axis.field.startswith("lora:"):
        return lora_weight(recipe, axis.lora_name, value)
    if axis.field == "control_weight":
        return control_weight(recipe, value, name)
    return {axis.field: value}


def prompt_sr(recipe: Recipe, search: str, replacement: str, name: str = "X") -> dict[str, str]:
    """A1111's Prompt S/R: the axis' first value is searched and replaced in both prompts."""
    if search not in recipe.prompt and search not in recipe.negative_prompt:
        raise BadInput(f"The {name} axis Prompt S/R did not find '{search}' in the prompt or negative prompt; "
                       "its first value must be a phrase of the prompt.", field=name.lower())
    return {"prompt": recipe.prompt.replace(search, replacement),
            "negative_prompt": recipe.negative_prompt.replace(search, replacement)}


def control_weight(recipe: Recipe, weight: float, name: str = "X") -> dict[str, Any]:
    """Every ControlNet unit at `weight` (a recipe usually has one unit; several keep their balance only at 1)."""
    if not recipe.controls:
        raise BadInput(f"The {name} axis ControlNet weight needs a recipe with a ControlNet unit; add one with --control.",
                       field=name.lower())
    return {"controls": [unit.model_copy(update={"weight": weight}).model_dump() for unit in recipe.controls]}


def lora_weight(recipe: Recipe, lora: str, weight: float) -> dict[str, str]:
    """Set the weight of `<lora:NAME:w>` wherever the tag is; add the tag to the prompt when it is missing."""
    tag = re.compile(rf"<(lora|lyco):{re.escape(lora)}(:[^>]*)?>")

    def reweigh(match: re.Match) -> str:
        # Keep A1111's other arguments (the unet weight, `unet=`, `dyn=`); drop `te=`, which would override ours.
        args = [a for a in (match.group(2) or "").split(":")[1:] if not a.startswith("te=")]
        rest = args[1:] if args and "=" not in args[0] else args
        return ":".join([f"<{match.group(1)}", lora, number(weight), *rest]) + ">"

    prompt, found = tag.subn(reweigh, recipe.prompt)
    negative, found_negative = tag.subn(reweigh, recipe.negative_prompt)
    if not found and not found_negative:
        prompt = f"{prompt} <lora:{lora}:{number(weight)}>".strip()
    return {"prompt": prompt, "negative_prompt": negative}
