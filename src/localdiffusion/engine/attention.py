"""Cross-attention capture for word heatmaps (DAAM, Tang et al. 2022), with bounded memory.

A wrapper processor on each UNet cross-attention layer (`attn2`) lets the layer's own processor
(SDPA's `AttnProcessor2_0` by default) compute the output exactly as before, so the image does not
change, and separately computes softmax(QK^T/sqrt(d)) over the text tokens for the capture only.
Each map is averaged over heads and added to running sums per token at the layer's own resolution:
for the conditional and the unconditional (negative) half of the CFG batch, and for early and late
steps apart. Bilinear upsampling is linear, so the sums are upsampled once, when read, instead of
every map every step; memory stays fixed (one sum per layer resolution), whatever the step count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextvars import ContextVar
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
import torch.nn.functional as F

MAP_SIZE = 64
HALVES = ("cond", "uncond")
PHASES = ("early", "late")
SCORES_BUDGET = 64 * 2**20  # bytes of attention scores computed at once; larger layers go a few heads at a time


# The CFG halves of the UNet batch now running, in order ("cond", "uncond"), when its caller says so.
BATCH_HALVES: ContextVar[tuple[str, ...] | None] = ContextVar("localdiffusion_batch_halves", default=None)


@contextmanager
def batch_halves(halves: tuple[str, ...]) -> Iterator[None]:
    """Inside the block, UNet calls on this thread say their batch is made of `halves`, each an equal share of its rows."""
    token = BATCH_HALVES.set(halves)
    try:
        yield
    finally:
        BATCH_HALVES.reset(token)


class AttentionRecorder:
    """Running sums of cross-attention maps per text token: `sums[(half, phase, (h, w))]` is (tokens, h, w)."""

    def __init__(self, steps: int, cfg: bool = True, size: int = MAP_SIZE, keep_uncond: bool = True) -> None:
        self.size, self.cfg = size, cfg  # cfg: the UNet batch is [negative; positive]
        self.keep_uncond = cfg and keep_uncond  # False: skip the negative half (no negative-prompt maps wanted)
        self.total = max(1, steps)
        self.step = 0  # index of the step now running, set by `after_step`
        self.sums: dict[tuple[str, str, tuple[int, int]], torch.Tensor] = {}
        self.latent_size: tuple[int, int] | None = None

    # --- driven by the engine ---

    def after_step(self, state: Any) -> None:
        """Called after each step: the next UNet calls belong to the next step (or the next pass)."""
        self.total = max(1, state.total)
        self.step = (state.index + 1) % self.total

    def phase(self) -> str:
        return "early" if self.step < (self.total + 1) // 2 else "late"

    def halves(self, batch: int) -> list[tuple[str, slice]]:
        """Which rows of a UNet batch of `batch` to capture, by half: as the caller laid the batch out
        (`batch_halves`, A1111's samplers), else the diffusers loop's [negative; positive]."""
        layout = BATCH_HALVES.get()
        if layout is not None:
            rows = batch // len(layout)
            return [(half, slice(i * rows, (i + 1) * rows)) for i, half in enumerate(layout)
                    if half == "cond" or self.keep_uncond]
        if not self.cfg:
            return [("cond", slice(0, batch))]
        half = batch // 2
        wanted = [("uncond", slice(0, half))] if self.keep_uncond else []
        return [*wanted, ("cond", slice(half, batch))]

    def add(self, name: str, probs: torch.Tensor) -> None:
        """`probs`: (pixels, tokens) for one half, averaged over heads and the half's images."""
        h, w = self._grid(probs.shape[0])
        self._accumulate((name, self.phase(), (h, w)), probs.T.reshape(-1, h, w).float().cpu())

    def _grid(self, pixels: int) -> tuple[int, int]:
        """The layer's (h, w): the latent's aspect ratio, scaled down to `pixels` positions."""
        lh, lw = self.latent_size or (1, 1)
        h = max(1, round((pixels * lh / lw) ** 0.5))
        while pixels % h:
            h -= 1
        return h, pixels // h

    def _accumulate(self, key: tuple[str, str, tuple[int, int]], maps: torch.Tensor) -> None:
        current = self.sums.get(key)
        if current is None:
            self.sums[key] = maps.clone()
            return
        if current.shape[0] < maps.shape[0]:  # a later step's prompt has more chunks
            current = torch.cat([current, current.new_zeros(maps.shape[0] - current.shape[0], *current.shape[1:])])
        current[: maps.shape[0]] += maps
        self.sums[key] = current

    # --- read by explanations ---

    def maps(self, half: str = "cond", phase: str | None = None) -> torch.Tensor | None:
        """Summed maps (tokens, S, S) for one half, over all steps or over `phase` only."""
        phases = [phase] if phase else PHASES
        parts = [t for (h, p, _), t in self.sums.items() if h == half and p in phases]
        if not parts:
            return None
        total = torch.zeros(max(p.shape[0] for p in parts), self.size, self.size)
        for p in parts:
            total[: p.shape[0]] += F.interpolate(p[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        return total

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.sums.values())


class CaptureProcessor:
    """Wraps a cross-attention layer's processor: the output is the wrapped one's, untouched."""

    def __init__(self, inner: Any, recorder: AttentionRecorder) -> None:
        self.inner, self.recorder = inner, recorder

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        output = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if encoder_hidden_states is not None:
            with torch.no_grad():
                self._capture(attn, hidden_states, encoder_hidden_states)
        return output

    def _capture(self, attn: Any, hidden: torch.Tensor, context: torch.Tensor | tuple) -> None:
        if isinstance(context, tuple):  # with an IP-Adapter: (prompt tokens, image tokens); the words are the prompt's
            context = context[0]
        halves = self.recorder.halves(hidden.shape[0])
        if not halves:
            return
        first = min(rows.start for _, rows in halves)  # the rows from the first wanted one on
        hidden, context = hidden[first:], context[first:]
        if hidden.ndim == 4:
            b, c, h, w = hidden.shape
            hidden = hidden.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden = attn.group_norm(hidden.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query, key = attn.to_q(hidden), attn.to_k(context)
        batch, heads = query.shape[0], attn.heads
        query = query.view(batch, -1, heads, query.shape[-1] // heads).transpose(1, 2)
        key = key.view(batch, -1, heads, key.shape[-1] // heads).transpose(1, 2)
        if getattr(attn, "norm_q", None) is not None:
            query = attn.norm_q(query)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)
        probs = _head_mean_probs(query, key, attn.scale)  # (batch, pixels, tokens)
        for name, rows in halves:
            self.recorder.add(name, probs[rows.start - first: rows.stop - first].mean(0))


def _head_mean_probs(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(QK^T * scale) averaged over heads: (batch, heads, pixels, d) -> (batch, pixels, tokens).
    All heads at once when the scores fit SCORES_BUDGET, else a group of heads at a time."""
    batch, heads, pixels, _ = query.shape
    per_head = batch * pixels * key.shape[2] * 4
    group = max(1, min(heads, SCORES_BUDGET // max(1, per_head)))
    total = None
    for start in range(0, heads, group):
        # Scaling the queries (pixels x d) is cheaper than scaling the scores (pixels x tokens).
        q, k = query[:, start:start + group].float() * scale, key[:, start:start + group].float()
        part = (q @ k.transpose(-1, -2)).softmax(dim=-1).sum(dim=1)
        total = part if total is None else total + part
    return total / heads


def cross_attention_names(unet: Any) -> list[str]:
    return [name for name in unet.attn_processors if name.endswith("attn2.processor")]


def capture_attention(unet: Any, recorder: AttentionRecorder) -> AbstractContextManager[None]:
    """Record `unet`'s cross-attention into `recorder` inside the block."""
    return wrapped_processors(unet, cross_attention_names(unet), lambda name, inner: CaptureProcessor(inner, recorder),
                              _latent_size_hook(recorder))


@contextmanager
def wrapped_processors(unet: Any, names: list[str], wrap: Callable[[str, Any], Any],
                       pre_hook: Callable[..., None]) -> Iterator[None]:
    """Inside the block, each named attention processor of `unet` is `wrap(name, original)` and `pre_hook`
    sees every UNet call; the original processors come back afterwards, also on an error or a cancel."""
    originals = dict(unet.attn_processors)
    wrapped = dict(originals)
    for name in names:
        wrapped[name] = wrap(name, originals[name])
    hook = unet.register_forward_pre_hook(pre_hook, with_kwargs=True)
    unet.set_attn_processor(wrapped)
    try:
        yield
    finally:
        hook.remove()
        unet.set_attn_processor(originals)


def _latent_size_hook(recorder: AttentionRecorder) -> Callable[..., None]:
    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs.get("sample")
        if sample is not None:
            recorder.latent_size = tuple(sample.shape[-2:])

    return hook
