"""A1111's noise: the RNG sources CPU, GPU and NV, and its per-image noise stream (`ImageRNG`).

A port of A1111 v1.10.1's `modules/rng.py` and `modules/rng_philox.py`, without its global
state: every function takes the source and, where A1111 reads an option, that option.

- **CPU**: `torch.Generator("cpu")` seeded with the image's seed, float32 (what the engine
  already draws). The same numbers on every machine.
- **GPU**: `torch.Generator("cuda")`. Only a CUDA device can give these numbers; elsewhere
  `create_generator` refuses in one sentence.
- **NV**: A1111's emulation of NVIDIA's generator on the CPU: Philox4x32-10 plus A1111's
  Box-Muller (one normal from each pair of 32-bit words), so that a laptop gives the numbers
  `torch.randn(..., device="cuda")` gives.

`ImageRNG` draws the first noise of every image (seed, variation seed and strength, "resize
seed from") and then, from `next()`, the noise that k-diffusion's samplers ask for at each
step (A1111 patches `torch.randn_like` inside k-diffusion to this). With an eta noise seed
delta (ENSD), the per-step noise comes from generators seeded with `seed + ENSD`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from localdiffusion.engine.noise import slerp
from localdiffusion.errors import BadInput, one_of

RNG_SOURCES = ("CPU", "GPU", "NV")

# Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", 2011), as
# A1111's rng_philox.py writes it.
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)

_TWO_POW32_INV = np.array([2.3283064e-10], dtype=np.float32)
_TWO_POW32_INV_2PI = np.array([2.3283064e-10 * 6.2831855], dtype=np.float32)


def _uint32(x: np.ndarray) -> np.ndarray:
    """(N,) uint64 -> (2, N) uint32: row 0 the low words, row 1 the high words."""
    return x.view(np.uint32).reshape(-1, 2).transpose(1, 0)


def philox4_round(counter: np.ndarray, key: np.ndarray) -> None:
    """One round of Philox4x32, in place on a (4, N) counter with a (2, N) key."""
    v1 = _uint32(counter[0].astype(np.uint64) * PHILOX_M[0])
    v2 = _uint32(counter[2].astype(np.uint64) * PHILOX_M[1])
    counter[0] = v2[1] ^ counter[1] ^ key[0]
    counter[1] = v2[0]
    counter[2] = v1[1] ^ counter[3] ^ key[1]
    counter[3] = v1[0]


def philox4_32(counter: np.ndarray, key: np.ndarray, rounds: int = 10) -> np.ndarray:
    """Philox4x32 with `rounds` rounds: (4, N) uint32 counters and (2, N) keys -> (4, N) uint32 words.

    Works in place on both arrays, as A1111's does."""
    for _ in range(rounds - 1):
        philox4_round(counter, key)
        key[0] = key[0] + PHILOX_W[0]
        key[1] = key[1] + PHILOX_W[1]
    philox4_round(counter, key)
    return counter


