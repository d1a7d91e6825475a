"""The networks the denoising loop calls, behind one small interface.

The loop, the samplers, the noise and the modes are ours (engine/generate.py, engine/sampling.py);
the networks they call (the UNet, the VAE's encoder and decoder, the text encoders) sit behind a
`Backend`. `TorchBackend` runs them with torch on a diffusers pipeline's components and does every
feature; another backend (OpenVINO on CPUs) can implement the same calls, and a feature it cannot do
falls back to torch or is refused in one sentence, never a wrong image. The A1111 k-diffusion core
(engine/k_sampling/) wraps `Backend.unet` as its denoiser when it is wired.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from PIL import Image

from localdiffusion.engine.k_sampling.pixels import to_uint8_a1111

Residuals = tuple[list[torch.Tensor], torch.Tensor]  # ControlNet down-block residuals, mid-block residual


class Backend(Protocol):
    """One loaded model's networks, as the loop calls them."""

    dtype: torch.dtype  # what the UNet computes in (latents are handed over in it)
    in_channels: int  # 4; 9 for an inpainting UNet

    def unet(self, sample: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor, added: dict[str, torch.Tensor] | None,
             residuals: Residuals | None = None) -> torch.Tensor:
        """The noise (or v) prediction for `sample` at timestep `t` under the text conditioning."""
        ...

    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1], (B, 3, H, W), to scaled latents in `dtype`."""
        ...

    def vae_decode(self, latents: torch.Tensor, truncate: bool = False) -> list[Image.Image]:
        """Scaled latents to RGB images; `truncate` converts to 8 bits as A1111 does (truncating, where
        diffusers rounds)."""
        ...

    def encode_text(self, clip_skip: int, embeddings: dict[str, Any]) -> Any:
        """The prompt encoder (prompts/encoder.py) over this model's text encoders, at this clip skip and
        with these textual-inversion embeddings."""
        ...


class TorchBackend:
    """The torch implementation over a diffusers pipeline's components."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.unet.dtype

    @property
    def in_channels(self) -> int:
        return self.pipe.unet.config.in_channels

    @staticmethod
    def of(pipe: Any) -> TorchBackend:
        """The pipeline's backend, made once and kept with it."""
        backend = pipe.__dict__.get("_localdiffusion_backend")
        if backend is None:
            backend = pipe.__dict__["_localdiffusion_backend"] = TorchBackend(pipe)
        return backend

    def unet(self, sample: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor, added: dict[str, torch.Tensor] | None,
             residuals: Residuals | None = None) -> torch.Tensor:
        return self.pipe.unet(sample, t, encoder_hidden_states=hidden, timestep_cond=None, cross_attention_kwargs=None,
                              added_cond_kwargs=added, return_dict=False, **_residual_kwargs(residuals))[0]

    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        pixels = pixels.to(vae.dtype)  # in the VAE's own dtype before any fp32 upcast, as diffusers hands them over
        with _upcast_vae(vae):
            latents = vae.encode(pixels.to(vae.dtype)).latent_dist.mode()
        return (latents * vae.config.scaling_factor).to(self.pipe.unet.dtype)

    def vae_decode(self, latents: torch.Tensor, truncate: bool = False) -> list[Image.Image]:
        vae = self.pipe.vae
        with _upcast_vae(vae):
            image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        if truncate:
            return [Image.fromarray(pixels) for pixels in to_uint8_a1111(image)]
        return self.pipe.image_processor.postprocess(image, output_type="pil", do_denormalize=[True] * image.shape[0])

    def encode_text(self, clip_skip: int, embeddings: dict[str, Any]) -> Any:
        from localdiffusion.prompts import PromptEncoder

        return PromptEncoder.from_pipeline(self.pipe, clip_skip=clip_skip, embeddings=embeddings)


class FastDecodeBackend:
    """A backend whose `vae_decode` is TAESD's (`vae_decode="fast"`); every other call is the wrapped one's."""

    def __init__(self, inner: Backend, taesd: Any) -> None:
        self.inner, self.taesd = inner, taesd

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def vae_decode(self, latents: torch.Tensor, truncate: bool = False) -> list[Image.Image]:
        return taesd_decode(self.taesd, latents, truncate)


@torch.no_grad()
def taesd_decode(taesd: Any, latents: torch.Tensor, truncate: bool = False) -> list[Image.Image]:
    """Scaled SD latents to RGB images through TAESD (it reads them as they are: its scaling factor is 1); 8 bits
    by truncation as A1111 (`truncate`) or by rounding as diffusers."""
    image = taesd.decode(latents.to(device=taesd.device, dtype=taesd.dtype), return_dict=False)[0]
    if truncate:
        return [Image.fromarray(pixels) for pixels in to_uint8_a1111(image)]
    x = ((image.float() + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).cpu().numpy()
    return [Image.fromarray(pixels) for pixels in (x * 255.0).round().astype("uint8")]


def _residual_kwargs(residuals: Residuals | None) -> dict[str, Any]:
    """The UNet's ControlNet arguments; none at all without control, so that path stays exactly as before."""
    if residuals is None:
        return {}
    down, mid = residuals
    return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


class _upcast_vae:
    """SDXL's VAE overflows in fp16; run it in fp32 when its config asks for that."""

    def __init__(self, vae: Any) -> None:
        self.vae = vae
        self.upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)

    def __enter__(self) -> None:
        if self.upcast:
            self.vae.to(torch.float32)

    def __exit__(self, *exc: object) -> None:
        if self.upcast:
            self.vae.to(torch.float16)
