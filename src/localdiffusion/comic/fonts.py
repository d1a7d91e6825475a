"""The lettering font: Comic Neue (SIL OFL, Debian package fonts-comic-neue), found at run time.

No font file ships with the project. When Comic Neue is missing we fall back to DejaVu Sans, then
to PIL's and fpdf2's built-in fonts, and say so in `FontChoice.note`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

SEARCH_DIRS = [Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".local/share/fonts",
               Path("/Library/Fonts"), Path("C:/Windows/Fonts")]
FAMILIES = [
    ("Comic Neue", "ComicNeue-Regular.otf", "ComicNeue-Bold.otf"),
    ("DejaVu Sans", "DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
]
MEASURE_PX = 200  # text is measured at this size and scaled, so measurements are size-independent


@dataclass(frozen=True)
class FontChoice:
    family: str
    regular: Path | None
    bold: Path | None
    note: str = ""


def _find(name: str) -> Path | None:
    for root in SEARCH_DIRS:
        if root.is_dir():
            hit = next(root.rglob(name), None)
            if hit is not None:
                return hit
    return None


@lru_cache(maxsize=1)
def lettering_font() -> FontChoice:
    for family, regular, bold in FAMILIES:
        path = _find(regular)
        if path is not None:
            note = "" if family == "Comic Neue" else (
                "Comic Neue is not installed (Debian/Ubuntu: apt install fonts-comic-neue), so lettering uses DejaVu Sans.")
            return FontChoice(family, path, _find(bold) or path, note)
    return FontChoice("Helvetica", None, None, "Neither Comic Neue (apt install fonts-comic-neue) nor DejaVu Sans is "
                      "installed, so lettering uses a built-in font that covers Latin-1 only.")


@lru_cache(maxsize=8)
def pil_font(bold: bool, size_px: int = MEASURE_PX) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    choice = lettering_font()
    path = choice.bold if bold else choice.regular
    if path is None:
        return ImageFont.load_default(size=size_px)
    return ImageFont.truetype(str(path), size_px)


def text_width_mm(text: str, size_mm: float, bold: bool = False) -> float:
    return pil_font(bold).getlength(text) / MEASURE_PX * size_mm


def ascent_descent(size_mm: float, bold: bool = False) -> tuple[float, float]:
    font = pil_font(bold)
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (MEASURE_PX * 0.8, MEASURE_PX * 0.2)
    return ascent / MEASURE_PX * size_mm, descent / MEASURE_PX * size_mm
