"""A1111 v1.10.1's samplers: name, function, aliases and options, in A1111's order.

From `modules/sd_samplers_kdiffusion.py` (`samplers_k_diffusion`), `sd_samplers_timesteps.py`
(DDIM, DDIM CFG++, PLMS, UniPC), `sd_samplers_lcm.py` (LCM) and `sd_samplers_extra.py` (Restart). The options mean what they mean in A1111:

- `default_schedule`: what "Automatic" means for this sampler; None is the denoiser's own
  `get_sigmas(steps)` (t = linspace(999, 0, steps) mapped to sigma, then 0).
- `discard_next_to_last_sigma`: one more step is scheduled and the next to last sigma dropped.
- `second_order`: two model calls per step (A1111 counts steps for progress with it).
- `uses_ensd`: the sampler draws fresh noise from the image's RNG at each step, so the eta
  noise seed delta (ENSD) changes its picture, and A1111 writes "ENSD" into the infotext.
- `brownian_noise`: the per-step noise comes from a Brownian tree seeded with the batch's
  seeds (not from the RNG source, so ENSD does not apply).
- `solver_type`: passed to the function ("heun" for DPM++ 2M SDE Heun).
- `denoiser`: "compvis" (eps or v, `make_denoiser`), "lcm" (`LCMDenoiser`) or "timestep"
  (`timesteps.TimestepDenoiser`, eps at a timestep).
- `kind`: "sigmas" for k-diffusion samplers (a denoiser over a sigma schedule), "timesteps" for
  A1111's timestep samplers DDIM, DDIM CFG++, PLMS and UniPC (`timesteps.py`: a noise
  predictor over A1111's own integer timesteps; `sd_samplers_timesteps.py`).

A1111 lets every sampler here follow every schedule type (`schedules.SCHEDULE_TYPES`). DPM fast
and DPM adaptive take no sigmas: the schedule only sets the first noise level. The timestep
samplers accept a schedule type and ignore it, as A1111 does. The order is A1111's
`sd_samplers.all_samplers`: k-diffusion's (with Restart), the timestep samplers, then LCM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from localdiffusion.engine.k_sampling import samplers as k
from localdiffusion.engine.k_sampling import timesteps as ts
from localdiffusion.engine.k_sampling.schedules import SCHEDULE_TYPES
from localdiffusion.errors import BadInput, closest, one_of


@dataclass(frozen=True)
class KSampler:
    name: str  # A1111's label
    function: Callable[..., object]
    aliases: tuple[str, ...] = ()
    default_schedule: str | None = None  # "Automatic" means this; None: the denoiser's get_sigmas
    discard_next_to_last_sigma: bool = False
    second_order: bool = False
    uses_ensd: bool = False
    brownian_noise: bool = False
    solver_type: str | None = None
    denoiser: str = "compvis"
    kind: str = "sigmas"  # "sigmas" (k-diffusion) or "timesteps" (DDIM, DDIM CFG++, PLMS, UniPC)

    @property
    def automatic(self) -> str:
        """In words, what "Automatic" means for this sampler."""
        if self.kind == "timesteps":
            return "A1111's timesteps (the schedule type is ignored)"
        return self.default_schedule or "Uniform"

    @property
    def uses_schedule(self) -> bool:
        """Whether the schedule type changes this sampler's picture (not for the timestep samplers)."""
        return self.kind == "sigmas"

    @property
    def schedule_types(self) -> tuple[str, ...]:
        return tuple(SCHEDULE_TYPES)


