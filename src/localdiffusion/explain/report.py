"""One explained generation: the timeline, CFG and attention observers on a single run, as named files.

`explain_files` builds everything in memory and returns it (the studio's explain job hands the files
to the result store); `explain_run` writes them into a folder, each atomically, so a failed run
leaves nothing behind.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from localdiffusion.engine.attention import AttentionRecorder
from localdiffusion.engine.hooks import RunHooks
from localdiffusion.explain import attention as attn, guidance, timeline as tl
from localdiffusion.prompts import extract_loras
from localdiffusion.recipe import Recipe
from localdiffusion.store.files import write_atomic
from localdiffusion.store.png import png_with_metadata

SUMMARY = "explain.json"  # lists every file of the explanation, itself last


def explain_run(engine: Any, recipe: Recipe, out_dir: Path, **options: Any) -> list[str]:
    """`explain_files`, written to `out_dir` (explain.json last); returns the written names."""
    files = explain_files(engine, recipe, **options)
    for name, data in files.items():
        write_atomic(out_dir / name, lambda f, data=data: f.write(data))
    return list(files)


def explain_files(engine: Any, recipe: Recipe, *, timeline: bool = True, cfg_steps: list[int] | None = None,
                  decode_steps: list[int] | None = None, default_cfg: bool = False, attention: bool = False,
                  on_progress: Callable[[Any], None] | None = None, cancel: Callable[[], bool] | None = None,
                  frames: bool = False, vae_decode: str | None = None) -> dict[str, bytes]:
    """One generation with the asked observers; returns its files by relative name, explain.json last.
    `on_progress` and `cancel` go to the engine (progress events, cancelling within a step);
    `frames` also gives x0 at up to tl.FRAMES steps per pass, decoded with the VAE, as
    `timeline/<pass>-NNN.png` (the studio's slider)."""
    recipe = recipe.model_copy(update={"batch_size": 1, "n_iter": 1})
    film = tl.recorder_for(engine, recipe, decode_steps or [], stills=tl.FRAMES if frames else 0) if timeline else None
    cfg = None
    if cfg_steps or default_cfg:
        steps = cfg_steps or guidance.default_steps(_steps_run(recipe))
        cfg = guidance.recorder_for(engine, recipe, steps)
    recorders = [r for r in (film, cfg) if r is not None]
    words = _attention_recorder(recipe) if attention else None
    result = engine.generate(recipe, hooks=RunHooks(on_step=lambda state, phase, batch: [r(state, phase, batch) for r in recorders],
                                              attention=words, on_progress=on_progress, cancel=cancel), vae_decode=vae_decode)
    resolved, infotext = result.recipes[0], result.infotexts[0]
    files: dict[str, bytes] = {"image.png": png_with_metadata(result.images[0], infotext, resolved.to_json())}
    summary: dict[str, Any] = {"recipe": json.loads(resolved.to_json()), "image": "image.png", "infotext": infotext}
    if film is not None:
        film.decode_stills()
        made = film.timeline()
        files["timeline.png"] = _png(made.filmstrip())
        files["timeline.webp"] = made.animation()
        summary["timeline"] = {"filmstrip": "timeline.png", "animation": "timeline.webp", **made.summary()}
        if frames:
            for entry, frame in zip(summary["timeline"]["steps"], made.frames):
                if frame.still is not None:
                    entry["frame"] = f"timeline/{frame.phase}-{frame.step:03d}.png"
                    files[entry["frame"]] = _png(frame.still)
    if cfg is not None:
        for view in cfg.views:
            files[view.file] = _png(view.triptych())
        summary["cfg"] = [view.summary() for view in cfg.views]
    if words is not None:
        images, summary["attention"] = _heatmaps(engine, resolved, words, result.images[0])
        files.update({name: _png(image) for name, image in images.items()})
    summary["files"] = [*files, SUMMARY]
    files[SUMMARY] = json.dumps(summary, indent=2, ensure_ascii=False).encode("utf-8")
    return files


def _attention_recorder(recipe: Recipe) -> AttentionRecorder:
    # The unconditional half only matters for negative-prompt maps; without a negative prompt it is skipped.
    cfg = recipe.cfg_scale > 1.0
    return AttentionRecorder(_steps_run(recipe), cfg=cfg, keep_uncond=cfg and bool(recipe.negative_prompt.strip()))


def _heatmaps(engine: Any, recipe: Recipe, recorder: AttentionRecorder, image: Image.Image) -> tuple[dict[str, Image.Image], dict[str, Any]]:
    pipe = engine.pipeline(engine.checkpoint(recipe.model))
    if getattr(pipe, "transformer", None) is not None:  # SD3.5, FLUX: joint attention, no maps captured; say why
        from localdiffusion.engine.flow import ATTENTION_UNAVAILABLE

        return {}, {"unavailable": ATTENTION_UNAVAILABLE}
    prompt, negative = extract_loras(recipe.prompt)[0], extract_loras(recipe.negative_prompt)[0]
    embeddings = {e.name: e.path for e in engine.library.list("embedding")}
    maps = attn.word_heatmaps(recorder, prompt, negative, pipe, _steps_run(recipe), embeddings)
    return attn.heatmap_files(maps, image)


def _steps_run(recipe: Recipe) -> int:
    """Steps the sample pass will run: img2img runs only the last `denoising_strength` of them."""
    if recipe.mode == "txt2img" or recipe.denoising_strength >= 1.0:
        return recipe.steps
    return max(1, min(int(recipe.steps * recipe.denoising_strength), recipe.steps))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
