"""The home folder: the A1111 model layout, outputs, the database and user settings.

    HOME/
      models/Stable-diffusion  models/Lora  models/VAE  models/ControlNet  models/ESRGAN
      models/IP-Adapter   IP-Adapter files, and their CLIP image encoder in image_encoder/
      models/VAE-approx   TAESD (taesd, taesdxl): tiny approximate VAEs for previews and fast decoding
      embeddings/
      outputs/
      cache/          derived files (single-file configs, tokenizers, thumbnails)
      db.sqlite
      settings.json   user settings (extra model roots, limits), editable by hand
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localdiffusion.errors import BadInput
from localdiffusion.store.files import write_text_atomic

ENV_VAR = "LOCALDIFFUSION_HOME"

# Sub-folders per model kind, as A1111 lays them out.
MODEL_DIRS = {
    "checkpoint": "models/Stable-diffusion",
    "lora": "models/Lora",
    "vae": "models/VAE",
    "controlnet": "models/ControlNet",
    "upscaler": "models/ESRGAN",
    "ipadapter": "models/IP-Adapter",
    "vae-approx": "models/VAE-approx",
    "text-encoder": "models/text_encoder",  # Forge's folder: SD3.5's and FLUX's text encoders kept apart
    "embedding": "embeddings",
}


class Settings(BaseModel):
    """User settings kept in HOME/settings.json."""

    model_config = ConfigDict(extra="ignore")

    # Existing A1111 or ComfyUI model folders, read in place and never copied.
    extra_roots: list[str] = Field(default_factory=list)
    # The largest width or height a generation may ask for.
    max_side: int = Field(2048, ge=64)
    # Pickled .ckpt/.pt checkpoints can run code when loaded; they stay refused unless the user opts in.
    allow_pickle: bool = False
    # How much memory loaded pipelines may keep between generations (GiB); 0 means "pick from the machine".
    cache_budget_gb: float = Field(0.0, ge=0.0)
    # The largest image upload the server accepts (MiB).
    max_upload_mb: int = Field(32, ge=1, le=1024)
    # Other names (and "name:port") this server answers to without a token, besides localhost, 127.0.0.1
    # and [::1]; pages served under them may also use it. Listening beyond this machine, any name is answered.
    allowed_hosts: list[str] = Field(default_factory=list)
    # The precision models run in ("float32", "bfloat16", "float16"); None picks it from the device (fp16 on a
    # GPU, bf16 on a CPU with native bf16, else fp32). `--dtype` overrides it.
    dtype: str | None = None
    # Also write the `prompt` and `workflow` chunks ComfyUI writes, so that a saved PNG opens in ComfyUI as a
    # workflow (beside our own metadata, which this studio and A1111 read).
    comfyui_workflow_in_png: bool = False
    # SD3.5 and FLUX: keep the transformer's weights in fp8 (half of bf16's memory; each layer is cast to the
    # engine's dtype as it runs, diffusers' layerwise casting), so FLUX fits a 16 GB GPU with CPU offload.
    fp8_weights: bool = False


def default_home() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "localdiffusion"


class Home:
    """Paths under one home folder, created on first use."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser().resolve() if root else default_home()

    def ensure(self) -> "Home":
        for sub in [*MODEL_DIRS.values(), "outputs", "cache"]:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        return self

    def model_dir(self, kind: str) -> Path:
        return self.root / MODEL_DIRS[kind]

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def db_path(self) -> Path:
        return self.root / "db.sqlite"

    @property
    def settings_path(self) -> Path:
        return self.root / "settings.json"

    def load_settings(self) -> Settings:
        if not self.settings_path.exists():
            return Settings()
        try:
            return Settings.model_validate(json.loads(self.settings_path.read_text("utf-8")))
        except (ValueError, ValidationError) as e:
            raise BadInput(f"The settings file {self.settings_path} is not valid ({e.__class__.__name__}); fix or delete it.") from e

    def save_settings(self, settings: Settings) -> None:
        write_text_atomic(self.settings_path, settings.model_dump_json(indent=2))


# --- the commands a person types for this home ---------------------------------------------------


def cli_command() -> str:
    """The `localdiffusion` command as a person can type it in another terminal: the bare name when that
    is what PATH finds, else the full path of the script this process runs from (or of the one beside
    its Python, e.g. `.venv/bin/localdiffusion`), else `PYTHON -m localdiffusion`."""
    script_name = "localdiffusion.exe" if os.name == "nt" else "localdiffusion"
    started = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    candidates = [started] if started is not None and started.name == script_name else []
    candidates.append(Path(sys.executable).parent / script_name)
    script = next((c for c in candidates if c.is_file()), None)
    if script is None:
        return f"{shlex.quote(sys.executable)} -m localdiffusion"
    on_path = shutil.which("localdiffusion")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "localdiffusion"
    return shlex.quote(str(script.absolute()))


def home_option(home: Home) -> str:
    """` --home DIR`, unless `home` is the one a command picks without it (and without LOCALDIFFUSION_HOME)."""
    if not os.environ.get(ENV_VAR) and home.root.resolve() == default_home().expanduser().resolve():
        return ""
    return f" --home {shlex.quote(str(home.root))}"


def add_models_help(home: Home) -> str:
    """How to add a first model, with the commands that work for this home and this install (its executable);
    shown by /api/status, the UI, `localdiffusion serve`, `models list` and a generation without a checkpoint."""
    command, where = cli_command(), home_option(home)
    return (
        f"Add a checkpoint with `{command} models add PATH{where}` (a .safetensors file or a diffusers folder), "
        f"download one with `{command} models pull REPO_ID{where}`, or use an existing A1111 or ComfyUI models "
        f"folder by naming it in \"extra_roots\" in {home.settings_path}; the studio notices new models by itself."
    )
