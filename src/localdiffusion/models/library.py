"""The model library: every model the home folder, the extra roots and `models add` know about.

Models are read in place, never copied. Where a file sits only says where to look: `detect()`
reads the file and decides its kind and family. Two exceptions, because detection cannot help:
- pickled files (.ckpt/.pt/.pth/.bin) while `allow_pickle` is off: opening them could run code, so
  they are listed with the kind their folder suggests and format 'ckpt', and loading them stays
  refused until the user opts in;
- upscalers (models/ESRGAN, ComfyUI's upscale_models): `detect()` knows Stable Diffusion models
  only, so files there are listed as upscalers and their architecture is read when they load.
IP-Adapters' `image_encoder` folders are skipped: the adapters use them (`models/ip_adapter.py`).
SD3.5's and FLUX's text encoders kept apart (kind "text-encoder": `models/text_encoder`, ComfyUI's `clip` and
`text_encoders`) are listed too; `models/flow.py` picks the ones a transformer-only checkpoint needs.

Hashes are computed lazily (`ensure_hash`), since a full-size checkpoint takes seconds to hash; the
database caches them. For LoRAs `ModelInfo.sha256` holds A1111's LoRA hash (see `hashing.py`).

Names: a model is named after its file (without the extension) or its folder. Where two models of one
kind would share a name, each gets the shortest end of its path that tells it apart: the files keep
their extension (`x.safetensors`, `x.ckpt`; a diffusers folder `x` stays `x`), and files of the same
name in different folders get the folders that differ (`sdxl/x.safetensors`), as A1111 names files in
sub-folders. So every name is unique within its kind, and stays the same while the models of that
name stay the same.

`get()` is the one lookup: a name, an A1111 title, a hash or, for a library opened with
`accept_paths` (the CLI's), a path; a path outside the library is added in place, as `models add`
does, so that a recipe that names the model resolves again. The studio's library never opens a path.

The library notices new models without a rescan: every read compares the folders it walked (their
modification times), the settings file and the models registered with `models add` against the last
scan, and reads again what changed; models whose file did not change are not inspected again.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from localdiffusion.errors import BadInput, LocalDiffusionError, ModelNotFound, UnsupportedModel, closest, one_of
from localdiffusion.models.detect import Detected, detect
from localdiffusion.models.hashing import a1111_hashes, hash_target, legacy_model_hash
from localdiffusion.models.info import Kind, ModelInfo
from localdiffusion.store.db import Database
from localdiffusion.store.home import MODEL_DIRS, Home, add_models_help

KINDS: tuple[Kind, ...] = ("checkpoint", "lora", "embedding", "vae", "controlnet", "upscaler", "ipadapter", "vae-approx",
                          "text-encoder")
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
MODEL_SUFFIXES = {".safetensors", *PICKLE_SUFFIXES}

# Sub-folders of an A1111 `models` folder (embeddings sit beside it, at the webui root) and of a
# ComfyUI `models` folder, with the kind each suggests.
A1111_MODELS = {
    "Stable-diffusion": "checkpoint", "Lora": "lora", "LyCORIS": "lora", "VAE": "vae",
    "ControlNet": "controlnet", "ESRGAN": "upscaler", "RealESRGAN": "upscaler", "IP-Adapter": "ipadapter",
    "VAE-approx": "vae-approx", "text_encoder": "text-encoder",
}
COMFY_MODELS = {
    "checkpoints": "checkpoint", "diffusers": "checkpoint", "loras": "lora", "vae": "vae",
    "controlnet": "controlnet", "embeddings": "embedding", "upscale_models": "upscaler", "ipadapter": "ipadapter",
    "vae_approx": "vae-approx",
    # SD3.5 and FLUX as ComfyUI keeps them: the transformer alone, its text encoders apart
    "unet": "checkpoint", "diffusion_models": "checkpoint", "clip": "text-encoder", "text_encoders": "text-encoder",
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
    """A model's plain name: the file name without its extension, or the folder name."""
    return path.name if path.is_dir() else path.stem


def name_models(models: list[ModelInfo], found_as: dict[Path, Path] | None = None) -> None:
    """Give each model a name unique within its kind (in place): its plain name (`model_name` of the path
    it was found at, `found_as`, else of its own), or where several models of a kind share that, the
    shortest end of each one's path that no other of them has, compared ignoring case as lookups are:
    `x` (a folder) and `x.safetensors`; `a/x.safetensors` and `b/x.safetensors`."""
    seen_as = {info.path: (found_as or {}).get(info.path, info.path) for info in models}
    groups: dict[tuple[str, str], list[ModelInfo]] = {}
    for info in models:
        info.name = _plain_name(info, seen_as[info.path])
        groups.setdefault((info.kind, info.name.lower()), []).append(info)
    for group in groups.values():
        if len(group) > 1:
            ends = {id(info): seen_as[info.path].parts for info in group}
            for info in group:
                info.name = _shortest_unique_end(ends[id(info)], [ends[id(o)] for o in group if o is not info])


