"""Other tools' sampler and schedule names, as A1111 names them.

Only names with a true A1111 counterpart are listed; anything else stays in `extra` under the
tool's own name instead of being guessed.
"""

from __future__ import annotations

from localdiffusion.infotext import A1111_SAMPLER_ALIASES

# ComfyUI (comfy/samplers.py KSAMPLER_NAMES); Fooocus uses the same names.
COMFY_SAMPLERS = {
    "euler": "Euler", "euler_ancestral": "Euler a", "heun": "Heun", "dpm_2": "DPM2", "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS", "dpm_fast": "DPM fast", "dpm_adaptive": "DPM adaptive", "dpmpp_2s_ancestral": "DPM++ 2S a",
    "dpmpp_sde": "DPM++ SDE", "dpmpp_sde_gpu": "DPM++ SDE", "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE", "dpmpp_2m_sde_gpu": "DPM++ 2M SDE",
    "dpmpp_3m_sde": "DPM++ 3M SDE", "dpmpp_3m_sde_gpu": "DPM++ 3M SDE",
    "ddim": "DDIM", "uni_pc": "UniPC", "lcm": "LCM",
}
COMFY_SCHEDULERS = {
    "normal": "Normal", "karras": "Karras", "exponential": "Exponential", "sgm_uniform": "SGM Uniform",
    "simple": "Simple", "ddim_uniform": "DDIM", "beta": "Beta", "kl_optimal": "KL Optimal",
    "align_your_steps": "Align Your Steps",
}
# InvokeAI 3+ scheduler names; a `_k` suffix means Karras sigmas.
INVOKE_SAMPLERS = {
    "ddim": "DDIM", "lms": "LMS", "heun": "Heun", "euler": "Euler", "euler_a": "Euler a",
    "kdpm_2": "DPM2", "kdpm_2_a": "DPM2 a", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_sde": "DPM++ SDE", "unipc": "UniPC", "lcm": "LCM",
}
# The `k_*` names of InvokeAI 2 and NovelAI (k-diffusion function names).
K_SAMPLERS = {
    **A1111_SAMPLER_ALIASES,
    "k_dpmpp_2": "DPM++ 2M", "k_dpmpp_2_a": "DPM++ 2S a", "k_dpmpp_2s_ancestral": "DPM++ 2S a",
    "k_dpm_2_ancestral": "DPM2 a",
}
NOVELAI_SCHEDULES = {"karras": "Karras", "exponential": "Exponential", "polyexponential": "Polyexponential"}


def from_comfy(sampler: str | None, scheduler: str | None) -> dict[str, str]:
    """Recipe fields for a ComfyUI/Fooocus sampler + scheduler pair (old graphs say `sample_dpmpp_2m`)."""
    fields: dict[str, str] = {}
    if sampler is not None:
        name = COMFY_SAMPLERS.get(sampler.removeprefix("sample_"))
        if name:
            fields["sampler_name"] = name
    if scheduler is not None and scheduler in COMFY_SCHEDULERS:
        fields["scheduler"] = COMFY_SCHEDULERS[scheduler]
    return fields


def from_invoke(name: str | None) -> dict[str, str]:
    """Recipe fields for an InvokeAI scheduler name, 3.x (`dpmpp_2m_k`) or 2.x (`k_lms`)."""
    if name is None:
        return {}
    if name in K_SAMPLERS:
        return {"sampler_name": K_SAMPLERS[name]}
    karras = name.endswith("_k")
    sampler = INVOKE_SAMPLERS.get(name.removesuffix("_k") if karras else name)
    if sampler is None:
        return {}
    return {"sampler_name": sampler, "scheduler": "Karras"} if karras else {"sampler_name": sampler}


def from_k_name(name: str | None) -> dict[str, str]:
    sampler = K_SAMPLERS.get(name or "")
    return {"sampler_name": sampler} if sampler else {}
