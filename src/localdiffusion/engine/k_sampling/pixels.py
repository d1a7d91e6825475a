"""Decoded images to 8-bit pixels as A1111 makes them."""

from __future__ import annotations

import numpy as np
import torch


def to_uint8_a1111(decoded: torch.Tensor) -> np.ndarray:
    """VAE output in [-1, 1], shape (B, 3, H, W) -> uint8 (B, H, W, 3), as A1111 1.10.

    A1111 clamps (x + 1) / 2 to [0, 1], then computes `255. * x` in float32 (numpy) and
    truncates with `astype(np.uint8)`; diffusers (and the engine today) round instead, which
    makes about half the values one level higher."""
    x = torch.clamp((decoded.float() + 1.0) / 2.0, min=0.0, max=1.0)
    x = x.movedim(1, -1).cpu().numpy()
    return (255.0 * x).astype(np.uint8)
