"""What a reader recovers from an image: the settings it states, in Recipe terms, and the raw text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from localdiffusion.errors import BadInput
from localdiffusion.recipe import Recipe

Source = Literal["a1111", "comfyui", "invokeai", "fooocus", "novelai", "localdiffusion"]


@dataclass
class SamplerPass:
    """One sampling node of a ComfyUI graph, read the same way as the image's main settings."""

    node: str
    class_type: str
    fields: dict[str, Any] = field(default_factory=dict)
    model_name: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageMetadata:
    """Generation settings found in an image.

    `fields` uses Recipe field names (A1111 API names) and holds ONLY what the file states.
    `extra` keeps the tool's other settings under the tool's own key names (A1111 `Version`,
    Fooocus `sharpness`, the tool's own sampler name, ...). `raw` holds the text exactly as stored.
    """

    source: Source | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    model_name: str | None = None
    model_hash: str | None = None
    raw: dict[str, str] = field(default_factory=dict)
    recipe_json: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    passes: list[SamplerPass] = field(default_factory=list)

    def is_empty(self) -> bool:
        return self.source is None and not self.fields

    def to_recipe(self, *, strict: bool = True) -> Recipe:
        """A Recipe from the stated fields (our own JSON recipe when the image has one).

        A value that a Recipe cannot hold (a ComfyUI seed above 2**32, say) raises BadInput when
        `strict`; otherwise that field is left at its default.
        """
        if self.recipe_json:
            try:
                return Recipe.from_json(self.recipe_json)
            except ValidationError:
                raise BadInput("The image's recipe was written by a version of Local Diffusion that this one cannot read.") from None
        fields = dict(self.fields)
        while True:
            try:
                return Recipe(**fields)
            except ValidationError as e:
                name = str(e.errors()[0]["loc"][0])
                if strict or name not in fields:
                    raise BadInput(f"The image's {name} value {fields.get(name)!r} cannot be used in a recipe: {e.errors()[0]['msg']}.", field=name) from None
                del fields[name]