def box_muller(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The first of the two normals Box-Muller makes from two uint32 words, in A1111's float arithmetic."""
    u = x * _TWO_POW32_INV + _TWO_POW32_INV / 2
    v = y * _TWO_POW32_INV_2PI + _TWO_POW32_INV_2PI / 2
    s = np.sqrt(-2.0 * np.log(u))
    r1 = s * np.sin(v)
    return r1.astype(np.float32)


class PhiloxGenerator:
    """NV: the numbers `torch.randn(shape, device="cuda")` gives after `manual_seed(seed)`, made on the CPU.

    Each `randn` call uses the next Philox offset, as CUDA's generator does for one call."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.offset = 0

    def randn(self, shape: Sequence[int]) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
        counter = np.zeros((4, n), dtype=np.uint32)
        counter[0] = self.offset
        counter[2] = np.arange(n, dtype=np.uint32)  # up to 2**32 numbers per call, as A1111
        self.offset += 1
        key = np.empty(n, dtype=np.uint64)
        key.fill(self.seed)
        words = philox4_32(counter, _uint32(key))
        return box_muller(words[0], words[1]).reshape(tuple(shape))


Generator = torch.Generator | PhiloxGenerator


def check_source(source: str) -> str:
    """The canonical name of an RNG source ('cpu' and 'nv' are accepted too)."""
    canonical = {s.lower(): s for s in RNG_SOURCES}.get(str(source).lower())
    if canonical is None:
        raise BadInput(f"Unknown RNG source '{source}'; choose one of {one_of(list(RNG_SOURCES))}.", field="rng")
    return canonical


def create_generator(seed: int, source: str = "CPU", device: torch.device | str | None = None) -> Generator:
    """A fresh generator for one seed, as A1111's `create_generator`.

    GPU needs CUDA: `device` (default "cuda") must be a CUDA device that torch can use."""
    source = check_source(source)
    if source == "NV":
        return PhiloxGenerator(seed)
    if source == "CPU":
        return torch.Generator("cpu").manual_seed(int(seed))
    device = torch.device(device or "cuda")
    if device.type != "cuda" or not torch.cuda.is_available():
        raise BadInput(
            "The RNG source 'GPU' draws its noise on an NVIDIA GPU, and this machine has none; "
            "choose 'NV' (the same numbers, made on the CPU) or 'CPU'.", field="rng",
        )
    return torch.Generator(device).manual_seed(int(seed))


def randn(generator: Generator, shape: Sequence[int]) -> torch.Tensor:
    """The generator's next float32 standard normals of `shape`, on the generator's own device."""
    if isinstance(generator, PhiloxGenerator):
        return torch.from_numpy(generator.randn(shape))
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)


def randn_seeded(seed: int, shape: Sequence[int], source: str = "CPU", device: torch.device | str | None = None) -> torch.Tensor:
    """The first draw of a fresh generator: what A1111's `randn(seed, shape)` and `randn_local` give."""
    return randn(create_generator(seed, source, device), shape)


class ImageRNG:
    """The noise of one batch, one generator per image, as A1111's `ImageRNG`.

    `shape` is one image's latent shape (C, H, W). `first()` (the first `next()`) is the
    initial noise, shape (B, C, H, W); every later `next()` is the noise a sampler asks for.
    `eta_noise_seed_delta` (ENSD) reseeds the generators with seed + ENSD after the first noise.
    Tensors come back on `device` (default: the CPU) in float32."""

    def __init__(
        self, shape: Sequence[int], seeds: Sequence[int], subseeds: Sequence[int] | None = None,
        subseed_strength: float = 0.0, seed_resize_from_h: int = 0, seed_resize_from_w: int = 0,
        *, source: str = "CPU", eta_noise_seed_delta: int = 0, device: torch.device | str | None = None,
        generator_device: torch.device | str | None = None,
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.seeds = [int(s) for s in seeds]
        self.subseeds = None if subseeds is None else [int(s) for s in subseeds]
        self.subseed_strength = float(subseed_strength)
        self.seed_resize_from_h = int(seed_resize_from_h)
        self.seed_resize_from_w = int(seed_resize_from_w)
        self.source = check_source(source)
        self.eta_noise_seed_delta = int(eta_noise_seed_delta or 0)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.generator_device = generator_device
        self.generators = [self._generator(s) for s in self.seeds]
        self.is_first = True

    def _generator(self, seed: int) -> Generator:
        return create_generator(seed, self.source, self.generator_device)

    def _seeded(self, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
        return randn(self._generator(seed), shape)

    def first(self) -> torch.Tensor:
        shape = self.shape
        resized = self.seed_resize_from_h > 0 and self.seed_resize_from_w > 0
        noise_shape = (shape[0], self.seed_resize_from_h // 8, self.seed_resize_from_w // 8) if resized else shape
        xs = []
        for i, (seed, generator) in enumerate(zip(self.seeds, self.generators)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = 0 if i >= len(self.subseeds) else self.subseeds[i]
                subnoise = self._seeded(subseed, noise_shape)
            noise = self._seeded(seed, noise_shape) if noise_shape != shape else randn(generator, shape)
            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)
            if noise_shape != shape:
                x = randn(generator, shape)
                dx = (shape[2] - noise_shape[2]) // 2
                dy = (shape[1] - noise_shape[1]) // 2
                w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
                h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
                tx, ty = max(dx, 0), max(dy, 0)
                dx, dy = max(-dx, 0), max(-dy, 0)
                x[:, ty:ty + h, tx:tx + w] = noise[:, dy:dy + h, dx:dx + w]
                noise = x
            xs.append(noise.to(self.device))
        if self.eta_noise_seed_delta:
            self.generators = [self._generator(seed + self.eta_noise_seed_delta) for seed in self.seeds]
        return torch.stack(xs)

    def next(self) -> torch.Tensor:
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([randn(g, self.shape).to(self.device) for g in self.generators])


def rng_noise_sampler(image_rng: ImageRNG) -> Callable[..., torch.Tensor]:
    """A k-diffusion noise sampler `(sigma, sigma_next) -> noise` that draws from `image_rng.next()`.

    This is what A1111's `TorchHijack` makes of `torch.randn_like` inside k-diffusion's samplers
    (ancestral steps, churn, Restart, LCM, DPM fast/adaptive): float32 noise, whatever the latents' dtype."""

    def sample(*_args: object) -> torch.Tensor:
        return image_rng.next()

    return sample
