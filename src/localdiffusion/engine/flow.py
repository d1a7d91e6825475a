"""SD3/3.5 and FLUX in the engine: flow matching, with our own loop over diffusers' FlowMatchEulerDiscreteScheduler.

`check` (called by engine/prepare.py) fills the family's defaults where a recipe left them (sampler "Euler",
schedule "Simple", for FLUX a CFG scale of 1 and Forge's Distilled CFG Scale 3.5) and refuses in one sentence
what these families do not do here (inpaint, outpaint, hires fix, ControlNet, IP-Adapter, refiner). `FlowBackend`
is the Backend (engine/backend.py) over the pipeline's transformer and 16-channel VAE. `run_batch` samples one
batch, txt2img or img2img, as the raw diffusers pipelines do (StableDiffusion3Pipeline, FluxPipeline and their
Img2Img twins: the VAE's sample, then the noise, mixed by `scale_noise` at the first kept step): the same noise, timesteps
(SD3's shift from its scheduler config; FLUX's resolution-dependent shift `mu`), CFG (SD3: negative and positive
in one batch; FLUX: Forge's "true CFG", a second pass, only when the CFG scale is above 1), FLUX's distilled
guidance as the transformer's input, and the same decoding, so the same settings give diffusers' picture bit
for bit (contract "diffusers").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from localdiffusion.engine.noise import generator_for
from localdiffusion.engine.previews import latent_to_rgb
from localdiffusion.engine.samplers import FLOW_SAMPLERS, make_flow_scheduler, resolve_flow_sampler
from localdiffusion.engine.sampling import StepState
from localdiffusion.errors import BadInput
from localdiffusion.models.info import FLOW_FAMILIES, ModelInfo
from localdiffusion.recipe import Recipe

DISTILLED_CFG = 3.5  # Forge's default "Distilled CFG Scale"
LABEL = {"sd3": "SD3.5", "flux": "FLUX"}
ATTENTION_UNAVAILABLE = ("Word heatmaps are not drawn for SD3.5 and FLUX models: their text and image tokens attend "
                         "jointly, and the studio captures only a UNet's cross-attention.")


def is_flow(info: ModelInfo) -> bool:
    return info.family in FLOW_FAMILIES


def is_flow_pipe(pipe: Any) -> bool:
    return getattr(pipe, "transformer", None) is not None


def check(recipe: Recipe, info: ModelInfo, guidance_distilled: bool) -> Recipe:
    """The recipe with the family's defaults where it left them, or one sentence for what cannot be done."""
    label = LABEL[info.family]
    given = recipe.model_fields_set
    updates: dict[str, Any] = {}
    default_sampler = Recipe.model_fields["sampler_name"].default
    if recipe.sampler_name not in FLOW_SAMPLERS and ("sampler_name" not in given or recipe.sampler_name == default_sampler):
        updates["sampler_name"] = "Euler"
    sampler, label_type = resolve_flow_sampler(updates.get("sampler_name", recipe.sampler_name), recipe.scheduler)
    updates["sampler_name"] = sampler.name
    updates["scheduler"] = sampler.automatic if label_type == "Automatic" else label_type  # Forge writes the real one
    if info.family == "flux" and "cfg_scale" not in given:
        updates["cfg_scale"] = 1.0
    updates["distilled_cfg_scale"] = (recipe.distilled_cfg_scale or DISTILLED_CFG) if guidance_distilled else None
    refused = [(recipe.mode not in ("txt2img", "img2img"), "mode", f"{recipe.mode}"), (recipe.enable_hr, "enable_hr", "the hires fix"),
               (bool(recipe.controls), "controls", "ControlNet"), (bool(recipe.references), "references", "IP-Adapter references"),
               (bool(recipe.refiner_checkpoint), "refiner_checkpoint", "a refiner")]
    for bad, field, what in refused:
        if bad:
            raise BadInput(f"{label} models do txt2img and img2img only here, so {what} cannot be used with "
                           f"'{info.name}'; pick an SD1, SD2 or SDXL model for it.", field=field)
    recipe = recipe.model_copy(update=updates)
    check_size(recipe, info)
    return recipe


def check_size(recipe: Recipe, info: Any) -> None:
    """SD 3.5 and FLUX patch the latent in 2x2 pieces: a width and height that are multiples of 16 (called again
    once the size is known, for an img2img picture's own size)."""
    label = "FLUX" if info.family == "flux" else "SD 3.5"
    for name in ("width", "height"):
        value = getattr(recipe, name)
        if value is not None and value % 16:
            raise BadInput(f"{label} models need a {name} that is a multiple of 16; {value} is not (try {value // 16 * 16 or 16}).",
                           field=name)


