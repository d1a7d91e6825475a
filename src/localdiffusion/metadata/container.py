"""Open an image and collect the places where tools hide their settings."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from localdiffusion.errors import BadInput
from localdiffusion.metadata.stealth import read_stealth

EXIF_IFD = 0x8769
USER_COMMENT = 0x9286


@dataclass
class Container:
    """The image plus its text: PNG text chunks (tEXt, zTXt, iTXt) and the EXIF UserComment."""

    image: Image.Image
    texts: dict[str, str] = field(default_factory=dict)
    user_comment: str | None = None

    def stealth(self) -> str | None:
        return read_stealth(self.image)


def open_container(source: str | Path | bytes) -> Container:
    image = open_image(source)
    image.load()  # PNG text chunks after the pixel data are only read by load()
    texts = {k: str(v) for k, v in image.info.items() if isinstance(v, str)}
    return Container(image=image, texts=texts, user_comment=_user_comment(image))


def open_image(source: str | Path | bytes) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        name, stream = "the given bytes", io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise BadInput(f"There is no file at '{path}'; give the path of a PNG, JPEG or WEBP image.")
        name, stream = f"'{path}'", path
    try:
        return Image.open(stream)
    except (UnidentifiedImageError, OSError):
        raise BadInput(f"{name[0].upper()}{name[1:]} is not an image that can be read; give a PNG, JPEG or WEBP image.") from None


def _user_comment(image: Image.Image) -> str | None:
    try:
        value = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception:  # a broken EXIF block is as good as none
        return None
    if isinstance(value, str):
        return value.rstrip("\0") or None
    if isinstance(value, bytes):
        return decode_user_comment(value) or None
    return None


def decode_user_comment(data: bytes) -> str:
    """EXIF UserComment: an 8-byte charset prefix, then the text.

    A1111 writes 'UNICODE\\0' + UTF-16; the byte order follows the EXIF block, so it is guessed
    from where the zero bytes of ASCII characters fall.
    """
    prefix, body = data[:8], data[8:]
    if prefix == b"UNICODE\0":
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            text = body.decode("utf-16")
        else:
            big_endian = body[0::2].count(0) >= body[1::2].count(0)
            text = body.decode("utf-16-be" if big_endian else "utf-16-le", errors="replace")
    elif prefix in (b"ASCII\0\0\0", b"\0" * 8):
        text = body.decode("utf-8", errors="replace")
    else:
        text = data.decode("utf-8", errors="replace")
    return text.rstrip("\0")
