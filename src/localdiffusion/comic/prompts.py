"""Panel prompts and recipes: the composed prompt, the panel's size, and the two consistency mechanisms.

The composed prompt is shown to the user as it is (style prefix, shot, each character's
description, action, setting, style suffix); a panel may replace it with its own text, which is
stored as `prompt_override` and used instead.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any

from localdiffusion.comic.geometry import bbox
from localdiffusion.comic.model import Panel, Project
from localdiffusion.comic.storage import asset_path
from localdiffusion.errors import BadInput, UnsupportedModel, one_of
from localdiffusion.models.info import ModelInfo
from localdiffusion.models.ip_adapter import adapter_shape, image_encoder_folder
from localdiffusion.recipe import Recipe, Reference
from localdiffusion.store.home import MODEL_DIRS

SHOT_PHRASES = {
    "close-up": "close-up shot",
    "medium": "medium shot",
    "wide": "wide shot, full body",
    "over-the-shoulder": "over-the-shoulder shot",
    "bird's-eye": "bird's-eye view, seen from above",
}
IP_ADAPTER_DIR = MODEL_DIRS["ipadapter"]
MAX_ASPECT = 3.0

# Plain-language explanations for the studio's panel sidebar.
MECHANISMS = {
    "seed": ("Shared description and seed: every panel with this character repeats the character's description "
             "word for word and starts from the character's own seed; each panel then blends in a little of its own "
             "variation seed (strength {strength}), so the pictures differ in pose and framing but keep the same "
             "look."),
    "reference": ("Reference image: the character's picture is shown to the model through an IP-Adapter at scale "
                  "{scale}, so faces, clothes and colours follow the picture rather than only the words."),
    "shared": ("Shared attention: when the empty panels are generated together (`localdiffusion comic render`, or "
               "Style → Generate all empty panels together), every panel after the first also looks at {share:.0%} of "
               "the first panel's image tokens in the UNet's later layers, so the cast keeps its look across panels "
               "(StoryDiffusion's idea); it costs memory, said before it starts. Panels generated one at a time do not "
               "use it."),
}


def compose_prompt(project: Project, panel: Panel) -> str:
    """Style prefix, shot, each present character's description, action, setting and style suffix."""
    parts = [project.style.prefix, SHOT_PHRASES[panel.shot]]
    for name in panel.characters:
        character = project.character(name)
        if character is None:
            raise BadInput(f"Panel '{panel.id}' names the character '{name}', who is not in the cast; "
                           f"the cast is {one_of([c.name for c in project.characters]) if project.characters else 'empty'}.",
                           field="characters")
        parts.append(character.description)
    parts += [panel.action, panel.setting, project.style.suffix]
    return ", ".join(p.strip().strip(",").strip() for p in parts if p and p.strip())


def panel_prompt(project: Project, panel: Panel) -> str:
    """What the panel is generated from: the user's override, else the composed prompt."""
    return panel.prompt_override if panel.prompt_override else compose_prompt(project, panel)


def _round8(value: float) -> int:
    return max(64, int(round(value / 8)) * 8)


def panel_size(aspect: float, native: int) -> tuple[int, int]:
    """A width and height at this aspect ratio, multiples of 8, with about native² pixels."""
    aspect = min(max(aspect, 1 / MAX_ASPECT), MAX_ASPECT)
    width = math.sqrt(native * native * aspect)
    return _round8(width), _round8(width / aspect)


def variation_seed(panel: Panel) -> int:
    """The panel's own variation seed: the one it was given, else one derived from its id (stable)."""
    return panel.variation_seed if panel.variation_seed is not None else zlib.crc32(panel.id.encode())


def character_seed(project: Project, panel: Panel) -> int | None:
    """The fixed seed of the first character present that has one."""
    for name in panel.characters:
        character = project.character(name)
        if character is not None and character.seed is not None:
            return character.seed
    return None


