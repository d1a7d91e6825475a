"""Textual inversion: a new word whose vectors are the only thing trained, saved as an A1111 embedding.

The word (`--token`) takes `vectors` token positions. During training each tokenizer gets placeholder tokens
(`<word-0>` ...) wherever a caption has the word, and a hook on each text encoder's token embedding puts the
trained vectors at those positions, so only those vectors get gradients; the model itself stays as it was.
The vectors start from the init word's embedding. The file is A1111's: `emb_params` for SD1/SD2, `clip_l` and
`clip_g` for SDXL, at `embeddings/<owner>/<word>.safetensors`, so writing the word in a prompt uses it
(prompts/embeddings.py, A1111, Forge, ComfyUI).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from localdiffusion.engine.device import pick_device
from localdiffusion.errors import BadInput
from localdiffusion.store.db import LOCAL_OWNER
from localdiffusion.train.base import TrainBase, load_base
from localdiffusion.train.dataset import load_dataset
from localdiffusion.train.loop import RunState, Trainer, TrainProgress, Training, now
from localdiffusion.train.output import PROVENANCE_KEY, check_name, library_target, provenance, work_folder
from localdiffusion.train.settings import TrainSettings


class EmbeddingTrainee:
    """`vectors` trainable rows per text encoder, put in place of the word's placeholder tokens."""

    def __init__(self, base: TrainBase, token: str, vectors: int, init_word: str) -> None:
        self.base, self.token = base, token
        self.placeholders = [f"<{token}-{i}>" for i in range(vectors)]
        self._word = re.compile(rf"(?<![\w-]){re.escape(token)}(?![\w-])")
        self.vectors: list[torch.nn.Parameter] = []
        self._first_ids: list[int] = []
        for tokenizer, encoder in zip(base.tokenizers, base.text_encoders):
            added = tokenizer.add_tokens(self.placeholders)
            if added != vectors:
                raise BadInput(f"The word '{token}' is already known to the tokenizer; choose another word.", field="token")
            first = tokenizer.convert_tokens_to_ids(self.placeholders[0])
            table = encoder.get_input_embeddings()
            init_ids = tokenizer(init_word, add_special_tokens=False).input_ids or tokenizer("*", add_special_tokens=False).input_ids
            start = table.weight.detach()[torch.tensor(init_ids, device=table.weight.device)].float()
            rows = torch.stack([start[i % len(init_ids)] for i in range(vectors)]).clone()
            param = torch.nn.Parameter(rows)
            encoder.resize_token_embeddings(len(tokenizer))
            encoder.get_input_embeddings().register_forward_hook(self._hook(first, param))
            self.vectors.append(param)
            self._first_ids.append(first)

    @staticmethod
    def _hook(first: int, param: torch.nn.Parameter):
        def put(module, inputs, output):
            ids = inputs[0]
            mask = ids >= first
            if not bool(mask.any()):
                return output
            out = output.clone()
            out[mask] = param[(ids[mask] - first)].to(out.dtype)
            return out

        return put

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.vectors)

    def weights(self) -> dict[str, torch.Tensor]:
        return {f"vectors.{i}": v for i, v in enumerate(self.vectors)}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, v in enumerate(self.vectors):
                v.copy_(weights[f"vectors.{i}"])

    def spell(self, caption: str) -> str:
        return self._word.sub(" ".join(self.placeholders), caption)

    def conditioning(self, captions: list[str]) -> dict[str, torch.Tensor]:
        return self.base.encode([self.spell(c) for c in captions])

    def tensors(self) -> dict[str, torch.Tensor]:
        """The A1111 file's tensors: `emb_params`, or SDXL's `clip_l` and `clip_g`."""
        rows = [v.detach().to("cpu", torch.float32).contiguous() for v in self.vectors]
        return {"clip_l": rows[0], "clip_g": rows[1]} if self.base.sdxl else {"emb_params": rows[0]}


class EmbeddingTrainer(Trainer):
    """One textual-inversion run: the dataset (captions with the word in front), the base, the loop, the file."""

    def __init__(self, library: Any, dataset_dir: Path | str, *, model: str | None, token: str,
                 settings: TrainSettings | None = None, owner: str = LOCAL_OWNER, source: str = "",
                 device: str | None = None, out_dir: Path | None = None) -> None:
        self.settings = settings or TrainSettings()
        self.library, self.owner, self.source = library, owner, source
        self.extra: dict[str, Any] = {}  # more for the provenance record (a training job: the dataset's id and name)
        self.name = check_name(token, "token")
        self.target = library_target(library.home, "embedding", owner, self.name)
        self.base = load_base(library, model, pick_device(device), self.settings.mixed_precision)
        self.dataset = load_dataset(dataset_dir, token, self.settings.resolution or self.base.info.native_size,
                                    self.settings.crop)
        self.trainee = EmbeddingTrainee(self.base, token, self.settings.vectors, self.settings.init_word)
        self.training = Training(self.base, self.dataset, self.settings, "embedding", self.trainee,
                                 out_dir or work_folder(library.home, "embedding", owner, self.name), weight_decay=0.0)


    def package(self, state: RunState) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The finished embedding's tensors and metadata (provenance), without writing them."""
        state.finished_at = state.finished_at or now()
        meta = {PROVENANCE_KEY: provenance(kind="embedding", owner=self.owner, dataset=self.dataset, source=self.source,
                                           base=self.base, state=state, device=str(self.base.device),
                                           extra={"vectors": self.settings.vectors, "init_word": self.settings.init_word,
                                                  **self.extra})}
        return self.trainee.tensors(), meta


def train_embedding(library: Any, dataset_dir: Path | str, *, model: str | None, token: str,
                    settings: TrainSettings | None = None, on_progress: Callable[[TrainProgress], None] | None = None,
                    cancel: Callable[[], bool] | None = None, **options: Any) -> Path:
    """Train a textual-inversion embedding on a dataset folder and save it into the library."""
    return EmbeddingTrainer(library, dataset_dir, model=model, token=token, settings=settings, **options).run(on_progress, cancel)
