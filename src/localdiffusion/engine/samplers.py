"""The sampler table: every sampler the engine offers, by A1111's name, and the contract each keeps.

- **A1111's samplers** (engine/k_sampling/table.py: Euler, DPM++ 2M, ..., and the timestep samplers DDIM,
  PLMS, UniPC) are sampled as A1111 v1.10 samples them: its sigma schedules, CFG, noise and 8-bit
  conversion, so the same settings give A1111's picture. "Automatic" means A1111's default schedule for
  the sampler, whatever the model's diffusers scheduler config says.
- **Diffusers' samplers that A1111 does not have** (DEIS, DPM++ 3M) run diffusers' scheduler on the model's own
  scheduler config, bit-identical to a raw diffusers pipeline.
- **Flow-matching samplers** (SD3/3.5 and FLUX, `FLOW_SAMPLERS`): "Euler" with the schedule types Forge and
  ComfyUI show ("Simple", the default, and "Beta"; also "Karras", "Exponential"), diffusers'
  `FlowMatchEulerDiscreteScheduler` on the model's own scheduler config (its shift), bit-identical to the raw
  diffusers pipeline (contract "diffusers"). `resolve_flow_sampler` and `make_flow_scheduler` are theirs.

The table is the single source of truth: the CLI, the HTTP APIs and docs/samplers.md all read it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import diffusers

from localdiffusion.engine.k_sampling.schedules import SCHEDULE_TYPES as _K_SCHEDULE_TYPES
from localdiffusion.engine.k_sampling.schedules import schedule_type
from localdiffusion.engine.k_sampling.table import K_SAMPLERS, KSampler, find_k_sampler
from localdiffusion.errors import BadInput, closest, one_of
from localdiffusion.recipe import Recipe

SCHEDULE_TYPES: list[str] = list(_K_SCHEDULE_TYPES)  # A1111's labels, "Automatic" first

# Options each schedule type sets on a diffusers scheduler that supports it.
_DIFFUSERS_SCHEDULES: dict[str, dict[str, Any]] = {
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}


@dataclass(frozen=True)
class Sampler:
    name: str  # A1111's name (or, for a diffusers sampler, the name other tools give it)
    automatic: str  # what "Automatic" means for this sampler
    schedule_types: tuple[str, ...]  # the types beyond "Automatic" it follows (what the studio offers)
    stochastic: bool  # draws fresh noise during sampling
    k: KSampler | None = None  # A1111's sampler: sampled as A1111 samples
    scheduler: str = ""  # a diffusers sampler: its scheduler class
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def contract(self) -> str:
        """What the same settings promise: "A1111" (A1111's picture) or "diffusers" (raw diffusers' picture)."""
        return "A1111" if self.k is not None else "diffusers"

    @property
    def is_timestep_sampler(self) -> bool:
        """DDIM, DDIM CFG++, PLMS and UniPC: A1111 runs them over its own timesteps, whatever the schedule type."""
        return self.k is not None and self.k.kind == "timesteps"

    @property
    def takes_eta(self) -> bool:
        return self.k is not None and "eta" in inspect.signature(self.k.function).parameters

    @property
    def default_eta(self) -> float:
        """A1111's default eta: its "eta (ancestral)" setting (1) for k-diffusion samplers, "eta DDIM" (0) for DDIM."""
        return 0.0 if self.is_timestep_sampler else 1.0

    @property
    def uses_ensd(self) -> bool:
        return self.k is not None and self.k.uses_ensd


def _a1111(k: KSampler) -> Sampler:
    # Timestep samplers follow none (A1111 accepts a type for them and ignores it, and so does resolve_sampler).
    types = () if k.kind == "timesteps" else tuple(t for t in SCHEDULE_TYPES if t != "Automatic")
    parameters = inspect.signature(k.function).parameters
    stochastic = k.uses_ensd or k.brownian_noise or "eta" in parameters or "noise_sampler" in parameters
    automatic = "A1111's timesteps" if k.kind == "timesteps" else k.automatic
    return Sampler(k.name, automatic, types, stochastic, k=k)


_DIFFUSERS_ONLY = [
    Sampler("DEIS", "Automatic", ("Karras", "Exponential", "SGM Uniform"), False, scheduler="DEISMultistepScheduler"),
    Sampler("DPM++ 3M", "Karras", ("Karras", "Exponential", "SGM Uniform"), False, scheduler="DPMSolverMultistepScheduler",
            options={"algorithm_type": "dpmsolver++", "solver_order": 3}),
]

SAMPLERS: dict[str, Sampler] = {s.name: s for s in [*(_a1111(k) for k in K_SAMPLERS.values()), *_DIFFUSERS_ONLY]}

# The flow-matching families' samplers (SD3/3.5, FLUX): schedule type -> FlowMatchEulerDiscreteScheduler options.
FLOW_SCHEDULES: dict[str, dict[str, Any]] = {
    "Simple": {}, "Beta": {"use_beta_sigmas": True}, "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
}
FLOW_SAMPLERS: dict[str, Sampler] = {
    "Euler": Sampler("Euler", "Simple", tuple(FLOW_SCHEDULES), False, scheduler="FlowMatchEulerDiscreteScheduler"),
}


