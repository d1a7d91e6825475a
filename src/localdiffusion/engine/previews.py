"""Cheap previews: a latent to RGB by a 4x3 matrix (factors from ComfyUI's latent formats).

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
