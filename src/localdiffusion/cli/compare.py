"""`localdiffusion compare`: a thin veneer over explain.compare.compare()."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, Progress as Bar, TextColumn, TimeRemainingColumn

from localdiffusion.cli import options
from localdiffusion.cli.app import HomeOption, app, err, home_from, out
from localdiffusion.cli.generate import existing, library_for, mode_for, parse_size, recipe_from_fields, with_control_maps


@app.command("compare")
def compare_command(
    prompt: str = typer.Argument(..., help="What to draw, in A1111 prompt syntax."),
    x: str = typer.Option(..., "--x", help="X axis as field=values, e.g. \"cfg_scale=3,7,12\" or \"steps=10-30 (+10)\"."),
    y: str = typer.Option(..., "--y", help="Y axis as field=values, e.g. \"seed=1-3\"."),
    z: Optional[str] = typer.Option(None, "--z", help="Optional Z axis: one grid per value."),
    negative: str = options.NEGATIVE,
    model: Optional[str] = options.MODEL,
    steps: int = options.STEPS,
    cfg: float = options.CFG,
    sampler: str = options.SAMPLER,
    scheduler: str = options.SCHEDULER,
    seed: int = typer.Option(-1, "--seed", help="-1 picks one random seed for the whole comparison (recorded)."),
    size: Optional[str] = typer.Option(None, "--size", help="WIDTHxHEIGHT, multiples of 8 (default: the model's native size)."),
    clip_skip: int = options.CLIP_SKIP,
    init: Optional[Path] = typer.Option(None, "--init", help="Input image: compare img2img results."),
    denoise: float = options.DENOISE,
    control: list[str] = options.CONTROL,
    control_model: list[str] = options.CONTROL_MODEL,
    control_mode: list[str] = options.CONTROL_MODE,
    pixel_perfect: bool = options.PIXEL_PERFECT,
    out_dir: Path = typer.Option(..., "-o", "--out", help="Folder for grid.png, cells/ and compare.json."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Compare settings side by side: a labelled grid, one PNG per cell, and what each axis shows."""
    from localdiffusion.engine import Engine
    from localdiffusion.explain.axes import parse_axis
    from localdiffusion.explain.compare import compare

    axes = [parse_axis(x, "X"), parse_axis(y, "Y"), parse_axis(z, "Z") if z else None]
    width, height = parse_size(size) if size else (None, None)
    recipe = recipe_from_fields(
        prompt=prompt, negative_prompt=negative, model=model, steps=steps, cfg_scale=cfg, sampler_name=sampler,
        scheduler=scheduler, seed=seed, width=width, height=height, clip_skip=clip_skip, denoising_strength=denoise,
        mode=mode_for(init, None, None), init_image=existing(init, "input image"),
        controls=options.parse_controls(control, control_model, control_mode, pixel_perfect),
    )
    h = home_from(home)
    library = library_for(h)
    recipe = with_control_maps(recipe, h, library)
    engine = Engine(library)
    with Bar(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total} cells"),
             TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task("Loading model", total=None)

        def on_progress(p) -> None:
            fraction = p.step / p.steps if p.steps else 0
            bar.update(task, description=f"step {p.step}/{p.steps}", total=p.total, completed=p.done + p.running * fraction)

        result = compare(recipe, *axes, out_dir=out_dir, engine=engine, on_progress=on_progress)
    for name in result.grid_files:
        out.print(str(result.out_dir / name), highlight=False)
    out.print(str(result.json_path), highlight=False)
    err.print(f"[dim]{len(result.cells)} cells in {result.engine_calls} engine call(s)[/dim]")
