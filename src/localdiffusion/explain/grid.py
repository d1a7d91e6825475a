"""Draw a labelled comparison grid: cells in rows and columns, axis titles and value labels around them.

Labels scale with the cells (font size proportional to the cell size, as A1111's grid annotations),
so that the grid stays legible whether the cells are 64 or 1024 pixels wide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"), Path("/Library/Fonts"),
             Path("C:/Windows/Fonts")]
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
MIN_FONT = 12


@lru_cache(maxsize=32)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (or Arial on Windows/macOS) when the system has it, else PIL's built-in scalable font."""
    names = ["DejaVuSans-Bold.ttf", "Arial Bold.ttf", "arialbd.ttf"] if bold else ["DejaVuSans.ttf", "Arial.ttf", "arial.ttf"]
    for folder in FONT_DIRS:
        for name in names:
            if (folder / name).is_file():
                return ImageFont.truetype(str(folder / name), size)
    return ImageFont.load_default(size=size)


def font_size(cell_width: int, cell_height: int) -> int:
    """A1111's choice, (w + h) / 25 (about 40 px for 512-pixel cells), but never below MIN_FONT."""
    return max(MIN_FONT, (cell_width + cell_height) // 25)


@dataclass
class GridLayout:
    """Where everything goes: label margins on the left and top, then columns and rows of cells."""

    left: int
    top: int
    col_widths: list[int]
    row_heights: list[int]
    font_size: int
    lines: dict[str, list] = field(default_factory=dict)  # wrapped label lines, by role

    @property
    def size(self) -> tuple[int, int]:
        return self.left + sum(self.col_widths), self.top + sum(self.row_heights)

    def cell_origin(self, ix: int, iy: int) -> tuple[int, int]:
        return self.left + sum(self.col_widths[:ix]), self.top + sum(self.row_heights[:iy])


def layout_grid(
    cell_sizes: list[list[tuple[int, int]]], x_title: str, x_labels: list[str], y_title: str, y_labels: list[str],
    title: str | None = None,
) -> GridLayout:
    """The layout for cells of these sizes (`[iy][ix]`, width and height) and these labels.

    Columns are as wide as their widest cell and rows as tall as their tallest, so cells of
    different sizes (a size axis) line up.
    """
    col_widths = [max(row[ix][0] for row in cell_sizes) for ix in range(len(x_labels))]
    row_heights = [max(h for _, h in row) for row in cell_sizes]
    size = font_size(min(col_widths), min(row_heights))
    regular, bold = font(size), font(size, bold=True)
    pad, line = size // 2, _line_height(regular)
    x_lines = [_wrap(label, regular, w - pad) for label, w in zip(x_labels, col_widths)]
    left_limit = max(int(1.2 * min(col_widths)), size * 6)
    y_lines = [_wrap(label, regular, left_limit) for label in y_labels]
    y_title_lines = _wrap(y_title, bold, left_limit)
    left = max(max(_widest(lines, regular) for lines in y_lines), _widest(y_title_lines, bold)) + 2 * pad
    title_lines = _wrap(title, bold, left + sum(col_widths) - 2 * pad) if title else []
    x_title_lines = _wrap(x_title, bold, max(sum(col_widths) - 2 * pad, size))
    band = len(title_lines) * line + (pad if title_lines else 0)
    top = band + pad + len(x_title_lines) * line + pad + max(len(lines) for lines in x_lines) * line + pad
    lines = {"title": title_lines, "x_title": x_title_lines, "y_title": y_title_lines, "x": x_lines, "y": y_lines}
    return GridLayout(left, top, col_widths, row_heights, size, lines)


def draw_grid(
    cells: list[list[Image.Image]], x_title: str, x_labels: list[str], y_title: str, y_labels: list[str],
    title: str | None = None,
) -> Image.Image:
    """`cells[iy][ix]` with the X values above the columns and the Y values left of the rows; an
    optional title (the Z value) on top. Cells smaller than their slot are centred in it."""
    layout = layout_grid([[c.size for c in row] for row in cells], x_title, x_labels, y_title, y_labels, title)
    regular, bold = font(layout.font_size), font(layout.font_size, bold=True)
    pad, line, top, lines = layout.font_size // 2, _line_height(regular), layout.top, layout.lines
    grid = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(grid)
    _text(draw, lines["title"], bold, (pad, pad // 2), line)
    band = len(lines["title"]) * line + (pad if lines["title"] else 0)
    _centred(draw, lines["x_title"], bold, layout.left, sum(layout.col_widths), band + pad, line)
    _text(draw, lines["y_title"], bold, (pad, top - pad - len(lines["y_title"]) * line), line)
    for ix, x_lines in enumerate(lines["x"]):
        x0, _ = layout.cell_origin(ix, 0)
        _centred(draw, x_lines, regular, x0, layout.col_widths[ix], top - pad - len(x_lines) * line, line)
    for iy, y_lines in enumerate(lines["y"]):
        _, y0 = layout.cell_origin(0, iy)
        _text(draw, y_lines, regular, (pad, y0 + (layout.row_heights[iy] - len(y_lines) * line) // 2), line)
    for iy, row in enumerate(cells):
        for ix, cell in enumerate(row):
            x0, y0 = layout.cell_origin(ix, iy)
            offset = ((layout.col_widths[ix] - cell.width) // 2, (layout.row_heights[iy] - cell.height) // 2)
            grid.paste(cell.convert("RGB"), (x0 + offset[0], y0 + offset[1]))
    return grid


def _line_height(f) -> int:
    top, bottom = f.getbbox("Ay")[1], f.getbbox("Ay")[3]
    return int((bottom - top) * 1.35) + 1


def _wrap(text: str, f, width: int) -> list[str]:
    """Words on lines no wider than `width`; a single word longer than that is cut by characters."""
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if f.getlength(candidate) <= width or not current:
                current = candidate
            else:
                lines.append(current)
                current = word
            while f.getlength(current) > width and len(current) > 1:
                cut = _fit(current, f, width)
                lines.append(current[:cut])
                current = current[cut:]
        lines.append(current)
    return lines


def _fit(text: str, f, width: int) -> int:
    cut = len(text)
    while cut > 1 and f.getlength(text[:cut]) > width:
        cut -= 1
    return cut


def _widest(lines: list[str], f) -> int:
    return int(max((f.getlength(line) for line in lines), default=0))


def _text(draw: ImageDraw.ImageDraw, lines: list[str], f, origin: tuple[int, int], line: int) -> None:
    x, y = origin
    for i, text in enumerate(lines):
        draw.text((x, y + i * line), text, font=f, fill=INK)


def _centred(draw: ImageDraw.ImageDraw, lines: list[str], f, x0: int, width: int, y: int, line: int) -> None:
    for i, text in enumerate(lines):
        draw.text((x0 + (width - f.getlength(text)) / 2, y + i * line), text, font=f, fill=INK)
