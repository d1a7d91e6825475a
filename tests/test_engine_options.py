"""The engine's memory settings on the tiny model: attention slicing, VAE tiling, CPU offload (EngineOptions),
and the pipeline cache that keeps loaded models within a memory budget."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

from localdiffusion.engine import Engine, EngineOptions
from localdiffusion.models.cache import PipelineCache
from localdiffusion.recipe import Recipe

BASE = dict(prompt="a photo of a cat", seed=42, steps=3, width=128, height=128, cfg_scale=7.0, sampler_name="Euler",
            model="tiny-sd1")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def sd1_home(tmp_path_factory, sd1_folder):
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("options-home")).ensure()
    (home.model_dir("checkpoint") / sd1_folder.name).symlink_to(sd1_folder, target_is_directory=True)
    return home


@pytest.fixture(scope="module")
def engine_with(sd1_home):
    """An Engine (with its own pipeline cache) per set of options, made once for the module."""
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    engines: dict = {}

    def make(**options) -> Engine:
        key = tuple(sorted(options.items()))
        if key not in engines:
            engines[key] = Engine(ModelLibrary(sd1_home, Database(sd1_home.db_path)), EngineOptions(**options))
        return engines[key]

    return make


def image(engine: Engine, **fields) -> np.ndarray:
    return pixels(engine.generate(Recipe(**{**BASE, **fields})).images[0])


def loaded(engine: Engine):
    return engine.pipeline(engine.checkpoint("tiny-sd1"))


# -- attention slicing ------------------------------------------------------------------------------------


def test_attention_slicing_computes_attention_in_slices_and_gives_the_same_image(engine_with):
    """Slices go through another attention kernel than PyTorch's fused one, so float sums round differently:
    the image is the same within one level of 255 on a few pixels."""
    sliced = engine_with(attention_slicing=True)
    got, expected = image(sliced), image(engine_with())
    processors = {type(p).__name__ for p in loaded(sliced).unet.attn_processors.values()}
    assert processors == {"SlicedAttnProcessor"}
    assert {type(p).__name__ for p in loaded(engine_with()).unet.attn_processors.values()} != processors
    assert np.abs(got - expected).max() <= 1 and (got != expected).mean() < 0.01


# -- VAE tiling ----------------------------------------------------------------------------------------------


def test_vae_tiling_decodes_a_large_image_in_tiles_close_to_the_whole(engine_with, monkeypatch):
    """The tiny VAE's tile is its sample size, 128 px (a 16-latent tile): a 192 px image decodes as four
    overlapping tiles blended at the seams. The blend changes pixels near the seams only a little; the
    image stays far closer to the untiled one than another seed is."""
    tiled = engine_with(vae_tiling=True)
    vae = loaded(tiled).vae
    assert vae.use_tiling and vae.tile_sample_min_size == 128
    tiles = []
    real = type(vae).tiled_decode
    monkeypatch.setattr(type(vae), "tiled_decode", lambda self, z, *a, **k: tiles.append(tuple(z.shape)) or real(self, z, *a, **k))
    got = image(tiled, width=192, height=192)
    assert tiles == [(1, 4, 24, 24)]
    whole = image(engine_with(), width=192, height=192)
    other_seed = image(engine_with(), width=192, height=192, seed=43)
    assert got.shape == whole.shape == (192, 192, 3)
    assert np.abs(got - whole).mean() < 6
    assert np.abs(got - whole).mean() < np.abs(other_seed - whole).mean() / 4


def test_vae_tiling_leaves_an_image_within_one_tile_unchanged(engine_with):
    assert (image(engine_with(vae_tiling=True)) == image(engine_with())).all()


# -- CPU offload ---------------------------------------------------------------------------------------------


def test_cpu_offload_on_the_cpu_changes_nothing(engine_with):
    """Offloading moves weights between a GPU and the CPU; on the CPU every weight already stays in CPU
    memory, so the option is moot there and the image is the same, bit for bit."""
    offload = engine_with(cpu_offload=True)
    if offload.device.type == "cuda":
        pytest.skip("this machine has a GPU: see the CUDA test")
    assert (image(offload) == image(engine_with())).all()


def test_cpu_offload_asks_diffusers_to_offload_to_the_gpu(engine_with, monkeypatch):
    """The plumbing: on a CUDA device the engine hands the pipeline to diffusers' model offload (which then
    owns the placement of every component) instead of moving it to the GPU itself."""
    from diffusers import DiffusionPipeline

    engine = engine_with(cpu_offload=True, attention_slicing=True)
    calls = []
    monkeypatch.setattr(engine.models, "device", torch.device("cuda"))
    monkeypatch.setattr(DiffusionPipeline, "enable_model_cpu_offload", lambda self, device=None, **k: calls.append(device))
    monkeypatch.setattr(DiffusionPipeline, "to", lambda self, *a, **k: pytest.fail("moved to the device itself"))
    pipe = engine.models._load(engine.checkpoint("tiny-sd1"))
    assert calls == [torch.device("cuda")]
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"SlicedAttnProcessor"}  # the rest still applies


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CPU offload needs a CUDA GPU")
def test_cpu_offload_on_a_gpu_gives_the_same_image(engine_with):  # pragma: no cover - runs on GPU machines only
    offload, plain = engine_with(cpu_offload=True, device="cuda"), engine_with(device="cuda")
    assert (image(offload) == image(plain)).all()
    assert next(loaded(offload).unet.parameters()).device.type == "cpu"  # between runs the weights wait on the CPU


# -- the pipeline cache ----------------------------------------------------------------------------------


class FakePipe:
    """A stand-in for a loaded pipeline: the cache sizes it by its components' parameters."""

    def __init__(self, name: str, mib: int) -> None:
        self.name = name
        self.components = {"unet": torch.nn.Linear(mib * 2**18, 1, bias=False)}  # float32: 4 bytes each


