"""The engine's side of sampling as A1111 samples (engine/k_sampling): what A1111's samplers call.

`GuidedDenoiser` is A1111's `CFGDenoiser` for this engine. At every model evaluation it takes that
evaluation's conditioning (A1111 advances prompt editing once per evaluation), runs the prompt and the
negative prompt through the model (one batch [prompt; negative] when their lengths agree, else two
calls), combines them with A1111's CFG, blends an inpainting mask in, hands over to the SDXL refiner at
its switch, and stops when cancelled. `UNetNetwork` is the network under it: the Backend's UNet, with
ControlNet residuals and a 9-channel inpainting UNet's image conditioning added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from localdiffusion.engine.attention import batch_halves
from localdiffusion.engine.backend import Backend
from localdiffusion.engine.control import Control
from localdiffusion.engine.k_sampling.denoiser import combine_denoised
from localdiffusion.engine.sampling import StepState
from localdiffusion.errors import Cancelled

# Model evaluation index -> (the prompt's, the negative prompt's) network arguments.
Conds = Callable[[int], tuple[dict[str, Any], dict[str, Any]]]


class UNetNetwork:
    """A k-sampling network over a Backend's UNet: `net(x_scaled, t, hidden=, added=, halves=) -> eps or v`.

    `halves` names the CFG half of each group of rows ("cond", "uncond"), for the ControlNet's control mode.
    Latents are computed in float32 (as A1111 keeps them) and handed to the UNet in its own dtype."""

    def __init__(self, backend: Backend, control: Control | None = None, image_cond: torch.Tensor | None = None) -> None:
        self.backend, self.control, self.image_cond = backend, control, image_cond
        self.step = 0  # the sampling step, for the ControlNets' guidance window

    def __call__(self, x: torch.Tensor, t: torch.Tensor, *, hidden: torch.Tensor, added: dict[str, Any] | None = None,
                 halves: tuple[str, ...] = ("cond",)) -> torch.Tensor:
        sample = x.to(self.backend.dtype)
        residuals = None
        if self.control is not None:
            residuals = self.control.residuals(self.step, sample, t, hidden, added, halves)
        if self.image_cond is not None:  # the 9-channel inpainting UNet's mask and masked image, for every row
            sample = torch.cat([sample, torch.cat([self.image_cond] * len(halves)).to(sample.dtype)], dim=1)
        with batch_halves(halves):  # for attention capture (word heatmaps): which rows are the prompt's
            return self.backend.unet(sample, t, hidden, added, residuals).to(x.dtype)


@dataclass
class ModelPart:
    """One model a pass samples with: its denoiser (over its network) and its conditioning."""

    denoiser: Any
    conds: Conds
    network: UNetNetwork


@dataclass
class MaskBlend:
    """A1111's inpainting blend: outside the mask, the original latents come back after every evaluation."""

    init_latent: torch.Tensor
    repaint: torch.Tensor  # 1 where the model may repaint (A1111's `nmask`)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.repaint + self.init_latent * (1 - self.repaint)


@dataclass
class Evaluation:
    """The last model evaluation, for step observers: its input and each half's prediction."""

    x: torch.Tensor
    sigma: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor


