"""Shared fixtures: tiny random-weight models, built once per test session, and a home folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tokenizer_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokenizers")


@pytest.fixture(scope="session")
def sd1_folder(tmp_path_factory, tokenizer_cache) -> Path:
    from factories import build_sd1

    return build_sd1(tmp_path_factory.mktemp("models") / "tiny-sd1", tokenizer_cache)


@pytest.fixture(scope="session")
def sd1_inpaint_folder(tmp_path_factory, tokenizer_cache) -> Path:
    from factories import build_sd1

    return build_sd1(tmp_path_factory.mktemp("models") / "tiny-sd1-inpaint", tokenizer_cache, inpaint=True)


@pytest.fixture(scope="session")
def sd2v_folder(tmp_path_factory, tokenizer_cache) -> Path:
    from factories import build_sd2

    return build_sd2(tmp_path_factory.mktemp("models") / "tiny-sd2-v", tokenizer_cache, v_prediction=True)


@pytest.fixture(scope="session")
def sdxl_folder(tmp_path_factory, tokenizer_cache) -> Path:
    from factories import build_sdxl

    return build_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl", tokenizer_cache)


@pytest.fixture(scope="session")
def sdxl_refiner_folder(tmp_path_factory, tokenizer_cache) -> Path:
    from factories import build_sdxl

    return build_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl-refiner", tokenizer_cache, refiner=True)


@pytest.fixture()
def home(tmp_path) -> "object":
    from localdiffusion.store.home import Home

    return Home(tmp_path / "home").ensure()


@pytest.fixture(scope="session")
def model_home(tmp_path_factory, sd1_folder, sd1_inpaint_folder, sd2v_folder, sdxl_folder, sdxl_refiner_folder):
    """A home folder whose checkpoint folder links the tiny models (read in place, as users' models are)."""
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("model-home")).ensure()
    for folder in (sd1_folder, sd1_inpaint_folder, sd2v_folder, sdxl_folder, sdxl_refiner_folder):
        (home.model_dir("checkpoint") / folder.name).symlink_to(folder, target_is_directory=True)
    return home


@pytest.fixture(scope="session")
def engine(model_home):
    from localdiffusion.engine import Engine
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    return Engine(ModelLibrary(model_home, Database(model_home.db_path)))
