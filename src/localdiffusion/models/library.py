"""The model library: every model the home folder, the extra roots and `models add` know about.

Models are read in place, never copied. Where a file sits only says where to look: `detect()`
reads the file and decides its kind and family. Two exceptions, because detection cannot help:
- pickled files (.ckpt/.pt/.pth/.bin) while `allow_pickle` is off: opening them could run code, so
  they are listed with the kind their folder suggests and format 'ckpt', and loading them stays
  refused until the user opts in;
- upscalers (models/ESRGAN, ComfyUI's upscale_models): `detect()` knows Stable Diffusion models
  only, so files there are listed as upscalers and their architecture is read when they load.
IP-Adapters' `image_encoder` folders are skipped: the adapters use them (`models/ip_adapter.py`).

Hashes are computed lazily (`ensure_hash`), since a full-size checkpoint takes seconds to hash; the
database caches them. For LoRAs `ModelInfo.sha256` holds A1111's LoRA hash (see `hashing.py`).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from localdiffusion.errors import BadInput, LocalDiffusionError, ModelNotFound, UnsupportedModel, closest, one_of
from localdiffusion.models.detect import Detected, detect
from localdiffusion.models.hashing import a1111_hashes, hash_target, legacy_model_hash
from localdiffusion.models.info import Kind, ModelInfo
from localdiffusion.store.db import Database
from localdiffusion.store.home import MODEL_DIRS, Home

KINDS: tuple[Kind, ...] = ("checkpoint", "lora", "embedding", "vae", "controlnet", "upscaler", "ipadapter")
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
MODEL_SUFFIXES = {".safetensors", *PICKLE_SUFFIXES}

# Sub-folders of an A1111 `models` folder (embeddings sit beside it, at the webui root) and of a
# ComfyUI `models` folder, with the kind each suggests.
A1111_MODELS = {
    "Stable-diffusion": "checkpoint", "Lora": "lora", "LyCORIS": "lora", "VAE": "vae",
    "ControlNet": "controlnet", "ESRGAN": "upscaler", "RealESRGAN": "upscaler", "IP-Adapter": "ipadapter",
}
COMFY_MODELS = {
    "checkpoints": "checkpoint", "diffusers": "checkpoint", "loras": "lora", "vae": "vae",
    "controlnet": "controlnet", "embeddings": "embedding", "upscale_models": "upscaler", "ipadapter": "ipadapter",
}
# An IP-Adapter's CLIP image encoder (a transformers folder) sits beside the adapters; it is not a model of its own.
IMAGE_ENCODER_DIR = "image_encoder"


@dataclass(frozen=True)
class Root:
    """A folder to look in, with the kind its place in a layout suggests (None: any kind)."""

    path: Path
    hint: Kind | None = None


def is_model_folder(path: Path) -> bool:
    """A diffusers pipeline folder, or a single diffusers component folder (ControlNet, VAE)."""
    if (path / "model_index.json").is_file():
        return True
    return (path / "config.json").is_file() and any(path.glob("diffusion_pytorch_model*"))


def roots_of_extra(folder: Path) -> list[Root]:
    """The folders to read under an extra root: an A1111 webui root or its `models` folder, a
    ComfyUI root or its `models` folder; anything else is read whole, detection deciding every kind."""
    models = folder / "models" if (folder / "models").is_dir() else folder
    # Exact names from the disk, so that 'VAE' and 'vae' stay apart on case-insensitive file systems.
    present = {e.name for e in os.scandir(models) if e.is_dir()}
    a1111 = [Root(models / sub, kind) for sub, kind in A1111_MODELS.items() if sub in present]
    comfy = [Root(models / sub, kind) for sub, kind in COMFY_MODELS.items() if sub in present]
    webui_embeddings = models.parent / "embeddings"  # A1111 keeps embeddings beside `models`
    if a1111 and webui_embeddings.is_dir():
        a1111.append(Root(webui_embeddings, "embedding"))
    return a1111 + comfy or [Root(folder)]


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def model_name(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def _split_title(text: str) -> tuple[str, str | None]:
    """A1111's title form 'name.safetensors [1a2b3c4d5e]' -> ('name.safetensors', '1a2b3c4d5e')."""
    m = re.fullmatch(r"(.*?)\s*\[([0-9a-fA-F]{8,64})\]", text)
    return (m.group(1), m.group(2).lower()) if m else (text, None)


