"""Search the library by words (FTS5, bm25), by meaning (embeddings) or both (reciprocal rank fusion), with facets.

Meaning search scans every entry's binarised embedding in memory (Hamming distance over 256 bits, 32 bytes an
entry: 32 MB for a million) and re-ranks the nearest `CANDIDATES` by the cosine of their float16 vectors read from
SQLite. The bit matrix is loaded once and read again only when entries were added (`LibraryDB.data_version`).
"""

from __future__ import annotations

import json
import statistics
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from localdiffusion.library.embed import embedder, to_bits, to_half
from localdiffusion.library.entries import vector_matrix
import re
from localdiffusion.store.library_db import VEC_DIM, LibraryDB

CANDIDATES = 1000
RRF_K = 60
MIN_MEANING = 0.25  # a search by meaning leaves out entries less similar than this (cosine)
FACETS = ("source", "licence", "model", "sampler", "has_image", "size")
DEFAULT_NSFW_THRESHOLD = 0.5


@dataclass
class Filters:
    """Facet values a result must have (None: any)."""

    source: Optional[str] = None
    licence: Optional[str] = None
    model: Optional[str] = None
    sampler: Optional[str] = None
    has_image: Optional[bool] = None
    size: Optional[str] = None  # "WIDTHxHEIGHT"

    def sql(self) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for column, value in (("s.name", self.source), ("s.licence", self.licence), ("p.model", self.model),
                              ("p.sampler", self.sampler)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.has_image is not None:
            clauses.append("p.has_image = ?")
            params.append(int(self.has_image))
        if self.size:
            width, _, height = self.size.lower().partition("x")
            clauses.append("p.width = ? AND p.height = ?")
            params += [int(width) if width.isdigit() else -1, int(height) if height.isdigit() else -1]
        return "".join(f" AND {c}" for c in clauses), params


@dataclass
class SearchResult:
    entries: list[dict[str, Any]]
    facets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class VectorIndex:
    """The bit matrix of every entry, in memory, read again when the library changes."""

    def __init__(self, db: LibraryDB) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._version: tuple[int, int] | None = None
        self.ids = np.zeros(0, np.int64)
        self.bits = np.zeros((0, 4), np.uint64)

    def current(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            version = self.db.data_version()
            if version != self._version:
                rows = self.db.query("SELECT id, bits FROM prompt_bits ORDER BY id")
                self.ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
                raw = b"".join(r[1] for r in rows)
                self.bits = np.frombuffer(raw, np.uint64).reshape(len(rows), -1) if rows else np.zeros((0, 4), np.uint64)
                self._version = version
            return self.ids, self.bits

    def nearest(self, query_bits: np.ndarray, count: int) -> np.ndarray:
        ids, bits = self.current()
        if len(ids) <= count:
            return ids
        q = np.frombuffer(query_bits.tobytes(), np.uint64)
        distance = np.bitwise_count(bits ^ q).sum(axis=1, dtype=np.uint16)
        return ids[np.argpartition(distance, count)[:count]]


_ENTRY_COLUMNS = ("p.id, p.prompt, p.negative_prompt, p.settings, p.external_id, p.url, p.nsfw, p.model, p.sampler, "
                  "p.width, p.height, p.has_image, s.name, s.licence, s.address, s.attribution, s.kind, "
                  "(SELECT i.id FROM images i WHERE i.prompt_id = p.id ORDER BY i.id LIMIT 1)")
_FROM = " FROM prompts p JOIN sources s ON s.id = p.source_id"


_STOPWORDS = frozenset("a an the of in on at by with and or for to from into is".split())


def words_query(text: str) -> str:
    """User text -> an FTS5 query (every word, the last one also as a prefix while it is being typed); common short
    words are left out when others remain, as each would read a long list. FTS syntax is never passed through."""
    words = re.findall(r"\w+", text, flags=re.UNICODE)
    kept = [w for w in words if w.lower() not in _STOPWORDS] or words
    if not kept:
        return ""
    *head, last = kept
    return " ".join([f'"{w}"' for w in head] + [f'"{last}"*' if len(last) >= 3 else f'"{last}"'])


def _entry(row: tuple, score: float) -> dict[str, Any]:
    (pid, prompt, negative, settings, external_id, url, nsfw, model, sampler, width, height, has_image,
     source, licence, address, attribution, kind, image_id) = row
    return {"id": pid, "prompt": prompt, "negative_prompt": negative, "source": source, "licence": licence,
            "score": round(float(score), 6), "settings": json.loads(settings), "url": url, "external_id": external_id,
            "model": model, "nsfw": nsfw, "has_image": bool(has_image), "image_id": image_id,
            "source_address": address, "attribution": attribution, "kind": kind}


class Searcher:
    def __init__(self, db: LibraryDB) -> None:
        self.db = db
        self.index = VectorIndex(db)

    def nsfw_threshold(self) -> float:
        return float(self.db.setting("nsfw_threshold", DEFAULT_NSFW_THRESHOLD))  # type: ignore[arg-type]

    # -- the three rankings ---------------------------------------------------------------------

    def words(self, query: str, limit: int, filters: Filters) -> list[tuple[int, float]]:
        match = words_query(query)
        if not match or not self.db.has_fts:
            return []
        where, params = filters.sql()
        rows = self.db.query(
            f"SELECT p.id, bm25(prompts_fts) AS rank FROM prompts_fts JOIN prompts p ON p.id = prompts_fts.rowid "
            f"JOIN sources s ON s.id = p.source_id WHERE prompts_fts MATCH ? AND p.nsfw <= ?{where} "
            f"ORDER BY rank LIMIT ?", [match, self.nsfw_threshold(), *params, limit])
        return [(pid, -rank) for pid, rank in rows]

    def meaning(self, query: str | None, limit: int, filters: Filters, *, vector: np.ndarray | None = None,
                exclude: int | None = None) -> list[tuple[int, float]]:
        if vector is None:
            vector = embedder().embed([query or ""])
        candidates = self.index.nearest(to_bits(vector), CANDIDATES)
        if not len(candidates):
            return []
        where, params = filters.sql()
        head = to_half(vector, VEC_DIM).astype(np.float32)[0]
        scored: list[tuple[int, float]] = []
        ids = [int(i) for i in candidates]
        for start in range(0, len(ids), 900):
            chunk = ids[start:start + 900]
            rows = self.db.query(f"SELECT p.id, p.vec{_FROM} WHERE p.id IN ({','.join('?' * len(chunk))}) "
                                 f"AND p.nsfw <= ?{where}", [*chunk, self.nsfw_threshold(), *params])
            rows = [r for r in rows if r[1] is not None and r[0] != exclude]
            if rows:
                scores = vector_matrix([r[1] for r in rows]) @ head
                scored += [(r[0], float(s)) for r, s in zip(rows, scores)]
        scored.sort(key=lambda x: -x[1])
        return scored[:limit]

    def recent(self, limit: int, filters: Filters) -> list[tuple[int, float]]:
        where, params = filters.sql()
        rows = self.db.query(f"SELECT p.id{_FROM} WHERE p.nsfw <= ?{where} ORDER BY p.id DESC LIMIT ?",
                             [self.nsfw_threshold(), *params, limit])
        return [(r[0], 0.0) for r in rows]

    # -- what callers use ------------------------------------------------------------------------

    def search(self, query: str, *, semantic: bool = False, limit: int = 20, filters: Filters | None = None,
               facets: bool = False) -> SearchResult:
        """Words alone, or (`semantic`) words and meaning fused by reciprocal rank; best first."""
        filters = filters or Filters()
        pool = max(limit, 100) if facets else limit
        if not query.strip():
            ranked = self.recent(pool, filters)
        elif semantic:
            close = [(pid, score) for pid, score in self.meaning(query, max(pool, 100), filters) if score >= MIN_MEANING]
            lists = [self.words(query, max(pool, 100), filters), close]
            fused: dict[int, float] = {}
            for ranking in lists:
                for rank, (pid, _) in enumerate(ranking):
                    fused[pid] = fused.get(pid, 0.0) + 1.0 / (RRF_K + rank + 1)
            ranked = sorted(fused.items(), key=lambda x: -x[1])[:pool]
        else:
            ranked = self.words(query, pool, filters)
        entries = self.fetch(ranked)
        return SearchResult(entries[:limit], facet_counts(entries) if facets else {})

    def fetch(self, ranked: list[tuple[int, float]]) -> list[dict[str, Any]]:
        if not ranked:
            return []
        scores = dict(ranked)
        rows = {}
        ids = list(scores)
        for start in range(0, len(ids), 900):
            chunk = ids[start:start + 900]
            for row in self.db.query(f"SELECT {_ENTRY_COLUMNS}{_FROM} WHERE p.id IN ({','.join('?' * len(chunk))})", chunk):
                rows[row[0]] = row
        return [_entry(rows[pid], scores[pid]) for pid in ids if pid in rows]

    def more_like(self, entry_id: int, limit: int = 20, filters: Filters | None = None) -> list[dict[str, Any]]:
        rows = self.db.query("SELECT prompt FROM prompts WHERE id = ?", (entry_id,))
        if not rows:
            return []
        vector = embedder().embed([rows[0][0]])
        return self.fetch(self.meaning(None, limit, filters or Filters(), vector=vector, exclude=entry_id))

    def similar(self, prompt: str, count: int = 5, pool: int = 100) -> dict[str, Any]:
        """The `count` entries nearest in meaning to `prompt`, and the typical settings among the nearest `pool`
        entries that have settings: median CFG and steps, the most common sampler and size."""
        if not prompt.strip():
            return {"entries": [], "typical": {}}
        nearest = self.fetch(self.meaning(prompt, pool, Filters()))
        with_settings = [e["settings"] for e in nearest if e["settings"]]
        return {"entries": nearest[:count], "typical": typical_settings(with_settings), "based_on": len(with_settings)}


def typical_settings(settings: list[dict[str, Any]]) -> dict[str, Any]:
    typical: dict[str, Any] = {}
    for key in ("cfg_scale", "steps"):
        values = [s[key] for s in settings if isinstance(s.get(key), (int, float))]
        if values:
            median = statistics.median(values)
            typical[key] = int(median) if key == "steps" else round(float(median), 1)
    samplers = Counter(s["sampler_name"] for s in settings if s.get("sampler_name"))
    if samplers:
        typical["sampler_name"] = samplers.most_common(1)[0][0]
    sizes = Counter((s["width"], s["height"]) for s in settings if s.get("width") and s.get("height"))
    if sizes:
        typical["width"], typical["height"] = sizes.most_common(1)[0][0]
    return typical


def facet_counts(entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """For each facet, its values among these entries and how many have each, most first."""
    values: dict[str, Counter] = {name: Counter() for name in FACETS}
    for e in entries:
        s = e["settings"]
        values["source"][e["source"]] += 1
        values["licence"][e["licence"] or "unknown"] += 1
        if e["model"]:
            values["model"][e["model"]] += 1
        if s.get("sampler_name"):
            values["sampler"][s["sampler_name"]] += 1
        values["has_image"][e["has_image"]] += 1
        if s.get("width") and s.get("height"):
            values["size"][f"{s['width']}x{s['height']}"] += 1
    return {name: [{"value": v, "count": n} for v, n in counter.most_common()] for name, counter in values.items()}
