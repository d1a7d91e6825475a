"""Shared attention across generations (StoryDiffusion's consistent self-attention, training-free).

Each self-attention layer (`attn1`) in the UNet's up blocks normally attends to its own image's
tokens only. While a `SharedAttention` is *writing*, those layers keep a random share of their input
tokens per step (the first panel: the look to keep). While it is *reading*, every later generation's
layers attend to their own tokens plus the kept ones, so faces, clothes and colours carry over while
the prompt, pose and framing change. As in StoryDiffusion, only the up blocks share (the down blocks
keep each image's own layout), and only a share of the tokens (0.5 by default), so the later image is
not simply copied.

The tokens are kept per layer and per timestep; a reader at another timestep (other step counts,
img2img, hires) takes the nearest one. The CFG halves stay apart: a reader's negative rows see the
writer's negative tokens. Nothing changes when there is nothing to read, so a run with an empty bank
is bit-identical to a plain one. Memory is the bank: `estimate_bytes` says how much before running.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from typing import Any

import torch

from localdiffusion.engine.attention import wrapped_processors
from localdiffusion.errors import BadInput

DEFAULT_SHARE = 0.5


class SharedAttention:
    """A bank of up-block self-attention tokens: filled while `writing`, read by later generations."""

    def __init__(self, share: float = DEFAULT_SHARE, seed: int = 0) -> None:
        if not 0 < share <= 1:
            raise BadInput(f"The shared-attention share {share:g} is out of range; use a fraction above 0 and up to 1.",
                           field="share")
        self.share, self.seed = share, seed
        self.writing = True
        self.timestep = 0  # the timestep of the UNet call now running, set by a forward hook
        self.bank: dict[str, dict[int, torch.Tensor]] = {}  # layer -> timestep -> (rows, tokens, channels)

    def keep(self, layer: str, hidden: torch.Tensor) -> None:
        """Keep a fixed random share of this layer's tokens (the same positions every step, drawn per layer)."""
        tokens = hidden.shape[1]
        count = max(1, round(tokens * self.share))
        generator = torch.Generator().manual_seed(self.seed + sum(map(ord, layer)) + tokens)
        positions = torch.randperm(tokens, generator=generator)[:count].to(hidden.device)
        kept = hidden.index_select(1, positions).detach()
        steps = self.bank.setdefault(layer, {})
        earlier = steps.get(self.timestep)
        steps[self.timestep] = kept if earlier is None or earlier.shape[0] != kept.shape[0] else torch.cat([earlier, kept], 1)

    def read(self, layer: str, hidden: torch.Tensor) -> torch.Tensor | None:
        """The kept tokens for this layer at the nearest timestep, one row per row of `hidden`."""
        steps = self.bank.get(layer)
        if not steps:
            return None
        kept = steps[min(steps, key=lambda t: abs(t - self.timestep))]
        rows = hidden.shape[0]
        if kept.shape[0] == rows:
            return kept.to(hidden.dtype)
        if rows % kept.shape[0] == 0:  # a writer's [negative; positive] for a reader's batch of each
            return kept.repeat_interleave(rows // kept.shape[0], dim=0).to(hidden.dtype)
        return kept[-1:].expand(rows, -1, -1).to(hidden.dtype)  # CFG on one side only: the positive half

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for steps in self.bank.values() for t in steps.values())


class SharedSelfAttentionProcessor:
    """Wraps an `attn1` processor: keys and values also come from the bank's tokens when reading."""

    def __init__(self, inner: Any, shared: SharedAttention, layer: str) -> None:
        self.inner, self.shared, self.layer = inner, shared, layer

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if encoder_hidden_states is None and hidden_states.ndim == 3:
            if self.shared.writing:
                self.shared.keep(self.layer, hidden_states)
            else:
                kept = self.shared.read(self.layer, hidden_states)
                if kept is not None:
                    encoder_hidden_states = torch.cat([hidden_states, kept], dim=1)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


def shared_layer_names(unet: Any) -> list[str]:
    return [name for name in unet.attn_processors if name.startswith("up_blocks.") and name.endswith("attn1.processor")]


def share_attention(unet: Any, shared: SharedAttention) -> AbstractContextManager[None]:
    """Inside the block, `unet`'s up-block self-attention writes to or reads from `shared`."""
    return wrapped_processors(
        unet, shared_layer_names(unet),
        lambda name, inner: SharedSelfAttentionProcessor(inner, shared, name.removesuffix(".processor")),
        _timestep_hook(shared))


def _timestep_hook(shared: SharedAttention):
    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        t = args[1] if len(args) > 1 else kwargs.get("timestep")
        shared.timestep = int(t.flatten()[0].item()) if torch.is_tensor(t) else int(t)

    return hook


def estimate_bytes(unet_config: Any, width: int, height: int, steps: int, writers: int = 1, share: float = DEFAULT_SHARE,
                   cfg: bool = True, element_size: int = 4) -> int:
    """What the bank will hold after `writers` generations of `steps` steps at this size: per up-block
    transformer layer, its share of tokens times its channels, for each CFG half."""
    config = dict(unet_config)
    downs = len(config["down_block_types"])
    channels = list(reversed(config["block_out_channels"]))
    per_block = config.get("transformer_layers_per_block", 1)
    per_block = list(reversed(per_block)) if isinstance(per_block, (list, tuple)) else [per_block] * downs
    layers_per_up_block = (config["layers_per_block"] if isinstance(config["layers_per_block"], int)
                           else max(config["layers_per_block"])) + 1
    side_h, side_w = height // 8, width // 8
    total = 0
    for i, block in enumerate(config["up_block_types"]):
        if "CrossAttn" not in block:
            continue
        factor = 2 ** (downs - 1 - i)
        tokens = math.ceil(side_h / factor) * math.ceil(side_w / factor)
        kept = max(1, round(tokens * share))
        total += layers_per_up_block * per_block[i] * kept * channels[i]
    return total * (2 if cfg else 1) * steps * writers * element_size