class FlowBackend:
    """The Backend (engine/backend.py) of an SD3 or FLUX pipeline: its transformer, its 16-channel VAE (with the
    latents' shift) and its prompt encoder (CLIP with A1111's weights, T5 with the plain text)."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.flux = getattr(pipe, "text_encoder_3", None) is None and hasattr(pipe, "_pack_latents")

    @staticmethod
    def of(pipe: Any) -> FlowBackend:
        backend = pipe.__dict__.get("_localdiffusion_backend")
        if backend is None:
            backend = pipe.__dict__["_localdiffusion_backend"] = FlowBackend(pipe)
        return backend

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.transformer.dtype

    @property
    def in_channels(self) -> int:
        return self.pipe.transformer.config.in_channels

    @property
    def latent_channels(self) -> int:
        return self.in_channels // 4 if self.flux else self.in_channels

    def unet(self, sample: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor, added: dict[str, Any] | None,
             residuals: Any = None) -> torch.Tensor:
        """The transformer's velocity for `sample` at timestep `t` (0-1000); `added`: the pooled text, and FLUX's
        guidance and token positions."""
        added = added or {}
        if self.flux:
            return self.pipe.transformer(hidden_states=sample, timestep=t / 1000, guidance=added.get("guidance"),
                                         pooled_projections=added["pooled"], encoder_hidden_states=hidden,
                                         txt_ids=added["txt_ids"], img_ids=added["img_ids"], joint_attention_kwargs=None,
                                         return_dict=False)[0]
        return self.pipe.transformer(hidden_states=sample, timestep=t, encoder_hidden_states=hidden,
                                     pooled_projections=added["pooled"], joint_attention_kwargs=None, return_dict=False)[0]

    def vae_encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pixels to latents; with a generator, a sample of the VAE's distribution, as diffusers' img2img pipelines."""
        vae = self.pipe.vae
        dist = vae.encode(pixels.to(vae.dtype)).latent_dist
        latents = dist.sample(generator) if generator is not None else dist.mode()
        return ((latents - vae.config.shift_factor) * vae.config.scaling_factor).to(self.dtype)

    def vae_decode(self, latents: torch.Tensor, truncate: bool = False) -> list[Image.Image]:
        """Latents (B, 16, h, w), unpacked, to images, as the diffusers pipelines decode them."""
        vae = self.pipe.vae
        image = vae.decode((latents / vae.config.scaling_factor + vae.config.shift_factor).to(vae.dtype), return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type="pil")

    def encode_text(self, clip_skip: int, embeddings: dict[str, Any]) -> Any:
        from localdiffusion.prompts import FlowPromptEncoder

        return FlowPromptEncoder.from_pipeline(self.pipe, embeddings=embeddings)


def _calculate_shift(seq_len: int, config: Any) -> float:
    """diffusers' `calculate_shift`: FLUX's time shift grows with the image's token count."""
    base_seq, max_seq = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    m = (max_shift - base_shift) / (max_seq - base_seq)
    return seq_len * m + (base_shift - m * base_seq)


def _stack(t: torch.Tensor, batch: int) -> torch.Tensor:
    return t.repeat(batch, *[1] * (t.dim() - 1))


