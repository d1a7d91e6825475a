"""Pick where and in what precision to run: CUDA, then MPS, then the CPU; bf16 on a CUDA GPU that supports it
(else fp16), fp16 on MPS, bf16 on a CPU with native bf16 instructions (AVX512-BF16 or AMX on x86, FEAT_BF16 on
Apple silicon), fp32 on other CPUs. `tune_device` sets the CUDA switches (TF32 for fp32 work) once a device and
precision are chosen, and `use_channels_last` says whether the UNet runs in channels-last memory format."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from localdiffusion.errors import BadInput, one_of

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(name: str | None = None) -> torch.device:
    if name:
        try:
            return torch.device(name)
        except RuntimeError:
            raise BadInput(f"Unknown device '{name}'; use 'cuda', 'cuda:N', 'mps' or 'cpu'.") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, name: str | None = None, where: str = "") -> torch.dtype:
    """The precision asked for (`name`; `where` says where it was asked, for the error), else the device's
    default: bf16 on a CUDA GPU that supports it, else fp16 on a GPU, bf16 on a CPU that computes it natively
    (`cpu_has_bf16`), else fp32."""
    if name:
        if name not in DTYPES:
            raise BadInput(f"Unknown precision '{name}'{where}; use {one_of(list(DTYPES))}.", field="dtype")
        return DTYPES[name]
    if device.type == "cuda":
        return cuda_default_dtype(cuda_bf16_supported())
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def cuda_default_dtype(bf16_supported: bool) -> torch.dtype:
    """A CUDA GPU's default precision: bf16 where the GPU computes it (Ampere and later: the range of fp32, so no
    overflow to NaN), else fp16."""
    return torch.bfloat16 if bf16_supported else torch.float16


def cuda_bf16_supported() -> bool:
    try:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    except (AssertionError, RuntimeError):
        return False


def use_channels_last(device: torch.device) -> bool:
    """Whether the UNet runs in channels-last memory format: on CUDA (cuDNN's convolutions are faster in NHWC
    under fp16/bf16 tensor cores); not on the CPU or MPS, where it was not faster and can be slower."""
    return device.type == "cuda"


def tf32_for(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether fp32 matrix products may use TF32 tensor cores: fp32 work on CUDA (a 10-bit mantissa inside the
    products, as PyTorch's convolutions already do by default; about 3-8x faster on Ampere and later)."""
    return device.type == "cuda" and dtype == torch.float32


def tune_device(device: torch.device, dtype: torch.dtype) -> None:
    """Set the process-wide switches for work on `device` in `dtype`: TF32 matrix products for fp32 on CUDA."""
    if tf32_for(device, dtype):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


# x86 flags (Linux /proc/cpuinfo) that mean bf16 arithmetic in hardware: AVX512-BF16 (Cooper Lake, Zen 4 and
# later) or AMX (Sapphire Rapids and later). Without them torch emulates bf16 and it is slower than fp32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def bf16_in_cpuinfo(text: str) -> bool:
    """Whether /proc/cpuinfo's text lists a bf16 instruction set in a `flags` (x86) or `Features` (ARM) line."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            words = set(value.split())
            if words & set(BF16_FLAGS) or "bf16" in words:  # ARM Linux lists 'bf16' among the Features
                return True
    return False


# Set to 0 or 1 to tell the detector the answer (a virtual machine may hide the flags; the tests set 0 so that
# every engine they start, also in a child process, computes in fp32 and their exact images stay exact).
BF16_ENV = "LOCALDIFFUSION_CPU_BF16"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively: `LOCALDIFFUSION_CPU_BF16` when set, else what the system
    reports (`detect_cpu_bf16`)."""
    told = os.environ.get(BF16_ENV, "").strip().lower()
    if told in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        return told in ("1", "true", "yes", "on")
    return detect_cpu_bf16()


@functools.cache
def detect_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively, read from what the system reports (never guessed from a
    model name): /proc/cpuinfo on Linux, `sysctl hw.optional.arm.FEAT_BF16` on macOS, else torch's CPU
    capability where it names bf16."""
    cpuinfo = Path("/proc/cpuinfo")
    if sys.platform.startswith("linux") and cpuinfo.is_file():
        try:
            return bf16_in_cpuinfo(cpuinfo.read_text(errors="replace"))
        except OSError:
            pass
    if sys.platform == "darwin" and platform.machine() == "arm64":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=5)
            return out.stdout.strip() == "1"
        except (OSError, subprocess.SubprocessError):
            return False
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return False
    return "BF16" in capability.upper() or "AMX" in capability.upper()


def memory_budget(device: torch.device, budget_gb: float) -> int:
    """Bytes of loaded pipelines to keep: the setting, or about half of the device's memory."""
    if budget_gb > 0:
        return int(budget_gb * 2**30)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 2
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 3
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def device_name(device: torch.device) -> str:
    """The device as a person names it: 'cuda:0 (NVIDIA H100 80GB HBM3)', 'mps', 'cpu'."""
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)
