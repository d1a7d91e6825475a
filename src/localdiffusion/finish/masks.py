"""Mask tools: pure functions on "L" images where white (255) marks what may be repainted.

The studio's mask editor does the same operations on its canvas; these serve the server and the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from localdiffusion.errors import BadInput

MAX_PX = 256  # the largest grow, shrink or feather radius
ColourSpace = Literal["rgb", "hsv"]


def as_mask(image: Image.Image) -> Image.Image:
    """Any image as an "L" mask: its alpha if it is transparent anywhere (opaque = masked), else its luminance."""
    if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema()[0] < 255:
        return image.getchannel("A")
    return image.convert("L")


def invert(mask: Image.Image) -> Image.Image:
    return ImageOps.invert(as_mask(mask))


def grow(mask: Image.Image, px: int) -> Image.Image:
    """Widen the white area by `px` pixels in every direction (a round brush, not a square)."""
    return _morph(mask, px, cv2.dilate, "grow")


def shrink(mask: Image.Image, px: int) -> Image.Image:
    """Narrow the white area by `px` pixels from every edge."""
    return _morph(mask, px, cv2.erode, "shrink")


def feather(mask: Image.Image, px: int) -> Image.Image:
    """Soften the edge over about `px` pixels (a Gaussian blur)."""
    _check_px(px, "feather")
    mask = as_mask(mask)
    return mask.filter(ImageFilter.GaussianBlur(px / 2)) if px else mask


def _morph(mask: Image.Image, px: int, op, what: str) -> Image.Image:
    _check_px(px, what)
    mask = as_mask(mask)
    if px == 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return Image.fromarray(op(np.asarray(mask), kernel, borderType=cv2.BORDER_REPLICATE), "L")


def _check_px(px: int, what: str) -> None:
    if not isinstance(px, int) or not 0 <= px <= MAX_PX:
        raise BadInput(f"The {what} amount {px!r} is out of range; use whole pixels from 0 to {MAX_PX}.", field="px")


def from_colour(image: Image.Image, colour: Sequence[int], tolerance: int = 32, space: ColourSpace = "rgb") -> Image.Image:
    """White where a pixel is within `tolerance` (0-255, per channel) of `colour` (an RGB triple).

    In "hsv" the distance is taken per hue, saturation and value (PIL's 0-255 scales; hue wraps
    round), with saturation and value counting half: that picks "all the reds" across light and
    shade, which RGB distance cannot.
    """
    rgb = _rgb(colour)
    if not 0 <= tolerance <= 255:
        raise BadInput(f"The colour tolerance {tolerance} is out of range; use 0 to 255.", field="tolerance")
    if space not in ("rgb", "hsv"):
        raise BadInput(f"The colour space '{space}' is unknown; use 'rgb' or 'hsv'.", field="space")
    mode = "RGB" if space == "rgb" else "HSV"
    pixels = np.asarray(image.convert("RGB").convert(mode), dtype=np.int16)
    target = np.asarray(Image.new("RGB", (1, 1), rgb).convert(mode), dtype=np.int16)[0, 0]
    distance = np.abs(pixels - target)
    if space == "hsv":
        distance[..., 0] = np.minimum(distance[..., 0], 256 - distance[..., 0])
        distance[..., 1:] //= 2
    return _white_where(distance.max(axis=-1) <= tolerance)


def from_luminance(image: Image.Image, low: int, high: int) -> Image.Image:
    """White where a pixel's luminance (0-255) lies between `low` and `high`, both included."""
    if not 0 <= low <= high <= 255:
        raise BadInput(f"The luminance range {low}-{high} is not valid; use 0 <= low <= high <= 255.", field="low")
    lum = np.asarray(image.convert("L"))
    return _white_where((lum >= low) & (lum <= high))


def rectangle(size: tuple[int, int], box: Sequence[int]) -> Image.Image:
    """A mask of `size` with the (x1, y1, x2, y2) box white; the box is clipped to the image."""
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise BadInput(f"The rectangle {list(box)} is not valid; give x1, y1, x2, y2 with x2 > x1 and y2 > y1.", field="box")
    mask = Image.new("L", _size(size), 0)
    mask.paste(255, tuple(int(v) for v in box))  # PIL clips a box that runs off the image
    return mask


def polygon(size: tuple[int, int], points: Sequence[Sequence[float]]) -> Image.Image:
    """A lasso: the polygon through `points` ((x, y) pairs) filled white."""
    if len(points) < 3 or any(len(p) != 2 for p in points):
        raise BadInput(f"A lasso needs at least 3 (x, y) points; got {len(points)}.", field="points")
    mask = Image.new("L", _size(size), 0)
    ImageDraw.Draw(mask).polygon([(float(x), float(y)) for x, y in points], fill=255)
    return mask


def union(a: Image.Image, b: Image.Image) -> Image.Image:
    _same_size(a, b)
    return Image.fromarray(np.maximum(np.asarray(as_mask(a)), np.asarray(as_mask(b))), "L")


def subtract(a: Image.Image, b: Image.Image) -> Image.Image:
    """`a` with `b`'s white area removed (the eraser)."""
    _same_size(a, b)
    return Image.fromarray(np.minimum(np.asarray(as_mask(a)), 255 - np.asarray(as_mask(b))), "L")


def _same_size(a: Image.Image, b: Image.Image) -> None:
    if a.size != b.size:
        raise BadInput(f"The masks are {a.width}x{a.height} and {b.width}x{b.height}; they must be the same size.", field="mask")


def _white_where(selected: np.ndarray) -> Image.Image:
    return Image.fromarray(np.where(selected, 255, 0).astype(np.uint8), "L")


def _rgb(colour: Sequence[int]) -> tuple[int, int, int]:
    if len(colour) != 3 or any(not 0 <= int(c) <= 255 for c in colour):
        raise BadInput(f"The colour {list(colour)} is not an RGB triple; give three values from 0 to 255.", field="colour")
    return int(colour[0]), int(colour[1]), int(colour[2])


def _size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or min(size) < 1:
        raise BadInput(f"The mask size {list(size)} is not valid; give a width and a height of at least 1.", field="size")
    return int(size[0]), int(size[1])


def parse_colour(text: str) -> tuple[int, int, int]:
    """'#ff8800', 'ff8800' or '255,136,0' as an RGB triple."""
    value = text.strip().lstrip("#")
    try:
        if "," in value:
            return _rgb([int(v) for v in value.split(",")])
        if len(value) == 6:
            return _rgb([int(value[i:i + 2], 16) for i in (0, 2, 4)])
    except ValueError:
        pass
    raise BadInput(f"The colour '{text}' is not readable; write it as #rrggbb or r,g,b.", field="colour")
