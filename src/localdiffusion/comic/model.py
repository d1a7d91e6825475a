"""The comic project model: a project holds a cast, a style and pages of panels with balloons.

Everything here is plain pydantic and JSON-serialisable, so that the project file, the HTTP API
and the page editor share one shape. Geometry is in page millimetres, origin at the top-left
corner of the trimmed page, y pointing down.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from localdiffusion.errors import BadInput
from localdiffusion.recipe import ControlUnit, Recipe

MAX_PANELS = 8
MM_PER_INCH = 25.4

Direction = Literal["ltr", "rtl"]
Shot = Literal["close-up", "medium", "wide", "over-the-shoulder", "bird's-eye"]
BalloonKind = Literal["speech-oval", "speech-rect", "thought", "caption", "sfx"]

# Named page sizes in millimetres (width, height).
PAGE_SIZES: dict[str, tuple[float, float]] = {
    "A4": (210.0, 297.0),
    "Letter": (215.9, 279.4),
    "square": (210.0, 210.0),
}


ASSETS = "assets"
ASSET_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def check_asset(ref: str, field: str = "image") -> str:
    """The one check for a picture path that comes from outside (a request, a story, a project file):
    a relative path under `assets/` of the project folder, naming a PNG, JPEG or WEBP file. Nothing else
    may become a path, so no request can reach another file the server can read."""
    path = PurePosixPath(ref)
    if (not ref or len(ref) > 200 or path.is_absolute() or "\\" in ref or ":" in ref or "\0" in ref
            or ".." in path.parts or len(path.parts) < 2 or path.parts[0] != ASSETS
            or path.suffix.lower() not in ASSET_SUFFIXES):
        raise BadInput(f"The asset '{ref[:80]}' is not a picture in the project's {ASSETS}/ folder; give a PNG, JPEG "
                       f"or WEBP under {ASSETS}/ (a picture uploaded to the project).", field=field)
    return ref


def new_id() -> str:
    return uuid.uuid4().hex[:10]


class Strict(BaseModel):
    # NaN and infinity are refused: JSON has no way to write them, so one would be saved as null and the
    # project would no longer open.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Point(Strict):
    x: float
    y: float


class Box(Strict):
    x: float
    y: float
    w: float = Field(gt=0)
    h: float = Field(gt=0)

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h

    @property
    def center(self) -> Point:
        return Point(x=self.x + self.w / 2, y=self.y + self.h / 2)


class PageSize(Strict):
    """The trimmed page size; `name` is A4, Letter, square or custom."""

    name: str = "A4"
    width_mm: float = Field(210.0, ge=50, le=1000)
    height_mm: float = Field(297.0, ge=50, le=1000)


def page_size(name: str = "A4", width: float | None = None, height: float | None = None,
              unit: Literal["mm", "in"] = "mm") -> PageSize:
    """A named page size, or a custom one from a width and height in millimetres or inches."""
    if name in PAGE_SIZES:
        w, h = PAGE_SIZES[name]
        return PageSize(name=name, width_mm=w, height_mm=h)
    if name != "custom" or width is None or height is None:
        raise BadInput(f"The page size '{name}' is unknown; choose A4, Letter, square or custom with a width and height.",
                       field="page_size")
    scale = MM_PER_INCH if unit == "in" else 1.0
    return PageSize(name="custom", width_mm=round(width * scale, 3), height_mm=round(height * scale, 3))


class Character(Strict):
    """A member of the cast. The description goes into every panel prompt the character is in."""

    name: str = Field(min_length=1, max_length=80)
    description: str = ""
    reference_image: str | None = None  # an asset path inside the project folder
    seed: int | None = Field(None, ge=0, le=2**32 - 1)

    @field_validator("reference_image")
    @classmethod
    def _an_asset(cls, ref: str | None) -> str | None:
        return None if ref is None else check_asset(ref, "reference_image")


class Style(Strict):
    """One look for the whole comic, applied to every panel."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, protected_namespaces=())

    prefix: str = "comic book illustration, clean ink lines, flat colours"
    suffix: str = ""
    negative: str = "blurry, deformed, text, watermark, signature"
    model: str | None = None
    sampler: str = "Euler a"
    steps: int = Field(20, ge=1, le=150)
    cfg: float = Field(7.0, ge=0.0, le=30.0)
    # The side of the square whose pixel count panels aim at; None: the model family's native size.
    base_size: int | None = Field(None, ge=64, le=2048)
    # How far each panel moves from a character's seed toward its own variation seed.
    variation_strength: float = Field(0.2, ge=0.0, le=1.0)
    reference_scale: float = Field(0.5, ge=0.0, le=1.5)
    # Shared attention (StoryDiffusion-style): the share of the first panel's self-attention tokens that
    # the other panels of a render attend to; 0 turns it off.
    shared_attention: float = Field(0.0, ge=0.0, le=1.0)


class ImageView(Strict):
    """How an image sits in its panel: cover (fill, crop) or contain, a zoom and a focus point."""

    fit: Literal["cover", "contain"] = "cover"
    zoom: float = Field(1.0, ge=1.0, le=8.0)
    x: float = Field(0.5, ge=0.0, le=1.0)  # the image point (fraction of width) at the panel's centre
    y: float = Field(0.5, ge=0.0, le=1.0)


