"""OpenVINO benchmark: the networks of the OpenVINO backend (engine/openvino.py) against torch, same process.

Figures, on full-size random-weight networks built from the shipped configs (nothing downloaded):
1. SD-Turbo-class: the SD2.1 UNet, 1 step, 512², no CFG (batch 1), then TAESD decode: torch bf16 against
   OpenVINO bf16 (the backend's own conversion, cache and compile code), with the ratio.
2. SD1.5 UNet step at 512² with CFG (batch 2): torch bf16 against OpenVINO bf16, with the ratio.
OpenVINO computes in bf16 where the CPU has native bf16 (`cpu_has_bf16`), else f32 (printed). The one-off
costs (conversion, compile) are printed apart from the steady-state times (best of `--repeats`).

    python benchmarks/openvino.py              # about 10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from machine import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

# This file's name would shadow the openvino package: import the package, not this script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "src" / "localdiffusion" / "models" / "configs"
SPREAD: list[float] = []  # slowest / fastest repeat of each timing: how much the machine's load disturbed it


def best_of(repeats: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    SPREAD.append(max(times) / min(times))
    return min(times)


def timed(run: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import openvino
    from diffusers import AutoencoderTiny, UNet2DConditionModel

    from localdiffusion.engine.device import cpu_has_bf16
    from localdiffusion.engine.openvino import Network, Runtime, _Decoder, _UNet

    torch.set_num_threads(os.cpu_count() or 1)
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores, Python {platform.python_version()}, torch {torch.__version__}, "
          f"openvino {openvino.__version__}; native bf16 {cpu_has_bf16()}; load average {os.getloadavg()[0]:.1f}")
    bf16 = torch.bfloat16
    runtime = Runtime(Path(tempfile.mkdtemp(prefix="ov-bench-")), "CPU", bf16)
    print(f"OpenVINO device {runtime.device}, precision {runtime.precision}; repeats {args.repeats} (best of)\n")
    rows: list[tuple[str, float]] = []

    def unet_case(family: str, batch: int, width: int) -> tuple[float, float, torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIGS / family / "unet")).eval().to(bf16)
        x, t, hidden = torch.randn(batch, 4, 64, 64), torch.full((batch,), 999.0), torch.randn(batch, 77, width)
        with torch.no_grad():
            run_torch = lambda: unet(x.to(bf16), t, encoder_hidden_states=hidden.to(bf16), return_dict=False)[0]  # noqa: E731
            run_torch()  # warm
            torch_s = best_of(args.repeats, run_torch)
            ours = run_torch().float()
            example = {"sample": x, "timestep": t, "hidden": hidden}
            dynamic = {"sample": [-1, 4, 64, 64], "timestep": [-1], "hidden": [-1, -1, width]}
            convert_s, model = timed(lambda: runtime.network({"part": "unet", "model": family}, _UNet(unet), example, dynamic))
        network = Network(runtime, model)
        compile_s, _ = timed(lambda: network(x, t, hidden))
        ov_s = best_of(args.repeats, lambda: network(x, t, hidden))
        theirs = network(x, t, hidden)
        print(f"{family} UNet batch {batch}: conversion {convert_s:.0f} s, first call (compile) {compile_s:.0f} s")
        del unet, model, network
        return torch_s, ov_s, ours, theirs

    def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / a.norm())

    # 1. SD-Turbo-class: SD2.1 UNet, batch 1, no CFG, 1 step; TAESD decode
    torch_unet, ov_unet, a, b = unet_case("sd2-v", 1, 1024)
    print(f"  OpenVINO vs torch bf16 prediction: relative error {relative_error(a, b):.4f}")
    taesd = AutoencoderTiny().eval().to(bf16)  # TAESD's own size
    latent = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        run_taesd = lambda: taesd.decode(latent.to(bf16), return_dict=False)[0]  # noqa: E731
        run_taesd()
        torch_taesd = best_of(args.repeats, run_taesd)
        model = runtime.network({"part": "taesd_decoder"}, _Decoder(taesd, 1.0), {"latents": latent}, {"latents": [-1, 4, 64, 64]})
    decoder = Network(runtime, model)
    decoder(latent)
    ov_taesd = best_of(args.repeats, lambda: decoder(latent))
    rows += [("turbo-512 UNet step (SD2.1, no CFG) torch bf16", torch_unet), ("turbo-512 UNet step OpenVINO bf16", ov_unet),
             ("TAESD decode 512² torch bf16", torch_taesd), ("TAESD decode 512² OpenVINO bf16", ov_taesd),
             ("turbo-512 UNet + TAESD torch bf16", torch_unet + torch_taesd),
             ("turbo-512 UNet + TAESD OpenVINO bf16", ov_unet + ov_taesd)]

    # 2. SD1.5 UNet step with CFG (batch 2)
    torch_sd1, ov_sd1, a, b = unet_case("sd1", 2, 768)
    print(f"  OpenVINO vs torch bf16 prediction: relative error {relative_error(a, b):.4f}\n")
    rows += [("SD1.5 UNet step 512² CFG torch bf16", torch_sd1), ("SD1.5 UNet step 512² CFG OpenVINO bf16", ov_sd1)]

    for name, seconds in rows:
        print(f"{name:48s} {seconds:7.2f} s")
    print()
    print(f"turbo-512 (UNet + TAESD) OpenVINO vs torch bf16: {(torch_unet + torch_taesd) / (ov_unet + ov_taesd):.2f}x faster")
    print(f"SD1.5 UNet step with CFG OpenVINO vs torch bf16: {torch_sd1 / ov_sd1:.2f}x faster")
    print(f"load average at the end {os.getloadavg()[0]:.1f}; slowest/fastest repeat up to {max(SPREAD):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
