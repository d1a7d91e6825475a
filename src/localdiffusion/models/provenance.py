"""Where a model comes from and under which licence, where that can be known.

Two sources, both offline:

- the safetensors header's `__metadata__` (read without loading a tensor): the ModelSpec keys
  (`modelspec.title`, `.author`, `.license`, `.architecture`, `.description`, `.date`) that Stability AI's
  and kohya's tools write, and for LoRAs kohya's `ss_*` training keys (the base model, the output name);
- a small table shipped with the package (`data/known_models.json`) of well-known public checkpoints,
  identified by the SHA-256 of the whole file, each with its licence, what it was trained on and the
  address of its source. `LOCALDIFFUSION_KNOWN_MODELS` (or the `extra` argument) names more table files
  of the same form.

What neither says is "unknown", never a guess: a file's own metadata is what the file claims, and is
shown as such.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from localdiffusion.models.info import ModelInfo

UNKNOWN = "unknown"
EXTRA_TABLES_VARIABLE = "LOCALDIFFUSION_KNOWN_MODELS"  # more table files, separated like PATH
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header

MODELSPEC_KEYS = ("title", "author", "license", "architecture", "description", "date")
KOHYA_KEYS = {"ss_sd_model_name": "base_model", "ss_output_name": "output_name", "ss_base_model_version": "base_model_version"}


class Needs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ram_gb: float
    vram_gb: float
    cpu: bool  # usable (if slowly) without a GPU


class KnownModel(BaseModel):
    """One row of the table of well-known checkpoints."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    family: str
    sha256: str | None  # of the whole file, lower-case hex; None where no published hash was found
    size: int | None
    repo: str  # Hugging Face OWNER/NAME
    filename: str
    licence: str
    licence_url: str | None = None
    author: str = UNKNOWN
    trained_on: str
    source: str
    hash_source: str
    needs: Needs
    good_for: str

    @property
    def downloadable(self) -> bool:
        """Offered for download only with a published hash to check the file against."""
        return self.sha256 is not None


def _table_paths(extra: list[Path] | None) -> tuple[str, ...]:
    named = [p for p in os.environ.get(EXTRA_TABLES_VARIABLE, "").split(os.pathsep) if p.strip()]
    return tuple(str(p) for p in [*(extra or []), *named])


def known_models(extra: list[Path] | None = None) -> list[KnownModel]:
    """The shipped table, then the rows of any extra tables (an extra row with a shipped id replaces it)."""
    return list(_load(_table_paths(extra)))


@lru_cache(maxsize=8)
def _load(extra_paths: tuple[str, ...]) -> tuple[KnownModel, ...]:
    rows = {row.id: row for row in _read_table(files("localdiffusion.models").joinpath("data/known_models.json").read_text("utf-8"))}
    for path in extra_paths:
        rows.update({row.id: row for row in _read_table(Path(path).read_text("utf-8"))})
    return tuple(rows.values())


def _read_table(text: str) -> list[KnownModel]:
    return [KnownModel.model_validate(row) for row in json.loads(text)["models"]]


def known_by_id(model_id: str, extra: list[Path] | None = None) -> KnownModel | None:
    return next((row for row in known_models(extra) if row.id == model_id), None)


def lookup(sha256: str | None, extra: list[Path] | None = None) -> KnownModel | None:
    """The table's row for a file with this full-file SHA-256, if it is there."""
    if not sha256:
        return None
    wanted = sha256.lower()
    return next((row for row in known_models(extra) if row.sha256 == wanted), None)


def read_metadata(path: Path | str) -> dict[str, str]:
    """A safetensors file's `__metadata__` (strings), from its header alone; {} for any other file or folder.
    Read once per file version: model lists and every participant's job ask again and again."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".safetensors":
        return {}
    try:
        stat = path.stat()
    except OSError:
        return {}
    return dict(_header_metadata(str(path), stat.st_size, stat.st_mtime_ns))


@lru_cache(maxsize=1024)
def _header_metadata(path: str, size: int, mtime_ns: int) -> dict[str, str]:
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if not 0 < length <= MAX_HEADER:
                return {}
            header = json.loads(f.read(length))
    except (OSError, ValueError):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def from_metadata(meta: dict[str, str]) -> dict[str, str]:
    """The provenance fields a file's metadata states: ModelSpec's, then kohya's for LoRAs."""
    found = {key: meta[f"modelspec.{key}"].strip() for key in MODELSPEC_KEYS if meta.get(f"modelspec.{key}", "").strip()}
    found.update({ours: meta[key].strip() for key, ours in KOHYA_KEYS.items() if meta.get(key, "").strip()})
    return found


