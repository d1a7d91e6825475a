"""Cheap previews: a latent to RGB by a 4x3 matrix (factors from ComfyUI's latent formats), or through TAESD
(HOME/models/VAE-approx) when it is installed for the model's family: sharper, at full size on a GPU.

Fast enough to run every step; used for progress previews of the predicted final image (x0).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

SD_FACTORS = [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]]
SDXL_FACTORS = [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]]
SDXL_BIAS = [0.1084, -0.0175, -0.0011]


def latent_to_rgb(latent: torch.Tensor, sdxl: bool = False) -> Image.Image:
    """One latent (C, H, W) to a small RGB image (H, W), by the family's linear approximation."""
    factors = torch.tensor(SDXL_FACTORS if sdxl else SD_FACTORS, dtype=torch.float32)
    rgb = latent.detach().float().cpu().permute(1, 2, 0) @ factors
    if sdxl:
        rgb = rgb + torch.tensor(SDXL_BIAS)
    pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


# On a CPU, a TAESD preview of a 512x512 image costs about as much as a sixth of a bf16 UNet step; the latent is
# first shrunk to at most this many latents a side (a 256-pixel preview, still four times the matrix's size).
CPU_PREVIEW_LATENTS = 32


def taesd_preview(taesd: object, latent: torch.Tensor, max_latents: int | None = None) -> Image.Image:
    """One latent (C, H, W) to RGB through TAESD, shrunk first (area average) to at most `max_latents` a side."""
    from localdiffusion.engine.backend import taesd_decode

    x = latent.detach()[None].float()
    side = max(x.shape[-2:])
    if max_latents and side > max_latents:
        size = (max(1, round(x.shape[-2] * max_latents / side)), max(1, round(x.shape[-1] * max_latents / side)))
        x = torch.nn.functional.interpolate(x, size=size, mode="area")
    return taesd_decode(taesd, x)[0]
