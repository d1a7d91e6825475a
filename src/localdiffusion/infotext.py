"""A Recipe as A1111 "infotext": the text A1111 stores in a PNG's `parameters` chunk.

    a photo of a cat
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, ...

The writer follows `create_infotext` in A1111's modules/processing.py (v1.10): its key names,
its key order, its quoting and its "only when it matters" rules. The parser is a port of
`parse_generation_parameters` in modules/infotext_utils.py (credit: AUTOMATIC1111,
AGPL-3.0; re-written here, not copied), except that it never fills in A1111's UI defaults:
what the text does not say stays absent.
"""

from __future__ import annotations

import json
import re
from typing import Any

from localdiffusion import __version__
from localdiffusion.errors import BadInput
from localdiffusion.recipe import INPAINTING_FILL, ControlUnit, Recipe, Reference

# The longest infotext read, in characters. A1111's are a few hundred; a longer one is refused with a
# sentence rather than parsed, so that no upload can keep the server busy with its text.
MAX_INFOTEXT = 64 * 1024
RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")

# A1111 sampler names (modules/sd_samplers_*.py) with their older aliases.
A1111_SAMPLERS = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
    "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
    "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM",
]
A1111_SAMPLER_ALIASES = {
    "k_dpmpp_2m": "DPM++ 2M", "k_dpmpp_sde": "DPM++ SDE", "k_dpmpp_2m_sde": "DPM++ 2M SDE",
    "k_dpmpp_2m_sde_heun": "DPM++ 2M SDE Heun", "k_dpmpp_2s_a": "DPM++ 2S a", "k_dpmpp_3m_sde": "DPM++ 3M SDE",
    "k_euler_a": "Euler a", "k_euler_ancestral": "Euler a", "k_euler": "Euler", "k_lms": "LMS", "k_heun": "Heun",
    "k_dpm_2": "DPM2", "k_dpm_2_a": "DPM2 a", "k_dpm_fast": "DPM fast", "k_dpm_ad": "DPM adaptive",
    "restart": "Restart", "ddim": "DDIM", "plms": "PLMS", "unipc": "UniPC", "lcm": "LCM",
}
# A1111 schedule types (modules/sd_schedulers.py): label -> internal name.
A1111_SCHEDULERS = {
    "Automatic": "automatic", "Uniform": "uniform", "Karras": "karras", "Exponential": "exponential",
    "Polyexponential": "polyexponential", "SGM Uniform": "sgm_uniform", "KL Optimal": "kl_optimal",
    "Align Your Steps": "align_your_steps", "Simple": "simple", "Normal": "normal", "DDIM": "ddim", "Beta": "beta",
}
_SCHEDULER_SUFFIXES = {**{label: label for label in A1111_SCHEDULERS}, **{n: label for label, n in A1111_SCHEDULERS.items()}, "SGMUniform": "SGM Uniform"}

_INT_FIELDS = {"Steps": "steps", "Seed": "seed", "Variation seed": "subseed", "Clip skip": "clip_skip",
               "Hires steps": "hr_second_pass_steps", "Mask blur": "mask_blur", "Masked area padding": "inpaint_full_res_padding"}
_FLOAT_FIELDS = {"CFG scale": "cfg_scale", "Distilled CFG Scale": "distilled_cfg_scale", "Variation seed strength": "subseed_strength", "Denoising strength": "denoising_strength",
                 "Hires upscale": "hr_scale", "Refiner switch at": "refiner_switch_at"}
_TEXT_FIELDS = {"Hires upscaler": "hr_upscaler", "Refiner": "refiner_checkpoint"}
_MASK_MODES = {"Inpaint masked": 0, "Inpaint not masked": 1}
_INPAINT_AREAS = {"Whole picture": False, "Only masked": True}
_RNG_NAMES = {"cpu": "CPU", "device": "GPU", "nv": "NV"}
_RNG_FIELDS = {name: rng for rng, name in _RNG_NAMES.items()}
# A1111 writes no RNG for its default source, GPU: on the NVIDIA cards nearly all of them come from, the NV
# source gives the same numbers, on any machine.
A1111_DEFAULT_RNG = "nv"
_FLAG_FIELDS = {"SGM noise multiplier": "sgm_noise_multiplier", "Pad conds": "pad_cond_uncond"}


