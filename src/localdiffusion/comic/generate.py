"""Panel generation on the engine: candidates saved into the project's assets with their recipes.

Two functions are the only ways these things happen, whoever asks (the CLI's book, the studio's jobs):
`render_shared` generates panels with shared attention, `place_image` brings a candidate's picture into
the project.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from localdiffusion.comic.model import Candidate, Panel, Project
from localdiffusion.comic.prompts import ip_adapters, panel_recipe, panel_references
from localdiffusion.comic.storage import ASSETS
from localdiffusion.control.units import keep_reference
from localdiffusion.engine import Progress
from localdiffusion.engine.hooks import RunHooks
from localdiffusion.engine.images import as_rgb, open_image
from localdiffusion.engine.shared_attention import SharedAttention
from localdiffusion.errors import BadInput
from localdiffusion.recipe import Recipe, Reference, Result
from localdiffusion.store.files import write_atomic
from localdiffusion.store.png import png_with_metadata


def candidate_recipes(engine: Any, project: Project, panel: Panel, folder: Path, count: int = 1,
                      keep: bool = True) -> list[Recipe]:
    """Recipes for the next `count` candidates; numbering goes on from the candidates the panel has, so
    regenerating gives new variations rather than the same pictures again. With `keep`, reference pictures
    are read and kept as inputs (what the queue takes); without, nothing is read or written (a preview)
    and references name the project's assets."""
    info = engine.checkpoint(project.style.model)
    references = panel_references(project, panel, folder if keep else None) if ip_adapters(engine.library) else []
    if keep:
        references = [_kept(reference, engine.home.root) for reference in references]
    start = len(panel.candidates)
    return [panel_recipe(project, panel, info, candidate=start + i, references=references) for i in range(count)]


def _kept(reference: Reference, home_root: Path) -> Reference:
    """The reference with its picture kept as an input, as the studio's queue accepts pictures."""
    image = as_rgb(open_image(reference.image, "character reference image"))
    return reference.model_copy(update={"image": keep_reference(reference.image, image, home_root)})


def result_png(result: Result, index: int = 0) -> bytes:
    """A generated image as the PNG a candidate keeps: A1111 infotext plus the recipe."""
    return png_with_metadata(result.images[index], result.infotexts[index], result.recipes[index].to_json())


def place_image(folder: Path, panel: Panel, candidate: Candidate, png: bytes, recipe: Recipe) -> None:
    """Bring a finished candidate's picture into the project: written as `assets/<panel>-<candidate>.png`,
    the candidate given it and the recipe that made it, and the panel shows the first candidate with a
    picture when it shows none yet."""
    ref = f"{ASSETS}/{panel.id}-{candidate.id}.png"
    write_atomic(Path(folder) / ref, lambda f: f.write(png))
    candidate.image = ref
    candidate.recipe = recipe
    show_first(panel)


def show_first(panel: Panel) -> bool:
    """When the panel shows no picture, show its first candidate that has one; True when it changed."""
    if panel.chosen_candidate() is None and any(c.image for c in panel.candidates):
        panel.chosen = next(c.id for c in panel.candidates if c.image)
        return True
    return False


def render_shared(engine: Any, recipes: list[Recipe], share: float, on_image: Callable[[int, Result], None], *,
                  on_start: Callable[[int], None] | None = None,
                  on_progress: Callable[[int, Progress], None] | None = None,
                  cancel: Callable[[], bool] | None = None) -> SharedAttention | None:
    """Generate `recipes` in order with shared attention (engine/shared_attention.py): the first run keeps
    `share` of its up-block self-attention tokens and every later one attends to them, so the cast keeps
    its look. `share` 0 makes plain generations. `on_start(i)` comes before recipe i, `on_image(i, result)`
    after it; `on_progress(i, progress)` during it. The shared tokens, or None when `share` is 0."""
    shared = SharedAttention(share) if share else None
    for i, recipe in enumerate(recipes):
        if on_start is not None:
            on_start(i)
        progress = None if on_progress is None else (lambda p, i=i: on_progress(i, p))
        result = engine.generate(recipe, hooks=RunHooks(on_progress=progress, cancel=cancel, shared=shared))
        if shared is not None:
            shared.writing = False
        on_image(i, result)
    return shared


def choose(panel: Panel, candidate_id: str) -> Candidate:
    """Make one of the panel's finished candidates the image the page shows."""
    for candidate in panel.candidates:
        if candidate.id == candidate_id:
            if candidate.image is None:
                raise BadInput(f"Candidate '{candidate_id}' has no image yet; wait for its job to finish.", field="candidate")
            panel.chosen = candidate_id
            return candidate
    raise BadInput(f"Panel '{panel.id}' has no candidate '{candidate_id}'.", field="candidate")
