"""Model hashes as AUTOMATIC1111's webui computes them, so infotext from either tool names the same files.

What A1111 writes (checked against its `modules/hashes.py`, `modules/sd_models.py`,
`extensions-builtin/Lora/network.py`, `modules/textual_inversion` and sd-webui-controlnet):

| kind | hash | short form in infotext and titles |
| --- | --- | --- |
| checkpoint | sha256 of the whole file | first 10 hex (`Model hash: 1a2b3c4d5e`, title `name [1a2b3c4d5e]`) |
| vae | sha256 of the whole file | first 10 hex (`VAE hash`) |
| lora (.safetensors) | "addnet" hash: sha256 of the bytes after the safetensors header | first 12 hex (`Lora hashes`) |
| lora (other) | sha256 of the whole file | first 12 hex |
| embedding | sha256 of the whole file | first 12 hex (`TI hashes`) |
| controlnet, ipadapter | legacy `model_hash` (below) | 8 hex (`Model: name [1a2b3c4d]`; the extension lists IP-Adapters as ControlNet models) |

Old A1111 (before late 2022) wrote a cheap legacy `Model hash`: sha256 of the 64 KiB at offset
1 MiB, first 8 hex. We compute it too, so that old images still find their checkpoint.

A1111 has no hash for a diffusers folder. We hash the folder's main weights file (the UNet's, or the
component's own for a ControlNet or VAE folder), so a folder gets a stable hash of the same form.

Full hashes of multi-GB files take seconds, so they are cached in the database keyed by
(path, size, mtime_ns).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localdiffusion.store.db import Database

CHUNK = 1024 * 1024
SHORT_LENGTH = {"checkpoint": 10, "vae": 10, "upscaler": 10, "lora": 12, "embedding": 12}

# Where a diffusers folder keeps the weights we hash, in order of preference.
_FOLDER_WEIGHTS = [
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.bin",
    "transformer/diffusion_pytorch_model.safetensors",  # SD3.5 and FLUX
    "transformer/diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
]


def sha256_file(path: Path | str, start: int = 0) -> str:
    """sha256 of a file from byte `start` to the end, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def short_hash(sha256: str, length: int = 10) -> str:
    """A1111's short hash: the first 10 hex digits of the sha256 (12 for LoRAs and embeddings)."""
    return sha256[:length]


def legacy_model_hash(path: Path | str) -> str:
    """Old A1111's `model_hash`: sha256 of the 0x10000 bytes at offset 0x100000, first 8 hex."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def safetensors_data_offset(path: Path | str) -> int:
    """Where a safetensors file's tensor data begins: after the 8-byte length and the JSON header."""
    with open(path, "rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def addnet_hash(path: Path | str) -> str:
    """The sd-webui-additional-networks (kohya) hash A1111 uses for LoRAs: sha256 after the safetensors header.

    Editing a LoRA's metadata leaves this hash unchanged.
    """
    return sha256_file(path, start=safetensors_data_offset(path))


def hash_target(path: Path | str) -> Path:
    """The file whose bytes identify a model: the file itself, or a diffusers folder's main weights."""
    path = Path(path)
    if not path.is_dir():
        return path
    for rel in _FOLDER_WEIGHTS:
        if (path / rel).is_file():
            return path / rel
    shards = sorted((path / "transformer").glob("diffusion_pytorch_model-00001-of-*.safetensors"))  # FLUX ships in shards
    if shards:
        return shards[0]
    raise FileNotFoundError(f"{path} holds no UNet or model weights file to hash")


def cached_digest(path: Path | str, db: "Database | None", algo: str = "sha256") -> str:
    """`sha256_file` (algo 'sha256') or `addnet_hash` (algo 'addnet') of a file, cached in `db`."""
    path = Path(path).resolve()
    compute = addnet_hash if algo == "addnet" else sha256_file
    if db is None:
        return compute(path)
    st = os.stat(path)
    digest = db.cached_hash(path, st.st_size, st.st_mtime_ns, algo)
    if digest is None:
        digest = compute(path)
        db.store_hash(path, st.st_size, st.st_mtime_ns, digest, algo)
    return digest


def a1111_hashes(path: Path | str, kind: str, db: "Database | None" = None) -> tuple[str, str]:
    """(full hash, short hash) of a model as A1111 would show them for a model of this kind."""
    target = hash_target(path)
    if kind == "lora" and target.suffix.lower() == ".safetensors":
        full = cached_digest(target, db, "addnet")
    else:
        full = cached_digest(target, db)
    if kind in ("controlnet", "ipadapter"):
        return full, legacy_model_hash(target)
    return full, short_hash(full, SHORT_LENGTH.get(kind, 10))
