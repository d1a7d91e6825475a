"""Sigma schedules: one `get_sigmas_*` function per A1111 v1.10.1 schedule type.

Karras, Exponential and Polyexponential are k-diffusion 0.1.1's; the others are ports of A1111's
`modules/sd_schedulers.py`. Each returns n sigmas from high to low plus a final 0 (n + 1
values, float32), except KL Optimal, which (as A1111's) ends at sigma_min instead of 0.
Functions that need the model's own noise levels take `denoiser` (a `denoiser.DiscreteSchedule`).

`SCHEDULE_TYPES` names them as A1111 does ("Automatic" first), and `sigmas_for` is A1111's
`KDiffusionSampler.get_sigmas`: "Automatic" resolved to the sampler's default, the model's
sigma range, options (min/max sigma, rho, Beta's alpha and beta) and "discard the next to
last sigma".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from localdiffusion.errors import BadInput, closest, one_of


def append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


def _floats(values: list[Any]) -> torch.Tensor:
    """A float32 tensor of a list of numbers and 0-dim tensors (A1111's `torch.FloatTensor(list)`)."""
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: Any = "cpu") -> torch.Tensor:
    """Karras et al. (2022): evenly spaced in sigma ** (1 / rho)."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return append_zero(sigmas).to(device)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float, device: Any = "cpu") -> torch.Tensor:
    """Evenly spaced in log sigma."""
    sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device).exp()
    return append_zero(sigmas)


def get_sigmas_polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, device: Any = "cpu") -> torch.Tensor:
    """A polynomial in log sigma (rho 1 is Exponential)."""
    ramp = torch.linspace(1, 0, n, device=device) ** rho
    sigmas = torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min))
    return append_zero(sigmas)


def get_sigmas_uniform(n: int, denoiser: Any) -> torch.Tensor:
    """The model's own sigmas at t = linspace(T-1, 0, n), then 0 (`CompVisDenoiser.get_sigmas`)."""
    return denoiser.get_sigmas(n)


def get_sigmas_sgm_uniform(n: int, sigma_min: float, sigma_max: float, denoiser: Any) -> torch.Tensor:
    """n timesteps evenly spaced from t(sigma_max), the last one left out ("trailing"), then 0."""
    start = denoiser.sigma_to_t(torch.tensor(sigma_max))
    end = denoiser.sigma_to_t(torch.tensor(sigma_min))
    sigs = [denoiser.t_to_sigma(ts) for ts in torch.linspace(start, end, n + 1)[:-1]]
    return _floats(sigs + [0.0])


# Align Your Steps (NVIDIA, https://research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html), 10 steps.
AYS_SD1 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


def _loglinear_interp(t_steps: list[float], num_steps: int) -> np.ndarray:
    xs = np.linspace(0, 1, len(t_steps))
    ys = np.log(t_steps[::-1])
    new_xs = np.linspace(0, 1, num_steps)
    new_ys = np.interp(new_xs, xs, ys)
    return np.exp(new_ys)[::-1].copy()


def get_sigmas_align_your_steps(n: int, is_sdxl: bool = False) -> torch.Tensor:
    """NVIDIA's tuned 11 sigmas (SD1 or SDXL table), log-linearly resampled to n when n != 11, then 0."""
    sigmas = list(AYS_SDXL if is_sdxl else AYS_SD1)
    if n != len(sigmas):
        return torch.FloatTensor(np.append(_loglinear_interp(sigmas, n), [0.0]))
    return _floats(sigmas + [0.0])


def get_sigmas_kl_optimal(n: int, sigma_min: float, sigma_max: float, device: Any = "cpu") -> torch.Tensor:
    """Evenly spaced in arctan(sigma) (Sabour et al. 2024). n + 1 values ending at sigma_min, no 0, as A1111's."""
    alpha_min = torch.arctan(torch.tensor(sigma_min, device=device))
    alpha_max = torch.arctan(torch.tensor(sigma_max, device=device))
    step_indices = torch.arange(n + 1, device=device)
    return torch.tan(step_indices / n * alpha_min + (1.0 - step_indices / n) * alpha_max)


def get_sigmas_simple(n: int, denoiser: Any) -> torch.Tensor:
    """Every (T / n)-th of the model's sigmas from the top (ComfyUI's "simple"), then 0."""
    sigs = []
    ss = len(denoiser.sigmas) / n
    for x in range(n):
        sigs += [float(denoiser.sigmas[-(1 + int(x * ss))])]
    return _floats(sigs + [0.0])


def get_sigmas_normal(n: int, sigma_min: float, sigma_max: float, denoiser: Any, sgm: bool = False) -> torch.Tensor:
    """n timesteps evenly spaced from t(sigma_max) to t(sigma_min) (with `sgm`, the last left out), then 0."""
    start = denoiser.sigma_to_t(torch.tensor(sigma_max))
    end = denoiser.sigma_to_t(torch.tensor(sigma_min))
    timesteps = torch.linspace(start, end, n + 1)[:-1] if sgm else torch.linspace(start, end, n)
    sigs = [denoiser.t_to_sigma(ts) for ts in timesteps]
    return _floats(sigs + [0.0])


