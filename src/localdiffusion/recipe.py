"""Recipe: everything needed to reproduce one generation, and nothing else.

Field names follow the A1111 API (`StableDiffusionProcessing*`) wherever one exists, so that a
Recipe, an A1111 API request and A1111 infotext all speak the same language. The fields below
the "ours" marker have no A1111 equivalent.

A Recipe converts three ways: to and from JSON (pydantic), and to and from A1111 infotext
(`localdiffusion.infotext`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["txt2img", "img2img", "inpaint", "outpaint"]
# Where the noise comes from: the CPU's generator, the device's own (A1111's "GPU"), or "nv": A1111's NV
# source, NVIDIA's GPU generator reproduced on any processor (A1111's default images, made with "GPU" on
# an NVIDIA card, have these numbers).
RNG = Literal["cpu", "device", "nv"]
# How a ControlNet unit's map is fitted to the image, and the ControlNet extension's control modes (its
# `ControlMode` enum, in its order): how a unit's control weighs against the prompt (see `engine/control.py`).
ResizeMode = Literal["Just Resize", "Crop and Resize", "Resize and Fill"]
ControlMode = Literal["Balanced", "My prompt is more important", "ControlNet is more important"]
CONTROL_MODES: tuple[str, ...] = get_args(ControlMode)

# A1111's `inpainting_fill`: what the masked area starts from before denoising.
INPAINTING_FILL = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}


class ControlUnit(BaseModel):
    """One ControlNet unit, as the A1111 ControlNet extension describes it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str = ""  # empty: picked from the library by the checkpoint's family and the module's type
    image: str | None = None  # the source picture (a photo, a drawing, a pose rendering)
    module: str = "none"  # the preprocessor; "none" uses the image as the control map
    weight: float = Field(1.0, ge=0.0, le=2.0)
    guidance_start: float = Field(0.0, ge=0.0, le=1.0)
    guidance_end: float = Field(1.0, ge=0.0, le=1.0)
    resize_mode: ResizeMode = "Crop and Resize"
    processor_res: int = Field(512, ge=64, le=2048)
    threshold_a: float = -1.0  # preprocessor-specific (canny: low threshold); -1 = its default
    threshold_b: float = -1.0  # preprocessor-specific (canny: high threshold); -1 = its default
    control_mode: ControlMode = "Balanced"
    # Pixel perfect: the preprocessor works at the size the map will be used at (`processor_res` is
    # then computed from the picture, the generation's size and the resize mode when the map is made).
    pixel_perfect: bool = False
    # The control map the preprocessor made from `image`, kept so that a replay uses the very same map.
    map: str | None = None


class Reference(BaseModel):
    """A picture the image should resemble (a character's look), applied through an IP-Adapter."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    image: str | None = None  # the picture; None only where it could not be recorded (read from A1111 infotext)
    scale: float = Field(0.5, ge=0.0, le=1.5)
    model: str = ""  # an IP-Adapter in models/IP-Adapter; empty: the one that fits the checkpoint


class Outpaint(BaseModel):
    """How many pixels to add on each side of the input image before inpainting the new area."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    left: int = Field(0, ge=0)
    right: int = Field(0, ge=0)
    up: int = Field(0, ge=0)
    down: int = Field(0, ge=0)
    # What the new area starts from: the stretched edge, noise in the image's colours, or a blurred edge.
    fill: Literal["edge", "noise", "blur"] = "edge"

    def is_empty(self) -> bool:
        return not (self.left or self.right or self.up or self.down)


class Recipe(BaseModel):
    """Everything needed to reproduce a generation (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = Field(-1, ge=-1, le=2**32 - 1)
    subseed: int = Field(-1, ge=-1, le=2**32 - 1)
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0)
    steps: int = Field(20, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=0.0, le=30.0)
    # Forge's "Distilled CFG Scale": the guidance FLUX dev was distilled to take as an input (a real CFG scale of 1
    # runs one pass per step). None: 3.5, Forge's default; recorded only for such models, ignored by the others.
    distilled_cfg_scale: float | None = Field(None, ge=0.0, le=30.0)
    sampler_name: str = "Euler a"
    scheduler: str = "Automatic"
    # None means "the model family's native size" (512 for SD1, 768 for SD2-v, 1024 for SDXL).
    width: int | None = Field(None, ge=64)
    height: int | None = Field(None, ge=64)
    batch_size: int = Field(1, ge=1, le=64)
    n_iter: int = Field(1, ge=1, le=100)
    denoising_strength: float = Field(0.75, ge=0.0, le=1.0)
    clip_skip: int = Field(1, ge=1, le=12)
    enable_hr: bool = False
    hr_scale: float = Field(2.0, ge=1.0, le=4.0)
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = Field(0, ge=0, le=150)
    mask_blur: int = Field(4, ge=0, le=64)
    inpainting_fill: int = Field(1, ge=0, le=3)
    inpaint_full_res: bool = False
    inpaint_full_res_padding: int = Field(32, ge=0, le=256)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    refiner_checkpoint: str | None = None
    refiner_switch_at: float = Field(0.8, gt=0.0, lt=1.0)
    # A1111's eta: the noise an ancestral sampler ("Eta", default 1) or DDIM ("Eta DDIM", default 0) adds
    # back at each step. None: the sampler's default.
    eta: float | None = Field(None, ge=0.0, le=1.0)
    # A1111's options that change the image (their names in A1111's settings and `override_settings`).
    eta_noise_seed_delta: int = Field(0, ge=0, le=2**32 - 1)  # ENSD: samplers' step noise from seed + this
    sgm_noise_multiplier: bool = False  # txt2img's first noise scaled by sqrt(1 + sigma^2), as SGM's code
    pad_cond_uncond: bool = False  # pad the shorter of prompt and negative prompt to one batch

    # --- ours ---
    model: str | None = None
    mode: Mode = "txt2img"
    init_image: str | None = None
    mask: str | None = None
    outpaint: Outpaint | None = None
    controls: list[ControlUnit] = Field(default_factory=list)
    references: list[Reference] = Field(default_factory=list)
    rng: RNG = "cpu"

    def to_json(self) -> str:
        return self.model_dump_json(exclude_defaults=False)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        return cls.model_validate_json(text)


@dataclass
class Result:
    """What a generation gives back: images, one resolved Recipe per image, timings."""

    images: list[Any] = field(default_factory=list)  # PIL.Image.Image
    recipes: list[Recipe] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    decoder: str = "full"  # which decoder made the images: "full" (the model's VAE) or "fast" (TAESD); a run option, not the recipe's
    explanation: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # sentences for the job's log, e.g. a backend's fallback to torch
    infotexts: list[str] = field(default_factory=list)
