"""Panel generation on the engine: candidates saved into the project's assets with their recipes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from localdiffusion.comic.model import Candidate, Panel, Project
from localdiffusion.comic.prompts import ip_adapters, panel_recipe, panel_references
from localdiffusion.comic.storage import ASSETS
from localdiffusion.control.units import keep_reference
from localdiffusion.engine.hooks import RunHooks
from localdiffusion.engine.images import as_rgb, open_image
from localdiffusion.engine.shared_attention import SharedAttention
from localdiffusion.errors import BadInput
from localdiffusion.metadata.png import save_png
from localdiffusion.recipe import Recipe, Reference


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


def generate_panel(engine: Any, project: Project, panel: Panel, folder: Path, candidates: int = 1,
                   on_progress: Callable[[Any], None] | None = None, shared: SharedAttention | None = None) -> list[Candidate]:
    """Generate `candidates` images for the panel, write each as `assets/<panel>-<candidate>.png` (A1111
    infotext plus the recipe), add them to the panel and choose the first if none was chosen yet.
    `shared` is the render's shared attention, written or read as its `writing` says (see book.py)."""
    made = []
    for recipe in candidate_recipes(engine, project, panel, folder, candidates):
        result = engine.generate(recipe, hooks=RunHooks(on_progress=on_progress, shared=shared))
        candidate = Candidate(recipe=result.recipes[0])
        ref = f"{ASSETS}/{panel.id}-{candidate.id}.png"
        save_png(result.images[0], Path(folder) / ref, result.infotexts[0], result.recipes[0].to_json())
        candidate.image = ref
        panel.candidates.append(candidate)
        made.append(candidate)
    if panel.chosen_candidate() is None and made:
        panel.chosen = made[0].id
    return made


def choose(panel: Panel, candidate_id: str) -> Candidate:
    """Make one of the panel's finished candidates the image the page shows."""
    for candidate in panel.candidates:
        if candidate.id == candidate_id:
            if candidate.image is None:
                raise BadInput(f"Candidate '{candidate_id}' has no image yet; wait for its job to finish.", field="candidate")
            panel.chosen = candidate_id
            return candidate
    raise BadInput(f"Panel '{panel.id}' has no candidate '{candidate_id}'.", field="candidate")