def panel_recipe(project: Project, panel: Panel, model: ModelInfo | None = None, candidate: int = 0,
                 references: list[Reference] | None = None) -> Recipe:
    """The Recipe for one candidate of a panel.

    Consistency through the seed: when a character present has a fixed seed, every panel (and every
    candidate) with that character starts from that seed, and `subseed`/`subseed_strength` mix in the
    panel's own variation seed (plus the candidate number), so the character keeps a look while the
    picture changes. Without a character seed, the panel's seed is used (random when -1).
    """
    style = project.style
    native = style.base_size or (model.native_size if model else 512)
    box = bbox(panel.shape)
    width, height = panel_size(box.w / box.h, native)
    fixed = character_seed(project, panel)
    if fixed is not None:
        seed, subseed, strength = fixed, (variation_seed(panel) + candidate) % 2**32, style.variation_strength
    else:
        seed = (panel.seed + candidate) % 2**32 if panel.seed >= 0 else -1
        subseed, strength = -1, 0.0
    return Recipe(
        prompt=panel_prompt(project, panel), negative_prompt=style.negative, model=style.model,
        sampler_name=style.sampler, steps=style.steps, cfg_scale=style.cfg, width=width, height=height,
        seed=seed, subseed=subseed, subseed_strength=strength, controls=list(panel.controls),
        references=references or [],
    )


def ip_adapters(library: Any) -> list[ModelInfo]:
    """The library's IP-Adapters that can run: their image encoder is in place."""
    return [adapter for adapter in library.list("ipadapter") if encoder_problem(adapter, library) is None]


def encoder_problem(adapter: ModelInfo, library: Any) -> str | None:
    """Why this IP-Adapter cannot run (its image encoder is missing or does not match), in one sentence; None when it can."""
    try:
        image_encoder_folder(adapter, adapter_shape(adapter, library.settings.allow_pickle), library.home.root, field="references")
    except (BadInput, UnsupportedModel) as e:
        return e.message
    return None


def panel_references(project: Project, panel: Panel, folder: Path | None = None) -> list[Reference]:
    """IP-Adapter references from the reference images of the characters present: files under the project
    folder (through `asset_path`'s check), or with no folder, the asset references as they are."""
    refs = []
    for name in panel.characters:
        character = project.character(name)
        if character is not None and character.reference_image:
            image = character.reference_image if folder is None else str(asset_path(folder, character.reference_image, "reference_image"))
            refs.append(Reference(image=image, scale=project.style.reference_scale))
    return refs


def consistency_notes(project: Project, home_root: Path, library: Any | None = None) -> list[str]:
    """One sentence per point the user should know about keeping characters consistent (without a
    library, no IP-Adapter is known)."""
    notes = [MECHANISMS["shared"].format(share=project.style.shared_attention)] if project.style.shared_attention else []
    seeded = [c.name for c in project.characters if c.seed is not None]
    unseeded = [c.name for c in project.characters if c.seed is None]
    if seeded:
        notes.append(MECHANISMS["seed"].format(strength=project.style.variation_strength) + f" Characters with a seed: {', '.join(seeded)}.")
    if unseeded:
        notes.append(f"{', '.join(unseeded)} {'has' if len(unseeded) == 1 else 'have'} no fixed seed, so only the shared "
                     "description keeps them alike; give a seed to hold their look across panels.")
    with_refs = [c.name for c in project.characters if c.reference_image]
    installed = library.list("ipadapter") if library is not None and with_refs else []
    problems = [problem for adapter in installed if (problem := encoder_problem(adapter, library))]
    if with_refs:
        if len(problems) < len(installed):
            notes.append(MECHANISMS["reference"].format(scale=project.style.reference_scale) + f" Characters with a reference: {', '.join(with_refs)}.")
        elif installed:
            notes.append(f"The reference images of {', '.join(with_refs)} are not used yet: {problems[0][:1].lower()}{problems[0][1:]}")
        else:
            notes.append(f"The reference images of {', '.join(with_refs)} are not used because no IP-Adapter weights are in "
                         f"{Path(home_root) / IP_ADAPTER_DIR}; put an IP-Adapter file there (for example ip-adapter_sd15.safetensors) to use them.")
    return notes
