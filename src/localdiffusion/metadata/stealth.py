"""A1111 "stealth" infotext hidden in the least significant bits of an image's pixels.

Format of the stealth_pnginfo extension (credit: ashen-sensored / neggles, sd-webui-stealth-pnginfo):
bits are read column by column (x outer, y inner), from the alpha channel (one bit per pixel)
or from R, G, B (three bits per pixel). They spell a 15-byte signature, a 32-bit big-endian
payload length in bits, then the payload: UTF-8 text, gzip-compressed for the `*comp` signatures.
"""

from __future__ import annotations

import gzip
import zlib

import numpy as np
from PIL import Image

from localdiffusion.infotext import MAX_INFOTEXT, check_length, too_long

SIGNATURES = {
    "stealth_pnginfo": ("alpha", False),
    "stealth_pngcomp": ("alpha", True),
    "stealth_rgbinfo": ("rgb", False),
    "stealth_rgbcomp": ("rgb", True),
}
_HEADER_BYTES = 15 + 4
# The most bytes a text of MAX_INFOTEXT characters takes in UTF-8, and compressed (deflate adds a few
# bytes per block and gzip a header): more than that is refused before it is unpacked or decompressed.
MAX_TEXT_BYTES = 4 * MAX_INFOTEXT
MAX_PAYLOAD_BYTES = MAX_TEXT_BYTES + MAX_TEXT_BYTES // 256 + 64
WHAT = "The text hidden in the image's pixels (stealth_pnginfo)"


def read_stealth(image: Image.Image) -> str | None:
    """The hidden text, or None when the image carries none. A text longer than MAX_INFOTEXT characters
    raises BadInput; only the pixels that hold the text are read."""
    if image.mode not in ("RGB", "RGBA"):
        return None
    text = None
    if image.mode == "RGBA":
        text = _decode(image, "alpha")
    return text if text is not None else _decode(image, "rgb")


def _hidden_bytes(image: Image.Image, mode: str, count: int) -> bytes:
    """The first `count` hidden bytes (fewer when the image is too small), from the columns that hold them."""
    per_column = image.height * (1 if mode == "alpha" else 3)
    columns = min(image.width, -(-count * 8 // per_column))
    part = np.asarray(image.crop((0, 0, columns, image.height)))
    channels = part[:, :, 3:4] if mode == "alpha" else part[:, :, :3]
    # Column-major: transpose to (x, y, channel) before flattening.
    bits = (channels.transpose(1, 0, 2).reshape(-1)[: count * 8] & 1).astype(np.uint8)
    return np.packbits(bits).tobytes()


def _decode(image: Image.Image, mode: str) -> str | None:
    header = _hidden_bytes(image, mode, _HEADER_BYTES)
    if len(header) < _HEADER_BYTES:
        return None
    found = SIGNATURES.get(header[:15].decode("latin-1"))
    if found is None or found[0] != mode:
        return None
    compressed = found[1]
    length = int.from_bytes(header[15:19], "big") // 8
    if length > (MAX_PAYLOAD_BYTES if compressed else MAX_TEXT_BYTES):
        raise too_long(WHAT, f"{length:,} bytes long{' compressed' if compressed else ''}")
    payload = _hidden_bytes(image, mode, _HEADER_BYTES + length)[_HEADER_BYTES:]
    try:
        data = _gunzip(payload) if compressed else payload
        return check_length(data.decode("utf-8"), WHAT)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError):
        return None


def _gunzip(payload: bytes) -> bytes:
    """The decompressed payload, at most MAX_TEXT_BYTES of it: a longer text is refused, not unpacked."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
    data = inflater.decompress(payload, MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES or inflater.unconsumed_tail:
        raise too_long(WHAT, f"more than {MAX_TEXT_BYTES:,} bytes once decompressed")
    if not inflater.eof:
        raise EOFError("the compressed text is cut short")
    return data


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
