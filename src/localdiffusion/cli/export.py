"""`localdiffusion export-comfyui`: an image's or a recipe's settings as a ComfyUI workflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from localdiffusion.cli.common import HomeOption, app, err, home_from, library_for, out
from localdiffusion.errors import BadInput


@app.command("export-comfyui")
def export_comfyui(
    source: Path = typer.Argument(..., help="A PNG with generation settings (ours, A1111's, ComfyUI's, ...) or a recipe JSON file."),
    out_file: Path = typer.Option(..., "-o", "--out", help="The workflow file to write, e.g. workflow.json."),
    fmt: str = typer.Option("ui", "--format", help="ui (what ComfyUI's editor opens when the file is dropped on it) or api (what its /prompt route queues)."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Write the settings of an image or a recipe as a ComfyUI workflow, and say what ComfyUI cannot do the same way."""
    from localdiffusion.interop.comfyui import FORMATS, workflow_for
    from localdiffusion.store.files import write_atomic

    if fmt not in FORMATS:
        raise BadInput(f"Unknown --format '{fmt}'; use 'ui' or 'api'.", field="format")
    workflow = workflow_for(read_recipe(source), library_for(home_from(home)))
    text = json.dumps(workflow.as_format(fmt), indent=2)
    write_atomic(out_file, lambda f: f.write(text.encode()))
    out.print(str(out_file), highlight=False)
    for note in workflow.notes:
        err.print(f"[yellow]Note:[/yellow] {note}", highlight=False, soft_wrap=True)
    if workflow.pictures:
        err.print(f"Put these pictures in ComfyUI's input folder: {', '.join(workflow.pictures)}.", highlight=False, soft_wrap=True)


def read_recipe(source: Path):
    """The Recipe in a PNG's metadata or in a recipe JSON file; one sentence when there is none."""
    from pydantic import ValidationError

    from localdiffusion.metadata import read_image_metadata
    from localdiffusion.recipe import Recipe

    if not source.is_file():
        raise BadInput(f"There is no file '{source}'; name a PNG or a recipe JSON file.", field="source")
    if source.suffix.lower() == ".json":
        try:
            return Recipe.from_json(source.read_text(encoding="utf-8"))
        except (ValidationError, UnicodeDecodeError):
            raise BadInput(f"'{source}' is not a Local Diffusion recipe (JSON with the fields of a generation).", field="source") from None
    meta = read_image_metadata(source)
    if meta.is_empty():
        raise BadInput(f"'{source}' holds no generation settings, so there is nothing to export.", field="source")
    return meta.to_recipe(strict=False)
