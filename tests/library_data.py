"""Small library fixtures the tests write: a DiffusionDB-shaped parquet, style files, a wildcard folder, a folder
of pictures with metadata, a recorded Civitai answer."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

DIFFUSIONDB_ROWS = [
    # prompt, sampler code, cfg, steps, width, height, image_nsfw, prompt_nsfw
    ("a photo of a cat sleeping on a sofa, soft light", 8, 7.0, 50, 512, 512, 0.05, 0.0),
    ("a medieval castle on a mountain at sunset, matte painting", 4, 9.0, 30, 512, 768, 0.0, 0.1),
    ("portrait of an old fisherman with a beard, oil painting", 1, 7.5, 40, 512, 512, 0.1, 0.02),
    ("a red sports car racing on a highway, motion blur", 3, 7.0, 25, 768, 512, 0.0, 0.0),
    ("a risque figure study", 4, 7.0, 50, 512, 512, 0.93, 0.7),
]

# A1111's own writer (utf-8-sig, excel dialect, minimal quoting), for a style with a comma and one with a quote.
A1111_STYLES_CSV = ('\ufeffname,prompt,negative_prompt\r\n'
                    'Cinematic,"{prompt}, cinematic still, film grain","cartoon, drawing"\r\n'
                    'Watercolour,"watercolour painting of {prompt}, ""wet"" edges",\r\n'
                    'Plain,sharp focus,\r\n').encode("utf-8")

CIVITAI_RESPONSE = {
    "items": [
        {"id": 1001, "url": "https://image.civitai.com/x/1001.jpeg", "width": 832, "height": 1216, "nsfwLevel": "None",
         "meta": {"prompt": "a lighthouse on a cliff in a storm, dramatic clouds", "negativePrompt": "blurry",
                  "seed": 42, "steps": 28, "cfgScale": 6.5, "sampler": "DPM++ 2M Karras", "Size": "832x1216",
                  "Model": "juggernautXL"}},
        {"id": 1002, "url": "https://image.civitai.com/x/1002.jpeg", "nsfwLevel": "X",
         "meta": {"prompt": "something explicit", "steps": 20}},
        {"id": 1003, "url": "https://image.civitai.com/x/1003.jpeg", "meta": None},
        {"id": 1004, "meta": {"prompt": "a bowl of ramen, food photography"}},
    ],
    "metadata": {"nextCursor": "abc"},
}


def write_diffusiondb(path: Path, rows=DIFFUSIONDB_ROWS, *, bad_cfg_row: int | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cfg = [r[2] for r in rows]
    if bad_cfg_row is not None:
        cfg = [str(c) for c in cfg]
        cfg[bad_cfg_row - 1] = "seven"
    table = pa.table({
        "image_name": [f"{i:04d}.png" for i in range(len(rows))], "prompt": [r[0] for r in rows],
        "part_id": pa.array([1 + i // 3 for i in range(len(rows))], pa.uint16()),
        "seed": pa.array([1000 + i for i in range(len(rows))], pa.uint32()),
        "step": pa.array([r[3] for r in rows], pa.uint16()), "cfg": cfg,
        "sampler": pa.array([r[1] for r in rows], pa.uint8()),
        "width": pa.array([r[4] for r in rows], pa.uint16()), "height": pa.array([r[5] for r in rows], pa.uint16()),
        "user_name": ["someone"] * len(rows), "timestamp": [datetime.datetime(2022, 8, 10)] * len(rows),
        "image_nsfw": pa.array([r[6] for r in rows], pa.float32()), "prompt_nsfw": pa.array([r[7] for r in rows], pa.float32()),
    })
    pq.write_table(table, path)
    return path


def write_fooocus(path: Path) -> Path:
    path.write_text(json.dumps([
        {"name": "Fooocus Sharp", "prompt": "{prompt}, cinematic, sharp focus, detailed", "negative_prompt": "blurry"},
        {"name": "sai-origami", "prompt": "origami style {prompt} . paper art, folded", "negative_prompt": "noisy, messy"},
    ], indent=4), encoding="utf-8")
    return path


def write_wildcards(folder: Path) -> Path:
    (folder / "animals").mkdir(parents=True)
    (folder / "colours.txt").write_text("crimson\nteal\n# a comment\n\nochre\n", encoding="utf-8")
    (folder / "animals" / "birds.txt").write_text("a heron standing in a misty lake\na robin on a branch\n", encoding="utf-8")
    return folder


def a1111_png(path: Path, prompt: str, negative: str = "", settings: str = "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 64x64") -> Path:
    info = PngInfo()
    text = prompt + (f"\nNegative prompt: {negative}" if negative else "") + "\n" + settings
    info.add_text("parameters", text)
    Image.new("RGB", (64, 64), (120, 80, 40)).save(path, pnginfo=info)
    return path


def write_image_folder(folder: Path, fixtures: Path | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    a1111_png(folder / "dune.png", "sand dunes under a starry night sky", "people",
              "Steps: 24, Sampler: DPM++ 2M, CFG scale: 6, Seed: 77, Size: 64x64, Model: dreamy")
    Image.new("RGB", (32, 32)).save(folder / "no-metadata.png")
    if fixtures is not None and fixtures.is_dir():
        for name in ("AUTOMATIC1111__automatic1111_cropped.png", "Fooocus__fooocus1_cropped.png",
                     "InvokeAI__invokeai_imeta1.png"):
            if (fixtures / name).is_file():
                shutil.copy(fixtures / name, folder / name)
    return folder