class GuidedDenoiser(torch.nn.Module):
    """What an A1111 sampler calls: `model(x, sigma) -> the guided prediction` (see the module docstring).

    For a timestep sampler (DDIM, PLMS, UniPC) `sigma` is the timestep and the prediction is noise; the
    attributes `cond_scale_multiplier`, `need_last_noise_uncond` and `last_noise_uncond` are the protocol
    A1111's DDIM CFG++ uses."""

    def __init__(self, base: ModelPart, cfg_scale: float, *, refiner: ModelPart | None = None, switch_at: float = 1.0,
                 blend: MaskBlend | None = None, mask_before: bool = False, cancel: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self.part, self.refiner, self.switch_at = base, refiner, switch_at
        self.cfg_scale, self.blend, self.mask_before, self.cancel = cfg_scale, blend, mask_before, cancel
        self.step = 0  # model evaluations so far
        self.cond_scale_multiplier = 1.0
        self.need_last_noise_uncond = False
        self.last_noise_uncond: torch.Tensor | None = None
        self.last: Evaluation | None = None
        self.first_x: torch.Tensor | None = None  # what the sampler started from

    @property
    def inner_model(self) -> Any:
        """The plain denoiser under the guidance (the name A1111's samplers reach it by)."""
        return self.part.denoiser

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        if self.cancel is not None and self.cancel():
            raise Cancelled("The generation was cancelled.")
        self._hand_over(sigma)
        if self.first_x is None:
            self.first_x = x
        cond, uncond = self.part.conds(self.step)
        if self.blend is not None and self.mask_before:
            x = self.blend(x)
        scale = self.cfg_scale * self.cond_scale_multiplier
        if scale == 1.0 and not self.need_last_noise_uncond:
            # At CFG 1 the negative prompt cannot change the picture: half the work (as Forge and ComfyUI do;
            # A1111 still evaluates it, which can differ in the last bit: docs/architecture.md, "Decisions").
            out_cond = out_uncond = self.part.denoiser(x, sigma, **cond)
        else:
            out_cond, out_uncond = self._predict(x, sigma, cond, uncond)
        denoised = combine_denoised(out_uncond, [[(out_cond[i], 1.0)] for i in range(x.shape[0])], scale)
        if self.need_last_noise_uncond:
            self.last_noise_uncond = out_uncond
        if self.blend is not None and not self.mask_before:
            denoised = self.blend(denoised)
        self.last = Evaluation(x, sigma, out_cond, out_uncond)
        self.step += 1
        return denoised

    def _predict(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, Any], uncond: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        inner = self.part.denoiser
        if cond["hidden"].shape[1] != uncond["hidden"].shape[1]:
            return inner(x, sigma, **cond), inner(x, sigma, **uncond)
        out = inner(torch.cat([x, x]), torch.cat([sigma, sigma]), **_joined(cond, uncond))
        return out[: x.shape[0]], out[x.shape[0]:]

    def _hand_over(self, sigma: torch.Tensor) -> None:
        """A1111's refiner switch: from the evaluation whose timestep has done `switch_at` of the 1000."""
        if self.refiner is None:
            return
        if (999 - self._timestep(sigma)) / 1000 >= self.switch_at:
            self.part, self.refiner = self.refiner, None

    def _timestep(self, sigma: torch.Tensor) -> int:
        sigmas = getattr(self.part.denoiser, "sigmas", None)
        if sigmas is None:  # a timestep sampler: sigma is the timestep
            return int(sigma.max())
        return int(torch.argmin((sigmas.to(sigma.device) - sigma.max()).abs()))

    def x0_and_eps(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A prediction of this denoiser as (clean latents, noise), whatever it predicts."""
        denoiser = self.part.denoiser
        if getattr(denoiser, "sigmas", None) is not None:  # k-diffusion denoisers predict the clean latents
            s = sigma.view(-1, *[1] * (x.ndim - 1)).clamp(min=1e-8)
            return out, (x - out) / s
        a = denoiser.alphas_cumprod.to(x.device)[sigma.long()].view(-1, *[1] * (x.ndim - 1))
        return (x - (1 - a).sqrt() * out) / a.sqrt(), out


def _joined(cond: dict[str, Any], uncond: dict[str, Any]) -> dict[str, Any]:
    """Both halves as one batch, [prompt; negative] as A1111 batches them."""
    added = None
    if cond["added"] is not None:
        added = {key: _cat(value, uncond["added"][key]) for key, value in cond["added"].items()}
    return {"hidden": torch.cat([cond["hidden"], uncond["hidden"]]), "added": added, "halves": cond["halves"] + uncond["halves"]}


def _cat(a: Any, b: Any) -> Any:
    if isinstance(a, list):  # IP-Adapter image embeddings: one tensor per adapter
        return [torch.cat([x, y]) for x, y in zip(a, b)]
    return torch.cat([a, b])


class StepReporter:
    """Turns A1111 samplers' callbacks into the engine's StepStates for its observers, and moves the
    ControlNets' step on."""

    def __init__(self, model: GuidedDenoiser, total: int, watch: Callable[[StepState], None] | None) -> None:
        self.model, self.total, self.watch = model, total, watch
        self.previous: torch.Tensor | None = None

    def __call__(self, info: dict[str, Any]) -> None:
        index = int(info["i"])
        self.model.part.network.step = index + 1
        if self.watch is not None and self.model.last is not None:
            self.watch(self._state(index, info))
        self.previous = info["x"]

    def _state(self, index: int, info: dict[str, Any]) -> StepState:
        last = self.model.last
        x0_cond, eps_cond = self.model.x0_and_eps(last.x, last.sigma, last.cond)
        x0_uncond, eps_uncond = self.model.x0_and_eps(last.x, last.sigma, last.uncond)
        eps = eps_uncond + self.model.cfg_scale * (eps_cond - eps_uncond)
        guided = info["denoised"]
        if guided is None:  # UniPC's last update reports none
            guided = x0_uncond + self.model.cfg_scale * (x0_cond - x0_uncond)
        timestep = last.sigma[:1].float()
        denoiser = self.model.part.denoiser
        if getattr(denoiser, "sigmas", None) is not None:
            timestep = denoiser.sigma_to_t(last.sigma[:1])
        sample = self.previous if self.previous is not None else self.model.first_x
        return StepState(min(index, self.total - 1), self.total, timestep, sample, info["x"], eps, eps_uncond, eps_cond,
                         None, None, denoised=(guided, x0_uncond, x0_cond))
