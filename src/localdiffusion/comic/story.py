"""STORY.yaml: a plain-text story (title, style, cast, pages of panels with dialogue) turned into a Project.

    title: The lost robot
    authors: [Group 3]
    page: A4                      # A4, Letter, square, or {width: 8, height: 8, unit: in}
    direction: ltr                # rtl for manga
    style: {prefix: "comic book art", negative: "blurry", steps: 20}
    characters:
      - {name: Mia, description: "a girl with short red hair, green raincoat", seed: 1234}
    pages:
      - layout: grid-2x2          # optional; by default a template for the panel count
        panels:
          - description: Mia finds a small robot       # the action
            setting: a rainy street at night
            characters: [Mia]
            shot: wide
            dialogue: [{speaker: Mia, text: "Hello?"}]
            captions: ["It was raining again."]
            sfx: "DRIP"

Errors name the file and line: "story.yaml line 12: ...".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from localdiffusion.comic.geometry import inner_box, pt
from localdiffusion.comic.layouts import apply_template, ordered_panels, template, template_for
from localdiffusion.comic.model import MAX_PANELS, Balloon, Box, Character, Page, PageSize, Panel, Project, Style, page_size
from localdiffusion.errors import BadInput, one_of

LINE = "__line__"
SHOTS = ("close-up", "medium", "wide", "over-the-shoulder", "bird's-eye")
STYLE_KEYS = {"prefix": "prefix", "suffix": "suffix", "negative": "negative", "model": "model", "sampler": "sampler",
              "steps": "steps", "cfg": "cfg", "base_size": "base_size", "variation_strength": "variation_strength",
              "shared_attention": "shared_attention"}


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the (1-based) line of every mapping, for error messages."""


def _mapping_with_line(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    data = loader.construct_mapping(node, deep=True)
    data[LINE] = node.start_mark.line + 1
    return data


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


class StoryError(BadInput):
    pass


class Story:
    def __init__(self, name: str) -> None:
        self.name = name

    def error(self, line: int | None, message: str) -> StoryError:
        return StoryError(f"{self.name} line {line}: {message}" if line else f"{self.name}: {message}", field="story")


def _line(data: Any) -> int | None:
    return data.get(LINE) if isinstance(data, dict) else None


def _clean(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != LINE}


def load_story(path: Path) -> Project:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"The story file '{path}' does not exist; give the path of a STORY.yaml.", field="story")
    return parse_story(path.read_text("utf-8"), path.name)


def parse_story(text: str, name: str = "story.yaml") -> Project:
    story = Story(name)
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise story.error(mark.line + 1 if mark else None, f"this is not valid YAML ({problem}).") from None
    if not isinstance(data, dict):
        raise story.error(None, "the story must be a mapping with a title, characters and pages.")
    return _project(story, data)


def _project(story: Story, data: dict) -> Project:
    direction = data.get("direction", "ltr")
    if direction not in ("ltr", "rtl"):
        raise story.error(_line(data), f"the direction '{direction}' is unknown; use ltr or rtl (manga).")
    authors = data.get("authors", [])
    project = Project(
        title=str(data.get("title", "Untitled comic")),
        authors=[str(a) for a in (authors if isinstance(authors, list) else [authors])],
        page_size=_page_size(story, data), direction=direction, style=_style(story, data.get("style") or {}),
        characters=[_character(story, c) for c in data.get("characters") or []],
    )
    if "dpi" in data:
        project.dpi = _validated(story, _line(data), lambda: Project(dpi=data["dpi"])).dpi
    pages = data.get("pages") or []
    if not isinstance(pages, list) or not pages:
        raise story.error(_line(data), "the story has no pages; add 'pages:' with a list of pages of panels.")
    for number, page in enumerate(pages, start=1):
        project.pages.append(_page(story, project, page, number))
    return project


def _validated(story: Story, line: int | None, make):
    try:
        return make()
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise story.error(line, f"the value {first.get('input')!r} for {field} is not allowed: {first['msg']}.") from None


def _page_size(story: Story, data: dict) -> PageSize:
    page = data.get("page", "A4")
    try:
        if isinstance(page, dict):
            return page_size("custom", page.get("width"), page.get("height"), page.get("unit", "mm"))
        return page_size(str(page))
    except (BadInput, ValidationError) as e:
        raise story.error(_line(data), str(e).rstrip(".") + ".") from None


def _style(story: Story, data: dict) -> Style:
    unknown = [k for k in _clean(data) if k not in STYLE_KEYS]
    if unknown:
        raise story.error(_line(data), f"the style has no setting '{unknown[0]}'; use {one_of(list(STYLE_KEYS))}.")
    return _validated(story, _line(data), lambda: Style(**{STYLE_KEYS[k]: v for k, v in _clean(data).items()}))


def _character(story: Story, data: Any) -> Character:
    if not isinstance(data, dict) or "name" not in data:
        raise story.error(_line(data), "each character needs at least a name (and a description).")
    fields = {k: v for k, v in _clean(data).items() if k in ("name", "description", "seed", "reference_image")}
    fields["name"] = str(fields["name"])
    return _validated(story, _line(data), lambda: Character(**fields))