def _plain_name(info: ModelInfo, path: Path) -> str:
    return path.name if info.format == "diffusers" else path.stem


def _shortest_unique_end(parts: tuple[str, ...], others: list[tuple[str, ...]]) -> str:
    for n in range(1, len(parts) + 1):
        end = "/".join(parts[-n:])
        if all("/".join(other[-n:]).lower() != end.lower() for other in others):
            return end
    return str(Path(*parts))  # paths that differ in case only


def _split_title(text: str) -> tuple[str, str | None]:
    """A1111's title form 'name.safetensors [1a2b3c4d5e]' -> ('name.safetensors', '1a2b3c4d5e')."""
    m = re.fullmatch(r"(.*?)\s*\[([0-9a-fA-F]{8,64})\]", text)
    return (m.group(1), m.group(2).lower()) if m else (text, None)


def _is_hash(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F]{8,64}", text))


# The checkpoints the code running now may see: None, all of them; a class's participant, the allowed ones
# (the server sets it for each of their requests). Every listing and lookup of the library then treats the
# others as absent, so an answer never tells a participant about a model they may not use.
_VISIBLE_CHECKPOINTS: ContextVar[frozenset[str] | None] = ContextVar("visible_checkpoints", default=None)


@contextmanager
def only_checkpoints(names: Iterable[str] | None) -> Iterator[None]:
    """Within this block (and threads started from it with its context), only these checkpoints exist (names
    in any case); None: all of them."""
    token = _VISIBLE_CHECKPOINTS.set(None if names is None else frozenset(n.lower() for n in names))
    try:
        yield
    finally:
        _VISIBLE_CHECKPOINTS.reset(token)


