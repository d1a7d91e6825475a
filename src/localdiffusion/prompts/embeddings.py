"""Textual-inversion embeddings in A1111's file formats, found by file name in a prompt.

A file `name.pt` / `name.safetensors` / `name.bin` is used wherever the prompt's tokens spell
`name` (A1111's `EmbeddingDatabase`): its vectors take the place of those tokens. Supported layouts:
`string_to_param: {'*': tensor}` (A1111 training), a single tensor such as `emb_params` (kohya) or
a diffusers concept, and SDXL's `clip_l` + `clip_g` pair. `.pt` files load with
`torch.load(weights_only=True)`, so a file can never run code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from localdiffusion.errors import BadInput

@dataclass(frozen=True)
class Embedding:
    """An embedding's vectors: `vectors` for a one-encoder file, or one tensor per SDXL encoder."""

    name: str
    vectors: torch.Tensor | None = None
    clip_l: torch.Tensor | None = None
    clip_g: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """How many token positions the embedding fills."""
        return int(next(t for t in (self.vectors, self.clip_l, self.clip_g) if t is not None).shape[0])

    def for_encoder(self, key: str | None, width: int) -> torch.Tensor:
        """The vectors for an encoder of `width`, checked to fit.

        `key` is 'clip_l' or 'clip_g' for SDXL's encoders, which need an SDXL pair (A1111 skips
        one-encoder files there), and None for SD1/SD2, which need a one-encoder file.
        """
        tensor = self.vectors if key is None else getattr(self, key)
        if tensor is None or tensor.shape[-1] != width:
            have = "SDXL vectors (clip_l and clip_g)" if self.vectors is None else f"vectors of width {self.vectors.shape[-1]}"
            raise BadInput(
                f"The embedding '{self.name}' has {have}, which does not fit this model's text encoder "
                f"(width {width}); use an embedding made for this model family.",
                field="prompt",
            )
        return tensor


def load_embedding(path: Path, name: str | None = None) -> Embedding:
    """Read one embedding file; an unreadable or unknown layout raises BadInput."""
    path = Path(path)
    name = name or path.stem
    data = _read(path, name)
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            raise _bad(path, "its 'string_to_param' must hold exactly one tensor")
        return Embedding(name, vectors=_matrix(next(iter(params.values())), path))
    if "clip_l" in data and "clip_g" in data:
        return Embedding(name, clip_l=_matrix(data["clip_l"], path), clip_g=_matrix(data["clip_g"], path))
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(tensors) == 1 and len(data) == 1:
        return Embedding(name, vectors=_matrix(tensors[0], path))
    raise _bad(path, "it holds none of 'string_to_param', 'clip_l'+'clip_g' or a single tensor")


class EmbeddingIndex:
    """Finds embedding names in a token sequence; loads each file the first time it is used."""

    def __init__(self, files: dict[str, Path], tokenize) -> None:
        self._files = dict(files)
        self._loaded: dict[str, Embedding] = {}
        # First token id -> (token ids of the name, name), longest names first, as A1111 matches.
        self._by_first: dict[int, list[tuple[list[int], str]]] = {}
        for name in self._files:
            ids = tokenize(name)
            if ids:
                self._by_first.setdefault(ids[0], []).append((ids, name))
        for candidates in self._by_first.values():
            candidates.sort(key=lambda entry: len(entry[0]), reverse=True)

    def match(self, tokens: Sequence[int], position: int) -> tuple[Embedding, int] | None:
        """The embedding whose name starts at `position`, and how many tokens the name spans."""
        for ids, name in self._by_first.get(tokens[position], ()):
            if list(tokens[position : position + len(ids)]) == ids:
                return self.get(name), len(ids)
        return None

    def get(self, name: str) -> Embedding:
        if name not in self._loaded:
            self._loaded[name] = load_embedding(self._files[name], name)
        return self._loaded[name]


def _read(path: Path, name: str) -> dict:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BadInput(f"The embedding file {path} for '{name}' does not exist.", field="prompt") from None
    except Exception as error:  # unpickling refusals and corrupt files alike
        raise _bad(path, f"it cannot be read safely ({type(error).__name__})") from None
    if not isinstance(data, dict):
        raise _bad(path, "it does not hold a dictionary of tensors")
    return data


def _matrix(tensor, path: Path) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or tensor.ndim not in (1, 2):
        raise _bad(path, "its vectors are not a 1- or 2-dimensional tensor")
    tensor = tensor.detach().to(torch.float32)
    return tensor.unsqueeze(0) if tensor.ndim == 1 else tensor


def _bad(path: Path, why: str) -> BadInput:
    return BadInput(f"The embedding file {path} is not an A1111 textual-inversion embedding: {why}.", field="prompt")
