"""Our own images: A1111 infotext in `parameters` plus the full Recipe JSON in a `localdiffusion` chunk."""

from __future__ import annotations

from pydantic import ValidationError

from localdiffusion.metadata import a1111
from localdiffusion.metadata.container import Container
from localdiffusion.metadata.types import ImageMetadata
from localdiffusion.recipe import Recipe

RECIPE_CHUNK = "localdiffusion"  # the PNG text chunk that holds the Recipe JSON (written by store/png.py)


def read(c: Container) -> ImageMetadata | None:
    recipe_json = c.texts.get(RECIPE_CHUNK)
    if not recipe_json:
        return None
    meta = a1111.from_text(c.texts["parameters"]) if c.texts.get("parameters") else ImageMetadata()
    meta.source = "localdiffusion"
    meta.recipe_json = recipe_json
    try:
        recipe = Recipe.from_json(recipe_json)
    except ValidationError:
        return meta  # a recipe from a newer version: the infotext fields still hold
    meta.fields = recipe.model_dump(exclude_none=True)
    meta.model_name = meta.model_name or recipe.model
    return meta
