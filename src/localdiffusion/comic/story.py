"""STORY.yaml: a plain-text story (title, style, cast, pages of panels with dialogue) turned into a Project.

    title: The lost robot
    authors: [Group 3]
    page: A4                      # A4, Letter, square, or {width: 8, height: 8, unit: in}
    direction: ltr                # rtl for manga
    style: {prefix: "comic book art", negative: "blurry", steps: 20}
    characters:
      - {name: Mia, description: "a girl with short red hair, green raincoat", seed: 1234,
         reference_image: assets/mia.png}   # optional: a picture in assets/ beside the story
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

Every key is checked (pydantic models with extra="forbid"), so a misspelt one is never silently dropped.
Errors name the file and line: "story.yaml line 11: unknown key 'dialog' in a panel; did you mean 'dialogue'?".
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from localdiffusion.comic.geometry import inner_box, pt
from localdiffusion.comic.layouts import apply_template, ordered_panels, template, template_for
from localdiffusion.comic.model import MAX_PANELS, Balloon, Box, Character, Page, PageSize, Panel, Project, Style, page_size
from localdiffusion.comic.storage import asset_path
from localdiffusion.errors import BadInput, closest, one_of

LINE = "__line__"  # the line of a mapping
KEYS = "__keys__"  # the line of each of its keys
SHOTS = ("close-up", "medium", "wide", "over-the-shoulder", "bird's-eye")


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the (1-based) line of every mapping and of each key, for error messages."""


def _mapping_with_line(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    data = loader.construct_mapping(node, deep=True)
    data[LINE] = node.start_mark.line + 1
    data[KEYS] = {loader.construct_object(key, deep=True): key.start_mark.line + 1 for key, _ in node.value}
    return data


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


# --- the story's shape: every key it may have, so that a misspelt one is named, never ignored ---------


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True)


class StoryLine(_Part):
    speaker: str | None = None
    text: str


class StoryPanel(_Part):
    description: str = ""  # the action
    setting: str = ""
    characters: list[str] | None = None
    shot: str = "medium"
    prompt: str | None = None  # replaces the composed prompt
    seed: int | None = None
    dialogue: list[StoryLine] | None = None
    captions: str | list[str] | None = None
    sfx: str | None = None


class StoryPage(_Part):
    layout: str | None = None
    panels: list[StoryPanel] | None = None


class StoryCharacter(_Part):
    name: str
    description: str = ""
    seed: int | None = None
    reference_image: str | None = None  # a picture under assets/ beside the story file


class StoryPageSize(_Part):
    width: float
    height: float
    unit: Literal["mm", "in"] = "mm"


class StoryStyle(_Part):
    model_config = ConfigDict(protected_namespaces=())

    prefix: str | None = None
    suffix: str | None = None
    negative: str | None = None
    model: str | None = None
    sampler: str | None = None
    steps: int | None = None
    cfg: float | None = None
    base_size: int | None = None
    variation_strength: float | None = None
    reference_scale: float | None = None
    shared_attention: float | None = None


class StoryFile(_Part):
    title: str = "Untitled comic"
    authors: str | list[str] | None = None
    page: str | StoryPageSize = "A4"
    direction: str = "ltr"
    dpi: int | None = None
    style: StoryStyle | None = None
    characters: list[StoryCharacter] | None = None
    pages: list[StoryPage] | None = None


WHAT = {StoryFile: "the story", StoryStyle: "the style", StoryCharacter: "a character", StoryPage: "a page",
        StoryPanel: "a panel", StoryLine: "a dialogue line", StoryPageSize: "the page size"}
MISSING = {(StoryCharacter, "name"): "each character needs at least a name (and a description).",
           (StoryLine, "text"): "each dialogue line needs a text (and a speaker).",
           (StoryPageSize, "width"): "a custom page size needs a width and a height (and a unit, mm or in).",
           (StoryPageSize, "height"): "a custom page size needs a width and a height (and a unit, mm or in)."}


class StoryError(BadInput):
    pass


class Story:
    def __init__(self, name: str) -> None:
        self.name = name

    def error(self, line: int | None, message: str) -> StoryError:
        return StoryError(f"{self.name} line {line}: {message}" if line else f"{self.name}: {message}", field="story")


def _line(data: Any) -> int | None:
    return data.get(LINE) if isinstance(data, dict) else None


