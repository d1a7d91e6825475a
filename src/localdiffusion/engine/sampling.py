"""The denoising loop, step by step as diffusers' StableDiffusionPipeline does it.

Our own loop (rather than calling the pipeline) lets the conditioning change at any step
(prompt editing, alternation), blends an inpainting mask into the latents for any model,
exposes each step's predictions to explanations and previews, and stops within one step
when cancelled. For a plain prompt it performs exactly the pipeline's operations, so its
output is bit-identical to diffusers'.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from localdiffusion.errors import Cancelled

# What the UNet is conditioned on at one step: hidden states (batched [negative; positive]
# when CFG is on) and, for SDXL, the added text/time embeddings.
StepConditioning = tuple[torch.Tensor, dict[str, torch.Tensor] | None]


@dataclass
class InpaintLatents:
    """Everything inpainting needs in latent space."""

    mask: torch.Tensor  # (B, 1, h, w); 1 where the model may repaint
    image_latents: torch.Tensor  # the original image, encoded and scaled
    noise: torch.Tensor  # the initial noise, to re-noise the original at each step
    masked_image_latents: torch.Tensor | None = None  # for 9-channel inpainting UNets


@dataclass
class StepState:
    """One finished step, as callbacks (progress, previews, explanations) see it."""

    index: int  # 0-based position in the timesteps
    total: int
    timestep: torch.Tensor
    sample: torch.Tensor  # the latents this step started from
    latents: torch.Tensor  # the latents after this step
    noise_pred: torch.Tensor  # the guided prediction
    noise_uncond: torch.Tensor | None
    noise_cond: torch.Tensor | None
    scheduler: Any  # the diffusers scheduler; None for A1111's samplers
    step_output: Any
    # A1111's samplers give the predicted clean latents themselves: (guided, unconditional, conditional).
    denoised: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None] | None = None

    @cached_property
    def x0(self) -> torch.Tensor:
        """The model's current guess of the finished image, in latent space."""
        if self.denoised is not None:
            return self.denoised[0]
        return predicted_x0(self.scheduler, self.step_output, self.sample, self.noise_pred, self.timestep)


def predicted_x0(scheduler: Any, step_output: Any, sample: torch.Tensor, model_output: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    x0 = getattr(step_output, "pred_original_sample", None)
    if x0 is not None:
        return x0
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is None:
        return step_output.prev_sample
    a = alphas[int(t)].to(sample.device, sample.dtype)
    if scheduler.config.prediction_type == "v_prediction":
        return a.sqrt() * sample - (1 - a).sqrt() * model_output
    return (sample - (1 - a).sqrt() * model_output) / a.sqrt()


def step_kwargs(scheduler: Any, generator: list[torch.Generator] | None, eta: float = 0.0) -> dict[str, Any]:
    """The optional arguments this scheduler's `step` accepts, as diffusers' pipelines pass them."""
    import inspect

    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted and generator is not None:
        kwargs["generator"] = generator if len(generator) > 1 else generator[0]
    return kwargs


def denoise(
    unet: Callable[..., torch.Tensor],
    scheduler: Any,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    conditioning: Callable[[int], StepConditioning],
    cfg_scale: float,
    *,
    extra_step_kwargs: dict[str, Any],
    inpaint: InpaintLatents | None = None,
    on_step: Callable[[StepState], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    control: Any | None = None,
) -> torch.Tensor:
    """Run the scheduler over `timesteps` from `latents`; return the final latents.

    `unet(sample, t, hidden, added, residuals)` is the backend's network call (engine/backend.py).
    `control` (an `engine.control.Control`) adds ControlNet residuals to the UNet at the steps
    where its units are active; it sees the 4-channel latents even for a 9-channel inpainting UNet."""
    do_cfg = cfg_scale > 1.0
    for i, t in enumerate(timesteps):
        if cancel is not None and cancel():
            raise Cancelled("The generation was cancelled.")
        hidden, added = conditioning(i)
        model_input = torch.cat([latents] * 2) if do_cfg else latents
        model_input = scheduler.scale_model_input(model_input, t)
        halves = ("uncond", "cond") if do_cfg else ("cond",)
        residuals = control.residuals(i, model_input, t, hidden, added, halves) if control is not None else None
        if inpaint is not None and inpaint.masked_image_latents is not None:
            extra = torch.cat([inpaint.mask, inpaint.masked_image_latents], dim=1)
            model_input = torch.cat([model_input, torch.cat([extra] * 2) if do_cfg else extra], dim=1)
        noise_pred = unet(model_input, t, hidden, added, residuals)
        noise_uncond = noise_cond = None
        if do_cfg:
            noise_uncond, noise_cond = noise_pred.chunk(2)
            noise_pred = noise_uncond + cfg_scale * (noise_cond - noise_uncond)
        sample = latents
        output = scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=True)
        latents = output.prev_sample
        if inpaint is not None and inpaint.masked_image_latents is None:
            latents = _keep_unmasked(scheduler, latents, inpaint, timesteps, i)
        if on_step is not None:
            on_step(StepState(i, len(timesteps), t, sample, latents, noise_pred, noise_uncond, noise_cond, scheduler, output))
    return latents


def _keep_unmasked(scheduler: Any, latents: torch.Tensor, inpaint: InpaintLatents, timesteps: torch.Tensor, i: int) -> torch.Tensor:
    """Latent-mask blending: outside the mask, put back the original re-noised to the next step's level."""
    original = inpaint.image_latents
    if i < len(timesteps) - 1:
        original = scheduler.add_noise(original, inpaint.noise, timesteps[i + 1 : i + 2])
    return (1 - inpaint.mask) * original + inpaint.mask * latents
