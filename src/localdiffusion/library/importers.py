"""Importers: each reads one kind of file as a stream and hands `Entry`s to an `EntryWriter`.

A large file never sits in memory: parquet is read a batch of rows at a time (pyarrow `iter_batches`), CSV and
text a line at a time, a folder a file at a time. A malformed file stops the import with one sentence naming the
file and the line, row or item. Importing the same file again adds nothing (entries carry a content hash).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from localdiffusion.errors import BadInput
from localdiffusion.library.entries import Entry, Progress, clean_settings
from localdiffusion.library.styles import Style, read_csv_styles, read_json_styles

KINDS = ("diffusiondb", "styles", "fooocus", "prompts", "wildcards", "images", "civitai", "gallery")
DIFFUSIONDB_COLUMNS = ("image_name", "prompt", "part_id", "seed", "step", "cfg", "sampler", "width", "height",
                       "user_name", "timestamp", "image_nsfw", "prompt_nsfw")
# DiffusionDB's sampler codes, as its loading script (diffusiondb.py, _SAMPLER_DICT) names them, to A1111's names.
DIFFUSIONDB_SAMPLERS = {1: "DDIM", 2: "PLMS", 3: "Euler", 4: "Euler a", 5: "Heun", 6: "DPM2", 7: "DPM2 a", 8: "LMS"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
PARQUET_BATCH = 8192


@dataclass(frozen=True)
class SourceInfo:
    name: str
    address: str = ""
    licence: str = ""
    attribution: str = ""


DEFAULT_SOURCES = {
    "diffusiondb": SourceInfo("DiffusionDB", "https://poloclub.github.io/diffusiondb/", "CC0 1.0",
                              "Wang et al., DiffusionDB: A Large-scale Prompt Gallery Dataset (2022)"),
    "civitai": SourceInfo("Civitai", "https://civitai.com/", "Civitai terms of service; each image belongs to its creator"),
    "gallery": SourceInfo("My gallery", "", "yours"),
}


def guess_kind(path: Path) -> str:
    """The importer for a file or folder, from its name and first bytes."""
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
            return "images"
        if any(p.suffix.lower() == ".txt" for p in files):
            return "wildcards"
        raise BadInput(f"The folder {path} holds neither images nor wildcard .txt files; say which --kind it is.", field="kind")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "diffusiondb" if {"image_name", "cfg", "sampler"} <= set(_parquet_columns(path)) else "prompts"
    if suffix == ".csv":
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            header = next(csv.reader(f), [])
        return "styles" if "name" in header and ({"prompt", "text"} & set(header)) else "prompts"
    if suffix == ".json":
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            head = f.read(4096).lstrip()
        return "fooocus" if head.startswith("[") else "civitai"
    if suffix == ".txt":
        return "prompts"
    raise BadInput(f"Cannot tell what {path.name} holds from its name; say which --kind it is (one of {', '.join(KINDS)}).", field="kind")


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).schema_arrow.names
    except Exception as e:  # pyarrow raises several kinds for a file that is not parquet
        raise BadInput(f"{path.name} is not a readable parquet file ({e}).") from None


# -- DiffusionDB ---------------------------------------------------------------------------------


def _number(value: Any, column: str, row: int, path: Path) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise BadInput(f"{path.name}, row {row}: the column '{column}' holds {str(value)[:40]!r}, not a number.") from None
    return value if math.isfinite(value) else None  # NaN: a missing value, as pandas writes one


def read_diffusiondb(path: Path, progress: Progress | None = None) -> Iterator[Entry]:
    import pyarrow.parquet as pq

    names = _parquet_columns(path)
    missing = [c for c in ("prompt", "seed", "step", "cfg", "sampler", "width", "height") if c not in names]
    if missing:
        raise BadInput(f"{path.name} lacks DiffusionDB's columns {', '.join(missing)} (it has {', '.join(names)}).")
    columns = [c for c in DIFFUSIONDB_COLUMNS if c in names]
    parquet = pq.ParquetFile(path)
    total, row = parquet.metadata.num_rows, 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH, columns=columns):
        data = batch.to_pydict()
        n = batch.num_rows
        get = lambda c: data.get(c) or [None] * n  # noqa: E731
        for i, (name, prompt, part, seed, step, cfg, sampler, width, height, insfw, pnsfw) in enumerate(zip(
                get("image_name"), data["prompt"], get("part_id"), data["seed"], data["step"], data["cfg"],
                data["sampler"], data["width"], data["height"], get("image_nsfw"), get("prompt_nsfw"))):
            r = row + i + 1
            if prompt is not None and not isinstance(prompt, str):
                raise BadInput(f"{path.name}, row {r}: the column 'prompt' holds {prompt!r}, not text.")
            if not prompt:
                continue
            code = _number(sampler, "sampler", r, path)
            settings = {"seed": _int(_number(seed, "seed", r, path)), "steps": _int(_number(step, "step", r, path)),
                        "cfg_scale": _round(_number(cfg, "cfg", r, path)),
                        "sampler_name": DIFFUSIONDB_SAMPLERS.get(int(code)) if code is not None else None,
                        "width": _int(_number(width, "width", r, path)), "height": _int(_number(height, "height", r, path))}
            scores = [_number(v, c, r, path) for v, c in ((insfw, "image_nsfw"), (pnsfw, "prompt_nsfw"))]
            part = _int(_number(part, "part_id", r, path))
            url = (f"https://huggingface.co/datasets/poloclub/diffusiondb/resolve/main/images/part-{part:06d}/{name}"
                   if name and part is not None else None)
            yield Entry(prompt, settings=clean_settings(settings), external_id=name, url=url,
                        nsfw=max([s for s in scores if s is not None] or [0.0]), model="Stable Diffusion 1.x")
        row += n
        if progress:
            progress(row, total)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


# -- plain prompt lists ----------------------------------------------------------------------------


def read_prompts(path: Path, column: str | None = None, progress: Progress | None = None) -> Iterator[Entry]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _prompts_parquet(path, column or "prompt", progress)
    elif suffix == ".csv":
        yield from _prompts_csv(path, column or "prompt", progress)
    else:
        yield from _prompts_txt(path, progress)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise BadInput(f"{path.name}, line {number}: this line is not UTF-8 text; save the file as UTF-8.") from None


def _prompts_txt(path: Path, progress: Progress | None) -> Iterator[Entry]:
    for number, line in _lines(path):
        text = line.strip()
        if text and not text.startswith("#"):
            yield Entry(text)  # the text alone: the same prompt moved to another line is not new
        if progress and number % 10000 == 0:
            progress(number, None)


def _prompts_csv(path: Path, column: str, progress: Progress | None) -> Iterator[Entry]:
    reader = csv.reader(line for _, line in _lines(path))
    header = next(reader, None) or []
    if column not in header:
        raise BadInput(f"{path.name}, line 1: there is no column '{column}' (the columns are {', '.join(header) or 'none'}); "
                       f"name the prompt column with --column.", field="column")
    at = header.index(column)
    negative = header.index("negative_prompt") if "negative_prompt" in header else None
    try:
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise BadInput(f"{path.name}, line {reader.line_num}: this row has {len(row)} fields, the header {len(header)}; "
                               f"put a text that holds a comma in double quotes.")
            yield Entry(row[at].strip(), negative_prompt=row[negative] if negative is not None else "")
            if progress and reader.line_num % 10000 == 0:
                progress(reader.line_num, None)
    except csv.Error as e:
        raise BadInput(f"{path.name}, line {reader.line_num}: {e}.") from None


def _prompts_parquet(path: Path, column: str, progress: Progress | None) -> Iterator[Entry]:
    import pyarrow.parquet as pq

    names = _parquet_columns(path)
    if column not in names:
        raise BadInput(f"{path.name} has no column '{column}' (its columns are {', '.join(names)}); name the prompt column with --column.", field="column")
    parquet = pq.ParquetFile(path)
    total, row = parquet.metadata.num_rows, 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH, columns=[column]):
        for i, value in enumerate(batch.column(0).to_pylist()):
            if value is not None and not isinstance(value, str):
                raise BadInput(f"{path.name}, row {row + i + 1}: the column '{column}' holds {value!r}, not text.")
            if value:
                yield Entry(value, external_id=f"row {row + i + 1}")
        row += batch.num_rows
        if progress:
            progress(row, total)


# -- wildcards ---------------------------------------------------------------------------------------


def read_wildcards(folder: Path, wildcards_home: Path, progress: Progress | None = None) -> Iterator[Entry]:
    """Every line of every `name.txt` (Dynamic Prompts' `__name__`; `__sub/name__` in a subfolder) as an entry, and
    the files copied to HOME/wildcards/ with the same layout, where prompts' `__name__` find them."""
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise BadInput(f"The folder {folder} holds no wildcard files (name.txt, one choice per line).")
    for count, file in enumerate(files, start=1):
        relative = file.relative_to(folder)
        name = relative.with_suffix("").as_posix()
        for number, line in _lines(file):
            text = line.strip()
            if text and not text.startswith("#"):
                yield Entry(text, external_id=f"__{name}__ line {number}")
        target = wildcards_home / relative
        if not target.exists() or target.read_bytes() != file.read_bytes():
            from localdiffusion.store.files import atomic_path

            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                shutil.copyfile(file, tmp)
        if progress:
            progress(count, len(files))


# -- images ------------------------------------------------------------------------------------------


def read_images(folder: Path, progress: Progress | None = None) -> Iterator[Entry]:
    from localdiffusion.metadata.read import read_image_metadata

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    for count, file in enumerate(files, start=1):
        try:
            meta = read_image_metadata(file)
        except Exception:  # an unreadable picture is skipped, as a gallery would skip it
            meta = None
        fields = meta.fields if meta is not None else {}
        prompt = fields.get("prompt") or ""
        if prompt:
            yield Entry(prompt, negative_prompt=fields.get("negative_prompt") or "", settings=clean_settings(fields),
                        external_id=file.relative_to(folder).as_posix(), model=meta.model_name, image=file.resolve())
        if progress:
            progress(count, len(files))


def read_gallery(db_path: Path, progress: Progress | None = None) -> Iterator[Entry]:
    """The studio's own images (every owner's that are not deleted), with their recipes' settings."""
    from localdiffusion.store.db import Database

    with Database(db_path) as db:
        rows = db.query("SELECT id, path, recipe_json, prompt FROM images WHERE deleted = 0 ORDER BY id")
    for count, (image_id, path, recipe_json, prompt) in enumerate(rows, start=1):
        try:
            recipe = json.loads(recipe_json)
        except json.JSONDecodeError:
            recipe = {}
        if prompt and Path(path).exists():
            yield Entry(prompt, negative_prompt=recipe.get("negative_prompt") or "", settings=clean_settings(recipe),
                        external_id=f"image {image_id}", model=recipe.get("model"), image=Path(path))
        if progress:
            progress(count, len(rows))


# -- Civitai -------------------------------------------------------------------------------------------

_CIVITAI_NSFW = {"none": 0.0, "soft": 0.4, "mature": 0.8, "x": 1.0}


def read_civitai(path: Path, progress: Progress | None = None) -> Iterator[Entry]:
    from localdiffusion.library.styles import read_text

    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise BadInput(f"{path.name}, line {e.lineno}: this is not valid JSON ({e.msg}).") from None
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise BadInput(f"{path.name} is not a Civitai images-API answer: it has no \"items\" list.")
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise BadInput(f"{path.name}, item {i}: each item is an object; this one is {json.dumps(item)[:60]}.")
        meta = item.get("meta") if isinstance(item.get("meta"), dict) else {}
        prompt = meta.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            continue
        size = str(meta.get("Size") or "")
        width, height = (size.split("x", 1) + [""])[:2] if "x" in size else (item.get("width"), item.get("height"))
        settings = {"seed": _safe_int(meta.get("seed")), "steps": _safe_int(meta.get("steps")),
                    "cfg_scale": _safe_float(meta.get("cfgScale")), "sampler_name": meta.get("sampler") if isinstance(meta.get("sampler"), str) else None,
                    "width": _safe_int(width), "height": _safe_int(height), "clip_skip": _safe_int(meta.get("Clip skip"))}
        level = item.get("nsfwLevel")
        nsfw = _CIVITAI_NSFW.get(str(level).lower(), 1.0 if item.get("nsfw") is True else 0.0) if level is not None else (
            1.0 if item.get("nsfw") is True else 0.0)
        page = f"https://civitai.com/images/{item['id']}" if item.get("id") is not None else item.get("url")
        yield Entry(prompt, negative_prompt=str(meta.get("negativePrompt") or ""), settings=clean_settings(settings),
                    external_id=str(item.get("id")) if item.get("id") is not None else None, url=page,
                    nsfw=nsfw, model=meta.get("Model") if isinstance(meta.get("Model"), str) else None)
        if progress:
            progress(i, len(items))


def _safe_int(value: Any) -> Optional[int]:
    number = _safe_float(value)
    return None if number is None else int(number)


def _safe_float(value: Any) -> Optional[float]:
    """A number from a field a saved answer may hold in any shape; None for anything else (text, lists, inf, NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def read_style_file(path: Path, kind: str) -> list[Style]:
    return read_csv_styles(path) if kind == "styles" else read_json_styles(path)


def _round(value: float | None) -> float | None:
    """A float32 CFG (7.300000190734863) as it was typed (7.3)."""
    return None if value is None else round(float(value), 3)