class ModelLibrary:
    """Scans once, then answers from memory, reading again only what changed (see `_changed`). Safe to
    share between threads."""

    def __init__(self, home: Home, db: Database, *, accept_paths: bool = False) -> None:
        """`accept_paths`: `get()` also takes the path of a model file or folder on this machine, and adds
        one from outside the library in place (the CLI's library; the studio's never does)."""
        self.home = home
        self.db = db
        self.accept_paths = accept_paths
        self.settings = home.load_settings()
        self.problems: list[str] = []
        self._models: list[ModelInfo] | None = None
        self._lock = threading.RLock()
        self._settings_mtime = _mtime(home.settings_path)
        self._seen: tuple[list[Path], dict[Path, int | None]] | None = None  # what the last scan read (see `_changed`)
        self._known: dict[Path, tuple[tuple[int, int], ModelInfo]] = {}  # inspected models, reused while unchanged
        self._found_as: dict[Path, Path] = {}  # each model's real path -> the path it was found at (a link's)

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
        """Every model found. The first call reads the disk; later calls answer from memory unless a
        folder, the settings file or the models added with `models add` changed since (then read again)."""
        with self._lock:
            if self._models is None or self._changed():
                self._models = self._scan()
            return list(self._models)

    def rescan(self) -> list[ModelInfo]:
        """Read everything again, inspecting every model anew."""
        with self._lock:
            self._reload_settings()
            self._known.clear()
            self._models = None
            return self.scan()

    def _reload_settings(self) -> None:
        self._settings_mtime = _mtime(self.home.settings_path)
        self.settings = self.home.load_settings()

    def _changed(self) -> bool:
        """Whether anything the last scan read has changed: cheap (a stat per folder walked, one query)."""
        if self._seen is None:
            return True
        registered, folders = self._seen
        if _mtime(self.home.settings_path) != self._settings_mtime:
            self._reload_settings()
            self._known.clear()  # allow_pickle may have changed what can be read
            return True
        return self.db.registered_model_paths() != registered or any(_mtime(f) != t for f, t in folders.items())

    def _scan(self) -> list[ModelInfo]:
        self.problems = [
            f"The extra model root {folder} in {self.home.settings_path} is not a folder; it was skipped."
            for folder in self._extra_roots() if not folder.is_dir()
        ]
        registered = self.db.registered_model_paths()
        folders: dict[Path, int | None] = {folder: _settled_mtime(folder) for folder in self._extra_roots()}
        folders.update({folder / "models": _settled_mtime(folder / "models") for folder in self._extra_roots()})
        found: dict[Path, ModelInfo] = {}
        for root in self.roots():
            for path in _walk(root.path, watched=folders):
                self._consider(path, root.hint, found)
        for path in registered:
            if not path.exists():
                self.problems.append(f"{path} was added with `models add` but is gone; it was skipped.")
                continue
            self._consider(path, None, found)
        self._seen = (registered, folders)
        self._known = {path: known for path, known in self._known.items() if path in found}
        self._found_as = {path: seen_as for path, seen_as in self._found_as.items() if path in found}
        models = list(found.values())
        name_models(models, self._found_as)
        return models

    def _consider(self, path: Path, hint: Kind | None, found: dict[Path, ModelInfo]) -> None:
        resolved = path.resolve()
        if resolved in found:
            return
        self._found_as[resolved] = path
        stamp = _stamp(resolved)
        known = self._known.get(resolved)
        if known is not None and known[0] == stamp:
            found[resolved] = known[1]
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
        self._known[resolved] = (stamp, info)

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
        """The library's models (of one kind); within `only_checkpoints(names)`, only those checkpoints."""
        if kind is not None and kind not in KINDS:
            raise BadInput(f"Unknown model kind '{kind}'; use {one_of(list(KINDS))}.", field="kind")
        visible = _VISIBLE_CHECKPOINTS.get()
        return [m for m in self.scan() if (kind is None or m.kind == kind)
                and (visible is None or m.kind != "checkpoint" or m.name.lower() in visible)]

    def get(self, query: str | None, kind: str | None = "checkpoint", *, field: str | None = None) -> ModelInfo:
        """The model a person or a recipe names; the one lookup that the CLI, the engine and the server use.

        `query` is a name (any case; a bare file or folder name too, e.g. `x` for `x.safetensors`), A1111's
        title 'name.safetensors [hash]', a hash (short, full or A1111's legacy 8-digit one) or, with
        `accept_paths`, a path (one outside the library is added in place, as `models add` does). Nothing
        (None or '') means the default checkpoint. A name several models answer to picks the one it names
        exactly, else the first in the library's order (home, extra roots, added models); a title's hash
        settles it. Errors name `field`."""
        text = (query or "").strip()
        what = kind or "model"
        if not text:
            if kind == "checkpoint":
                return self.default_checkpoint(field=field)
            raise BadInput(f"No {what} name was given; name one from the library (`localdiffusion models list`).", field=field)
        candidates = self.list(kind)
        name, title_hash = _split_title(text)
        hits = [m for m in candidates if m.name.lower() == name.lower()]
        if not hits and ("/" in name or "\\" in name):
            path = Path(text).expanduser()
            if self.accept_paths and path.exists():
                return self._by_path(path, kind, field)
            if not self.accept_paths:
                raise BadInput(f"The {what} '{text[:200]}' looks like a path; name a model from the library, as "
                               f"`localdiffusion models list` shows it.", field=field)
        key = re.split(r"[\\/]", name)[-1].lower()  # A1111 names files in sub-folders 'sub/x.safetensors'
        if not hits:
            hits = [m for m in candidates if key in self._file_names(m)]
        if hits:
            return self._pick(hits, title_hash)
        wanted = title_hash or (text.lower() if _is_hash(text) else None)
        if wanted:
            hit = self._by_hash(wanted, candidates, kind)
            if hit is not None:
                return hit
        if self.accept_paths and Path(text).expanduser().exists():  # a file in the current folder
            return self._by_path(Path(text).expanduser(), kind, field)
        if self.accept_paths and ("/" in name or "\\" in name):
            raise ModelNotFound(f"There is no file or folder at {text}, and no {what} of that name; give the path of a "
                                f".safetensors file or a diffusers folder, or a name that `localdiffusion models list` shows.",
                                field=field)
        raise self._not_found(text, key, candidates, kind, field)

    def _file_names(self, info: ModelInfo) -> set[str]:
        """The names a model answers to besides its own (lower case): its file or folder name, with and
        without the extension, where it was found and where it really is."""
        found = self._found_as.get(info.path, info.path)
        return {p.name.lower() for p in (found, info.path)} | {_plain_name(info, p).lower() for p in (found, info.path)}

    def _pick(self, hits: list[ModelInfo], title_hash: str | None) -> ModelInfo:
        """The first of several models a name fits, or the one whose hash the title gives."""
        if title_hash and len(hits) > 1:
            for info in hits:
                try:
                    self.ensure_hash(info)
                except LocalDiffusionError:
                    continue
                if info.short_hash == title_hash or (info.sha256 or "").startswith(title_hash):
                    return info
        return hits[0]

    def _by_path(self, path: Path, kind: str | None, field: str | None) -> ModelInfo:
        """A model by its path: the library's own, or one from elsewhere, added in place."""
        resolved = path.resolve()
        for info in self.scan():
            if info.path == resolved:
                if kind is not None and info.kind != kind:
                    raise ModelNotFound(f"{path} is a {info.kind}, not a {kind}.", field=field)
                return info
        return self.add(resolved, kind=kind, field=field)

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

    def _not_found(self, query: str, key: str, candidates: list[ModelInfo], kind: str | None, field: str | None) -> ModelNotFound:
        if not candidates:
            if kind == "checkpoint":
                return self._no_checkpoint(field)
            where = f" in {self.home.model_dir(kind)}" if kind in MODEL_DIRS else ""
            return ModelNotFound(f"No {kind or 'model'} named '{query}': the library has none{where}; add one with "
                                 f"`localdiffusion models add PATH`.", field=field)
        names = self._names(candidates)
        near = closest(key, names)
        hint = f"did you mean {one_of(near)}?" if near else f"the library has {one_of(names)}."
        return ModelNotFound(f"No {kind or 'model'} named '{query}'; {hint}", field=field)

    def _no_checkpoint(self, field: str | None = None) -> ModelNotFound:
        return ModelNotFound(f"No checkpoint found in {self.home.model_dir('checkpoint')}. {add_models_help(self.home)}",
                             field=field)

    def default_checkpoint(self, field: str | None = None) -> ModelInfo:
        """The first checkpoint that can load (pickles only when allowed), else the first checkpoint."""
        checkpoints = self.list("checkpoint")
        if not checkpoints:
            raise self._no_checkpoint(field)
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

    def add(self, path: Path | str, kind: str | None = None, field: str = "path") -> ModelInfo:
        """Register one model file or diffusers folder, read in place; nothing is registered on error
        (nor when `kind` is given and the model is of another kind)."""
        path = Path(path).expanduser()
        try:
            found = path.exists()
        except OSError as e:  # a name longer than the file system allows (ENAMETOOLONG), ...
            raise BadInput(f"The path '{str(path)[:200]}' cannot be read ({e.strerror}); give a .safetensors or .ckpt file or a diffusers folder.",
                           field=field) from None
        if not found:
            raise BadInput(f"There is no file or folder at {path}; give a .safetensors or .ckpt file or a diffusers folder.", field=field)
        path = path.resolve()
        if path.is_dir() and not is_model_folder(path):
            raise BadInput(
                f"{path} is a folder but not a diffusers model (it has no model_index.json); to read every model in it, "
                f"add it to \"extra_roots\" in {self.home.settings_path}.",
                field=field,
            )
        if path.is_file() and path.suffix.lower() not in MODEL_SUFFIXES:
            raise UnsupportedModel(f"{path.name} is not a model file; use {one_of(sorted(MODEL_SUFFIXES))} or a diffusers folder.", field=field)
        with self._lock:
            existing = next((m for m in self.scan() if m.path == path), None)
            if existing is None:
                # detect() directly, not inspect(): a pickle is refused here unless allowed, whatever its folder.
                try:
                    existing = _from_detected(path, detect(path, allow_pickle=self.settings.allow_pickle))
                except LocalDiffusionError as e:
                    raise type(e)(e.message, field=field) from None
                self._known[path] = (_stamp(path), existing)
            if kind is not None and existing.kind != kind:
                raise ModelNotFound(f"{path} is a {existing.kind}, not a {kind}.", field=field)
            self.db.register_model_path(path)
            return next(m for m in self.scan() if m.path == path)  # named beside the others


