"""A1111's "Extras" upscale: by a factor or to a size, with an optional second upscaler blended in.

The finished image keeps the source's infotext and adds A1111's `Postprocess ...` entries, so that
what was done stays readable in the PNG.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps

from localdiffusion.errors import BadInput
from localdiffusion.models.upscalers import TileProgress, find_upscaler, resize, target_size


@dataclass
class ExtrasUpscale:
    """What to do: `scale`, or an exact `width` x `height` (covered, then centre-cropped when `crop`)."""

    upscaler: str = "Lanczos"
    scale: float = 2.0
    width: int | None = None
    height: int | None = None
    crop: bool = True
    upscaler_2: str = "None"
    visibility_2: float = 0.0

    def check(self, library: Any) -> None:
        find_upscaler(self.upscaler, library)
        if self.upscaler_2 != "None":
            find_upscaler(self.upscaler_2, library)
        if not 0.0 <= self.visibility_2 <= 1.0:
            raise BadInput(f"The second upscaler's visibility {self.visibility_2:g} is out of range; use 0 to 1.", field="visibility_2")
        if (self.width is None) != (self.height is None) or (self.width is not None and min(self.width, self.height) < 1):
            raise BadInput("To upscale to a size, give both a width and a height of at least 1 pixel.", field="width")


def run_extras(image: Image.Image, job: ExtrasUpscale, library: Any, device: Any = None, dtype: Any = None,
               cancel: Callable[[], bool] | None = None, on_tile: TileProgress | None = None) -> Image.Image:
    job.check(library)
    image = image.convert("RGB")
    size = _size_for(image.size, job)
    first = resize(image, job.upscaler, size, library, device, dtype, cancel, on_tile)
    if job.upscaler_2 != "None" and job.visibility_2 > 0:
        second = resize(image, job.upscaler_2, size, library, device, dtype, cancel, on_tile)
        first = Image.blend(first, second, job.visibility_2)
    if job.width is not None and job.crop:
        first = ImageOps.fit(first, (job.width, job.height), Image.Resampling.LANCZOS)
    return first


def _size_for(size: tuple[int, int], job: ExtrasUpscale) -> tuple[int, int]:
    if job.width is None:
        return target_size(size, job.scale)
    if not job.crop:
        return job.width, job.height
    cover = max(job.width / size[0], job.height / size[1])  # A1111's "crop to fit": cover, then crop the middle
    return target_size(size, cover)


def postprocess_params(job: ExtrasUpscale, size: tuple[int, int]) -> dict[str, str]:
    """A1111's infotext entries for an extras upscale."""
    params = {"Postprocess upscale by": f"{job.scale:g}"} if job.width is None else {
        "Postprocess upscale to": f"{job.width}x{job.height}", "Postprocess crop to fit": str(job.crop)}
    params["Postprocess upscaler"] = job.upscaler
    if job.upscaler_2 != "None" and job.visibility_2 > 0:
        params["Postprocess upscaler 2"] = job.upscaler_2
        params["Postprocess upscaler 2 visibility"] = f"{job.visibility_2:g}"
    return params


def with_params(infotext: str, params: dict[str, str]) -> str:
    """The source's infotext (if any) with `params` appended to its settings line."""
    added = ", ".join(f"{k}: {v}" for k, v in params.items())
    infotext = infotext.strip()
    if not infotext:
        return added
    return f"{infotext}, {added}" if ": " in infotext.splitlines()[-1] else f"{infotext}\n{added}"
