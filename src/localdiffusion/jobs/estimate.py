"""How long a generation will take on this machine, from the generations it has already finished.

Every finished generate job records, beside its timings, what it ran on (`run_facts`: the model's short hash,
the backend and the device). An estimate for a new recipe looks at the recent finished jobs with the same
model, backend and device, and fits `seconds = overhead + per_step x work`, where the work is
steps x pixels / 512² x images, doubled when CFG runs the negative prompt too (CFG != 1). The fit prefers runs
of the same size bucket (up to 0.6 MP, up to 1.2 MP, larger); with none there, runs of the same model at another
size; with no run of the model at all, there is no estimate ("no estimate yet"), never a guess. Model loading
is not counted (it happens once per model); `timings.generate` is the time after the models were loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from localdiffusion.recipe import Recipe

HISTORY = 300  # how many recent finished generations are read
REFERENCE_PIXELS = 512 * 512
BUCKETS = (0.6e6, 1.2e6)  # size buckets by pixels: small (SD1/SD2), SDXL-size, larger


def run_facts(model_hash: str | None, backend: str, device: str) -> dict[str, Any]:
    """What a generation ran on, recorded in its job's result for later estimates."""
    return {"model_hash": model_hash or "", "backend": backend, "device": device}


def engine_facts(engine: Any, model_hash: str | None) -> dict[str, Any]:
    """The run facts of a generation on `engine` (its backend and device) with a model of this short hash."""
    from localdiffusion.engine.device import device_name

    device = getattr(engine, "device", None)
    return run_facts(model_hash, getattr(getattr(engine, "options", None), "backend", "torch"),
                     device_name(device) if device is not None else "cpu")


def work(recipe: Recipe, native: int = 512) -> float:
    """A recipe's denoising work in standard steps: steps (img2img: x strength, as A1111 runs them) x pixels / 512²
    x images, x2 when CFG runs the negative prompt as well (CFG != 1), plus the hires pass."""
    width, height = recipe.width or native, recipe.height or native
    steps = recipe.steps if recipe.mode == "txt2img" else max(1, round(recipe.steps * recipe.denoising_strength))
    units = steps * width * height / REFERENCE_PIXELS
    if recipe.enable_hr and recipe.mode == "txt2img":
        hr_steps = recipe.hr_second_pass_steps or recipe.steps
        units += max(1, round(hr_steps * recipe.denoising_strength)) * width * height * recipe.hr_scale ** 2 / REFERENCE_PIXELS
    guidance = 1 if recipe.cfg_scale == 1 else 2
    return units * guidance * recipe.batch_size * recipe.n_iter


def bucket(recipe: Recipe, native: int = 512) -> int:
    pixels = (recipe.width or native) * (recipe.height or native)
    return sum(pixels > limit for limit in BUCKETS)


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: no estimate yet
    runs: int  # the finished runs it comes from
    basis: str  # "same size", "other sizes" or "none"
    per_step: float | None = None
    overhead: float | None = None

    def json(self) -> dict[str, Any]:
        return {"seconds": None if self.seconds is None else round(self.seconds, 1), "runs": self.runs, "basis": self.basis,
                "per_step": self.per_step, "overhead": self.overhead}


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(overhead, per_step) by least squares over (work, seconds); both kept non-negative. Runs of one work size
    give no overhead: all of the time is per step."""
    n = len(points)
    mean_w = sum(w for w, _ in points) / n
    mean_s = sum(s for _, s in points) / n
    spread = sum((w - mean_w) ** 2 for w, _ in points)
    if n < 2 or spread <= 1e-9 * max(mean_w, 1e-9) ** 2:
        return 0.0, mean_s / mean_w
    per_step = sum((w - mean_w) * (s - mean_s) for w, s in points) / spread
    overhead = mean_s - per_step * mean_w
    if per_step <= 0:
        return 0.0, mean_s / mean_w
    if overhead < 0:
        return 0.0, sum(s for _, s in points) / sum(w for w, _ in points)
    return overhead, per_step


def history(db: Any, facts: dict[str, Any]) -> list[tuple[Recipe, float]]:
    """The recent finished generations with these run facts: (recipe, seconds after loading)."""
    found = []
    for payload, result in db.query("SELECT payload, result FROM jobs WHERE status = 'done' AND kind = 'generate' "
                                    "ORDER BY id DESC LIMIT ?", (HISTORY,)):
        try:
            data = json.loads(result)
            seconds = float((data.get("timings") or {})["generate"])
            recipe = Recipe.model_validate_json(payload)
        except (ValueError, KeyError, TypeError):
            continue
        if data.get("run") == facts and seconds > 0:
            found.append((recipe, seconds))
    return found


def estimate(db: Any, recipe: Recipe, facts: dict[str, Any], native: int = 512) -> Estimate:
    """How many seconds `recipe` will take after its models are loaded, from this machine's finished runs."""
    runs = history(db, facts)
    if not runs or not facts.get("model_hash"):
        return Estimate(None, 0, "none")
    wanted = bucket(recipe, native)
    same = [(r, s) for r, s in runs if bucket(r, native) == wanted]
    chosen, basis = (same, "same size") if same else (runs, "other sizes")
    overhead, per_step = _fit([(work(r, native), s) for r, s in chosen])
    return Estimate(overhead + per_step * work(recipe, native), len(chosen), basis, round(per_step, 4), round(overhead, 3))


def training_history(db: Any, facts: dict[str, Any]) -> list[float]:
    """Seconds per training step per standard unit (a 512² picture) of this machine's finished training jobs with
    these run facts (base model, backend, device), the steps each resumed run did itself only."""
    found = []
    for (result,) in db.query("SELECT result FROM jobs WHERE status = 'done' AND kind = 'train' ORDER BY id DESC LIMIT ?",
                              (HISTORY,)):
        try:
            data = json.loads(result)
            steps = int(data["steps"]) - int(data.get("resumed_from") or 0)
            seconds, side = float(data["seconds"]), int(data["resolution"])
        except (ValueError, KeyError, TypeError):
            continue
        if data.get("run") == facts and steps > 0 and seconds > 0:
            found.append(seconds / steps / (side * side / REFERENCE_PIXELS))
    return found


def estimate_training(db: Any, facts: dict[str, Any], steps: int, resolution: int, batch: int = 1,
                      step_units: float = 1.5) -> Estimate:
    """How long a training run of `steps` steps at `resolution` will take here: from this machine's finished training
    runs with the same base model and device ("training runs"), else from its generations with that model ("generation
    speed": a training step is about `step_units` sampling steps with CFG, a forward and a backward pass), else none."""
    size = resolution * resolution / REFERENCE_PIXELS * batch
    per_unit = training_history(db, facts)
    if per_unit:
        per_step = sum(per_unit) / len(per_unit) * size
        return Estimate(per_step * steps, len(per_unit), "training runs", round(per_step, 4))
    runs = history(db, facts)
    if not runs or not facts.get("model_hash"):
        return Estimate(None, 0, "none")
    _, per_work = _fit([(work(r), s) for r, s in runs])
    per_step = per_work * step_units * size
    return Estimate(per_step * steps, len(runs), "generation speed", round(per_step, 4))