class Candidate(Strict):
    """One generated image for a panel: its file in the project's assets and the recipe that made it."""

    id: str = Field(default_factory=new_id)
    image: str | None = None  # "assets/....png"; None while its job runs
    recipe: Recipe
    job_id: int | None = None  # set when queued on a server
    job_index: int = 0  # which of its job's images is this candidate's (a "panels" job makes several)
    error: str | None = None

    @field_validator("image")
    @classmethod
    def _an_asset(cls, ref: str | None) -> str | None:
        return None if ref is None else check_asset(ref, "image")


class Balloon(Strict):
    """Lettering: speech (oval or rounded rectangle), thought, caption or sound effect."""

    id: str = Field(default_factory=new_id)
    kind: BalloonKind = "speech-oval"
    text: str = ""
    box: Box
    tail: Point | None = None  # where the tail points (the speaker); captions and SFX have none
    speaker: str | None = None
    rotation: float = Field(0.0, ge=-180, le=180)  # degrees, counter-clockwise; SFX mostly
    outline: float = Field(0.6, ge=0, le=5)  # line width in mm (SFX: the letters' outline)
    font_size: float | None = Field(None, ge=4, le=200)  # points; None: as large as fits


class Panel(Strict):
    id: str = Field(default_factory=new_id)
    # Corners clockwise from the top-left (tl, tr, br, bl) for the editing functions; any polygon renders.
    shape: list[Point] = Field(min_length=3)
    owner_id: int | None = None
    setting: str = ""
    action: str = ""
    characters: list[str] = Field(default_factory=list)
    shot: Shot = "medium"
    controls: list[ControlUnit] = Field(default_factory=list)
    prompt_override: str | None = None
    seed: int = Field(-1, ge=-1, le=2**32 - 1)
    variation_seed: int | None = Field(None, ge=0, le=2**32 - 1)
    candidates: list[Candidate] = Field(default_factory=list)
    chosen: str | None = None  # a candidate id
    view: ImageView = Field(default_factory=ImageView)
    balloons: list[Balloon] = Field(default_factory=list)

    def chosen_candidate(self) -> Candidate | None:
        return next((c for c in self.candidates if c.id == self.chosen and c.image), None)


class BorderStyle(Strict):
    style: Literal["solid", "none"] = "solid"
    width_mm: float = Field(0.8, ge=0, le=5)
    color: str = Field("#000000", pattern=r"^#[0-9a-fA-F]{6}$")


class Page(Strict):
    id: str = Field(default_factory=new_id)
    panels: list[Panel] = Field(default_factory=list)
    gutter_mm: float = Field(4.0, ge=0, le=30)
    margin_mm: float = Field(10.0, ge=0, le=50)
    border: BorderStyle = Field(default_factory=BorderStyle)
    template: str | None = None

    @field_validator("panels")
    @classmethod
    def _at_most_eight(cls, panels: list[Panel]) -> list[Panel]:
        check_panel_count(len(panels))
        return panels


def check_panel_count(count: int, where: str = "A page") -> None:
    if count > MAX_PANELS:
        raise BadInput(f"{where} has {count} panels; a page holds at most {MAX_PANELS}.", field="panels")


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


class Project(Strict):
    id: str = Field(default_factory=new_id)
    title: str = "Untitled comic"
    authors: list[str] = Field(default_factory=list)
    owner_id: int | None = None
    # A class comic: everyone in the class opens it; a participant edits the panels assigned to them (a
    # panel's `owner_id`), a facilitator everything.
    class_comic: bool = False
    page_size: PageSize = Field(default_factory=PageSize)
    dpi: int = Field(300, ge=36, le=600)
    direction: Direction = "ltr"
    style: Style = Field(default_factory=Style)
    characters: list[Character] = Field(default_factory=list)
    pages: list[Page] = Field(default_factory=list)
    created: str = Field(default_factory=now_iso)  # also the PDF's creation date, so exports repeat exactly
    # A folder whose assets/ holds pictures the project names but its own folder may not have yet (a
    # story's reference pictures); `save_project` copies them. Not saved.
    _assets_source: Path | None = PrivateAttr(default=None)

    def assets_from(self, folder: Path) -> None:
        self._assets_source = Path(folder)

    @property
    def assets_source(self) -> Path | None:
        return self._assets_source

    def character(self, name: str) -> Character | None:
        return next((c for c in self.characters if c.name == name), None)

    def find_panel(self, panel_id: str) -> tuple[Page, Panel]:
        for page in self.pages:
            for panel in page.panels:
                if panel.id == panel_id:
                    return page, panel
        raise BadInput(f"There is no panel '{panel_id[:40]}' in the comic '{self.title[:80]}'.", field="panel")

    def find_page(self, page_id: str) -> Page:
        for page in self.pages:
            if page.id == page_id:
                return page
        raise BadInput(f"There is no page '{page_id}' in the comic '{self.title}'.", field="page")
