"""The fast CPU path's two levers, each as a ratio measured in one invocation, on full-size networks with random
weights built here from the shipped SD1.5 configs (nothing is downloaded):

1. the UNet step at 512x512 with CFG (a batch of 2, 77 tokens): fp32 against bf16, the default the engine picks
   on a CPU with native bf16 (what `cpu_has_bf16()` says here is printed);
2. decoding one 512x512 latent: the full VAE (fp32, and bf16 with its difference from fp32 in PSNR) against
   TAESD (diffusers AutoencoderTiny at TAESD's size), and TAESD at the 256-pixel size of the CPU previews.

Each figure is the best of `--repeats` timed runs after a small warm-up (a tiny input: the kernels, not the
work). Random weights make the images meaningless but the compute real.

    python benchmarks/cpu_path.py               # one timed run each: about 2-3 minutes on 2 quiet cores
    python benchmarks/cpu_path.py --repeats 2   # best of two (about 6 minutes on a busy 2-core machine)
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from machine import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
CONFIGS = REPO / "src" / "localdiffusion" / "models" / "configs" / "sd1"


def best_of(repeats: int, run: Callable[[], object], warm: Callable[[], object]) -> float:
    warm()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """In dB, over pixels in [-1, 1] mapped to [0, 1]."""
    mse = (((a.float() - b.float()) / 2) ** 2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel

    from localdiffusion.engine.device import cpu_has_bf16, detect_cpu_bf16, pick_dtype

    torch.set_num_threads(os.cpu_count() or 1)
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores, Python {platform.python_version()}, torch {torch.__version__}")
    print(f"bf16 detector: native bf16 {detect_cpu_bf16()} (cpu_has_bf16() {cpu_has_bf16()}); torch CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; engine default dtype {pick_dtype(torch.device('cpu'))}")
    started = time.perf_counter()
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIGS / "unet")).eval()
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(CONFIGS / "vae")).eval()
    taesd = AutoencoderTiny().eval()  # TAESD's own size: 64 channels, 4 blocks
    print(f"built in {time.perf_counter() - started:.0f} s; repeats {args.repeats} (best of)\n")

    sample, t = torch.randn(2, 4, 64, 64), torch.tensor(999)
    hidden = torch.randn(2, 77, 768)
    small = torch.randn(2, 4, 8, 8)

    def step(model: UNet2DConditionModel, dtype: torch.dtype, x: torch.Tensor) -> Callable[[], object]:
        return lambda: model(x.to(dtype), t, encoder_hidden_states=hidden.to(dtype), return_dict=False)

    rows: list[tuple[str, float]] = []
    unet_fp32 = best_of(args.repeats, step(unet, torch.float32, sample), step(unet, torch.float32, small))
    rows.append(("UNet step 512² CFG fp32", unet_fp32))
    unet_bf16_model = unet.to(torch.bfloat16)
    unet_bf16 = best_of(args.repeats, step(unet_bf16_model, torch.bfloat16, sample), step(unet_bf16_model, torch.bfloat16, small))
    rows.append(("UNet step 512² CFG bf16", unet_bf16))
    del unet, unet_bf16_model

    latent = torch.randn(1, 4, 64, 64)
    tiny_latent = torch.randn(1, 4, 8, 8)
    scale = vae.config.scaling_factor

    def full(model: AutoencoderKL, dtype: torch.dtype, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        return lambda: model.decode(x.to(dtype) / scale, return_dict=False)[0]

    vae_fp32 = best_of(args.repeats, full(vae, torch.float32, latent), full(vae, torch.float32, tiny_latent))
    reference = full(vae, torch.float32, latent)()
    rows.append(("full VAE decode 512² fp32", vae_fp32))
    vae_bf16_model = vae.to(torch.bfloat16)
    vae_bf16 = best_of(args.repeats, full(vae_bf16_model, torch.bfloat16, latent), full(vae_bf16_model, torch.bfloat16, tiny_latent))
    bf16_psnr = psnr(full(vae_bf16_model, torch.bfloat16, latent)(), reference)
    rows.append(("full VAE decode 512² bf16", vae_bf16))
    del vae, vae_bf16_model

    def fast(model: AutoencoderTiny, dtype: torch.dtype, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        return lambda: model.decode(x.to(dtype), return_dict=False)[0]

    taesd_fp32 = best_of(args.repeats, fast(taesd, torch.float32, latent), fast(taesd, torch.float32, tiny_latent))
    rows.append(("TAESD decode 512² fp32", taesd_fp32))
    preview = best_of(args.repeats, fast(taesd, torch.float32, latent[..., :32, :32]), fast(taesd, torch.float32, tiny_latent))
    rows.append(("TAESD preview 256² fp32 (CPU previews)", preview))
    taesd_bf16_model = taesd.to(torch.bfloat16)
    taesd_bf16 = best_of(args.repeats, fast(taesd_bf16_model, torch.bfloat16, latent), fast(taesd_bf16_model, torch.bfloat16, tiny_latent))
    rows.append(("TAESD decode 512² bf16", taesd_bf16))

    width = max(len(name) for name, _ in rows)
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.2f} s")
    print()
    print(f"UNet step bf16 vs fp32:            {unet_fp32 / unet_bf16:5.2f}x faster")
    print(f"full VAE bf16 vs fp32:             {vae_fp32 / vae_bf16:5.2f}x faster, PSNR {bf16_psnr:.1f} dB against fp32 (random weights)")
    print(f"TAESD vs full VAE (fp32):          {vae_fp32 / taesd_fp32:5.1f}x faster")
    print(f"TAESD bf16 vs full VAE fp32:       {vae_fp32 / taesd_bf16:5.1f}x faster")
    print(f"TAESD 256² preview / bf16 UNet step: {preview / unet_bf16:5.1%} of a step")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
