"""Seeds and initial noise, the way A1111 draws them.

With RNG "cpu" (the default) every image's noise comes from `torch.Generator("cpu")` seeded
with that image's seed, in float32, then moves to the device: the same recipe gives the same
image on any machine, and for batch size 1 the noise is exactly what diffusers' own pipeline
draws from `torch.Generator("cpu").manual_seed(seed)`.
"""

from __future__ import annotations

import random

import torch

MAX_SEED = 2**32 - 1


def resolve_seed(seed: int) -> int:
    """-1 means random; the real seed is what gets recorded."""
    return random.randrange(MAX_SEED) if seed is None or seed < 0 else int(seed)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noise tensors, as A1111's `slerp` (variation seeds)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def generator_for(seed: int, rng: str, device: torch.device) -> torch.Generator:
    gen_device = "cpu" if rng == "cpu" or device.type == "mps" else device
    return torch.Generator(gen_device).manual_seed(int(seed))


def draw(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)


def image_noise(
    generator: torch.Generator, shape: tuple[int, ...], subseed: int | None, subseed_strength: float, rng: str, device: torch.device
) -> torch.Tensor:
    """Initial noise of one image, shape (1, C, H, W), blended with a variation seed when asked."""
    noise = draw(generator, shape)
    if subseed is not None and subseed_strength > 0:
        subnoise = draw(generator_for(subseed, rng, device), shape)
        noise = slerp(subseed_strength, noise[0], subnoise[0]).unsqueeze(0)
    return noise
