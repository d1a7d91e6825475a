"""Options that several commands share (generate, compare, explain), defined once, and the parsing of their values.

`recipe_options` gives a command the one shared set of recipe flags (PROMPT, --negative, --model, --steps,
--cfg, --sampler, --scheduler, --seed, --size, --clip-skip, --init, --denoise, --preset) as a single `RecipeFlags`
argument; `RecipeFlags.recipe_fields()` turns them into Recipe fields. `--preset fast` fills the settings of a
few-step model (engine/presets.py) into the flags the command line did not give, and says which it set.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

import typer

from localdiffusion.errors import BadInput, one_of

NEGATIVE = typer.Option("", "--negative", "-n", help="What to avoid (same syntax).")
MODEL = typer.Option(None, "--model", "-m", help="Checkpoint name, hash or path (default: the first checkpoint).")
STEPS = typer.Option(20, "--steps", help="Denoising steps: more refines detail, slower.")
CFG = typer.Option(7.0, "--cfg", help="Guidance scale: how strongly the image follows the prompt.")
BACKEND = typer.Option("torch", "--backend", help="What runs the networks: torch, or openvino (CPUs, Intel GPUs and NPUs; pip install \"localdiffusion\\[openvino]\").")
OV_DEVICE = typer.Option("AUTO", "--ov-device", help="OpenVINO's device with --backend openvino: CPU, GPU, NPU or AUTO.")
COMPILE = typer.Option(False, "--compile", help="torch.compile the UNet: slow first image, faster after (GPUs; cached under HOME/cache/).")
SAMPLER = typer.Option("Euler a", "--sampler", help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M'.")
SCHEDULER = typer.Option("Automatic", "--scheduler",
                         help="Schedule type: Automatic (the sampler's own), Uniform, Karras, Exponential, Polyexponential, SGM Uniform, "
                              "KL Optimal, Align Your Steps, Simple, Normal, DDIM or Beta.")
ETA = typer.Option(None, "--eta", help="Noise an ancestral sampler or DDIM adds back each step, 0-1 (default: 1, DDIM 0).")
ENSD = typer.Option(0, "--ensd", help="A1111's eta noise seed delta: the step noise comes from seed + ENSD (31337 on many shared images).")
RNG_SOURCE = typer.Option("cpu", "--rng", help="Noise source: cpu, device (A1111's GPU) or nv (an NVIDIA GPU's numbers on any machine).")
SGM_NOISE = typer.Option(False, "--sgm-noise-multiplier", help="A1111's SGM noise multiplier: the first noise times sqrt(1 + sigma^2).")
PRESET = typer.Option(None, "--preset", help="fast: a few-step model's own settings (SD-Turbo, SDXL-Turbo, LCM, Hyper-SD, Lightning: steps, CFG, sampler, schedule) for the options you do not give.")
PAD_CONDS = typer.Option(False, "--pad-conds", help="A1111's 'Pad prompt/negative prompt': long prompts run in one padded batch.")
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
CONTROL_MODE = typer.Option(
    [], "--control-mode",
    help="Control mode for the --control units, in order (given once: for all): balanced, prompt (A1111's 'My prompt is more important') or controlnet ('ControlNet is more important').",
)
PIXEL_PERFECT = typer.Option(
    False, "--pixel-perfect",
    help="Pixel perfect for every --control unit: its map is made at the image's size (A1111's Pixel Perfect works out the preprocessor resolution).",
)
REFERENCE = typer.Option(
    [], "--reference",
    help="Reference image IMAGE[:SCALE] the image should resemble (a character's look), through an IP-Adapter; repeatable. SCALE 0-1.5, default 0.5.",
)
REFERENCE_MODEL = typer.Option(
    [], "--reference-model",
    help="IP-Adapter for the --reference images, in order (given once: for all); default: the one in models/IP-Adapter that fits the model.",
)


SIZE_HELP = "WIDTHxHEIGHT, multiples of 8 (default: the model's native size)."


@dataclass(frozen=True)
class RecipeFlags:
    """The recipe flags every image-making command shares, as given on the command line."""

    prompt: str
    negative: str
    model: Optional[str]
    steps: int
    cfg: float
    sampler: str
    scheduler: str
    seed: int
    size: Optional[str]
    clip_skip: int
    init: Optional[Path]
    denoise: float
    eta: Optional[float]
    ensd: int
    rng: str
    sgm_noise_multiplier: bool
    pad_conds: bool
    preset: Optional[str] = None
    given: frozenset = field(default=frozenset(), compare=False)  # the flags the command line gave (the rest are their defaults)

    def recipe_fields(self, mask: Optional[Path] = None, outpaint: Optional[str] = None) -> dict:
        """Recipe fields from these flags; the mode follows from --init and the command's --mask/--outpaint."""
        width, height = parse_size(self.size) if self.size else (None, None)
        return dict(
            prompt=self.prompt, negative_prompt=self.negative, model=self.model, steps=self.steps, cfg_scale=self.cfg,
            sampler_name=self.sampler, scheduler=self.scheduler, seed=self.seed, width=width, height=height,
            clip_skip=self.clip_skip, denoising_strength=self.denoise, eta=self.eta, eta_noise_seed_delta=self.ensd,
            rng=rng_source(self.rng), sgm_noise_multiplier=self.sgm_noise_multiplier, pad_cond_uncond=self.pad_conds,
            mode=mode_for(self.init, mask, outpaint), init_image=existing(self.init, "input image"),
        )


