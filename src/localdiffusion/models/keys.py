"""Where a Stable Diffusion file keeps each part's tensors, and the widths that name a family.

Plain tables and lookups over a file's tensor names and shapes (`Shapes`, read from the header
without loading weights). Detection (`detect.py`), the architecture read from shapes
(`architecture.py`), the single-file loader and writer (`single_file.py`) and the IP-Adapter
checks all use these, so the names live in one place and none of those modules imports another
for them.
"""

from __future__ import annotations

Shapes = dict[str, tuple[int, ...]]

# Prefixes of the A1111/LDM single-file layout.
UNET = "model.diffusion_model."
SD1_TEXT = "cond_stage_model.transformer."
SD2_TEXT = "cond_stage_model.model."
SDXL_TEXT = "conditioner.embedders."
CLIP_L_SDXL = SDXL_TEXT + "0.transformer.text_model."
OPEN_CLIP_SDXL = SDXL_TEXT + "1.model."
OPEN_CLIP_REFINER = SDXL_TEXT + "0.model."
VAE_PREFIXES = ("", "first_stage_model.", "vae.")  # a bare VAE file, an LDM checkpoint's, a diffusers-named one
CONTROL = "control_model."
V_PRED_KEY = "v_pred"  # the marker ComfyUI writes for v-prediction models

# Cross-attention width (the text-encoder width the UNet listens to) of each real family.
FAMILY_BY_CROSS_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl", 1280: "sdxl-refiner"}
FAMILY_BY_TEXT_WIDTH = {768: "sd1", 1024: "sd2"}


def has_prefix(shapes: Shapes, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in shapes)


def first_shape(shapes: Shapes, prefix: str, suffix: str) -> tuple[int, ...] | None:
    """The shape of the first key (in sorted order) with this prefix and suffix."""
    hits = sorted(k for k in shapes if k.startswith(prefix) and k.endswith(suffix))
    return shapes[hits[0]] if hits else None


def vae_prefix(shapes: Shapes) -> str | None:
    """Where a VAE sits in a file: bare (a VAE file) or under a checkpoint's prefix."""
    for prefix in VAE_PREFIXES:
        if prefix + "decoder.conv_in.weight" in shapes and prefix + "encoder.conv_in.weight" in shapes:
            return prefix
    return None
