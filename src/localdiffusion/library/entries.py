"""Writing entries into the library: batched, embedded, and idempotent.

`EntryWriter` takes `Entry`s one at a time and writes them in batches: each batch is embedded once, entries
whose content hash is already there are dropped (so importing the same file twice adds nothing), and the rest
are inserted with their vectors and the FTS index in one transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from localdiffusion.library.embed import embedder, to_bits, to_half
from localdiffusion.store.library_db import VEC_DIM, LibraryDB

# The A1111 API field names an entry's settings may hold (what "Use these settings" fills in).
SETTING_KEYS = ("steps", "cfg_scale", "sampler_name", "scheduler", "seed", "width", "height",
                "denoising_strength", "clip_skip")
BATCH = 4096

Progress = Callable[[int, Optional[int]], None]  # (rows read so far, rows in all or None)


@dataclass
class Entry:
    prompt: str
    negative_prompt: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    external_id: str | None = None
    url: str | None = None
    nsfw: float = 0.0
    model: str | None = None
    image: Path | None = None  # a picture of it, given a thumbnail


def clean_settings(fields: dict[str, Any]) -> dict[str, Any]:
    """Only the known A1111 setting names, without empty values."""
    return {k: fields[k] for k in SETTING_KEYS if fields.get(k) not in (None, "")}


def web_address(url: str | None) -> str | None:
    """An entry's page, kept only when it is an http(s) address: the Library page links to it for everyone."""
    return url if isinstance(url, str) and url.lower().startswith(("https://", "http://")) else None


def content_hash(source: str, entry: Entry, settings_json: str) -> int:
    text = "\x1f".join((source, entry.external_id or "", entry.prompt, entry.negative_prompt, settings_json))
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little", signed=True)


class EntryWriter:
    """Buffers entries of one source and writes them in batches; `added` counts the new ones."""

    def __init__(self, db: LibraryDB, source_id: int, source_name: str, *, thumbs: Path | None = None,
                 embed: bool = True) -> None:
        self.db, self.source_id, self.source_name = db, source_id, source_name
        self.thumbs, self.embed = thumbs, embed
        self.buffer: list[Entry] = []
        self.added = 0

    def add(self, entry: Entry) -> None:
        if entry.prompt.strip():
            self.buffer.append(entry)
            if len(self.buffer) >= BATCH:
                self.flush()

    def flush(self) -> None:
        batch, self.buffer = self.buffer, []
        if not batch:
            return
        rows, seen = [], set()
        for entry in batch:
            settings_json = json.dumps(entry.settings, separators=(",", ":"), sort_keys=True)
            digest = content_hash(self.source_name, entry, settings_json)
            if digest not in seen:
                seen.add(digest)
                rows.append((digest, settings_json, entry))
        existing: set[int] = set()
        hashes = [r[0] for r in rows]
        for start in range(0, len(hashes), 900):
            chunk = hashes[start:start + 900]
            existing.update(h for (h,) in self.db.query(
                f"SELECT hash FROM prompts WHERE hash IN ({','.join('?' * len(chunk))})", chunk))
        rows = [r for r in rows if r[0] not in existing]
        if not rows:
            return
        vectors = embedder().embed([r[2].prompt for r in rows])
        bits, halves = to_bits(vectors), to_half(vectors, VEC_DIM)
        images: list[tuple[int, Path]] = []
        with self.db.transaction() as conn:
            next_id = conn.execute("SELECT coalesce(max(id), 0) FROM prompts").fetchone()[0] + 1
            prompt_rows, bit_rows = [], []
            for i, (digest, settings_json, e) in enumerate(rows):
                pid = next_id + i
                s = e.settings
                prompt_rows.append((pid, self.source_id, e.prompt, e.negative_prompt, settings_json, e.external_id, web_address(e.url),
                                    float(e.nsfw or 0.0), e.model, s.get("sampler_name"), s.get("width"), s.get("height"),
                                    int(e.image is not None), digest, halves[i].tobytes()))
                bit_rows.append((pid, bits[i].tobytes()))
                if e.image is not None:
                    images.append((pid, e.image))
            conn.executemany("INSERT INTO prompts (id, source_id, prompt, negative_prompt, settings, external_id, url, nsfw, "
                             "model, sampler, width, height, has_image, hash, vec) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             prompt_rows)
            conn.executemany("INSERT INTO prompt_bits (id, bits) VALUES (?, ?)", bit_rows)
            image_ids = []
            for pid, path in images:
                image_ids.append((conn.execute("INSERT INTO images (prompt_id, path) VALUES (?, ?)", (pid, str(path))).lastrowid, path))
        self.added += len(rows)
        if self.thumbs is not None:
            self._thumbnails(image_ids)

    def _thumbnails(self, image_ids: list[tuple[int, Path]]) -> None:
        from localdiffusion.store.thumbnails import ensure_thumbnail

        for image_id, path in image_ids:
            try:
                thumb = ensure_thumbnail(path, self.thumbs, image_id)
            except OSError:
                continue  # the entry stays, without a thumbnail
            with self.db.transaction() as conn:
                conn.execute("UPDATE images SET thumb = ? WHERE id = ?", (str(thumb), image_id))

    def close(self) -> int:
        self.flush()
        self.db.recount(self.source_id)
        return self.added


def vector_matrix(blobs: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), -1).astype(np.float32)
