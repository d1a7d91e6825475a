"""Checkpoints by name: titles as A1111 shows them, looked up in the library, never opened as a path."""

from __future__ import annotations

import re

from localdiffusion.errors import ModelNotFound, one_of
from localdiffusion.models.info import ModelInfo
from localdiffusion.server.a1111.state import A1111State
from localdiffusion.server.studio import Studio

_TITLE = re.compile(r"(.*?)\s*\[([0-9a-fA-F]{8,64})\]")


def model_title(info: ModelInfo) -> str:
    """A1111's checkpoint title: the file name and, once known, the short hash ('name.safetensors [1a2b3c4d5e]')."""
    return f"{info.path.name} [{info.short_hash}]" if info.short_hash else info.path.name


def find_checkpoint(studio: Studio, name: str, field_name: str = "sd_model_checkpoint") -> ModelInfo:
    """A checkpoint by A1111 title, file name, model name or hash."""
    query = _library_query(name)
    checkpoints = studio.library.list("checkpoint")
    if query and checkpoints:
        try:
            return studio.library.get(query, kind="checkpoint")
        except ModelNotFound:
            pass
    titles = [model_title(m) for m in checkpoints]
    raise ModelNotFound(f"No checkpoint named '{name}'; the library has {one_of(titles) if titles else 'none'}.",
                        field=field_name)


def _library_query(name: str) -> str:
    """The library query for a requested name; any folder part is dropped, so that a name from a
    request can never point outside the library."""
    match = _TITLE.fullmatch(name.strip())
    base, short = (match.group(1), match.group(2)) if match else (name.strip(), None)
    safe = re.split(r"[\\/]", base)[-1].strip()
    return f"{safe} [{short}]" if safe and short else safe or (short or "")


def current_checkpoint(studio: Studio, state: A1111State, override: str | None = None) -> ModelInfo:
    """The request's override, else the checkpoint chosen through the options, else the library's default."""
    if override:
        return find_checkpoint(studio, override)
    if state.checkpoint:
        try:
            return find_checkpoint(studio, state.checkpoint)
        except ModelNotFound:
            state.checkpoint = None  # removed since it was chosen: fall back to the default
    return studio.library.default_checkpoint()