def run_batch(engine: Any, run: Any) -> list[Image.Image]:
    """One batch of an SD3 or FLUX recipe, as the raw diffusers pipeline samples it."""
    recipe, pipe, backend = run.plan.recipe, run.bound.pipe, run.backend
    device, batch = engine.device, len(run.seeds)
    scale = pipe.vae_scale_factor
    h, w = recipe.height // scale, recipe.width // scale
    if backend.flux:
        h, w = 2 * (recipe.height // (scale * 2)), 2 * (recipe.width // (scale * 2))
    run.generators = [generator_for(s, recipe.rng, device) for s in run.seeds]
    image_latents = None
    if run.plan.inputs is not None:  # img2img: each image's VAE sample draws from its generator before its noise
        pixels = pipe.image_processor.preprocess(run.plan.inputs.image, height=recipe.height, width=recipe.width)
        pixels = pixels.to(device=device, dtype=backend.dtype)
        image_latents = torch.cat([backend.vae_encode(pixels, g) for g in run.generators])
    latents = engine._noise(run, (1, backend.latent_channels, h, w))
    dtype = latents.dtype
    scheduler = make_flow_scheduler(recipe.sampler_name, recipe.scheduler, pipe.scheduler.config)
    config = scheduler.config
    if backend.flux:
        steps = recipe.steps
        sigmas = None if config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        scheduler.set_timesteps(sigmas=sigmas, device=device, mu=_calculate_shift((h // 2) * (w // 2), config))
    else:
        kwargs = {}
        if config.get("use_dynamic_shifting"):
            patch = pipe.transformer.config.patch_size
            kwargs["mu"] = _calculate_shift((h // patch) * (w // patch), config)
        scheduler.set_timesteps(recipe.steps, device=device, **kwargs)
    timesteps, start = scheduler.timesteps, 0
    if image_latents is not None:  # diffusers' img2img `get_timesteps`: skip the first (1 - strength) of the steps
        start = int(max(recipe.steps - min(recipe.steps * recipe.denoising_strength, recipe.steps), 0))
        timesteps = timesteps[start:]
        if len(timesteps) == 0:
            return backend.vae_decode(image_latents)
        scheduler.set_begin_index(start)
        latents = scheduler.scale_noise(image_latents, timesteps[:1].repeat(batch), latents).to(dtype)
    scheduler.set_begin_index(start)
    if backend.flux:
        latents = pipe._pack_latents(latents, batch, backend.latent_channels, h, w)
    prompts = run.bound.encoder
    positive = prompts.encoder.for_steps(prompts.prompt, len(timesteps))
    negative = prompts.encoder.for_steps(prompts.negative, len(timesteps))
    cfg = recipe.cfg_scale > 1.0
    extra: dict[str, Any] = {}
    if backend.flux:
        extra["img_ids"] = pipe._prepare_latent_image_ids(batch, h // 2, w // 2, device, dtype)
        if pipe.transformer.config.guidance_embeds:
            extra["guidance"] = torch.full([1], recipe.distilled_cfg_scale or DISTILLED_CFG, device=device,
                                            dtype=torch.float32).expand(batch)
    for i, t in enumerate(timesteps):
        if run.cancel is not None and run.cancel():
            from localdiffusion.errors import Cancelled

            raise Cancelled("The generation was cancelled.")
        pos, neg = positive.at(i), negative.at(i)
        sample = latents
        uncond = cond = None
        if backend.flux:
            def flux_pass(c: Any) -> torch.Tensor:
                ids = torch.zeros(c.embeds.shape[1], 3).to(device=device, dtype=c.embeds.dtype)
                added = {**extra, "pooled": _stack(c.pooled, batch).to(device), "txt_ids": ids}
                return backend.unet(latents, t.expand(batch).to(dtype), _stack(c.embeds, batch).to(device), added)

            pred = flux_pass(pos)
            if cfg:
                cond, uncond = pred, flux_pass(neg)
                pred = uncond + recipe.cfg_scale * (pred - uncond)
        elif cfg and pos.embeds.shape == neg.embeds.shape:
            hidden = torch.cat([_stack(neg.embeds, batch), _stack(pos.embeds, batch)]).to(device)
            pooled = torch.cat([_stack(neg.pooled, batch), _stack(pos.pooled, batch)]).to(device)
            both = torch.cat([latents] * 2)
            uncond, cond = backend.unet(both, t.expand(both.shape[0]), hidden, {"pooled": pooled}).chunk(2)
            pred = uncond + recipe.cfg_scale * (cond - uncond)
        else:
            def sd3_pass(c: Any) -> torch.Tensor:
                return backend.unet(latents, t.expand(batch), _stack(c.embeds, batch).to(device),
                                    {"pooled": _stack(c.pooled, batch).to(device)})

            pred = cond = sd3_pass(pos)
            if cfg:
                uncond = sd3_pass(neg)
                pred = uncond + recipe.cfg_scale * (cond - uncond)
        sigma = scheduler.sigmas[i]
        output = scheduler.step(pred, t, latents, return_dict=True)
        latents = output.prev_sample.to(dtype)
        if run.on_step is not None:
            _report(run, pipe, backend, recipe, i, len(timesteps), t, sample, latents, pred, uncond, cond, sigma, scheduler, output)
    if backend.flux:
        latents = pipe._unpack_latents(latents, recipe.height, recipe.width, scale)
    return backend.vae_decode(latents)


def _report(run: Any, pipe: Any, backend: FlowBackend, recipe: Recipe, i: int, total: int, t: torch.Tensor,
            sample: torch.Tensor, latents: torch.Tensor, pred: torch.Tensor, uncond: torch.Tensor | None,
            cond: torch.Tensor | None, sigma: torch.Tensor, scheduler: Any, output: Any) -> None:
    """A step for the observers (progress, previews, timeline, CFG views), in unpacked (B, 16, h, w) latents; the
    predicted clean latents are x - sigma * v (flow matching's velocity)."""
    def unpack(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None or not backend.flux:
            return x
        return pipe._unpack_latents(x, recipe.height, recipe.width, pipe.vae_scale_factor)

    def x0(v: torch.Tensor | None) -> torch.Tensor | None:
        return None if v is None else unpack(sample - sigma * v)

    if run.on_step.decode_preview is None:  # the 16-channel latents' own matrix (engine/previews.py)
        family = "flux" if backend.flux else "sd3"
        run.on_step.decode_preview = lambda latent: latent_to_rgb(latent, family=family)
    run.on_step(StepState(i, total, t, unpack(sample), unpack(latents), unpack(pred), unpack(uncond), unpack(cond),
                          scheduler, output, denoised=(x0(pred), x0(uncond), x0(cond))))
