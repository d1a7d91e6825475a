"""How much the class's jobs used the machine: GPU-seconds per device, and energy.

Energy is the power draw times the time a job held the device. The power comes from the GPU's own reading
where one can be read (NVIDIA's management library, `pynvml`, only if it is installed: nothing is installed
for it), else from a nominal figure per kind of device (`NOMINAL_WATTS`), and every answer says which one it
used: a nominal figure is an estimate, and labelled so."""

from __future__ import annotations

import re
from typing import Any

# Nominal power per kind of device, in watts, while it works on a job. Rough figures, chosen on purpose to be
# round and documented: a discrete desktop/workstation GPU under a diffusion load (250 W), an Apple GPU (M-series
# SoC, 30 W), an Intel GPU (150 W), a desktop CPU package's TDP (65 W).
NOMINAL_WATTS = {"cuda": 250.0, "mps": 30.0, "xpu": 150.0, "cpu": 65.0}
NOMINAL_NOTE = ("Estimate: a nominal {watts:.0f} W for a {kind} device (not measured), times the seconds each job held it.")
MEASURED_NOTE = "From the GPU's reported power draw now ({watts:.0f} W), times the seconds each job held it."


def device_kind(device: str | None) -> str:
    """'cuda:0 (NVIDIA H100)' -> 'cuda'; 'cpu' -> 'cpu'; unknown or missing -> 'cpu'."""
    match = re.match(r"[a-z]+", (device or "").strip().lower())
    return match.group(0) if match and match.group(0) in NOMINAL_WATTS else "cpu"


def measured_watts(device: str | None) -> float | None:
    """The power the GPU reports drawing now, in watts; None where it cannot be read (no pynvml, not an NVIDIA GPU)."""
    match = re.match(r"cuda:(\d+)", (device or "").strip().lower())
    if not match:
        return None
    try:
        import pynvml  # optional: only when someone installed it
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetPowerUsage(pynvml.nvmlDeviceGetHandleByIndex(int(match.group(1)))) / 1000.0
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # pynvml raises its own NVMLError kinds (no driver, not supported): then there is no reading
        return None


def power(device: str | None, measure: bool = True) -> dict[str, Any]:
    """{"watts", "measured", "note"} for a device name as jobs record it."""
    watts = measured_watts(device) if measure else None
    if watts is not None:
        return {"watts": round(watts, 1), "measured": True, "note": MEASURED_NOTE.format(watts=watts)}
    kind = device_kind(device)
    return {"watts": NOMINAL_WATTS[kind], "measured": False, "note": NOMINAL_NOTE.format(watts=NOMINAL_WATTS[kind], kind=kind)}


def energy_wh(gpu_seconds: float | None, watts: float) -> float | None:
    return None if gpu_seconds is None else round(gpu_seconds * watts / 3600.0, 3)


def job_usage(device: str | None, gpu_seconds: float | None) -> dict[str, Any] | None:
    """A finished job's usage for its card: the device, its GPU-seconds, and an energy estimate (nominal
    power: a reading now says nothing about a job that ran earlier)."""
    if gpu_seconds is None:
        return None
    nominal = power(device, measure=False)
    return {"device": device, "gpu_seconds": round(gpu_seconds, 2), "energy_wh": energy_wh(gpu_seconds, nominal["watts"]),
            "watts": nominal["watts"], "estimate": True, "note": nominal["note"]}
