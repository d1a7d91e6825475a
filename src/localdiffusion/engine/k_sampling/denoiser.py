"""Denoisers in k-diffusion's shape: `denoiser(x, sigma, **cond) -> denoised x`.

A denoiser wraps a network `net(x_scaled, t, **cond)` (a UNet's eps or v prediction at the
model's fractional discrete timestep t) and hides its parameterization, so that every sampler
sees the same thing: the predicted clean latents at noise level sigma. These are ports of
k-diffusion 0.1.1's `external.py` (MIT): `CompVisDenoiser` (eps), `CompVisVDenoiser` (v),
plus A1111's `LCMCompVisDenoiser` (the LCM sampler's own denoiser, from `sd_samplers_lcm.py`).

The model's noise levels are sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) over its 1000
training steps, with alpha_bar computed as the original (CompVis/SGM) code does: betas in
float64, cumulative product in float64, stored as float32 (`ldm_alphas_cumprod`).

`CFGDenoiser` combines the denoised predictions of the prompt and the negative prompt as
A1111's `CFGDenoiser.combine_denoised` does (it blends at every CFG scale, also below 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from localdiffusion.errors import BadInput, one_of

# A network: (scaled latents, fractional timestep per item, **conditioning) -> eps or v.
Network = Callable[..., torch.Tensor]

PARAMETERIZATIONS = ("eps", "v")


def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """Trailing singleton dimensions until `x` has `target_dims` dimensions."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * missing]


