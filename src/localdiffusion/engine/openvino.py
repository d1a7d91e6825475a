"""The OpenVINO backend: the UNet and the VAE (and TAESD) run on OpenVINO, everything else stays ours.

`EngineOptions(backend="openvino", ov_device=...)` (CLI `--backend openvino --ov-device CPU|GPU|NPU|AUTO`)
puts an `OpenVINOBackend` on a bound run. Each network is converted with `ov.convert_model` from the loaded
torch module (the active LoRAs are part of it, so they are baked into the converted weights), once per
model hash, family, latent size, dtype, LoRA set and part, and the IR (.xml/.bin) is kept under
`HOME/cache/openvino/<key>/` (written to a temporary folder and renamed): a later run, also in a new
process, reads it back without converting. The IR's batch and token count stay dynamic; it is compiled
for each concrete input shape it meets (static shapes run fastest on CPUs), in bf16 where the CPU computes
bf16 natively (`cpu_has_bf16`) and the engine does not compute in float32, else in f32.

The loop, the samplers, the prompt syntax and the text encoders stay torch. What OpenVINO cannot do here
(attention capture, shared attention, ControlNet residuals, IP-Adapter references, the SDXL refiner)
makes the run use torch, with one sentence in the result's notes (`fallback_reason`), never a wrong image.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from localdiffusion.engine.backend import Residuals, TorchBackend
from localdiffusion.engine.device import cpu_has_bf16
from localdiffusion.engine.k_sampling.pixels import to_uint8_a1111
from localdiffusion.errors import BadInput, one_of

BACKENDS = ("torch", "openvino")
OV_DEVICES = ("AUTO", "CPU", "GPU", "NPU")
INSTALL = 'pip install "localdiffusion[openvino]"'
COMPILED_KEEP = 8  # compiled networks kept in memory per pipeline (parts × shapes × LoRA sets)

# How many networks were converted from torch and how many IRs were read back from the cache, in this process.
stats = {"converted": 0, "read": 0}


def check_backend(backend: str, ov_device: str) -> None:
    """One sentence for an unknown backend, an unknown OpenVINO device, or OpenVINO not installed."""
    if backend not in BACKENDS:
        raise BadInput(f"Unknown backend '{backend}'; use {one_of(list(BACKENDS))}.", field="backend")
    if backend != "openvino":
        return
    if ov_device.upper().split(".")[0] not in OV_DEVICES:
        raise BadInput(f"Unknown OpenVINO device '{ov_device}'; use {one_of(list(OV_DEVICES))}.", field="ov_device")
    openvino()


def openvino() -> Any:
    """The openvino module, or one sentence saying how to install it."""
    try:
        import openvino as ov
    except ImportError as e:
        raise BadInput(f"The OpenVINO backend needs the openvino package, which is not installed; install it with "
                       f"`{INSTALL}`, or use --backend torch.", field="backend") from e
    return ov


def fallback_reason(*, attention: bool, shared: bool, controls: bool, references: bool, refiner: bool) -> str | None:
    """What of this run OpenVINO cannot do (it then runs on torch), or None."""
    if attention:
        return "capture attention (word heatmaps and explanations)"
    if shared:
        return "share attention between images (comic panels)"
    if controls:
        return "add ControlNet guidance"
    if references:
        return "use IP-Adapter reference images"
    if refiner:
        return "hand over to the SDXL refiner"
    return None


def fallback_note(reason: str) -> str:
    return f"This run used torch instead of OpenVINO, because the OpenVINO backend cannot {reason}."


class Runtime:
    """One engine's OpenVINO: its core, the device and precision it compiles for, and the IR cache folder."""

    def __init__(self, cache_dir: Path, ov_device: str, dtype: torch.dtype) -> None:
        self.ov = openvino()
        self.core = self.ov.Core()
        self.cache_dir, self.dtype = Path(cache_dir), dtype
        self.device = self._device(ov_device.upper())
        self.config = self._config(dtype)
        self._lock = threading.Lock()

    def _device(self, wanted: str) -> str:
        available = list(self.core.available_devices)
        if wanted == "AUTO":
            return "CPU" if available == ["CPU"] else "AUTO"
        if not any(d == wanted or d.split(".")[0] == wanted for d in available):
            raise BadInput(f"OpenVINO finds no {wanted} device on this machine (it has {one_of(available)}); "
                           f"use --ov-device AUTO.", field="ov_device")
        return wanted

    def _config(self, dtype: torch.dtype) -> dict[str, str]:
        if dtype == torch.float32:
            return {"INFERENCE_PRECISION_HINT": "f32"} if self.device != "NPU" else {}
        if self.device == "CPU":
            return {"INFERENCE_PRECISION_HINT": "bf16" if cpu_has_bf16() else "f32"}
        return {}  # GPU, NPU, AUTO: the device's own default (f16 on Intel GPUs)

    @property
    def precision(self) -> str:
        return self.config.get("INFERENCE_PRECISION_HINT", "default")

    def network(self, key: dict[str, Any], module: torch.nn.Module, example: dict[str, torch.Tensor],
                dynamic: dict[str, list[int]]) -> Any:
        """The ov.Model for `key`: read from the cache, or converted from `module` (a tracing wrapper whose
        inputs are `example`, with `dynamic` shapes: -1 for a dimension left open) and cached."""
        folder = self.cache_dir / cache_name(key)
        xml = folder / "model.xml"
        with self._lock:
            if xml.exists():
                stats["read"] += 1
                return self.core.read_model(str(xml))
            with warnings.catch_warnings():  # the tracer's notes on diffusers' shape checks
                warnings.simplefilter("ignore")
                model = self.ov.convert_model(module, example_input=tuple(example.values()),
                                              input=[(name, shape) for name, shape in dynamic.items()])
            for port, name in zip(model.inputs, example):
                port.get_tensor().set_names({name})
            stats["converted"] += 1
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            temp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.cache_dir))
            try:
                self.ov.save_model(model, str(temp / "model.xml"), compress_to_fp16=False)
                (temp / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True))
                try:
                    os.rename(temp, folder)
                except OSError:  # another process wrote it first: theirs is the same network
                    pass
            finally:
                shutil.rmtree(temp, ignore_errors=True)
            return model

    def compile(self, model: Any, shapes: dict[str, tuple[int, ...]]) -> Any:
        """`model` compiled for these input shapes."""
        static = model.clone()
        static.reshape({name: list(shape) for name, shape in shapes.items()})
        return self.core.compile_model(static, self.device, self.config)