def _from_detected(path: Path, detected: Detected) -> ModelInfo:
    return ModelInfo(
        name=model_name(path), path=path, kind=detected.kind, family=detected.family, format=_format_of(path),
        prediction_type=detected.prediction_type, size=folder_size(path),
    )


def _format_of(path: Path) -> str:
    if path.is_dir():
        return "diffusers"
    return "ckpt" if path.suffix.lower() in PICKLE_SUFFIXES else "safetensors"


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


# A folder changed this recently may change again within the same tick of the file system's clock, keeping
# its modification time; such a folder is read again at the next look until its time is older than this.
RECENT_NS = 2_000_000_000


def _settled_mtime(path: Path) -> int | None:
    """The folder's modification time, or -1 while it is too recent to tell a later change by (see RECENT_NS)."""
    mtime = _mtime(path)
    return -1 if mtime is not None and mtime > time.time_ns() - RECENT_NS else mtime


def _stamp(path: Path) -> tuple[int, int]:
    """What tells a changed model file from the one inspected: its size and modification time."""
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def _walk(folder: Path, seen: set[Path] | None = None, watched: dict[Path, int | None] | None = None) -> Iterator[Path]:
    """Model files and model folders under `folder`, sorted by name, hidden entries skipped. Each folder
    listed goes into `watched` with its modification time (a file added or removed there changes it)."""
    seen = set() if seen is None else seen
    if watched is not None:
        watched[folder] = _settled_mtime(folder)  # before listing: a change during the walk shows up next time
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
                yield from _walk(path, seen, watched)
        elif path.suffix.lower() in MODEL_SUFFIXES:
            yield path
