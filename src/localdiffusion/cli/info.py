"""`localdiffusion info IMAGE`: show the generation settings stored in an image, from any common tool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from localdiffusion.cli.common import app, out
from localdiffusion.metadata import ImageMetadata, read_image_metadata
from localdiffusion.recipe import Recipe

SOURCE_NAMES = {
    "a1111": "AUTOMATIC1111 (or a compatible tool)", "comfyui": "ComfyUI", "invokeai": "InvokeAI",
    "fooocus": "Fooocus", "novelai": "NovelAI", "localdiffusion": "Local Diffusion",
}
LABELS = {
    "prompt": "Prompt", "negative_prompt": "Negative prompt", "sampler_name": "Sampler", "scheduler": "Schedule type",
    "cfg_scale": "CFG scale", "subseed": "Variation seed", "subseed_strength": "Variation seed strength",
    "clip_skip": "Clip skip", "enable_hr": "Hires fix", "hr_scale": "Hires upscale", "hr_upscaler": "Hires upscaler",
    "hr_second_pass_steps": "Hires steps", "rng": "RNG", "refiner_checkpoint": "Refiner",
    "eta_noise_seed_delta": "ENSD (eta noise seed delta)", "sgm_noise_multiplier": "SGM noise multiplier", "pad_cond_uncond": "Pad conds",
}


@app.command("info")
def info(
    image: Path = typer.Argument(..., help="A PNG, JPEG or WEBP image made by Local Diffusion, A1111, ComfyUI, InvokeAI, Fooocus or NovelAI."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object (Recipe field names, source, model_name, model_hash)."),
) -> None:
    """Show the prompt and settings an image was made with."""
    meta = read_image_metadata(image)
    if as_json:
        typer.echo(json.dumps(as_json_object(meta), ensure_ascii=False, indent=2))
    elif meta.is_empty():
        out.print(f"'{image}' holds no generation settings that Local Diffusion can read.", highlight=False)
    else:
        out.print(settings_table(meta, title=str(image)))


def as_json_object(meta: ImageMetadata) -> dict[str, Any]:
    return {**meta.fields, "source": meta.source, "model_name": meta.model_name, "model_hash": meta.model_hash}


def settings_table(meta: ImageMetadata, *, title: str) -> Table:
    """Prompt and negative prompt first, then the settings in Recipe order, then where they came from."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("setting", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name in Recipe.model_fields:
        if name in meta.fields:
            table.add_row(label(name), format_value(meta.fields[name]))
    table.add_section()
    table.add_row("Source tool", SOURCE_NAMES.get(meta.source or "", "unknown"))
    if meta.model_name:
        table.add_row("Model", meta.model_name)
    if meta.model_hash:
        table.add_row("Model hash", meta.model_hash)
    if meta.extra:
        table.add_section()
        for key, value in meta.extra.items():
            table.add_row(f"[dim]{key}[/dim]", f"[dim]{_escape(value)}[/dim]")
    return table


def label(field: str) -> str:
    return LABELS.get(field, field.replace("_", " ").capitalize())


def format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return _escape(text)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
