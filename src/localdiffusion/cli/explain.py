"""`localdiffusion explain`: one generation, watched step by step, written out as a denoising timeline
and CFG triptychs with plain-language explanations (DIR/explain.json describes everything)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from localdiffusion.cli import options
from localdiffusion.cli.common import HomeOption, app, err, open_engine, out, recipe_from_fields
from localdiffusion.cli.options import RecipeFlags
from localdiffusion.explain.report import explain_run


@app.command("explain")
@options.recipe_options(seed_help="-1 picks a random seed (recorded).", init_help="Input image: explain an img2img run.")
def explain_command(
    flags: RecipeFlags,
    timeline: bool = typer.Option(False, "--timeline", help="Write the denoising timeline (filmstrip and animation)."),
    cfg_steps: Optional[str] = typer.Option(None, "--cfg-steps", help="Steps for the CFG triptychs, e.g. 5,15."),
    decode_steps: Optional[str] = typer.Option(None, "--decode-steps", help="Timeline steps to decode fully with the VAE, e.g. 5,20."),
    attention: bool = typer.Option(False, "--attention", help="Write one heatmap per word of the prompt and negative prompt (attention/<word>.png)."),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Folder for timeline.png, cfg-<step>.png, attention/, image.png and explain.json."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Explain one image: how it formed step by step, what guidance (CFG) did to it, and where each word acted."""
    from localdiffusion.explain.guidance import check_guidance, parse_steps

    wanted_cfg = parse_steps(cfg_steps) if cfg_steps is not None else None
    decodes = parse_steps(decode_steps, "decode steps", "decode_steps") if decode_steps is not None else []
    do_timeline = timeline or (wanted_cfg is None and not attention)
    recipe = recipe_from_fields(**flags.recipe_fields())
    do_cfg = wanted_cfg is not None or not (timeline or attention)
    if wanted_cfg is not None:
        check_guidance(recipe)
    if do_cfg and recipe.cfg_scale <= 1.0:  # with neither flag, a run without CFG still gets its timeline
        err.print(f"[dim]CFG scale {recipe.cfg_scale:g} turns guidance off, so there are no CFG triptychs.[/dim]")
        do_cfg = False
    engine = open_engine(home)
    written = explain_run(engine, recipe, Path(out_dir), timeline=do_timeline, cfg_steps=wanted_cfg if do_cfg else [],
                          decode_steps=decodes, default_cfg=do_cfg and wanted_cfg is None, attention=attention)
    for name in written:
        out.print(str(Path(out_dir) / name), highlight=False)
