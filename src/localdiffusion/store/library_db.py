"""The reference library's database, `HOME/library.sqlite`: its own file and its own versioned schema, apart from
the studio's `db.sqlite` (a library of a million prompts is copied, shared or deleted on its own).

Tables:
- `sources`: where entries come from (name, kind, address, licence, attribution) and how many entries each has;
- `prompts`: one entry each (prompt, negative prompt, settings as JSON with A1111's API field names, the
  source, an external id and page address, an NSFW score, the facet columns model/sampler/width/height/
  has_image, and `hash`, a 64-bit content hash that is UNIQUE, so importing the same file again adds nothing);
  `vec` is the entry's meaning as float16 (the first `VEC_DIM` dimensions of the embedding);
- `prompt_bits`: the same embedding binarised (one bit per dimension), scanned in memory for meaning search;
- `prompts_fts`: FTS5 over the prompts (external content, kept by triggers), ranked with bm25;
- `images`: an entry's picture (its path and thumbnail);
- `styles`: named styles (A1111's styles.csv, Fooocus JSON), in the order they were added;
- `settings`: the library's settings by key (the NSFW threshold).

One `LibraryDB` wraps one connection shared between threads behind a lock, as `store/db.py` does; the
migrations are applied the same way (`PRAGMA user_version`, one transaction each, never edited once shipped).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from localdiffusion.store.db import SQLiteFile

VEC_DIM = 128  # float16 dimensions kept per entry for re-ranking (wordllama's embeddings are Matryoshka-trained)

_V1 = """
CREATE TABLE sources (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    licence TEXT NOT NULL DEFAULT '',
    attribution TEXT NOT NULL DEFAULT '',
    entries INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE prompts (
    id INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources(id),
    prompt TEXT NOT NULL,
    negative_prompt TEXT NOT NULL DEFAULT '',
    settings TEXT NOT NULL DEFAULT '{}',
    external_id TEXT,
    url TEXT,
    nsfw REAL NOT NULL DEFAULT 0,
    model TEXT,
    sampler TEXT,
    width INTEGER,
    height INTEGER,
    has_image INTEGER NOT NULL DEFAULT 0,
    hash INTEGER NOT NULL UNIQUE,
    vec BLOB
);
CREATE TABLE prompt_bits (
    id INTEGER PRIMARY KEY,
    bits BLOB NOT NULL
);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    path TEXT NOT NULL,
    thumb TEXT NOT NULL DEFAULT '',
    width INTEGER,
    height INTEGER
);
CREATE INDEX images_prompt ON images (prompt_id);
CREATE TABLE styles (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    prompt TEXT NOT NULL DEFAULT '',
    negative_prompt TEXT NOT NULL DEFAULT '',
    source_id INTEGER REFERENCES sources(id)
);
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_V1_FTS = """
CREATE VIRTUAL TABLE prompts_fts USING fts5(
    prompt, content='prompts', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER prompts_fts_insert AFTER INSERT ON prompts BEGIN
    INSERT INTO prompts_fts(rowid, prompt) VALUES (new.id, new.prompt);
END;
CREATE TRIGGER prompts_fts_delete AFTER DELETE ON prompts BEGIN
    INSERT INTO prompts_fts(prompts_fts, rowid, prompt) VALUES ('delete', old.id, old.prompt);
END;
"""

MIGRATIONS: list[str] = [_V1]
SCHEMA_VERSION = len(MIGRATIONS)
LIBRARY_FILE = "library.sqlite"


class LibraryDB(SQLiteFile):
    """The library database. Safe to share between threads."""

    migrations = MIGRATIONS
    fts_script = _V1_FTS
    what = "library"
    cache_kib = 131072  # 128 MiB: imports touch the FTS and hash indexes everywhere

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self.has_fts = self._table_exists("prompts_fts")

    def data_version(self) -> tuple[int, int]:
        """Changes when entries are added (here or by another process): the newest id, and the entries the sources count."""
        newest = self.query("SELECT coalesce(max(id), 0) FROM prompt_bits")[0][0]
        return newest, self.query("SELECT coalesce(sum(entries), 0) FROM sources")[0][0]

    # -- sources --------------------------------------------------------------------------

    def ensure_source(self, name: str, kind: str, address: str = "", licence: str = "", attribution: str = "") -> int:
        """The id of the source `name`, added if new; a licence, address or attribution given now is kept."""
        with self.transaction() as conn:
            row = conn.execute("SELECT id FROM sources WHERE name = ?", (name,)).fetchone()
            if row is None:
                return conn.execute(
                    "INSERT INTO sources (name, kind, address, licence, attribution, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (name, kind, address, licence, attribution, time.time())).lastrowid
            for column, value in (("address", address), ("licence", licence), ("attribution", attribution)):
                if value:
                    conn.execute(f"UPDATE sources SET {column} = ? WHERE id = ?", (value, row[0]))
            return row[0]

    def recount(self, source_id: int) -> int:
        with self.transaction() as conn:
            n = conn.execute("SELECT count(*) FROM prompts WHERE source_id = ?", (source_id,)).fetchone()[0]
            conn.execute("UPDATE sources SET entries = ? WHERE id = ?", (n, source_id))
            return n

    def sources(self) -> list[dict]:
        rows = self.query("SELECT id, name, kind, address, licence, attribution, entries FROM sources ORDER BY id")
        return [dict(zip(("id", "name", "kind", "address", "licence", "attribution", "entries"), r)) for r in rows]

    # -- settings -------------------------------------------------------------------------

    def setting(self, key: str, default: object = None) -> object:
        rows = self.query("SELECT value FROM settings WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def set_setting(self, key: str, value: object) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (key, json.dumps(value)))


def library_path(home_root: Path) -> Path:
    return Path(home_root) / LIBRARY_FILE
