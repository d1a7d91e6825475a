"""A1111 "stealth" infotext hidden in the least significant bits of an image's pixels.

Format of the stealth_pnginfo extension (credit: ashen-sensored / neggles, sd-webui-stealth-pnginfo):
bits are read column by column (x outer, y inner), from the alpha channel (one bit per pixel)
or from R, G, B (three bits per pixel). They spell a 15-byte signature, a 32-bit big-endian
payload length in bits, then the payload: UTF-8 text, gzip-compressed for the `*comp` signatures.
"""

from __future__ import annotations

import gzip

import numpy as np
from PIL import Image

SIGNATURES = {
    "stealth_pnginfo": ("alpha", False),
    "stealth_pngcomp": ("alpha", True),
    "stealth_rgbinfo": ("rgb", False),
    "stealth_rgbcomp": ("rgb", True),
}
_HEADER_BYTES = 15 + 4


def read_stealth(image: Image.Image) -> str | None:
    """The hidden text, or None when the image carries none."""
    if image.mode not in ("RGB", "RGBA"):
        return None
    pixels = np.asarray(image)
    text = None
    if image.mode == "RGBA":
        text = _decode(pixels[:, :, 3:4], "alpha")
    return text if text is not None else _decode(pixels[:, :, :3], "rgb")


def _decode(channels: np.ndarray, mode: str) -> str | None:
    # Column-major: transpose to (x, y, channel) before flattening.
    bits = (channels.transpose(1, 0, 2).reshape(-1) & 1).astype(np.uint8)
    data = np.packbits(bits).tobytes()
    if len(data) < _HEADER_BYTES:
        return None
    found = SIGNATURES.get(data[:15].decode("latin-1"))
    if found is None or found[0] != mode:
        return None
    length = int.from_bytes(data[15:19], "big") // 8
    payload = data[19 : 19 + length]
    try:
        return (gzip.decompress(payload) if found[1] else payload).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError):
        return None


def write_stealth(image: Image.Image, text: str, *, compressed: bool = True) -> Image.Image:
    """An RGBA copy of `image` with `text` in the alpha LSBs (used by tests and for round trips)."""
    signature = "stealth_pngcomp" if compressed else "stealth_pnginfo"
    payload = gzip.compress(text.encode("utf-8")) if compressed else text.encode("utf-8")
    data = signature.encode() + (len(payload) * 8).to_bytes(4, "big") + payload
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    rgba = np.array(image.convert("RGBA"))
    alpha = rgba[:, :, 3].T.reshape(-1).copy()  # column-major, as the reader expects
    if len(bits) > len(alpha):
        raise ValueError(f"The image has {len(alpha)} pixels, too few to hide {len(bits)} bits.")
    alpha[: len(bits)] = (alpha[: len(bits)] & 0xFE) | bits
    rgba[:, :, 3] = alpha.reshape(rgba.shape[1], rgba.shape[0]).T
    return Image.fromarray(rgba, "RGBA")
