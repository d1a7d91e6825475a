"""Generation settings stored in image files: read them from any common tool, write our own.

`read_image_metadata(path_or_bytes)` recognises A1111 (PNG text, JPEG/WEBP EXIF, stealth alpha),
ComfyUI, InvokeAI, Fooocus, NovelAI and our own images; `png_with_metadata` / `save_png` write
A1111 infotext plus the full Recipe JSON.
"""

from localdiffusion.metadata.png import png_with_metadata, save_png
from localdiffusion.metadata.read import read_image_metadata
from localdiffusion.metadata.types import ImageMetadata, SamplerPass, Source

__all__ = ["ImageMetadata", "SamplerPass", "Source", "png_with_metadata", "read_image_metadata", "save_png"]
