"""Write PNGs the way A1111 does (infotext in `parameters`) plus our full Recipe JSON.

The metadata package reads these chunks back (`metadata/ours.py`); writing files is the store's job.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, PngImagePlugin

from localdiffusion.metadata.ours import RECIPE_CHUNK
from localdiffusion.store.files import write_atomic


def png_with_metadata(image: Image.Image, infotext: str, recipe_json: str | None, extra: dict[str, str] | None = None) -> bytes:
    """PNG bytes carrying `infotext` in `parameters` and, when given, the recipe in `localdiffusion` and more
    text chunks (`extra`: ComfyUI's `prompt` and `workflow`).

    PIL's `add_text` writes tEXt when the text is Latin-1 and iTXt (UTF-8) otherwise, as A1111 does.
    """
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", infotext)
    if recipe_json is not None:
        info.add_text(RECIPE_CHUNK, recipe_json)
    for key, text in (extra or {}).items():
        info.add_text(key, text)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png(image: Image.Image, path: str | Path, infotext: str, recipe_json: str | None) -> Path:
    """Write the PNG to `path` atomically (a temporary file renamed into place)."""
    data = png_with_metadata(image, infotext, recipe_json)
    return write_atomic(Path(path), lambda f: f.write(data))
