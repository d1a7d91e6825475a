"""The reference library: prompts, images and styles to learn from, searchable offline (`HOME/library.sqlite`).

`Library(home_root)` is what the CLI and the server use: `import_path` (every importer, streaming, idempotent),
`search`, `similar`, `more_like`, `sources`, `styles`, `export_styles` and the NSFW threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from localdiffusion.errors import BadInput
from localdiffusion.library.entries import Entry, EntryWriter, Progress
from localdiffusion.library.importers import (
    DEFAULT_SOURCES,
    KINDS,
    guess_kind,
    read_civitai,
    read_diffusiondb,
    read_gallery,
    read_images,
    read_prompts,
    read_style_file,
    read_wildcards,
)
from localdiffusion.library.search import Filters, Searcher, SearchResult
from localdiffusion.library.styles import Style, csv_bytes, json_bytes
from localdiffusion.store.library_db import LibraryDB, library_path

__all__ = ["Library", "Filters", "SearchResult", "KINDS", "guess_kind"]


class Library:
    def __init__(self, home_root: Path, db: LibraryDB | None = None) -> None:
        self.home_root = Path(home_root)
        self.db = db or LibraryDB(library_path(self.home_root))
        self.searcher = Searcher(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- importing ------------------------------------------------------------------------------

    def import_path(self, path: Path | str, kind: Optional[str] = None, *, source_name: Optional[str] = None,
                    licence: Optional[str] = None, address: str = "", attribution: str = "", column: Optional[str] = None,
                    progress: Progress | None = None) -> dict[str, Any]:
        """Import a file or folder (its kind guessed when None); returns {"source", "kind", "added", "entries"}."""
        path = Path(path).expanduser()
        if kind == "gallery":
            path = self.home_root / "db.sqlite"
        elif not path.exists():
            raise BadInput(f"There is no file or folder {path}.", field="path")
        kind = kind or guess_kind(path)
        if kind not in KINDS:
            raise BadInput(f"The kind '{kind}' is not one the library imports; use one of {', '.join(KINDS)}.", field="kind")
        default = DEFAULT_SOURCES.get(kind)
        name = source_name or (default.name if default else path.stem if path.is_file() else path.name)
        source_id = self.db.ensure_source(name, kind, address or (default.address if default else ""),
                                          licence or (default.licence if default else "unknown"),
                                          attribution or (default.attribution if default else ""))
        writer = EntryWriter(self.db, source_id, name, thumbs=self.home_root / "cache" / "library")
        styles_added = 0
        if kind in ("styles", "fooocus"):
            styles = read_style_file(path, kind)
            styles_added = self._add_styles(styles, source_id)
            entries = (Entry(s.prompt, s.negative_prompt, external_id=f"style {s.name}") for s in styles if s.prompt)
        elif kind == "diffusiondb":
            entries = read_diffusiondb(path, progress)
        elif kind == "prompts":
            entries = read_prompts(path, column, progress)
        elif kind == "wildcards":
            entries = read_wildcards(path, self.home_root / "wildcards", progress)
        elif kind == "images":
            entries = read_images(path, progress)
        elif kind == "gallery":
            entries = read_gallery(path, progress)
        else:
            entries = read_civitai(path, progress)
        try:
            for entry in entries:
                writer.add(entry)
        finally:
            added = writer.close()
        return {"source": name, "kind": kind, "added": added, "styles_added": styles_added,
                "entries": self.db.query("SELECT entries FROM sources WHERE id = ?", (source_id,))[0][0]}

    def _add_styles(self, styles: list[Style], source_id: int) -> int:
        added = 0
        with self.db.transaction() as conn:
            for s in styles:
                before = conn.execute("SELECT prompt, negative_prompt FROM styles WHERE name = ?", (s.name,)).fetchone()
                if before is None:
                    conn.execute("INSERT INTO styles (name, prompt, negative_prompt, source_id) VALUES (?, ?, ?, ?)",
                                 (s.name, s.prompt, s.negative_prompt, source_id))
                    added += 1
                elif before != (s.prompt, s.negative_prompt):
                    conn.execute("UPDATE styles SET prompt = ?, negative_prompt = ?, source_id = ? WHERE name = ?",
                                 (s.prompt, s.negative_prompt, source_id, s.name))
        return added

    def save_style(self, name: str, prompt: str, negative_prompt: str = "") -> None:
        """Add or replace the style `name` (the studio's "Save as style")."""
        if not name.strip():
            raise BadInput("A style needs a name.", field="name")
        source_id = self.db.ensure_source("My styles", "styles", licence="yours")
        self._add_styles([Style(name.strip(), prompt, negative_prompt)], source_id)

    def styles(self) -> list[Style]:
        return [Style(*r) for r in self.db.query("SELECT name, prompt, negative_prompt FROM styles ORDER BY id")]

    def export_styles(self, target: Path | str) -> int:
        """Write every style to `target`: Fooocus JSON for a .json name, else A1111's styles.csv; returns the count."""
        from localdiffusion.store.files import atomic_path

        target = Path(target).expanduser()
        styles = self.styles()
        data = json_bytes(styles) if target.suffix.lower() == ".json" else csv_bytes(styles)
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        return len(styles)

    # -- reading ---------------------------------------------------------------------------------

    def sources(self) -> list[dict[str, Any]]:
        return self.db.sources()

    def search(self, query: str, *, semantic: bool = False, limit: int = 20, filters: Filters | None = None,
               facets: bool = False) -> SearchResult:
        if not 1 <= limit <= 500:
            raise BadInput(f"The limit {limit} is not allowed: ask for 1 to 500 entries.", field="limit")
        return self.searcher.search(query, semantic=semantic, limit=limit, filters=filters, facets=facets)

    def similar(self, prompt: str, count: int = 5) -> dict[str, Any]:
        return self.searcher.similar(prompt, count)

    def more_like(self, entry_id: int, limit: int = 20) -> list[dict[str, Any]]:
        return self.searcher.more_like(entry_id, limit)

    def image_of(self, image_id: int) -> tuple[Path, Path | None] | None:
        """The picture and thumbnail of an entry that search may show (hidden ones, above the NSFW threshold, are not)."""
        rows = self.db.query("SELECT i.path, i.thumb FROM images i JOIN prompts p ON p.id = i.prompt_id "
                             "WHERE i.id = ? AND p.nsfw <= ?", (image_id, self.nsfw_threshold))
        if not rows:
            return None
        return Path(rows[0][0]), Path(rows[0][1]) if rows[0][1] else None

    @property
    def nsfw_threshold(self) -> float:
        return self.searcher.nsfw_threshold()

    def set_nsfw_threshold(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise BadInput(f"The NSFW threshold {value} is not allowed: use a number from 0 (hide every entry with a score) "
                           f"to 1 (hide nothing).", field="nsfw_threshold")
        self.db.set_setting("nsfw_threshold", value)
