"""Images in and out of the A1111 API: base64 uploads and answers, masks, and A1111's resize modes."""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

from PIL import Image

from localdiffusion.errors import BadInput
from localdiffusion.store.inputs import MAX_UPLOAD_BYTES, decode_image


def bytes_from_base64(text: str, field_name: str, what: str) -> bytes:
    """The bytes of an A1111 base64 upload (a data-URL prefix is allowed); addresses are never fetched."""
    text = (text or "").strip()
    if text.startswith(("http://", "https://")):
        raise BadInput(f"The {what} is an address; this server fetches nothing, so send the image itself as base64.", field=field_name)
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) * 3 // 4 > MAX_UPLOAD_BYTES + 3:
        raise BadInput(f"The {what} is above the upload limit of {MAX_UPLOAD_BYTES // 2**20} MiB.", field=field_name)
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise BadInput(f"The {what} is not valid base64; send a PNG, JPEG or WEBP file encoded as base64.", field=field_name) from None


def checked_image(data: bytes, field_name: str, what: str) -> Image.Image:
    """Decode upload bytes, refusing oversize files, non-images and decompression bombs."""
    try:
        return decode_image(data, what=what)
    except BadInput as e:
        raise BadInput(e.message, field=field_name) from None


def image_from_base64(text: str, field_name: str, what: str) -> Image.Image:
    return checked_image(bytes_from_base64(text, field_name, what), field_name, what)


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def file_base64(path: str | Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def a1111_mask(image: Image.Image, round_mask: bool) -> Image.Image:
    """A1111's `create_binary_mask`: the alpha channel when the mask has transparency (opaque =
    repaint), otherwise its luminance; white repaints."""
    if image.mode == "RGBA" and image.getchannel("A").getextrema() != (255, 255):
        mask = image.getchannel("A")
    else:
        mask = image.convert("L")
    return mask.point(lambda v: 255 if v > 128 else 0) if round_mask else mask


def fit_image(image: Image.Image, resize_mode: int, width: int, height: int) -> Image.Image:
    """A1111's img2img resize modes: 0 just resize (and 3, latent upscale, done here in pixels),
    1 crop and resize, 2 resize and fill (the margins stretched from the edges)."""
    if image.size == (width, height):
        return image
    if resize_mode in (0, 3):
        return image.resize((width, height), Image.Resampling.LANCZOS)
    cover = resize_mode == 1
    if (width / height > image.width / image.height) == cover:
        w, h = width, max(1, image.height * width // image.width)
    else:
        w, h = max(1, image.width * height // image.height), height
    resized = image.resize((w, h), Image.Resampling.LANCZOS)
    return _crop_center(resized, width, height) if cover else _fill_around(resized, width, height)


def _crop_center(image: Image.Image, width: int, height: int) -> Image.Image:
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def _fill_around(image: Image.Image, width: int, height: int) -> Image.Image:
    """The image centred on a width x height canvas, its edge rows and columns stretched into the margins."""
    w, h = image.size
    canvas = Image.new(image.mode, (width, height))
    x, y = (width - w) // 2, (height - h) // 2
    canvas.paste(image, (x, y))
    if y > 0:
        canvas.paste(image.crop((0, 0, w, 1)).resize((w, y)), (x, 0))
        canvas.paste(image.crop((0, h - 1, w, h)).resize((w, height - y - h)), (x, y + h))
    if x > 0:
        canvas.paste(image.crop((0, 0, 1, h)).resize((x, h)), (0, y))
        canvas.paste(image.crop((w - 1, 0, w, h)).resize((width - x - w, h)), (x + w, y))
    return canvas
