"""Word heatmaps: where each word of the prompt and of the negative prompt acted on the image.

The engine's `AttentionRecorder` sums cross-attention maps per text token; here tokens are mapped
back to words with the prompt anatomy (the same tokenization and 75-token chunks as the encoder),
and a word's map is the mean of its sub-tokens' maps, as DAAM does. BOS, EOS, padding and
punctuation are skipped.

Prompt editing and alternation change the text during the run while the sums cover all steps, so a
word's map is read at its position in the text used for the most steps (the first such text on a
tie); where another text puts other tokens at that position, the map mixes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from localdiffusion.engine.attention import AttentionRecorder
from localdiffusion.explain.anatomy import TextView, prompt_anatomy
from localdiffusion.prompts.chunks import CHUNK_LENGTH

CHUNK_IDS = CHUNK_LENGTH + 2  # BOS + 75 tokens + EOS/padding per chunk
# Dark purple, red, orange, pale yellow: an inferno-like colour map (low to high attention).
PALETTE = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32)


@dataclass
class Word:
    text: str
    positions: list[int]  # token positions in the encoder's hidden states (chunk * 77 + 1 + k)


@dataclass
class WordMap:
    """A word's heatmap (0..1) over all steps and over the early and late halves apart."""

    word: Word
    heat: np.ndarray
    early: np.ndarray | None
    late: np.ndarray | None
    share: float  # percent of the attention its prompt's words received


@dataclass
class WordHeatmaps:
    prompt_text: str
    negative_text: str
    prompt: list[WordMap] = field(default_factory=list)
    negative: list[WordMap] = field(default_factory=list)


def words_of(prompt: str, tokenizer: Any, steps: int, embeddings: dict | None = None) -> tuple[str, list[Word]]:
    """The words of the text `prompt` uses for the most steps, with their token positions."""
    anatomy = prompt_anatomy(prompt, tokenizer, steps, embeddings)
    view = max(anatomy.texts, key=lambda t: sum(last - first + 1 for first, last in t.steps))
    return view.text, _words_in(view)


def _words_in(view: TextView) -> list[Word]:
    """Tokens grouped into words: up to a token that ends a word, or one embedding's vectors."""
    words: list[Word] = []
    text, positions, embedding = "", [], None

    def flush() -> None:
        nonlocal text, positions, embedding
        if positions:
            words.append(Word(embedding or text.strip(), positions))
        text, positions, embedding = "", [], None

    for chunk in view.chunks:
        for k, token in enumerate(chunk.tokens):
            position = chunk.index * CHUNK_IDS + 1 + k
            if token.embedding is not None:
                if token.embedding != embedding:
                    flush()
                    embedding = token.embedding
                positions.append(position)
                continue
            if embedding is not None:
                flush()
            text += token.text
            positions.append(position)
            if token.word_end:
                flush()
    flush()
    return [w for w in words if re.search(r"\w", w.text)]


def word_heatmaps(recorder: AttentionRecorder, prompt: str, negative: str, tokenizer: Any, steps: int,
                  embeddings: dict | None = None) -> WordHeatmaps:
    """One map per word of the prompt (conditional half) and of the negative prompt (unconditional
    half; none when CFG was off, since the negative prompt then never ran)."""
    prompt_text, prompt_words = words_of(prompt, tokenizer, steps, embeddings)
    result = WordHeatmaps(prompt_text, "")
    result.prompt = _maps(recorder, "cond", prompt_words)
    if recorder.cfg and negative.strip():
        result.negative_text, negative_words = words_of(negative, tokenizer, steps, embeddings)
        result.negative = _maps(recorder, "uncond", negative_words)
    return result


def _maps(recorder: AttentionRecorder, half: str, words: list[Word]) -> list[WordMap]:
    total, early, late = (recorder.maps(half, phase) for phase in (None, "early", "late"))
    if total is None:
        return []
    masses = [float(_word_mean(total, w).sum()) for w in words]
    whole = sum(masses) or 1.0
    return [
        WordMap(w, _normalised(_word_mean(total, w)), _maybe(early, w), _maybe(late, w), 100.0 * mass / whole)
        for w, mass in zip(words, masses)
    ]


