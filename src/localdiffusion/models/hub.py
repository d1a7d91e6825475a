"""Download a model from the Hugging Face Hub: the only place where the project uses the network.

A diffusers repo is fetched with just what loading needs (configs, tokenizer files and one set of
weights per component: safetensors over .bin, fp32 or fp16 as asked) into a hidden temporary folder
beside its destination, then renamed into place, so a model folder is either complete or absent.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Callable, Literal

from localdiffusion.errors import BadInput, ModelNotFound, OfflineError, one_of
from localdiffusion.models.hashing import sha256_file
from localdiffusion.store.home import MODEL_DIRS, Home

Variant = Literal["fp16", "fp32"]

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_CONFIG_SUFFIXES = (".json", ".txt", ".model")  # configs, tokenizer vocab/merges, sentencepiece
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def offline_variable() -> str | None:
    """The environment variable that asks Hugging Face libraries to stay offline, if one is set
    (read at call time: huggingface_hub reads it once, at import)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return name
    return None


def choose_files(files: list[str], variant: Variant | None = None) -> list[str]:
    """The files of a diffusers repo to download: every config and tokenizer file, and per component
    folder one set of weights. Safetensors win over .bin; `variant` picks fp16 or fp32 weights where the
    repo has both (default fp32, falling back to whichever exists). Single-file checkpoints at the repo
    root are left out: the folder already holds the same weights."""
    chosen = [f for f in files if f.endswith(_CONFIG_SUFFIXES) and not posixpath.basename(f).startswith(".")]
    weights: dict[str, list[str]] = defaultdict(list)
    for f in files:
        folder = posixpath.dirname(f)
        if folder and "/" not in folder and f.endswith(_WEIGHT_SUFFIXES):
            weights[folder].append(f)
    for folder in sorted(weights):
        chosen.extend(_pick_weights(weights[folder], variant))
    return sorted(set(chosen))


def choose_component_files(files: list[str], variant: Variant | None = None) -> list[str]:
    """The files of a diffusers component repo (one model at the root: config.json and its weights, e.g.
    madebyollin/taesd): the root config and one set of root weights, as `choose_files` picks them. Other root
    files (the original .pth/.safetensors of the same model) are left out."""
    root = [f for f in files if "/" not in f]
    weights = [f for f in root if f.startswith("diffusion_pytorch_model") and f.endswith(_WEIGHT_SUFFIXES)]
    return sorted(["config.json", *_pick_weights(weights, variant)])


def _pick_weights(candidates: list[str], variant: Variant | None) -> list[str]:
    for suffix in _WEIGHT_SUFFIXES:
        of_type = [f for f in candidates if f.endswith(suffix) and not _is_non_ema(f)]
        if not of_type:
            continue
        fp16 = [f for f in of_type if ".fp16." in posixpath.basename(f)]
        fp32 = [f for f in of_type if f not in fp16]
        preferred, fallback = (fp16, fp32) if variant == "fp16" else (fp32, fp16)
        return preferred or fallback
    return []


def _is_non_ema(name: str) -> bool:
    return ".non_ema." in posixpath.basename(name)


def _connection_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'the network could not be reached', across huggingface_hub versions."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in [("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests.exceptions", "ConnectionError"), ("requests.exceptions", "Timeout")]:
        try:
            found.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def _translate(e: BaseException, repo_id: str, revision: str | None, filename: str | None) -> Exception | None:
    """A Hub error -> one sentence for a person (None for errors that are not the Hub's)."""
    from huggingface_hub import errors as hf

    if isinstance(e, hf.GatedRepoError):
        return BadInput(f"The repository '{repo_id}' is gated; accept its terms on huggingface.co and log in with `hf auth login`, then pull again.")
    if isinstance(e, hf.RepositoryNotFoundError):
        return ModelNotFound(f"There is no repository '{repo_id}' on the Hugging Face Hub (or it is private); check the name, written as OWNER/NAME.")
    if isinstance(e, hf.RevisionNotFoundError):
        return BadInput(f"The repository '{repo_id}' has no revision '{revision}'; give a branch, tag or commit that exists.")
    if isinstance(e, hf.LocalEntryNotFoundError) or isinstance(e, _connection_errors()):
        return OfflineError(f"Could not reach the Hugging Face Hub to download '{repo_id}'; check the network connection and try again.")
    if isinstance(e, hf.EntryNotFoundError):
        return ModelNotFound(f"The repository '{repo_id}' has no file '{filename}'; check the file name with its folder, as listed on the Hub.")
    if isinstance(e, hf.HfHubHTTPError):
        return OfflineError(f"The Hugging Face Hub refused the download of '{repo_id}' ({e.__class__.__name__}); try again later.")
    return None