def _recipe_parameters(prompt_help: str, seed_help: str, size_help: str, init_help: str) -> list[inspect.Parameter]:
    """The typer parameters of `RecipeFlags`, in its field order (their help texts as the command words them)."""
    declared = {
        "prompt": (str, typer.Argument(..., help=prompt_help)),
        "negative": (str, NEGATIVE),
        "model": (Optional[str], MODEL),
        "steps": (int, STEPS),
        "cfg": (float, CFG),
        "sampler": (str, SAMPLER),
        "scheduler": (str, SCHEDULER),
        "seed": (int, typer.Option(-1, "--seed", help=seed_help)),
        "size": (Optional[str], typer.Option(None, "--size", help=size_help)),
        "clip_skip": (int, CLIP_SKIP),
        "init": (Optional[Path], typer.Option(None, "--init", help=init_help)),
        "denoise": (float, DENOISE),
        "eta": (Optional[float], ETA),
        "ensd": (int, ENSD),
        "rng": (str, RNG_SOURCE),
        "sgm_noise_multiplier": (bool, SGM_NOISE),
        "pad_conds": (bool, PAD_CONDS),
        "preset": (Optional[str], PRESET),
    }
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=declared[f.name][1], annotation=declared[f.name][0])
            for f in fields(RecipeFlags) if f.name in declared]


def recipe_options(*, seed_help: str, init_help: str, prompt_help: str = "What to draw, in A1111 prompt syntax.", size_help: str = SIZE_HELP):
    """Give a command the shared recipe flags: its parameter `flags: RecipeFlags` becomes those flags (in that
    place of its options), and the command is called with them gathered into one RecipeFlags."""
    names = [f.name for f in fields(RecipeFlags) if f.name != "given"]

    def decorate(command):
        own = inspect.signature(command, eval_str=True)
        if "flags" not in own.parameters:
            raise TypeError(f"{command.__name__} needs a `flags: RecipeFlags` parameter for the recipe options")
        parameters = []
        for parameter in own.parameters.values():
            if parameter.name == "flags":
                parameters += _recipe_parameters(prompt_help, seed_help, size_help, init_help)
            else:
                parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(command)
        def with_flags(**given):
            flags = RecipeFlags(**{name: given.pop(name) for name in names}, given=given_on_command_line())
            if flags.preset is not None:
                flags = with_preset(flags, given.get("home"))
            return command(flags=flags, **given)

        with_flags.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
        return with_flags

    return decorate


