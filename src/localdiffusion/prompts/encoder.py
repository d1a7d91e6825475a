"""Encode A1111 prompt texts with diffusers' CLIP text encoders, as A1111 does.

One (tokenizer, text encoder) pair for SD1/SD2, two for SDXL (CLIP-L and OpenCLIP-G), one (G) for the
SDXL refiner. Each text is parsed for attention, split into 75-token chunks, and each chunk is
encoded as its own 77-token sequence; the chunks are concatenated, so long prompts are never cut.
Weights multiply the chunk's outputs, then the chunk's original mean is restored (A1111's
"Original" emphasis). All-1.0 prompts skip that step, so they match diffusers bit for bit.

Which hidden layer is used, as A1111 does:
- SD1 (OpenAI CLIP): `clip_skip` 1 is the last layer; n > 1 is `hidden_states[-n]` then the final
  layer norm (diffusers' `clip_skip` is n - 1).
- SD2 (OpenCLIP, its tokenizer pads with a token other than its end token): A1111 ignores clip skip.
- SDXL: the penultimate hidden state of every encoder, without the final layer norm (A1111 ignores
  clip skip here by default), concatenated on the last axis; the pooled vector is OpenCLIP-G's
  `text_embeds` of the first chunk.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from localdiffusion.errors import BadInput, UnsupportedModel
from localdiffusion.prompts.attention import BREAK, parse_attention
from localdiffusion.prompts.chunks import Chunk, split_into_chunks
from localdiffusion.prompts.conditioning import Conditioning, StepConditioning
from localdiffusion.prompts.embeddings import EmbeddingIndex
from localdiffusion.prompts.schedule import schedule

CACHE_SIZE = 64


class _TextEncoder:
    """One tokenizer + CLIP text encoder and the rule for which layer it returns."""

    def __init__(self, tokenizer, model, clip_skip: int, sdxl: bool, embeddings: dict[str, Path]) -> None:
        self.tokenizer, self.model = tokenizer, model
        self.projection = hasattr(model, "text_projection")
        self.sdxl = sdxl
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.comma = tokenizer.get_vocab().get(",</w>")
        openai_clip = self.pad == self.eos
        self.clip_skip = clip_skip if openai_clip and not sdxl else 1
        self.width = model.config.hidden_size
        self.embedding_key = ("clip_g" if self.projection else "clip_l") if sdxl else None
        self.embeddings = EmbeddingIndex(embeddings, lambda text: self.tokenize([text])[0]) if embeddings else None

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]

    def chunks(self, pieces: list[tuple[str, float]]) -> list[Chunk]:
        return split_into_chunks(pieces, self.tokenize, self.comma, self.embeddings)

    @torch.no_grad()
    def encode(self, chunks: list[Chunk]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[1, len(chunks) * 77, D] embeddings, and the pooled vector of the first chunk (or None).

        Chunks go through the model one at a time, as in A1111: a batch would round differently,
        and a chunk must encode the same wherever it stands.
        """
        encoded = [self._encode_chunk(chunk) for chunk in chunks]
        hidden = torch.cat([h for h, _ in encoded], dim=1)
        return hidden, encoded[0][1]

    def _encode_chunk(self, chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = self.model.device
        ids = torch.tensor([chunk.ids(self.bos, self.eos, self.pad)], device=device)
        with self._spliced(chunk):
            out = self.model(input_ids=ids, output_hidden_states=self.sdxl or self.clip_skip > 1)
        hidden = self._hidden(out)
        weights = torch.tensor([chunk.full_weights()], device=device, dtype=hidden.dtype)
        if bool((weights != 1.0).any()):
            hidden = _emphasize(hidden, weights)
        return hidden, (out.text_embeds if self.projection else None)

    def _hidden(self, out) -> torch.Tensor:
        if self.sdxl:
            return out.hidden_states[-2]
        if self.clip_skip > 1:
            text_model = getattr(self.model, "text_model", self.model)
            return text_model.final_layer_norm(out.hidden_states[-self.clip_skip])
        return out[0]

    def _spliced(self, chunk: Chunk) -> _EmbeddingHook:
        """Replace the token embeddings of placeholder positions with embedding vectors."""
        fixes = [(1 + offset, e.for_encoder(self.embedding_key, self.width)) for offset, e in chunk.fixes]
        return _EmbeddingHook(self.model.get_input_embeddings(), fixes)


class _EmbeddingHook:
    def __init__(self, layer: torch.nn.Module, fixes: list[tuple[int, torch.Tensor]]) -> None:
        self.layer, self.fixes, self.handle = layer, fixes, None

    def __enter__(self) -> None:
        if self.fixes:
            self.handle = self.layer.register_forward_hook(self._apply)

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.remove()

    def _apply(self, module, inputs, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for start, vectors in self.fixes:
            output[0, start : start + vectors.shape[0]] = vectors.to(output.device, output.dtype)
        return output


def _emphasize(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111's "Original" emphasis for one chunk: scale each token, then restore the mean."""
    original_mean = hidden.mean()
    hidden = hidden * weights.unsqueeze(-1)
    return hidden * (original_mean / hidden.mean())


class _CachedEncoding:
    """What every family's prompt encoder shares: each text's conditioning computed once (a bounded cache,
    oldest out first) and the conditioning for every step of a prompt with edits. A subclass makes
    `_conditioning(text)`."""

    def __init__(self, cache_size: int) -> None:
        self._cache: OrderedDict[str, Conditioning] = OrderedDict()
        self._cache_size = cache_size

    def _conditioning(self, text: str) -> Conditioning:
        raise NotImplementedError

    def encode(self, text: str) -> Conditioning:
        """The conditioning of one already-scheduled prompt text."""
        if text in self._cache:
            self._cache.move_to_end(text)
            return self._cache[text]
        cond = self._cache[text] = self._conditioning(text)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return cond

    def for_steps(self, prompt: str, steps: int, hires_steps: int | None = None) -> StepConditioning:
        """The conditioning for every step of a prompt with `[from:to:when]` edits or `[a|b]`."""
        if steps < 1:
            raise BadInput(f"Steps {steps} is not allowed; use 1 or more.", field="steps")
        plan = tuple(schedule(prompt, steps, hires_steps))
        return StepConditioning(plan, {text: self.encode(text) for _, text in plan})

    def clear_cache(self) -> None:
        self._cache.clear()


def _clip_outputs(encoders: Sequence[_TextEncoder], text: str) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Each CLIP encoder's (hidden states, pooled) for the text, all with the same number of 75-token chunks."""
    pieces = parse_attention(text)
    per_encoder = [encoder.chunks(pieces) for encoder in encoders]
    count = max(len(chunks) for chunks in per_encoder)
    return [encoder.encode(chunks + [Chunk()] * (count - len(chunks))) for encoder, chunks in zip(encoders, per_encoder)]


class PromptEncoder(_CachedEncoding):
    """Turns prompt texts into `Conditioning`, caching each text's encoding.

    Call `clear_cache()` after changing text-encoder weights (for example applying a LoRA).
    """

    def __init__(self, pairs: Sequence[tuple[object, torch.nn.Module]], clip_skip: int = 1,
                 embeddings: dict[str, Path] | None = None, cache_size: int = CACHE_SIZE) -> None:
        if not pairs:
            raise UnsupportedModel("This model has no text encoder, so it cannot take a prompt.")
        if clip_skip < 1:
            raise BadInput(f"Clip skip {clip_skip} is not allowed; use 1 (no skip) or more.", field="clip_skip")
        sdxl = len(pairs) > 1 or any(hasattr(model, "text_projection") for _, model in pairs)
        super().__init__(cache_size)
        self.encoders = [_TextEncoder(tok, model, clip_skip, sdxl, dict(embeddings or {})) for tok, model in pairs]
        self._empty: torch.Tensor | None = None

    @classmethod
    def from_pipeline(cls, pipe, clip_skip: int = 1, embeddings: dict[str, Path] | None = None) -> PromptEncoder:
        """An encoder for a diffusers pipeline's `text_encoder` and/or `text_encoder_2`."""
        pairs = [(getattr(pipe, tok), getattr(pipe, enc))
                 for tok, enc in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
                 if getattr(pipe, enc, None) is not None]
        return cls(pairs, clip_skip=clip_skip, embeddings=embeddings)

    def _conditioning(self, text: str) -> Conditioning:
        embeds, pooled = self._encode(text)
        return Conditioning(embeds, pooled, self.empty_chunk())

    def empty_chunk(self) -> torch.Tensor:
        """The encoding of the empty prompt, [1, 77, D]: what `match_lengths` pads with."""
        if self._empty is None:
            self._empty = self._encode("")[0]
        return self._empty

    def clear_cache(self) -> None:
        super().clear_cache()
        self._empty = None

    def _encode(self, text: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        outputs = _clip_outputs(self.encoders, text)
        device = outputs[0][0].device
        embeds = torch.cat([hidden.to(device) for hidden, _ in outputs], dim=-1)
        pooled = next((p for _, p in outputs if p is not None), None)
        return embeds, pooled


# ---------------------------------------------------------------------------------------------
# SD3/3.5 and FLUX: CLIP encoders with A1111's weights, and T5 with the plain text

T5_TOKENS = {"sd3": 256, "flux": 512}  # what diffusers' pipelines give T5 (`max_sequence_length`), padded to it


def plain_text(text: str) -> str:
    """A prompt without A1111's emphasis syntax and BREAK: what T5 reads."""
    joined = "".join(" " if (t, w) == BREAK else t for t, w in parse_attention(text))
    return re.sub(r"\s+", " ", joined).strip()


class _PooledTextEncoder(_TextEncoder):
    """A CLIP encoder whose pooled vector is `pooler_output` (FLUX's CLIP-L has no projection)."""

    def _encode_chunk(self, chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = self.model.device
        ids = torch.tensor([chunk.ids(self.bos, self.eos, self.pad)], device=device)
        with self._spliced(chunk):
            out = self.model(input_ids=ids, output_hidden_states=True)
        return out.hidden_states[-2], out.pooler_output


class FlowPromptEncoder(_CachedEncoding):
    """SD3's and FLUX's prompts, as their diffusers pipelines encode them, with A1111's syntax where it can apply.

    SD3: CLIP-L and CLIP-G (penultimate layer, A1111's 75-token chunks and weights), side by side and padded to
    T5's width, then T5's tokens; the pooled vector is both CLIPs' projections. FLUX: T5's tokens; the pooled
    vector is CLIP-L's (its weights change nothing there). T5 receives the plain text (`plain_text`: weights and
    BREAK stripped), cut at `T5_TOKENS`. Clip skip does not apply (both read CLIP's penultimate layer).
    """

    def __init__(self, family: str, clips: Sequence[tuple[object, torch.nn.Module]], t5: tuple[object, torch.nn.Module],
                 embeddings: dict[str, Path] | None = None, cache_size: int = CACHE_SIZE) -> None:
        super().__init__(cache_size)
        self.family = family
        cls = _TextEncoder if family == "sd3" else _PooledTextEncoder
        self.encoders = [cls(tok, model, 1, True, dict(embeddings or {})) for tok, model in clips]
        # SDXL embeddings' clip_l and clip_g vectors go to CLIP-L and CLIP-G (both have projections in SD3); FLUX's
        # one CLIP takes clip_l vectors, as Forge gives it
        for encoder, key in zip(self.encoders, ("clip_l", "clip_g")):
            encoder.embedding_key = key
        self.t5_tokenizer, self.t5 = t5
        self.t5_tokens = T5_TOKENS[family]

    @classmethod
    def from_pipeline(cls, pipe, embeddings: dict[str, Path] | None = None) -> FlowPromptEncoder:
        if getattr(pipe, "text_encoder_3", None) is not None:
            return cls("sd3", [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)],
                       (pipe.tokenizer_3, pipe.text_encoder_3), embeddings)
        if getattr(pipe, "transformer", None) is not None and hasattr(pipe, "text_encoder_2") and not hasattr(pipe, "tokenizer_3"):
            return cls("flux", [(pipe.tokenizer, pipe.text_encoder)], (pipe.tokenizer_2, pipe.text_encoder_2), embeddings)
        raise UnsupportedModel("This SD3 model has no T5 text encoder; add its t5xxl file.")

    def t5_ids(self, text: str) -> list[int]:
        return self.t5_tokenizer(plain_text(text), padding="max_length", max_length=self.t5_tokens, truncation=True,
                                 add_special_tokens=True)["input_ids"]

    @torch.no_grad()
    def _conditioning(self, text: str) -> Conditioning:
        outputs = _clip_outputs(self.encoders, text)
        ids = torch.tensor([self.t5_ids(text)], device=self.t5.device)
        t5 = self.t5(ids)[0]
        if self.family == "flux":
            return Conditioning(t5, outputs[0][1].to(t5.device))
        clip = torch.cat([h.to(t5.device) for h, _ in outputs], dim=-1)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        pooled = torch.cat([p.to(t5.device) for _, p in outputs], dim=-1)
        return Conditioning(torch.cat([clip, t5.to(clip.dtype)], dim=-2), pooled)
