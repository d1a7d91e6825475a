"""The training loop both kinds share: noise-prediction (or v) loss with min-SNR weighting, AdamW, progress,
cancel, and checkpoints that a restarted run resumes from.

Every step draws its pictures, timesteps and noise from a generator seeded by (seed, step), so a run that
resumes from a checkpoint goes on exactly as it would have without the interruption.

The output folder holds `state.json` (what is training, on what, how far: see `RunState`) and the checkpoint it
names (`checkpoint-<step>.pt`: the trained weights and the optimizer's state). Both are written atomically,
the checkpoint before the state that names it, and older checkpoints are removed after, so a `kill -9` at any
moment leaves a state that names a whole checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import torch
from pydantic import BaseModel

from localdiffusion.errors import BadInput, Cancelled
from localdiffusion.store.files import atomic_path, write_text_atomic
from localdiffusion.train.base import TrainBase, min_snr_weights
from localdiffusion.train.dataset import Dataset
from localdiffusion.train.settings import TrainSettings

STATE_FILE = "state.json"
STATE_VERSION = 1


@dataclass(frozen=True)
class TrainProgress:
    """One step done: `step` of `total` (1-based), its loss, the seconds left at the current pace."""

    step: int
    total: int
    loss: float
    eta_s: float | None
    seconds: float  # training time so far, this run and the runs it resumed


class RunState(BaseModel):
    """`state.json`: enough to resume a run after a restart and to describe the finished one."""

    version: int = STATE_VERSION
    kind: str  # "lora" or "embedding"
    fingerprint: dict[str, Any]  # what must be the same to resume: base model hash, dataset hash, settings
    step: int = 0  # steps done (the checkpoint's)
    total: int
    checkpoint: str | None = None  # file name in the output folder
    losses: list[float] = []
    seconds: float = 0.0  # training time (GPU-seconds on a GPU)
    started_at: str
    finished_at: str | None = None
    output: str | None = None  # the saved file, once finished


class Trainee(Protocol):
    """What is trained: the parameters, and how captions become conditioning with them."""

    def parameters(self) -> list[torch.nn.Parameter]: ...
    def weights(self) -> dict[str, torch.Tensor]: ...
    def load_weights(self, weights: dict[str, torch.Tensor]) -> None: ...
    def conditioning(self, captions: list[str]) -> dict[str, torch.Tensor]: ...


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_state(out_dir: Path) -> RunState | None:
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return RunState.model_validate_json(path.read_text("utf-8"))
    except ValueError:
        raise BadInput(f"The training state {path} cannot be read; remove the folder {out_dir} to start again.",
                       field="out") from None


class Training:
    """One run of the loop over a dataset, for one trainee, with its checkpoints in `out_dir`."""

    def __init__(self, base: TrainBase, dataset: Dataset, settings: TrainSettings, kind: str, trainee: Trainee,
                 out_dir: Path, weight_decay: float) -> None:
        self.base, self.dataset, self.settings, self.kind, self.trainee = base, dataset, settings, kind, trainee
        self.out_dir = Path(out_dir)
        self.total = settings.steps_for(len(dataset))
        self.lr = settings.lr_for("lora" if kind == "lora" else "embedding")
        self.weight_decay = weight_decay
        self._latents: list[torch.Tensor] | None = None

    # -- data --------------------------------------------------------------------------------

    def latents(self) -> list[torch.Tensor]:
        if self._latents is None:
            self._latents = [self.base.latents(self.dataset.pixels(item)) for item in self.dataset.items]
        return self._latents

    def draw(self, step: int) -> tuple[torch.Tensor, list[str], list[tuple[int, int]], torch.Tensor, torch.Tensor]:
        """Step `step`'s batch: latents, captions, sizes, noise and timesteps, from a generator of (seed, step).
        A batch takes pictures of one size (bucket) only: the first drawn picture's."""
        gen = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + step)
        items, latents = self.dataset.items, self.latents()
        first = int(torch.randint(len(items), (1,), generator=gen))
        same = [i for i, item in enumerate(items) if item.size == items[first].size]
        rest = [same[int(j)] for j in torch.randint(len(same), (self.settings.batch_size - 1,), generator=gen)]
        chosen = [first, *rest]
        batch = torch.stack([latents[i] for i in chosen])
        noise = torch.randn(batch.shape, generator=gen)
        timesteps = torch.randint(0, self.base.noise_scheduler.config.num_train_timesteps, (len(chosen),), generator=gen)
        return batch, [items[i].caption for i in chosen], [items[i].size for i in chosen], noise, timesteps

    def loss(self, latents: torch.Tensor, captions: list[str], sizes: list[tuple[int, int]], noise: torch.Tensor,
             timesteps: torch.Tensor, weighted: bool = True) -> torch.Tensor:
        """The batch's loss: the mean squared error of the UNet's noise (or v) prediction, per picture weighted
        by min-SNR."""
        base, device = self.base, self.base.device
        latents, noise, timesteps = latents.to(device), noise.to(device), timesteps.to(device)
        noisy = base.noise_scheduler.add_noise(latents, noise, timesteps)
        target = base.noise_scheduler.get_velocity(latents, noise, timesteps) if base.prediction_type == "v_prediction" else noise
        with base.autocast():
            cond = self.trainee.conditioning(captions)
            pred = base.pipe.unet(noisy.to(base.weight_dtype), timesteps, **base.unet_kwargs(cond, sizes)).sample
        per_picture = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        gamma = self.settings.min_snr_gamma if weighted else None
        return (per_picture * min_snr_weights(base.noise_scheduler, timesteps, gamma, base.prediction_type).to(device)).mean()

    @torch.no_grad()
    def measure(self, seed: int = 1234, draws: int = 8) -> float:
        """The unweighted loss over every picture at `draws` fixed timesteps and noises (the same for the same
        seed): comparable before and after training."""
        gen = torch.Generator().manual_seed(seed)
        total, count = 0.0, 0
        steps = torch.linspace(50, self.base.noise_scheduler.config.num_train_timesteps - 50, draws).long()
        for latent, item in zip(self.latents(), self.dataset.items):
            for t in steps:
                noise = torch.randn((1, *latent.shape), generator=gen)
                total += float(self.loss(latent[None], [item.caption], [item.size], noise, t[None], weighted=False))
                count += 1
        return total / count

    # -- the loop ----------------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        settings = self.settings.model_dump(exclude={"save_every"})
        return {"kind": self.kind, "model": self.base.info.sha256, "dataset": self.dataset.content_hash,
                "trigger": self.dataset.trigger, "settings": settings, "total": self.total}

    def run(self, on_progress: Callable[[TrainProgress], None] | None = None,
            cancel: Callable[[], bool] | None = None) -> RunState:
        """Train to the last step, from the last checkpoint in the output folder if there is one; returns the
        state (finished). Cancel (checked before every step) keeps a checkpoint of the steps done and raises
        Cancelled."""
        params = self.trainee.parameters()
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        scaler = torch.amp.GradScaler("cuda") if self.base.autocast_dtype == torch.float16 else None
        state = self._resume(optimizer, scaler)
        if state.step >= state.total:
            return state
        self.latents()
        for part in (self.base.pipe.unet, *self.base.text_encoders):
            part.train()
        begun, first = time.monotonic(), state.step
        while state.step < state.total:
            if cancel is not None and cancel():
                self._checkpoint(state, optimizer, scaler)
                raise Cancelled(f"Training stopped after step {state.step} of {state.total}; run it again to go on "
                                "from there.")
            t0 = time.monotonic()
            loss = self.loss(*self.draw(state.step))
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            (scaler.step(optimizer) if scaler else optimizer.step())
            if scaler:
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if self.base.device.type == "cuda":
                torch.cuda.synchronize(self.base.device)
            state.step += 1
            state.seconds += time.monotonic() - t0
            state.losses.append(float(loss.detach()))
            if state.step % self.settings.save_every == 0 or state.step == state.total:
                self._checkpoint(state, optimizer, scaler)
            if on_progress is not None:
                pace = (time.monotonic() - begun) / (state.step - first)
                on_progress(TrainProgress(state.step, state.total, state.losses[-1], pace * (state.total - state.step),
                                          state.seconds))
        for part in (self.base.pipe.unet, *self.base.text_encoders):
            part.eval()
        return state

    def _resume(self, optimizer, scaler) -> RunState:
        for partial in self.out_dir.glob(".*.tmp"):  # a file half-written when the process was killed
            partial.unlink(missing_ok=True)
        state = read_state(self.out_dir)
        fingerprint = json.loads(json.dumps(self.fingerprint()))
        if state is None:
            return RunState(kind=self.kind, fingerprint=fingerprint, total=self.total, started_at=now())
        if state.fingerprint != fingerprint:
            changed = sorted(k for k in fingerprint if state.fingerprint.get(k) != fingerprint.get(k))
            raise BadInput(f"The output folder {self.out_dir} holds a run with another {', '.join(changed)}; choose "
                           "another output name, or remove that folder to start again.", field="out")
        if state.checkpoint:
            saved = torch.load(self.out_dir / state.checkpoint, map_location="cpu", weights_only=True)
            self.trainee.load_weights(saved["weights"])
            optimizer.load_state_dict(saved["optimizer"])
            if scaler is not None and saved.get("scaler"):
                scaler.load_state_dict(saved["scaler"])
        return state

    def _checkpoint(self, state: RunState, optimizer, scaler) -> None:
        if state.step == 0:
            return
        name = f"checkpoint-{state.step:06d}.pt"
        if state.checkpoint != name:
            data = {"weights": {k: v.detach().cpu() for k, v in self.trainee.weights().items()},
                    "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None}
            with atomic_path(self.out_dir / name) as tmp:
                torch.save(data, tmp)
            state.checkpoint = name
        self.save_state(state)
        for old in self.out_dir.glob("checkpoint-*.pt"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def save_state(self, state: RunState) -> None:
        write_text_atomic(self.out_dir / STATE_FILE, state.model_dump_json(indent=1))


class Trainer:
    """What a LoRA trainer and an embedding trainer share: train (or resume) to the last step, then write the
    file their `package` makes into the library, whole or not at all. A subclass sets `training` and `target`."""

    training: Training
    target: Path

    def package(self, state: RunState) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        raise NotImplementedError

    def run(self, on_progress: Callable[[TrainProgress], None] | None = None,
            cancel: Callable[[], bool] | None = None) -> Path:
        """Train (or resume) to the last step, then save the result into the library; returns its path."""
        return self.save(self.training.run(on_progress, cancel))

    def save(self, state: RunState) -> Path:
        write_safetensors(self.target, *self.package(state))
        state.output = str(self.target)
        self.training.save_state(state)
        return self.target


def write_safetensors(target: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """A safetensors file written whole or not at all."""
    from safetensors.torch import save_file

    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return target