def _plain(data: Any) -> Any:
    """The loaded YAML without the line bookkeeping."""
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items() if k not in (LINE, KEYS)}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The story model an annotation holds (through lists, unions and None), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, typing.get_args(annotation)) if m is not None), None)


def _where(data: Any, loc: tuple) -> tuple[type[BaseModel], int | None, str | None]:
    """For an error at `loc`: the story model that holds the bad value, its line, and the key's name."""
    model: type[BaseModel] = StoryFile
    line, key = _line(data), None
    for i, part in enumerate(loc):
        if isinstance(part, str) and isinstance(data, dict):
            if part in data and part not in (LINE, KEYS):
                line, key = data[KEYS].get(part, line), part
                if i < len(loc) - 1 and part in model.model_fields:
                    inner = _model_in(model.model_fields[part].annotation)
                    model = inner or model
                data = data[part]
            # otherwise `part` names a member of a union ('str', 'list[str]'): the data stays where it is
        elif isinstance(part, int) and isinstance(data, list) and part < len(data):
            data = data[part]
            line, key = _line(data) or line, None
    return model, line, key


def _validated_story(story: Story, data: dict) -> StoryFile:
    try:
        return StoryFile.model_validate(_plain(data))
    except ValidationError as e:
        # A misspelt key first; then the deepest error (a union's members each report one: 'page' as text and
        # as a size, the size's is the one that says what is wrong).
        first = min(e.errors(), key=lambda err: (err["type"] != "extra_forbidden", -len(err["loc"])))
        loc = tuple(first["loc"])
        if first["type"] == "extra_forbidden":
            model, line, key = _where(data, loc)
            allowed = list(model.model_fields)
            near = closest(str(key), allowed, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"use {one_of(allowed)}."
            raise story.error(line, f"unknown key '{key}' in {WHAT[model]}; {hint}") from None
        model, line, key = _where(data, loc[:-1] if first["type"] == "missing" else loc)
        if first["type"] == "missing":
            field = str(loc[-1])
            raise story.error(line, MISSING.get((model, field), f"{WHAT[model]} needs '{field}'.")) from None
        field = next((str(p) for p in reversed(loc) if isinstance(p, str) and p in model.model_fields), key or "value")
        raise story.error(line, f"the value {first.get('input')!r} for '{field}' in {WHAT[model]} is not allowed: "
                                f"{first['msg'][:1].lower()}{first['msg'][1:]}.") from None


def load_story(path: Path) -> Project:
    """A Project from a STORY.yaml; characters' reference pictures are read from `assets/` beside it and
    copied into the project folder when the project is first saved."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"The story file '{path}' does not exist; give the path of a STORY.yaml.", field="story")
    return parse_story(path.read_text("utf-8"), path.name, path.parent)


def parse_story(text: str, name: str = "story.yaml", folder: Path | None = None) -> Project:
    """`folder` holds the story's `assets/` (characters' reference pictures); without it, the story may
    name none."""
    story = Story(name)
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise story.error(mark.line + 1 if mark else None, f"this is not valid YAML ({problem}).") from None
    if not isinstance(data, dict):
        raise story.error(None, "the story must be a mapping with a title, characters and pages.")
    project = _project(story, data, _validated_story(story, data), folder)
    if folder is not None:
        project.assets_from(folder)
    return project


def _project(story: Story, data: dict, spec: StoryFile, folder: Path | None) -> Project:
    keys = data[KEYS]
    if spec.direction not in ("ltr", "rtl"):
        raise story.error(keys.get("direction"), f"the direction '{spec.direction}' is unknown; use ltr or rtl (manga).")
    authors = spec.authors or []
    project = Project(
        title=spec.title,
        authors=[authors] if isinstance(authors, str) else authors,
        page_size=_page_size(story, keys.get("page"), spec.page), direction=spec.direction,
        style=_style(story, keys.get("style"), spec.style),
        characters=[_character(story, raw, c, folder) for raw, c in zip(data.get("characters") or [], spec.characters or [])],
    )
    if spec.dpi is not None:
        project.dpi = _validated(story, keys.get("dpi"), lambda: Project(dpi=spec.dpi)).dpi
    if not spec.pages:
        raise story.error(_line(data), "the story has no pages; add 'pages:' with a list of pages of panels.")
    for number, (raw, page) in enumerate(zip(data["pages"], spec.pages), start=1):
        project.pages.append(_page(story, project, raw, page, number))
    return project


def _validated(story: Story, line: int | None, make):
    try:
        return make()
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise story.error(line, f"the value {first.get('input')!r} for {field} is not allowed: {first['msg']}.") from None


def _page_size(story: Story, line: int | None, page: str | StoryPageSize) -> PageSize:
    try:
        if isinstance(page, StoryPageSize):
            return page_size("custom", page.width, page.height, page.unit)
        return page_size(page)
    except (BadInput, ValidationError) as e:
        message = str(e) if isinstance(e, BadInput) else e.errors()[0]["msg"]
        raise story.error(line, message.rstrip(".") + ".") from None


def _style(story: Story, line: int | None, style: StoryStyle | None) -> Style:
    settings = style.model_dump(exclude_unset=True) if style is not None else {}
    return _validated(story, line, lambda: Style(**settings))


def _character(story: Story, raw: dict, spec: StoryCharacter, folder: Path | None) -> Character:
    line = raw[KEYS].get("reference_image", _line(raw))
    if spec.reference_image is not None:
        try:
            if folder is None:
                raise BadInput("a story read from text cannot name pictures; load it from its file.")
            if not asset_path(folder, spec.reference_image, "reference_image").is_file():
                raise BadInput(f"the reference image '{spec.reference_image}' is not in {Path(folder) / 'assets'}; "
                               "put the picture there.")
        except BadInput as e:
            raise story.error(line, e.message[:1].lower() + e.message[1:]) from None
    return _validated(story, _line(raw), lambda: Character(**spec.model_dump(exclude_unset=True)))


def _page(story: Story, project: Project, raw: dict, spec: StoryPage, number: int) -> Page:
    panels = spec.panels or []
    if not panels:
        raise story.error(_line(raw), f"page {number} has no panels; give it 'panels:' with 1 to {MAX_PANELS} panels.")
    if len(panels) > MAX_PANELS:
        raise story.error(_line(raw), f"page {number} has {len(panels)} panels; a page holds at most {MAX_PANELS}.")
    try:
        chosen = template(spec.layout) if spec.layout else template_for(len(panels))
    except BadInput as e:
        raise story.error(raw[KEYS].get("layout"), str(e)) from None
    if chosen.panels != len(panels):
        raise story.error(_line(raw), f"page {number} has {len(panels)} panels but the layout '{chosen.name}' has "
                                      f"{chosen.panels}; leave the layout out or pick one with {len(panels)}.")
    page = apply_template(project, Page(), chosen.name)
    for panel, raw_panel, panel_spec in zip(ordered_panels(project, page), raw["panels"], panels):
        _fill_panel(story, project, panel, raw_panel, panel_spec)
    return page


def _fill_panel(story: Story, project: Project, panel: Panel, raw: dict, spec: StoryPanel) -> None:
    line = _line(raw)
    names = spec.characters or []
    cast = [c.name for c in project.characters]
    listed = one_of(cast) if cast else "empty"
    for name in names:
        if name not in cast:
            raise story.error(line, f"the panel names the character '{name}', who is not in the cast; the cast is {listed}.")
    if spec.shot not in SHOTS:
        raise story.error(raw[KEYS].get("shot", line), f"the shot '{spec.shot}' is unknown; use {one_of(list(SHOTS))}.")
    panel.action = spec.description
    panel.setting = spec.setting
    panel.characters = names
    panel.shot = spec.shot
    if spec.prompt:
        panel.prompt_override = spec.prompt
    if spec.seed is not None:
        panel.seed = _validated(story, raw[KEYS].get("seed", line), lambda: Panel(shape=panel.shape, seed=spec.seed)).seed
    dialogue = spec.dialogue or []
    for entry, said in zip(raw.get("dialogue") or [], dialogue):
        if said.speaker is not None and said.speaker not in cast:
            raise story.error(_line(entry) or line, f"the speaker '{said.speaker}' is not in the cast; the cast is {listed}.")
    captions = spec.captions or []
    captions = [captions] if isinstance(captions, str) else captions
    panel.balloons = place_balloons(project, panel, [(e.speaker, e.text) for e in dialogue], captions, spec.sfx)


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