def cache_name(key: dict[str, Any]) -> str:
    """The cache folder of a network: its part and a digest of everything that changes its weights or shapes."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return f"{key['part']}-{digest}"


class Network:
    """One converted network, compiled per input shape; called with torch tensors, answering float32 torch."""

    def __init__(self, runtime: Runtime, model: Any) -> None:
        self.runtime, self.model = runtime, model
        self.names = [port.get_any_name() for port in model.inputs]
        self.compiled: dict[tuple, Any] = {}

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        arrays = [np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy()) for x in inputs]
        shapes = tuple(a.shape for a in arrays)
        compiled = self.compiled.get(shapes)
        if compiled is None:
            compiled = self.compiled[shapes] = self.runtime.compile(self.model, dict(zip(self.names, shapes)))
        return torch.from_numpy(np.array(compiled(arrays)[0]))


# --- the tracing wrappers: float32 tensors in and out, the module's own dtype inside ---

class _UNet(torch.nn.Module):
    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, hidden, text_embeds=None, time_ids=None):
        dtype = self.unet.dtype
        added = None if text_embeds is None else {"text_embeds": text_embeds.to(dtype), "time_ids": time_ids.to(dtype)}
        return self.unet(sample.to(dtype), timestep, encoder_hidden_states=hidden.to(dtype), added_cond_kwargs=added,
                         return_dict=False)[0].float()


class _Decoder(torch.nn.Module):
    """The VAE's decoder from scaled latents (or TAESD's, whose scaling factor is 1) to pixels in [-1, 1]."""

    def __init__(self, vae: Any, scale: float) -> None:
        super().__init__()
        self.vae, self.scale = vae, scale

    def forward(self, latents):
        return self.vae.decode(latents.to(self.vae.dtype) / self.scale, return_dict=False)[0].float()


class _Encoder(torch.nn.Module):
    """The VAE's encoder from pixels in [-1, 1] to scaled latents (the distribution's mode, as TorchBackend)."""

    def __init__(self, vae: Any) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, pixels):
        return (self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mode() * self.vae.config.scaling_factor).float()


class OpenVINOBackend:
    """The Backend whose UNet and VAE run on OpenVINO, for one pipeline with its active LoRAs; the text
    encoders stay torch (`encode_text` is the TorchBackend's)."""

    def __init__(self, runtime: Runtime, pipe: Any, identity: dict[str, Any]) -> None:
        self.runtime, self.pipe, self.identity = runtime, pipe, identity
        self.torch = TorchBackend.of(pipe)
        self.networks: OrderedDict[str, Network] = pipe.__dict__.setdefault("_localdiffusion_openvino", OrderedDict())

    @property
    def dtype(self) -> torch.dtype:
        return self.torch.dtype

    @property
    def in_channels(self) -> int:
        return self.torch.in_channels

    def _network(self, part: str, module: torch.nn.Module, example: dict[str, torch.Tensor],
                 dynamic: dict[str, list[int]], identity: dict[str, Any] | None = None) -> Network:
        identity = identity or self.identity
        if part == "unet":  # the VAE's files name the VAE parts only
            identity = {k: v for k, v in identity.items() if k != "vae"}
        key = {**identity, "part": part, "shapes": {k: v for k, v in dynamic.items()},
               "dtype": str(self.dtype), "openvino": self.runtime.ov.__version__}
        name = cache_name(key)
        network = self.networks.get(name)
        if network is None:
            network = self.networks[name] = Network(self.runtime, self.runtime.network(key, module, example, dynamic))
            while len(self.networks) > COMPILED_KEEP:
                self.networks.popitem(last=False)
        self.networks.move_to_end(name)
        return network

    def unet(self, sample: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor, added: dict[str, torch.Tensor] | None,
             residuals: Residuals | None = None) -> torch.Tensor:
        if residuals is not None:  # never reached: a run with ControlNets falls back to torch (fallback_reason)
            return self.torch.unet(sample, t, hidden, added, residuals)
        batch = sample.shape[0]
        timestep = t.reshape(-1).to(torch.float32).expand(batch)
        inputs = {"sample": sample, "timestep": timestep, "hidden": hidden}
        channels, height, width = sample.shape[1:]
        dynamic = {"sample": [-1, channels, height, width], "timestep": [-1], "hidden": [-1, -1, hidden.shape[2]]}
        if added is not None:
            inputs.update(text_embeds=added["text_embeds"], time_ids=added["time_ids"])
            dynamic.update(text_embeds=[-1, added["text_embeds"].shape[1]], time_ids=[-1, added["time_ids"].shape[1]])
        example = {k: v.to("cpu", torch.float32) for k, v in inputs.items()}
        network = self._network("unet", _UNet(self.pipe.unet), example, dynamic)
        return network(*inputs.values()).to(sample.device, sample.dtype)

    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        example = {"pixels": pixels.to("cpu", torch.float32)}
        network = self._network("vae_encoder", _Encoder(vae), example, {"pixels": [-1, 3, *pixels.shape[2:]]})
        return network(pixels).to(pixels.device, self.dtype)

    def vae_decode(self, latents: torch.Tensor, truncate: bool = False) -> list[Image.Image]:
        vae = self.pipe.vae
        example = {"latents": latents.to("cpu", torch.float32)}
        network = self._network("vae_decoder", _Decoder(vae, vae.config.scaling_factor), example,
                                {"latents": [-1, latents.shape[1], *latents.shape[2:]]})
        image = network(latents)
        if truncate:
            return [Image.fromarray(pixels) for pixels in to_uint8_a1111(image)]
        return self.pipe.image_processor.postprocess(image, output_type="pil", do_denormalize=[True] * image.shape[0])

    def encode_text(self, clip_skip: int, embeddings: dict[str, Any]) -> Any:
        return self.torch.encode_text(clip_skip, embeddings)

    def fast_decoder(self, taesd: Any, identity: dict[str, Any]) -> Any:
        """TAESD's decoder on OpenVINO, as `taesd_decode` calls it (`identity` names the TAESD file)."""
        return _OpenVINOTaesd(self, taesd, identity)


class _OpenVINOTaesd:
    """A stand-in for a diffusers AutoencoderTiny in `taesd_decode`: `decode` runs on OpenVINO."""

    def __init__(self, backend: OpenVINOBackend, taesd: Any, identity: dict[str, Any]) -> None:
        self.backend, self.taesd, self.identity = backend, taesd, identity
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def decode(self, latents: torch.Tensor, return_dict: bool = False) -> tuple[torch.Tensor]:
        example = {"latents": latents.to("cpu", torch.float32)}
        network = self.backend._network("taesd_decoder", _Decoder(self.taesd, 1.0), example,
                                        {"latents": [-1, latents.shape[1], *latents.shape[2:]]}, self.identity)
        return (network(latents),)


def fast_decode(backend: Any, taesd: Any, taesd_identity: dict[str, Any]) -> Any:
    """What `FastDecodeBackend` should decode with: TAESD on OpenVINO for an OpenVINO backend, else TAESD itself."""
    if isinstance(backend, OpenVINOBackend):
        return backend.fast_decoder(taesd, taesd_identity)
    return taesd


