"""A1111 sampler and schedule-type names, each mapped to a diffusers scheduler.

The table is the single source of truth: the CLI, the HTTP APIs and the docs all read it.
A scheduler is always built from the model's own scheduler config (betas, prediction type,
timestep spacing), so only the sampling algorithm and the sigma schedule change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import diffusers

from localdiffusion.errors import BadInput, closest, one_of

SCHEDULE_TYPES = ["Automatic", "Karras", "Exponential", "SGM Uniform"]

# Options each schedule type sets on a scheduler that supports it.
_SCHEDULE_OPTIONS: dict[str, dict[str, Any]] = {
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}


@dataclass(frozen=True)
class Sampler:
    name: str  # A1111's name
    scheduler: str  # diffusers class name
    options: dict[str, Any] = field(default_factory=dict)
    # What "Automatic" means for this sampler in A1111 (its default schedule type).
    automatic: str = "Automatic"
    # Schedule types beyond "Automatic" that the diffusers scheduler can follow.
    schedule_types: tuple[str, ...] = ("Karras", "Exponential", "SGM Uniform")
    # Stochastic samplers draw fresh noise every step (from the seed's generator).
    stochastic: bool = False


SAMPLERS: dict[str, Sampler] = {s.name: s for s in [
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, automatic="Karras"),
    Sampler("DPM++ SDE", "DPMSolverSDEScheduler", automatic="Karras", schedule_types=("Karras", "Exponential"), stochastic=True),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
            automatic="Exponential", stochastic=True),
    Sampler("Euler a", "EulerAncestralDiscreteScheduler", schedule_types=("SGM Uniform",), stochastic=True),
    Sampler("Euler", "EulerDiscreteScheduler"),
    Sampler("LMS", "LMSDiscreteScheduler"),
    Sampler("Heun", "HeunDiscreteScheduler"),
    Sampler("DPM2", "KDPM2DiscreteScheduler", automatic="Karras"),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", automatic="Karras", stochastic=True),
    Sampler("DDIM", "DDIMScheduler", {"set_alpha_to_one": False}, schedule_types=("SGM Uniform",)),
    Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, schedule_types=("SGM Uniform",)),
    Sampler("UniPC", "UniPCMultistepScheduler", schedule_types=("Karras", "Exponential", "SGM Uniform")),
    Sampler("LCM", "LCMScheduler", schedule_types=("SGM Uniform",)),
]}

# Old A1111 names that folded the schedule into the sampler name ("DPM++ 2M Karras").
_LEGACY_SUFFIXES = {" Karras": "Karras", " Exponential": "Exponential"}


def sampler_names() -> list[str]:
    return list(SAMPLERS)


def resolve_sampler(name: str, schedule_type: str = "Automatic") -> tuple[Sampler, str]:
    """The Sampler for an A1111 name, and the schedule type to use (folding legacy names)."""
    for suffix, legacy_type in _LEGACY_SUFFIXES.items():
        if name.endswith(suffix) and name.removesuffix(suffix) in SAMPLERS and schedule_type == "Automatic":
            name, schedule_type = name.removesuffix(suffix), legacy_type
    sampler = SAMPLERS.get(name) or next((s for s in SAMPLERS.values() if s.name.lower() == name.lower()), None)
    if sampler is None:
        near = closest(name, sampler_names())
        hint = f" (did you mean {one_of(near)}?)" if near else ""
        raise BadInput(f"Unknown sampler '{name}'{hint}; choose one of {one_of(sampler_names(), limit=20)}.", field="sampler_name")
    if schedule_type not in SCHEDULE_TYPES:
        raise BadInput(f"Unknown schedule type '{schedule_type}'; choose one of {one_of(SCHEDULE_TYPES)}.", field="scheduler")
    if schedule_type != "Automatic" and schedule_type not in sampler.schedule_types:
        allowed = ["Automatic", *sampler.schedule_types]
        raise BadInput(f"Sampler '{sampler.name}' cannot follow the '{schedule_type}' schedule; use {one_of(allowed)}.", field="scheduler")
    return sampler, schedule_type


def make_scheduler(name: str, schedule_type: str, model_config: dict[str, Any], seed: int | None = None):
    """A fresh diffusers scheduler for this sampler, built on the model's own scheduler config."""
    sampler, schedule_type = resolve_sampler(name, schedule_type)
    effective = sampler.automatic if schedule_type == "Automatic" else schedule_type
    options = {**sampler.options, **_SCHEDULE_OPTIONS.get(effective, {})}
    if sampler.scheduler == "DPMSolverSDEScheduler" and seed is not None:
        options["noise_sampler_seed"] = seed
    cls = getattr(diffusers, sampler.scheduler)
    return cls.from_config(dict(model_config), **options)


def mapping_table() -> list[dict[str, str]]:
    """Rows for the docs and the API: A1111 name, diffusers scheduler, options, automatic schedule."""
    return [
        {"name": s.name, "scheduler": s.scheduler, "options": ", ".join(f"{k}={v}" for k, v in s.options.items()),
         "automatic": s.automatic, "schedule_types": ", ".join(["Automatic", *s.schedule_types])}
        for s in SAMPLERS.values()
    ]
