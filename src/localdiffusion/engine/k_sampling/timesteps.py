"""A1111's timestep samplers: DDIM, DDIM CFG++, PLMS and UniPC, as v1.10.1 runs them.

These are not k-diffusion samplers: they step over the model's integer timesteps, and the
model they call returns the noise prediction eps at a timestep, not denoised latents at a
sigma. The maths is the papers':

- DDIM (Song et al., "Denoising Diffusion Implicit Models", 2020): x0 = (x - sqrt(1 - a_t) eps)
  / sqrt(a_t); x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - s^2) eps + s z, with
  s = eta sqrt((1 - a_prev) / (1 - a_t) (1 - a_t / a_prev)).
- DDIM CFG++ (Chung et al., "CFG++: Manifold-constrained Classifier Free Guidance", 2024): the
  guidance scale divided by 12.5, and the step's direction taken from the unconditional eps.
- PLMS (Liu et al., "Pseudo Numerical Methods for Diffusion Models on Manifolds", 2022): DDIM's
  step with eps extrapolated Adams-Bashforth style from the last eps (a Heun-like first step).
- UniPC: `uni_pc.py`.

What A1111 does around them, reproduced here (its choices, some of them quirks):

- the timesteps are `range(0, 1000, 1000 // steps) + 1`, clipped to 999 (one step more with
  "always discard next to last sigma"); DDIM and PLMS walk them from the last one down and
  stop before the first, so the smallest timestep is never evaluated; UniPC takes their count
  as its number of steps;
- the latents are not scaled: txt2img starts from the plain noise, and the network gets x
  itself at the integer timestep (as a float);
- v-prediction models give eps = sqrt(a_t) v + sqrt(1 - a_t) x, with the square roots of the
  float64 alpha_bar stored as float32 and the timestep truncated to an index (CompVis' tables);
- a_t, a_prev and the DDIM sigma enter each step as float32; the sigmas are computed in
  float64 except 1 / (1 - a_t), which A1111's mix of numpy and torch computes in float32;
- DDIM draws the step noise from the image's RNG at every step, also at eta 0 (where it is
  multiplied by 0), so the RNG stream advances as A1111's does;
- img2img: the init latents get noise at `timesteps[t_enc]` (sqrt(a) x + sqrt(1 - a) noise) and
  the sampler gets `timesteps[:t_enc]` (UniPC starts at `timesteps[t_enc - 1] / 1000 + 1/1000`);
- callbacks get k-diffusion-shaped dicts `{'x', 'i', 'sigma': 0, 'sigma_hat': 0, 'denoised'}`,
  `denoised` being the step's predicted x0.

The model the samplers call is `model(x, t, **extra_args) -> eps` with A1111's CFG protocol:
DDIM CFG++ sets `model.cond_scale_multiplier` (1 / 12.5) and `model.need_last_noise_uncond`
(True) and reads `model.last_noise_uncond` after each call. `TimestepCFG` implements it over a
`TimestepDenoiser`; an engine wrapper must implement the same three attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from localdiffusion.engine.k_sampling.denoiser import PARAMETERIZATIONS, CFGDenoiser, Network
from localdiffusion.engine.k_sampling.samplers import NoiseSampler
from localdiffusion.engine.k_sampling.uni_pc import DiscreteVPSchedule, UniPC, check_unipc_options
from localdiffusion.errors import BadInput, one_of

CFGPP_SCALE = 1 / 12.5  # CFG++ maps CFG scales 0..12.5 to its guidance 0..1
TRAINING_STEPS = 1000


def a1111_timesteps(steps: int, discard_next_to_last_sigma: bool = False, device: Any = None) -> torch.Tensor:
    """A1111's timesteps for `steps` steps, ascending (int64): 1, 1 + k, 1 + 2k, ... with k = 1000 // steps, clipped to 999."""
    steps = int(steps) + (1 if discard_next_to_last_sigma else 0)
    if not 1 <= steps <= TRAINING_STEPS:
        raise BadInput(f"The timestep samplers take 1 to {TRAINING_STEPS} steps, not {steps}.", field="steps")
    timesteps = torch.arange(0, TRAINING_STEPS, TRAINING_STEPS // steps, device=device) + 1
    return torch.clip(timesteps, 0, TRAINING_STEPS - 1)


class TimestepDenoiser(torch.nn.Module):
    """A network as a noise predictor at integer timesteps: `den(x, t, **cond) -> eps`.

    The network `net(x, t, **cond)` gets the latents unscaled and t as given (a float tensor of
    whole timesteps, or UniPC's fractional ones). For a v-prediction network eps is computed
    from v as CompVis does. `alphas_cumprod` may be float64 (recommended: `ldm_alphas_cumprod(
    dtype=torch.float64)`), so that the v tables are rounded once as in the original code; the
    samplers read the float32 `self.alphas_cumprod`."""

    def __init__(self, network: Network, alphas_cumprod: torch.Tensor, parameterization: str = "eps") -> None:
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise BadInput(f"Unknown parameterization '{parameterization}'; choose one of {one_of(list(PARAMETERIZATIONS))}.")
        self.network = network
        self.parameterization = parameterization
        precise = alphas_cumprod.detach().cpu().double().numpy()
        self.register_buffer("alphas_cumprod", alphas_cumprod.detach().float())
        self.register_buffer("sqrt_alphas_cumprod", torch.tensor(np.sqrt(precise), dtype=torch.float32, device=alphas_cumprod.device))
        self.register_buffer("sqrt_one_minus_alphas_cumprod",
                             torch.tensor(np.sqrt(1.0 - precise), dtype=torch.float32, device=alphas_cumprod.device))

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        out = self.network(x, t, **cond)
        if self.parameterization == "eps":
            return out
        index = t.to(torch.int)
        sqrt_a, sqrt_one_minus_a = self.sqrt_alphas_cumprod.to(x.device), self.sqrt_one_minus_alphas_cumprod.to(x.device)
        return sqrt_a[index, None, None, None] * out + sqrt_one_minus_a[index, None, None, None] * x


class TimestepCFG(CFGDenoiser):
    """A1111's CFG over a `TimestepDenoiser`: `cfg(x, t, cond=..., uncond=..., cond_scale=...) -> eps`.

    The same batching and combination as `CFGDenoiser` (applied to eps), plus A1111's protocol
    for DDIM CFG++: `cond_scale_multiplier` scales the CFG scale, and with
    `need_last_noise_uncond` set, `last_noise_uncond` keeps the negative prompt's eps of the
    last call."""

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.inner.alphas_cumprod


def _step_tables(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, x: torch.Tensor, eta: float = 0.0):
    """a_t, a_prev, sqrt(1 - a_t) and the DDIM sigmas for every position of `timesteps`.

    a_prev at position i is alpha_bar at timesteps[i - 1] (at position 0, alpha_bar[0]; never
    used). a_prev and the sigmas are float64, except on MPS and XPU (float32), as A1111."""
    timesteps = timesteps.to(alphas_cumprod.device)
    alphas = alphas_cumprod[timesteps]
    wide = torch.float32 if x.device.type in ("mps", "xpu") else torch.float64
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(wide)
    sqrt_one_minus = torch.sqrt(1 - alphas)
    a, ap = alphas.cpu(), alphas_prev.cpu()
    # A1111's expression mixes numpy and torch: (1 - a_prev) / (1 - a_t) becomes torch's reflected
    # division, a float32 reciprocal of (1 - a_t) times (1 - a_prev); the rest is in a_prev's precision.
    sigmas = eta * torch.sqrt((1 - ap) * torch.reciprocal(1 - a).to(wide) * (1 - a.to(wide) / ap))
    return alphas, alphas_prev, sqrt_one_minus, sigmas


def _per_image(x: torch.Tensor, value: Any) -> torch.Tensor:
    """A float32 (B, 1, 1, 1) tensor of one number, as A1111's `number * ones`."""
    return x.new_ones((x.shape[0], 1, 1, 1)) * float(value)


def _default_noise(x: torch.Tensor) -> NoiseSampler:
    return lambda *_: torch.randn_like(x)


def sample_ddim(
    model: Callable[..., torch.Tensor], x: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
    extra_args: dict | None = None, callback: Callable[[dict], None] | None = None, disable: Any = None,
    eta: float = 0.0, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DDIM over `timesteps` (ascending), from the last one down, `len(timesteps) - 1` steps."""
    return _ddim(model, x, timesteps, alphas_cumprod, extra_args, callback, eta, noise_sampler, cfgpp=False)


def sample_ddim_cfgpp(
    model: Callable[..., torch.Tensor], x: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
    extra_args: dict | None = None, callback: Callable[[dict], None] | None = None, disable: Any = None,
    eta: float = 0.0, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DDIM with CFG++: the model's CFG scale times 1/12.5, the direction from the unconditional eps."""
    model.cond_scale_multiplier = CFGPP_SCALE
    model.need_last_noise_uncond = True
    return _ddim(model, x, timesteps, alphas_cumprod, extra_args, callback, eta, noise_sampler, cfgpp=True)


@torch.no_grad()
def _ddim(model, x, timesteps, alphas_cumprod, extra_args, callback, eta, noise_sampler, *, cfgpp):
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _default_noise(x) if noise_sampler is None else noise_sampler
    alphas, alphas_prev, sqrt_one_minus, sigmas = _step_tables(alphas_cumprod, timesteps, x, eta)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        t = timesteps[index].item()
        eps = model(x, t * s_in, **extra_args)
        direction = model.last_noise_uncond if cfgpp else eps
        a_t, a_prev = _per_image(x, alphas[index].item()), _per_image(x, alphas_prev[index].item())
        sigma_t, sqrt_one_minus_at = _per_image(x, sigmas[index].item()), _per_image(x, sqrt_one_minus[index].item())
        pred_x0 = (x - sqrt_one_minus_at * eps) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t ** 2).sqrt() * direction
        noise = sigma_t * noise_sampler(t, timesteps[index - 1].item()).to(x)
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


@torch.no_grad()
def sample_plms(
    model: Callable[..., torch.Tensor], x: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
    extra_args: dict | None = None, callback: Callable[[dict], None] | None = None, disable: Any = None,
) -> torch.Tensor:
    """PLMS over `timesteps` (ascending), from the last one down: two model calls in the first
    step (the eps of a DDIM step averaged in), then Adams-Bashforth of order 2, 3 and 4."""
    extra_args = {} if extra_args is None else extra_args
    alphas, alphas_prev, sqrt_one_minus, _ = _step_tables(alphas_cumprod, timesteps, x)
    s_in = x.new_ones([x.shape[0]])
    previous: list[torch.Tensor] = []

    def ddim_step(x: torch.Tensor, eps: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        a_t, a_prev = _per_image(x, alphas[index].item()), _per_image(x, alphas_prev[index].item())
        pred_x0 = (x - _per_image(x, sqrt_one_minus[index].item()) * eps) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * eps, pred_x0

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        t = timesteps[index].item() * s_in
        t_next = timesteps[max(index - 1, 0)].item() * s_in
        eps = model(x, t, **extra_args)
        if not previous:
            x_next, _ = ddim_step(x, eps, index)
            eps_prime = (eps + model(x_next, t_next, **extra_args)) / 2
        elif len(previous) == 1:
            eps_prime = (3 * eps - previous[-1]) / 2
        elif len(previous) == 2:
            eps_prime = (23 * eps - 16 * previous[-1] + 5 * previous[-2]) / 12
        else:
            eps_prime = (55 * eps - 59 * previous[-1] + 37 * previous[-2] - 9 * previous[-3]) / 24
        x_next, pred_x0 = ddim_step(x, eps_prime, index)
        previous = (previous + [eps])[-3:]
        x = x_next
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


@torch.no_grad()
def sample_unipc(
    model: Callable[..., torch.Tensor], x: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
    extra_args: dict | None = None, callback: Callable[[dict], None] | None = None, disable: Any = None,
    is_img2img: bool = False, variant: str = "bh1", skip_type: str = "time_uniform", order: int = 3,
    lower_order_final: bool = True,
) -> torch.Tensor:
    """UniPC with `len(timesteps)` steps from T (img2img: from timesteps[-1] / 1000 + 1/1000) to 1/1000.

    The options are A1111's settings `uni_pc_variant`, `uni_pc_skip_type`, `uni_pc_order` and
    `uni_pc_lower_order_final` (defaults: bh1, time_uniform, 3, on)."""
    check_unipc_options(variant, skip_type, order)
    extra_args = {} if extra_args is None else extra_args
    if is_img2img and len(timesteps) == 0:
        raise BadInput("This img2img run has no UniPC step at this denoising strength; raise the denoising strength or the steps.",
                       field="denoising_strength")
    schedule = DiscreteVPSchedule(alphas_cumprod.float())
    t_start = timesteps[-1] / 1000 + 1 / 1000 if is_img2img else None
    index = [0]

    def after_update(x: torch.Tensor, x0: torch.Tensor | None) -> None:
        if callback is not None:
            callback({"x": x, "i": index[0], "sigma": 0, "sigma_hat": 0, "denoised": x0})
        index[0] += 1

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x, t, **extra_args)

    solver = UniPC(eps, schedule, variant=variant, after_update=after_update)
    return solver.sample(x, steps=len(timesteps), t_start=t_start, order=int(order), skip_type=skip_type,
                         lower_order_final=bool(lower_order_final))


def img2img_start(init_latent: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, timestep: Any) -> torch.Tensor:
    """The init latents noised to `timestep` as A1111's timestep img2img: sqrt(a) x + sqrt(1 - a) noise."""
    a = alphas_cumprod[timestep]
    return init_latent * torch.sqrt(a) + noise * torch.sqrt(1 - a)
