"""Plain-language explanations of every Recipe field shown in the studio, and size presets per model family.

The texts are plain data so that the UI, the docs and later explanation features share one wording.
Limits and defaults are read from `Recipe` itself, so they cannot drift from what the engine accepts.
"""

from __future__ import annotations

from typing import Any

from pydantic.fields import FieldInfo

from localdiffusion.recipe import INPAINTING_FILL, Recipe

# field -> (label, help, step). Help: what it does, then what raising or lowering it does.
TEXTS: dict[str, tuple[str, str, float | None]] = {
    "prompt": ("Prompt", "What you want to see, in words: the subject first, then style, light and detail. "
               "Wrap a word as (word:1.3) to stress it or (word:0.7) to soften it.", None),
    "negative_prompt": ("Negative prompt", "What you do not want to see, such as 'blurry, extra fingers'. "
                        "The image is steered away from these words as strongly as the prompt steers toward its own.", None),
    "model": ("Model", "The trained checkpoint that draws the image; each has its own style and native size. "
              "Switching models changes the look far more than any other setting.", None),
    "width": ("Width", "The image width in pixels (a multiple of 8). Far from the model's native size, "
              "subjects may repeat or crop oddly; larger is slower and needs more memory.", 8),
    "height": ("Height", "The image height in pixels (a multiple of 8). Far from the model's native size, "
               "subjects may repeat or crop oddly; larger is slower and needs more memory.", 8),
    "steps": ("Steps", "How many times the image is refined from noise. More steps add detail up to a point "
              "(20-30 is usually enough) and take longer; very few give a rough, smeared image.", 1),
    "cfg_scale": ("CFG scale", "How strictly the image follows the prompt. Higher follows it more literally but can look "
                  "harsh and over-saturated; lower is looser and more varied (5-8 is typical).", 0.5),
    "sampler_name": ("Sampler", "The method that removes the noise step by step. Samplers differ a little in look and in "
                     "how many steps they need; 'a' (ancestral) samplers keep changing the image as steps rise.", None),
    "scheduler": ("Schedule type", "How the noise level falls from step to step. 'Automatic' uses the sampler's usual "
                  "schedule; Karras spends more steps on fine detail at the end.", None),
    "seed": ("Seed", "The number that sets the starting noise: the same seed and settings give the same image. "
             "Use -1 for a new random image each time, or keep a seed to try changes on one image.", 1),
    "subseed": ("Variation seed", "A second starting noise mixed into the first, for variations of an image. "
                "It only matters when the variation strength is above 0.", 1),
    "subseed_strength": ("Variation strength", "How far to move toward the variation seed's noise. Small values give "
                         "close variations of the same image; 1 gives the variation seed's image.", 0.05),
    "batch_size": ("Batch size", "How many images to make at once, side by side. Larger batches are quicker per image "
                   "but need more memory.", 1),
    "n_iter": ("Batch count", "How many batches to make one after another. Raising it makes more images without "
               "needing more memory, only more time.", 1),
    "denoising_strength": ("Denoising strength", "How much of the input image may change. Low values keep it close to "
                           "the original; high values keep only its rough colours and layout; 1 ignores it.", 0.05),
    "clip_skip": ("Clip skip", "Reads the prompt from an earlier layer of the text model. 2 suits many anime-style "
                  "models; higher values follow the prompt more loosely.", 1),
    "enable_hr": ("Hires fix", "Makes the image at the native size, then upscales it and refines it in a second pass. "
                  "This gives large images without repeated subjects, at the cost of time.", None),
    "hr_scale": ("Upscale by", "How much larger the hires pass makes the image. Higher gives more pixels and detail "
                 "but takes much longer and needs more memory.", 0.05),
    "hr_upscaler": ("Upscaler", "How the image is enlarged before the hires pass. Latent upscalers add fresh detail; "
                    "Lanczos keeps closer to the first image.", None),
    "hr_second_pass_steps": ("Hires steps", "Steps of the hires pass; 0 uses the same number as the first pass. "
                             "Fewer steps are quicker and change the image less.", 1),
    "mask_blur": ("Mask blur", "Softens the edge of the painted mask by this many pixels. More blur blends the new "
                  "area into the old; less keeps a sharp boundary.", 1),
    "inpainting_fill": ("Masked content", "What the painted area starts from: the original pixels, a flat fill, or "
                        "noise. 'original' keeps shapes and colours; the others let the prompt invent more.", None),
    "inpaint_full_res": ("Only masked", "Works on the painted area alone, at full resolution, then pastes it back. "
                         "This gives small areas such as faces much more detail.", None),
    "inpaint_full_res_padding": ("Only masked padding", "Pixels of surrounding image included with the masked area. "
                                 "More padding blends better with the context; less gives more detail to the area.", 4),
    "outpaint": ("Outpaint", "Extends the image beyond its edges by the pixels you give for each side, and paints the "
                 "new area to match. Extend a little at a time for the most coherent result.", 8),
}

# Width/height pairs (multiples of 64) near each family's trained pixel count.
_SD_512 = [[512, 512], [512, 768], [768, 512], [448, 640], [640, 448], [576, 448], [448, 576]]
_SD_768 = [[768, 768], [640, 896], [896, 640], [576, 1024], [1024, 576]]
_SDXL = [[1024, 1024], [896, 1152], [1152, 896], [832, 1216], [1216, 832], [768, 1344], [1344, 768]]
SIZE_PRESETS: dict[str, list[list[int]]] = {
    "sd1": _SD_512, "sd1-inpaint": _SD_512, "sd2": _SD_512, "sd2-inpaint": _SD_512, "sd2-v": _SD_768,
    "sdxl": _SDXL, "sdxl-inpaint": _SDXL, "sdxl-refiner": _SDXL, "unknown": _SD_512,
}


def _limits(info: FieldInfo) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    for rule in info.metadata:
        for attr, key in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max")):
            if getattr(rule, attr, None) is not None:
                limits[key] = getattr(rule, attr)
    return limits


def parameter_table(max_side: int = 2048) -> dict[str, dict[str, Any]]:
    """{field: {label, help, min, max, step, default}} for every field in TEXTS; sizes capped at `max_side`."""
    table: dict[str, dict[str, Any]] = {}
    for name, (label, help_text, step) in TEXTS.items():
        info = Recipe.model_fields[name]
        limits = _limits(info)
        if name in ("width", "height"):
            limits["max"] = max_side
        elif name == "outpaint":  # pixels per side
            limits = {"min": 0, "max": max_side}
        default = None if info.default_factory else info.default
        table[name] = {"label": label, "help": help_text, "min": limits.get("min"), "max": limits.get("max"),
                       "step": step, "default": default}
    table["inpainting_fill"]["choices"] = {str(k): v for k, v in INPAINTING_FILL.items()}
    return table