def _is_hash(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F]{8,64}", text))


class ModelLibrary:
    """Scans once, then answers from memory until `rescan()`. Safe to share between threads."""

    def __init__(self, home: Home, db: Database) -> None:
        self.home = home
        self.db = db
        self.settings = home.load_settings()
        self.problems: list[str] = []
        self._models: list[ModelInfo] | None = None
        self._lock = threading.RLock()

    # -- scanning -------------------------------------------------------------------------

    def roots(self) -> list[Root]:
        """The folders searched, in order: the home's A1111 layout, then each extra root that exists.
        (Paths registered with `models add` are models themselves and come after these.)"""
        roots = [Root(self.home.model_dir(kind), kind) for kind in MODEL_DIRS]  # type: ignore[arg-type]
        for folder in self._extra_roots():
            if folder.is_dir():
                roots.extend(roots_of_extra(folder))
        return roots

    def _extra_roots(self) -> list[Path]:
        return [Path(extra).expanduser() for extra in self.settings.extra_roots]

    def scan(self) -> list[ModelInfo]:
        """Every model found, cached; the first call reads the disk, later calls answer from memory."""
        with self._lock:
            if self._models is None:
                self._models = self._scan()
            return list(self._models)

    def rescan(self) -> list[ModelInfo]:
        with self._lock:
            self.settings = self.home.load_settings()
            self._models = None
            return self.scan()

    def _scan(self) -> list[ModelInfo]:
        self.problems = [
            f"The extra model root {folder} in {self.home.settings_path} is not a folder; it was skipped."
            for folder in self._extra_roots() if not folder.is_dir()
        ]
        found: dict[Path, ModelInfo] = {}
        for root in self.roots():
            for path in _walk(root.path):
                self._consider(path, root.hint, found)
        for path in self.db.registered_model_paths():
            if not path.exists():
                self.problems.append(f"{path} was added with `models add` but is gone; it was skipped.")
                continue
            self._consider(path, None, found)
        return list(found.values())

    def _consider(self, path: Path, hint: Kind | None, found: dict[Path, ModelInfo]) -> None:
        resolved = path.resolve()
        if resolved in found:
            return
        try:
            info = self.inspect(path, hint)
        except LocalDiffusionError as e:
            self.problems.append(f"{path} was skipped: {e.message}")
            return
        except Exception as e:  # a corrupt or unreadable file must not stop the scan
            self.problems.append(f"{path} was skipped: it could not be read ({e.__class__.__name__}: {e}).")
            return
        info.path = resolved
        found[resolved] = info

    def inspect(self, path: Path, hint: Kind | None = None) -> ModelInfo:
        """A ModelInfo for one model file or folder (raises UnsupportedModel for anything else)."""
        path = Path(path)
        refused_pickle = _format_of(path) == "ckpt" and not self.settings.allow_pickle
        if (hint == "upscaler" and path.is_file()) or (refused_pickle and hint is not None):
            return ModelInfo(name=model_name(path), path=path, kind=hint, format=_format_of(path), size=folder_size(path))
        if refused_pickle:
            raise UnsupportedModel(
                f"{path.name} is a pickled file, whose kind cannot be read without running its code; put it in "
                f"the A1111 folder for its kind, or set \"allow_pickle\": true in {self.home.settings_path}."
            )
        return _from_detected(path, detect(path, allow_pickle=self.settings.allow_pickle))

    # -- looking models up ----------------------------------------------------------------

    def list(self, kind: str | None = None) -> list[ModelInfo]:
        if kind is not None and kind not in KINDS:
            raise BadInput(f"Unknown model kind '{kind}'; use {one_of(list(KINDS))}.", field="kind")
        return [m for m in self.scan() if kind is None or m.kind == kind]

    def get(self, name_or_hash: str, kind: str | None = "checkpoint") -> ModelInfo:
        """A model by name (file stem or folder name, with or without extension, or A1111's
        'name [hash]' title), by hash (short, full or A1111's legacy 8-digit one) or by path."""
        query = name_or_hash.strip()
        candidates = self.list(kind)
        what = kind or "model"
        if not query:
            raise BadInput(f"No {what} name was given; use {one_of(self._names(candidates)) if candidates else 'a model name'}.")
        by_path = self._by_path(query, candidates, kind)
        if by_path is not None:
            return by_path
        name, title_hash = _split_title(query)
        key = re.split(r"[\\/]", name)[-1].lower()
        for info in candidates:
            if key in (info.name.lower(), info.path.name.lower()):
                return info
        wanted = title_hash or (query.lower() if _is_hash(query) else None)
        if wanted:
            hit = self._by_hash(wanted, candidates, kind)
            if hit is not None:
                return hit
        raise self._not_found(query, key, candidates, kind)

    def _by_path(self, query: str, candidates: list[ModelInfo], kind: str | None) -> ModelInfo | None:
        path = Path(query).expanduser()
        if not (("/" in query or "\\" in query) and path.exists()):
            return None
        resolved = path.resolve()
        for info in candidates:
            if info.path == resolved:
                return info
        # A path outside the library: read it in place, without registering it.
        info = self.inspect(resolved)
        if kind is not None and info.kind != kind:
            raise ModelNotFound(f"{path} is a {info.kind}, not a {kind}.")
        return info

    def _by_hash(self, wanted: str, candidates: list[ModelInfo], kind: str | None) -> ModelInfo | None:
        def matches(info: ModelInfo) -> bool:
            return info.short_hash == wanted or bool(info.sha256 and info.sha256.startswith(wanted))

        for info in candidates:  # hashes already known
            if matches(info):
                return info
        if len(wanted) == 8:  # old A1111's `Model hash`: cheap to compute
            for info in candidates:
                if info.kind == "checkpoint" and self._legacy_hash(info) == wanted:
                    return info
        for info in candidates:  # hash the rest (cached in the database after the first time)
            if info.sha256 is None:
                try:
                    self.ensure_hash(info)
                except LocalDiffusionError:
                    continue
                if matches(info):
                    return info
        return None

    def _legacy_hash(self, info: ModelInfo) -> str | None:
        try:
            return legacy_model_hash(hash_target(info.path))
        except OSError:
            return None

    @staticmethod
    def _names(models: list[ModelInfo]) -> list[str]:
        return sorted({m.name for m in models}, key=str.lower)

    def _not_found(self, query: str, key: str, candidates: list[ModelInfo], kind: str | None) -> ModelNotFound:
        if not candidates:
            if kind == "checkpoint":
                return self._no_checkpoint()
            where = f" in {self.home.model_dir(kind)}" if kind in MODEL_DIRS else ""
            return ModelNotFound(f"No {kind or 'model'} named '{query}': the library has none{where}; add one with `localdiffusion models add PATH`.")
        names = self._names(candidates)
        near = closest(key, names)
        hint = f"did you mean {one_of(near)}?" if near else f"the library has {one_of(names)}."
        return ModelNotFound(f"No {kind or 'model'} named '{query}'; {hint}")

    def _no_checkpoint(self) -> ModelNotFound:
        return ModelNotFound(
            f"No checkpoint found in {self.home.model_dir('checkpoint')}: add one with `localdiffusion models add PATH`, "
            f"download one with `localdiffusion models pull REPO_ID`, or name an existing A1111 or ComfyUI folder "
            f"in \"extra_roots\" in {self.home.settings_path}."
        )

    def default_checkpoint(self) -> ModelInfo:
        """The first checkpoint that can load (pickles only when allowed), else the first checkpoint."""
        checkpoints = self.list("checkpoint")
        if not checkpoints:
            raise self._no_checkpoint()
        loadable = [m for m in checkpoints if m.format != "ckpt" or self.settings.allow_pickle]
        return (loadable or checkpoints)[0]

    # -- hashes ---------------------------------------------------------------------------

    def ensure_hash(self, info: ModelInfo) -> ModelInfo:
        """Fill in `sha256` and `short_hash` (A1111's, for the model's kind); cached in the database."""
        if info.sha256 is None:
            try:
                full, short = a1111_hashes(info.path, info.kind, self.db)
            except OSError as e:
                raise ModelNotFound(f"{info.path} can no longer be read ({e.strerror or e}); run `localdiffusion models rescan`.") from e
            info.sha256, info.short_hash = full, short
        return info

    # -- adding ---------------------------------------------------------------------------

    def add(self, path: Path | str) -> ModelInfo:
        """Register one model file or diffusers folder, read in place; nothing is registered on error."""
        path = Path(path).expanduser()
        try:
            found = path.exists()
        except OSError as e:  # a name longer than the file system allows (ENAMETOOLONG), ...
            raise BadInput(f"The path '{str(path)[:200]}' cannot be read ({e.strerror}); give a .safetensors or .ckpt file or a diffusers folder.",
                           field="path") from None
        if not found:
            raise BadInput(f"There is no file or folder at {path}; give a .safetensors or .ckpt file or a diffusers folder.", field="path")
        path = path.resolve()
        if path.is_dir() and not is_model_folder(path):
            raise BadInput(
                f"{path} is a folder but not a diffusers model (it has no model_index.json); to read every model in it, "
                f"add it to \"extra_roots\" in {self.home.settings_path}.",
                field="path",
            )
        if path.is_file() and path.suffix.lower() not in MODEL_SUFFIXES:
            raise UnsupportedModel(f"{path.name} is not a model file; use {one_of(sorted(MODEL_SUFFIXES))} or a diffusers folder.", field="path")
        # detect() directly, not inspect(): a pickle is refused here unless allowed, whatever its folder.
        info = _from_detected(path, detect(path, allow_pickle=self.settings.allow_pickle))
        self.db.register_model_path(path)
        with self._lock:
            if self._models is not None:
                existing = next((m for m in self._models if m.path == path), None)
                if existing is not None:
                    return existing
                self._models.append(info)
        return info


def _from_detected(path: Path, detected: Detected) -> ModelInfo:
    return ModelInfo(
        name=model_name(path), path=path, kind=detected.kind, family=detected.family, format=_format_of(path),
        prediction_type=detected.prediction_type, size=folder_size(path),
    )


def _format_of(path: Path) -> str:
    if path.is_dir():
        return "diffusers"
    return "ckpt" if path.suffix.lower() in PICKLE_SUFFIXES else "safetensors"


def _walk(folder: Path, seen: set[Path] | None = None) -> Iterator[Path]:
    """Model files and model folders under `folder`, sorted by name, hidden entries skipped."""
    seen = set() if seen is None else seen
    try:
        real = folder.resolve()
        if real in seen or not folder.is_dir():
            return
        seen.add(real)  # symlinked folders could otherwise loop
        entries = sorted(os.scandir(folder), key=lambda e: e.name.lower())
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir():
            if entry.name == IMAGE_ENCODER_DIR:
                continue
            if is_model_folder(path):
                yield path
            else:
                yield from _walk(path, seen)
        elif path.suffix.lower() in MODEL_SUFFIXES:
            yield path
