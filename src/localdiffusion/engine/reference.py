"""Reference images through IP-Adapters: adapters on the UNet, and the pictures' embeddings per step.

The adapters go into the cached pipeline's UNet with diffusers' own loader
(`UNet2DConditionModel._load_ip_adapter_weights`, what `load_ip_adapter` calls once it has read a
file). There is one adapter slot per (adapter, scale): references that share both share a slot,
and diffusers gives each of their pictures its own image tokens in it (4 for a plain adapter, 16
for a plus one), which the UNet's cross-attention attends to beside the prompt's; the slot's scale
multiplies what they add. Scale 0 skips a slot altogether.

The pictures are encoded once per generation. CFG's unconditional half gets zero embeddings (plain
adapters) or the encoding of an all-zero picture (plus adapters), as diffusers'
`prepare_ip_adapter_image_embeds` does; the embeddings reach the UNet as
`added_cond_kwargs["image_embeds"]`.

The adapters are on the UNet only while a generation is bound (`installed`, a context manager): on
exit, also after an error or a cancel, the UNet gets back the very processors and projection it had
before, so the next recipe's images stay bit-identical. The adapted processors are kept aside, so
that the next run with the same adapters puts them back without reading the files again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from localdiffusion.engine.conditioning import stack
from localdiffusion.models.info import ModelInfo
from localdiffusion.models.ip_adapter import ImageEncoder, read_adapter

# Where the pipeline keeps its IP-Adapter state (as the LoRA state, in its __dict__).
PLAIN = "_localdiffusion_plain_attention"  # the UNet's own processors and projection, from before any adapter
INSTALLED = "_localdiffusion_ip_adapters"  # the adapter paths installed, one per slot
ADAPTED = "_localdiffusion_ip_adapted"  # (adapter paths, processors, projection, hid type) of the last install, kept aside

Embeds = tuple[torch.Tensor, torch.Tensor]  # (positive, negative), each (1, pictures, ...)


@dataclass
class Slot:
    """One IP-Adapter slot on the UNet: an adapter at one scale, the pictures it is shown, its encoder."""

    adapter: ModelInfo
    encoder: Path
    scale: float
    images: list[Image.Image]


def slots_for(scales: list[float], adapters: list[ModelInfo], encoders: list[Path], images: list[Image.Image]) -> list[Slot]:
    """The references (given as parallel lists) grouped into slots by adapter and scale."""
    slots: dict[tuple[Path, float], Slot] = {}
    for scale, adapter, encoder, image in zip(scales, adapters, encoders, images):
        slots.setdefault((Path(adapter.path), scale), Slot(adapter, encoder, scale, [])).images.append(image)
    return list(slots.values())


@contextmanager
def installed(pipe: Any, slots: list[Slot], allow_pickle: bool = False) -> Iterator[None]:
    """These slots' adapters on the pipeline's UNet inside the block, at their scales; the plain UNet after it."""
    install(pipe, slots, allow_pickle)
    try:
        yield
    finally:
        remove(pipe)


def install(pipe: Any, slots: list[Slot], allow_pickle: bool = False) -> None:
    """Put exactly these slots' adapters on the pipeline's UNet (none: take any out) and set their scales."""
    wanted = tuple(str(slot.adapter.path) for slot in slots)
    if pipe.__dict__.get(INSTALLED, ()) != wanted:
        remove(pipe)
        if wanted:
            unet = pipe.unet
            pipe.__dict__[PLAIN] = (dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type)
            kept = pipe.__dict__.get(ADAPTED)
            if kept is not None and kept[0] == wanted:
                _set_attention(pipe, *kept[1:])
            else:
                pipe.__dict__.pop(ADAPTED, None)
                with _quiet_diffusers():
                    unet._load_ip_adapter_weights([read_adapter(slot.adapter, allow_pickle) for slot in slots])
                pipe.__dict__[ADAPTED] = (wanted, dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type)
            pipe.__dict__[INSTALLED] = wanted
    if slots:
        pipe.set_ip_adapter_scale([slot.scale for slot in slots])


@contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """The loader ends with a `.to()` that warns about float32 modules even when there are none."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def remove(pipe: Any) -> None:
    """Give the UNet back the processors and projection it had before any adapter."""
    plain = pipe.__dict__.pop(PLAIN, None)
    pipe.__dict__.pop(INSTALLED, None)
    if plain is None:
        return
    _set_attention(pipe, *plain)


def _set_attention(pipe: Any, processors: dict[str, Any], projection: Any, hid_type: Any) -> None:
    pipe.unet.set_attn_processor(dict(processors))  # set_attn_processor empties the dict it is given
    pipe.unet.encoder_hid_proj = projection
    pipe.unet.config.encoder_hid_dim_type = hid_type


@torch.no_grad()
def embed(pipe: Any, slots: list[Slot], encoders: list[ImageEncoder], device: torch.device) -> list[Embeds]:
    """Each slot's pictures through its encoder: what its image projection reads, and CFG's negative."""
    from diffusers.models.embeddings import ImageProjection

    embeds = []
    for slot, encoder, layer in zip(slots, encoders, pipe.unet.encoder_hid_proj.image_projection_layers):
        pixels = encoder.processor(slot.images, return_tensors="pt").pixel_values.to(device, encoder.model.dtype)
        if isinstance(layer, ImageProjection):  # a plain adapter: the projected image embedding
            positive = encoder.model(pixels).image_embeds
            negative = torch.zeros_like(positive)
        else:  # plus and full-face adapters: the penultimate hidden states
            positive = encoder.model(pixels, output_hidden_states=True).hidden_states[-2]
            negative = encoder.model(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
        embeds.append((positive[None], negative[None]))
    return embeds


def with_image_embeds(conditioning: Callable[[int], Any], embeds: list[Embeds], batch: int, do_cfg: bool,
                      dtype: torch.dtype) -> Callable[[int], Any]:
    """The step conditioning with the references' embeddings added, batched as the prompts are ([negative; positive])."""
    batched = [stack(positive, negative if do_cfg else None, batch).to(dtype) for positive, negative in embeds]

    def at(i: int) -> Any:
        hidden, added = conditioning(i)
        return hidden, {**(added or {}), "image_embeds": batched}

    return at


def with_image_embeds_pair(conds: Callable[[int], Any], embeds: list[Embeds], batch: int, dtype: torch.dtype) -> Callable[[int], Any]:
    """A1111-style conditioning ((prompt's, negative's) network arguments per evaluation) with the references'
    embeddings added to each half."""
    positive = [stack(p, None, batch).to(dtype) for p, _ in embeds]
    negative = [stack(n, None, batch).to(dtype) for _, n in embeds]

    def at(i: int) -> Any:
        cond, uncond = conds(i)
        return ({**cond, "added": {**(cond["added"] or {}), "image_embeds": positive}},
                {**uncond, "added": {**(uncond["added"] or {}), "image_embeds": negative}})

    return at
