"""A1111 (and Forge, SD.Next, Civitai): infotext in a PNG `parameters` chunk, an EXIF UserComment
(JPEG, WEBP) or, with the stealth_pnginfo extension, hidden in the pixels."""

from __future__ import annotations

from localdiffusion.infotext import check_length, from_infotext, split_lines
from localdiffusion.metadata.container import Container
from localdiffusion.metadata.types import ImageMetadata


def read(c: Container) -> ImageMetadata | None:
    """The settings in the image's infotext; a text longer than MAX_INFOTEXT characters raises BadInput."""
    if c.texts.get("parameters"):
        return from_text(check_length(c.texts["parameters"], "The image's 'parameters' text"))
    if c.user_comment and looks_like_infotext(check_length(c.user_comment, "The image's EXIF UserComment")):
        return from_text(c.user_comment)
    return None


def looks_like_infotext(text: str) -> bool:
    """True when the text ends in an A1111 parameter line (at least three `Key: value` pairs)."""
    return bool(split_lines(text)[2])


def from_text(text: str) -> ImageMetadata:
    fields, rest = from_infotext(text)
    return ImageMetadata(
        source="a1111",
        fields=fields,
        model_name=rest.pop("Model", None),
        model_hash=rest.pop("Model hash", None),
        extra=rest,
    )
