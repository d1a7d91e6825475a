"""Compare: vary Recipe fields along X, Y and optionally Z, and explain what each axis shows.

`compare()` checks every cell before any model work, runs the cells on one Engine (cells that differ
only by consecutive seeds go through as one batch), then makes these files (`CompareResult.files`)
and, given `out_dir`, writes them there:
- `grid.png` (with a Z axis: `grid-z{k}.png` per Z value, and `grid.png` = the first);
- `cells/x{i}-y{j}[-z{k}].png`, each with A1111 infotext and its full Recipe JSON;
- `compare.json`: the axes (with a plain-language explanation each), the grids and the cells.
Nothing is written until every cell has been generated, so a failed run leaves no partial grid.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from localdiffusion.engine.hooks import RunHooks
from localdiffusion.engine.noise import resolve_seed
from localdiffusion.engine.samplers import resolve_sampler
from localdiffusion.errors import BadInput, LocalDiffusionError
from localdiffusion.explain.axes import Axis, apply, parse_axis
from localdiffusion.explain.grid import draw_grid
from localdiffusion.explain.parameters import TEXTS
from localdiffusion.recipe import Recipe
from localdiffusion.store.files import write_atomic
from localdiffusion.store.png import png_with_metadata

AXIS_NAMES = ("X", "Y", "Z")
SUMMARY = "compare.json"
DIRECTIONS = {
    "X": "from left to right along each row",
    "Y": "from top to bottom down each column",
    "Z": "from one grid to the next",
}

# What to look for as each field changes across a row or column; the "what it does" half comes
# from explain/parameters.py, so the studio's tooltips and these paragraphs agree.
LOOK_FOR = {
    "seed": "the composition, pose and colours change completely while the style stays; a setting that looks "
            "good on one seed only is luck, one that holds across seeds is reliable.",
    "steps": "how the image settles, from rough or smeared at few steps to finer detail, until it stops "
             "changing much; that point is the number of steps worth waiting for.",
    "cfg_scale": "low values look soft and drift from the prompt; higher values follow the words more literally, "
                 "with stronger contrast and saturation, until the colours turn harsh or burnt.",
    "sampler_name": "mostly small changes in texture and fine detail at the same seed; ancestral ('a') samplers "
                    "can change the composition itself.",
    "scheduler": "differences in fine detail and contrast; Karras often gives crisper detail at low step counts.",
    "denoising_strength": "how much of the input image survives; low values keep its layout and colours, "
                          "high values let the prompt redraw it.",
    "clip_skip": "how literally the words are followed; higher values read the prompt more loosely, "
                 "which some anime-style models were trained for.",
    "width": "framing and composition; the subject gets more room, or repeats, as the canvas moves away "
             "from the model's native size.",
    "height": "framing and composition; the subject gets more room, or repeats, as the canvas moves away "
              "from the model's native size.",
    "size": "framing and composition; wide canvases suit landscapes, tall ones portraits, and sizes far from "
            "the model's native size may repeat the subject.",
    "model": "the overall look, meaning style, colours and how each model reads the same words.",
    "prompt_sr": "what the changed words alone do, since everything else, the seed included, stays the same.",
    "lora": "how strongly the LoRA's style or subject shows, a hint at low weights; at high weights it "
            "dominates and can distort the image.",
    "control_weight": "how closely the image follows the control map (pose, edges, depth); low weights let the "
                      "prompt take over, high ones hold the layout rigidly and can flatten detail.",
}
OWN_TEXTS = {
    "size": "The image width and height in pixels (multiples of 8). Far from the model's native size, subjects "
            "may repeat or crop oddly; larger is slower and needs more memory.",
    "prompt_sr": "Search and replace in the prompt: the first value is a phrase of the prompt, and each column "
                 "replaces it with another phrase (in the negative prompt too).",
    "lora": "A LoRA is a small add-on model that teaches the checkpoint a style, character or concept; its "
            "weight sets how strongly it acts, 1 being full strength.",
    "control_weight": "A ControlNet guides the image with a map made from a picture (a pose skeleton, edges, "
                      "depth); its weight sets how strongly that map steers each step, 1 being full strength.",
}


@dataclass
class CompareProgress:
    done: int  # cells finished
    total: int  # cells in all
    running: int  # cells in the engine call now running
    step: int  # step of that call, 1-based (0 before it starts)
    steps: int


@dataclass
class Cell:
    """One image of the comparison: its position, the Recipe planned for it, and what came out."""

    ix: int
    iy: int
    iz: int | None
    recipe: Recipe
    image: Image.Image | None = None
    resolved: Recipe | None = None  # as the engine recorded it: model name, size, seed
    infotext: str = ""

    @property
    def file(self) -> str:
        z = f"-z{self.iz}" if self.iz is not None else ""
        return f"cells/x{self.ix}-y{self.iy}{z}.png"


@dataclass
class CompareResult:
    out_dir: Path | None  # where the files were written; None: only made (`files`)
    axes: dict[str, Axis]  # "X", "Y" and, when given, "Z"
    cells: list[Cell]
    grids: list[Image.Image]  # one per Z value
    grid_files: list[str]  # relative to out_dir, one per Z value
    explanations: dict[str, str]
    engine_calls: int = 0
    json_path: Path = field(default_factory=Path)
    files: dict[str, bytes] = field(default_factory=dict)  # every file by relative name: cells, grids, compare.json


def compare(
    recipe: Recipe, x: Axis | str, y: Axis | str, z: Axis | str | None = None, *, out_dir: Path | None, engine: Any,
    on_progress: Callable[[CompareProgress], None] | None = None, cancel: Callable[[], bool] | None = None,
    vae_decode: str | None = None,
) -> CompareResult:
    """Generate every cell of the X × Y (× Z) comparison of `recipe` and make the grid(s), cells and JSON;
    written to `out_dir` unless it is None (the studio's compare job hands them to the result store)."""
    axes = parse_axes(x, y, z)
    base = recipe.model_copy(update={"seed": resolve_seed(recipe.seed), "batch_size": 1, "n_iter": 1})
    axes = {name: _fixed_seeds(axis) for name, axis in axes.items()}
    check_axes(base, axes, engine)
    cells = plan_cells(base, axes)
    planned = {id(c): _planned(c.recipe, engine) for c in cells}
    runs = batch_runs(cells, planned, engine)
    result = CompareResult(Path(out_dir) if out_dir is not None else None, axes, cells, [], [],
                           {n: explain_axis(a, n) for n, a in axes.items()})
    _generate(runs, engine, result, on_progress, cancel, vae_decode)
    _make_files(result, base)
    if result.out_dir is not None:
        for name, data in result.files.items():
            write_atomic(result.out_dir / name, lambda f, data=data: f.write(data))
        result.json_path = result.out_dir / SUMMARY
    return result


def parse_axes(x: Axis | str, y: Axis | str, z: Axis | str | None) -> dict[str, Axis]:
    """The given axes by name (X, Y and Z when given), parsed; a field on two axes is refused."""
    given = {"X": x, "Y": y, "Z": z}
    axes = {n: a if isinstance(a, Axis) else parse_axis(a, n) for n, a in given.items() if a is not None and a != ""}
    fields = [a.field for a in axes.values()]
    for name, axis in axes.items():
        if fields.count(axis.field) > 1 or (axis.field == "size" and {"width", "height"} & set(fields)):
            raise BadInput(f"The {name} axis varies {axis.field}, which another axis varies too; give each field one axis.",
                           field=name.lower())
    return axes


def _fixed_seeds(axis: Axis) -> Axis:
    """A1111's `fix_axis_seeds`: -1 on a seed axis becomes one random seed, recorded, so the grid reproduces."""
    if axis.field != "seed":
        return axis
    return Axis(axis.field, tuple(resolve_seed(v) for v in axis.values), axis.text)


def check_axes(base: Recipe, axes: dict[str, Axis], engine: Any) -> None:
    """Check every axis value on its own, so that an error names the axis and the value.

    An error the base recipe has by itself (say, a missing model) is not the value's fault: it is
    left to the cell check, which reports it plainly, unless an axis (a model axis) replaces it.
    """
    base_error = _error_of(lambda: _planned(base, engine))
    for name, axis in axes.items():
        for value in axis.values:
            recipe = apply(base, axis, value, name)
            e = _error_of(lambda: _check_value(recipe, axis, engine))
            if e is not None and (base_error is None or e.message != base_error.message):
                raise type(e)(f"{name} axis value '{axis.value_label(value)}': {e.message}", field=e.field) from None


def _check_value(recipe: Recipe, axis: Axis, engine: Any) -> None:
    if axis.field.startswith("lora:"):
        engine.library.get(axis.lora_name, kind="lora")
    _planned(recipe, engine)


def _error_of(check: Callable[[], Any]) -> LocalDiffusionError | None:
    try:
        check()
    except LocalDiffusionError as e:
        return e
    return None


def plan_cells(base: Recipe, axes: dict[str, Axis]) -> list[Cell]:
    """Every cell, Z-major then rows then columns; each axis applied in X, Y, Z order, as A1111 does."""
    x, y, z = axes["X"], axes["Y"], axes.get("Z")
    cells: list[Cell] = []
    for iz, z_value in enumerate(z.values if z else [None]):
        for iy, y_value in enumerate(y.values):
            for ix, x_value in enumerate(x.values):
                recipe = apply(apply(base, x, x_value, "X"), y, y_value, "Y")
                if z is not None:
                    recipe = apply(recipe, z, z_value, "Z")
                cells.append(Cell(ix, iy, iz if z else None, recipe))
    return cells


def _planned(recipe: Recipe, engine: Any) -> Recipe:
    """The recipe as the engine will run it (model named, size resolved); raises for any bad value."""
    return engine.prepare(recipe).recipe


# --- running ---

def batch_limit(engine: Any, width: int, height: int) -> int:
    """How many images one UNet batch may hold: 4 on the CPU, 8 on a GPU, fewer above 512×512 pixels."""
    base = 4 if engine.device.type == "cpu" else 8
    return max(1, min(base, base * 512 * 512 // (width * height)))


def batch_runs(cells: list[Cell], planned: dict[int, Recipe], engine: Any) -> list[list[Cell]]:
    """Cells grouped into engine calls: cells equal but for consecutive seeds share one batch.

    A batch's image i has seed `seed + i`, as in A1111, so such cells map onto one batch exactly.
    Variation seeds (which also count up in a batch) and DPM++ SDE (whose noise sampler takes the
    batch's first seed) make a batch differ from separate runs, so those cells run one by one.
    """
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.recipe.model_copy(update={"seed": 0}).to_json(), []).append(cell)
    runs: list[list[Cell]] = []
    for group in groups.values():
        recipe = planned[id(group[0])]
        if not _batchable(recipe):
            runs.extend([c] for c in group)
            continue
        limit = batch_limit(engine, recipe.width, recipe.height)
        run: list[Cell] = []
        for cell in sorted(group, key=lambda c: c.recipe.seed):
            if run and (cell.recipe.seed != run[-1].recipe.seed + 1 or len(run) == limit):
                runs.append(run)
                run = []
            run.append(cell)
        runs.append(run)
    # One model after another, so that each model loads once even with a small model cache.
    order = {id(c): i for i, c in enumerate(cells)}
    return sorted(runs, key=lambda r: (planned[id(r[0])].model or "", order[id(r[0])]))


def _batchable(recipe: Recipe) -> bool:
    sampler, _ = resolve_sampler(recipe.sampler_name, recipe.scheduler)
    return recipe.subseed_strength == 0 and sampler.scheduler != "DPMSolverSDEScheduler"


def _generate(runs: list[list[Cell]], engine: Any, result: CompareResult,
              on_progress: Callable[[CompareProgress], None] | None, cancel: Callable[[], bool] | None,
              vae_decode: str | None = None) -> None:
    total, done = len(result.cells), 0
    for run in runs:
        recipe = run[0].recipe.model_copy(update={"batch_size": len(run)})
        if on_progress is not None:
            on_progress(CompareProgress(done, total, len(run), 0, recipe.steps))
        generated = engine.generate(recipe, hooks=RunHooks(on_progress=_step_hook(on_progress, done, total, len(run)), cancel=cancel),
                                    vae_decode=vae_decode)
        result.engine_calls += 1
        for cell, image, resolved, infotext in zip(run, generated.images, generated.recipes, generated.infotexts):
            cell.image, cell.resolved, cell.infotext = image, resolved, infotext
        done += len(run)
        if on_progress is not None:
            on_progress(CompareProgress(done, total, 0, recipe.steps, recipe.steps))


def _step_hook(on_progress: Callable[[CompareProgress], None] | None, done: int, total: int, running: int):
    if on_progress is None:
        return None
    return lambda p: on_progress(CompareProgress(done, total, running, p.step, p.total))


# --- explaining ---

def explain_axis(axis: Axis, name: str) -> str:
    """One paragraph: what the field does (the studio's own wording) and what to look for along this axis."""
    key = "lora" if axis.field.startswith("lora:") else axis.field
    what = OWN_TEXTS.get(key) or TEXTS.get(key, ("", "", None))[1]
    values = ", ".join(axis.value_label(v) for v in axis.values)
    subject = f"the weight of the LoRA '{axis.lora_name}'" if key == "lora" else axis.label
    return f"{subject[0].upper()}{subject[1:]} changes {DIRECTIONS[name]} ({values}). {what} What to look for: {LOOK_FOR[key]}"


# --- the files ---

def _make_files(result: CompareResult, base: Recipe) -> None:
    """The cells, the grid(s) and compare.json as `result.files`, in the order they are written."""
    x, y, z = result.axes["X"], result.axes["Y"], result.axes.get("Z")
    files = result.files
    for cell in result.cells:
        files[cell.file] = png_with_metadata(cell.image, cell.infotext, cell.resolved.to_json())
    z_values = list(z.values) if z else [None]
    for iz, z_value in enumerate(z_values):
        rows = [[c.image for c in result.cells if c.iy == iy and (c.iz == iz or z is None)] for iy in range(len(y.values))]
        title = f"{z.label}: {z.value_label(z_value)}" if z else None
        grid = draw_grid(rows, x.label, [x.value_label(v) for v in x.values], y.label, [y.value_label(v) for v in y.values], title)
        result.grids.append(grid)
        result.grid_files.append(f"grid-z{iz}.png" if z else "grid.png")
    data = [_png_bytes(g) for g in result.grids]
    files.update(zip(result.grid_files, data))
    if z:
        files["grid.png"] = data[0]
    files[SUMMARY] = json.dumps(_summary(result, base), indent=2, ensure_ascii=False).encode("utf-8")


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _summary(result: CompareResult, base: Recipe) -> dict[str, Any]:
    axes = {
        name.lower(): {"field": a.field, "label": a.label, "text": a.text, "values": list(a.values),
                       "labels": [a.value_label(v) for v in a.values], "explanation": result.explanations[name]}
        for name, a in result.axes.items()
    }
    z = result.axes.get("Z")
    grids = [{"file": f, "z": list(z.values)[i] if z else None} for i, f in enumerate(result.grid_files)]
    cells = []
    for c in result.cells:
        entry = {"x": c.ix, "y": c.iy, "z": c.iz, "x_value": result.axes["X"].values[c.ix],
                 "y_value": result.axes["Y"].values[c.iy], "z_value": z.values[c.iz] if z else None,
                 "file": c.file, "recipe": json.loads(c.resolved.to_json())}
        cells.append(entry)
    return {"recipe": json.loads(base.to_json()), "axes": axes, "grids": grids, "cells": cells,
            "engine_calls": result.engine_calls}