def ldm_alphas_cumprod(
    linear_start: float = 0.00085, linear_end: float = 0.012, timesteps: int = 1000, schedule: str = "linear",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """alpha_bar of the CompVis/SGM code (`make_beta_schedule`; SD1, SD2 and SDXL all use "linear").

    "linear" is diffusers' "scaled_linear" (a linspace of sqrt(beta), squared); "sqrt_linear" is
    diffusers' "linear". Computed in float64 and returned as float32, as the original models keep it
    (`dtype=torch.float64` keeps the float64 values, from which the CompVis code derives its
    sqrt(alpha_bar) tables: see `timesteps.TimestepDenoiser`)."""
    if schedule == "linear":
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
    elif schedule == "sqrt_linear":
        betas = torch.linspace(linear_start, linear_end, timesteps, dtype=torch.float64)
    elif schedule == "sqrt":
        betas = torch.linspace(linear_start, linear_end, timesteps, dtype=torch.float64) ** 0.5
    else:
        raise BadInput(f"Unknown beta schedule '{schedule}'; choose one of {one_of(['linear', 'sqrt_linear', 'sqrt'])}.")
    alphas_cumprod = np.cumprod(1.0 - betas.numpy(), axis=0)
    return torch.tensor(alphas_cumprod, dtype=dtype)


def alphas_cumprod_from_config(config: Mapping[str, Any], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """alpha_bar for a diffusers scheduler config (`beta_schedule`, `beta_start`, `beta_end`, ...), the CompVis way."""
    steps = int(config.get("num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    if trained is not None:
        return torch.tensor(np.cumprod(1.0 - np.asarray(trained, dtype=np.float64), axis=0), dtype=dtype)
    names = {"scaled_linear": "linear", "linear": "sqrt_linear"}
    schedule = config.get("beta_schedule", "scaled_linear")
    if schedule not in names:
        raise BadInput(f"The beta schedule '{schedule}' has no k-diffusion form here; use {one_of(list(names))}.")
    return ldm_alphas_cumprod(float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012)), steps, names[schedule], dtype)


class DiscreteSchedule(torch.nn.Module):
    """Maps continuous noise levels (sigmas) to the model's discrete ones and back (k-diffusion's `DiscreteSchedule`)."""

    def __init__(self, sigmas: torch.Tensor, quantize: bool = False) -> None:
        super().__init__()
        self.register_buffer("sigmas", sigmas)
        self.register_buffer("log_sigmas", sigmas.log())
        self.quantize = quantize

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def get_sigmas(self, n: int | None = None) -> torch.Tensor:
        """n sigmas at t = linspace(T-1, 0, n), then 0 (A1111's "Automatic" for most samplers)."""
        if n is None:
            return append_zero(self.sigmas.flip(0))
        t_max = len(self.sigmas) - 1
        t = torch.linspace(t_max, 0, n, device=self.sigmas.device)
        return append_zero(self.t_to_sigma(t))

    def sigma_to_t(self, sigma: torch.Tensor, quantize: bool | None = None) -> torch.Tensor:
        """The fractional timestep of sigma, interpolating linearly in log sigma (nearest step when quantized)."""
        quantize = self.quantize if quantize is None else quantize
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        if quantize:
            return dists.abs().argmin(dim=0).view(sigma.shape)
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = (low - log_sigma) / (low - high)
        w = w.clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp()


def append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


def _sigmas_of(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


class EpsDenoiser(DiscreteSchedule):
    """A network that predicts the noise (eps), as k-diffusion's `CompVisDenoiser`: x + eps(x c_in, t) c_out."""

    parameterization = "eps"

    def __init__(self, network: Network, alphas_cumprod: torch.Tensor, quantize: bool = False) -> None:
        super().__init__(_sigmas_of(alphas_cumprod), quantize)
        self.network = network
        self.sigma_data = 1.0

    def get_scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c_out = -sigma
        c_in = 1 / (sigma ** 2 + self.sigma_data ** 2) ** 0.5
        return c_out, c_in

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        c_out, c_in = [append_dims(c, x.ndim) for c in self.get_scalings(sigma)]
        eps = self.network(x * c_in, self.sigma_to_t(sigma), **cond)
        return x + eps * c_out


class VDenoiser(DiscreteSchedule):
    """A network that predicts v, as k-diffusion's `CompVisVDenoiser`: v(x c_in, t) c_out + x c_skip."""

    parameterization = "v"

    def __init__(self, network: Network, alphas_cumprod: torch.Tensor, quantize: bool = False) -> None:
        super().__init__(_sigmas_of(alphas_cumprod), quantize)
        self.network = network
        self.sigma_data = 1.0

    def get_scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c_skip = self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)
        c_out = -sigma * self.sigma_data / (sigma ** 2 + self.sigma_data ** 2) ** 0.5
        c_in = 1 / (sigma ** 2 + self.sigma_data ** 2) ** 0.5
        return c_skip, c_out, c_in

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        c_skip, c_out, c_in = [append_dims(c, x.ndim) for c in self.get_scalings(sigma)]
        return self.network(x * c_in, self.sigma_to_t(sigma), **cond) * c_out + x * c_skip


class LCMDenoiser(EpsDenoiser):
    """A1111's `LCMCompVisDenoiser`: 50 of the model's 1000 steps, timesteps snapped to them, and
    LCM's boundary condition (c_skip, c_out at sigma_data 0.5 over 10 t) on the predicted x0."""

    def __init__(self, network: Network, alphas_cumprod: torch.Tensor, original_timesteps: int = 50) -> None:
        timesteps = len(alphas_cumprod)
        self.skip_steps = timesteps // original_timesteps
        valid = torch.zeros(original_timesteps, dtype=torch.float32, device=alphas_cumprod.device)
        for i in range(original_timesteps):
            valid[original_timesteps - 1 - i] = alphas_cumprod[timesteps - 1 - i * self.skip_steps]
        super().__init__(network, valid, quantize=False)

    def get_sigmas(self, n: int | None = None) -> torch.Tensor:
        if n is None:
            return append_zero(self.sigmas.flip(0))
        start = self.sigma_to_t(self.sigma_max)
        end = self.sigma_to_t(self.sigma_min)
        t = torch.linspace(start, end, n, device=self.sigmas.device)
        return append_zero(self.t_to_sigma(t))

    def sigma_to_t(self, sigma: torch.Tensor, quantize: bool | None = None) -> torch.Tensor:
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.clamp(((t - (self.skip_steps - 1)) / self.skip_steps).float(), min=0, max=(len(self.sigmas) - 1))
        return super().t_to_sigma(t)

    def _scaled_out(self, sigma: torch.Tensor, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sigma_data = 0.5
        scaled_timestep = append_dims(self.sigma_to_t(sigma), output.ndim) * 10.0
        c_skip = sigma_data ** 2 / (scaled_timestep ** 2 + sigma_data ** 2)
        c_out = scaled_timestep / (scaled_timestep ** 2 + sigma_data ** 2) ** 0.5
        return c_out * output + c_skip * x

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        c_out, c_in = [append_dims(c, x.ndim) for c in self.get_scalings(sigma)]
        eps = self.network(x * c_in, self.sigma_to_t(sigma), **cond)
        return self._scaled_out(sigma, x + eps * c_out, x)


def make_denoiser(network: Network, alphas_cumprod: torch.Tensor, parameterization: str = "eps", quantize: bool = False) -> DiscreteSchedule:
    """The denoiser A1111 would wrap this model in: eps -> `EpsDenoiser`, v -> `VDenoiser`."""
    if parameterization == "eps":
        return EpsDenoiser(network, alphas_cumprod, quantize)
    if parameterization == "v":
        return VDenoiser(network, alphas_cumprod, quantize)
    raise BadInput(f"Unknown parameterization '{parameterization}'; choose one of {one_of(list(PARAMETERIZATIONS))}.")


def unet_network(unet: Any) -> Network:
    """A diffusers UNet as a network: `net(x, t, encoder_hidden_states=..., **unet_kwargs) -> eps or v`."""

    def network(x: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        return unet(x, t, return_dict=False, **cond)[0]

    return network


def combine_denoised(
    denoised_uncond: torch.Tensor, denoised_conds: Sequence[Sequence[tuple[torch.Tensor, float]]], cfg_scale: float,
) -> torch.Tensor:
    """A1111's CFG: uncond + sum over the prompt's AND-parts of (cond - uncond) * (weight * cfg_scale).

    `denoised_uncond` is (B, ...); `denoised_conds[i]` lists image i's (denoised (…), weight) pairs.
    The arithmetic order is A1111's, so the result matches it bit for bit. No shortcut at any
    scale: at CFG 1 this is the prompt's prediction, below 1 it still blends with the negative."""
    denoised = torch.clone(denoised_uncond)
    for i, conds in enumerate(denoised_conds):
        for cond_out, weight in conds:
            denoised[i] += (cond_out - denoised_uncond[i]) * (weight * cfg_scale)
    return denoised


class CFGDenoiser(torch.nn.Module):
    """A denoiser with classifier-free guidance, called as k-diffusion's samplers call a model:
    `cfg(x, sigma, cond=..., uncond=..., cond_scale=...)`.

    `cond` and `uncond` are keyword dicts for the network (e.g. `{"encoder_hidden_states": h}`,
    batched like x). When both have the same tensor shapes they run as one batch
    [cond; uncond], as A1111 runs them; otherwise as two calls. Every image has one prompt
    part of weight 1 (A1111's AND-composition is not expressed here).

    A1111's protocol for samplers that change the guidance (DDIM CFG++): the scale used is
    `cond_scale * cond_scale_multiplier` (default 1.0), and with `need_last_noise_uncond` set,
    `last_noise_uncond` keeps a copy of the negative prompt's output of the last call."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.cond_scale_multiplier = 1.0
        self.need_last_noise_uncond = False
        self.last_noise_uncond: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, *, cond: Mapping[str, Any], uncond: Mapping[str, Any], cond_scale: float) -> torch.Tensor:
        batch = x.shape[0]
        if _same_shapes(cond, uncond):
            both = _cat_conds(cond, uncond)
            out = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]), **both)
            out_cond, out_uncond = out[:batch], out[batch:]
        else:
            out_cond = self.inner(x, sigma, **cond)
            out_uncond = self.inner(x, sigma, **uncond)
        if self.need_last_noise_uncond:
            self.last_noise_uncond = torch.clone(out_uncond)
        scale = cond_scale * self.cond_scale_multiplier
        return combine_denoised(out_uncond, [[(out_cond[i], 1.0)] for i in range(batch)], scale)


def _same_shapes(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(_shape_tree(a[k]) == _shape_tree(b[k]) for k in a)


def _shape_tree(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return tuple(v.shape)
    if isinstance(v, Mapping):
        return {k: _shape_tree(x) for k, x in v.items()}
    return v


def _cat_conds(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in a.items():
        if isinstance(v, torch.Tensor):
            out[k] = torch.cat([v, b[k]])
        elif isinstance(v, Mapping):
            out[k] = _cat_conds(v, b[k])
        else:
            out[k] = v
    return out
