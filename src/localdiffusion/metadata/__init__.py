"""Generation settings stored in image files, read from any common tool (plain data: readers and types).

`read_image_metadata(path_or_bytes)` recognises A1111 (PNG text, JPEG/WEBP EXIF, stealth alpha),
ComfyUI, InvokeAI, Fooocus, NovelAI and our own images. Writing our own (A1111 infotext plus the full
Recipe JSON) is the store's job: `store/png.py`.
"""

from localdiffusion.metadata.read import read_image_metadata
from localdiffusion.metadata.types import ImageMetadata, SamplerPass, Source

__all__ = ["ImageMetadata", "SamplerPass", "Source", "read_image_metadata"]
