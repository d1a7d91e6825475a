"""Guidance (CFG) explained on the user's image: at chosen steps, what the model predicts without the
prompt, with it, and the guided result that classifier-free guidance extrapolates from the two.

Each prediction is turned into a predicted final image (x0) by the formula the scheduler itself uses,
so the guided x0 is exactly the engine's own `StepState.x0`. The unconditional branch is the negative
prompt (or the empty prompt), so the negative prompt's influence shows in the same picture.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, ImageOps

from localdiffusion.engine.hooks import RunHooks
from localdiffusion.engine.previews import latent_to_rgb
from localdiffusion.engine.sampling import StepState, predicted_x0
from localdiffusion.errors import BadInput
from localdiffusion.explain.grid import draw_grid
from localdiffusion.models.info import base_family
from localdiffusion.recipe import Recipe

CELL = 192  # triptych cells are enlarged to about this many pixels


class _NoX0:
    """A step output without a stored x0, so that `predicted_x0` uses its alpha formula."""

    pred_original_sample = None

    def __init__(self, prev_sample: torch.Tensor) -> None:
        self.prev_sample = prev_sample


@dataclass
class GuidanceView:
    step: int  # 1-based
    total: int
    cfg_scale: float
    negative_prompt: str
    uncond_x0: torch.Tensor  # (1, C, h, w), latent space
    cond_x0: torch.Tensor
    guided_x0: torch.Tensor
    difference: torch.Tensor  # (h, w): mean |cond - uncond| of the noise predictions over channels
    uncond: Image.Image
    cond: Image.Image
    guided: Image.Image
    heat: Image.Image
    caption: str

    @property
    def file(self) -> str:
        return f"cfg-{self.step}.png"

    def triptych(self) -> Image.Image:
        return draw_triptych(self)

    def summary(self) -> dict[str, Any]:
        return {"step": self.step, "total": self.total, "file": self.file, "cfg_scale": self.cfg_scale,
                "difference_mean": round(float(self.difference.mean()), 6),
                "difference_max": round(float(self.difference.max()), 6), "caption": self.caption}


def x0_from(state: StepState, model_output: torch.Tensor) -> torch.Tensor:
    """The predicted final image for this model output at this step, by the scheduler's own formula."""
    output = state.step_output
    if getattr(output, "pred_original_sample", None) is None:
        return predicted_x0(state.scheduler, output, state.sample, model_output, state.timestep)
    sigma = _sigma_of_step(state.scheduler)
    if sigma is None:
        return predicted_x0(state.scheduler, _NoX0(output.prev_sample), state.sample, model_output, state.timestep)
    sample = state.sample.to(torch.float32)  # Euler-family schedulers compute in fp32
    if state.scheduler.config.prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + (sample / (sigma**2 + 1))
    return sample - sigma * model_output


def _sigma_of_step(scheduler: Any) -> torch.Tensor | None:
    """The sigma the step just taken used: the step index has already moved on by one."""
    sigmas, index = getattr(scheduler, "sigmas", None), getattr(scheduler, "step_index", None)
    if sigmas is None or index is None or index < 1 or getattr(scheduler, "order", 1) != 1:
        return None
    return sigmas[index - 1]


def caption_for(cfg_scale: float, negative_prompt: str) -> str:
    base = (f"CFG is the difference your words make, multiplied by the scale: guided = unconditional + "
            f"{cfg_scale:g} x (with prompt - unconditional).")
    if negative_prompt.strip():
        return (base + " Here the unconditional prediction IS the negative prompt, so the guided image is pushed "
                f"away from '{negative_prompt.strip()}' as strongly as toward your prompt.")
    return base + " With no negative prompt, the unconditional prediction is the empty prompt."


