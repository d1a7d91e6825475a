"""Save generated images: PNG files with A1111 infotext and our JSON recipe, recorded in the database."""

from __future__ import annotations

import errno
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from PIL import Image

from localdiffusion.recipe import Recipe
from localdiffusion.store.db import Database
from localdiffusion.store.png import png_with_metadata

LOCK_NAME = ".localdiffusion-numbering.lock"  # beside the images; A1111 and file browsers skip dot-files
_NUMBERED = re.compile(r"(\d{5,})-")
_numbers_lock = threading.Lock()  # threads of one process; the lock file serializes processes


def output_folder(outputs: Path, mode: str) -> Path:
    """A1111's layout: one folder per mode and day, e.g. outputs/txt2img-images/2026-11-26."""
    return outputs / f"{mode}-images" / date.today().isoformat()


def next_number(folder: Path) -> int:
    """The next A1111-style image number (00001-...) in a folder: one above the highest there."""
    with os.scandir(folder) as entries:
        return 1 + max((int(m.group(1)) for e in entries if (m := _NUMBERED.match(e.name))), default=0)


@contextmanager
def numbering_lock(folder: Path) -> Iterator[None]:
    """Hold the folder's numbering lock: between taking a number and publishing the file under it, no other
    thread or process (sharing the home folder) can take the same number."""
    with _numbers_lock, open(folder / LOCK_NAME, "a+b") as handle:
        if os.name == "nt":  # pragma: no cover - Windows
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _publish(tmp: Path, target: Path) -> bool:
    """Give the finished file `tmp` the name `target` unless that name exists; True when it did."""
    try:
        os.link(tmp, target)  # atomic, and never replaces an existing file
    except FileExistsError:
        return False
    except OSError as e:  # a file system without hard links: we hold the lock, so check then rename
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        if target.exists():
            return False
        os.replace(tmp, target)
        return True
    tmp.unlink()
    return True


def write_numbered(folder: Path, suffix: str, data: bytes) -> Path:
    """Write `data` as `NNNNN<suffix>` in `folder` with the next free number, and return the path.

    The bytes go to a temporary file first, so the numbered name only ever shows a complete file; the
    number is taken and the name published under the folder's lock, and the name is published
    exclusively, so two savers (threads or processes) never take one number or overwrite each other.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".saving-", suffix=".tmp", dir=folder)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with numbering_lock(folder):
            number = next_number(folder)
            while not _publish(tmp, path := folder / f"{number:05d}{suffix}"):
                number += 1  # a writer that does not take the lock (another tool) has this name
        return path
    finally:
        tmp.unlink(missing_ok=True)


def save_image(
    image: Image.Image, recipe: Recipe, infotext: str, folder: Path, db: Database | None = None,
    model_hash: str | None = None, owner_id: int | None = None,
) -> tuple[Path, int | None]:
    """Write `NNNNN-SEED.png` atomically and record it; returns the path and the database id."""
    data = png_with_metadata(image, infotext, recipe.to_json())
    return save_png_bytes(data, image.size, recipe, infotext, folder, db, model_hash=model_hash, owner_id=owner_id)


def save_png_bytes(
    data: bytes, size: tuple[int, int], recipe: Recipe, infotext: str, folder: Path, db: Database | None = None,
    model_hash: str | None = None, owner_id: int | None = None,
) -> tuple[Path, int | None]:
    """`save_image` for PNG bytes that already carry their metadata (a job's artefact): `NNNNN-SEED.png`
    written atomically under the folder's numbering lock, and its `images` row; returns the path and the id."""
    path = write_numbered(folder, f"-{recipe.seed}.png", data)
    if db is None:
        return path, None
    width, height = size
    image_id = db.add_image(path=path, recipe_json=recipe.to_json(), infotext=infotext, prompt=recipe.prompt,
                            model_hash=model_hash, width=width, height=height, owner_id=owner_id)
    return path, image_id
