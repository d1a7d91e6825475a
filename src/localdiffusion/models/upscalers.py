"""Upscalers: A1111's None, Lanczos and Nearest, and every upscaler model in the library.

Models (ESRGAN, RealESRGAN, SwinIR, DAT, ... in models/ESRGAN) load through spandrel. Pickled
files (.pth/.pt/.ckpt) follow the checkpoints' policy: refused unless the user set
`allow_pickle`, and even then read with `torch.load(weights_only=True)`, which never runs code.

A model runs at its native scale on overlapping tiles (bounded memory, feathered overlaps);
Lanczos then takes the result to the exact size asked for.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from localdiffusion.errors import BadInput, Cancelled, ModelNotFound, UnsupportedModel, closest, one_of
from localdiffusion.models.info import ModelInfo

RESAMPLERS = {"None": None, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
MAX_SCALE = 8.0
MAX_MODEL_PASSES = 3  # as A1111: a 4x model runs at most three times to reach a larger scale
TILE = 192  # input pixels per tile side for the model pass
OVERLAP = 16  # input pixels two neighbouring tiles share, blended


@dataclass(frozen=True)
class Upscaler:
    """One entry of the upscaler list; `info` is None for the built-in resamplers."""

    name: str
    scale: int  # the model's native scale (guessed from the file name until loaded), 4 for resamplers as A1111 lists them
    info: ModelInfo | None = None

    @property
    def is_model(self) -> bool:
        return self.info is not None


TileProgress = Callable[[int, int], None]  # (tiles done, tiles in all)


def list_upscalers(library: Any) -> list[Upscaler]:
    """None, Lanczos, Nearest, then the library's upscaler models by name."""
    models = sorted(library.list("upscaler"), key=lambda m: m.name.lower())
    return [Upscaler(n, 4) for n in RESAMPLERS] + [Upscaler(m.name, _scale_from_name(m.name), m) for m in models]


def find_upscaler(name: str, library: Any) -> Upscaler:
    """An upscaler by name (case-insensitive); ModelNotFound names the close ones."""
    upscalers = list_upscalers(library)
    for upscaler in upscalers:
        if upscaler.name.lower() == name.strip().lower():
            return upscaler
    names = [u.name for u in upscalers]
    near = closest(name, names)
    hint = f"did you mean {one_of(near)}?" if near else f"use {one_of(names)}."
    raise ModelNotFound(f"No upscaler named '{name}'; {hint}", field="upscaler")


def target_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    if not 0 < scale <= MAX_SCALE:
        raise BadInput(f"The upscale factor {scale:g} is out of range; use a factor above 0 and up to {MAX_SCALE:g}.", field="scale")
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def upscale(image: Image.Image, name: str, scale: float, library: Any, device: torch.device | str | None = None,
            dtype: torch.dtype | None = None, cancel: Callable[[], bool] | None = None,
            on_tile: TileProgress | None = None) -> Image.Image:
    """`image` made `scale` times larger with the upscaler `name`."""
    return resize(image, name, target_size(image.size, scale), library, device, dtype, cancel, on_tile)


def resize(image: Image.Image, name: str, size: tuple[int, int], library: Any, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None, cancel: Callable[[], bool] | None = None,
           on_tile: TileProgress | None = None) -> Image.Image:
    """`image` brought to exactly `size` with the upscaler `name` (models: native passes, then Lanczos)."""
    upscaler = find_upscaler(name, library)
    image = image.convert("RGB")
    if not upscaler.is_model:
        resample = RESAMPLERS[upscaler.name] or Image.Resampling.LANCZOS
        return image if image.size == size else image.resize(size, resample)
    model = load_upscaler(upscaler.info, library.settings.allow_pickle, torch.device(device or "cpu"), dtype)
    passes = 0
    while passes < MAX_MODEL_PASSES and (passes == 0 or image.width < size[0] or image.height < size[1]):
        image = run_model(model, image, cancel, on_tile)
        passes += 1
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


# --- loading, cached ---------------------------------------------------------------------------------

_cache: OrderedDict[tuple, Any] = OrderedDict()
_cache_lock = threading.Lock()
CACHED_MODELS = 2


def load_upscaler(info: ModelInfo, allow_pickle: bool, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    """The spandrel model for a library entry, on `device`, cached by file, device and precision."""
    path = Path(info.path)
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, str(device), str(dtype))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        model = _load(path, allow_pickle, device, dtype)
        _cache[key] = model
        while len(_cache) > CACHED_MODELS:
            _cache.popitem(last=False)
        return model


