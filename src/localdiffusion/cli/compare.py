"""`localdiffusion compare`: a thin veneer over explain.compare.compare()."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from localdiffusion.cli import options
from localdiffusion.cli.common import HomeOption, app, err, open_engine, out, progress_bar, recipe_from_fields, with_control_maps
from localdiffusion.cli.options import RecipeFlags


@app.command("compare")
@options.recipe_options(
    seed_help="-1 picks one random seed for the whole comparison (recorded).",
    init_help="Input image: compare img2img results.",
)
def compare_command(
    x: str = typer.Option(..., "--x", help="X axis as field=values, e.g. \"cfg_scale=3,7,12\" or \"steps=10-30 (+10)\"."),
    y: str = typer.Option(..., "--y", help="Y axis as field=values, e.g. \"seed=1-3\"."),
    z: Optional[str] = typer.Option(None, "--z", help="Optional Z axis: one grid per value."),
    flags: RecipeFlags = None,  # type: ignore[assignment]  (recipe_options puts the recipe flags here)
    control: list[str] = options.CONTROL,
    control_model: list[str] = options.CONTROL_MODEL,
    control_mode: list[str] = options.CONTROL_MODE,
    pixel_perfect: bool = options.PIXEL_PERFECT,
    out_dir: Path = typer.Option(..., "-o", "--out", help="Folder for grid.png, cells/ and compare.json."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Compare settings side by side: a labelled grid, one PNG per cell, and what each axis shows."""
    from localdiffusion.explain.axes import parse_axis
    from localdiffusion.explain.compare import compare

    axes = [parse_axis(x, "X"), parse_axis(y, "Y"), parse_axis(z, "Z") if z else None]
    recipe = recipe_from_fields(
        **flags.recipe_fields(), controls=options.parse_controls(control, control_model, control_mode, pixel_perfect),
    )
    engine = open_engine(home)
    recipe = with_control_maps(recipe, engine.home, engine.library)
    with progress_bar("Loading model", None, "{task.completed:.0f}/{task.total} cells") as bar:

        def on_progress(p) -> None:
            fraction = p.step / p.steps if p.steps else 0
            bar.update(description=f"step {p.step}/{p.steps}", total=p.total, completed=p.done + p.running * fraction)

        result = compare(recipe, *axes, out_dir=out_dir, engine=engine, on_progress=on_progress)
    for name in result.grid_files:
        out.print(str(result.out_dir / name), highlight=False)
    out.print(str(result.json_path), highlight=False)
    err.print(f"[dim]{len(result.cells)} cells in {result.engine_calls} engine call(s)[/dim]")