def quote(value: Any) -> str:
    """A1111's `quote()`, plus `"`: a value that would confuse the parser is written as a JSON string."""
    text = str(value)
    if any(c in text for c in ',:"\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def number(value: float | int) -> str:
    """A number as A1111 shows it: `7` for 7.0, `7.5` for 7.5."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_infotext(recipe: Recipe, *, model_name: str | None, model_hash: str | None, extra: dict[str, str] | None = None,
                reference_modules: list[str] | None = None, sampler_params: dict[str, str] | None = None) -> str:
    """The A1111 infotext for `recipe`; `extra` adds keys such as `Lora hashes` before `Version`.
    `reference_modules` names each reference's image encoding as the ControlNet extension does (see `control_params`).
    `sampler_params` are what the sampler makes of A1111's options (`ENSD`, `Eta`, ...: engine/samplers.py
    `infotext_params`); ENSD goes where A1111 puts it, the others among its extra generation parameters."""
    sampler_params = dict(sampler_params or {})
    params = _generation_params(recipe, model_name=model_name, model_hash=model_hash, ensd=sampler_params.pop("ENSD", None))
    params.update(sampler_params)
    params.update(_mode_params(recipe))
    params.update(control_params(recipe.controls, recipe.references, reference_modules))
    params.update(extra or {})
    if recipe.refiner_checkpoint:
        params["Refiner"] = recipe.refiner_checkpoint
        params["Refiner switch at"] = number(recipe.refiner_switch_at)
    params["Version"] = f"localdiffusion {__version__}"
    line = ", ".join(f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    negative = f"\nNegative prompt: {recipe.negative_prompt}" if recipe.negative_prompt else ""
    return f"{recipe.prompt}{negative}\n{line}".strip()


def _generation_params(r: Recipe, *, model_name: str | None, model_hash: str | None, ensd: str | None = None) -> dict[str, str | None]:
    has_size = r.width is not None and r.height is not None
    varied = r.subseed_strength != 0
    return {
        "Steps": number(r.steps),
        "Sampler": r.sampler_name,
        "Schedule type": r.scheduler,
        "CFG scale": number(r.cfg_scale),
        # Forge's, for FLUX dev's guidance-distilled models (the engine records it only for those)
        "Distilled CFG Scale": number(r.distilled_cfg_scale) if r.distilled_cfg_scale is not None else None,
        "Seed": number(r.seed),
        "Size": f"{r.width}x{r.height}" if has_size else None,
        "Model hash": model_hash,
        "Model": model_name,
        "Variation seed": number(r.subseed) if varied else None,
        "Variation seed strength": number(r.subseed_strength) if varied else None,
        "Denoising strength": number(r.denoising_strength) if r.enable_hr or r.mode != "txt2img" else None,
        "Clip skip": number(r.clip_skip) if r.clip_skip > 1 else None,
        "ENSD": ensd,
        # A1111 leaves out its default (GPU); ours is CPU, so every source is written to stay unambiguous.
        "RNG": _RNG_NAMES[r.rng],
    }


def _mode_params(r: Recipe) -> dict[str, str | None]:
    """A1111's `extra_generation_params` for inpainting and hires fix, in the order A1111 adds them."""
    params: dict[str, str | None] = {}
    if r.mode in ("inpaint", "outpaint"):
        if r.inpainting_mask_invert:
            params["Mask mode"] = "Inpaint not masked"
        if r.mask_blur > 0:
            params["Mask blur"] = number(r.mask_blur)
        if r.inpaint_full_res:
            params["Inpaint area"] = "Only masked"
            params["Masked area padding"] = number(r.inpaint_full_res_padding)
        if r.inpainting_fill != 1:
            params["Masked content"] = INPAINTING_FILL[r.inpainting_fill]
    if r.enable_hr and r.mode == "txt2img":
        params["Hires upscale"] = number(r.hr_scale)
        if r.hr_second_pass_steps:
            params["Hires steps"] = number(r.hr_second_pass_steps)
        params["Hires upscaler"] = r.hr_upscaler
    return params


# The sd-webui-controlnet extension's infotext fields (`ControlNetUnit.infotext_fields()` in
# internal_controlnet/args.py), in its order.
CONTROL_FIELDS = ("module", "model", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b",
                  "guidance_start", "guidance_end", "pixel_perfect", "control_mode")
