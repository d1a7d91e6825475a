"""Knowing your model: licence and provenance from the table of known checkpoints (by SHA-256) and from the
safetensors header's ModelSpec / kohya metadata; everything else says "unknown"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from localdiffusion.models.hashing import sha256_file
from localdiffusion.models.provenance import EXTRA_TABLES_VARIABLE, fits, known_models, lookup, read_metadata
from localdiffusion.server.app import create_app
from localdiffusion.server.studio import Studio
from localdiffusion.store.home import Home

from factories import build_single_file

SHIPPED_IDS = {"sd15", "sd21", "sdxl-base", "sdxl-refiner", "sdxl-turbo", "sd-turbo"}


def extra_row(sha256: str, size: int) -> dict:
    return {"id": "test-tiny", "name": "Tiny test checkpoint", "family": "sd1", "sha256": sha256, "size": size,
            "repo": "tests/tiny", "filename": "tiny.safetensors", "licence": "Test Licence 1.0",
            "trained_on": "Random weights, trained on nothing.", "source": "https://example.invalid/tiny",
            "hash_source": "computed by the test", "needs": {"ram_gb": 1, "vram_gb": 1, "cpu": True},
            "good_for": "Tests."}


def test_shipped_table_has_the_public_checkpoints_with_sources():
    rows = {row.id: row for row in known_models()}
    assert SHIPPED_IDS <= set(rows)
    for row in rows.values():
        assert row.sha256 is None or (len(row.sha256) == 64 and row.sha256 == row.sha256.lower())
        assert row.licence and row.trained_on and row.source.startswith("https://") and row.hash_source
    assert rows["sd15"].licence == "CreativeML Open RAIL-M"
    assert rows["sdxl-base"].licence == "CreativeML Open RAIL++-M"
    assert lookup("6CE0161689B3853ACAA03779EC93EAFE75A02F4CED659BEE03F50797806FA2FA").id == "sd15"
    assert not rows["sd-turbo"].downloadable  # no published hash found: described, never identified or fetched


def test_fits_this_machine():
    rows = {row.id: row for row in known_models()}
    assert fits(rows["sd15"], ram_gb=16, vram_gb=None)  # a CPU laptop
    assert not fits(rows["sdxl-base"], ram_gb=16, vram_gb=None)
    assert fits(rows["sdxl-base"], ram_gb=32, vram_gb=24)
    assert not fits(rows["sdxl-base"], ram_gb=32, vram_gb=4)


def test_modelspec_and_kohya_metadata_read_from_the_header(tmp_path):
    path = tmp_path / "styled.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={
        "modelspec.title": "Ink Wash", "modelspec.author": "A. Painter", "modelspec.license": "CC-BY-4.0",
        "modelspec.architecture": "stable-diffusion-v1/lora", "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors",
        "ss_output_name": "inkwash"})
    assert read_metadata(path)["modelspec.title"] == "Ink Wash"
    assert read_metadata(tmp_path / "missing.safetensors") == {}
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 16)
    assert read_metadata(tmp_path / "junk.safetensors") == {}


@pytest.fixture()
def provenance_home(tmp_path, sd1_folder) -> Home:
    home = Home(tmp_path / "home").ensure()
    build_single_file(sd1_folder, home.model_dir("checkpoint") / "tiny-known.safetensors")
    (home.model_dir("checkpoint") / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(4, 4)}, str(home.model_dir("lora") / "inkwash.safetensors"),
              metadata={"modelspec.title": "Ink Wash", "modelspec.author": "A. Painter", "modelspec.license": "CC-BY-4.0",
                        "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors", "ss_output_name": "inkwash"})
    return home


def test_models_api_shows_licence_from_table_metadata_or_unknown(provenance_home, tmp_path, monkeypatch):
    known = provenance_home.model_dir("checkpoint") / "tiny-known.safetensors"
    table = tmp_path / "extra.json"
    table.write_text(json.dumps({"models": [extra_row(sha256_file(known), known.stat().st_size)]}))
    monkeypatch.setenv(EXTRA_TABLES_VARIABLE, str(table))
    with TestClient(create_app(Studio.open(provenance_home))) as client:
        models = {m["name"]: m for m in client.get("/api/models").json()}
    tiny = models["tiny-known"]["provenance"]
    assert (tiny["known"], tiny["stated_by"], tiny["licence"]) == ("test-tiny", "table", "Test Licence 1.0")
    assert tiny["trained_on"] == "Random weights, trained on nothing." and tiny["source"] == "https://example.invalid/tiny"
    lora = models["inkwash"]["provenance"]
    assert (lora["stated_by"], lora["title"], lora["author"], lora["licence"]) == ("metadata", "Ink Wash", "A. Painter", "CC-BY-4.0")
    assert lora["base_model"] == "v1-5-pruned-emaonly.safetensors" and lora["output_name"] == "inkwash"
    assert lora["trained_on"] == "unknown"
    folder = models["tiny-sd1"]["provenance"]
    assert (folder["known"], folder["licence"], folder["trained_on"], folder["source"]) == (None, "unknown", "unknown", None)
