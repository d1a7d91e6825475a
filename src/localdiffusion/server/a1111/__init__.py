"""The AUTOMATIC1111-compatible API under /sdapi/v1, so that existing clients and plugins work unchanged.

Request fields and their defaults follow A1111's `StableDiffusionProcessing*` API models (v1.10),
responses follow its response models: `images` as base64 PNG without a prefix (carrying the
infotext), `info` as a JSON *string*. Each generation becomes a job in the studio's one queue
(client `a1111:<host>`); the handler waits for it without blocking the event loop.

What differs from A1111, on purpose:
- the studio keeps every image in its gallery, so `save_images` and `do_not_save_samples` change nothing;
- an interrupted job answers with no images (the engine keeps none of an unfinished batch);
- `interrupt` and `skip` stop the running job only when it came through this API;
- names in a request are looked up in the model library, never opened as paths;
- the options set here (`sd_model_checkpoint`, ...) live in memory, for this server's lifetime.

Modules, in the order a request meets them:
- `routes`: the route functions, thin; the whole API surface in one file;
- `schemas`: the request models and their A1111 defaults;
- `state`: what this API remembers per app (options, the chosen checkpoint, jobs it waits on);
- `options`, `checkpoints`: option checks, and checkpoints by A1111 title (never a path);
- `images`, `recipes`: base64 images, masks and resize modes; a request turned into a Recipe;
- `jobs`, `responses`: waiting on a job, progress and stopping; a finished job as A1111's answer;
- `pnginfo`, `listings`, `system`: png-info; the lists of models, samplers, upscalers and the like;
  cmd-flags and memory;
- `controlnet`: the ControlNet extension's units in `alwayson_scripts` and its /controlnet/* lists.
"""

from fastapi import APIRouter

from localdiffusion.server.a1111.controlnet import router as controlnet_router
from localdiffusion.server.a1111.routes import router as sdapi_router

# /sdapi/v1/* and the ControlNet extension's /controlnet/*, which sits beside it as in A1111.
router = APIRouter()
router.include_router(sdapi_router)
router.include_router(controlnet_router)

__all__ = ["router"]
