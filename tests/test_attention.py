"""Word heatmaps from cross-attention, on the tiny models: capture leaves the image unchanged, every
word of the prompt and negative prompt gets a distinct map, memory stays bounded, the original
processors come back (also after a cancel), SDXL works, and `explain --attention` writes the files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from localdiffusion.cli.app import main
from localdiffusion.engine.attention import AttentionRecorder, CaptureProcessor
from localdiffusion.errors import Cancelled
from localdiffusion.explain import attention as attn
from localdiffusion.recipe import Recipe

BASE = dict(prompt="a red fox, snowy forest", negative_prompt="blurry watermark", width=64, height=64, steps=3,
            cfg_scale=7.0, sampler_name="Euler", seed=11, model="tiny-sd1")


def recorded(engine, recipe: Recipe) -> tuple[AttentionRecorder, Image.Image]:
    recorder = AttentionRecorder(recipe.steps, cfg=recipe.cfg_scale > 1.0)
    result = engine.generate(recipe, attention=recorder)
    return recorder, result.images[0]


def processors(engine, model: str) -> dict:
    return dict(engine.pipeline(engine.checkpoint(model)).unet.attn_processors)


@pytest.fixture(scope="module")
def sd1_run(engine):
    return recorded(engine, Recipe(**BASE))


def test_capture_leaves_the_image_unchanged(engine, sd1_run):
    plain = engine.generate(Recipe(**BASE)).images[0]
    assert np.array_equal(np.asarray(plain), np.asarray(sd1_run[1]))


def test_every_word_of_prompt_and_negative_has_a_distinct_map(engine, sd1_run):
    recorder, image = sd1_run
    pipe = engine.pipeline(engine.checkpoint("tiny-sd1"))
    maps = attn.word_heatmaps(recorder, BASE["prompt"], BASE["negative_prompt"], pipe, 3)
    assert [m.word.text for m in maps.prompt] == ["a", "red", "fox", "snowy", "forest"]
    assert [m.word.text for m in maps.negative] == ["blurry", "watermark"]
    for m in maps.prompt + maps.negative:
        assert m.heat.shape == (64, 64) and m.heat.max() == pytest.approx(1.0)
        assert m.early is not None and m.late is not None
    heats = [m.heat for m in maps.prompt]
    assert all(not np.allclose(a, b) for i, a in enumerate(heats) for b in heats[i + 1:])
    assert sum(m.share for m in maps.prompt) == pytest.approx(100)
    files, section = attn.heatmap_files(maps, image)
    assert "attention/fox.png" in files and "attention/negative/blurry.png" in files
    assert "attention/early/fox.png" in files and "attention/negative/late/watermark.png" in files
    assert files["attention/fox.png"].size == image.size


def test_sub_tokens_and_chunks_map_to_words(engine):
    pipe = engine.pipeline(engine.checkpoint("tiny-sd1"))
    text, words = attn.words_of("photorealistic BREAK owl", pipe, 3)
    assert [w.text for w in words] == ["photorealistic", "owl"]
    assert len(words[0].positions) > 1 and words[0].positions[0] == 1
    assert words[1].positions == [77 + 1]  # BREAK: the second chunk, after its BOS


def test_memory_is_bounded_by_layer_sizes_not_steps(engine):
    sizes = [recorded(engine, Recipe(**{**BASE, "steps": n}))[0].nbytes() for n in (2, 4)]
    # (cond, uncond) x (early, late), 77 tokens, fp32, one sum per attention resolution of the tiny
    # UNet at a 64 px image (8x8 latent): 8x8 and 4x4.
    assert sizes[0] == sizes[1] == 4 * 77 * (8 * 8 + 4 * 4) * 4


def test_skipping_the_negative_half_keeps_the_prompt_maps(engine, sd1_run):
    full = sd1_run[0]
    lean = AttentionRecorder(3, cfg=True, keep_uncond=False)
    engine.generate(Recipe(**BASE), attention=lean)
    assert lean.maps("uncond") is None
    assert torch.allclose(lean.maps("cond"), full.maps("cond"), atol=1e-6)
    assert lean.nbytes() == full.nbytes() // 2


def test_processors_restored_after_run_and_after_cancel(engine, sd1_run):
    before = processors(engine, "tiny-sd1")
    assert not any(isinstance(p, CaptureProcessor) for p in before.values())
    recorder = AttentionRecorder(3)
    with pytest.raises(Cancelled):
        engine.generate(Recipe(**BASE), cancel=lambda: True, attention=recorder)
    assert processors(engine, "tiny-sd1") == before


def test_sdxl_works(engine):
    recipe = Recipe(**{**BASE, "model": "tiny-sdxl"})
    recorder, image = recorded(engine, recipe)
    plain = engine.generate(recipe).images[0]
    assert np.array_equal(np.asarray(plain), np.asarray(image))
    pipe = engine.pipeline(engine.checkpoint("tiny-sdxl"))
    maps = attn.word_heatmaps(recorder, BASE["prompt"], BASE["negative_prompt"], pipe, 3)
    assert len(maps.prompt) == 5 and len(maps.negative) == 2


def test_safe_names_deduplicate():
    assert attn.safe_names(["Fox", "fox", "a/b", "!!", "FOX"]) == ["fox", "fox-2", "a-b", "word", "fox-3"]


def test_cli_writes_heatmaps_with_timeline(capsys, model_home, tmp_path):
    out = tmp_path / "why"
    args = ["explain", "a red fox", "--negative", "blurry", "--size", "64x64", "--steps", "3", "--sampler", "Euler",
            "--seed", "3", "--model", "tiny-sd1", "--attention", "--timeline", "--cfg-steps", "2", "--home", str(model_home.root), "-o", str(out)]
    try:
        main(args)
    except SystemExit as e:
        assert not e.code, capsys.readouterr().err
    for name in ("attention/a.png", "attention/red.png", "attention/fox.png", "attention/negative/blurry.png",
                 "timeline.png", "cfg-2.png", "explain.json"):
        assert (out / name).is_file(), name
    data = json.loads((out / "explain.json").read_text())
    assert [w["word"] for w in data["attention"]["prompt"]] == ["a", "red", "fox"]
    assert data["attention"]["negative"][0]["file"] == "attention/negative/blurry.png"
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert set(data["files"]) == written


@pytest.mark.parametrize("sampler", ["Euler", "DEIS"])  # A1111's [prompt; negative] batch, diffusers' [negative; prompt]
def test_the_prompt_maps_are_the_prompts_whatever_the_batch_layout(engine, sampler):
    """One step from the same noise: swapping prompt and negative prompt swaps the two halves' maps, so each half
    is read from the rows that really hold it."""
    one_step = dict(BASE, steps=1, sampler_name=sampler)
    swapped = dict(one_step, prompt=BASE["negative_prompt"], negative_prompt=BASE["prompt"])
    first, _ = recorded(engine, Recipe(**one_step))
    second, _ = recorded(engine, Recipe(**swapped))
    assert torch.allclose(first.maps("cond"), second.maps("uncond"), atol=1e-5)
    assert torch.allclose(first.maps("uncond"), second.maps("cond"), atol=1e-5)
    assert not torch.allclose(first.maps("cond"), first.maps("uncond"), atol=1e-3)


def test_the_halves_follow_the_layout_the_caller_gives():
    from localdiffusion.engine.attention import batch_halves

    recorder = AttentionRecorder(3, cfg=True)
    assert recorder.halves(4) == [("uncond", slice(0, 2)), ("cond", slice(2, 4))]  # the diffusers loop's batch
    with batch_halves(("cond", "uncond")):
        assert recorder.halves(4) == [("cond", slice(0, 2)), ("uncond", slice(2, 4))]  # A1111's
    with batch_halves(("uncond",)):
        assert recorder.halves(2) == [("uncond", slice(0, 2))]  # a call of the negative prompt alone
    lean = AttentionRecorder(3, cfg=True, keep_uncond=False)
    with batch_halves(("uncond",)):
        assert lean.halves(2) == []


def test_a_long_prompt_run_apart_from_its_negative_keeps_each_halfs_maps(engine):
    """Over 75 tokens A1111 runs the prompt and the negative prompt as two UNet calls; each call's maps go to its half."""
    long_prompt = ", ".join(["a red fox in a snowy forest"] * 12)
    recorder, _ = recorded(engine, Recipe(**dict(BASE, prompt=long_prompt)))
    assert recorder.maps("cond").shape[0] == 154 and recorder.maps("uncond").shape[0] == 77
