"""SD upscale (A1111's script): upscale, then repaint the big image tile by tile with img2img.

Each tile goes through `Engine.generate` as its own small img2img run (the tile's crop as the
init image, the user's prompt, a low denoise, one fixed seed), so memory stays that of one
tile whatever the final size. Tiles overlap and are blended with feathered weights, so no seam
shows; `seam_score` measures that.
"""

from __future__ import annotations

import ctypes
import gc
import io
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from localdiffusion.engine import Engine, Progress, RunHooks
from localdiffusion.engine.inputs import BytesInputs
from localdiffusion.engine.noise import resolve_seed
from localdiffusion.errors import BadInput
from localdiffusion.models.upscalers import feather, tile_boxes, upscale
from localdiffusion.infotext import to_infotext
from localdiffusion.recipe import Recipe

DEFAULT_OVERLAP = 64


@dataclass
class SDUpscaled:
    image: Image.Image
    recipe: Recipe  # the user's recipe as run: img2img at the final size, the seed resolved
    infotext: str
    tiles: list[tuple[int, int, int, int]]  # (x1, y1, x2, y2) of each repainted tile


def sd_upscale(
    engine: Engine, image: Image.Image, recipe: Recipe, upscaler: str, scale: float,
    tile: int | None = None, overlap: int = DEFAULT_OVERLAP, source: str | None = None,
    on_progress: Callable[[Progress], None] | None = None, cancel: Callable[[], bool] | None = None,
) -> SDUpscaled:
    """`image` upscaled `scale` times with `upscaler`, then repainted in tiles of `tile` pixels (default:
    the model's native size) with `recipe`'s prompt, sampler, steps and `denoising_strength`.

    `overlap=0` pastes tiles edge to edge, unblended (the naive tiling, kept for comparison).
    Progress events count tiles as iterations; `source` is recorded as the recipe's init image.
    """
    info = engine.checkpoint(recipe.model)
    tile = tile or info.native_size
    _check(tile, overlap)
    big = upscale(image, upscaler, scale, engine.library, engine.device, engine.dtype, cancel,
                  on_tile=_upscale_progress(on_progress))
    padded = _pad_to_8(big)
    boxes = tile_boxes(padded.width, padded.height, tile, overlap)
    seed = resolve_seed(recipe.seed)
    base = recipe.model_copy(update={"model": info.name, "mode": "img2img", "seed": seed, "batch_size": 1, "n_iter": 1,
                                     "enable_hr": False, "mask": None, "outpaint": None})
    canvas = np.array(padded)  # the repainted picture so far; the tiles' inputs stay the plain upscale
    for index, box in enumerate(boxes):
        painted = _repaint(engine, padded.crop(box), base, _tile_progress(on_progress, index, len(boxes)), cancel)
        _lay(canvas, painted, box, overlap)
        _release_memory()
    final = Image.fromarray(canvas, "RGB").crop((0, 0, big.width, big.height))
    done = base.model_copy(update={"width": final.width, "height": final.height, "init_image": source})
    engine.library.ensure_hash(info)
    extra = {"SD upscale overlap": str(overlap), "SD upscale upscaler": upscaler}
    return SDUpscaled(final, done, to_infotext(done, model_name=info.name, model_hash=info.short_hash, extra=extra), boxes)


def _check(tile: int, overlap: int) -> None:
    if tile % 8 or not 64 <= tile <= 2048:
        raise BadInput(f"The SD upscale tile size {tile} is not valid; use a multiple of 8 from 64 to 2048.", field="tile")
    if not 0 <= overlap <= tile // 2:
        raise BadInput(f"The SD upscale overlap {overlap} is not valid; use 0 to {tile // 2} pixels (half the tile).", field="overlap")


