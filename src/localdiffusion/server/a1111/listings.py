"""A1111's lists: checkpoints, VAEs, samplers, schedulers, upscalers, LoRAs and embeddings."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from localdiffusion.engine.generate import LATENT_UPSCALERS
from localdiffusion.engine.k_sampling.schedules import SCHEDULE_TYPES as K_SCHEDULE_TYPES
from localdiffusion.engine.samplers import SAMPLERS, Sampler
from localdiffusion.errors import LocalDiffusionError, ModelNotFound
from localdiffusion.infotext import A1111_SAMPLER_ALIASES, A1111_SCHEDULERS
from localdiffusion.models.info import ModelInfo, base_family
from localdiffusion.models.library import ModelLibrary
from localdiffusion.models.provenance import read_metadata
from localdiffusion.server.a1111.checkpoints import current_checkpoint, model_title
from localdiffusion.server.a1111.state import A1111State
from localdiffusion.server.studio import Studio

# A1111's schedulers (modules/sd_schedulers.py) that the samplers here can follow.


def checkpoint_items(library: ModelLibrary) -> list[dict[str, Any]]:
    return [
        {"title": model_title(m), "model_name": m.name, "hash": m.short_hash, "sha256": m.sha256,
         "filename": str(m.path), "config": None}
        for m in library.list("checkpoint")
    ]


def vae_items(library: ModelLibrary) -> list[dict[str, Any]]:
    return [{"model_name": m.name, "filename": str(m.path)} for m in library.list("vae")]


def sampler_items() -> list[dict[str, Any]]:
    aliases: dict[str, list[str]] = {}
    for alias, name in A1111_SAMPLER_ALIASES.items():
        aliases.setdefault(name, []).append(alias)
    return [{"name": s.name, "aliases": aliases.get(s.name, []), "options": _sampler_options(s)} for s in SAMPLERS.values()]


def _sampler_options(sampler: Sampler) -> dict[str, Any]:
    """A1111's options for its samplers (its default schedule and how it samples); none for diffusers' samplers."""
    k = sampler.k
    if k is None:
        return {}
    options: dict[str, Any] = {"scheduler": A1111_SCHEDULERS[k.default_schedule]} if k.default_schedule else {}
    for name in ("discard_next_to_last_sigma", "second_order", "uses_ensd", "brownian_noise"):
        if getattr(k, name):
            options[name] = True
    if k.solver_type:
        options["solver_type"] = k.solver_type
    return options


def scheduler_items() -> list[dict[str, Any]]:
    """A1111's /sdapi/v1/schedulers, from the schedule table."""
    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": s.default_rho,
             "need_inner_model": s.need_denoiser} for s in K_SCHEDULE_TYPES.values()]


def upscaler_items() -> list[dict[str, Any]]:
    """The upscalers hires fix can use: the latent modes, then A1111's None, Lanczos and Nearest."""
    return [_upscaler(n, None) for n in LATENT_UPSCALERS] + [_upscaler(n, 4) for n in ("None", "Lanczos", "Nearest")]


def _upscaler(name: str, scale: int | None) -> dict[str, Any]:
    return {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": scale}


def lora_items(library: ModelLibrary, shown: Callable[[ModelInfo], bool] = lambda info: True) -> list[dict[str, Any]]:
    items = []
    for m in filter(shown, library.list("lora")):
        metadata = _safetensors_metadata(m.path)
        items.append({"name": m.name, "alias": metadata.get("ss_output_name") or m.name, "path": str(m.path), "metadata": metadata})
    return items


def embedding_lists(studio: Studio, state: A1111State, shown: Callable[[ModelInfo], bool] = lambda info: True) -> dict[str, Any]:
    """Embeddings that fit the current model are 'loaded'; the others 'skipped', as A1111 sorts them."""
    try:
        sdxl_model = base_family(current_checkpoint(studio, state).family).startswith("sdxl")
    except ModelNotFound:
        sdxl_model = False
    loaded: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    for m in filter(shown, studio.library.list("embedding")):
        found = _embedding_item(*_file_key(m.path)) if m.path.is_file() else None
        if found is not None:
            item, sdxl = found
            (loaded if sdxl == sdxl_model else skipped)[m.name] = item
    return {"loaded": loaded, "skipped": skipped}


def _file_key(path: Path) -> tuple[str, int, int]:
    """The caches' key: a file changed on disk is read again."""
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def _safetensors_metadata(path: Path | str) -> dict[str, Any]:
    """A safetensors file's `__metadata__`, JSON values decoded as A1111 does (header only, read once per version)."""
    return {key: _json_or_text(value) for key, value in read_metadata(path).items()}


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str) and value[:1] == "{":
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


@lru_cache(maxsize=512)
def _embedding_item(path: str, size: int, mtime_ns: int) -> tuple[dict[str, Any], bool] | None:
    """(A1111's EmbeddingItem, whether it is an SDXL pair), or None for a file that cannot be read."""
    from localdiffusion.prompts.embeddings import load_embedding

    try:
        emb = load_embedding(Path(path))
    except LocalDiffusionError:
        return None
    if emb.vectors is not None:
        shape, sdxl = int(emb.vectors.shape[-1]), False
    else:
        shape, sdxl = int(emb.clip_l.shape[-1] + emb.clip_g.shape[-1]), True  # type: ignore[union-attr]
    metadata = _safetensors_metadata(path)
    step = metadata.get("step")
    item = {"step": int(step) if str(step).isdigit() else None, "sd_checkpoint": metadata.get("sd_checkpoint"),
            "sd_checkpoint_name": metadata.get("sd_checkpoint_name"), "shape": shape, "vectors": emb.length}
    return item, sdxl