RE_CONTROL_KEY = re.compile(r"^ControlNet (\d+)$")
# The extension runs IP-Adapters as ControlNet units whose module (preprocessor) is the image encoding;
# this one (ViT-H) when the engine did not say.
IP_ADAPTER_PREFIX = "ip-adapter"
DEFAULT_REFERENCE_MODULE = "ip-adapter_clip_sd15"


def control_params(units: list[ControlUnit], references: list[Reference] | None = None,
                   reference_modules: list[str] | None = None) -> dict[str, str]:
    """`ControlNet 0: "Module: canny, Model: control_x [hash], Weight: 1.0, ..."`, as the extension writes it
    (its field names title-cased, values as Python prints them). References follow the units, as the
    extension records IP-Adapters: `Module: ip-adapter_clip_sd15, Model: ip-adapter_sd15 [hash], Weight: 0.5`."""
    modules = reference_modules or []
    as_units = [ControlUnit(module=modules[i] if i < len(modules) else DEFAULT_REFERENCE_MODULE, model=ref.model, weight=ref.scale)
                for i, ref in enumerate(references or [])]
    return {f"ControlNet {i}": serialize_control(unit) for i, unit in enumerate([*units, *as_units])}


def serialize_control(unit: ControlUnit) -> str:
    items = {_display(name): str(getattr(unit, name)) for name in CONTROL_FIELDS}
    return ", ".join(f"{key}: {value}" for key, value in items.items())


def parse_control(text: str) -> ControlUnit | None:
    """A unit from its infotext value (without image or map, which infotext cannot hold); None when malformed."""
    from pydantic import ValidationError

    fields: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition(": ")
        name = "_".join(key.lower().split())
        if sep and name in CONTROL_FIELDS:
            fields[name] = value.strip()
    if fields.get("model") == "None":
        fields.pop("model")
    try:
        return ControlUnit(**fields)
    except ValidationError:
        return None


def _display(field: str) -> str:
    return " ".join(word.capitalize() for word in field.split("_"))


def _read_controls(rest: dict[str, str], fields: dict[str, Any]) -> None:
    """ControlNet units into `controls`, and the IP-Adapter ones into `references` (without their pictures)."""
    from pydantic import ValidationError

    found = {int(m.group(1)): key for key in rest if (m := RE_CONTROL_KEY.match(key))}
    units: list[dict[str, Any]] = []
    references: list[dict[str, Any]] = []
    for index in sorted(found):
        unit = parse_control(rest[found[index]])
        if unit is None:
            continue
        if unit.module.startswith(IP_ADAPTER_PREFIX):
            try:
                references.append(Reference(model=unit.model, scale=unit.weight).model_dump(exclude_none=True))
            except ValidationError:
                continue  # a scale we cannot apply: the entry stays as it was written
        else:
            units.append(unit.model_dump(exclude_none=True))
        del rest[found[index]]
    if units:
        fields["controls"] = units
    if references:
        fields["references"] = references


# The character classes of A1111's `re_param` (see `param_pairs`): a key starts with a word character and
# goes on with word characters, spaces, '-' and '/'.
_WORD = re.compile(r"\w")
_KEY_RUN = re.compile(r"[\w \-/]*")
_SPACES = re.compile(r"\s*")


def param_pairs(line: str) -> list[tuple[str, str]]:
    """The (key, value as written) pairs of a parameter line, in order, exactly as A1111's `re_param`

        \\s*(\\w[\\w \\-/]+):\\s*("(?:\\\\.|[^\\\\"])+"|\\{[^{}]*\\}|[^,]*)(?:,|$)

    finds them with `findall`, with one addition: an unquoted JSON object (`Hashes: {"vae": "..."}`, written
    by Civitai and some extensions) is taken whole instead of being cut at its first comma.

    That regex backtracks: on a long run of key characters without a colon it tries every start in the
    run, each to the run's end, so its time grows with the square of the line (and Python's `re` holds
    the GIL all along). This scanner reads the line once: a key run that is not followed by a colon
    fails for every start inside it too, so the search jumps past it.
    """
    pairs: list[tuple[str, str]] = []
    start = 0
    while (word := _WORD.search(line, start)) is not None:
        key_start = word.start()
        key_end = _KEY_RUN.match(line, key_start).end()
        if key_end - key_start < 2 or line[key_end:key_end + 1] != ":":
            start = key_end  # any later start in this run ends at the same place, so it fails the same way
            continue
        value, start = _param_value(line, key_end + 1)
        pairs.append((line[key_start:key_end], value))
    return pairs


