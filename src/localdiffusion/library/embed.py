"""Meaning as vectors, offline: wordllama's bundled model (token embeddings distilled from large language models,
256 dimensions, 32,000 tokens, 16 MB) read by path from inside the installed `wordllama` package.

The network is never asked: the weights and the tokenizer file ship in the wheel, and are opened with safetensors
and `tokenizers` directly (wordllama's own loader would look for a cache and may download). An entry's vector is
the mean of its tokens' vectors, normalised, as wordllama's `embed(norm=True)` computes it; each distinct word's
token ids are cached, and a batch is pooled as one sparse-by-dense product, so embedding keeps up with an import
(about 200,000 prompts a second here).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from localdiffusion.errors import LocalDiffusionError

WEIGHTS = "weights/l2_supercat_256.safetensors"
TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
DIM = 256
_WORD_CACHE = 500_000  # distinct words whose token ids are remembered (then the cache starts again)


def wordllama_files() -> tuple[Path, Path]:
    """The bundled weights and tokenizer files, found without importing wordllama (whose import sets up logging)."""
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise LocalDiffusionError("Search by meaning needs the wordllama package, which is missing: "
                                  "install Local Diffusion's requirements again (scripts/setup.sh).")
    root = Path(list(spec.submodule_search_locations)[0])
    weights, tokenizer = root / WEIGHTS, root / TOKENIZER
    if not weights.exists() or not tokenizer.exists():
        raise LocalDiffusionError(f"The wordllama package in {root} lacks its bundled model ({WEIGHTS}); install wordllama 0.4 again.")
    return weights, tokenizer


class Embedder:
    """Text to unit vectors (float32, `DIM` wide)."""

    def __init__(self) -> None:
        from safetensors import safe_open
        from tokenizers import Tokenizer

        weights, tokenizer = wordllama_files()
        with safe_open(str(weights), framework="np") as f:
            self.table = np.ascontiguousarray(f.get_tensor("embedding.weight").astype(np.float32))
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self._words: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def _ids(self, word: str) -> list[int]:
        ids = self._words.get(word)
        if ids is None:
            if len(self._words) >= _WORD_CACHE:
                self._words.clear()
            ids = self._words[word] = self.tokenizer.encode(word, add_special_tokens=False).ids
        return ids

    def embed(self, texts: list[str]) -> np.ndarray:
        from scipy import sparse

        with self._lock:
            columns: list[int] = []
            indptr = [0]
            extend, words = columns.extend, self._words
            for text in texts:
                for word in text.split():
                    ids = words.get(word)
                    extend(ids if ids is not None else self._ids(word))
                indptr.append(len(columns))
        counts = sparse.csr_matrix((np.ones(len(columns), np.float32), np.asarray(columns, np.int32),
                                    np.asarray(indptr, np.int64)), shape=(len(texts), self.table.shape[0]))
        vectors = np.asarray(counts @ self.table, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return vectors / norms


_shared: Embedder | None = None
_shared_lock = threading.Lock()


def embedder() -> Embedder:
    """One Embedder per process, loaded on first use (about 0.1 s)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Embedder()
        return _shared


def to_bits(vectors: np.ndarray) -> np.ndarray:
    """Each vector as `DIM` sign bits (uint8 rows of DIM/8 bytes)."""
    return np.packbits(vectors > 0, axis=1)


def to_half(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The first `dim` dimensions, renormalised, as float16."""
    head = vectors[:, :dim]
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (head / norms).astype(np.float16)
