import hashlib
import os

import pytest
import torch
from safetensors.torch import save_file

from localdiffusion.models import hashing
from localdiffusion.models.hashing import (
    a1111_hashes,
    addnet_hash,
    cached_digest,
    hash_target,
    legacy_model_hash,
    sha256_file,
    short_hash,
)
from localdiffusion.store.db import Database


def _write(path, metadata=None, n=400_000):
    torch.manual_seed(0)
    save_file({"w": torch.randn(n)}, str(path), metadata=metadata)  # 1.6 MB: past the legacy hash's offset
    return path


@pytest.fixture
def model(tmp_path):
    return _write(tmp_path / "model.safetensors")


def test_sha256_and_short_hash(model):
    data = model.read_bytes()
    full = hashlib.sha256(data).hexdigest()
    assert sha256_file(model) == full
    assert short_hash(full) == full[:10]
    assert short_hash(full, 12) == full[:12]


def test_legacy_model_hash_reads_64k_at_1m(model):
    data = model.read_bytes()
    assert legacy_model_hash(model) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def test_addnet_hash_skips_the_header_so_metadata_edits_keep_it(tmp_path):
    a = _write(tmp_path / "a.safetensors", metadata={"ss_output_name": "one"})
    b = _write(tmp_path / "b.safetensors", metadata={"ss_output_name": "two, a longer name"})
    data = a.read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert addnet_hash(a) == hashlib.sha256(data[8 + header:]).hexdigest()
    assert addnet_hash(a) == addnet_hash(b)
    assert sha256_file(a) != sha256_file(b)


def test_hash_target_of_a_diffusers_folder_is_the_unet_weights(tmp_path, model):
    folder = tmp_path / "pipe"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    weights = folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    weights.write_bytes(model.read_bytes())
    assert hash_target(folder) == weights
    weights.unlink()
    assert hash_target(model) == model
    with pytest.raises(FileNotFoundError):
        hash_target(tmp_path / "pipe" / "unet")  # a folder without weights


def test_a1111_hashes_per_kind(tmp_path, model):
    full = sha256_file(model)
    assert a1111_hashes(model, "checkpoint") == (full, full[:10])
    assert a1111_hashes(model, "vae") == (full, full[:10])
    assert a1111_hashes(model, "embedding") == (full, full[:12])
    lora_full, lora_short = a1111_hashes(model, "lora")
    assert lora_full == addnet_hash(model) != full and lora_short == lora_full[:12]
    assert a1111_hashes(model, "controlnet") == (full, legacy_model_hash(model))
    pickle = tmp_path / "lora.pt"
    pickle.write_bytes(b"not really a pickle, only bytes to hash")
    assert a1111_hashes(pickle, "lora")[0] == sha256_file(pickle)  # no header to skip outside safetensors


def test_hashes_are_cached_until_the_file_changes(tmp_path, model, monkeypatch):
    calls = []
    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p, start=0: calls.append(p) or real(p, start))
    with Database(tmp_path / "db.sqlite") as db:
        first = cached_digest(model, db)
        assert cached_digest(model, db) == first and len(calls) == 1
        _write(model, n=400_001)
        st = model.stat()
        os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
        second = cached_digest(model, db)
        assert second != first and len(calls) == 2
        assert db.cached_hash(model.resolve(), model.stat().st_size, model.stat().st_mtime_ns) == second
        # The addnet digest has its own cache entry.
        assert cached_digest(model, db, "addnet") == addnet_hash(model)
