"""Rebuild a Recipe from an image's embedded metadata, check its model is here, and say what would differ."""

from __future__ import annotations

from pathlib import Path

import torch

from localdiffusion.engine.samplers import resolve_sampler
from localdiffusion.errors import BadInput, ModelNotFound
from localdiffusion.infotext import recipe_from_infotext
from localdiffusion.metadata import ImageMetadata, read_image_metadata
from localdiffusion.prompts import extract_loras
from localdiffusion.recipe import Recipe

# Infotext keys that describe an image without changing how it is made here (hashes, versions, the
# settings the recipe itself carries under other names).
_DESCRIPTIVE = {
    "Model hash", "Model", "Version", "Lora hashes", "TI hashes", "Emphasis", "Schedule type", "User", "Hashes",
    "VAE hash", "VAE", "Denoising strength", "Hires upscale", "Hires upscaler", "Hires steps", "Refiner", "Refiner switch at",
    "Mask blur", "Masked content", "Inpaint area", "Masked area padding", "Mask mode", "Size", "Init image hash",
    "Token merging ratio", "Token merging ratio hr", "Downcast alphas_cumprod", "Face restoration",
}
# Extensions whose settings change the picture, by the prefix of the keys they write.
_EXTENSIONS = {"ADetailer": "ADetailer", "Dynamic thresholding": "Dynamic Thresholding", "Tiled Diffusion": "Tiled Diffusion",
               "Regional Prompter": "Regional Prompter", "FreeU": "FreeU", "SAG": "Self-Attention Guidance",
               "Kohya Hires.fix": "Kohya HiresFix", "AnimateDiff": "AnimateDiff", "Dynamic Prompts": "Dynamic Prompts"}


def recipe_for_replay(image: Path, library) -> Recipe:
    """Our own JSON recipe when present, else the recipe in its A1111 infotext; the model must be in the library."""
    meta = read_image_metadata(image)
    if meta.recipe_json:
        recipe = Recipe.from_json(meta.recipe_json)
    elif "parameters" in meta.raw:
        recipe = recipe_from_infotext(meta.raw["parameters"])
    else:
        raise BadInput(f"'{image}' holds no generation recipe (no A1111 parameters or Local Diffusion metadata), so it cannot be replayed.")
    wanted = meta.model_hash or recipe.model
    if wanted is None:
        return recipe
    try:  # the hash first: it names the very file, whatever its name is here
        info = library.get(wanted, kind="checkpoint", field="model")
    except ModelNotFound:
        name = meta.model_name or recipe.model or "unknown"
        raise ModelNotFound(
            f"The model this image was made with is not here: '{name}' (hash {meta.model_hash or 'unknown'}); add it with `localdiffusion models add PATH`.",
            field="model",
        ) from None
    return recipe.model_copy(update={"model": info.name})


def replay_differences(meta: ImageMetadata, recipe: Recipe, library, device: torch.device) -> list[str]:
    """Why replaying this image here would not give its picture, one sentence each; empty when it should.

    Checked: the model (by hash), the LoRAs, the sampler, an RNG source this device cannot give, and the
    settings in an A1111 infotext that this engine does not apply (options and extensions)."""
    reasons = []
    model = _model_difference(meta, recipe, library)
    if model:
        reasons.append(model)
    reasons += _lora_differences(recipe, library)
    try:
        sampler, _ = resolve_sampler(recipe.sampler_name, recipe.scheduler)
        if sampler.contract != "A1111" and meta.source == "a1111":
            reasons.append(f"The sampler '{sampler.name}' is diffusers' here, not one of A1111's, so an A1111 image made with it will differ.")
    except BadInput:
        reasons.append(f"The sampler '{recipe.sampler_name}' with schedule '{recipe.scheduler}' is not one this engine has, so another would be used.")
    if recipe.rng == "device" and device.type != "cuda":
        reasons.append("The image's noise came from a GPU's own generator (RNG: GPU), which this machine has not; its CPU draws other "
                       "numbers (choose RNG source NV for an NVIDIA GPU's numbers).")
    if meta.source == "a1111":
        reasons += _unapplied_settings(meta.extra)
    return reasons


def _model_difference(meta: ImageMetadata, recipe: Recipe, library) -> str | None:
    wanted = meta.model_hash or recipe.model
    if wanted is None:
        return "The image does not name its model, so the default one is used and the picture will differ."
    try:
        library.get(wanted, kind="checkpoint", field="model")
    except (ModelNotFound, BadInput):
        name = meta.model_name or recipe.model or "unknown"
        return f"The model '{name}' (hash {meta.model_hash or 'unknown'}) is not here; add it with `localdiffusion models add PATH`."
    return None


def _lora_differences(recipe: Recipe, library) -> list[str]:
    missing = []
    for ref in extract_loras(recipe.prompt)[1] + extract_loras(recipe.negative_prompt)[1]:
        try:
            library.get(ref.name, kind="lora", field="prompt")
        except (ModelNotFound, BadInput):
            missing.append(ref.name)
    return [f"The LoRA '{name}' in the prompt is not here, so it cannot be applied." for name in missing]


def _unapplied_settings(extra: dict[str, str]) -> list[str]:
    reasons, extensions = [], set()
    for key in extra:
        extension = next((name for prefix, name in _EXTENSIONS.items() if key.startswith(prefix)), None)
        if extension:
            extensions.add(extension)
        elif key not in _DESCRIPTIVE and not key.startswith(("ControlNet", "IP-Adapter")):
            reasons.append(f"The setting '{key}' is not applied here, so the picture may differ.")
    reasons += [f"The image was made with the {name} extension, which this engine does not have." for name in sorted(extensions)]
    return reasons