def _list_files(repo_id: str, revision: str | None) -> list[str]:
    from huggingface_hub import HfApi

    return HfApi().list_repo_files(repo_id, revision=revision)


def _snapshot(repo_id: str, revision: str | None, local_dir: Path, allow_patterns: list[str]) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id, revision=revision, local_dir=str(local_dir), allow_patterns=allow_patterns)


def _download_file(repo_id: str, revision: str | None, local_dir: Path, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, filename, revision=revision, local_dir=str(local_dir)))


def target_path(repo_id: str, home: Home, *, filename: str | None = None, kind: str = "checkpoint") -> Path:
    """Where `pull` puts a repo (a folder named after it) or one file (under its own name)."""
    if kind not in MODEL_DIRS:
        raise BadInput(f"Unknown model kind '{kind}'; use {one_of(list(MODEL_DIRS))}.", field="kind")
    return home.model_dir(kind) / (posixpath.basename(filename) if filename else repo_id.strip().split("/")[-1])


def pull(
    repo_id: str,
    home: Home,
    revision: str | None = None,
    *,
    filename: str | None = None,
    variant: Variant | None = None,
    kind: str = "checkpoint",
) -> Path:
    """Download a diffusers repo (or one `filename` of any repo) into the home's folder for `kind`; for a kind
    other than checkpoint, a repo holding one diffusers model at its root (`madebyollin/taesd` with
    kind="vae-approx") is downloaded as a folder too.

    Returns the model's path. A model already there is returned as it is, without a download.
    """
    repo_id = repo_id.strip()
    if not _REPO_ID.fullmatch(repo_id):
        raise BadInput(f"'{repo_id}' is not a Hugging Face repository id; write it as OWNER/NAME, e.g. 'stabilityai/sd-turbo'.", field="repo_id")
    if offline_variable():
        raise OfflineError(f"Downloading '{repo_id}' needs the network, but {offline_variable()} is set; unset it to download.")
    home.ensure()
    target = target_path(repo_id, home, filename=filename, kind=kind)
    if target.exists():
        return target
    try:
        if filename:
            return _pull_file(repo_id, revision, filename, target)
        return _pull_folder(repo_id, revision, variant, target, kind)
    except (BadInput, ModelNotFound, OfflineError):
        raise
    except Exception as e:
        mapped = _translate(e, repo_id, revision, filename)
        if mapped is None:
            raise
        raise mapped from e


