"""What the UNet receives for one prompt text, and the per-step view of an edited prompt."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from localdiffusion.errors import BadInput

TOKENS_PER_CHUNK = 77


@dataclass(frozen=True, eq=False)  # tensors have no single truth value, so compare by identity
class Conditioning:
    """Text-encoder output for one prompt text.

    `embeds` is [1, chunks * 77, D]; `pooled` is SDXL's [1, P] pooled vector (None otherwise);
    `padding` is the encoding of the empty prompt [1, 77, D], which `match_lengths` appends.
    """

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    padding: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def chunks(self) -> int:
        return self.embeds.shape[1] // TOKENS_PER_CHUNK

    def zeros(self) -> Conditioning:
        """All-zero conditioning of the same shape (SDXL's empty negative prompt, as A1111 and diffusers do)."""
        pooled = None if self.pooled is None else torch.zeros_like(self.pooled)
        return Conditioning(torch.zeros_like(self.embeds), pooled, self.padding)


def match_lengths(a: Conditioning, b: Conditioning) -> tuple[Conditioning, Conditioning]:
    """Pad the shorter of two conditionings with empty-prompt chunks so they can share a batch.

    This is A1111's `pad_cond_uncond` option. (By default A1111 runs prompts of different lengths
    through the UNet separately instead, which gives slightly different images than padding.)
    """
    if a.embeds.shape[1] == b.embeds.shape[1]:
        return a, b
    if a.embeds.shape[1] < b.embeds.shape[1]:
        return _pad_to(a, b.embeds.shape[1], b.padding), b
    return a, _pad_to(b, a.embeds.shape[1], a.padding)


def _pad_to(cond: Conditioning, length: int, fallback: torch.Tensor | None) -> Conditioning:
    empty = cond.padding if cond.padding is not None else fallback
    if empty is None:
        raise ValueError("match_lengths needs a Conditioning made by PromptEncoder (it carries the empty-prompt chunk).")
    repeats = (length - cond.embeds.shape[1]) // empty.shape[1]
    filler = empty.to(cond.embeds.device, cond.embeds.dtype).repeat(1, repeats, 1)
    return Conditioning(torch.cat([cond.embeds, filler], dim=1), cond.pooled, cond.padding)


@dataclass(frozen=True, eq=False)
class StepConditioning:
    """The conditioning for each sampling step of a prompt with editing or alternation.

    `schedule` is `(end_at_step, text)` as `schedule()` returns it; `by_text` holds one encoding per
    distinct text. Step indices are 0-based; like A1111's sampler, step index i uses the first entry
    with i <= end_at_step, so `[cat:dog:0.5]` over 10 steps is 'cat' for indices 0-5, 'dog' for 6-9.
    """

    schedule: tuple[tuple[int, str], ...]
    by_text: dict[str, Conditioning] = field(repr=False)

    def text_at(self, step_index: int) -> str:
        if step_index < 0:
            raise BadInput(f"The step index {step_index} is negative; step indices start at 0.", field="steps")
        for end, text in self.schedule:
            if step_index <= end:
                return text
        return self.schedule[-1][1]

    def at(self, step_index: int) -> Conditioning:
        return self.by_text[self.text_at(step_index)]

    @property
    def steps(self) -> int:
        return self.schedule[-1][0]

    @property
    def changes(self) -> tuple[int, ...]:
        """The step indices whose text differs from the step before."""
        return tuple(i for i in range(1, self.steps) if self.text_at(i) != self.text_at(i - 1))

    @property
    def is_constant(self) -> bool:
        return len(self.by_text) == 1
