"""Artefacts: what a task gives back instead of writing files, so that it could run on another machine.

A task returns a `TaskOutput`: its small JSON result and a list of artefacts, plain data the result
store (jobs/results.py) writes to the home folder and the database with the job's owner:

- `ImageArtefact`: a PNG for the gallery, its bytes already carrying the A1111 infotext and the recipe
  JSON chunk (`store/png.png_with_metadata`), with what its `images` row records;
- `FileArtefact`: a named file (bytes and a relative name such as `timeline/sample-004.png` or
  `explain.json`) for the output's folder, `TaskOutput.folder` under `HOME/outputs/`;
- `ModelArtefact`: a file for the model library (a trained LoRA or embedding), written by the result store
  into `models/Lora/<owner>/` or `embeddings/<owner>/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from localdiffusion.store.png import png_with_metadata
from localdiffusion.recipe import Recipe, Result

if TYPE_CHECKING:
    from localdiffusion.engine import Engine


@dataclass(frozen=True)
class ImageArtefact:
    """A gallery image: PNG bytes with metadata, saved as `outputs/<mode>-images/<date>/NNNNN-SEED.png`."""

    png: bytes
    recipe: Recipe  # the resolved recipe (its seed names the file)
    infotext: str
    width: int
    height: int
    mode: str  # the gallery folder's mode: txt2img, img2img, inpaint, outpaint, extras
    model_hash: str | None = None

    @classmethod
    def of(cls, image: Image.Image, recipe: Recipe, infotext: str, mode: str, model_hash: str | None = None,
           extra: dict[str, str] | None = None) -> "ImageArtefact":
        return cls(png_with_metadata(image, infotext, recipe.to_json(), extra), recipe, infotext, image.width, image.height,
                   mode, model_hash)


@dataclass(frozen=True)
class FileArtefact:
    """A named file of an output folder: `name` is relative (forward slashes), e.g. `cells/x0-y1.png`."""

    name: str
    data: bytes  # JSON files (explain.json, compare.json) are UTF-8 bytes like any other


@dataclass(frozen=True)
class ModelArtefact:
    """A trained file for the library: `kind` "lora" (models/Lora/<owner>/<name>.safetensors) or "embedding"
    (embeddings/<owner>/<name>.safetensors); `owner` and `name` are checked file names (train/output.check_name)."""

    kind: str
    owner: str
    name: str
    data: bytes


Artefact = ImageArtefact | FileArtefact | ModelArtefact


@dataclass
class TaskOutput:
    """What a task returns: the job's JSON result and the artefacts the result store writes.

    When there are gallery images, the store puts their database ids first in the result as
    `"images"`, in the artefacts' order. File artefacts go to `folder`, relative to `HOME/outputs/`
    (e.g. `explanations/12`); that folder is replaced whole, so no file of an older output lingers.
    """

    result: dict[str, Any]
    artefacts: list[Artefact] = field(default_factory=list)
    folder: str | None = None

    @property
    def images(self) -> list[ImageArtefact]:
        return [a for a in self.artefacts if isinstance(a, ImageArtefact)]

    @property
    def files(self) -> list[FileArtefact]:
        return [a for a in self.artefacts if isinstance(a, FileArtefact)]

    @property
    def models(self) -> list[ModelArtefact]:
        return [a for a in self.artefacts if isinstance(a, ModelArtefact)]


def gallery_images(engine: Engine, result: Result, mode: str) -> list[ImageArtefact]:
    """A generation's images as gallery artefacts, each with its resolved recipe and infotext, and the
    checkpoint's short hash for their rows; with the setting `comfyui_workflow_in_png`, ComfyUI's chunks too."""
    model_hash = engine.checkpoint(result.recipes[0].model).short_hash
    return [ImageArtefact.of(image, recipe, infotext, mode, model_hash, comfyui_chunks(engine, recipe))
            for image, recipe, infotext in zip(result.images, result.recipes, result.infotexts)]


def comfyui_chunks(engine: Engine, recipe: Recipe) -> dict[str, str] | None:
    if not engine.settings.comfyui_workflow_in_png:
        return None
    from localdiffusion.interop.comfyui import workflow_for

    return workflow_for(recipe, engine.library).png_chunks()


def generation_result(result: Result) -> dict[str, Any]:
    """A generation's JSON result besides the image ids (which the store adds): infotexts, seeds, timings, and
    which decoder made the images ("full" or "fast": TAESD), and the run's notes for the job's log (a backend's
    fallback to torch)."""
    return {"infotexts": result.infotexts, "seeds": [r.seed for r in result.recipes], "timings": result.timings,
            "decoder": result.decoder, "notes": result.notes}
