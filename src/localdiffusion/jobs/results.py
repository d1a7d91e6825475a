"""The result store: the only code that writes a job's output to the home folder and the database.

Tasks give back artefacts (jobs/artefacts.py) and never write; the worker hands them here with the
job's owner, and the CLI's `generate` saves through the same store. Gallery images go through
`store/outputs.save_png_bytes` (A1111 numbering under the folder's lock, an `images` row with the
owner); a folder of named files (an explanation, a comparison) is written beside its target under a
hidden temporary name and then renamed into place, replacing the older folder whole, so a reader sees
the old output or the new one, never half of one. A trained file (`ModelArtefact`) goes into the model
library under its owner's folder, written atomically (temp + rename), when the store knows the home's model
folders (`model_dir`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localdiffusion.jobs.artefacts import FileArtefact, ImageArtefact, ModelArtefact, TaskOutput
from localdiffusion.store.db import Database
from localdiffusion.store.files import write_atomic
from localdiffusion.store.outputs import output_folder, save_png_bytes


@dataclass(frozen=True)
class SavedImage:
    path: Path
    id: int | None  # None without a database


class ResultStore:
    """Writes artefacts under `outputs` (HOME/outputs) and records gallery images in `db`."""

    def __init__(self, outputs: Path, db: Database | None, model_dir: Callable[[str], Path] | None = None) -> None:
        self.outputs = Path(outputs)
        self.db = db
        self.model_dir = model_dir  # Home.model_dir: where trained files go (None: this store takes none)

    def save(self, output: TaskOutput, owner_id: int | None) -> dict[str, Any]:
        """Write a task's artefacts with the job's owner; returns the job's JSON result (the images'
        ids first as "images" when there are gallery images)."""
        if output.files and output.folder is None:
            raise ValueError("A task gave named files without the folder they belong to.")
        if output.folder is not None:
            self.save_files(output.folder, output.files)
        for model in output.models:
            self.save_model(model)
        images = output.images
        if not images:
            return output.result
        saved = self.save_images(images, owner_id)
        return {"images": [s.id for s in saved], **output.result}

    def save_images(self, images: Iterable[ImageArtefact], owner_id: int | None = None,
                    folder: Path | None = None) -> list[SavedImage]:
        """Each image as the next `NNNNN-SEED.png` of its gallery folder (`outputs/<mode>-images/<date>`,
        or `folder` when given, as the CLI's `--out`), with its database row."""
        saved = []
        for image in images:
            target = folder if folder is not None else output_folder(self.outputs, image.mode)
            path, image_id = save_png_bytes(image.png, (image.width, image.height), image.recipe, image.infotext, target,
                                            self.db, model_hash=image.model_hash, owner_id=owner_id)
            saved.append(SavedImage(path, image_id))
        return saved

    def save_files(self, folder: str, files: Iterable[FileArtefact]) -> Path:
        """Write `files` as the folder `outputs/<folder>`, replacing what was there; returns its path."""
        target = self.path(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        staging.mkdir()
        old = None
        try:
            for file in files:
                write_atomic(inside(staging, file.name), lambda f, data=file.data: f.write(data))
            if target.exists():
                old = target.parent / f".{target.name}.{secrets.token_hex(6)}.old"
                os.rename(target, old)
            os.rename(staging, target)
        except BaseException:
            if old is not None and not target.exists():
                os.rename(old, target)  # the older output stays rather than none
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def model_path(self, model: ModelArtefact) -> Path:
        """Where a trained file goes: models/Lora/<owner>/<name>.safetensors or embeddings/<owner>/<name>.safetensors."""
        if self.model_dir is None:
            raise ValueError("This result store has no model library to write a trained file into.")
        folder = self.model_dir("lora" if model.kind == "lora" else "embedding")
        return inside(folder, f"{model.owner}/{model.name}.safetensors")

    def save_model(self, model: ModelArtefact) -> Path:
        """Write a trained file into the library whole or not at all (a finished run's file replaces an older one)."""
        target = self.model_path(model)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, lambda f: f.write(model.data))
        return target

    def path(self, name: str) -> Path:
        """`outputs/<name>` for a relative name that stays inside the outputs folder."""
        return inside(self.outputs, name)

    def read_json(self, name: str) -> Any | None:
        """A finished output's JSON file (e.g. `explanations/12/explain.json`), or None when there is
        none or it cannot be read: how a task asks whether its work is already done."""
        try:
            return json.loads(self.path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


def inside(base: Path, name: str) -> Path:
    """`base/name` for a relative name with forward slashes and no `..`; anything else is a bug of the task."""
    parts = name.split("/")
    if not name or "\\" in name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
        raise ValueError(f"The output name {name[:80]!r} is not a plain relative name.")
    return base.joinpath(*parts)