def loader(name: str, mib: int, log: list[str]):
    def load() -> FakePipe:
        log.append(name)
        return FakePipe(name, mib)

    return load


def test_the_cache_keeps_recent_pipelines_within_its_budget():
    cache, log = PipelineCache(budget_bytes=10 * 2**20), []
    a = cache.get("a", loader("a", 4, log))
    assert cache.get("a", loader("a", 4, log)) is a and log == ["a"]  # a hit loads nothing
    cache.get("b", loader("b", 4, log))
    assert cache.keys() == ["a", "b"]
    cache.get("a", loader("a", 4, log))  # a is now the most recently used
    cache.get("c", loader("c", 4, log))  # 12 MiB > 10: the least recently used goes, b
    assert cache.keys() == ["a", "c"] and log == ["a", "b", "c"] and cache.loads == 3
    cache.get("b", loader("b", 4, log))
    assert cache.keys() == ["c", "b"] and cache.loads == 4


def test_pinned_pipelines_stay_whatever_the_budget():
    cache, log = PipelineCache(budget_bytes=10 * 2**20), []
    cache.get("pinned", loader("pinned", 4, log))
    cache.pin(["pinned"])
    for name in ("b", "c", "d"):  # each would push the least recently used one, the pinned, out
        cache.get(name, loader(name, 4, log))
    assert cache.keys() == ["pinned", "d"] and log == ["pinned", "b", "c", "d"]
    cache.pin([])  # unpinned: the least recently used goes again
    cache.get("e", loader("e", 4, log))
    assert cache.keys() == ["d", "e"]


def test_the_cache_frees_what_it_evicts():
    cache = PipelineCache(budget_bytes=6 * 2**20)
    first = weakref.ref(cache.get("a", loader("a", 4, [])))
    cache.get("b", loader("b", 4, []))
    gc.collect()
    assert first() is None


def test_a_pipeline_over_the_budget_is_still_kept_alone():
    cache = PipelineCache(budget_bytes=2 * 2**20)
    cache.get("a", loader("a", 1, []))
    big = cache.get("big", loader("big", 4, []))
    assert cache.keys() == ["big"]
    assert cache.get("big", loader("big", 4, [])) is big and cache.loads == 2


def test_threads_asking_for_one_pipeline_load_it_once():
    cache, log, errors = PipelineCache(budget_bytes=2**30), [], []
    start = threading.Barrier(4)
    got = []

    def ask():
        try:
            start.wait(timeout=30)
            got.append(cache.get("a", loader("a", 1, log)))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and log == ["a"] and len(got) == 4 and all(p is got[0] for p in got)


def test_the_engine_frees_a_pipeline_the_cache_evicts(tmp_path, sd1_folder):
    """With room for one model, switching models frees the first one: nothing else in the engine
    (prompt encoders, adapters, refiners) keeps it alive."""
    import shutil

    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database
    from localdiffusion.store.home import Home

    home = Home(tmp_path / "home").ensure()
    (home.model_dir("checkpoint") / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    shutil.copytree(sd1_folder, home.model_dir("checkpoint") / "tiny-sd1-copy")  # another path: another entry
    engine = Engine(ModelLibrary(home, Database(home.db_path)))
    engine.cache.budget_bytes = 1
    small = dict(BASE, steps=1, width=64, height=64)
    engine.generate(Recipe(**small))
    first = weakref.ref(loaded(engine))
    engine.generate(Recipe(**{**small, "model": "tiny-sd1-copy"}))
    gc.collect()
    assert len(engine.cache.keys()) == 1 and engine.cache.loads == 2
    assert first() is None
