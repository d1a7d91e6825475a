"""Gallery thumbnails: WEBP files under HOME/cache/thumbs, made once per image and kept.

A thumbnail is rebuilt only when missing or older than its image, so paging through a large
gallery decodes each full image at most once.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from localdiffusion.store.files import atomic_path

THUMB_SIDE = 256
_PER_FOLDER = 1000  # keeps any one folder small in a gallery of many thousand images


def thumbnail_path(cache: Path, image_id: int) -> Path:
    return Path(cache) / "thumbs" / f"{image_id // _PER_FOLDER:04d}" / f"{image_id}.webp"


def ensure_thumbnail(source: Path, cache: Path, image_id: int, side: int = THUMB_SIDE) -> Path:
    """The thumbnail of image `image_id` (at most `side` pixels), made from `source` if it is not there yet."""
    target = thumbnail_path(cache, image_id)
    if target.exists() and target.stat().st_mtime_ns >= Path(source).stat().st_mtime_ns:
        return target
    with Image.open(source) as image:
        image.draft("RGB", (side, side))  # JPEG decodes at a reduced size; a no-op for PNG
        thumb = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
        thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
    with atomic_path(target) as tmp:
        thumb.save(tmp, format="WEBP", quality=80, method=4)
    return target
