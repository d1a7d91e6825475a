"""SD upscale: tiles through the real engine, blended seams against naive tiling, progress and cancel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image, ImageDraw

from localdiffusion.engine import Progress
from localdiffusion.engine.inputs import open_input
from localdiffusion.errors import BadInput, Cancelled
from localdiffusion.finish.sd_upscale import sd_upscale, seam_score
from localdiffusion.recipe import Recipe, Result

@pytest.fixture(scope="module")
def engine(tmp_path_factory, sd1_folder):
    """An engine whose library holds only the tiny SD1 model (cheaper than conftest's five-model home)."""
    from localdiffusion.engine import Engine
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("finish-engine")).ensure()
    (home.model_dir("checkpoint") / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    return Engine(ModelLibrary(home, Database(home.db_path)))


RECIPE = Recipe(prompt="a lighthouse", steps=7,  # 0.3 of 7: 2 steps per tile
                sampler_name="Euler", denoising_strength=0.3, seed=11, model="tiny-sd1")


def scene(size: int = 96) -> Image.Image:
    image = Image.new("RGB", (size, size), (40, 90, 160))
    ImageDraw.Draw(image).ellipse((size // 5, size // 5, size * 4 // 5, size * 4 // 5), fill=(230, 200, 40))
    return image


def test_tiles_go_through_the_engine_one_at_a_time_and_record_the_run(engine):
    events: list[Progress] = []
    seen_sizes = []
    generate = engine.generate

    def watching(recipe, *args, **kwargs):
        seen_sizes.append((recipe.mode, recipe.width, recipe.height, recipe.seed, recipe.prompt))
        return generate(recipe, *args, **kwargs)

    engine.generate = watching
    try:
        done = sd_upscale(engine, scene(64), RECIPE, "Lanczos", 2, tile=64, overlap=16, source="inputs/scene.png",
                          on_progress=events.append)
    finally:
        del engine.generate
    assert done.image.size == (128, 128) and len(done.tiles) == 9
    # Bounded memory: every generation is one 64x64 tile, img2img, with the same prompt and seed.
    assert set(seen_sizes) == {("img2img", 64, 64, 11, "a lighthouse")} and len(seen_sizes) == 9
    tiles = [e for e in events if e.phase == "sd-upscale"]
    assert {e.iteration for e in tiles} == set(range(9)) and tiles[-1].iterations == 9
    assert done.recipe.width == 128 and done.recipe.init_image == "inputs/scene.png" and done.recipe.mode == "img2img"
    assert "SD upscale overlap: 16, SD upscale upscaler: Lanczos" in done.infotext and "Size: 128x128" in done.infotext


def test_sizes_that_are_not_multiples_of_8_are_padded_and_cropped(engine):
    done = sd_upscale(engine, scene(50), RECIPE, "Lanczos", 1.5, tile=64, overlap=8)
    assert done.image.size == (75, 75)


def test_cancel_stops_between_steps(engine):
    with pytest.raises(Cancelled):
        sd_upscale(engine, scene(), RECIPE, "Lanczos", 2, tile=64, overlap=16, cancel=lambda: True)


@pytest.mark.parametrize("tile,overlap,message", [
    (60, 8, "The SD upscale tile size 60 is not valid; use a multiple of 8 from 64 to 2048."),
    (64, 40, "The SD upscale overlap 40 is not valid; use 0 to 32 pixels (half the tile)."),
])
def test_bad_tiling_is_one_sentence(engine, tile, overlap, message):
    with pytest.raises(BadInput) as e:
        sd_upscale(engine, scene(), RECIPE, "Lanczos", 2, tile=tile, overlap=overlap)
    assert e.value.message == message


@dataclass
class DriftingEngine:
    """Stands in for a real model at low denoise: keeps each tile's content but shifts its brightness a
    little, differently per tile, as real img2img tiles drift. (The tiny random model's VAE keeps no
    content at all, so it cannot show whether seams are visible.)"""

    engine: object

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, recipe, hooks=None, *, inputs, **kwargs):
        tile = np.asarray(open_input(inputs, recipe.init_image, "tile").convert("RGB"), dtype=np.int16)
        shift = int(np.random.default_rng(int(tile.sum())).integers(-12, 13))
        return Result(images=[Image.fromarray(np.clip(tile + shift, 0, 255).astype(np.uint8), "RGB")])


def test_blended_seams_are_invisible_where_naive_tiling_shows_them(engine):
    # A photo-like picture: smooth random shapes at every scale, so that gradients are alike everywhere.
    rng = np.random.default_rng(0)
    layers = [Image.fromarray(rng.integers(0, 255, (n, n, 3), dtype=np.uint8), "RGB").resize((128, 128), Image.Resampling.BICUBIC)
              for n in (4, 16, 32)]
    photo = Image.blend(Image.blend(layers[0], layers[1], 0.4), layers[2], 0.25)
    drifting = DriftingEngine(engine)
    blended = sd_upscale(drifting, photo, RECIPE, "Lanczos", 2, tile=64, overlap=32)
    naive = sd_upscale(drifting, photo, RECIPE, "Lanczos", 2, tile=64, overlap=0)
    plain = photo.resize((256, 256), Image.Resampling.LANCZOS)
    assert seam_score(plain, naive.tiles) < 1.5  # the picture itself has no edges on the tile grid
    assert seam_score(naive.image, naive.tiles) > 3 * seam_score(blended.image, blended.tiles)
    assert seam_score(blended.image, blended.tiles) < 1.5
