"""TAESD: madebyollin's tiny approximate VAE (diffusers `AutoencoderTiny`), from HOME/models/VAE-approx.

It decodes SD latents about ten times faster than the full VAE, a little less faithfully: sharp live
previews, and the final image when a run asks for fast decoding (`vae_decode="fast"`). It reads the
same scaled latents the UNet makes (its scaling factor is 1) and gives pixels in [-1, 1], as the full VAE.

A diffusers folder (config.json + weights) loads as it is. A single file is either diffusers' layout
(`decoder.layers.N.*`, with or without the encoder) or madebyollin's original decoder (`taesd_decoder`),
whose layers are diffusers' shifted by one (the original starts with a weightless clamp); its widths are
read from its shapes (TAESD's own block counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from localdiffusion.errors import UnsupportedModel
from localdiffusion.models.detect import TAESD_DECODER, read_tensor_shapes, read_tensors, taesd_latent_channels, taesd_layout
from localdiffusion.models.info import ModelInfo, base_family


def taesd_family_for(checkpoint_family: str) -> str:
    """Which TAESD decodes a checkpoint's latents: 'sdxl' for SDXL and its refiner, 'sd1' for SD1 and SD2."""
    return "sdxl" if base_family(checkpoint_family).startswith("sdxl") else "sd1"


@dataclass
class LoadedTaesd:
    """A loaded TAESD as the pipeline cache holds it (the cache sizes entries by their components)."""

    model: Any  # diffusers AutoencoderTiny

    @property
    def components(self) -> dict[str, Any]:
        return {"taesd": self.model}


def load_taesd(info: ModelInfo, dtype: torch.dtype, allow_pickle: bool = False) -> Any:
    """The AutoencoderTiny of a VAE-approx model, in `dtype`, in evaluation mode, on the CPU."""
    from diffusers import AutoencoderTiny

    path = Path(info.path)
    if path.is_dir():
        model = AutoencoderTiny.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True,
                                                use_safetensors=not allow_pickle or None)
        return model.eval()
    shapes = read_tensor_shapes(path, allow_pickle)
    layout = taesd_layout(shapes)
    if layout not in ("diffusers", "decoder"):
        raise UnsupportedModel(f"'{path.name}' is not a TAESD decoder.")
    tensors = read_tensors(path, allow_pickle=allow_pickle)
    if layout == "decoder":  # madebyollin's original decoder: layer N is diffusers' layer N - 1
        tensors = {f"{TAESD_DECODER}{int(k.split('.', 1)[0]) - 1}.{k.split('.', 1)[1]}": v for k, v in tensors.items()}
    decoder_width = tensors[TAESD_DECODER + "0.weight"].shape[0]
    encoder_first = tensors.get("encoder.layers.0.weight")
    encoder_width = encoder_first.shape[0] if encoder_first is not None else decoder_width
    model = AutoencoderTiny(encoder_block_out_channels=(encoder_width,) * 4, decoder_block_out_channels=(decoder_width,) * 4,
                            latent_channels=taesd_latent_channels(shapes))
    expected = model.state_dict()
    wanted = {k for k in expected if k.startswith("decoder.") or encoder_first is not None}
    missing, unexpected = wanted - tensors.keys(), tensors.keys() - expected.keys()
    if missing or unexpected or any(tensors[k].shape != expected[k].shape for k in wanted):
        raise UnsupportedModel(f"'{path.name}' does not have TAESD's layout (its layers differ from AutoencoderTiny's).")
    model.load_state_dict(tensors, strict=False)
    return model.to(dtype).eval()
