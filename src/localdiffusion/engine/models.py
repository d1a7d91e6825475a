"""Model management for the engine: which models are in memory, loading them, and saying so.

One `Models` per Engine keeps pipelines, ControlNets and IP-Adapter image encoders in one bounded
cache (models/cache.py), on the engine's device and dtype. A load inside `reporting_loads()` is
announced as Progress of the "load" phase, so a job's first run of a model says what it waits for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from localdiffusion.engine import compile as compiling
from localdiffusion.engine.device import memory_budget, pick_device, pick_dtype, tune_device, use_channels_last
from localdiffusion.engine.hooks import LoadWatch, Progress
from localdiffusion.engine.openvino import Runtime, check_backend
from localdiffusion.engine.prepare import Prepared
from localdiffusion.models.cache import PipelineCache
from localdiffusion.models.controlnet import LoadedControlNet, load_controlnet
from localdiffusion.models.info import FLOW_FAMILIES, ModelInfo
from localdiffusion.models.ip_adapter import ImageEncoder, load_image_encoder
from localdiffusion.models.loader import load_pipeline
from localdiffusion.models.taesd import LoadedTaesd, load_taesd, taesd_family_for


@dataclass
class EngineOptions:
    device: str | None = None  # None: CUDA, then MPS, then CPU
    dtype: str | None = None  # None: settings.json's "dtype", else fp16 on a GPU, bf16 on a CPU with native bf16, else fp32
    attention_slicing: bool = False
    vae_tiling: bool = False  # decode large images in tiles, with bounded memory
    cpu_offload: bool = False  # keep only the running component on the GPU (small GPUs)
    previews: bool = True  # cheap previews of the predicted image in progress events (through TAESD where installed)
    vae_decode: str = "full"  # the final images' decoder: "full" (the model's VAE) or "fast" (TAESD, from models/VAE-approx)
    backend: str = "torch"  # what runs the networks: "torch", or "openvino" (CPUs, Intel GPUs and NPUs; an extra)
    ov_device: str = "AUTO"  # OpenVINO's device: CPU, GPU, NPU or AUTO
    compile: bool = False  # torch.compile the UNet (GPU servers; compile cache under HOME/cache/)


@dataclass
class Loaded:
    """The models of one prepared recipe, in memory."""

    pipe: Any
    controlnets: list[Any] = field(default_factory=list)  # one per control unit
    refiner: Any | None = None


class Models:
    """Loads and keeps the models a generation needs, within the cache's memory budget."""

    def __init__(self, library: Any, options: EngineOptions) -> None:
        self.library, self.options = library, options
        self.home, self.settings = library.home, library.settings
        self.device: torch.device = pick_device(options.device)
        where = "" if options.dtype else f" in {self.home.settings_path}"
        self.dtype: torch.dtype = pick_dtype(self.device, options.dtype or self.settings.dtype, where)
        tune_device(self.device, self.dtype)
        self.cache = PipelineCache(memory_budget(self.device, self.settings.cache_budget_gb))
        check_backend(options.backend, options.ov_device)  # one sentence now, before any model loads
        self._openvino: Runtime | None = None
        self._loads = threading.local()  # .sink: reporting_loads()' listener; .watch: its LoadWatch in load()

    def pipeline_key(self, info: ModelInfo) -> tuple:
        return (str(info.path), str(self.dtype), str(self.device))

    def pin(self, checkpoints: list[ModelInfo]) -> None:
        """Keep these checkpoints' pipelines loaded once they are (the cache never evicts them)."""
        self.cache.pin(self.pipeline_key(info) for info in checkpoints)

    def openvino(self) -> Runtime:
        """The OpenVINO runtime (`backend="openvino"`): its device, precision and IR cache (HOME/cache/openvino)."""
        if self._openvino is None:
            self._openvino = Runtime(self.home.cache / "openvino", self.options.ov_device, self.dtype)
        return self._openvino

    def controlnet_key(self, info: ModelInfo) -> tuple:
        return ("controlnet", str(info.path), str(self.dtype), str(self.device))

    def taesd_info(self, checkpoint_family: str) -> ModelInfo | None:
        """The installed TAESD (HOME/models/VAE-approx) for a checkpoint's latents, or None: the first of its
        family that can load (pickles only when allowed)."""
        family = taesd_family_for(checkpoint_family)
        return next((m for m in self.library.list("vae-approx")
                     if m.family == family and (m.format != "ckpt" or self.settings.allow_pickle)), None)

    def taesd(self, info: ModelInfo) -> Any:
        """A TAESD on the engine's device and dtype, kept in the pipeline cache."""
        def load() -> LoadedTaesd:
            return LoadedTaesd(load_taesd(info, self.dtype, self.settings.allow_pickle).to(self.device))

        return self._cached(("taesd", str(info.path), str(self.dtype), str(self.device)), f"TAESD '{info.name}'", load).model

    def image_encoder_key(self, folder: Path) -> tuple:
        return ("image_encoder", str(folder), str(self.dtype), str(self.device))

    @contextmanager
    def reporting_loads(self, on_load: Callable[[Progress], None]) -> Iterator[None]:
        """Within this block, models that load on this thread are reported to `on_load` as Progress of the
        "load" phase (step 0 of the recipe's steps; `loading`, `loaded` and `parts` say what and how far)."""
        previous = getattr(self._loads, "sink", None)
        self._loads.sink = on_load
        try:
            yield
        finally:
            self._loads.sink = previous

    def _cached(self, key: tuple, what: str, load: Callable[[], Any]) -> Any:
        """From the cache, or loaded into it; a load is announced to reporting_loads()' listener, if any."""
        watch: LoadWatch | None = getattr(self._loads, "watch", None)
        sink = getattr(self._loads, "sink", None)
        if watch is None and sink is not None:  # a load outside load(): one part, before any steps are known
            watch = LoadWatch(sink, 0, 1, 1)
        if watch is None:
            return self.cache.get(key, load)

        def announced() -> Any:
            watch.begin(what)
            loaded = load()
            watch.end()
            return loaded

        return self.cache.get(key, announced)

    def load(self, prepared: Prepared) -> Loaded:
        """Every model the prepared recipe needs, from the cache or loaded (the "load" phase)."""
        recipe = prepared.recipe
        keys = [self.pipeline_key(prepared.checkpoint), *(self.controlnet_key(c) for c in prepared.controls),
                *(self.image_encoder_key(a.encoder) for a in prepared.adapters),
                *([self.pipeline_key(prepared.refiner)] if prepared.refiner else [])]
        sink, outer = getattr(self._loads, "sink", None), getattr(self._loads, "watch", None)
        self._loads.watch = LoadWatch(sink, recipe.steps, recipe.n_iter, self._not_loaded(keys)) if sink else None
        try:
            pipe = self.pipeline(prepared.checkpoint)
            controlnets = [self.controlnet(info, pipe) for info in prepared.controls]
            for adapter in prepared.adapters:
                self.image_encoder(adapter.encoder)
            refiner = self.pipeline(prepared.refiner, "refiner") if prepared.refiner else None
        finally:
            self._loads.watch = outer
        return Loaded(pipe, controlnets, refiner)

    def _not_loaded(self, keys: list[tuple]) -> int:
        """How many of these models (cache keys, repeats counted once) are not in memory yet."""
        cached = set(self.cache.keys())
        return len({key for key in keys if key not in cached})

    def pipeline(self, info: ModelInfo, what: str = "model") -> Any:
        return self._cached(self.pipeline_key(info), f"{what} '{info.name}'", lambda: self._load(info))

    def _load(self, info: ModelInfo) -> Any:
        parts = None
        if info.family in FLOW_FAMILIES and info.format != "diffusers":  # SD3.5, FLUX single files: their parts
            from localdiffusion.models.flow import find_parts

            parts = find_parts(info, self.library)
        pipe = load_pipeline(info, self.home.cache, self.dtype, allow_pickle=self.settings.allow_pickle, parts=parts)
        if info.family in FLOW_FAMILIES and self.settings.fp8_weights:
            # SD3.5, FLUX: the transformer stored in fp8, each layer computed in the engine's dtype
            pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=self.dtype)
        if self.options.cpu_offload and self.device.type == "cuda":
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        if self.options.attention_slicing:
            pipe.enable_attention_slicing()
        if self.options.vae_tiling:
            pipe.vae.enable_tiling()
        if use_channels_last(self.device):
            pipe.unet.to(memory_format=torch.channels_last)
        if self.options.compile:  # compiled lazily on the first run that allows it (engine/compile.py)
            compiling.install(pipe.unet, self.device, self.home.cache)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def controlnet(self, info: ModelInfo, pipe: Any) -> Any:
        """A ControlNet on the engine's device and dtype, kept in the same cache as the pipelines."""
        def load() -> LoadedControlNet:
            model = load_controlnet(info, self.dtype, self.settings.allow_pickle, base_unet=dict(pipe.unet.config))
            return LoadedControlNet(model.to(self.device))

        return self._cached(self.controlnet_key(info), f"ControlNet '{info.name}'", load).model

    def image_encoder(self, folder: Path) -> ImageEncoder:
        """An IP-Adapter's CLIP image encoder on the engine's device and dtype, in the pipeline cache."""
        def load() -> ImageEncoder:
            encoder = load_image_encoder(folder, self.dtype, self.settings.allow_pickle)
            encoder.model.to(self.device)
            return encoder

        return self._cached(self.image_encoder_key(folder), "image encoder of the reference images", load)
