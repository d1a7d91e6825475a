"""Flavours benchmark: peak memory of one SD3.5 or FLUX generation at full size, per memory mode.

Builds the full-size architecture from the shipped configs (`models/configs/sd3`: SD3.5 Large, `flux`: FLUX.1
dev; `--schnell` drops FLUX's guidance embedder) with random weights (no download; the picture is noise,
the memory is real), writes it as a diffusers folder once under `--work`, then runs one 1024x1024 generation
per mode, each in its own subprocess, through the engine:

- `bf16`: everything on the device in bf16;
- `offload`: bf16 with model CPU offload (only the running component on the GPU; CUDA only);
- `fp8`: the transformer stored in fp8 (settings.json `fp8_weights`), computed in bf16;
- `fp8+offload`: both (the 16 GB GPU set-up for FLUX).

It prints, per mode: peak GPU memory (torch.cuda.max_memory_allocated) or, on a CPU, the process's peak RSS
(/proc), load and generation seconds. FLUX needs about 70 GB of disk and 32+ GB of RAM to build; it is not
run by the tests (they never load full-size models).

    python benchmarks/flavours.py --family flux --schnell --steps 4 --modes bf16 fp8+offload
    python benchmarks/flavours.py --family sd3 --steps 2 --size 512 --device cpu --modes bf16 fp8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

MODES = ("bf16", "offload", "fp8", "fp8+offload")


def build(family: str, schnell: bool, folder: Path) -> Path:
    """A full-size random-weight diffusers folder of the family (written once)."""
    if (folder / "model_index.json").exists():
        return folder
    import diffusers
    import torch
    import transformers

    from localdiffusion.models.flow import SCHNELL_SCHEDULER
    from localdiffusion.models.single_file import write_standard_folder

    configs_folder = write_standard_folder(family, Path(tempfile.mkdtemp()) / family)
    index = json.loads((configs_folder / "model_index.json").read_text())
    components = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[1] is None:
            continue
        library, cls = entry
        sub = configs_folder / name
        if name.startswith("tokenizer"):
            components[name] = _tokenizer(cls, sub, folder)
            continue
        module = getattr(diffusers if library == "diffusers" else transformers, cls)
        if name == "scheduler":
            config = json.loads((sub / "scheduler_config.json").read_text())
            if schnell:
                config.update(SCHNELL_SCHEDULER)
            components[name] = module.from_config(config)
            continue
        config = json.loads((sub / "config.json").read_text())
        if name == "transformer" and schnell:
            config["guidance_embeds"] = False
        if library == "diffusers":
            model = module.from_config(config)
        else:
            config_class = transformers.T5Config if cls.startswith("T5") else transformers.CLIPTextConfig
            model = module(config_class(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")}))
        components[name] = model.to(torch.bfloat16)
    pipe = getattr(diffusers, index["_class_name"])(**components)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def _tokenizer(cls: str, sub: Path, folder: Path):
    """CLIP's tokenizer is built offline (write_standard_folder wrote it); T5's needs a tokenizer.json: a tiny
    stand-in (the prompt's token count, not its meaning, matters for memory)."""
    from transformers import CLIPTokenizer

    if cls == "CLIPTokenizer":
        return CLIPTokenizer.from_pretrained(str(sub))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from factories import build_t5_tokenizer

    return build_t5_tokenizer(folder.parent / "t5-tokenizer")


def run_mode(folder: Path, mode: str, steps: int, size: int, device: str) -> dict:
    """One generation in this process; returns the measures."""
    import torch

    from localdiffusion.engine import Engine, EngineOptions
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.recipe import Recipe
    from localdiffusion.store.db import Database
    from localdiffusion.store.home import Home

    home = Home(Path(tempfile.mkdtemp()) / "home").ensure()
    (home.model_dir("checkpoint") / folder.name).symlink_to(folder, target_is_directory=True)
    home.settings_path.write_text(json.dumps({"fp8_weights": "fp8" in mode}))
    engine = Engine(ModelLibrary(home, Database(home.db_path)),
                    EngineOptions(device=device, dtype="bfloat16", cpu_offload="offload" in mode, previews=False))
    recipe = Recipe(prompt="a lighthouse on a cliff at dawn", seed=1, steps=steps, width=size, height=size, model=folder.name)
    started = time.perf_counter()
    result = engine.generate(recipe)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else _peak_rss()
    return {"mode": mode, "peak_gib": round(peak / 2**30, 2), "load_s": round(result.timings["load"], 1),
            "generate_s": round(result.timings["generate"], 1), "total_s": round(time.perf_counter() - started, 1)}


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=("sd3", "flux"), default="flux")
    parser.add_argument("--schnell", action="store_true")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "localdiffusion-flavours")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one mode in this process
    args = parser.parse_args()
    name = f"{args.family}{'-schnell' if args.schnell else ''}-random"
    folder = args.work / name
    if args.one:
        print(json.dumps(run_mode(folder, args.one, args.steps, args.size, args.device)))
        return
    build(args.family, args.schnell, folder)
    for mode in args.modes:
        if "offload" in mode and args.device != "cuda":
            print(json.dumps({"mode": mode, "skipped": "model CPU offload needs a CUDA GPU"}))
            continue
        out = subprocess.run([sys.executable, __file__, "--family", args.family, *(["--schnell"] if args.schnell else []),
                              "--steps", str(args.steps), "--size", str(args.size), "--device", args.device,
                              "--work", str(args.work), "--one", mode], capture_output=True, text=True)
        print(out.stdout.strip().splitlines()[-1] if out.returncode == 0 else json.dumps({"mode": mode, "error": out.stderr[-400:]}))


if __name__ == "__main__":
    main()