class GuidanceRecorder:
    """Step observer: at the chosen 1-based steps (clamped to the run) of the sample pass, batch image 0,
    keep the unconditional, conditional and guided x0 and the difference the prompt makes."""

    def __init__(self, steps: Iterable[int], cfg_scale: float, negative_prompt: str = "", sdxl: bool = False) -> None:
        self.wanted = list(steps)
        self.cfg_scale = cfg_scale
        self.negative_prompt = negative_prompt
        self.sdxl = sdxl
        self.views: list[GuidanceView] = []

    def __call__(self, state: StepState, phase: str, batch: int) -> None:
        if batch != 0 or phase != "sample" or state.noise_uncond is None:
            return
        if state.index + 1 in clamp_steps(self.wanted, state.total):
            self.views.append(self._view(state))

    def _view(self, state: StepState) -> GuidanceView:
        if state.denoised is not None:
            guided, uncond, cond = (x[:1] for x in state.denoised)
        else:
            uncond, cond = x0_from(state, state.noise_uncond)[:1], x0_from(state, state.noise_cond)[:1]
            guided = x0_from(state, state.noise_pred)[:1]
        difference = (state.noise_cond[0] - state.noise_uncond[0]).float().abs().mean(dim=0).cpu()
        images = [_enlarged(latent_to_rgb(x[0], self.sdxl)) for x in (uncond, cond, guided)]
        heat = heat_image(difference).resize(images[0].size, Image.Resampling.BILINEAR)
        return GuidanceView(state.index + 1, state.total, self.cfg_scale, self.negative_prompt,
                            uncond.detach().cpu(), cond.detach().cpu(), guided.detach().cpu(), difference,
                            *images, heat, caption_for(self.cfg_scale, self.negative_prompt))


def clamp_steps(steps: Iterable[int], total: int) -> list[int]:
    """Requested 1-based steps, each clamped into 1..total, without repeats, in order."""
    return sorted({min(max(int(s), 1), total) for s in steps})


def parse_steps(text: str, what: str = "CFG steps", field: str = "cfg_steps") -> list[int]:
    """'5,15' to [5, 15]; one sentence naming the bad value otherwise."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise BadInput(f"The {what} '{text}' are not step numbers; give whole numbers from 1, separated by commas, e.g. 5,15.",
                       field=field)
    return [int(p) for p in parts]


def default_steps(total: int) -> list[int]:
    """About a quarter and three quarters of the way through."""
    return clamp_steps([max(1, round(total / 4)), max(1, round(3 * total / 4))], total)


def check_guidance(recipe: Recipe) -> None:
    if recipe.cfg_scale <= 1.0:
        raise BadInput(f"The CFG scale {recipe.cfg_scale:g} turns guidance off, so there is nothing to explain; use a scale above 1, e.g. 7.",
                       field="cfg_scale")


def recorder_for(engine: Any, recipe: Recipe, steps: Iterable[int]) -> GuidanceRecorder:
    check_guidance(recipe)
    info = engine.checkpoint(recipe.model)
    return GuidanceRecorder(steps, recipe.cfg_scale, recipe.negative_prompt, base_family(info.family) == "sdxl")


def guidance_at(engine: Any, recipe: Recipe, steps: Iterable[int] = (5, 15)) -> list[GuidanceView]:
    """Generate `recipe` once (one image) and return the CFG views at these 1-based steps."""
    recipe = recipe.model_copy(update={"batch_size": 1, "n_iter": 1})
    recorder = recorder_for(engine, recipe, steps)
    engine.generate(recipe, hooks=RunHooks(on_step=recorder))
    return recorder.views


# --- pictures ---

def _enlarged(image: Image.Image, size: int = CELL) -> Image.Image:
    scale = max(1, -(-size // max(1, min(image.size))))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST) if scale > 1 else image


def heat_image(values: torch.Tensor) -> Image.Image:
    """A (h, w) map to a black-red-yellow-white heat image, scaled to its own maximum."""
    v = values.float()
    v = v / v.max() if float(v.max()) > 0 else v
    rgb = torch.stack([(v * 3).clamp(0, 1), (v * 3 - 1).clamp(0, 1), (v * 3 - 2).clamp(0, 1)], dim=-1)
    pixels = rgb.mul(255).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")


def draw_triptych(view: GuidanceView) -> Image.Image:
    """The four pictures with their labels and the step. The caption (the CFG formula) is not drawn in:
    it is the same for every step, so explain.json carries it and the studio shows it once, as text."""
    without = "Negative prompt only (unconditional)" if view.negative_prompt.strip() else "Without the prompt (unconditional)"
    labels = [without, "With the prompt", f"Guided, CFG {view.cfg_scale:g}", "Difference your words make (|with - without|)"]
    cells = [ImageOps.expand(c, border=max(2, c.width // 40), fill=(255, 255, 255))
             for c in (view.uncond, view.cond, view.guided, view.heat)]
    return draw_grid([cells], "", labels, "", [f"Step {view.step} of {view.total}"])