def _repaint(engine: Engine, crop: Image.Image, base: Recipe,
             on_progress: Callable[[Progress], None] | None, cancel: Callable[[], bool] | None) -> Image.Image:
    """One tile through img2img; the crop is handed to the engine as bytes (PNG, so lossless), no file."""
    png = io.BytesIO()
    crop.save(png, format="PNG")
    tile = base.model_copy(update={"init_image": "tile.png", "width": crop.width, "height": crop.height})
    inputs = BytesInputs({"tile.png": png.getvalue()})
    return engine.generate(tile, hooks=RunHooks(on_progress=on_progress, cancel=cancel), inputs=inputs).images[0]


def _lay(canvas: np.ndarray, painted: Image.Image, box: tuple[int, int, int, int], overlap: int) -> None:
    """Lay a repainted tile over the canvas, fading in across `overlap` pixels on the sides that earlier
    tiles (left and above, in row order) have painted. Memory: the canvas itself, no float planes."""
    x1, y1, x2, y2 = box
    alpha = feather(y2 - y1, x2 - x1, overlap, (x1 > 0, y1 > 0, False, False)).numpy()[..., None]
    region = canvas[y1:y2, x1:x2].astype(np.float32)
    tile = np.asarray(painted.convert("RGB"), dtype=np.float32)
    canvas[y1:y2, x1:x2] = np.rint(region + (tile - region) * alpha).astype(np.uint8)


def _release_memory() -> None:
    """Give freed tile buffers back to the system, so that RSS stays flat from tile to tile (glibc keeps
    freed memory in its arenas otherwise)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _pad_to_8(image: Image.Image) -> Image.Image:
    """Extend the right and bottom edges to a multiple of 8 (the model works in 8-pixel latents)."""
    width, height = -(-image.width // 8) * 8, -(-image.height // 8) * 8
    if (width, height) == image.size:
        return image
    arr = np.asarray(image)
    ys, xs = np.minimum(np.arange(height), image.height - 1), np.minimum(np.arange(width), image.width - 1)
    return Image.fromarray(np.ascontiguousarray(arr[ys][:, xs]), "RGB")


def _tile_progress(on_progress: Callable[[Progress], None] | None, index: int, count: int) -> Callable[[Progress], None] | None:
    """Steps of tile `index` reported as iteration `index` of `count`, so a progress bar spans all tiles."""
    if on_progress is None:
        return None
    return lambda p: on_progress(replace(p, iteration=index, iterations=count, phase="sd-upscale"))


def _upscale_progress(on_progress: Callable[[Progress], None] | None) -> Callable[[int, int], None] | None:
    if on_progress is None:
        return None
    return lambda done, total: on_progress(Progress(done, total, 0, 1, "upscale"))


def seam_score(image: Image.Image, tiles: list[tuple[int, int, int, int]]) -> float:
    """How much the tile edges show: the mean absolute step across the tiles' inner edges, divided by the
    mean step between neighbouring pixels everywhere else. About 1: invisible; well above 1: seams."""
    arr = np.asarray(image.convert("L"), dtype=np.float32)
    height, width = arr.shape
    across_columns = np.abs(np.diff(arr, axis=1))  # step between column x-1 and x is at index x-1
    across_rows = np.abs(np.diff(arr, axis=0))
    xs = sorted({x for x1, _, x2, _ in tiles for x in (x1, x2) if 0 < x < width})
    ys = sorted({y for _, y1, _, y2 in tiles for y in (y1, y2) if 0 < y < height})
    if not xs and not ys:
        raise BadInput("The seam score needs at least two tiles; this image was done in one.", field="tiles")
    seam_cols = np.zeros(width - 1, bool)
    seam_cols[[x - 1 for x in xs]] = True
    seam_rows = np.zeros(height - 1, bool)
    seam_rows[[y - 1 for y in ys]] = True
    seams = np.concatenate([across_columns[:, seam_cols].ravel(), across_rows[seam_rows].ravel()])
    inside = np.concatenate([across_columns[:, ~seam_cols].ravel(), across_rows[~seam_rows].ravel()])
    return float(seams.mean() / max(inside.mean(), 1e-6))
