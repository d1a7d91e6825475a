"""`localdiffusion generate` and `localdiffusion replay`: thin veneers over Engine.generate()."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from localdiffusion.cli import options
from localdiffusion.cli.common import (HomeOption, app, err, home_from, library_for, out, progress_bar, recipe_from_fields,
                                       with_control_maps)
from localdiffusion.cli.options import RecipeFlags, existing
from localdiffusion.errors import BadInput
from localdiffusion.recipe import Outpaint, Recipe
from localdiffusion.store.home import Home


OUTPAINT_FILLS = ("edge", "noise", "blur")


def parse_outpaint(text: str) -> Outpaint:
    parts = [p.strip() for p in text.split(",")]
    fill = parts.pop() if len(parts) == 5 else "edge"
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise BadInput(f"The outpaint sides '{text}' are not four pixel counts; write them as left,right,up,down[,fill], e.g. 0,128,0,0.", field="outpaint")
    if fill not in OUTPAINT_FILLS:
        raise BadInput(f"The outpaint fill '{fill}' is unknown; choose one of {', '.join(OUTPAINT_FILLS)}.", field="outpaint")
    left, right, up, down = map(int, parts)
    return Outpaint(left=left, right=right, up=up, down=down, fill=fill)


@app.command("generate")
@options.recipe_options(
    prompt_help="What to draw, in A1111 prompt syntax: (word:1.2), \\[from:to:0.5], <lora:name:0.8>, BREAK.",
    seed_help="-1 picks a random seed (recorded in the image).",
    size_help="WIDTHxHEIGHT, multiples of 8 (default: the model's native size, or the input image's).",
    init_help="Input image for img2img, inpaint or outpaint.",
)
def generate(
    flags: RecipeFlags,
    subseed: int = typer.Option(-1, "--subseed", help="Variation seed."),
    subseed_strength: float = typer.Option(0.0, "--subseed-strength", help="How far toward the variation seed (0-1)."),
    batch_size: int = typer.Option(1, "--batch-size", help="Images per batch (generated together)."),
    batch_count: int = typer.Option(1, "--batch-count", help="Number of batches (generated one after another)."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Inpaint mask: white where the image should change."),
    mask_blur: int = typer.Option(4, "--mask-blur", help="Feather the mask edge by this many pixels."),
    fill: int = typer.Option(1, "--fill", help="Masked content: 0 fill, 1 original, 2 latent noise, 3 latent nothing."),
    only_masked: bool = typer.Option(False, "--only-masked", help="Inpaint only the masked area, at full resolution."),
    padding: int = typer.Option(32, "--padding", help="With --only-masked: pixels of context around the mask."),
    outpaint: Optional[str] = typer.Option(None, "--outpaint", help="Extend the image: pixels left,right,up,down, then optionally the fill (edge, noise, blur)."),
    hires: Optional[float] = typer.Option(None, "--hires", help="Hires fix: second pass at this scale (e.g. 2)."),
    hires_steps: int = typer.Option(0, "--hires-steps", help="Steps of the hires pass (0: same as --steps)."),
    hires_upscaler: str = typer.Option("Latent", "--hires-upscaler", help="Latent, Latent (nearest), Latent (bicubic), Latent (antialiased), Lanczos, Nearest, or an upscaler model in models/ESRGAN by name."),
    refiner: Optional[str] = typer.Option(None, "--refiner", help="SDXL refiner checkpoint that takes over for the last steps (A1111's Refiner)."),
    distilled_cfg: Optional[float] = typer.Option(None, "--distilled-cfg", help="FLUX dev: the guidance distilled into the model (Forge's Distilled CFG Scale; default 3.5); keep --cfg at 1."),
    refiner_switch_at: float = typer.Option(0.8, "--refiner-switch-at", help="With --refiner: the fraction of the steps after which the refiner takes over (0-1)."),
    control: list[str] = options.CONTROL,
    control_model: list[str] = options.CONTROL_MODEL,
    control_mode: list[str] = options.CONTROL_MODE,
    pixel_perfect: bool = options.PIXEL_PERFECT,
    reference: list[str] = options.REFERENCE,
    reference_model: list[str] = options.REFERENCE_MODEL,
    out_dir: Optional[Path] = typer.Option(None, "-o", "--out", help="Folder for the PNGs (default: HOME/outputs/<mode>-images/<date>)."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, mps or cpu (default: the best available)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float16, bfloat16 or float32 (default: settings.json's \"dtype\", else fp16 on a GPU, bf16 on a CPU with native bf16, else fp32)."),
    vae_tiling: bool = typer.Option(False, "--vae-tiling", help="Decode in tiles: large images with bounded memory."),
    vae_decode: str = typer.Option("full", "--vae-decode", help="full (the model's VAE) or fast (TAESD from models/VAE-approx: much faster, a little less faithful)."),
    cpu_offload: bool = typer.Option(False, "--cpu-offload", help="Keep weights on the CPU until needed (small GPUs)."),
    attention_slicing: bool = typer.Option(False, "--attention-slicing", help="Compute attention in slices to save memory."),
    backend: str = options.BACKEND,
    ov_device: str = options.OV_DEVICE,
    compile_unet: bool = options.COMPILE,
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow loading pickled .ckpt/.pt checkpoints (they can run code; only for files you trust)."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Generate images from a prompt (txt2img), or from an input image (img2img, inpaint, outpaint)."""
    recipe = recipe_from_fields(
        **flags.recipe_fields(mask, outpaint), subseed=subseed, subseed_strength=subseed_strength,
        batch_size=batch_size, n_iter=batch_count, mask_blur=mask_blur, inpainting_fill=fill,
        inpaint_full_res=only_masked, inpaint_full_res_padding=padding, mask=existing(mask, "mask"),
        outpaint=parse_outpaint(outpaint) if outpaint else None,
        refiner_checkpoint=refiner, refiner_switch_at=refiner_switch_at, distilled_cfg_scale=distilled_cfg,
        enable_hr=hires is not None, hr_scale=hires or 2.0, hr_second_pass_steps=hires_steps, hr_upscaler=hires_upscaler,
        controls=options.parse_controls(control, control_model, control_mode, pixel_perfect),
        references=options.parse_references(reference, reference_model),
    )
    engine_options = dict(device=device, dtype=dtype, vae_tiling=vae_tiling, cpu_offload=cpu_offload, attention_slicing=attention_slicing,
                          vae_decode=vae_decode, backend=backend, ov_device=ov_device, compile=compile_unet)
    run(recipe, home_from(home), out_dir, engine_options, allow_pickle)


