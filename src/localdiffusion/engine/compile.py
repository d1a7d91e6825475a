"""`--compile`: torch.compile of the UNet, with a persistent compile cache and an explicit plain path.

The UNet module itself stays as it is (LoRAs, attention hooks and IP-Adapters change it as before); its
`forward` is routed through a `CompiledUNet` that calls the compiled graph when the run allows it and the
plain forward otherwise. What the compiler sees is kept stable, so that only a new image size or batch
(or a prompt longer than 75 tokens: one more 77-token chunk) compiles again; the prompt's content, the seed
and the sampler do not:

- the timestep is handed over as a float32 tensor of one value per row, whatever the sampler passes (an int,
  a 0-d tensor, int64 or float): the UNet embeds timesteps as float32 of that shape anyway, so the numbers
  are the same;
- `dynamic=False`: shapes are static (the fastest kernels), and a new shape is one more compiled graph.

What turns compiling off for a run (`off_reasons`; each time one clear log line says so, never a silent slow
path; the plain UNet computes the same image):

- attention capture (word heatmaps) and shared attention (comic panels): they replace attention processors;
- LoRAs in the prompt: they add layers to the UNet;
- reference images (IP-Adapter): they replace attention processors and add an image projection;
- ControlNet units: the residuals change the graph's inputs;
- CPU offload: accelerate's hooks move weights inside the forward.

The compiled code is cached under HOME/cache/torch-compile (TorchInductor's FX graph cache and its kernels),
so the next process compiles the same UNet and size from the cache in seconds instead of minutes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

LOG = logging.getLogger("localdiffusion.engine")

CACHE_FOLDER = "torch-compile"  # under HOME/cache/
ATTR = "_localdiffusion_compiled"  # the UNet's CompiledUNet, in its __dict__

# What torch.compile compiles with: None is TorchInductor. The tests set a counting backend here.
BACKEND: Any = None


def compile_mode(device: torch.device) -> str:
    """On CUDA "max-autotune-no-cudagraphs": it benchmarks GEMM/convolution kernels (the UNet's time is in
    them), a slow first compile that the persistent cache pays once per model and size; no CUDA graphs, because
    a graph replay overwrites its outputs, which our loop keeps across steps (samplers' history, previews,
    explanations), and the per-step Python overhead they remove is small next to a 512² UNet. Elsewhere the
    "default" mode (autotuning has no CPU kernels to choose from)."""
    return "max-autotune-no-cudagraphs" if device.type == "cuda" else "default"


def set_cache_dir(folder: Path) -> None:
    """TorchInductor's persistent caches under `folder` (unless TORCHINDUCTOR_CACHE_DIR is set already)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(folder))
    try:
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
    except (ImportError, AttributeError):  # pragma: no cover - a torch without inductor
        pass


class CompiledUNet:
    """The UNet's forward: compiled where the run allows it (`enabled`), else the plain one."""

    def __init__(self, unet: Any, device: torch.device) -> None:
        self.plain: Callable[..., Any] = unet.forward  # the bound forward, before this replaces it
        self.enabled = True
        self._compiled = torch.compile(self.plain, backend=BACKEND or "inductor", mode=None if BACKEND else compile_mode(device),
                                       dynamic=False, fullgraph=False)

    def __call__(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return self.plain(sample, timestep, encoder_hidden_states, *args, **kwargs)
        return self._compiled(sample, steady_timestep(timestep, sample), encoder_hidden_states, *args, **kwargs)


def steady_timestep(timestep: Any, sample: torch.Tensor) -> torch.Tensor:
    """The timestep as the compiled graph always gets it: float32, one value per row of `sample`."""
    t = torch.as_tensor(timestep, device=sample.device)
    return t.to(torch.float32).reshape(-1).expand(sample.shape[0])


def install(unet: Any, device: torch.device, cache: Path) -> CompiledUNet:
    """Route the UNet's forward through a CompiledUNet (compiled lazily, on the first call)."""
    compiled = unet.__dict__.get(ATTR)
    if compiled is None:
        set_cache_dir(cache / CACHE_FOLDER)
        compiled = CompiledUNet(unet, device)
        unet.__dict__[ATTR] = compiled
        unet.forward = compiled
    return compiled


def off_reasons(*, attention: bool = False, shared: bool = False, loras: bool = False, references: bool = False,
                controls: bool = False, cpu_offload: bool = False) -> list[str]:
    """Why this run's UNet runs uncompiled (empty: it runs compiled)."""
    reasons = [
        (attention, "attention capture (word heatmaps) hooks the attention layers"),
        (shared, "shared attention (comic panels) hooks the attention layers"),
        (loras, "LoRAs in the prompt add layers to the UNet"),
        (references, "reference images (IP-Adapter) change the attention layers"),
        (controls, "ControlNet residuals change the UNet's inputs"),
        (cpu_offload, "CPU offload moves the weights during the forward"),
    ]
    return [text for on, text in reasons if on]


@contextmanager
def compiled_for_run(unet: Any, reasons: list[str]) -> Iterator[None]:
    """Within the block the UNet runs compiled, unless there are `reasons` not to: then plain, logged once."""
    compiled: CompiledUNet | None = unet.__dict__.get(ATTR)
    if compiled is None:
        yield
        return
    if reasons:
        LOG.warning("torch.compile is off for this run (the UNet runs uncompiled, slower): %s.", "; ".join(reasons))
    compiled.enabled = not reasons
    try:
        yield
    finally:
        compiled.enabled = True