def _pull_file(repo_id: str, revision: str | None, filename: str, target: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        downloaded = _download_file(repo_id, revision, tmp, filename)
        os.replace(downloaded, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _pull_folder(repo_id: str, revision: str | None, variant: Variant | None, target: Path, kind: str = "checkpoint") -> Path:
    """A diffusers pipeline repo; with a `kind` other than checkpoint also a single component at the root
    (config.json and its weights: TAESD, a VAE, a ControlNet)."""
    files = _list_files(repo_id, revision)
    component = "model_index.json" not in files and "config.json" in files and kind != "checkpoint"
    if component and not choose_component_files(files, variant)[1:]:
        raise BadInput(f"The repository '{repo_id}' has a config.json but no diffusers weights at its root; pick one file with --file.")
    if "model_index.json" not in files and not component:
        singles = [f for f in files if f.endswith((".safetensors", ".ckpt"))]
        also = f"; pick one file with --file, e.g. {one_of(singles, limit=4)}" if singles else ""
        model = "; for one model at its root (e.g. TAESD) name its folder with --kind (vae-approx, vae, controlnet)" if "config.json" in files else ""
        raise BadInput(f"The repository '{repo_id}' is not a diffusers pipeline (it has no model_index.json){model}{also}.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        _snapshot(repo_id, revision, tmp, choose_component_files(files, variant) if component else choose_files(files, variant))
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# --- one published file, checked against its published SHA-256 ----------------------------------------------


def hub_endpoint() -> str:
    """The hub's address: `HF_ENDPOINT` (a mirror, or a local server in tests), read at call time."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def file_url(repo_id: str, filename: str, revision: str = "main") -> str:
    """huggingface_hub's address for one file: {endpoint}/{repo}/resolve/{revision}/{filename}."""
    from urllib.parse import quote

    return f"{hub_endpoint()}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"


def partial_path(target: Path) -> Path:
    """Where a download collects its bytes until they are checked: a hidden name beside the target, kept when
    the connection drops, so that the next try resumes from it."""
    return target.parent / f".{target.name}.partial"


def download_verified(
    url: str,
    target: Path,
    sha256: str,
    size: int | None = None,
    *,
    on_progress: Callable[[int, int | None], None] | None = None,
    retries: int = 3,
    chunk: int = 1024 * 1024,
    timeout: float = 30.0,
) -> Path:
    """Download `url` to `target`, resuming a partial file from an earlier try (HTTP Range), and move it into
    place only when its SHA-256 is `sha256`. A dropped connection is resumed up to `retries` times; after that the
    partial file stays for the next call. A file with another hash is removed and refused in one sentence.
    `on_progress(done, total)` follows the bytes."""
    if offline_variable():
        raise OfflineError(f"Downloading {target.name} needs the network, but {offline_variable()} is set; unset it to download.")
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    failures = 0
    while True:
        try:
            _fetch_into(url, partial, size, on_progress, chunk, timeout)
            break
        except _DownloadDropped as e:
            failures += 1
            if failures > retries:
                raise OfflineError(f"The download of {target.name} stopped after {e.done} bytes ({e.reason}); "
                                   "try again to resume it from there.") from None
    digest = sha256_file(partial)
    if digest != sha256.lower():
        partial.unlink(missing_ok=True)
        raise BadInput(f"The downloaded {target.name} has SHA-256 {digest[:12]}…, not the published {sha256[:12]}…, "
                       "so it was deleted and not added to the library.", field="sha256")
    os.replace(partial, target)
    return target


class _DownloadDropped(Exception):
    def __init__(self, done: int, reason: str) -> None:
        super().__init__(reason)
        self.done, self.reason = done, reason


def _fetch_into(url: str, partial: Path, size: int | None, on_progress, chunk: int, timeout: float) -> None:
    """One HTTP request that appends to `partial` from where it ends (or starts it again where the server
    ignores the Range)."""
    import http.client
    import urllib.error
    import urllib.request

    have = partial.stat().st_size if partial.exists() else 0
    if size is not None and have > size:
        partial.unlink()
        have = 0
    if size is not None and have == size:
        return
    request = urllib.request.Request(url, headers={"User-Agent": "localdiffusion", **({"Range": f"bytes={have}-"} if have else {})})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after what we have: the partial file is whole
            return
        if e.code in (401, 403):
            raise BadInput(f"The hub refused {url} (HTTP {e.code}); the file may be gated: accept its terms on its page first.") from None
        if e.code == 404:
            raise ModelNotFound(f"There is no file at {url}; the table of known models may be out of date.") from None
        raise _DownloadDropped(have, f"HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        if have == 0 and isinstance(e, urllib.error.URLError):
            raise OfflineError(f"Could not reach {url.split('/')[2]} to download ({getattr(e, 'reason', e)}); check the network connection and try again.") from None
        raise _DownloadDropped(have, str(e)) from None
    with response:
        resumed = response.status == 206
        length = response.headers.get("Content-Length")
        total = size if size is not None else ((have if resumed else 0) + int(length) if length else None)
        done = have if resumed else 0
        try:
            with open(partial, "ab" if resumed else "wb") as f:
                if on_progress:
                    on_progress(done, total)
                while block := response.read(chunk):
                    f.write(block)
                    done += len(block)
                    if on_progress:
                        on_progress(done, total)
        except (OSError, http.client.HTTPException) as e:
            raise _DownloadDropped(done, str(e) or e.__class__.__name__) from None
    if total is not None and done < total:
        raise _DownloadDropped(done, "the connection closed early")
