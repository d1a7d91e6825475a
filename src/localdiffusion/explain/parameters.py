"""Plain-language explanations of every Recipe field shown in the studio, and size presets per model family.

The texts are plain data so that the UI, the docs and later explanation features share one wording.
Limits and defaults are read from `Recipe` itself, so they cannot drift from what the engine accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    "distilled_cfg_scale": ("Distilled CFG", "FLUX dev's own guidance, trained into the model (Forge's Distilled CFG "
                            "Scale): higher follows the prompt more literally, lower is looser and more natural. Keep "
                            "CFG at 1 with it; empty uses 3.5.", 0.1),
    "refiner_checkpoint": ("Refiner", "An SDXL model that takes over for the last steps, as in A1111. The SDXL refiner "
                           "sharpens fine detail; none leaves the whole image to the main model.", None),
    "refiner_switch_at": ("Switch at", "The share of the steps after which the refiner takes over. 0.8 gives it the "
                          "last fifth; lower gives it more of the picture, and more of its look.", 0.05),
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
    "eta": ("Eta", "How much fresh noise an ancestral sampler ('a') or DDIM adds back at each step. Empty uses the "
            "sampler's default (1; DDIM 0); lower keeps the picture steadier across steps, 0 adds none.", 0.05),
    "eta_noise_seed_delta": ("Eta noise seed delta (ENSD)", "A1111's ENSD: samplers that add noise at each step draw it "
                             "from the seed plus this number. Many shared images used 31337; set it to theirs to get "
                             "their picture, 0 otherwise.", 1),
    "rng": ("Noise source", "Where the starting noise comes from. CPU gives the same picture on every machine; this "
            "device uses the GPU's own generator; NV gives the numbers an NVIDIA GPU gives, on any machine, which is "
            "what images made with A1111's default need.", None),
    "sgm_noise_multiplier": ("SGM noise multiplier", "Starts from slightly stronger noise, as the SDXL authors' code "
                             "does (A1111's option). Only to match images made with it on.", None),
    "pad_cond_uncond": ("Pad prompt/negative prompt", "For prompts over 75 tokens: pads the shorter of prompt and "
                        "negative prompt so both run in one batch (A1111's option). Only to match images made with it on.", None),
    "references": ("Reference images", "A picture the new image should resemble: its character, clothes, colours and "
                   "style carry over, while the prompt still sets the scene. The scale is how strongly: 0 ignores the "
                   "picture, around 0.5 borrows its look, near 1 copies it closely and the prompt matters less.", 0.05),
}

# Settings of the studio's tools that are not Recipe fields (the mask editor's groups), for their "i"
# explanations: field -> (label, help, min, max, step, default). They have no guide card.
TOOL_TEXTS: dict[str, tuple[str, str, int, int, int, int]] = {
    "mask_edge": ("By how many pixels", "How far Grow, Shrink and Soften move the edge of the painted mask: Grow "
                  "paints around it, Shrink takes it back, Soften blurs it so the repainted area blends in. "
                  "A few pixels past the object hide its old outline.", 0, 128, 1, 8),
    "mask_tolerance": ("How similar", "How far a colour may be from the one you click with Pick a "
                       "colour and still be added to the mask, from 0 (only that exact colour) to 255 (every colour). "
                       "Raise it to take in shadows and shades of the same colour.", 0, 255, 1, 32),
    "mask_brightness_from": ("From (dark)", "The darkest pixels to add, from 0 (black) to 255 (white). Select adds "
                             "every pixel between this and the To value, such as a bright sky or a dark background.",
                             0, 255, 1, 200),
    "mask_brightness_to": ("To (light)", "The brightest pixels to add, from 0 (black) to 255 (white). Lower it to "
                           "leave out the brightest highlights.", 0, 255, 1, 255),
}


@dataclass(frozen=True)
class Card:
    """A parameter guide card: one plain sentence, typical values, the illustration to draw, and
    the values a quick comparison tries (None where one image cannot show it)."""

    sentence: str
    typical: str
    illustration: str  # a drawing in explain/illustrations.py
    try_values: tuple[str, ...] | None = None
    why_not: str = ""  # why there is no quick comparison
    compare: str = ""  # axes for the Compare page that show it instead ('x=model&y=seed'; '#/compare/' + this)


_NEEDS_INPUT = "it acts on an input image, so try it on the img2img or inpaint tab instead."
_NEEDS_MASK = "it shapes the painted mask, so try it on the inpaint tab instead."
CARDS: dict[str, Card] = {
    "prompt": Card("The words that describe the picture you want.", "Subject first, then medium, style, light "
                   "and detail; 10-40 words.", "words", why_not="the prompt is what the comparison runs on."),
    "negative_prompt": Card("Words describing what the picture should avoid.", "A few words: 'blurry, lowres, "
                            "watermark'.", "words-away", why_not="write it on the Generate page and use "
                            "'Why does it look like this?' to see its heatmaps."),
    "model": Card("The trained network that paints, with its own style and native size.", "One that matches the "
                  "look you want; SD 1.5 at 512 px, SDXL at 1024 px.", "models",
                  why_not="each model loads in turn, too slow for a quick try; the Compare page has a Model axis.",
                  compare="x=model&y=seed&y_values=1,2"),
    "width": Card("How wide the picture is, in pixels.", "The model's native size: 512 (SD 1.5), 1024 (SDXL); "
                  "multiples of 64.", "frames", ("square", "tall", "wide")),
    "height": Card("How tall the picture is, in pixels.", "The model's native size: 512 (SD 1.5), 1024 (SDXL); "
                   "multiples of 64.", "frames", ("square", "tall", "wide")),
    "steps": Card("How many times the noise is cleaned up on the way to the picture.", "20-30; 4-8 for turbo and "
                  "LCM models.", "noise-strip", ("4", "10", "20")),
    "cfg_scale": Card("How strongly your words push the picture.", "5-8; 1-2 for turbo models; above 12 looks harsh.",
                      "dial", ("2", "7", "14")),
    "sampler_name": Card("The method used to clean up the noise at each step.", "Euler a, DPM++ 2M or Euler.",
                         "paths", ("Euler", "Euler a", "DPM++ 2M")),
    "scheduler": Card("How quickly the noise level drops from one step to the next.", "Automatic; Karras for "
                      "DPM++ samplers.", "curves", ("Automatic", "Karras", "Exponential")),
    "seed": Card("The number that picks the starting noise, and so the composition.", "Any number; -1 for a "
                 "new one each time.", "seeds", ("-1", "-1", "-1")),
    "subseed": Card("A second starting noise, blended in for variations.", "Any number, with a small variation "
                    "strength.", "seeds", why_not="it only acts with a variation strength above 0."),
    "subseed_strength": Card("How far the starting noise moves toward the variation seed.", "0.05-0.3 for close "
                             "variations.", "blend", why_not="a variation axis is not offered by compare yet."),
    "batch_size": Card("How many pictures are made side by side in one go.", "1-4, as memory allows.", "stack",
                       why_not="it changes how many images you get, not how they look."),
    "n_iter": Card("How many batches are made one after another.", "1-10.", "stack",
                   why_not="it changes how many images you get, not how they look."),
    "denoising_strength": Card("How much of the input picture may be redrawn.", "0.3-0.6 to keep the layout; "
                               "0.7-0.9 to redraw.", "blend", why_not=_NEEDS_INPUT),
    "clip_skip": Card("How early in the text model your words are read.", "1; 2 for many anime-style models.",
                      "layers", ("1", "2", "3")),
    "eta": Card("How much fresh noise an ancestral sampler adds back at each step.", "Empty (the sampler's "
                "default); 0.5-1 with 'a' samplers.", "blend", why_not="a compare axis for eta is not offered yet."),
    "eta_noise_seed_delta": Card("A number added to the seed for the noise drawn during sampling.", "0, or the ENSD "
                                 "an image you want to match was made with (often 31337).", "seeds",
                                 why_not="it matters only to match another image's settings."),
    "rng": Card("Where the starting noise is drawn.", "CPU; NV to match images made with A1111 on an NVIDIA GPU.",
                "seeds", why_not="it matters only to match another image's settings."),
    "sgm_noise_multiplier": Card("Starts sampling from slightly stronger noise.", "Off, unless matching an image "
                                 "made with it.", "curves", why_not="it matters only to match another image's settings."),
    "pad_cond_uncond": Card("Runs a long prompt and a short negative prompt in one padded batch.", "Off, unless "
                            "matching an image made with it.", "words", why_not="it matters only to match another image's settings."),
    "enable_hr": Card("Paint small, then enlarge and repaint for a big, clean picture.", "On above the native "
                      "size.", "enlarge", why_not="it makes large images, too slow for a quick comparison."),
    "hr_scale": Card("How much larger the second pass makes the picture.", "1.5-2.", "enlarge",
                     why_not="it makes large images, too slow for a quick comparison."),
    "hr_upscaler": Card("How the picture is enlarged before the second pass.", "Latent for fresh detail; "
                        "Lanczos to stay close.", "enlarge", why_not="it makes large images, too slow for a quick comparison."),
    "hr_second_pass_steps": Card("How many steps the second pass takes.", "0 (the same as the first pass), or "
                                 "10-20.", "noise-strip", why_not="it makes large images, too slow for a quick comparison."),
    "distilled_cfg_scale": Card("FLUX dev's built-in guidance: how literally it follows the prompt.", "3.5; 2-3 for "
                                "looser, more natural pictures.", "curves",
                                why_not="it applies to FLUX dev models only; try it on the Generate page with one."),
    "refiner_checkpoint": Card("A second SDXL model that finishes the picture.", "None, or the SDXL refiner.",
                               "models", why_not="each model loads in turn, too slow for a quick try."),
    "refiner_switch_at": Card("When the refiner takes over, as a share of the steps.", "0.8.", "noise-strip",
                              why_not="it needs a refiner model chosen first."),
    "mask_blur": Card("How soft the edge of the painted mask is.", "4-8 pixels.", "mask", why_not=_NEEDS_MASK),
    "inpainting_fill": Card("What the painted area starts from before it is repainted.", "original; 'latent "
                            "noise' to invent something new.", "mask", why_not=_NEEDS_MASK),
    "inpaint_full_res": Card("Repaint only the masked area, at full resolution.", "On for faces and hands.",
                             "mask", why_not=_NEEDS_MASK),
    "inpaint_full_res_padding": Card("How much surrounding picture is repainted with the masked area.",
                                     "32-64 pixels.", "mask", why_not=_NEEDS_MASK),
    "outpaint": Card("How many pixels to add beyond each edge.", "64-256 per side, a little at a time.", "enlarge",
                     why_not="it needs an input image; use the outpaint tab."),
    "references": Card("Pictures whose look the new picture borrows: a character, clothes, colours.", "Scale 0.4-0.7; "
                       "one to three pictures.", "blend", why_not="it needs a picture of your own; add one under "
                       "Reference images on the Generate page."),
}


def try_axis(name: str, recipe: Recipe, side: int) -> str | None:
    """The compare X axis ('field=a,b,c') that shows this parameter on `recipe`, or None.
    Sizes are drawn around `side` pixels, so the comparison stays small."""
    card = CARDS.get(name)
    if card is None or card.try_values is None:
        return None
    if name in ("width", "height"):
        long = side // 8 * 8
        short = max(64, round(side * 2 / 3 / 8) * 8)
        return f"size={long}x{long},{short}x{long},{long}x{short}"
    return f"{name}=" + ",".join(card.try_values)


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
    """{field: {label, help, min, max, step, default, card}} for every field in TEXTS (sizes capped at `max_side`),
    then the tools' settings (TOOL_TEXTS), whose `card` is None."""
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
                       "step": step, "default": default, "card": card_json(name)}
    table["inpainting_fill"]["choices"] = {str(k): v for k, v in INPAINTING_FILL.items()}
    for name, (label, help_text, low, high, step, default) in TOOL_TEXTS.items():
        table[name] = {"label": label, "help": help_text, "min": low, "max": high, "step": step, "default": default, "card": None}
    return table


def card_json(name: str) -> dict[str, Any]:
    card = CARDS[name]
    return {"sentence": card.sentence, "typical": card.typical, "illustration": card.illustration,
            "try_values": list(card.try_values) if card.try_values else None, "why_not": card.why_not,
            "compare": card.compare or None}