def _page(story: Story, project: Project, data: Any, number: int) -> Page:
    panels = data.get("panels") if isinstance(data, dict) else None
    if not isinstance(panels, list) or not panels:
        raise story.error(_line(data), f"page {number} has no panels; give it 'panels:' with 1 to {MAX_PANELS} panels.")
    if len(panels) > MAX_PANELS:
        raise story.error(_line(data), f"page {number} has {len(panels)} panels; a page holds at most {MAX_PANELS}.")
    layout = data.get("layout")
    try:
        chosen = template(str(layout)) if layout else template_for(len(panels))
    except BadInput as e:
        raise story.error(_line(data), str(e)) from None
    if chosen.panels != len(panels):
        raise story.error(_line(data), f"page {number} has {len(panels)} panels but the layout '{chosen.name}' has "
                                       f"{chosen.panels}; leave the layout out or pick one with {len(panels)}.")
    page = apply_template(project, Page(), chosen.name)
    for panel, spec in zip(ordered_panels(project, page), panels):
        _fill_panel(story, project, panel, spec, number)
    return page


def _fill_panel(story: Story, project: Project, panel: Panel, spec: Any, page_number: int) -> None:
    line = _line(spec)
    if not isinstance(spec, dict):
        raise story.error(line, f"each panel on page {page_number} must be a mapping with a description.")
    names = spec.get("characters") or []
    cast = [c.name for c in project.characters]
    for name in names:
        if str(name) not in cast:
            listed = one_of(cast) if cast else "empty"
            raise story.error(line, f"the panel names the character '{name}', who is not in the cast; the cast is {listed}.")
    shot = spec.get("shot", "medium")
    if shot not in SHOTS:
        raise story.error(line, f"the shot '{shot}' is unknown; use {one_of(list(SHOTS))}.")
    panel.action = str(spec.get("description", ""))
    panel.setting = str(spec.get("setting", ""))
    panel.characters = [str(n) for n in names]
    panel.shot = shot
    if spec.get("prompt"):
        panel.prompt_override = str(spec["prompt"])
    if spec.get("seed") is not None:
        panel.seed = int(spec["seed"])
    dialogue = spec.get("dialogue") or []
    for entry in dialogue:
        if not isinstance(entry, dict) or "text" not in entry:
            raise story.error(_line(entry) or line, "each dialogue line needs a text (and a speaker).")
        speaker = entry.get("speaker")
        if speaker is not None and str(speaker) not in cast:
            raise story.error(_line(entry) or line, f"the speaker '{speaker}' is not in the cast; the cast is {one_of(cast) if cast else 'empty'}.")
    captions = spec.get("captions") or []
    captions = [captions] if isinstance(captions, str) else captions
    panel.balloons = place_balloons(project, panel, [(e.get("speaker"), str(e["text"])) for e in dialogue],
                                    [str(c) for c in captions], spec.get("sfx"))


def place_balloons(project: Project, panel: Panel, dialogue: list[tuple[str | None, str]], captions: list[str],
                   sfx: str | None = None) -> list[Balloon]:
    """A first lettering layout inside the panel: captions along the top edge, speech balloons below them
    in reading order (from the left, or from the right for manga), tails toward the lower part of the
    panel where the speakers stand, an SFX near the bottom. The user moves them in the editor."""
    area = inner_box(panel.shape)
    pad = min(area.w, area.h) * 0.04
    x0, y = area.x + pad, area.y + pad
    width = area.w - 2 * pad
    rtl = project.direction == "rtl"
    balloons = []
    for text in captions:
        h = min(area.h * 0.14, 14.0)
        balloons.append(Balloon(kind="caption", text=text, box=Box(x=x0, y=y, w=width * 0.7, h=h) if not rtl else
                                Box(x=x0 + width * 0.3, y=y, w=width * 0.7, h=h), outline=0.35))
        y += h + pad / 2
    count = len(dialogue)
    room = area.y + area.h * 0.62 - y
    for i, (speaker, text) in enumerate(dialogue):
        w = width * (0.62 if count > 1 else 0.7)
        h = max(min(room / max(count, 1) - pad / 2, area.h * 0.3), 6.0)
        step = (width - w) / max(count - 1, 1)
        left = x0 + (i * step if not rtl else width - w - i * step)
        top = y + i * (h + pad / 2)
        order = panel.characters.index(speaker) if speaker in panel.characters else i
        speakers = max(len(panel.characters), 1)
        share = (order + 0.5) / speakers
        target_x = area.x + area.w * (share if not rtl else 1 - share)
        tail = pt(min(max(target_x, area.x + pad), area.right - pad), min(top + h + area.h * 0.12, area.bottom - pad))
        balloons.append(Balloon(kind="speech-oval", text=text, speaker=speaker, box=Box(x=left, y=top, w=w, h=h), tail=tail))
    if sfx:
        h = area.h * 0.16
        balloons.append(Balloon(kind="sfx", text=str(sfx), rotation=-8.0 if not rtl else 8.0, outline=0.5,
                                box=Box(x=area.x + (area.w * 0.5 if not rtl else pad), y=area.bottom - h - pad, w=area.w * 0.45, h=h)))
    return balloons
