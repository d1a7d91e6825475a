"""What the UNet is conditioned on at each step: the recipe's prompts, batched for CFG.

Wraps the prompt encoder's per-step conditioning (prompt editing, alternation) with what the
model family needs on top: padding prompt and negative to one length, SDXL's pooled text and
micro-conditioning time ids, and SDXL's all-zero empty negative.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from localdiffusion.prompts import match_lengths
from localdiffusion.recipe import Recipe


class Prompts:
    """The positive and negative prompt of one recipe, encoded per step (editing, alternation)."""

    def __init__(self, encoder: Any, prompt: str, negative: str, zero_empty_negative: bool) -> None:
        self.encoder, self.prompt, self.negative = encoder, prompt, negative
        self.zero_empty_negative = zero_empty_negative

    def for_run(self, pipe: Any, steps: int, order: int, batch: int, recipe: Recipe, width: int, height: int,
                device: torch.device) -> Callable[[int], Any]:
        """Conditioning for the i-th timestep; a second-order sampler spends `order` timesteps per step."""
        positive = self.encoder.for_steps(self.prompt, steps)
        negative = self.encoder.for_steps(self.negative, steps)
        do_cfg = recipe.cfg_scale > 1.0
        time_ids = time_ids_for(pipe, width, height, device)
        per_step: dict[int, Any] = {}

        def at(i: int) -> Any:
            step = min(i // order, steps - 1)
            if step not in per_step:
                per_step[step] = self._batched(positive.at(step), negative.at(step), batch, do_cfg, time_ids, device)
            return per_step[step]

        return at

    def pair_for_run(self, pipe: Any, steps: int, batch: int, width: int, height: int, device: torch.device,
                     pad: bool = False) -> Callable[[int], tuple[dict[str, Any], dict[str, Any]]]:
        """A1111's conditioning for model evaluation i: (the prompt's, the negative prompt's) network arguments,
        each batched over the images. A1111 advances prompt schedules once per evaluation, over `steps`
        (twice the steps for a second-order sampler); later evaluations keep the last. `pad` is A1111's
        "Pad prompt/negative prompt": the shorter is padded to the longer's length."""
        positive = self.encoder.for_steps(self.prompt, steps)
        negative = self.encoder.for_steps(self.negative, steps)
        time_ids = time_ids_for(pipe, width, height, device)
        per_step: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

        def at(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
            step = min(i, steps - 1)
            if step not in per_step:
                pos, neg = positive.at(step), negative.at(step)
                if pad:
                    neg, pos = match_lengths(neg, pos)
                if self.zero_empty_negative:
                    pooled = None if pos.pooled is None else torch.zeros_like(pos.pooled)
                    neg = dataclasses.replace(neg, embeds=torch.zeros_like(pos.embeds), pooled=pooled)
                per_step[step] = (_half(pos, batch, None if time_ids is None else time_ids[0], "cond", device),
                                  _half(neg, batch, None if time_ids is None else time_ids[1], "uncond", device))
            return per_step[step]

        return at

    def _batched(self, pos: Any, neg: Any, batch: int, do_cfg: bool, time_ids: torch.Tensor | None, device: torch.device) -> Any:
        if do_cfg:
            neg, pos = match_lengths(neg, pos)
        if self.zero_empty_negative:
            pooled = None if pos.pooled is None else torch.zeros_like(pos.pooled)
            neg = dataclasses.replace(neg, embeds=torch.zeros_like(pos.embeds), pooled=pooled)
        hidden = stack(pos.embeds, neg.embeds if do_cfg else None, batch).to(device)
        if time_ids is None:
            return hidden, None
        pooled = stack(pos.pooled, neg.pooled if do_cfg else None, batch).to(device)
        ids = stack(time_ids[0], time_ids[1] if do_cfg else None, batch)
        return hidden, {"text_embeds": pooled.to(hidden.dtype), "time_ids": ids.to(hidden.dtype)}


def _half(cond: Any, batch: int, time_ids: torch.Tensor | None, half: str, device: torch.device) -> dict[str, Any]:
    """One CFG half as network arguments: hidden states, SDXL's added embeddings, and which half it is."""
    hidden = stack(cond.embeds, None, batch).to(device)
    added = None
    if time_ids is not None:
        added = {"text_embeds": stack(cond.pooled, None, batch).to(device, hidden.dtype),
                 "time_ids": stack(time_ids, None, batch).to(hidden.dtype)}
    return {"hidden": hidden, "added": added, "halves": (half,)}


def stack(positive: torch.Tensor, negative: torch.Tensor | None, batch: int) -> torch.Tensor:
    pos = positive.repeat(batch, *[1] * (positive.dim() - 1))
    if negative is None:
        return pos
    return torch.cat([negative.repeat(batch, *[1] * (negative.dim() - 1)), pos])


def time_ids_for(pipe: Any, width: int, height: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """SDXL's micro-conditioning (positive, negative): original size, crop offset, then target size,
    or for the refiner an aesthetic score (6 for the prompt, 2.5 for the negative, as diffusers)."""
    if getattr(pipe.unet.config, "addition_embed_type", None) != "text_time":
        return None
    if getattr(pipe.config, "requires_aesthetics_score", False):
        return (torch.tensor([[height, width, 0, 0, 6.0]], device=device),
                torch.tensor([[height, width, 0, 0, 2.5]], device=device))
    ids = torch.tensor([[height, width, 0, 0, height, width]], device=device)
    return ids, ids


def zeros_for_empty(pipe: Any, negative: str) -> bool:
    """SDXL base models ship `force_zeros_for_empty_prompt`: an empty negative prompt is all zeros."""
    return negative.strip() == "" and bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