def _param_value(line: str, start: int) -> tuple[str, int]:
    """(the value after a key's colon, where the search for the next key goes on), in `re_param`'s order:
    a quoted string, a JSON object, else everything up to the next comma."""
    begin = _SPACES.match(line, start).end()
    first = line[begin:begin + 1]
    if first in ('"', "{"):
        close = _closing_quote(line, begin + 1) if first == '"' else _closing_brace(line, begin + 1)
        after = None if close is None else _after_value(line, close + 1)
        if after is not None:
            return line[begin:close + 1], after
    comma = line.find(",", begin)
    return (line[begin:], len(line)) if comma < 0 else (line[begin:comma], comma + 1)


def _closing_quote(line: str, start: int) -> int | None:
    """The quote that closes a quoted value whose text begins at `start` (`\\x` pairs skipped); None when
    there is none, the text is empty, or a backslash ends the line."""
    i = start
    while i < len(line):
        char = line[i]
        if char == '"':
            return i if i > start else None
        if char == "\\":
            if i + 1 >= len(line) or line[i + 1] == "\n":
                return None
            i += 2
        else:
            i += 1
    return None


def _closing_brace(line: str, start: int) -> int | None:
    """The '}' that closes a JSON object begun before `start`; None when another '{' or the end comes first."""
    i = start
    while i < len(line) and line[i] not in "{}":
        i += 1
    return i if i < len(line) and line[i] == "}" else None


def _after_value(line: str, end: int) -> int | None:
    """`(?:,|$)` after a value that ends before `end`: where the search goes on, or None when neither follows."""
    if line[end:end + 1] == ",":
        return end + 1
    if end == len(line) or (end == len(line) - 1 and line[end] == "\n"):
        return end
    return None


def check_length(text: str, what: str = "The infotext", field: str | None = None) -> str:
    """`text` when it is at most MAX_INFOTEXT characters long; a longer one is refused in one sentence."""
    if len(text) > MAX_INFOTEXT:
        raise too_long(what, f"{len(text):,} characters long", field)
    return text


def too_long(what: str, length: str, field: str | None = None) -> BadInput:
    return BadInput(f"{what} is {length}, above the limit of {MAX_INFOTEXT:,} characters that is read "
                    f"(A1111 writes a few hundred), so its settings are not read.", field=field)


TEMPLATE_KEYS = ("Template", "Negative Template")  # Dynamic Prompts' lines after the parameters


def with_templates(infotext: str, template: str, negative_template: str) -> str:
    """`infotext` with the wildcard templates its prompts were expanded from, on lines of their own after the
    parameters, as Dynamic Prompts' PngInfoSaver writes them (an empty template is left out)."""
    lines = [f"{key}: {_one_line(value)}" for key, value in zip(TEMPLATE_KEYS, (template, negative_template)) if value]
    return "\n".join([infotext, *lines])


def _one_line(value: str) -> str:
    """A template on one line: one with line breaks is JSON-quoted (as A1111 quotes values), so that the lines
    above it still read as prompt, negative prompt and parameters."""
    return json.dumps(value, ensure_ascii=False) if "\n" in value or value.startswith('"') else value


def _from_one_line(value: str) -> str:
    if value.startswith('"'):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def split_templates(text: str) -> tuple[str, dict[str, str]]:
    """(the infotext without them, {"Template": ..., "Negative Template": ...}) from Dynamic Prompts' last lines."""
    lines = text.strip().split("\n")
    found: dict[str, str] = {}
    while len(lines) > 1:
        key, sep, value = lines[-1].partition(": ")
        if not sep or key not in TEMPLATE_KEYS or key in found:
            break
        found[key] = _from_one_line(value)
        lines.pop()
    return "\n".join(lines), dict(reversed(found.items()))


