"""`read_image_metadata`: ask each tool's reader in turn; the first that recognises the image wins."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from localdiffusion.metadata import a1111, comfyui, fooocus, invokeai, novelai, ours
from localdiffusion.metadata.container import Container, open_container
from localdiffusion.metadata.types import ImageMetadata

# Most specific first: our chunk sits beside an A1111 `parameters` chunk, and Fooocus also writes `parameters`.
READERS: list[Callable[[Container], ImageMetadata | None]] = [
    ours.read, fooocus.read, comfyui.read, invokeai.read, novelai.read, a1111.read,
]


def read_image_metadata(source: str | Path | bytes) -> ImageMetadata:
    """The generation settings stored in an image file (a path or its bytes).

    Raises BadInput when there is no such file or it is not an image. An image without
    settings gives an ImageMetadata whose `source` is None.
    """
    c = open_container(source)
    raw = dict(c.texts)
    if c.user_comment:
        raw["UserComment"] = c.user_comment
    for reader in READERS:
        meta = reader(c)
        if meta is not None:
            meta.raw = raw
            return meta
    hidden = c.stealth()
    if hidden:
        meta = a1111.from_text(hidden)
        meta.raw = {**raw, "stealth_pnginfo": hidden}
        return meta
    return ImageMetadata(raw=raw)
