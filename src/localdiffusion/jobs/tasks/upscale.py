"""The "upscale" job kind: a plain (Extras) upscale or an SD upscale of an input image, for the gallery.

The image is an artefact the result store saves into outputs/extras-images/<date>/.

`job.params` is an `UpscaleParams`; `job.recipe` is the source image's recipe for a plain upscale
(kept with the result), or the recipe whose prompt, sampler and denoise repaint the tiles for an
SD upscale.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from localdiffusion.engine import Progress
from localdiffusion.engine.inputs import open_input
from localdiffusion.finish.extras import ExtrasUpscale, postprocess_params, run_extras, with_params
from localdiffusion.finish.sd_upscale import DEFAULT_OVERLAP, sd_upscale
from localdiffusion.jobs.artefacts import ImageArtefact, TaskOutput
from localdiffusion.jobs.tasks import TaskContext


class UpscaleParams(BaseModel):
    """What an upscale job does; `image` is an input reference (inputs/<hash>.png) under the home folder."""

    model_config = ConfigDict(extra="forbid")

    image: str
    upscaler: str = "Lanczos"
    scale: float = Field(2.0, gt=0, le=8)
    width: int | None = Field(None, ge=1, le=16384)  # with height: an exact size instead of `scale`
    height: int | None = Field(None, ge=1, le=16384)
    crop: bool = True
    upscaler_2: str = "None"
    visibility_2: float = Field(0.0, ge=0, le=1)
    sd: bool = False  # SD upscale: repaint in tiles with the job's recipe
    tile: int | None = Field(None, ge=64, le=2048)  # SD upscale tile size; None: the model's native size
    overlap: int = Field(DEFAULT_OVERLAP, ge=0, le=1024)
    infotext: str = ""  # the source image's infotext, kept in a plain upscale's result

    def extras(self) -> ExtrasUpscale:
        return ExtrasUpscale(self.upscaler, self.scale, self.width, self.height, self.crop, self.upscaler_2, self.visibility_2)


def upscale(ctx: TaskContext) -> TaskOutput:
    started = time.perf_counter()
    params = UpscaleParams.model_validate(ctx.job.params)
    engine = ctx.engine
    source = open_input(ctx.inputs, params.image, "image to upscale")
    model_hash = None
    if params.sd:
        done = sd_upscale(engine, source, ctx.job.recipe, params.upscaler, params.scale, params.tile, params.overlap,
                          source=params.image, on_progress=ctx.on_progress, cancel=ctx.cancel)
        image, recipe, infotext = done.image, done.recipe, done.infotext
        model_hash = engine.checkpoint(recipe.model).short_hash
    else:
        extras = params.extras()
        image = run_extras(source, extras, engine.library, engine.device, engine.dtype, ctx.cancel,
                           on_tile=lambda done, total: ctx.on_progress(Progress(done, total, 0, 1, "upscale")))
        recipe = ctx.job.recipe
        infotext = with_params(params.infotext, postprocess_params(extras, image.size))
    artefact = ImageArtefact.of(image, recipe, infotext, "extras", model_hash)
    return TaskOutput({"infotexts": [infotext], "seeds": [recipe.seed], "width": image.width, "height": image.height,
                       "timings": {"total": time.perf_counter() - started}}, [artefact])