# The flags a preset sets, by the recipe field each gives.
PRESET_FLAGS = {"steps": "steps", "cfg": "cfg_scale", "sampler": "sampler_name", "scheduler": "scheduler"}


def given_on_command_line() -> frozenset:
    """The parameters of the running command that the command line (or the environment) gave."""
    try:  # typer >= 0.17 carries its own click
        from typer._click.core import ParameterSource
        from typer._click.globals import get_current_context
    except ImportError:
        from click.core import ParameterSource
        from click.globals import get_current_context

    context = get_current_context(silent=True)
    if context is None:
        return frozenset()
    return frozenset(name for name in context.params
                     if context.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None))


def with_preset(flags: RecipeFlags, home: Optional[Path]) -> RecipeFlags:
    """The flags with `--preset fast` applied: the model's (or a prompt LoRA's) few-step settings for the flags
    the command line did not give; prints what it set, or that the model is not one it knows."""
    from dataclasses import replace

    from localdiffusion.cli.common import err, home_from, library_for
    from localdiffusion.engine.presets import apply_preset, check_preset, recipe_preset
    from localdiffusion.recipe import Recipe

    check_preset(flags.preset)
    library = library_for(home_from(home))
    preset = recipe_preset(Recipe(prompt=flags.prompt, model=flags.model), library)
    if preset is None:
        err.print("[yellow]--preset fast:[/yellow] the model is not one this knows as a few-step model (SD-Turbo, SDXL-Turbo, "
                  "LCM, Hyper-SD, Lightning); nothing changed.", highlight=False)
        return flags
    current = {field: getattr(flags, flag) for flag, field in PRESET_FLAGS.items()}
    given = {field for flag, field in PRESET_FLAGS.items() if flag in flags.given}
    changes = apply_preset(current, preset, given)
    by_field = {field: flag for flag, field in PRESET_FLAGS.items()}
    set_text = ", ".join(f"--{by_field[k]} {v:g}" if isinstance(v, float) else f"--{by_field[k]} {v!r}" if isinstance(v, str) else f"--{by_field[k]} {v}" for k, v in changes.items())
    kept = ", ".join(f"--{by_field[f]}" for f in sorted(given))
    err.print(f"--preset fast ({preset.kind}, recognised in '{preset.model}' by its {preset.found_in}): "
              f"{'set ' + set_text if set_text else 'nothing to set'}" + (f"; kept your {kept}" if kept else "") + ".",
              highlight=False, soft_wrap=True)
    return replace(flags, **{by_field[k]: v for k, v in changes.items()})


def rng_source(text: str) -> str:
    """--rng's value as a Recipe's `rng` (A1111's names CPU, GPU and NV are accepted too)."""
    sources = {"cpu": "cpu", "device": "device", "gpu": "device", "nv": "nv"}
    if text.lower() not in sources:
        raise BadInput(f"The RNG source '{text}' is not known; use {one_of(['cpu', 'device', 'nv'])}.", field="rng")
    return sources[text.lower()]


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise BadInput(f"The size '{text}' is not WIDTHxHEIGHT; write it like 512x768.", field="size")
    return int(parts[0]), int(parts[1])


def mode_for(init: Optional[Path], mask: Optional[Path], outpaint: Optional[str]) -> str:
    if mask is not None and init is None:
        raise BadInput("A mask needs an image to inpaint; give it with --init.", field="mask")
    if outpaint is not None and init is None:
        raise BadInput("Outpainting needs an image to extend; give it with --init.", field="outpaint")
    if outpaint is not None:
        return "outpaint"
    return "inpaint" if mask is not None else ("img2img" if init is not None else "txt2img")