def _word_mean(maps: torch.Tensor, word: Word) -> torch.Tensor:
    inside = [p for p in word.positions if p < maps.shape[0]]
    if not inside:
        return torch.zeros(maps.shape[1:])
    return maps[inside].mean(0)


def _maybe(maps: torch.Tensor | None, word: Word) -> np.ndarray | None:
    return None if maps is None else _normalised(_word_mean(maps, word))


def _normalised(heat: torch.Tensor) -> np.ndarray:
    heat = torch.nan_to_num(heat, nan=0.0)  # a diverged run must still give readable (blank) maps
    heat = heat - heat.min()
    top = float(heat.max())
    return (heat / top if top > 0 else heat).numpy().astype(np.float32)


def colorize(heat: np.ndarray) -> np.ndarray:
    """0..1 values to RGB (float 0..255) along PALETTE."""
    scaled = np.clip(heat, 0, 1) * (len(PALETTE) - 1)
    low = np.floor(scaled).astype(int).clip(0, len(PALETTE) - 2)
    t = (scaled - low)[..., None]
    return PALETTE[low] * (1 - t) + PALETTE[low + 1] * t


def overlay(image: Image.Image, heat: np.ndarray, dim: float = 0.35) -> Image.Image:
    """The heatmap in colour over a dimmed copy of the image: bright where the word acted."""
    size = image.size
    upsampled = np.asarray(Image.fromarray(heat.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))
    base = np.asarray(image.convert("RGB"), dtype=np.float32) * dim
    alpha = (0.25 + 0.6 * np.clip(upsampled, 0, 1))[..., None]
    blended = base * (1 - alpha) + colorize(upsampled) * alpha
    return Image.fromarray(blended.clip(0, 255).astype(np.uint8))


def safe_names(words: list[str]) -> list[str]:
    """File stems: lowercase, non-alphanumerics to '-', repeats numbered '-2', '-3', ..."""
    seen: dict[str, int] = {}
    names = []
    for word in words:
        stem = re.sub(r"[^a-z0-9]+", "-", word.lower()).strip("-") or "word"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def heatmap_files(maps: WordHeatmaps, image: Image.Image) -> tuple[dict[str, Image.Image], dict[str, Any]]:
    """Overlay images by relative path (attention/<word>.png, attention/negative/<word>.png, and
    early/ and late/ folders beside each) and the `attention` section of explain.json."""
    files: dict[str, Image.Image] = {}
    section: dict[str, Any] = {"prompt_text": maps.prompt_text, "negative_text": maps.negative_text}
    for key, folder, words in (("prompt", "attention", maps.prompt), ("negative", "attention/negative", maps.negative)):
        entries = []
        for stem, wm in zip(safe_names([w.word.text for w in words]), words):
            entry: dict[str, Any] = {"word": wm.word.text, "tokens": len(wm.word.positions), "share": round(wm.share, 2)}
            for kind, heat in (("file", wm.heat), ("early", wm.early), ("late", wm.late)):
                if heat is None:
                    continue
                path = f"{folder}/{stem}.png" if kind == "file" else f"{folder}/{kind}/{stem}.png"
                files[path] = overlay(image, heat)
                entry[kind] = path
            entries.append(entry)
        section[key] = entries
    section["explanation"] = _explanation(maps)
    return files, section


def _explanation(maps: WordHeatmaps) -> str:
    parts = ["Each map shows where the image's pixels looked at a word while being denoised "
             "(cross-attention, averaged over heads, layers and steps); bright is more attention."]
    if maps.prompt:
        top = max(maps.prompt, key=lambda m: m.share)
        parts.append(f"In the prompt, '{top.word.text}' drew the most attention ({top.share:.0f}% of the prompt's words).")
    if maps.negative:
        parts.append("Negative-prompt maps show where the prediction without your prompt looked at those words; "
                     "guidance pushes the image away from it there.")
    parts.append("Early maps cover the first half of the steps (composition), late maps the second (detail).")
    return " ".join(parts)
