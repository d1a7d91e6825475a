"""LoRA training: peft LoRA layers on the UNet's attention projections (and optionally the text encoders'),
trained by the shared loop (loop.py), saved in the kohya layout (kohya.py) into the library under the owner's name.

    trainer = LoraTrainer(library, "my-pictures/", model="sd15", trigger="mira_character")
    path = trainer.run(on_progress=print)          # models/Lora/local/mira_character.safetensors

Running the same trainer again (same output folder) resumes from the last checkpoint, or, when the run had
finished, saves the same file again without training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from localdiffusion.engine.device import pick_device
from localdiffusion.models.hashing import hash_target, legacy_model_hash
from localdiffusion.store.db import LOCAL_OWNER
from localdiffusion.train.base import TrainBase, load_base
from localdiffusion.train.dataset import Dataset, load_dataset
from localdiffusion.train.kohya import kohya_state_dict, lora_modules, metadata_with_hash, ss_metadata
from localdiffusion.train.loop import RunState, Trainer, TrainProgress, Training, now
from localdiffusion.train.output import PROVENANCE_KEY, check_name, library_target, provenance, work_folder
from localdiffusion.train.settings import TrainSettings

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


class LoraTrainee:
    """peft LoRA adapters ('default') on the base's UNet (and text encoders), their weights kept in float32."""

    def __init__(self, base: TrainBase, settings: TrainSettings) -> None:
        from peft import LoraConfig

        self.base, self.train_text = base, settings.train_text_encoder
        config = dict(r=settings.rank, lora_alpha=settings.alpha_value(), init_lora_weights="gaussian")
        self.parts: dict[str, torch.nn.Module] = {"unet": base.pipe.unet}
        with torch.random.fork_rng(devices=[]):  # the starting weights follow the seed, as the rest of the run does
            torch.manual_seed(settings.seed)
            base.pipe.unet.add_adapter(LoraConfig(target_modules=UNET_TARGETS, **config))
            if self.train_text:
                for part, encoder in zip(("text_encoder", "text_encoder_2"), base.text_encoders):
                    encoder.add_adapter(LoraConfig(target_modules=TEXT_TARGETS, **config))
                    self.parts[part] = encoder
        for param in self.parameters():
            param.data = param.data.float()
        if base.device.type == "cuda" and settings.gradient_checkpointing:
            base.pipe.unet.enable_gradient_checkpointing()
        self._cached: dict[tuple[str, ...], dict[str, torch.Tensor]] = {}

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for model in self.parts.values() for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]

    def weights(self) -> dict[str, torch.Tensor]:
        return {f"{part}:{path}.{which}": w for part, model in self.parts.items()
                for path, pair in lora_modules(model).items() for which, w in zip(("down", "up"), pair)}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        current = self.weights()
        missing = set(current) ^ set(weights)
        if missing:
            raise ValueError(f"the checkpoint does not match the LoRA layers ({sorted(missing)[:3]})")
        with torch.no_grad():
            for key, tensor in current.items():
                tensor.copy_(weights[key])

    def conditioning(self, captions: list[str]) -> dict[str, torch.Tensor]:
        if self.train_text:
            return self.base.encode(captions)
        key = tuple(captions)
        if key not in self._cached:
            with torch.no_grad():
                self._cached[key] = self.base.encode(captions)
        return self._cached[key]


class LoraTrainer(Trainer):
    """One LoRA training run: the dataset, the base model, the loop and where the result goes."""

    def __init__(self, library: Any, dataset_dir: Path | str, *, model: str | None, trigger: str,
                 settings: TrainSettings | None = None, name: str | None = None, owner: str = LOCAL_OWNER,
                 source: str = "", device: str | None = None, out_dir: Path | None = None) -> None:
        self.settings = settings or TrainSettings()
        self.library, self.owner, self.source = library, owner, source
        self.extra: dict[str, Any] = {}  # more for the provenance record (a training job: the dataset's id and name)
        self.name = check_name(name or trigger)
        self.target = library_target(library.home, "lora", owner, self.name)
        self.base = load_base(library, model, pick_device(device), self.settings.mixed_precision)
        self.dataset: Dataset = load_dataset(dataset_dir, trigger, self.settings.resolution or self.base.info.native_size,
                                             self.settings.crop)
        self.trainee = LoraTrainee(self.base, self.settings)
        self.training = Training(self.base, self.dataset, self.settings, "lora", self.trainee,
                                 out_dir or work_folder(library.home, "lora", owner, self.name), weight_decay=1e-2)

    def package(self, state: RunState) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The finished LoRA's tensors (kohya layout) and metadata (ss_*, provenance), without writing them (a
        training job hands them to the result store as bytes)."""
        base, settings = self.base, self.settings
        state.finished_at = state.finished_at or now()
        tensors = kohya_state_dict(self.trainee.parts, settings.alpha_value(), base.family)
        resolution = self.dataset.resolution
        meta = ss_metadata(
            family=base.family, base_name=base.info.name, base_sha256=base.info.sha256,
            base_legacy_hash=legacy_model_hash(hash_target(base.info.path)), rank=settings.rank,
            alpha=settings.alpha_value(), steps=state.step, resolution=(resolution, resolution),
            tag_frequency=self.dataset.tag_frequency(), images=len(self.dataset), output_name=self.name,
            started_at=state.started_at, finished_at=state.finished_at, learning_rate=self.training.lr,
            min_snr_gamma=settings.min_snr_gamma, train_text_encoder=settings.train_text_encoder, seed=settings.seed,
            mixed_precision=str(base.autocast_dtype or "no").removeprefix("torch.").replace("bfloat16", "bf16").replace("float16", "fp16"),
            batch_size=settings.batch_size, buckets=settings.crop == "buckets")
        meta[PROVENANCE_KEY] = provenance(kind="lora", owner=self.owner, dataset=self.dataset, source=self.source,
                                          base=base, state=state, device=str(base.device), extra=self.extra)
        return tensors, metadata_with_hash(tensors, meta)


def train_lora(library: Any, dataset_dir: Path | str, *, model: str | None, trigger: str,
               settings: TrainSettings | None = None, on_progress: Callable[[TrainProgress], None] | None = None,
               cancel: Callable[[], bool] | None = None, **options: Any) -> Path:
    """Train a LoRA on a dataset folder and save it into the library; see LoraTrainer for the options."""
    return LoraTrainer(library, dataset_dir, model=model, trigger=trigger, settings=settings, **options).run(on_progress, cancel)
