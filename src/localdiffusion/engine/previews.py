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


# SD3/3.5 and FLUX: 16-channel latents (ComfyUI's factors and biases for each). Without a family named, 16 channels
# read as FLUX's.
FLOW_FACTORS = {
    "sd3": ([[-0.0922, -0.0175, 0.0749], [0.0311, 0.0633, 0.0954], [0.1994, 0.0927, 0.0458], [0.0856, 0.0339, 0.0902],
             [0.0587, 0.0272, -0.0496], [-0.0006, 0.1104, 0.0309], [0.0978, 0.0306, 0.0427], [-0.0042, 0.1038, 0.1358],
             [-0.0194, 0.0020, 0.0669], [-0.0488, 0.0130, -0.0268], [0.0922, 0.0988, 0.0951], [-0.0278, 0.0524, -0.0542],
             [0.0332, 0.0456, 0.0895], [-0.0069, -0.0030, -0.0810], [-0.0596, -0.0465, -0.0293], [-0.1448, -0.1463, -0.1189]],
            [0.2394, 0.2135, 0.1925]),
    "flux": ([[-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433], [-0.0174, 0.0160, 0.0617],
              [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115], [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259],
              [-0.0245, 0.0250, 0.1180], [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
              [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499], [-0.1262, -0.0982, -0.0778]],
             [-0.0329, -0.0718, -0.0851]),
}


def latent_to_rgb(latent: torch.Tensor, sdxl: bool = False, family: str | None = None) -> Image.Image:
    """One latent (C, H, W) to a small RGB image (H, W), by the family's linear approximation (`family`: "sd3" or
    "flux" for 16-channel latents)."""
    if latent.shape[0] == 16:
        factors_list, bias = FLOW_FACTORS[family or "flux"]
        factors = torch.tensor(factors_list, dtype=torch.float32)
    else:
        factors = torch.tensor(SDXL_FACTORS if sdxl else SD_FACTORS, dtype=torch.float32)
        bias = SDXL_BIAS if sdxl else None
    rgb = latent.detach().float().cpu().permute(1, 2, 0) @ factors
    if bias is not None:
        rgb = rgb + torch.tensor(bias)
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
