"""A training dataset: a folder of pictures, each with an optional same-named `.txt` caption (kohya's convention).

`load_dataset` checks the folder and answers a problem with one sentence that names the file: no pictures, a
picture that cannot be read, a caption without its picture, or fewer than `MIN_IMAGES` pictures. Two pictures
is the least we train on (one picture can only be copied, not learned from; 10-30 is better). The trigger word
goes in front of every caption (`mira_character, a girl with a red scarf`), so that the prompt can call up what
was learned. Each picture gets a crop box: the centre square, or with buckets the centre of the shape (from a
few sizes of about the training area) closest to its own. `content_hash` identifies the dataset (pictures and
captions) for provenance and for checking that a resumed run trains on the same data.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from localdiffusion.errors import BadInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MIN_IMAGES = 2
FIELD = "dataset"


@dataclass(frozen=True)
class Item:
    """One picture: where it is, its caption (trigger word in front), the crop box in its pixels
    (left, top, right, bottom) and the size it is scaled to (width, height)."""

    image: Path
    caption: str
    crop: tuple[int, int, int, int]
    size: tuple[int, int]


@dataclass
class Dataset:
    folder: Path
    items: list[Item]
    trigger: str | None
    resolution: int
    content_hash: str
    captions: list[str] = field(default_factory=list)  # the captions as written, without the trigger word

    def __len__(self) -> int:
        return len(self.items)

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """kohya's `ss_tag_frequency`: per dataset folder, how often each comma-separated tag occurs."""
        counts: Counter[str] = Counter()
        for item in self.items:
            counts.update(tag.strip() for tag in item.caption.split(",") if tag.strip())
        return {self.folder.name: dict(counts)}

    def pixels(self, item: Item):
        """The item's picture, cropped and scaled, as a float tensor (3, H, W) in [-1, 1]."""
        import numpy as np
        import torch

        with Image.open(item.image) as img:
            img = img.convert("RGB").crop(item.crop).resize(item.size, Image.Resampling.LANCZOS)
        array = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_dataset(folder: Path | str, trigger: str | None = None, resolution: int = 512, crop: str = "square",
                 min_images: int = MIN_IMAGES) -> Dataset:
    """Read and check a dataset folder; every problem is one sentence naming the file (BadInput)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"The dataset folder {folder} does not exist or is not a folder; give a folder of pictures "
                       "with same-named .txt captions.", field=FIELD)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    pictures = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    stems = {p.stem for p in pictures}
    for caption in (p for p in files if p.suffix.lower() == ".txt"):
        if caption.stem not in stems:
            raise BadInput(f"The caption file {caption} has no picture of the same name beside it; add the picture "
                           f"or remove the caption.", field=FIELD)
    if len({p.stem for p in pictures}) != len(pictures):
        twin = next(p for p in pictures if sum(q.stem == p.stem for q in pictures) > 1)
        raise BadInput(f"The picture {twin} shares its name with another picture in {folder}, so they would share "
                       "one caption; rename one of them.", field=FIELD)
    if not pictures:
        raise BadInput(f"The dataset folder {folder} holds no pictures ({', '.join(IMAGE_SUFFIXES)}); put "
                       f"{MIN_IMAGES} or more pictures in it, each with an optional same-named .txt caption.", field=FIELD)
    if len(pictures) < min_images:
        raise BadInput(f"The dataset folder {folder} holds only {len(pictures)} picture ({pictures[0].name}); training "
                       f"needs at least {min_images} pictures, and 10-30 work best.", field=FIELD)
    if trigger is not None and (not trigger.strip() or "," in trigger):
        raise BadInput(f"The trigger word '{trigger}' must be a word or two without commas, such as mira_character.",
                       field="trigger")
    digest = hashlib.sha256()
    items, captions = [], []
    for picture in pictures:
        size, data = _read_picture(picture)
        caption = _read_caption(picture.with_suffix(".txt"))
        captions.append(caption)
        box, target = crop_box(size, resolution, crop)
        items.append(Item(picture, with_trigger(caption, trigger), box, target))
        digest.update(json.dumps([picture.name, hashlib.sha256(data).hexdigest(), caption]).encode())
    return Dataset(folder, items, trigger, resolution, digest.hexdigest(), captions)


def with_trigger(caption: str, trigger: str | None) -> str:
    """`trigger, caption` (just the trigger for an empty caption; unchanged if it already starts with it)."""
    if not trigger:
        return caption
    trigger = trigger.strip()
    tags = [t.strip() for t in caption.split(",")]
    if tags and tags[0] == trigger:
        return caption
    return f"{trigger}, {caption}" if caption else trigger


def crop_box(size: tuple[int, int], resolution: int, crop: str = "square") -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """The centre crop (left, top, right, bottom) of a picture of `size` and the size it is scaled to."""
    width, height = size
    target = (resolution, resolution) if crop == "square" else bucket_for(width / height, resolution)
    aspect = target[0] / target[1]
    crop_w, crop_h = (width, round(width / aspect)) if width / height < aspect else (round(height * aspect), height)
    crop_w, crop_h = min(crop_w, width), min(crop_h, height)
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return (left, top, left + crop_w, top + crop_h), target


def buckets(resolution: int) -> list[tuple[int, int]]:
    """kohya-style buckets: sides in steps of resolution/8 (64 at 512), from half to twice the resolution,
    the largest height for each width whose area stays within resolution²."""
    step = max(8, resolution // 8)
    found = []
    for width in range(resolution // 2, 2 * resolution + 1, step):
        height = min(2 * resolution, (resolution * resolution // width) // step * step)
        if height >= resolution // 2:
            found.append((width, height))
    return found


def bucket_for(aspect: float, resolution: int) -> tuple[int, int]:
    import math

    return min(buckets(resolution), key=lambda b: abs(math.log(b[0] / b[1]) - math.log(aspect)))


def _read_picture(path: Path) -> tuple[tuple[int, int], bytes]:
    try:
        data = path.read_bytes()
        with Image.open(path) as img:
            img.load()
            size = img.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise BadInput(f"The picture {path} cannot be read as an image ({type(e).__name__}); remove it or save it "
                       "again as PNG or JPEG.", field=FIELD) from None
    if min(size) < 8:  # a picture this small holds nothing to learn
        raise BadInput(f"The picture {path} is only {size[0]}x{size[1]} pixels; use pictures at least 8 pixels "
                       "on each side (64 or more is better).", field=FIELD)
    return size, data


def _read_caption(path: Path) -> str:
    if not path.is_file():
        return ""
    try:
        return " ".join(path.read_text(encoding="utf-8-sig").split())
    except UnicodeDecodeError:
        raise BadInput(f"The caption file {path} is not UTF-8 text; save it again as UTF-8.", field=FIELD) from None
