"""Input images (img2img sources, masks, uploads) kept under HOME/inputs by content hash.

A request's file name is never used as a path: an upload is decoded, checked and re-encoded as
PNG under the hash of its pixels' file, so the recipe that refers to it reproduces exactly.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

from PIL import Image

from localdiffusion.errors import BadInput
from localdiffusion.store.files import write_atomic

MAX_UPLOAD_BYTES = 32 * 2**20
MAX_PIXELS = 64 * 2**20  # larger images are refused as decompression bombs


def decode_image(data: bytes, what: str = "upload", max_bytes: int = MAX_UPLOAD_BYTES) -> Image.Image:
    """Decode untrusted image bytes, refusing oversize files, non-images and decompression bombs."""
    if len(data) > max_bytes:
        raise BadInput(f"The {what} is {len(data) / 2**20:.1f} MiB, above the limit of {max_bytes // 2**20} MiB.")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.width * probe.height > MAX_PIXELS:
                raise BadInput(f"The {what} is {probe.width}x{probe.height} pixels, above the limit of {MAX_PIXELS // 2**20} megapixels.")
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except BadInput:
        raise
    # Pillow refuses a header that claims far more pixels (or warns, where warnings are errors) before
    # our own check can read the size: it is the same "too large", not an unreadable file.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadInput(_too_many_pixels(what, str(e))) from None
    except (OSError, ValueError, SyntaxError):
        raise BadInput(f"The {what} is not a readable image; use a PNG, JPEG or WEBP file.") from None


def _too_many_pixels(what: str, pillow_message: str) -> str:
    """The refusal of an image Pillow would not open, with its pixel count when Pillow's message gives it."""
    found = re.search(r"\((\d+) pixels\)", pillow_message)
    size = f"{int(found.group(1)) / 2**20:,.0f} megapixels, above" if found else "more than"
    return f"The {what} is too large: {size} the limit of {MAX_PIXELS // 2**20} megapixels; use a smaller image."


def keep_input(home_root: Path, image: Image.Image) -> str:
    """Store an input image as PNG under HOME/inputs; returns its reference (relative to HOME)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    name = f"inputs/{hashlib.sha256(data).hexdigest()[:24]}.png"
    target = Path(home_root) / name
    if not target.exists():
        write_atomic(target, lambda f: f.write(data))
    return name
