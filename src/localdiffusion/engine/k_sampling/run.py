"""One sampling run as A1111's `KDiffusionSampler.sample` / `sample_img2img` does it (and, for
DDIM, DDIM CFG++, PLMS and UniPC, as its `CompVisSampler`: see `_sample_timesteps`).

`sample` takes a table entry (`table.KSampler`), a denoiser wrapped for CFG (a callable
`model(x, sigma, **extra_args)`, e.g. `denoiser.CFGDenoiser`), the batch's `rng.ImageRNG` and
the batch's seeds, and:

1. makes the sigmas (`schedules.sigmas_for`: "Automatic" is the sampler's default);
2. txt2img: takes the first noise from the RNG and scales it by sigmas[0] (or by
   sqrt(1 + sigmas[0]^2) with A1111's "SGM noise multiplier"); img2img: keeps the tail of the
   schedule for the denoising strength and adds the noise at its first sigma;
3. passes eta, churn, s_noise and solver type to the functions that take them, DPM fast and
   adaptive their sigma range (and n);
4. gives the SDE samplers a Brownian tree seeded with the batch's seeds, every other sampler
   the RNG's per-step noise (where A1111 patches `torch.randn_like`);
5. calls the sampler function and returns the final latents.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from localdiffusion.engine.k_sampling.denoiser import LCMDenoiser, Network, make_denoiser
from localdiffusion.engine.k_sampling.rng import ImageRNG, rng_noise_sampler
from localdiffusion.engine.k_sampling.samplers import BrownianTreeNoiseSampler
from localdiffusion.engine.k_sampling.schedules import sigmas_for
from localdiffusion.engine.k_sampling.table import KSampler
from localdiffusion.engine.k_sampling.timesteps import TimestepDenoiser, a1111_timesteps, img2img_start


@dataclass
class SamplingOptions:
    """A1111's settings that change how a k-diffusion sampler runs (defaults are A1111's)."""

    eta: float | None = None  # None: A1111's "eta (ancestral)" setting, 1.0
    eta_ancestral: float = 1.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0  # 0 means infinity, as A1111
    s_noise: float = 1.0
    sgm_noise_multiplier: bool = False
    always_discard_next_to_last_sigma: bool = False
    sigma_min: float = 0.0  # 0: the model's
    sigma_max: float = 0.0
    rho: float = 0.0  # 0: the schedule type's own
    beta_alpha: float = 0.6
    beta_beta: float = 0.6
    old_karras_sigmas: bool = False
    img2img_fix_steps: bool = False  # "with img2img, do exactly the amount of steps the slider specifies"
    eta_ddim: float = 0.0  # "Eta for DDIM" (DDIM, DDIM CFG++), used when `eta` is None; infotext "Eta DDIM"
    uni_pc_variant: str = "bh1"  # "bh1", "bh2" or "vary_coeff"
    uni_pc_skip_type: str = "time_uniform"  # "time_uniform", "time_quadratic" or "logSNR"
    uni_pc_order: int = 3
    uni_pc_lower_order_final: bool = True


def denoiser_for(sampler: KSampler, network: Network, alphas_cumprod: torch.Tensor, parameterization: str = "eps", quantize: bool = False):
    """The denoiser A1111 wraps the model in for this sampler (LCM has its own; the timestep
    samplers get `TimestepDenoiser`, eps at a timestep, with `.alphas_cumprod`).

    `alphas_cumprod` may be float32 or float64 (float64, as `ldm_alphas_cumprod(dtype=torch.float64)`
    gives it, makes v-prediction with the timestep samplers exact; the sigma denoisers use float32)."""
    if sampler.kind == "timesteps":
        return TimestepDenoiser(network, alphas_cumprod, parameterization)
    alphas_cumprod = alphas_cumprod.float()
    if sampler.denoiser == "lcm":
        return LCMDenoiser(network, alphas_cumprod)
    return make_denoiser(network, alphas_cumprod, parameterization, quantize)


def sigmas_of(sampler: KSampler, denoiser: Any, steps: int, schedule: str | None, options: SamplingOptions, is_sdxl: bool = False) -> torch.Tensor:
    """The sigmas A1111 schedules for this sampler and schedule type."""
    return sigmas_for(
        denoiser, steps, schedule, default_schedule=sampler.default_schedule,
        discard_next_to_last_sigma=sampler.discard_next_to_last_sigma or options.always_discard_next_to_last_sigma,
        is_sdxl=is_sdxl, sigma_min=options.sigma_min, sigma_max=options.sigma_max, rho=options.rho,
        beta_alpha=options.beta_alpha, beta_beta=options.beta_beta, old_karras_sigmas=options.old_karras_sigmas,
    )


def img2img_steps(steps: int, denoising_strength: float, fix_steps: bool = False) -> tuple[int, int]:
    """A1111's `setup_img2img_steps`: (steps to schedule, t_enc)."""
    if fix_steps:
        scheduled = int(steps / min(denoising_strength, 0.999)) if denoising_strength > 0 else 0
        return scheduled, steps - 1
    return steps, int(min(denoising_strength, 0.999) * steps)