K_SAMPLERS: dict[str, KSampler] = {s.name: s for s in [
    KSampler("DPM++ 2M", k.sample_dpmpp_2m, ("k_dpmpp_2m",), default_schedule="Karras"),
    KSampler("DPM++ SDE", k.sample_dpmpp_sde, ("k_dpmpp_sde",), default_schedule="Karras", second_order=True, brownian_noise=True),
    KSampler("DPM++ 2M SDE", k.sample_dpmpp_2m_sde, ("k_dpmpp_2m_sde",), default_schedule="Exponential", brownian_noise=True),
    KSampler("DPM++ 2M SDE Heun", k.sample_dpmpp_2m_sde, ("k_dpmpp_2m_sde_heun",), default_schedule="Exponential",
             brownian_noise=True, solver_type="heun"),
    KSampler("DPM++ 2S a", k.sample_dpmpp_2s_ancestral, ("k_dpmpp_2s_a",), default_schedule="Karras", uses_ensd=True, second_order=True),
    KSampler("DPM++ 3M SDE", k.sample_dpmpp_3m_sde, ("k_dpmpp_3m_sde",), default_schedule="Exponential",
             discard_next_to_last_sigma=True, brownian_noise=True),
    KSampler("Euler a", k.sample_euler_ancestral, ("k_euler_a", "k_euler_ancestral"), uses_ensd=True),
    KSampler("Euler", k.sample_euler, ("k_euler",)),
    KSampler("LMS", k.sample_lms, ("k_lms",)),
    KSampler("Heun", k.sample_heun, ("k_heun",), second_order=True),
    KSampler("DPM2", k.sample_dpm_2, ("k_dpm_2",), default_schedule="Karras", discard_next_to_last_sigma=True, second_order=True),
    KSampler("DPM2 a", k.sample_dpm_2_ancestral, ("k_dpm_2_a",), default_schedule="Karras", discard_next_to_last_sigma=True,
             uses_ensd=True, second_order=True),
    KSampler("DPM fast", k.sample_dpm_fast, ("k_dpm_fast",), uses_ensd=True),
    KSampler("DPM adaptive", k.sample_dpm_adaptive, ("k_dpm_ad",), uses_ensd=True),
    KSampler("Restart", k.sample_restart, ("restart",), default_schedule="Karras", second_order=True),
    KSampler("DDIM", ts.sample_ddim, ("ddim",), denoiser="timestep", kind="timesteps"),
    KSampler("DDIM CFG++", ts.sample_ddim_cfgpp, ("ddim_cfgpp",), denoiser="timestep", kind="timesteps"),
    KSampler("PLMS", ts.sample_plms, ("plms",), denoiser="timestep", kind="timesteps"),
    KSampler("UniPC", ts.sample_unipc, ("unipc",), denoiser="timestep", kind="timesteps"),
    KSampler("LCM", k.sample_lcm, ("k_lcm",), denoiser="lcm"),
]}

def find_k_sampler(name: str, schedule: str | None = "Automatic") -> tuple[KSampler, str]:
    """The sampler for an A1111 name or alias (case-insensitive), and its schedule type.

    As A1111's `get_sampler_and_scheduler`, a name ending in a schedule type ("DPM++ 2M Karras",
    "Euler a sgm_uniform") is that sampler with that schedule, whatever `schedule` says."""
    schedule = schedule or "Automatic"
    if _lookup(name) is None:
        for label, stype in SCHEDULE_TYPES.items():
            suffix = next((o for o in (label, stype.name, *stype.aliases) if name.lower().endswith(" " + o.lower())), None)
            if suffix is not None and stype.function is not None and _lookup(name[: -len(suffix) - 1]) is not None:
                name, schedule = name[: -len(suffix) - 1], label
                break
    sampler = _lookup(name)
    if sampler is None:
        names = list(K_SAMPLERS)
        near = closest(name, names)
        hint = f" (did you mean {one_of(near)}?)" if near else ""
        raise BadInput(f"Unknown sampler '{name}'{hint}; choose one of {one_of(names, limit=20)}.", field="sampler_name")
    return sampler, schedule


def _lookup(name: str) -> KSampler | None:
    key = name.strip().lower()
    for s in K_SAMPLERS.values():
        if key == s.name.lower() or key in s.aliases:
            return s
    return None
