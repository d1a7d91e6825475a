"""Training settings: sensible defaults a beginner need not touch, each with a plain-language help text.

The help texts (`Field(description=...)`) are the ones a Train page shows behind its "i" buttons, and the CLI
shows in `--help`; `TrainSettings.model_json_schema()` carries them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MIN_STEPS, MAX_STEPS, STEPS_PER_IMAGE = 300, 3000, 100


def default_steps(images: int) -> int:
    """About 100 steps per picture, at least 300 and at most 3000 (10 pictures: 1000 steps)."""
    return min(max(STEPS_PER_IMAGE * images, MIN_STEPS), MAX_STEPS)


class TrainSettings(BaseModel):
    """Everything that steers one training run (LoRA or embedding); None means "choose for me"."""

    model_config = ConfigDict(extra="forbid")

    steps: int | None = Field(None, ge=1, le=100_000, description=(
        "How many times the model looks at one of your pictures and corrects itself. Empty: about 100 per "
        "picture (at least 300, at most 3000). More steps learn more, and past a point copy your pictures "
        "too closely (overfitting)."))
    rank: int = Field(16, ge=1, le=256, description=(
        "LoRA only: how much the LoRA can hold. 16 is plenty for a character or a style; higher ranks make "
        "bigger files and learn details (and mistakes) faster."))
    alpha: float | None = Field(None, gt=0, le=1024, description=(
        "LoRA only: scales the LoRA's effect while training; empty means the same as the rank (no scaling)."))
    learning_rate: float | None = Field(None, gt=0, le=1.0, description=(
        "How big each correction is. Empty: 1e-4 for a LoRA, 5e-3 for an embedding. Too high and the "
        "pictures fall apart; too low and nothing is learned."))
    train_text_encoder: bool = Field(False, description=(
        "LoRA only: also adapt the text encoder (how the prompt's words are read), not only the image "
        "model. It can learn a new word more strongly, and overfits sooner."))
    vectors: int = Field(4, ge=1, le=75, description=(
        "Embedding only: how many word-slots the new word takes in a prompt. More can hold more, and "
        "leave less room in the prompt (75 per chunk)."))
    init_word: str = Field("*", min_length=1, max_length=100, description=(
        "Embedding only: the word the new word starts from, such as 'woman' or 'drawing'; '*' starts "
        "from nothing in particular."))
    resolution: int | None = Field(None, ge=64, le=2048, multiple_of=8, description=(
        "The picture size training works at. Empty: the model's own (512 for SD 1.x, 1024 for SDXL). Your "
        "pictures are cropped and scaled to it."))
    crop: Literal["square", "buckets"] = Field("square", description=(
        "'square': the centre square of every picture. 'buckets': keep each picture's shape, sorted into a "
        "few sizes of about the same area, so tall and wide pictures are not cut."))
    batch_size: int = Field(1, ge=1, le=16, description=(
        "How many pictures each step looks at together. 1 fits every GPU; more is smoother and needs more memory."))
    min_snr_gamma: float | None = Field(5.0, ge=0, le=100, description=(
        "Min-SNR weighting: the nearly-clean steps count less, so training spends its effort where the "
        "picture is still being formed. 5 is the published default; empty turns it off."))
    save_every: int = Field(100, ge=1, le=100_000, description=(
        "Keep a checkpoint every this many steps, so a stopped or crashed run goes on from there."))
    seed: int = Field(0, ge=0, le=2**32 - 1, description=(
        "Which pictures, noise and moments each step draws. The same seed and settings train the same result."))
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field("auto", description=(
        "Number format on a GPU: 'auto' picks bf16 where the GPU has it, else fp16, for speed and memory; "
        "'no' trains in full precision. A CPU always trains in full precision."))
    gradient_checkpointing: bool = Field(True, description=(
        "On a GPU: recompute some results instead of keeping them, about a third less memory for about "
        "a fifth more time."))

    def steps_for(self, images: int) -> int:
        return self.steps or default_steps(images)

    def lr_for(self, kind: Literal["lora", "embedding"]) -> float:
        return self.learning_rate or (1e-4 if kind == "lora" else 5e-3)

    def alpha_value(self) -> float:
        return float(self.alpha or self.rank)
