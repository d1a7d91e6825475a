"""Rebuild a Recipe from an image's embedded metadata, and check its model is here."""

from __future__ import annotations

from pathlib import Path

from localdiffusion.errors import BadInput, ModelNotFound
from localdiffusion.infotext import recipe_from_infotext
from localdiffusion.metadata import read_image_metadata
from localdiffusion.recipe import Recipe


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