def _load(path: Path, allow_pickle: bool, device: torch.device, dtype: torch.dtype | None) -> Any:
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError, canonicalize_state_dict

    state = canonicalize_state_dict(read_state_dict(path, allow_pickle))
    try:
        model = ModelLoader().load_from_state_dict(state)
    except UnsupportedModelError:
        raise UnsupportedModel(f"'{path.name}' is not an upscaler architecture that spandrel knows; use an ESRGAN, "
                               "RealESRGAN, SwinIR, DAT or other spandrel-supported model.") from None
    if not isinstance(model, ImageModelDescriptor) or model.input_channels != 3:
        raise UnsupportedModel(f"'{path.name}' is a {model.architecture.name} model for {model.purpose.lower()}, not an "
                               "RGB upscaler; put only upscaler models in models/ESRGAN.")
    return model.to(device).to(_dtype_for(model, dtype)).eval()


def read_state_dict(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or from a pickle only when allowed, and then weights-only."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - any failure means the file cannot be used
            raise UnsupportedModel(f"'{path.name}' is not a readable .safetensors file ({type(e).__name__}).") from e
    if not allow_pickle:
        raise UnsupportedModel(
            f"The upscaler '{path.name}' is a pickled file, which can run code when loaded, so it is refused; convert it "
            "to .safetensors or opt in with \"allow_pickle\": true in settings.json."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - weights_only refuses anything but tensors and plain containers
        raise UnsupportedModel(f"'{path.name}' holds more than plain weights, so it cannot be read safely ({type(e).__name__}).") from e
    if not isinstance(state, dict):
        raise UnsupportedModel(f"'{path.name}' holds no state dict of an upscaler model.")
    return state


def _dtype_for(model: Any, wanted: torch.dtype | None) -> torch.dtype:
    if wanted == torch.float16 and model.supports_half:
        return torch.float16
    if wanted == torch.bfloat16 and model.supports_bfloat16:
        return torch.bfloat16
    return torch.float32


def _scale_from_name(name: str) -> int:
    """'4x-UltraSharp', 'RealESRGAN_x2plus' -> 4, 2; A1111 lists 4 when the name does not say."""
    m = re.search(r"(?:^|[^0-9a-z])(?:x([1-8])|([1-8])x)(?:[^0-9a-z]|$|plus)", name.lower())
    return int(m.group(1) or m.group(2)) if m else 4


# --- the tiled model pass ----------------------------------------------------------------------------


@torch.no_grad()
def run_model(model: Any, image: Image.Image, cancel: Callable[[], bool] | None = None,
              on_tile: TileProgress | None = None, tile: int = TILE, overlap: int = OVERLAP) -> Image.Image:
    """One pass of the model at its native scale, over overlapping tiles blended with feathered weights.

    Memory: one tile on the device, and the output image (plus one weight plane) in float32 on the CPU.
    """
    from spandrel import ModelTiling

    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    height, width = pixels.shape[1:]
    if model.tiling == ModelTiling.INTERNAL:
        tile = max(width, height)
    s = model.scale
    out = torch.zeros(3, height * s, width * s)
    weight = torch.zeros(1, height * s, width * s)
    boxes = tile_boxes(width, height, tile, overlap)
    for done, (x1, y1, x2, y2) in enumerate(boxes):
        if cancel is not None and cancel():
            raise Cancelled("The upscale was cancelled.")
        piece = pixels[:, y1:y2, x1:x2][None].to(model.device, model.dtype)
        result = model(piece)[0].float().cpu()
        w = feather(y2 - y1, x2 - x1, overlap, (x1 > 0, y1 > 0, x2 < width, y2 < height)).repeat_interleave(s, 0).repeat_interleave(s, 1)
        out[:, y1 * s:y2 * s, x1 * s:x2 * s] += result * w
        weight[:, y1 * s:y2 * s, x1 * s:x2 * s] += w
        if on_tile is not None:
            on_tile(done + 1, len(boxes))
    blended = (out / weight).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return Image.fromarray(blended.permute(1, 2, 0).numpy(), "RGB")


def tile_boxes(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(x1, y1, x2, y2) boxes of at most `tile` pixels that cover the image, neighbours sharing `overlap`."""
    return [(x, y, min(x + tile, width), min(y + tile, height))
            for y in _starts(height, tile, overlap) for x in _starts(width, tile, overlap)]


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def feather(height: int, width: int, overlap: int, inner: tuple[bool, bool, bool, bool]) -> torch.Tensor:
    """A (height, width) weight: 1 inside, ramping down across `overlap` on the sides that have a neighbour
    (left, top, right, bottom), never reaching 0 so that every pixel keeps some weight."""
    def ramp(n: int, lo: bool, hi: bool) -> torch.Tensor:
        r = torch.ones(n)
        if overlap <= 0:
            return r
        edge = ((torch.arange(min(overlap, n)) + 0.5) / overlap).clamp(1e-3, 1)
        if lo:
            r[: len(edge)] = torch.minimum(r[: len(edge)], edge)
        if hi:
            r[n - len(edge):] = torch.minimum(r[n - len(edge):], edge.flip(0))
        return r

    left, top, right, bottom = inner
    return ramp(height, top, bottom)[:, None] * ramp(width, left, right)[None, :]
