"""Pixel-side preparation for img2img, inpaint and outpaint, as A1111 does it.

Masks are "L" images where white (255) marks what the model may repaint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from localdiffusion.errors import BadInput
from localdiffusion.recipe import Outpaint


def open_image(path: str, what: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise BadInput(f"The {what} '{path}' does not exist; give the path of an image file.") from None
    except (OSError, ValueError, Image.DecompressionBombError):
        raise BadInput(f"The {what} '{path}' is not a readable image; use a PNG, JPEG or WEBP file.") from None


def as_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "P"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def as_mask(image: Image.Image, invert: bool = False) -> Image.Image:
    """A binary "L" mask from any image: alpha when the image has transparency, otherwise luminance."""
    if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema()[0] < 255:
        mask = image.getchannel("A").point(lambda a: 255 if a < 128 else 0)  # transparent = repaint
    else:
        mask = image.convert("L").point(lambda v: 255 if v >= 128 else 0)
    return ImageOps.invert(mask) if invert else mask


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's inpainting_fill=0: paint the masked area with colours spread in from around it.

    Premultiplied-alpha blurs of the unmasked pixels at falling radii, composited coarse to fine.
    """
    result = Image.new("RGBA", image.size)
    unmasked = Image.new("RGBa", image.size)
    unmasked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in [(256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)]:
        blurred = unmasked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(blurred)
    return result.convert("RGB")


@dataclass
class Canvas:
    """An outpaint canvas: the image placed on a larger canvas, and the mask of the new area."""

    image: Image.Image
    mask: Image.Image


def extend_canvas(image: Image.Image, sides: Outpaint, overlap: int = 8) -> Canvas:
    """Add pixels on each side, filled as `sides.fill` says; mask the new area plus a small overlap."""
    w, h = image.size
    width, height = w + sides.left + sides.right, h + sides.up + sides.down
    arr = np.asarray(image)
    ys = np.clip(np.arange(height) - sides.up, 0, h - 1)
    xs = np.clip(np.arange(width) - sides.left, 0, w - 1)
    canvas = Image.fromarray(np.ascontiguousarray(arr[ys][:, xs]), "RGB")
    new_area = Image.new("L", (width, height), 255)
    new_area.paste(0, (sides.left, sides.up, sides.left + w, sides.up + h))
    if sides.fill == "noise":
        canvas.paste(_colour_noise(arr, (width, height)), (0, 0), new_area)
    elif sides.fill == "blur":
        canvas.paste(canvas.filter(ImageFilter.GaussianBlur(max(width, height) / 16)), (0, 0), new_area)
    mask = Image.new("L", (width, height), 255)
    keep = (
        sides.left + (overlap if sides.left else 0), sides.up + (overlap if sides.up else 0),
        sides.left + w - (overlap if sides.right else 0), sides.up + h - (overlap if sides.down else 0),
    )
    mask.paste(0, keep)
    return Canvas(canvas, mask)


def _colour_noise(arr: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Noise with the image's own mean and spread per channel; a fixed seed keeps outpainting reproducible."""
    pixels = arr.reshape(-1, 3).astype(np.float32)
    rng = np.random.default_rng(0)
    noise = rng.normal(pixels.mean(0), pixels.std(0) + 1.0, size=(size[1], size[0], 3))
    return Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "RGB")


def crop_region(mask: Image.Image, padding: int, width: int, height: int) -> tuple[int, int, int, int]:
    """A1111's "only masked": the mask's bounding box plus padding, grown to the target aspect ratio."""
    box = mask.getbbox()
    if box is None:
        return (0, 0, *mask.size)
    W, H = mask.size
    x1, y1, x2, y2 = max(box[0] - padding, 0), max(box[1] - padding, 0), min(box[2] + padding, W), min(box[3] + padding, H)
    ratio = width / height
    cw, ch = x2 - x1, y2 - y1
    if cw / ch < ratio:
        grow = int(ch * ratio) - cw
        x1, x2 = _grow(x1, x2, grow, W)
    else:
        grow = int(cw / ratio) - ch
        y1, y2 = _grow(y1, y2, grow, H)
    return x1, y1, x2, y2


def _grow(lo: int, hi: int, amount: int, limit: int) -> tuple[int, int]:
    lo -= amount // 2
    hi += amount - amount // 2
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > limit:
        lo, hi = max(lo - (hi - limit), 0), limit
    return lo, hi


def overlay(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """Paste the generated pixels over the original through a (blurred) mask, as A1111's overlay."""
    return Image.composite(generated, original, mask)


def round_to_8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)
