"""Where a generation's input pictures come from: a name in the recipe, the bytes of that file.

A Recipe names its pictures (`init_image`, `mask`, a control unit's `image` or `map`, a reference's
`image`); the engine asks an `Inputs` source for each one's bytes and never opens a path itself. So a
worker on another machine can be handed the bytes with the job (`BytesInputs`), while the CLI and the
server read them from the home (`HomeInputs`: uploads are kept as `inputs/<hash>.png` under the home,
named by content hash, so a name always means the same pixels).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from PIL import Image

from localdiffusion.errors import BadInput

KEPT_INPUT = re.compile(r"inputs/[0-9a-f]{24}\.png")  # an input kept under the home by content hash (store/inputs.py)


class Inputs(Protocol):
    """A source of input pictures: the bytes of the file a recipe names."""

    def read(self, name: str, what: str) -> bytes:
        """The file's bytes; a missing one is refused with a BadInput that says `what` it is."""
        ...


def resolve_path(ref: str, home_root: Path) -> str:
    """A name as a path on this machine: absolute, or relative to the current folder, else to the home."""
    path = Path(ref).expanduser()
    return str(path if path.is_absolute() or path.exists() else Path(home_root) / path)


class HomeInputs:
    """Pictures by name from the home: kept inputs (`inputs/<hash>.png`) and, with `paths` (the command
    line, the Python API), also files by their path on this machine."""

    def __init__(self, home_root: Path, paths: bool = True) -> None:
        self.root, self.paths = Path(home_root), paths

    def read(self, name: str, what: str) -> bytes:
        if not self.paths and not KEPT_INPUT.fullmatch(name):
            raise BadInput(f"The {what} '{name[:80]}' is not a kept input (inputs/<hash>.png); keep it under the home first.")
        path = resolve_path(name, self.root)
        try:
            return Path(path).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise BadInput(f"The {what} '{path}' does not exist; give the path of an image file.") from None
        except OSError:  # a folder, or a file that cannot be read
            raise BadInput(f"The {what} '{path}' is not a readable image; use a PNG, JPEG or WEBP file.") from None


class BytesInputs:
    """Pictures handed over with a job: name -> the file's bytes (for a worker that has no home of its own)."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self.files = dict(files)

    def read(self, name: str, what: str) -> bytes:
        try:
            return self.files[name]
        except KeyError:
            raise BadInput(f"The {what} '{name[:80]}' was not handed over with the job; send its bytes along.") from None


def open_input(inputs: Inputs, name: str, what: str) -> Image.Image:
    """The picture a recipe names, decoded (any mode; callers convert)."""
    data = inputs.read(name, what)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, Image.DecompressionBombError):
        raise BadInput(f"The {what} '{name}' is not a readable image; use a PNG, JPEG or WEBP file.") from None