def sample(
    sampler: KSampler, model: Callable[..., torch.Tensor], denoiser: Any, image_rng: ImageRNG, seeds: Sequence[int],
    steps: int, *, schedule: str | None = "Automatic", extra_args: dict[str, Any] | None = None,
    options: SamplingOptions | None = None, is_sdxl: bool = False, callback: Callable[[dict], None] | None = None,
    init_latent: torch.Tensor | None = None, denoising_strength: float = 1.0, device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sample one batch as A1111 does: txt2img, or img2img when `init_latent` is given.

    `model` is what the sampler calls (the CFG denoiser); `denoiser` is the plain one it wraps
    (its sigmas define the schedule). The first noise is `image_rng.next()`.

    For the timestep samplers (`sampler.kind == "timesteps"`) `model` returns eps at a timestep
    (`timesteps.TimestepCFG`, or a wrapper with its CFG++ protocol), `denoiser` is the
    `TimestepDenoiser` (its `alphas_cumprod` is the schedule) and `schedule` is ignored."""
    options = options or SamplingOptions()
    noise = image_rng.next()
    if device is not None:
        noise = noise.to(device)
    if sampler.kind == "timesteps":
        return _sample_timesteps(sampler, model, denoiser, image_rng, noise, steps, extra_args=extra_args, options=options,
                                 callback=callback, init_latent=init_latent, denoising_strength=denoising_strength)
    if init_latent is None:
        sigmas = sigmas_of(sampler, denoiser, steps, schedule, options, is_sdxl).to(noise.device)
        x = noise * torch.sqrt(1.0 + sigmas[0] ** 2.0) if options.sgm_noise_multiplier else noise * sigmas[0]
        kwargs = _function_kwargs(sampler, sigmas, x, sigmas, image_rng, seeds, options, n=steps,
                                  sigma_range=(denoiser.sigmas[0].item(), denoiser.sigmas[-1].item()))
    else:
        scheduled, t_enc = img2img_steps(steps, denoising_strength, options.img2img_fix_steps)
        sigmas = sigmas_of(sampler, denoiser, scheduled, schedule, options, is_sdxl).to(noise.device)
        sched = sigmas[scheduled - t_enc - 1:]
        x = init_latent.to(noise)
        kwargs = _function_kwargs(sampler, sched, x, sigmas, image_rng, seeds, options, n=len(sched) - 1,
                                  sigma_range=(sched[-2], sched[0]))
        x = x + noise * sched[0]
    return sampler.function(model, x, extra_args=extra_args or {}, callback=callback, disable=True, **kwargs)


def _function_kwargs(sampler: KSampler, sched: torch.Tensor, x: torch.Tensor, sigmas: torch.Tensor,
                     image_rng: ImageRNG, seeds: Sequence[int], options: SamplingOptions, *, n: int, sigma_range: tuple) -> dict[str, Any]:
    parameters = inspect.signature(sampler.function).parameters
    kwargs: dict[str, Any] = {}
    for name, value in (("s_churn", options.s_churn), ("s_tmin", options.s_tmin),
                        ("s_tmax", options.s_tmax or float("inf")), ("s_noise", options.s_noise)):
        if name in parameters:
            kwargs[name] = value
    if "eta" in parameters:
        kwargs["eta"] = options.eta if options.eta is not None else options.eta_ancestral
    if "n" in parameters:
        kwargs["n"] = n
    if "sigma_min" in parameters:
        kwargs["sigma_min"], kwargs["sigma_max"] = sigma_range
    if "sigmas" in parameters:
        kwargs["sigmas"] = sched
    if sampler.brownian_noise:
        positive = sigmas[sigmas > 0]
        kwargs["noise_sampler"] = BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=[int(s) for s in seeds])
    elif "noise_sampler" in parameters:
        kwargs["noise_sampler"] = rng_noise_sampler(image_rng)
    if sampler.solver_type is not None:
        kwargs["solver_type"] = sampler.solver_type
    return kwargs


def _sample_timesteps(sampler: KSampler, model: Callable[..., torch.Tensor], denoiser: Any, image_rng: ImageRNG,
                      noise: torch.Tensor, steps: int, *, extra_args: dict[str, Any] | None, options: SamplingOptions,
                      callback: Callable[[dict], None] | None, init_latent: torch.Tensor | None,
                      denoising_strength: float) -> torch.Tensor:
    """A1111's `CompVisSampler.sample` / `sample_img2img`: txt2img starts from the plain noise;
    img2img noises the init latents to timesteps[t_enc] and samples over timesteps[:t_enc]."""
    alphas_cumprod = denoiser.alphas_cumprod.to(noise.device)
    discard = sampler.discard_next_to_last_sigma or options.always_discard_next_to_last_sigma
    parameters = inspect.signature(sampler.function).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in parameters:
        kwargs["eta"] = options.eta if options.eta is not None else options.eta_ddim
    if "noise_sampler" in parameters:
        kwargs["noise_sampler"] = rng_noise_sampler(image_rng)
    if "variant" in parameters:
        kwargs.update(variant=options.uni_pc_variant, skip_type=options.uni_pc_skip_type, order=options.uni_pc_order,
                      lower_order_final=options.uni_pc_lower_order_final)
    if init_latent is None:
        timesteps = a1111_timesteps(steps, discard, device=noise.device)
        x = noise
    else:
        scheduled, t_enc = img2img_steps(steps, denoising_strength, options.img2img_fix_steps)
        timesteps = a1111_timesteps(scheduled, discard, device=noise.device)
        x = img2img_start(init_latent.to(noise), noise, alphas_cumprod, timesteps[t_enc])
        timesteps = timesteps[:t_enc]
        if "is_img2img" in parameters:
            kwargs["is_img2img"] = True
    return sampler.function(model, x, timesteps, alphas_cumprod, extra_args=extra_args or {}, callback=callback,
                            disable=True, **kwargs)
