"""`localdiffusion train lora|embedding DATASET_DIR`: teach a model a character or a style from a folder of
pictures with same-named .txt captions (kohya's convention); the result goes into the library.

The defaults are the studio's (train/settings.py `TrainSettings`, whose help texts these options show). Running
the same command again goes on from the last checkpoint (HOME/training/<owner>/<kind>-<name>/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from localdiffusion.cli.common import HomeOption, app, err, home_from, library_for, out
from localdiffusion.train.settings import TrainSettings

train_app = typer.Typer(help="Train your own LoRA or embedding from a folder of pictures with .txt captions.",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")

_HELP = {name: field.description for name, field in TrainSettings.model_fields.items()}
_DATASET = typer.Argument(..., help="A folder of pictures (PNG, JPEG, WEBP), each with an optional same-named .txt caption.")
_MODEL = typer.Option(..., "--model", "-m", help="The base checkpoint to train on (SD 1.x, SD 2.x or SDXL).")
_DEVICE = typer.Option(None, "--device", help="cuda, cuda:N, mps or cpu (default: the GPU if there is one).")
_SOURCE = typer.Option("", "--source", help="Where the pictures come from and whose they are, kept with the result.")


def _settings(**fields) -> TrainSettings:
    from pydantic import ValidationError

    from localdiffusion.errors import BadInput

    try:
        return TrainSettings(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        name = ".".join(str(p) for p in first["loc"])
        raise BadInput(f"The value {first.get('input')!r} for --{name.replace('_', '-')} is not allowed: {first['msg']}.",
                       field=name) from None


def _run(trainer, what: str) -> Path:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    total = trainer.training.total
    err.print(f"Training {what} on {len(trainer.dataset)} pictures for {total} steps on {trainer.base.device}; "
              "Ctrl+C stops it, and the same command goes on from the last checkpoint.", highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task("training", total=total, loss="-")
        path = trainer.run(on_progress=lambda p: bar.update(task, completed=p.step, loss=f"{p.loss:.4f}"))
    out.print(f"{path}", highlight=False, soft_wrap=True)
    return path


@train_app.command("lora")
def lora(
    dataset: Path = _DATASET,
    model: str = _MODEL,
    trigger: str = typer.Option(..., "--trigger", help="The word that calls up what was learned, put in front of every caption (e.g. mira_character)."),
    steps: Optional[int] = typer.Option(None, "--steps", help=_HELP["steps"]),
    rank: int = typer.Option(16, "--rank", help=_HELP["rank"]),
    name: Optional[str] = typer.Option(None, "--out", help="The LoRA's name (default: the trigger word); it goes to models/Lora/<owner>/NAME.safetensors."),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", help=_HELP["learning_rate"]),
    resolution: Optional[int] = typer.Option(None, "--resolution", help=_HELP["resolution"]),
    text_encoder: bool = typer.Option(False, "--text-encoder", help=_HELP["train_text_encoder"]),
    device: Optional[str] = _DEVICE,
    source: str = _SOURCE,
    home_dir: Optional[Path] = HomeOption,
) -> None:
    """Train a LoRA (kohya layout, loads in A1111, Forge, ComfyUI) and put it in the library."""
    from localdiffusion.train.lora import LoraTrainer

    settings = _settings(steps=steps, rank=rank, learning_rate=learning_rate, resolution=resolution,
                         train_text_encoder=text_encoder)
    library = library_for(home_from(home_dir))
    trainer = LoraTrainer(library, dataset, model=model, trigger=trigger, settings=settings, name=name, source=source,
                          device=device)
    _run(trainer, f"the LoRA '{trainer.name}'")
    err.print(f"Use it with <lora:{trainer.name}:1> and the word {trigger} in a prompt.", highlight=False)


@train_app.command("embedding")
def embedding(
    dataset: Path = _DATASET,
    model: str = _MODEL,
    token: str = typer.Option(..., "--token", help="The new word; the embedding is saved under this name, and writing it in a prompt uses it."),
    vectors: int = typer.Option(4, "--vectors", help=_HELP["vectors"]),
    steps: Optional[int] = typer.Option(None, "--steps", help=_HELP["steps"]),
    init_word: str = typer.Option("*", "--init-word", help=_HELP["init_word"]),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", help=_HELP["learning_rate"]),
    resolution: Optional[int] = typer.Option(None, "--resolution", help=_HELP["resolution"]),
    device: Optional[str] = _DEVICE,
    source: str = _SOURCE,
    home_dir: Optional[Path] = HomeOption,
) -> None:
    """Train a textual-inversion embedding (A1111 format) and put it in the library's embeddings/."""
    from localdiffusion.train.embedding import EmbeddingTrainer

    settings = _settings(steps=steps, vectors=vectors, init_word=init_word, learning_rate=learning_rate,
                         resolution=resolution)
    library = library_for(home_from(home_dir))
    trainer = EmbeddingTrainer(library, dataset, model=model, token=token, settings=settings, source=source, device=device)
    _run(trainer, f"the embedding '{token}'")
    err.print(f"Use it by writing {token} in a prompt.", highlight=False)