def get_sigmas_ddim(n: int, denoiser: Any) -> torch.Tensor:
    """The model's sigmas at t = 1, 1 + T//n, 1 + 2T//n, ... (DDIM's uniform discretization), reversed, then 0.

    As A1111's, this makes more than n sigmas when n does not divide T (7 steps: 8 sigmas)."""
    sigs = []
    ss = max(len(denoiser.sigmas) // n, 1)
    x = 1
    while x < len(denoiser.sigmas):
        sigs += [float(denoiser.sigmas[x])]
        x += ss
    return _floats(sigs[::-1] + [0.0])


def get_sigmas_beta(n: int, sigma_min: float, sigma_max: float, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Sigmas at the quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024, arXiv:2407.12173), then 0.

    A1111's defaults for alpha and beta are 0.6 and 0.6 (settings `beta_dist_alpha`, `beta_dist_beta`)."""
    from scipy import stats

    timesteps = 1 - np.linspace(0, 1, n)
    timesteps = [stats.beta.ppf(x, alpha, beta) for x in timesteps]
    sigmas = [sigma_min + (x * (sigma_max - sigma_min)) for x in timesteps]
    return _floats(sigmas + [0.0])


@dataclass(frozen=True)
class ScheduleType:
    name: str  # A1111's internal name ("karras")
    label: str  # A1111's label, as infotext writes it ("Karras")
    function: Callable[..., torch.Tensor] | None  # None: "Automatic"
    default_rho: float = -1  # -1: no rho option
    need_denoiser: bool = False
    aliases: tuple[str, ...] = ()


SCHEDULE_TYPES: dict[str, ScheduleType] = {s.label: s for s in [
    ScheduleType("automatic", "Automatic", None),
    ScheduleType("uniform", "Uniform", get_sigmas_uniform, need_denoiser=True),
    ScheduleType("karras", "Karras", get_sigmas_karras, default_rho=7.0),
    ScheduleType("exponential", "Exponential", get_sigmas_exponential),
    ScheduleType("polyexponential", "Polyexponential", get_sigmas_polyexponential, default_rho=1.0),
    ScheduleType("sgm_uniform", "SGM Uniform", get_sigmas_sgm_uniform, need_denoiser=True, aliases=("SGMUniform",)),
    ScheduleType("kl_optimal", "KL Optimal", get_sigmas_kl_optimal),
    ScheduleType("align_your_steps", "Align Your Steps", get_sigmas_align_your_steps),
    ScheduleType("simple", "Simple", get_sigmas_simple, need_denoiser=True),
    ScheduleType("normal", "Normal", get_sigmas_normal, need_denoiser=True),
    ScheduleType("ddim", "DDIM", get_sigmas_ddim, need_denoiser=True),
    ScheduleType("beta", "Beta", get_sigmas_beta, need_denoiser=True),
]}


def schedule_type(name: str | None) -> ScheduleType:
    """The schedule type for an A1111 label, internal name or alias (case-insensitive); None is Automatic."""
    if name is None or name == "":
        return SCHEDULE_TYPES["Automatic"]
    key = str(name).lower()
    for s in SCHEDULE_TYPES.values():
        if key in (s.label.lower(), s.name, *(a.lower() for a in s.aliases)):
            return s
    near = closest(str(name), list(SCHEDULE_TYPES))
    hint = f" (did you mean {one_of(near)}?)" if near else ""
    raise BadInput(f"Unknown schedule type '{name}'{hint}; choose one of {one_of(list(SCHEDULE_TYPES))}.", field="scheduler")


def sigmas_for(
    denoiser: Any, steps: int, schedule: str | None = "Automatic", *, default_schedule: str | None = None,
    discard_next_to_last_sigma: bool = False, is_sdxl: bool = False, sigma_min: float | None = None,
    sigma_max: float | None = None, rho: float | None = None, beta_alpha: float = 0.6, beta_beta: float = 0.6,
    old_karras_sigmas: bool = False,
) -> torch.Tensor:
    """A1111's `KDiffusionSampler.get_sigmas` for `steps` steps.

    `default_schedule` is the sampler's own (its "Automatic"); with none, Automatic is the
    denoiser's `get_sigmas(steps)`. `sigma_min`/`sigma_max`/`rho` are A1111's overriding settings
    (0 or None: the model's range, the type's own rho). `discard_next_to_last_sigma` makes one
    step more and drops the next to last sigma (DPM2, DPM2 a, DPM++ 3M SDE)."""
    if discard_next_to_last_sigma:
        steps += 1
    chosen = schedule_type(schedule)
    if chosen.function is None:
        chosen = schedule_type(default_schedule) if default_schedule else chosen
    m_sigma_min, m_sigma_max = denoiser.sigmas[0].item(), denoiser.sigmas[-1].item()
    lo, hi = (0.1, 10) if old_karras_sigmas else (m_sigma_min, m_sigma_max)
    if chosen.function is None:
        sigmas = denoiser.get_sigmas(steps)
    else:
        kwargs: dict[str, Any] = {}
        if chosen.label == "Align Your Steps":
            kwargs["is_sdxl"] = is_sdxl
        elif chosen.label in ("Uniform", "Simple", "DDIM"):
            kwargs["denoiser"] = denoiser
        else:
            kwargs["sigma_min"] = sigma_min if sigma_min and sigma_min != m_sigma_min else lo
            kwargs["sigma_max"] = sigma_max if sigma_max and sigma_max != m_sigma_max else hi
            if chosen.need_denoiser and chosen.label != "Beta":
                kwargs["denoiser"] = denoiser
            if chosen.default_rho != -1 and rho and rho != chosen.default_rho:
                kwargs["rho"] = rho
            if chosen.label == "Beta":
                kwargs.update(alpha=beta_alpha, beta=beta_beta)
        sigmas = chosen.function(steps, **kwargs)
    if discard_next_to_last_sigma:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas.cpu()