@app.command("replay")
def replay(
    image: Path = typer.Argument(..., help="A PNG made by Local Diffusion or A1111."),
    out_dir: Optional[Path] = typer.Option(None, "-o", "--out", help="Folder for the regenerated PNG."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float16, bfloat16 or float32 (default: as generate; float32 gives an A1111 image's exact picture)."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Regenerate an image from the recipe embedded in it; first say what, if anything, will make it differ."""
    import torch

    from localdiffusion.engine.device import pick_device, pick_dtype
    from localdiffusion.engine.replay import recipe_for_replay, replay_differences
    from localdiffusion.metadata import read_image_metadata

    h = home_from(home)
    library = library_for(h)
    recipe = recipe_for_replay(image, library)
    meta = read_image_metadata(image)
    device = pick_device(None)
    reasons = replay_differences(meta, recipe, library, device)
    # Our own images replay in the precision generate uses here; an A1111 image is exact only in fp32.
    precision = pick_dtype(device, dtype or library.settings.dtype)
    if meta.source == "a1111" and precision != torch.float32:
        reasons.append(f"Computing in {str(precision).removeprefix('torch.')} instead of float32 changes the last bits "
                       f"of the picture (use --dtype float32).")
    for reason in reasons:
        err.print(f"[yellow]Will differ:[/yellow] {reason}", highlight=False, soft_wrap=True)
    run(recipe, h, out_dir, {"dtype": dtype})


def run(recipe: Recipe, home: Home, out_dir: Optional[Path], options: dict, allow_pickle: bool = False) -> None:
    from localdiffusion.engine import Engine, EngineOptions, RunHooks
    from localdiffusion.jobs.artefacts import gallery_images
    from localdiffusion.jobs.results import ResultStore

    library = library_for(home, allow_pickle)
    recipe = with_control_maps(recipe, home, library)
    engine = Engine(library, EngineOptions(**options))
    with progress_bar("Loading model", recipe.steps * recipe.n_iter) as bar:
        result = engine.generate(recipe, hooks=RunHooks(on_progress=bar.on_step))
    for note in result.notes:  # e.g. a run the OpenVINO backend cannot do, made with torch
        err.print(f"[yellow]Note:[/yellow] {note}", highlight=False, soft_wrap=True)
    # The images are saved as the server's worker saves a job's: through the result store (to --out if given).
    store = ResultStore(home.outputs, library.db)
    for image in gallery_images(engine, result, recipe.mode):
        [saved] = store.save_images([image], folder=out_dir)
        out.print(f"{saved.path}  [dim]seed {image.recipe.seed}[/dim]", highlight=False)
    decoded = " (decoded with TAESD)" if result.decoder == "fast" else ""
    err.print(f"[dim]{len(result.images)} image(s) in {result.timings['total']:.1f} s{decoded}[/dim]")