def split_lines(text: str) -> tuple[str, str, str]:
    """(prompt, negative prompt, parameter line), as A1111 splits them; Dynamic Prompts' template lines after the
    parameters are left out (`split_templates`). A text longer than MAX_INFOTEXT characters raises BadInput."""
    *lines, last = split_templates(check_length(text))[0].split("\n")
    if len(param_pairs(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        line = line.strip()
        if not negative and line.startswith("Negative prompt:"):
            negative.append(line[len("Negative prompt:"):].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    return "\n".join(prompt), "\n".join(negative), last


def parse_params(line: str) -> dict[str, str]:
    """The `Key: value` pairs of an infotext parameter line, unquoted, in order."""
    return {k: unquote(v) if v.startswith('"') else v for k, v in param_pairs(check_length(line))}


def from_infotext(text: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(Recipe fields that the text states, the other key/values as written: Model, Lora hashes, ...)."""
    prompt, negative, line = split_lines(text)
    fields: dict[str, Any] = {"prompt": prompt}
    if negative:
        fields["negative_prompt"] = negative
    rest: dict[str, str] = split_templates(check_length(text))[1]
    params = parse_params(line)
    for key, value in params.items():
        if not _read_param(key, value, fields):
            rest[key] = value
    if "RNG" not in params and params:
        fields["rng"] = A1111_DEFAULT_RNG
    _read_sampler(fields, rest)
    _read_controls(rest, fields)
    return fields, rest


def _read_param(key: str, value: str, fields: dict[str, Any]) -> bool:
    """Put one A1111 key into `fields`; False when it is not a Recipe field (or does not parse)."""
    try:
        if key in _INT_FIELDS:
            fields[_INT_FIELDS[key]] = int(value)
        elif key in _FLOAT_FIELDS:
            fields[_FLOAT_FIELDS[key]] = float(value)
        elif key in _TEXT_FIELDS:
            fields[_TEXT_FIELDS[key]] = value
        elif key == "Size" and RE_IMAGESIZE.match(value):
            fields["width"], fields["height"] = (int(v) for v in value.split("x"))
        elif key == "Masked content" and value in INPAINTING_FILL.values():
            fields["inpainting_fill"] = next(k for k, v in INPAINTING_FILL.items() if v == value)
        elif key == "Inpaint area" and value in _INPAINT_AREAS:
            fields["inpaint_full_res"] = _INPAINT_AREAS[value]
        elif key == "Mask mode" and value in _MASK_MODES:
            fields["inpainting_mask_invert"] = _MASK_MODES[value]
        elif key == "RNG" and value in _RNG_FIELDS:
            fields["rng"] = _RNG_FIELDS[value]
        elif key == "ENSD":
            fields["eta_noise_seed_delta"] = int(value)
        elif key in ("Eta", "Eta DDIM"):
            fields["eta"] = float(value)
        elif key in _FLAG_FIELDS and value in ("True", "False"):
            fields[_FLAG_FIELDS[key]] = value == "True"
        else:
            return False
    except ValueError:
        return False
    if key in ("Hires upscale", "Hires upscaler", "Hires steps"):
        fields["enable_hr"] = True
    return True


def _read_sampler(fields: dict[str, Any], rest: dict[str, str]) -> None:
    sampler = rest.pop("Sampler", None)
    schedule = rest.pop("Schedule type", None)
    if schedule is not None:
        fields["scheduler"] = _SCHEDULER_SUFFIXES.get(schedule, schedule)
    if sampler is not None:
        name, suffix = split_sampler_name(sampler)
        fields["sampler_name"] = name
        if suffix:
            fields["scheduler"] = suffix


def split_sampler_name(name: str) -> tuple[str, str | None]:
    """'DPM++ 2M Karras' -> ('DPM++ 2M', 'Karras'): A1111 before v1.9 named sampler and schedule together.

    Like A1111's `get_sampler_and_scheduler(..., convert_automatic=False)`, the schedule stays
    explicit even when it is the sampler's default.
    """
    name = A1111_SAMPLER_ALIASES.get(name, name)
    # Longest first, so that 'SGM Uniform' is not read as 'Uniform'.
    for suffix, label in sorted(_SCHEDULER_SUFFIXES.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(" " + suffix) and label != "Automatic":
            base = name[: -len(suffix) - 1]
            return A1111_SAMPLER_ALIASES.get(base, base), label
    return name, None


def recipe_from_infotext(text: str) -> Recipe:
    fields, _ = from_infotext(text)
    return Recipe(**fields)
