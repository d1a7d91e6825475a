"""`localdiffusion explain`: one generation, watched step by step, written out as a denoising timeline
and CFG triptychs with plain-language explanations (DIR/explain.json describes everything)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Optional

import typer
from PIL import Image

from localdiffusion.cli.app import HomeOption, app, err, home_from, out
from localdiffusion.cli.generate import existing, library_for, mode_for, parse_size, recipe_from_fields
from localdiffusion.recipe import Recipe


@app.command("explain")
def explain_command(
    prompt: str = typer.Argument(..., help="What to draw, in A1111 prompt syntax."),
    negative: str = typer.Option("", "--negative", "-n", help="What to avoid (same syntax)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint name, hash or path (default: the first checkpoint)."),
    steps: int = typer.Option(20, "--steps", help="Denoising steps."),
    cfg: float = typer.Option(7.0, "--cfg", help="Guidance scale."),
    sampler: str = typer.Option("Euler a", "--sampler", help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M'."),
    scheduler: str = typer.Option("Automatic", "--scheduler", help="Schedule type: Automatic, Karras, Exponential, SGM Uniform."),
    seed: int = typer.Option(-1, "--seed", help="-1 picks a random seed (recorded)."),
    size: Optional[str] = typer.Option(None, "--size", help="WIDTHxHEIGHT, multiples of 8 (default: the model's native size)."),
    clip_skip: int = typer.Option(1, "--clip-skip", help="Use an earlier CLIP layer."),
    init: Optional[Path] = typer.Option(None, "--init", help="Input image: explain an img2img run."),
    denoise: float = typer.Option(0.75, "--denoise", help="Denoising strength for --init."),
    timeline: bool = typer.Option(False, "--timeline", help="Write the denoising timeline (filmstrip and animation)."),
    cfg_steps: Optional[str] = typer.Option(None, "--cfg-steps", help="Steps for the CFG triptychs, e.g. 5,15."),
    decode_steps: Optional[str] = typer.Option(None, "--decode-steps", help="Timeline steps to decode fully with the VAE, e.g. 5,20."),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Folder for timeline.png, cfg-<step>.png, image.png and explain.json."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Explain one image: how it formed step by step, and what guidance (CFG) did to it."""
    from localdiffusion.engine import Engine
    from localdiffusion.explain.guidance import check_guidance, parse_steps

    wanted_cfg = parse_steps(cfg_steps) if cfg_steps is not None else None
    decodes = parse_steps(decode_steps, "decode steps", "decode_steps") if decode_steps is not None else []
    do_timeline = timeline or wanted_cfg is None
    width, height = parse_size(size) if size else (None, None)
    recipe = recipe_from_fields(
        prompt=prompt, negative_prompt=negative, model=model, steps=steps, cfg_scale=cfg, sampler_name=sampler,
        scheduler=scheduler, seed=seed, width=width, height=height, clip_skip=clip_skip, denoising_strength=denoise,
        mode=mode_for(init, None, None), init_image=existing(init, "input image"),
    )
    do_cfg = wanted_cfg is not None or not timeline
    if wanted_cfg is not None:
        check_guidance(recipe)
    if do_cfg and recipe.cfg_scale <= 1.0:  # with neither flag, a run without CFG still gets its timeline
        err.print(f"[dim]CFG scale {recipe.cfg_scale:g} turns guidance off, so there are no CFG triptychs.[/dim]")
        do_cfg = False
    engine = Engine(library_for(home_from(home)))
    written = explain_run(engine, recipe, Path(out_dir), timeline=do_timeline, cfg_steps=wanted_cfg if do_cfg else [],
                          decode_steps=decodes, default_cfg=do_cfg and wanted_cfg is None)
    for name in written:
        out.print(str(Path(out_dir) / name), highlight=False)


def explain_run(engine: Any, recipe: Recipe, out_dir: Path, *, timeline: bool = True, cfg_steps: list[int] | None = None,
                decode_steps: list[int] | None = None, default_cfg: bool = False) -> list[str]:
    """One generation with the asked observers; everything is built in memory first, then each file is
    written atomically, so a failed run leaves nothing behind. Returns the written names."""
    from localdiffusion.explain import guidance, timeline as tl
    from localdiffusion.metadata.png import png_with_metadata
    from localdiffusion.store.files import write_atomic, write_text_atomic

    recipe = recipe.model_copy(update={"batch_size": 1, "n_iter": 1})
    film = tl.recorder_for(engine, recipe, decode_steps or []) if timeline else None
    cfg = None
    if cfg_steps or default_cfg:
        steps = cfg_steps or guidance.default_steps(_steps_run(recipe))
        cfg = guidance.recorder_for(engine, recipe, steps)
    recorders = [r for r in (film, cfg) if r is not None]
    result = engine.generate(recipe, on_step=lambda state, phase, batch: [r(state, phase, batch) for r in recorders])
    resolved, infotext = result.recipes[0], result.infotexts[0]
    files: dict[str, bytes] = {"image.png": png_with_metadata(result.images[0], infotext, resolved.to_json())}
    summary: dict[str, Any] = {"recipe": json.loads(resolved.to_json()), "image": "image.png", "infotext": infotext}
    if film is not None:
        made = film.timeline()
        files["timeline.png"] = _png(made.filmstrip())
        files["timeline.webp"] = made.animation()
        summary["timeline"] = {"filmstrip": "timeline.png", "animation": "timeline.webp", **made.summary()}
    if cfg is not None:
        for view in cfg.views:
            files[view.file] = _png(view.triptych())
        summary["cfg"] = [view.summary() for view in cfg.views]
    summary["files"] = [*files, "explain.json"]
    for name, data in files.items():
        write_atomic(out_dir / name, lambda f, data=data: f.write(data))
    write_text_atomic(out_dir / "explain.json", json.dumps(summary, indent=2, ensure_ascii=False))
    return summary["files"]


def _steps_run(recipe: Recipe) -> int:
    """Steps the sample pass will run: img2img runs only the last `denoising_strength` of them."""
    if recipe.mode == "txt2img" or recipe.denoising_strength >= 1.0:
        return recipe.steps
    return max(1, min(int(recipe.steps * recipe.denoising_strength), recipe.steps))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