def resolve_flow_sampler(name: str, schedule_type_name: str = "Automatic") -> tuple[Sampler, str]:
    """The flow sampler for a name and its schedule type's label ("Automatic" is the sampler's own: Simple); one
    sentence naming what SD3.5 and FLUX models allow otherwise."""
    sampler = next((s for s in FLOW_SAMPLERS.values() if s.name.lower() == str(name).strip().lower()), None)
    if sampler is None:
        raise BadInput(f"SD3.5 and FLUX models sample by flow matching, with {one_of(list(FLOW_SAMPLERS))}; "
                       f"'{name}' is for SD1, SD2 and SDXL.", field="sampler_name")
    label = next((t for t in ("Automatic", *sampler.schedule_types) if t.lower() == str(schedule_type_name).strip().lower()), None)
    if label is None:
        raise BadInput(f"SD3.5 and FLUX models cannot follow the '{schedule_type_name}' schedule; use "
                       f"{one_of(['Automatic', *sampler.schedule_types])}.", field="scheduler")
    return sampler, label


def make_flow_scheduler(name: str, schedule_type_name: str, model_config: dict[str, Any]):
    """A fresh FlowMatchEulerDiscreteScheduler on the model's own config (its shift) with the schedule's options."""
    sampler, label = resolve_flow_sampler(name, schedule_type_name)
    options = FLOW_SCHEDULES[sampler.automatic if label == "Automatic" else label]
    return getattr(diffusers, sampler.scheduler).from_config(dict(model_config), **options)


def sampler_names() -> list[str]:
    return list(SAMPLERS)


def resolve_sampler(name: str, schedule_type_name: str = "Automatic") -> tuple[Sampler, str]:
    """The Sampler for a name (A1111's, an alias, or an old name with the schedule in it, "DPM++ 2M Karras"),
    and the schedule type's A1111 label; one sentence naming what is allowed otherwise."""
    diffusers_sampler = next((s for s in _DIFFUSERS_ONLY if s.name.lower() == str(name).strip().lower()), None)
    if diffusers_sampler is not None:
        label = schedule_type(schedule_type_name).label
        if label != "Automatic" and label not in diffusers_sampler.schedule_types:
            allowed = ["Automatic", *diffusers_sampler.schedule_types]
            raise BadInput(f"Sampler '{diffusers_sampler.name}' cannot follow the '{label}' schedule; use {one_of(allowed)}.",
                           field="scheduler")
        return diffusers_sampler, label
    try:
        k, schedule = find_k_sampler(str(name), schedule_type_name)
    except BadInput:
        near = closest(str(name), sampler_names())
        hint = f" (did you mean {one_of(near)}?)" if near else ""
        raise BadInput(f"Unknown sampler '{name}'{hint}; choose one of {one_of(sampler_names(), limit=30)}.",
                       field="sampler_name") from None
    return SAMPLERS[k.name], schedule_type(schedule).label


def make_scheduler(name: str, schedule_type_name: str, model_config: dict[str, Any], seed: int | None = None):
    """A fresh diffusers scheduler for a diffusers sampler, built on the model's own scheduler config."""
    sampler, label = resolve_sampler(name, schedule_type_name)
    if sampler.k is not None:
        raise ValueError(f"'{sampler.name}' is one of A1111's samplers; the engine samples it with engine/k_sampling")
    effective = sampler.automatic if label == "Automatic" else label
    options = {**sampler.options, **_DIFFUSERS_SCHEDULES.get(effective, {})}
    cls = getattr(diffusers, sampler.scheduler)
    return cls.from_config(dict(model_config), **options)


def infotext_params(recipe: Recipe) -> dict[str, str]:
    """What A1111 writes into the infotext for the options this recipe's sampler used: ENSD (only for samplers
    that draw step noise from the seed's generator), Eta or Eta DDIM (when not the default), SGM noise
    multiplier and Pad conds (when on)."""
    sampler, _ = resolve_sampler(recipe.sampler_name, recipe.scheduler)
    params: dict[str, str] = {}
    if sampler.uses_ensd and recipe.eta_noise_seed_delta:
        params["ENSD"] = str(recipe.eta_noise_seed_delta)
    if sampler.takes_eta and recipe.eta is not None and recipe.eta != sampler.default_eta:
        params["Eta DDIM" if sampler.is_timestep_sampler else "Eta"] = f"{recipe.eta:g}"
    if recipe.sgm_noise_multiplier and sampler.k is not None and not sampler.is_timestep_sampler:
        params["SGM noise multiplier"] = "True"
    if recipe.pad_cond_uncond and sampler.k is not None:
        params["Pad conds"] = "True"
    return params


def mapping_table() -> list[dict[str, str]]:
    """Rows for the docs and the API: name, contract, what Automatic means, schedule types, and how it samples."""
    rows = []
    for s in SAMPLERS.values():
        how = f"k_sampling `{s.k.function.__name__}`" if s.k is not None else f"diffusers `{s.scheduler}`"
        if s.options:
            how += " (" + ", ".join(f"{k}={v}" for k, v in s.options.items()) + ")"
        rows.append({"name": s.name, "contract": s.contract, "automatic": s.automatic,
                     "schedule_types": ", ".join(["Automatic", *s.schedule_types]), "sampling": how})
    for s in FLOW_SAMPLERS.values():
        rows.append({"name": s.name, "contract": "diffusers", "automatic": s.automatic,
                     "schedule_types": ", ".join(["Automatic", *s.schedule_types]),
                     "sampling": f"diffusers `{s.scheduler}` (SD3.5 and FLUX only)"})
    return rows
