"""LoRA training speed and memory: our training step (train/loop.py through LoraTrainer's parts) beside the same
step written plainly with diffusers + peft, on the full-size SD1.5 UNet with random weights (built here from the
shipped configs; nothing is downloaded), rank 16, 512x512, batch 1.

Both paths do the same work per step: add noise to a cached latent, the UNet forward with cached text
conditioning, MSE loss, backward, gradient clipping, AdamW. Ours also draws its batch from a seeded generator,
weights the loss by min-SNR and keeps its loss history. The overhead goal is at most 5%.

Each path runs `--steps` steps; the first is a warm-up and not counted; the figure is the median of the rest.
Memory: on CUDA the peak allocated for each path (reset between them); on a CPU the process's resident peak so far
(ours runs first, so the plain figure includes ours' high-water mark: read it as an upper bound).

    python benchmarks/train.py --steps 3            # a CPU: about 4 minutes on 2 busy cores
    python benchmarks/train.py --steps 20           # a GPU
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def build_pipe(device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from localdiffusion.models.single_file import write_standard_folder

    configs = write_standard_folder("sd1", Path(tempfile.mkdtemp()) / "sd1-configs")
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet")),
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(configs / "tokenizer"),
        scheduler=DDPMScheduler.from_config(DDPMScheduler.load_config(configs / "scheduler")),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.to(device, dtype)
    pipe.vae.to(torch.float32)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False)
    return pipe


def memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def ours(device: torch.device, steps: int, work: Path) -> tuple[list[float], float]:
    from PIL import Image

    from localdiffusion.models.info import ModelInfo
    from localdiffusion.train.base import TrainBase
    from localdiffusion.train.dataset import load_dataset
    from localdiffusion.train.lora import LoraTrainee
    from localdiffusion.train.loop import Training
    from localdiffusion.train.settings import TrainSettings

    autocast = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if device.type == "cuda" else None
    pipe = build_pipe(device, autocast or torch.float32)
    for i in range(2):
        Image.effect_noise((512, 512), 64).convert("RGB").save(work / f"p{i}.png")
    info = ModelInfo(name="sd15-random", path=work, kind="checkpoint", family="sd1", format="diffusers", sha256="0" * 64)
    base = TrainBase(info, pipe, "sd1", device, autocast or torch.float32, autocast, "epsilon", pipe.scheduler)
    settings = TrainSettings(steps=steps, rank=16, resolution=512, save_every=10**5)
    training = Training(base, load_dataset(work, "x", 512), settings, "lora", LoraTrainee(base, settings),
                        work / "run", weight_decay=1e-2)
    training.latents()
    reset_memory(device)
    stamps = [time.perf_counter()]
    training.run(on_progress=lambda p: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])], memory(device)


def plain(device: torch.device, steps: int) -> tuple[list[float], float]:
    """The same step as diffusers' train_text_to_image_lora.py writes it."""
    from peft import LoraConfig

    autocast = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if device.type == "cuda" else None
    pipe = build_pipe(device, autocast or torch.float32)
    unet, scheduler = pipe.unet, pipe.scheduler
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    if device.type == "cuda":
        unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    with torch.no_grad():
        ids = pipe.tokenizer(["x"], padding="max_length", max_length=77, return_tensors="pt").input_ids.to(device)
        hidden = pipe.text_encoder(ids)[0]
        latents = pipe.vae.encode(torch.zeros(1, 3, 512, 512, device=device)).latent_dist.mean * 0.18215
    unet.train()
    reset_memory(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (1,), device=device)
        with torch.autocast(device.type, dtype=autocast) if autocast else torch.autocast("cpu", enabled=False):
            pred = unet(scheduler.add_noise(latents, noise, t).to(unet.dtype), t, hidden).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times, memory(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="steps per path; the first is a warm-up")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; SD1.5 UNet LoRA rank 16, 512x512, batch 1, {args.steps} steps each")
    with tempfile.TemporaryDirectory() as tmp:
        our_times, our_mem = ours(device, args.steps, Path(tmp))
    gc.collect()
    plain_times, plain_mem = plain(device, args.steps)
    a, b = statistics.median(our_times[1:]), statistics.median(plain_times[1:])
    unit = "GiB peak allocated" if device.type == "cuda" else "GiB resident peak so far"
    print(f"ours:  {a:.3f} s/step ({1 / a:.2f} steps/s), {our_mem:.2f} {unit}; steps {[round(x, 2) for x in our_times]}")
    print(f"plain: {b:.3f} s/step ({1 / b:.2f} steps/s), {plain_mem:.2f} {unit}; steps {[round(x, 2) for x in plain_times]}")
    print(f"overhead: {100 * (a / b - 1):+.1f}% (goal: at most +5%)")


if __name__ == "__main__":
    main()