def provenance(info: ModelInfo, extra: list[Path] | None = None) -> dict[str, Any]:
    """What can be known of where `info` comes from: the table's row (by `info.sha256`, when hashed), else what
    the file's metadata says, else "unknown" for each field. `known` names the table's row; `stated_by` says
    which source spoke ("table", "metadata" or None)."""
    row = lookup(info.sha256, extra) if info.kind == "checkpoint" else None
    stated = from_metadata(read_metadata(info.path if info.path.is_file() else Path()))
    result: dict[str, Any] = {
        "known": row.id if row else None,
        "stated_by": "table" if row else ("metadata" if stated else None),
        "title": row.name if row else stated.get("title", UNKNOWN),
        "author": row.author if row else stated.get("author", UNKNOWN),
        "licence": row.licence if row else stated.get("license", UNKNOWN),
        "licence_url": row.licence_url if row else None,
        "architecture": stated.get("architecture", row.family if row else UNKNOWN),
        "description": stated.get("description", ""),
        "trained_on": row.trained_on if row else UNKNOWN,
        "source": row.source if row else None,
        "good_for": row.good_for if row else None,
    }
    for key in ("base_model", "output_name", "base_model_version"):
        if key in stated:
            result[key] = stated[key]
    trained = trained_here(read_metadata(info.path if info.path.is_file() else Path()))
    if trained is not None:
        result["trained"] = trained
    return result


def trained_here(meta: dict[str, str]) -> dict[str, Any] | None:
    """A file this studio trained: its `localdiffusion.provenance` record (train/output.py) as the Models page shows
    it: who trained it, on which dataset (how many pictures, their stated source), from which base model, when,
    for how many GPU- (or CPU-) seconds. None for any other file."""
    try:
        record = json.loads(meta.get("localdiffusion.provenance", ""))
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    dataset = record.get("dataset") if isinstance(record.get("dataset"), dict) else {}
    base = record.get("base_model") if isinstance(record.get("base_model"), dict) else {}
    return {"kind": record.get("kind"), "trained_by": record.get("trained_by"),
            "dataset": {"name": record.get("dataset_name") or dataset.get("folder"), "id": record.get("dataset_id"),
                        "pictures": dataset.get("pictures"), "source": dataset.get("source") or UNKNOWN,
                        "trigger": dataset.get("trigger")},
            "base_model": base.get("name"), "base_sha256": base.get("sha256"), "steps": record.get("steps"),
            "finished_at": record.get("finished_at"), "gpu_seconds": record.get("gpu_seconds"),
            "cpu_seconds": record.get("cpu_seconds"), "device": record.get("device")}


def row_json(row: KnownModel) -> dict[str, Any]:
    return {**row.model_dump(mode="json"), "downloadable": row.downloadable}


def fits(row: KnownModel, ram_gb: float, vram_gb: float | None) -> bool:
    """Whether this machine can run the model: without a GPU (`vram_gb` None), a model marked usable on a CPU
    that fits in RAM; with one, a model that fits in its memory (and in RAM while it loads)."""
    if vram_gb is None:
        return row.needs.cpu and row.needs.ram_gb <= ram_gb
    return row.needs.vram_gb <= vram_gb and row.needs.ram_gb <= ram_gb


def machine_memory(device: str) -> tuple[float, float | None]:
    """(RAM, GPU memory) of this machine in GiB; GPU memory None without a CUDA device."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        ram = 0.0
    vram = None
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            index = torch.device(device).index or 0
            vram = torch.cuda.get_device_properties(index).total_memory / 2**30
    return ram, vram
