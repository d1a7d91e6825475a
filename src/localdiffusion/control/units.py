"""Make a recipe's ControlNet units ready for the engine: prepared maps, and a model for each unit.

The engine never runs preprocessors (features sit above it). Here every unit without a map gets
one: the preprocessor's output (canny, scribble, lineart, openpose, depth), or the image itself
for module "none", kept under HOME/inputs by content hash so that replaying the recipe uses the
very same map. A unit without a model gets the installed ControlNet that fits the checkpoint's
family and the preprocessor's type. A "pixel perfect" unit gets its `processor_res` from its
picture, the size its map will be fitted to and its resize mode before the map is made, and keeps
that resolution in the recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from localdiffusion.control.preprocessors import control_type, pixel_perfect_resolution, run_preprocessor
from localdiffusion.engine import images as im
from localdiffusion.engine.inputs import KEPT_INPUT
from localdiffusion.engine.inputs import resolve_path
from localdiffusion.errors import BadInput, one_of
from localdiffusion.models.controlnet import family_name, fits
from localdiffusion.models.info import ModelInfo
from localdiffusion.recipe import ControlUnit, Recipe
from localdiffusion.store.inputs import keep_input

# Words that ControlNet file names use for each control type (control_v11p_sd15_openpose, t2i-adapter_sketch, ...).
TYPE_WORDS = {
    "canny": ("canny",),
    "scribble": ("scribble", "sketch"),
    "lineart": ("lineart",),
    "openpose": ("openpose", "pose"),
    "depth": ("depth",),
}


def prepare_controls(recipe: Recipe, home_root: Path, library: Any | None = None) -> Recipe:
    """The recipe with a kept map on every unit; with a `library`, also a model on every unit that names none."""
    if not recipe.controls:
        return recipe
    checkpoint = None
    if library is not None:
        checkpoint = library.get(recipe.model, kind="checkpoint", field="model")
    target = None
    if any(u.pixel_perfect and not u.map for u in recipe.controls):
        target = map_size(recipe, Path(home_root), checkpoint.native_size if checkpoint is not None else 512)
    units = [prepare_unit(i, unit, Path(home_root), target) for i, unit in enumerate(recipe.controls)]
    if checkpoint is not None:
        installed = library.list("controlnet")
        units = [u if u.model else u.model_copy(update={"model": pick_model(i, u, checkpoint, installed).name})
                 for i, u in enumerate(units)]
    return recipe.model_copy(update={"controls": units})


def keep_reference(ref: str, image: Image.Image, home_root: Path) -> str:
    """A reference picture as a kept input (`inputs/<hash>.png`), so the recorded recipe replays exactly."""
    return ref if KEPT_INPUT.fullmatch(ref) else keep_input(home_root, image)


def keep_references(recipe: Recipe, home_root: Path) -> Recipe:
    """The recipe with every reference picture given by path kept as an input, before the job: the engine
    reads pictures by name and writes nothing, so a recipe that names kept inputs replays anywhere."""
    if all(not r.image or KEPT_INPUT.fullmatch(r.image) for r in recipe.references):
        return recipe
    refs = [r if not r.image else r.model_copy(update={"image": keep_reference(
        r.image, im.as_rgb(im.open_image(resolve_path(r.image, home_root), f"reference {i} image")), home_root)})
        for i, r in enumerate(recipe.references)]
    return recipe.model_copy(update={"references": refs})


def prepare_unit(index: int, unit: ControlUnit, home_root: Path, target: tuple[int, int] | None = None) -> ControlUnit:
    """The unit with its map made (by its preprocessor) and kept; a unit that has a map stays as it is.
    A pixel-perfect unit first gets the `processor_res` that fits its map to `target` (width, height)."""
    if unit.map:
        return unit
    if not unit.image:
        raise BadInput(f"ControlNet unit {index} has no image; give the picture to take the control from.", field=f"controls.{index}.image")
    image = im.open_image(resolve_path(unit.image, home_root), f"ControlNet unit {index} image")
    if unit.pixel_perfect and target is not None:
        unit = unit.model_copy(update={"processor_res": pixel_perfect_resolution(image.size, target, unit.resize_mode)})
    control_map = run_preprocessor(unit, image, home_root)
    return unit.model_copy(update={"map": keep_input(home_root, control_map.convert("RGB"))})


def map_size(recipe: Recipe, home_root: Path, native_size: int) -> tuple[int, int]:
    """The size the engine fits the maps to in the first pass (what pixel perfect aims at), as `make_plan`
    resolves it: the recipe's size; for txt2img by default the checkpoint's native size; else the input
    picture's size rounded to 8 (outpaint: the extended canvas). "Only masked" inpainting fits the maps
    to the whole picture before cutting them with it, so there it is the picture's size."""
    if recipe.mode == "txt2img" or not recipe.init_image:
        return recipe.width or native_size, recipe.height or native_size
    width, height = im.open_image(resolve_path(recipe.init_image, home_root), "input image").size
    if recipe.mode == "outpaint" and recipe.outpaint is not None:
        sides = recipe.outpaint
        width, height = width + sides.left + sides.right, height + sides.up + sides.down
        width, height = width + (-width) % 8, height + (-height) % 8
        if not recipe.inpaint_full_res:
            return width, height
    if recipe.inpaint_full_res and recipe.mode in ("inpaint", "outpaint"):
        return width, height
    return recipe.width or im.round_to_8(width), recipe.height or im.round_to_8(height)


def pick_model(index: int, unit: ControlUnit, checkpoint: ModelInfo, installed: list[ModelInfo]) -> ModelInfo:
    """The installed ControlNet for this unit: it fits the checkpoint and its name says the unit's type."""
    fitting = sorted((m for m in installed if fits(m.family, checkpoint.family)), key=lambda m: m.name.lower())
    kind = control_type(unit.module)
    words = TYPE_WORDS.get(kind, (kind,)) if kind else ()
    if words:
        matching = [m for m in fitting if any(w in m.name.lower() for w in words)]
    else:  # a ready-made map says nothing of its type: only a lone fitting ControlNet is a safe guess
        matching = fitting if len(fitting) == 1 else []
    if matching:
        return matching[0]
    family = family_name(checkpoint.family)
    listed = one_of([f"{m.name} ({family_name(m.family)})" for m in installed]) if installed else "none"
    if kind or not fitting:
        need = f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind} ControlNet for {family}" if kind else f"a ControlNet for {family}"
        reason = f"needs {need} and none is installed (installed: {listed}); add one to models/ControlNet or name one"
    else:
        reason = (f"uses a ready-made map, so which {family} ControlNet it is for cannot be guessed; name one of "
                  f"{one_of([m.name for m in fitting])}")
    raise BadInput(f"ControlNet unit {index} {reason} as the unit's model (--control-model on the command line).",
                   field=f"controls.{index}.model")
