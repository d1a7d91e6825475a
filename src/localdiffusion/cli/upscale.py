"""`localdiffusion upscale IMAGE`: make an image larger with an upscaler, optionally repainting it in tiles (SD upscale)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from localdiffusion.cli.common import HomeOption, app, home_from, library_for, out, progress_bar, recipe_from_fields
from localdiffusion.engine.images import open_image
from localdiffusion.errors import BadInput
from localdiffusion.metadata.ours import RECIPE_CHUNK
from localdiffusion.store.png import save_png


@app.command("upscale")
def upscale(
    image: Path = typer.Argument(..., help="The image to make larger."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the PNG (written whole or not at all)."),
    upscaler: str = typer.Option("Lanczos", "--upscaler", "-u", help="Lanczos, Nearest, or the name of a model in models/ESRGAN."),
    scale: float = typer.Option(2.0, "--scale", "-s", help="How many times larger (any factor up to 8)."),
    sd_tiles: bool = typer.Option(False, "--sd-tiles", help="SD upscale: repaint the upscaled image tile by tile with a checkpoint."),
    denoise: float = typer.Option(0.3, "--denoise", help="SD upscale: how much each tile may change (0-1)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="SD upscale: the prompt (default: the one stored in the image)."),
    negative: Optional[str] = typer.Option(None, "--negative", "-n", help="SD upscale: the negative prompt."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="SD upscale: the checkpoint (default: the image's, else the first)."),
    steps: int = typer.Option(20, "--steps", help="SD upscale: sampling steps (only the last `denoise` part of them runs)."),
    seed: int = typer.Option(-1, "--seed", help="SD upscale: one seed for every tile (-1: random)."),
    tile: Optional[int] = typer.Option(None, "--tile", help="SD upscale: tile size in pixels (default: the model's native size)."),
    overlap: int = typer.Option(64, "--overlap", help="SD upscale: pixels neighbouring tiles share, blended."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow pickled (.pth/.ckpt) models, read weights-only."),
    home_dir: Optional[Path] = HomeOption,
) -> None:
    """Upscale IMAGE into a PNG that records what was done (A1111 infotext and, for SD upscale, the recipe)."""
    if output.suffix.lower() != ".png":
        raise BadInput(f"The output '{output}' must be a .png file, so that it can carry what was done.", field="output")
    home = home_from(home_dir)
    library = library_for(home, allow_pickle)
    source = open_image(str(image), "image")
    stored_infotext = source.info.get("parameters", "") if isinstance(source.info.get("parameters"), str) else ""
    with progress_bar("Upscaling", total=1) as bar:
        if sd_tiles:
            result, infotext, recipe_json = _sd(source, library, upscaler, scale, denoise, prompt, negative, model, steps,
                                                seed, tile, overlap, str(image), bar.on_step)
        else:
            result, infotext, recipe_json = _plain(source, library, upscaler, scale, stored_infotext, bar.on_step)
    save_png(result, output, infotext, recipe_json)
    out.print(f"{output}  [dim]{source.width}x{source.height} -> {result.width}x{result.height}[/dim]", highlight=False)


def _plain(source, library, upscaler: str, scale: float, stored_infotext: str, on_progress):
    from localdiffusion.engine import Progress
    from localdiffusion.engine.device import pick_device
    from localdiffusion.finish.extras import ExtrasUpscale, postprocess_params, run_extras, with_params

    job = ExtrasUpscale(upscaler=upscaler, scale=scale)
    result = run_extras(source, job, library, pick_device(None),
                        on_tile=lambda done, total: on_progress(Progress(done, total, 0, 1, "upscale")))
    recipe_json = source.info.get(RECIPE_CHUNK) if isinstance(source.info.get(RECIPE_CHUNK), str) else None
    return result, with_params(stored_infotext, postprocess_params(job, result.size)), recipe_json


def _sd(source, library, upscaler, scale, denoise, prompt, negative, model, steps, seed, tile, overlap, source_path, on_progress):
    from localdiffusion.engine import Engine
    from localdiffusion.finish.sd_upscale import sd_upscale
    from localdiffusion.recipe import Recipe

    stored = source.info.get(RECIPE_CHUNK)
    base = Recipe.from_json(stored) if isinstance(stored, str) else Recipe()
    fields = {**base.model_dump(), "mode": "img2img", "denoising_strength": denoise, "steps": steps, "seed": seed,
              "enable_hr": False, "controls": [], "references": [], "init_image": None, "mask": None, "outpaint": None}
    for name, value in (("prompt", prompt), ("negative_prompt", negative), ("model", model)):
        if value is not None:
            fields[name] = value
    recipe = recipe_from_fields(**fields)
    done = sd_upscale(Engine(library), source, recipe, upscaler, scale, tile, overlap, source=source_path, on_progress=on_progress)
    return done.image, done.infotext, done.recipe.to_json()