def existing(path: Optional[Path], what: str) -> Optional[str]:
    if path is None:
        return None
    if not path.is_file():
        raise BadInput(f"The {what} '{path}' does not exist; give the path of an image file.")
    return str(path.resolve())


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_control(spec: str):
    """One --control value as a ControlUnit. The image may itself hold colons (C:\\...): only trailing numbers count."""
    from localdiffusion.control.preprocessors import MODULES
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
    image = _existing_image(image, spec, "control")
    limits = {"weight": 2.0, "guidance_start": 1.0, "guidance_end": 1.0}
    window = dict(zip(limits, numbers))
    for name, value in window.items():
        if not 0 <= value <= limits[name]:
            raise BadInput(f"The {name.replace('_', ' ')} {value:g} in '{spec}' is out of range; use 0 to {limits[name]:g}.", field="control")
    return ControlUnit(module=module, image=image, **window)


def _existing_image(image: str, spec: str, option: str) -> str:
    path = Path(image).expanduser()
    if not path.is_file():
        raise BadInput(f"The {option} image '{image}' in '{spec}' does not exist; give the path of an image file.", field=option)
    return str(path.resolve())


def _one_each_or_all(names: list[str], count: int) -> list[str]:
    """Model names for `count` items: one name per item in order, one name for all, or none ("")."""
    return names * count if len(names) == 1 else names or [""] * count


# --control-mode's short names for the ControlNet extension's control modes.
CONTROL_MODE_NAMES = {"balanced": "Balanced", "prompt": "My prompt is more important", "controlnet": "ControlNet is more important"}


def parse_controls(specs: list[str], models: list[str], modes: list[str] | None = None, pixel_perfect: bool = False) -> list:
    """The --control units with their --control-model names and --control-mode modes (each: one per unit in
    order, or one for all), and --pixel-perfect for all."""
    from localdiffusion.recipe import CONTROL_MODES

    units = [parse_control(spec) for spec in specs]
    for given, option, what in ((models, "--control-model", "names the ControlNet of"), (modes or [], "--control-mode", "sets the mode of"),
                                ([True] if pixel_perfect else [], "--pixel-perfect", "sets the map size of")):
        field = option.lstrip("-").replace("-", "_")
        if given and not units:
            raise BadInput(f"{option} {what} a --control unit; add a --control TYPE:IMAGE.", field=field)
        if len(given) > 1 and len(given) != len(units):
            raise BadInput(f"There are {len(given)} {option} values for {len(units)} --control units; give one for each, or one for all.", field=field)
    named = []
    for mode in modes or []:
        name = CONTROL_MODE_NAMES.get(mode.lower(), mode)
        if name not in CONTROL_MODES:
            raise BadInput(f"The control mode '{mode}' is unknown; use one of {one_of(list(CONTROL_MODE_NAMES))}.", field="control_mode")
        named.append(name)
    return [u.model_copy(update={"model": name, "control_mode": mode or "Balanced", "pixel_perfect": pixel_perfect})
            for u, name, mode in zip(units, _one_each_or_all(models, len(units)), _one_each_or_all(named, len(units)))]


def parse_reference(spec: str):
    """One --reference value as a Reference. The image may itself hold colons (C:\\...): a trailing number is the scale."""
    from localdiffusion.recipe import Reference

    image, colon, tail = spec.rpartition(":")
    scale = _number(tail) if colon and image else None
    if scale is None or Path(spec).expanduser().is_file():
        image, scale = spec, Reference.model_fields["scale"].default
    if not 0 <= scale <= 1.5:
        raise BadInput(f"The reference scale {scale:g} in '{spec}' is out of range; use 0 to 1.5 (0.5 is a good start).", field="reference")
    return Reference(image=_existing_image(image, spec, "reference"), scale=scale)


def parse_references(specs: list[str], models: list[str]) -> list:
    """The --reference images with their --reference-model names: one per reference in order, or one for all."""
    references = [parse_reference(spec) for spec in specs]
    if models and not references:
        raise BadInput("--reference-model names the IP-Adapter of a --reference image; add a --reference IMAGE.", field="reference_model")
    if len(models) > 1 and len(models) != len(references):
        raise BadInput(f"There are {len(models)} --reference-model values for {len(references)} --reference images; give one for each, or one for all.",
                       field="reference_model")
    return [r.model_copy(update={"model": name}) for r, name in zip(references, _one_each_or_all(models, len(references)))]
