"""Options that several commands share (generate, compare, explain), defined once."""

from __future__ import annotations

import typer

NEGATIVE = typer.Option("", "--negative", "-n", help="What to avoid (same syntax).")
MODEL = typer.Option(None, "--model", "-m", help="Checkpoint name, hash or path (default: the first checkpoint).")
STEPS = typer.Option(20, "--steps", help="Denoising steps: more refines detail, slower.")
CFG = typer.Option(7.0, "--cfg", help="Guidance scale: how strongly the image follows the prompt.")
SAMPLER = typer.Option("Euler a", "--sampler", help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M'.")
SCHEDULER = typer.Option("Automatic", "--scheduler", help="Schedule type: Automatic, Karras, Exponential, SGM Uniform.")
CLIP_SKIP = typer.Option(1, "--clip-skip", help="Use an earlier CLIP layer (2 suits many anime models).")
DENOISE = typer.Option(0.75, "--denoise", help="Denoising strength: 0 keeps the input, 1 ignores it.")

CONTROL = typer.Option(
    [], "--control",
    help="ControlNet unit TYPE:IMAGE[:WEIGHT[:START:END]], repeatable; TYPE is a preprocessor (none, canny, scribble, lineart, openpose, depth).",
)
CONTROL_MODEL = typer.Option(
    [], "--control-model",
    help="ControlNet model for the --control units, in order (given once: for all); default: picked by the model's family and TYPE.",
)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_control(spec: str):
    """One --control value as a ControlUnit. The image may itself hold colons (C:\\...): only trailing numbers count."""
    from localdiffusion.control.preprocessors import MODULES
    from localdiffusion.errors import BadInput, one_of
    from localdiffusion.recipe import ControlUnit

    module, _, rest = spec.partition(":")
    if module not in MODULES:
        raise BadInput(f"The control type '{module}' in '{spec}' is unknown; start --control with one of {one_of(list(MODULES))}, e.g. canny:photo.png.", field="control")
    parts = rest.split(":")
    numbers: list[float] = []
    while len(parts) > 1 and len(numbers) < 3 and (value := _number(parts[-1])) is not None:
        numbers.insert(0, value)
        parts.pop()
    image = ":".join(parts)
    if not image or len(numbers) == 2:
        raise BadInput(f"The control '{spec}' is not TYPE:IMAGE[:WEIGHT[:START:END]]; write it like canny:photo.png:0.8:0:0.6.", field="control")
    image = _existing_image(image, spec)
    limits = {"weight": 2.0, "guidance_start": 1.0, "guidance_end": 1.0}
    window = dict(zip(limits, numbers))
    for name, value in window.items():
        if not 0 <= value <= limits[name]:
            raise BadInput(f"The {name.replace('_', ' ')} {value:g} in '{spec}' is out of range; use 0 to {limits[name]:g}.", field="control")
    return ControlUnit(module=module, image=image, **window)


def _existing_image(image: str, spec: str) -> str:
    from pathlib import Path

    from localdiffusion.errors import BadInput

    path = Path(image).expanduser()
    if not path.is_file():
        raise BadInput(f"The control image '{image}' in '{spec}' does not exist; give the path of an image file.", field="control")
    return str(path.resolve())


def parse_controls(specs: list[str], models: list[str]) -> list:
    """The --control units with their --control-model names: one per unit in order, or one for all."""
    from localdiffusion.errors import BadInput

    units = [parse_control(spec) for spec in specs]
    if models and not units:
        raise BadInput("--control-model names the ControlNet of a --control unit; add a --control TYPE:IMAGE.", field="control_model")
    if len(models) > 1 and len(models) != len(units):
        raise BadInput(f"There are {len(models)} --control-model values for {len(units)} --control units; give one for each, or one for all.", field="control_model")
    names = models * len(units) if len(models) == 1 else models or [""] * len(units)
    return [u.model_copy(update={"model": name}) for u, name in zip(units, names)]
