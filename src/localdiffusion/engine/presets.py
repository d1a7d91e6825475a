"""The "fast" preset: recognise few-step models and propose the settings their model cards publish.

Distilled models make an image in 1-8 steps with little or no guidance, but only with their own settings; at
A1111's defaults (20 steps, CFG 7) they burn the picture. A model is recognised from its name (the file or
folder name, as the library lists it) and, for a .safetensors file, from the titles in its `__metadata__`
(`modelspec.title`, `ss_output_name`, `name`); a diffusers folder also from its scheduler (`LCMScheduler`).

| kind        | steps              | CFG | sampler | schedule    | model card                                        |
| ----------- | ------------------ | --- | ------- | ----------- | ------------------------------------------------- |
| SD-Turbo    | 1 (1-4)            | 1   | Euler a | SGM Uniform | stabilityai/sd-turbo: 1 step, guidance 0          |
| SDXL-Turbo  | 1 (1-4)            | 1   | Euler a | SGM Uniform | stabilityai/sdxl-turbo: 1 step, guidance 0        |
| Turbo merge | 4                  | 1.5 | Euler a | SGM Uniform | community "turbo" merges: 4-8 steps, CFG 1-2      |
| LCM         | 4 (4-8)            | 1.5 | LCM     | Automatic   | latent-consistency/lcm-*: 4-8 steps, guidance 1-2 |
| Hyper-SD    | from the name (8)  | 1   | Euler   | SGM Uniform | ByteDance/Hyper-SD: 1/2/4/8-step LoRAs            |
| Lightning   | from the name (4)  | 1   | Euler   | SGM Uniform | ByteDance/SDXL-Lightning: Euler, sgm_uniform      |

CFG 1 means no guidance in A1111's sampling (the negative prompt is not run), which is what guidance 0 means in
diffusers. Hyper-SD's "CFG" LoRAs keep guidance: CFG 5.

The preset is a proposal: the CLI applies it only with `--preset fast`, and then only to the settings the
command line did not give; the studio shows it as a suggestion that the person applies with one click.
Nothing here changes a recipe by itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from localdiffusion.errors import BadInput, LocalDiffusionError, one_of
from localdiffusion.models.detect import _safetensors_header
from localdiffusion.models.info import ModelInfo

PRESETS = ("fast",)
PRESET_FIELDS = ("steps", "cfg_scale", "sampler_name", "scheduler")  # the recipe fields a preset sets
METADATA_TITLES = ("modelspec.title", "ss_output_name", "name")  # the __metadata__ entries that name a model


@dataclass(frozen=True)
class FastPreset:
    """What a few-step model wants: its kind, the settings, and what gave it away."""

    kind: str  # "SD-Turbo", "SDXL-Turbo", "Turbo", "LCM", "Hyper-SD", "Lightning"
    steps: int
    cfg_scale: float
    sampler_name: str
    scheduler: str
    model: str = ""  # the model (checkpoint or LoRA) it was recognised in
    found_in: str = ""  # "name", "metadata" or "scheduler"
    values: dict[str, Any] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", {name: getattr(self, name) for name in PRESET_FIELDS})

    def json(self) -> dict[str, Any]:
        return {"name": "fast", "kind": self.kind, "model": self.model, "found_in": self.found_in, "values": dict(self.values)}


def _steps_in(text: str, default: int) -> int:
    """'Hyper-SDXL-8steps-lora' -> 8; the default when the name gives none."""
    match = re.search(r"(\d+)[-_ ]?steps?", text)
    return int(match.group(1)) if match and 1 <= int(match.group(1)) <= 16 else default


def _token(word: str, text: str) -> bool:
    return re.search(rf"(?<![a-z]){word}(?![a-z])", text) is not None


def preset_for_text(text: str) -> FastPreset | None:
    """The preset a model name (or title) calls for, or None for an ordinary model."""
    t = text.lower().replace(" ", "-")
    if "hyper-sd" in t or "hypersd" in t or "hyper_sd" in t:
        cfg = 5.0 if _token("cfg", t) else 1.0
        return FastPreset("Hyper-SD", _steps_in(t, 8), cfg, "Euler", "SGM Uniform")
    if "lightning" in t:
        return FastPreset("Lightning", _steps_in(t, 4), 1.0, "Euler", "SGM Uniform")
    if _token("lcm", t):
        return FastPreset("LCM", _steps_in(t, 4), 1.5, "LCM", "Automatic")
    if re.search(r"sdxl[-_]?turbo", t):
        return FastPreset("SDXL-Turbo", 1, 1.0, "Euler a", "SGM Uniform")
    if re.search(r"(?<![a-z])sd[-_]?(2\.1[-_]?)?turbo", t):
        return FastPreset("SD-Turbo", 1, 1.0, "Euler a", "SGM Uniform")
    if "turbo" in t:
        return FastPreset("Turbo", 4, 1.5, "Euler a", "SGM Uniform")
    return None


@lru_cache(maxsize=512)
def _titles(path: str, stamp: tuple[int, int]) -> tuple[tuple[str, str], ...]:
    """The naming entries of a model's own description: a .safetensors file's `__metadata__` titles, a diffusers
    folder's scheduler class. Cached by path and (size, mtime)."""
    p = Path(path)
    found: list[tuple[str, str]] = []
    if p.is_dir():
        for name in ("scheduler/scheduler_config.json", "model_index.json"):
            try:
                config = json.loads((p / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            scheduler = config.get("_class_name") if name.startswith("scheduler") else (config.get("scheduler") or [None, None])[-1]
            if isinstance(scheduler, str) and scheduler.startswith("LCM"):
                found.append(("scheduler", "lcm"))
        return tuple(found)
    if p.suffix.lower() != ".safetensors":
        return ()
    try:
        metadata = _safetensors_header(p).get("__metadata__") or {}
    except LocalDiffusionError:
        return ()
    if isinstance(metadata, dict):
        found += [("metadata", str(metadata[k])) for k in METADATA_TITLES if isinstance(metadata.get(k), str)]
    return tuple(found)


def detect_preset(info: ModelInfo) -> FastPreset | None:
    """The fast preset a checkpoint or LoRA calls for, from its name, then its metadata; None for other models."""
    try:
        stat = Path(info.path).stat()
        stamp = (stat.st_size, int(stat.st_mtime_ns))
    except OSError:
        stamp = (0, 0)
    candidates = [("name", info.name), ("name", Path(info.path).name), *_titles(str(info.path), stamp)]
    for found_in, text in candidates:
        preset = preset_for_text(text)
        if preset is not None:
            return FastPreset(preset.kind, preset.steps, preset.cfg_scale, preset.sampler_name, preset.scheduler,
                              model=info.name, found_in=found_in)
    return None


def recipe_preset(recipe: Any, library: Any) -> FastPreset | None:
    """The fast preset a recipe's models call for: its checkpoint's, else that of the first LoRA its prompt
    names (`<lora:lcm-lora-sdv1-5:1>`) that is one. None when neither is a few-step model or cannot be found."""
    from localdiffusion.prompts import extract_loras

    try:
        preset = detect_preset(library.get(recipe.model, kind="checkpoint"))
    except LocalDiffusionError:
        preset = None
    if preset is not None:
        return preset
    try:
        loras = extract_loras(recipe.prompt)[1]
    except (LocalDiffusionError, ValueError, IndexError):
        return None
    for lora in loras:
        try:
            preset = detect_preset(library.get(lora.name, kind="lora"))
        except (LocalDiffusionError, AttributeError):
            continue
        if preset is not None:
            return preset
    return None


def check_preset(name: str) -> str:
    if name not in PRESETS:
        raise BadInput(f"Unknown preset '{name}'; use {one_of(list(PRESETS))}.", field="preset")
    return name


def apply_preset(values: dict[str, Any], preset: FastPreset, given: set[str] | frozenset[str]) -> dict[str, Any]:
    """The preset's settings for the fields not in `given` (those the person set stay theirs): the changes."""
    return {name: value for name, value in preset.values.items() if name not in given and values.get(name) != value}
