"""The one recipe validator: a Recipe checked and resolved against the library, before any model loads.

`prepare` resolves the checkpoint and every other model a recipe names (ControlNets, IP-Adapters and
their image encoders, the SDXL refiner, the prompts' LoRAs, a hires upscaler) and checks the sampler,
the sizes, the hires pass, the mode's inputs, the control units and the references (engine/plan.py).
It is pure: it loads no model and writes no file; pictures come from an `Inputs` source by name.
`Engine.prepare` calls it, `Engine.generate` starts with it, and the studio API and the A1111 API call
it before queueing, so every front end refuses the same recipes with the same sentences and fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localdiffusion.engine import flow
from localdiffusion.engine.inputs import Inputs
from localdiffusion.engine.plan import Plan, check_hires_upscaler, check_loras, make_plan
from localdiffusion.errors import BadInput
from localdiffusion.models.controlnet import check_fits
from localdiffusion.models.info import ModelInfo, base_family
from localdiffusion.models.ip_adapter import AdapterShape, find_adapter, image_encoder_folder
from localdiffusion.prompts import wildcards
from localdiffusion.recipe import Recipe


@dataclass
class Adapter:
    """A reference's IP-Adapter, its shape and the folder of the image encoder it needs."""

    info: ModelInfo
    shape: AdapterShape
    encoder: Path


@dataclass
class Prepared:
    """A recipe checked and resolved for its models: what `Engine.generate` binds and runs."""

    plan: Plan  # the recipe with size, sampler and model name resolved; the pictures at the processing size
    checkpoint: ModelInfo
    controls: list[ModelInfo] = field(default_factory=list)  # one ControlNet per unit
    adapters: list[Adapter] = field(default_factory=list)  # one per reference
    refiner: ModelInfo | None = None
    loras: list[ModelInfo] = field(default_factory=list)  # the prompts' <lora:...> tags, in order
    parts: Any = None  # a single-file SD3 or FLUX model's text encoders and VAE (models/flow.py Parts)

    @property
    def recipe(self) -> Recipe:
        return self.plan.recipe


def prepare(recipe: Recipe, library: Any, inputs: Inputs) -> Prepared:
    """Check `recipe` and resolve its models; raises BadInput or ModelNotFound naming the field."""
    checkpoint = library.get(recipe.model, kind="checkpoint", field="model")
    if wildcards.has_wildcards(recipe.prompt) or wildcards.has_wildcards(recipe.negative_prompt):
        wildcards.check(recipe.prompt, recipe.negative_prompt, wildcards.wildcards_folder(library.home.root))
    parts = None
    if flow.is_flow(checkpoint):  # SD3.5, FLUX: their defaults and limits; a single file's parts found (or named)
        from localdiffusion.models.flow import find_parts, guidance_distilled

        recipe = flow.check(recipe, checkpoint, guidance_distilled(checkpoint, library.settings.allow_pickle))
        parts = find_parts(checkpoint, library) if checkpoint.format != "diffusers" else None
    elif recipe.distilled_cfg_scale is not None:  # FLUX's own; other families neither use nor record it
        recipe = recipe.model_copy(update={"distilled_cfg_scale": None})
    plan = make_plan(recipe.model_copy(update={"model": checkpoint.name}), checkpoint, library.settings, inputs)
    recipe = plan.recipe
    if flow.is_flow(checkpoint):
        flow.check_size(recipe, checkpoint)
    if recipe.enable_hr:
        check_hires_upscaler(recipe.hr_upscaler, library)
    controls = []
    for i, unit in enumerate(recipe.controls):
        info = library.get(unit.model, kind="controlnet", field=f"controls.{i}.model")
        check_fits(info, checkpoint, field=f"controls.{i}.model")
        controls.append(info)
    adapters = []
    for i, ref in enumerate(recipe.references):
        info, shape = find_adapter(i, ref.model, checkpoint, library)
        adapters.append(Adapter(info, shape, image_encoder_folder(info, shape, library.home.root, field=f"references.{i}.model")))
    return Prepared(plan, checkpoint, controls, adapters, _refiner(recipe, library), check_loras(recipe, library), parts)


def _refiner(recipe: Recipe, library: Any) -> ModelInfo | None:
    if not recipe.refiner_checkpoint:
        return None
    info = library.get(recipe.refiner_checkpoint, kind="checkpoint", field="refiner_checkpoint")
    if base_family(info.family) not in ("sdxl", "sdxl-refiner"):
        raise BadInput(f"The refiner '{info.name}' is a {info.family} model; a refiner must be an SDXL model.", field="refiner_checkpoint")
    return info
