"""Mask tools (geometry of each operation), and the engine's "only masked" and outpaint chains seen from them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from localdiffusion.errors import BadInput
from localdiffusion.finish import masks
from localdiffusion.recipe import Outpaint, Recipe
from test_sd_upscale import engine  # noqa: F401  (a fixture: an engine with the tiny SD1 model only)


def white(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask) >= 128


def square(size: int = 64, box=(20, 20, 44, 44)) -> Image.Image:
    return masks.rectangle((size, size), box)


def test_rectangle_and_polygon_fill_exactly_their_area():
    rect = white(square())
    assert rect.sum() == 24 * 24 and rect[20, 20] and not rect[44, 44]
    lasso = white(masks.polygon((64, 64), [(10, 10), (50, 10), (10, 50)]))
    assert lasso[12, 12] and not lasso[48, 48]
    assert abs(lasso.sum() - 40 * 40 / 2) < 80  # a right triangle, edges included


def test_rectangle_is_clipped_to_the_image():
    assert white(masks.rectangle((32, 32), (20, 20, 90, 90))).sum() == 12 * 12


def test_invert_swaps_white_and_black():
    assert (white(masks.invert(square())) == ~white(square())).all()


def test_grow_and_shrink_move_the_edge_by_the_radius():
    grown, shrunk = white(masks.grow(square(), 4)), white(masks.shrink(square(), 4))
    # A round brush: the sides move by exactly 4 px, the corners are rounded.
    assert grown[32, 16] and not grown[32, 15] and grown[16, 32] and not grown[15, 32]
    assert not grown[16, 16]
    assert white(square())[16:48, 16:48].sum() < grown.sum() < 32 * 32
    assert (shrunk[24:40, 24:40]).all() and shrunk.sum() == 16 * 16
    assert (white(masks.grow(square(), 0)) == white(square())).all()


def test_feather_softens_only_the_edge():
    soft = np.asarray(masks.feather(square(), 6))
    assert soft[32, 32] == 255 and soft[2, 2] == 0
    assert 0 < soft[32, 20] < 255 and 0 < soft[32, 19] < 255


def test_colour_range_selects_by_rgb_and_hsv():
    image = Image.new("RGB", (40, 20), (30, 30, 30))
    ImageDraw.Draw(image).rectangle((0, 0, 9, 19), fill=(200, 20, 20))  # bright red
    ImageDraw.Draw(image).rectangle((10, 0, 19, 19), fill=(90, 6, 6))  # dark red
    ImageDraw.Draw(image).rectangle((20, 0, 29, 19), fill=(20, 200, 20))  # green
    rgb = white(masks.from_colour(image, (200, 20, 20), tolerance=30))
    assert rgb[:, :10].all() and not rgb[:, 10:].any()
    hsv = white(masks.from_colour(image, (200, 20, 20), tolerance=60, space="hsv"))
    assert hsv[:, :20].all() and not hsv[:, 20:].any()  # both reds, light and shade, and nothing else


def test_luminance_range_is_inclusive():
    ramp = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (4, 1)), "L")
    selected = white(masks.from_luminance(ramp, 100, 150))[0]
    assert selected[100] and selected[150] and not selected[99] and not selected[151]


def test_union_and_subtract_combine_like_brush_and_eraser():
    a, b = square(box=(0, 0, 32, 64)), square(box=(16, 0, 48, 64))
    assert white(masks.union(a, b)).sum() == 48 * 64
    assert white(masks.subtract(a, b)).sum() == 16 * 64


def test_transparency_counts_as_the_mask():
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((1, 1), (0, 0, 0, 255))
    assert white(masks.as_mask(rgba)).sum() == 1


@pytest.mark.parametrize("call,message", [
    (lambda: masks.grow(square(), -1), "The grow amount -1 is out of range; use whole pixels from 0 to 256."),
    (lambda: masks.feather(square(), 999), "The feather amount 999 is out of range"),
    (lambda: masks.from_colour(square(), (1, 2)), "The colour [1, 2] is not an RGB triple"),
    (lambda: masks.from_colour(square(), (1, 2, 3), space="lab"), "The colour space 'lab' is unknown; use 'rgb' or 'hsv'."),
    (lambda: masks.from_luminance(square(), 200, 100), "The luminance range 200-100 is not valid"),
    (lambda: masks.rectangle((8, 8), (5, 5, 2, 9)), "The rectangle [5, 5, 2, 9] is not valid"),
    (lambda: masks.polygon((8, 8), [(0, 0), (1, 1)]), "A lasso needs at least 3 (x, y) points; got 2."),
    (lambda: masks.union(square(8, (0, 0, 2, 2)), square(9, (0, 0, 2, 2))), "The masks are 8x8 and 9x9"),
    (lambda: masks.parse_colour("reddish"), "The colour 'reddish' is not readable"),
])
def test_bad_values_get_one_sentence(call, message):
    with pytest.raises(BadInput) as e:
        call()
    assert e.value.message.startswith(message)


def test_parse_colour_reads_hex_and_triples():
    assert masks.parse_colour("#ff8800") == masks.parse_colour("255,136,0") == (255, 136, 0)


# --- the engine's inpaint modes, with masks made by these tools --------------------------------------

BASE = dict(prompt="a photo of a cat", seed=7, steps=3, cfg_scale=7.0, sampler_name="Euler", model="tiny-sd1")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 255, (128, 160, 3), dtype=np.uint8), "RGB")
    image.save(folder / "scene.png")
    masks.grow(masks.rectangle((160, 128), (96, 40, 120, 70)), 4).save(folder / "mask.png")
    return folder


def test_only_masked_pastes_back_exactly_outside_the_blurred_mask(engine, scene):
    blur = 4
    recipe = Recipe(**BASE, mode="inpaint", init_image=str(scene / "scene.png"), mask=str(scene / "mask.png"), mask_blur=blur,
                    inpaint_full_res=True, inpaint_full_res_padding=16, width=64, height=64, denoising_strength=0.9)
    result = engine.generate(recipe).images[0]
    source = np.asarray(Image.open(scene / "scene.png"), dtype=np.int16)
    out = np.asarray(result, dtype=np.int16)
    assert result.size == (160, 128)
    # Everywhere the mask, blurred as the engine blurs it, is still zero the pixels are the original's.
    reach = white(masks.grow(Image.open(scene / "mask.png"), 3 * blur))
    assert (out[~reach] == source[~reach]).all()
    assert np.abs(out - source)[white(Image.open(scene / "mask.png"))].mean() > 5


def test_outpaint_chains_with_only_masked(engine, scene):
    recipe = Recipe(**BASE, mode="outpaint", init_image=str(scene / "scene.png"), inpaint_full_res=True,
                    inpaint_full_res_padding=8, width=64, height=64, denoising_strength=1.0,
                    outpaint=Outpaint(left=32, fill="blur"))
    result = engine.generate(recipe).images[0]
    assert result.size == (192, 128)
    source = np.asarray(Image.open(scene / "scene.png"), dtype=np.int16)
    out = np.asarray(result, dtype=np.int16)
    # The original sits to the right of the new strip, untouched away from the seam.
    assert (out[:, 32 + 24:] == source[:, 24:]).all()
    assert np.abs(out[:, :24].astype(float) - out[:, :24].mean()).mean() > 0  # the strip was painted
