"""What the command modules share: the root command, the consoles, and opening the home folder, the model
library and the engine from the common flags; a Recipe from flags with one sentence for a bad value; a
progress bar on the error console.

Every command module imports from here (and from `options.py`), never from `app.py` or another command
module, so the modules do not import each other; `app.py` only registers them and runs the command.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress as Bar, TextColumn, TimeRemainingColumn

from localdiffusion.errors import BadInput
from localdiffusion.recipe import Recipe
from localdiffusion.store.home import Home

app = typer.Typer(
    name="localdiffusion",
    help="Local Diffusion: make images with Stable Diffusion on your own machine, and see what each setting does.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, emoji=False)
out = Console(emoji=False)

HomeOption = typer.Option(None, "--home", help="Home folder (models, outputs, database). Default: $LOCALDIFFUSION_HOME or the user data dir.")

opened_homes: list[Home] = []  # the home folder this command uses, once it has one (crash logs go there)


def home_from(path: Optional[Path]) -> Home:
    home = Home(path).ensure()
    opened_homes.append(home)
    return home


def library_for(home: Home, allow_pickle: bool = False):
    """The library a command line uses: it also takes a model's path, adding one from elsewhere in place
    (as `models add` does), so that the recipes saved with the images name a model that resolves again."""
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    library = ModelLibrary(home, Database(home.db_path), accept_paths=True)
    if allow_pickle:
        library.settings = library.settings.model_copy(update={"allow_pickle": True})
    return library


def open_engine(home_dir: Optional[Path], allow_pickle: bool = False, **options: Any):
    """An Engine over the command line's library in the `--home` folder, with these EngineOptions."""
    from localdiffusion.engine import Engine, EngineOptions

    return Engine(library_for(home_from(home_dir), allow_pickle), EngineOptions(**options))


def with_control_maps(recipe: Recipe, home: Home, library) -> Recipe:
    """The recipe with its ControlNet units' maps made and models picked, and its reference pictures kept as
    inputs (the engine writes nothing under the home; unchanged without units and references)."""
    if not recipe.controls and not recipe.references:
        return recipe
    from localdiffusion.control.units import keep_references, prepare_controls

    return keep_references(prepare_controls(recipe, home.root, library), home.root)


def recipe_from_fields(**fields) -> Recipe:
    """A Recipe, or one sentence naming the first field pydantic refused and why."""
    from pydantic import ValidationError

    try:
        return Recipe(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        name = ".".join(str(p) for p in first["loc"])
        raise BadInput(f"The value {first.get('input')!r} for {name} is not allowed: {first['msg']}.", field=name) from None


@dataclass
class ProgressBar:
    """One task's bar on the error console (gone when done), fed by `update` or by an engine's `on_step`."""

    bar: Bar
    task: Any

    def update(self, **changes: Any) -> None:
        self.bar.update(self.task, **changes)

    def on_step(self, p) -> None:
        """An engine `Progress` (or one shaped like it): the phase and iteration, and the steps of all iterations."""
        self.update(description=f"{p.phase} {p.iteration + 1}/{p.iterations}", total=p.total * p.iterations,
                    completed=p.iteration * p.total + p.step)


@contextmanager
def progress_bar(description: str, total: Optional[float], counts: str = "{task.completed}/{task.total}") -> Iterator[ProgressBar]:
    with Bar(TextColumn("{task.description}"), BarColumn(), TextColumn(counts),
             TimeRemainingColumn(), console=err, transient=True) as bar:
        yield ProgressBar(bar, bar.add_task(description, total=total))
