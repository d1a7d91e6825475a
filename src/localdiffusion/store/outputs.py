"""Save generated images: PNG files with A1111 infotext and our JSON recipe, recorded in the database."""

from __future__ import annotations

import re
import threading
from datetime import date
from pathlib import Path

from PIL import Image

from localdiffusion.metadata.png import save_png
from localdiffusion.recipe import Recipe
from localdiffusion.store.db import Database


def output_folder(outputs: Path, mode: str) -> Path:
    """A1111's layout: one folder per mode and day, e.g. outputs/txt2img-images/2026-11-26."""
    return outputs / f"{mode}-images" / date.today().isoformat()


_last_numbers: dict[Path, int] = {}
_numbers_lock = threading.Lock()


def next_number(folder: Path) -> int:
    """The next A1111-style image number (00001-...) in a folder.

    The folder is listed once per process; after that the number comes from memory, so saving
    stays cheap in a folder of thousands of images.
    """
    with _numbers_lock:
        if folder not in _last_numbers:
            numbers = [int(m.group(1)) for p in folder.glob("*.png") if (m := re.match(r"(\d{5,})-", p.name))]
            _last_numbers[folder] = max(numbers, default=0)
        _last_numbers[folder] += 1
        return _last_numbers[folder]


def save_image(
    image: Image.Image, recipe: Recipe, infotext: str, folder: Path, db: Database | None = None,
    model_hash: str | None = None, owner_id: int | None = None,
) -> tuple[Path, int | None]:
    """Write `NNNNN-SEED.png` atomically and record it; returns the path and the database id."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{next_number(folder):05d}-{recipe.seed}.png"
    while path.exists():  # another process saved into the same folder meanwhile
        path = folder / f"{next_number(folder):05d}-{recipe.seed}.png"
    save_png(image, path, infotext, recipe.to_json())
    if db is None:
        return path, None
    image_id = db.add_image(path=path, recipe_json=recipe.to_json(), infotext=infotext, prompt=recipe.prompt,
                            model_hash=model_hash, width=image.width, height=image.height, owner_id=owner_id)
    return path, image_id
