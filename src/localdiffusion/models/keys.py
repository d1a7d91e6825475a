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


# ---------------------------------------------------------------------------------------------
# SD3/3.5 and FLUX: flow-matching transformers. ComfyUI's `models/unet` (`diffusion_models`) files hold the
# transformer alone, in the original layout (Stability's `joint_blocks`, Black Forest Labs' `double_blocks`) or
# diffusers' (`transformer_blocks`), bare or under `model.diffusion_model.`; all-in-one files add the text
# encoders under `text_encoders.<role>.transformer.` and the VAE under `first_stage_model.` or `vae.`.
FLOW_MARKERS = {  # (family, layout): a tensor only that layout has
    ("flux", "original"): "double_blocks.0.img_attn.norm.key_norm.scale",
    ("flux", "diffusers"): "single_transformer_blocks.0.proj_out.weight",
    ("sd3", "original"): "joint_blocks.0.context_block.adaLN_modulation.1.bias",
    ("sd3", "diffusers"): "pos_embed.proj.weight",
}
FLOW_TEXT = {"clip_l": "text_encoders.clip_l.transformer.", "clip_g": "text_encoders.clip_g.transformer.",
             "t5xxl": "text_encoders.t5xxl.transformer."}
CLIP_MARKERS = ("text_model.embeddings.token_embedding.weight", "embeddings.token_embedding.weight")
T5_MARKERS = ("encoder.block.0.layer.0.SelfAttention.q.weight",)


def flow_transformer(shapes: Shapes) -> tuple[str, str, str] | None:
    """(family, layout, prefix) of a flow-matching transformer in a file, or None."""
    for prefix in ("", UNET):
        for (family, layout), key in FLOW_MARKERS.items():
            if prefix + key in shapes and (layout == "original" or prefix + "context_embedder.weight" in shapes):
                return family, layout, prefix
    return None


def text_encoder_family(shapes: Shapes, prefix: str = "") -> str | None:
    """'clip' or 't5' for a text encoder kept apart (transformers' layout, as ComfyUI keeps them), or None."""
    if any(prefix + key in shapes for key in CLIP_MARKERS):
        return "clip"
    if any(prefix + key in shapes for key in T5_MARKERS):
        return "t5"
    return None
