"""Shared attention (StoryDiffusion-style): writing leaves the writer alone, reading carries its tokens
over, an empty bank changes nothing, and the memory estimate is what the bank holds."""

from __future__ import annotations

import numpy as np
import pytest

from localdiffusion.engine.shared_attention import SharedAttention, estimate_bytes, shared_layer_names
from localdiffusion.errors import BadInput
from localdiffusion.recipe import Recipe

BASE = dict(prompt="a girl in a red coat", negative_prompt="blurry", seed=21, steps=3, width=64, height=64,
            cfg_scale=6.0, sampler_name="Euler")


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_the_writer_is_untouched_and_a_reader_changes(engine, model):
    first = Recipe(**BASE, model=model)
    later = Recipe(**{**BASE, "prompt": "a girl in a red coat, running in the rain", "seed": 5}, model=model)
    plain_first, plain_later = pixels(engine.generate(first)), pixels(engine.generate(later))

    shared = SharedAttention(share=0.5, seed=1)
    written = engine.generate(first, shared=shared)
    assert (pixels(written) == plain_first).all(), "keeping tokens does not change the writer's image"
    assert shared.nbytes() > 0
    shared.writing = False
    read = pixels(engine.generate(later, shared=shared))
    assert np.abs(read - plain_later).mean() > 0.05, "the reader attends to the writer's tokens"
    assert (pixels(engine.generate(later, shared=shared)) == read).all(), "reading is deterministic"
    assert (pixels(engine.generate(later)) == plain_later).all(), "the UNet's own processors are back"


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_reading_all_of_its_own_tokens_gives_the_same_image(engine, model):
    """Attending to every token twice weighs each the same as once, so an image that reads back all of its
    own tokens (share 1, same recipe) is the plain image: this checks that layers, timesteps and CFG halves
    line up between writing and reading."""
    recipe = Recipe(**BASE, model=model)
    shared = SharedAttention(share=1.0)
    plain = pixels(engine.generate(recipe, shared=shared))
    shared.writing = False
    assert np.abs(pixels(engine.generate(recipe, shared=shared)) - plain).max() <= 1


def test_an_empty_bank_changes_nothing(engine):
    recipe = Recipe(**BASE, model="tiny-sd1")
    shared = SharedAttention()
    shared.writing = False
    assert (pixels(engine.generate(recipe, shared=shared)) == pixels(engine.generate(recipe))).all()


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_the_estimate_is_what_the_bank_holds(engine, model):
    shared = SharedAttention(share=0.25)
    engine.generate(Recipe(**{**BASE, "width": 64, "height": 128}, model=model), shared=shared)
    unet = engine.pipeline(engine.checkpoint(model)).unet
    assert {layer.rsplit(".", 1)[0] for layer in shared_layer_names(unet)} == {f"{k}" for k in shared.bank} | set()
    assert all(len(steps) == BASE["steps"] for steps in shared.bank.values())
    assert estimate_bytes(unet.config, 64, 128, BASE["steps"], share=0.25) == shared.nbytes()


def test_a_share_out_of_range_is_one_sentence():
    with pytest.raises(BadInput, match="share 1.5 is out of range"):
        SharedAttention(share=1.5)
