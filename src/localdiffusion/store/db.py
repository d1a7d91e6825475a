"""The SQLite database under the home folder: owners, registered model paths, the hash cache, images and
comic projects (`ComicTable`, at the end).

One `Database` wraps one connection that every thread shares behind a lock (the worker thread and
the server's request threads). The queries are short, and SQLite lets only one writer in at a time
anyway, so a lock costs little and works for ":memory:" too. WAL lets another process (a CLI run
beside the server) read while we write; `busy_timeout` makes its writes wait instead of failing.

The schema is versioned with `PRAGMA user_version`: `MIGRATIONS[i]` takes a database from version
i to i + 1, each in one transaction. Never edit a migration that has shipped; append a new one.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localdiffusion.errors import LocalDiffusionError

LOCAL_OWNER = "local"

_V1 = """
CREATE TABLE owners (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE model_paths (
    path TEXT PRIMARY KEY,
    added_at REAL NOT NULL
);
-- The hash cache: a digest stays valid while the file keeps its size and mtime.
-- `algo` is 'sha256' (the whole file) or 'addnet' (a safetensors file after its header).
CREATE TABLE file_hashes (
    path TEXT NOT NULL,
    algo TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (path, algo)
);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES owners(id),
    created_at REAL NOT NULL,
    path TEXT NOT NULL,
    recipe_json TEXT NOT NULL,
    infotext TEXT NOT NULL DEFAULT '',
    prompt TEXT NOT NULL DEFAULT '',
    model_hash TEXT,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    starred INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0
);
-- The gallery asks for one owner's live images, newest first; this index answers that alone.
CREATE INDEX images_owner_created ON images (owner_id, deleted, created_at);
CREATE INDEX images_created ON images (created_at);
"""

# Prompt search: an external-content FTS5 index over images.prompt, kept in step by triggers.
# A LIKE '%word%' scan would read every row; FTS5 finds words (and word prefixes) from an index.
_V1_FTS = """
CREATE VIRTUAL TABLE images_fts USING fts5(
    prompt, content='images', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER images_fts_insert AFTER INSERT ON images BEGIN
    INSERT INTO images_fts(rowid, prompt) VALUES (new.id, new.prompt);
END;
CREATE TRIGGER images_fts_delete AFTER DELETE ON images BEGIN
    INSERT INTO images_fts(images_fts, rowid, prompt) VALUES ('delete', old.id, old.prompt);
END;
CREATE TRIGGER images_fts_update AFTER UPDATE OF prompt ON images BEGIN
    INSERT INTO images_fts(images_fts, rowid, prompt) VALUES ('delete', old.id, old.prompt);
    INSERT INTO images_fts(rowid, prompt) VALUES (new.id, new.prompt);
END;
"""

# The persistent job queue. `attempts` counts starts, so that a job running when the server died
# is re-queued once and then failed. `client` tells which tab or API client submitted it.
_V2 = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES owners(id),
    client TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT 'generate',
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX jobs_status_id ON jobs (status, id);
CREATE INDEX jobs_owner_created ON jobs (owner_id, created_at);
"""

# v3: jobs of other kinds than "generate" (explanations, upscales) carry their own parameters.
_V3 = """
ALTER TABLE jobs ADD COLUMN params TEXT NOT NULL DEFAULT '{}';
"""

# v4: comic projects, a row each (the project JSON, its owner and a version that every save moves on);
# their pictures stay files under HOME/comics/<id>/assets/. See "comic projects" below.
_V4 = """
CREATE TABLE comics (
    id TEXT PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES owners(id),
    title TEXT NOT NULL,
    version INTEGER NOT NULL,
    created TEXT NOT NULL,
    updated REAL NOT NULL,
    pages INTEGER NOT NULL DEFAULT 0,
    panels INTEGER NOT NULL DEFAULT 0,
    authors TEXT NOT NULL DEFAULT '[]',
    project_json TEXT NOT NULL
);
CREATE INDEX comics_owner ON comics (owner_id);
"""

# v5: the class's audit log: every facilitator action, with who, what, on what and when.
_V5 = """
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}'
);
"""

# v6: accounts (store/accounts.py): users with their owner row, role, argon2 password hash and frozen flag;
# sign-in sessions and personal API tokens, both kept as SHA-256 digests of the secret; and who may use
# which kept input picture (inputs are named by content, so one picture can belong to several owners).
_V6 = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    owner_id INTEGER NOT NULL REFERENCES owners(id),
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    frozen INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    label TEXT NOT NULL DEFAULT '',
    token_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    last_used REAL
);
CREATE TABLE input_owners (
    ref TEXT NOT NULL,
    owner_id INTEGER NOT NULL REFERENCES owners(id),
    PRIMARY KEY (ref, owner_id)
) WITHOUT ROWID;
"""


# v7: the fair queue: each job's
# estimated cost (standard steps and the model whose measured speed turns them into GPU-seconds), demo jobs
# and the front (jobs/fair.py), where it ran and the GPU-seconds it took; the learned seconds per step of
# each model; and the class's policy (limits, allowed and pinned models) as JSON values by key.
_V7 = """
ALTER TABLE jobs ADD COLUMN cost_units REAL NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cost_model TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN demo INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN front_at REAL;
ALTER TABLE jobs ADD COLUMN device TEXT;
ALTER TABLE jobs ADD COLUMN gpu_seconds REAL;
CREATE INDEX jobs_owner_status ON jobs (owner_id, status);
CREATE TABLE cost_factors (
    model TEXT PRIMARY KEY,
    seconds REAL NOT NULL,
    units REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE class_policy (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# v8: working together: what people share on the class wall (an image or a comic, by its owner; a facilitator
# may hide it, recorded with who and when; store/shares.py) and the class comics everyone in the class opens.
_V8 = """
CREATE TABLE shares (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    item_id TEXT NOT NULL,
    owner_id INTEGER NOT NULL REFERENCES owners(id),
    shared_at REAL NOT NULL,
    hidden_by TEXT,
    hidden_at REAL,
    UNIQUE (kind, item_id)
);
ALTER TABLE comics ADD COLUMN class_comic INTEGER NOT NULL DEFAULT 0;
"""

# v9: leases: the worker that holds a running job (jobs/executor.py); a result is accepted only from it, and only
# for the attempt it was given (`attempts` at the grant).
_V9 = """
ALTER TABLE jobs ADD COLUMN lease_worker TEXT;
"""

MIGRATIONS: list[str] = [_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class AuditEntry:
    at: float
    actor: str
    action: str
    target: str
    details: dict


@dataclass(frozen=True)
class ImageRow:
    id: int
    owner_id: int
    created_at: float
    path: str
    recipe_json: str
    infotext: str
    prompt: str
    model_hash: str | None
    width: int
    height: int
    starred: bool
    deleted: bool


_IMAGE_COLUMNS = "id, owner_id, created_at, path, recipe_json, infotext, prompt, model_hash, width, height, starred, deleted"


def _image(row: tuple) -> ImageRow:
    *head, starred, deleted = row
    return ImageRow(*head, starred=bool(starred), deleted=bool(deleted))


def fts5_available() -> bool:
    try:
        sqlite3.connect(":memory:").execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        return True
    except sqlite3.OperationalError:
        return False


def _fts_query(text: str) -> str:
    """User text -> an FTS5 query that matches every word as a prefix; FTS syntax is never passed through."""
    words = re.findall(r"\w+", text, flags=re.UNICODE)
    return " ".join(f'"{w}"*' for w in words)


class SQLiteFile:
    """One SQLite file shared between threads: one connection (WAL) behind a lock, transactions opened by
    us (`transaction`), and versioned migrations run in order, each in one transaction. A subclass names its
    `migrations` (never edit one that has shipped; append), the FTS5 script that comes with migration 1 where
    SQLite has FTS5, and what to call itself in messages."""

    migrations: list[str] = []
    fts_script = ""
    what = "database"
    cache_kib = 0  # the page cache; 0 keeps SQLite's default

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0  # how deep the current thread is in `transaction` blocks
        # isolation_level=None: we open transactions ourselves (see `transaction`).
        self._conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA foreign_keys = ON")
        if self.path != ":memory:":
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            if self.cache_kib:
                self._conn.execute(f"PRAGMA cache_size = -{int(self.cache_kib)}")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self):  # noqa: ANN204 (the subclass)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and run the block in one transaction (committed, or rolled back on error). A block inside
        another on the same thread joins the outer transaction, so several writers can commit as one (a job's
        images and its status: jobs/executor.py)."""
        with self._lock:
            if self._depth:  # the lock is re-entrant: only this thread can be inside the outer block
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        """Run one read statement (also for modules that own tables of their own, such as the job queue)."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _table_exists(self, name: str) -> bool:
        return bool(self.query("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)))

    @property
    def schema_version(self) -> int:
        return self.query("PRAGMA user_version")[0][0]

    def _migrate(self) -> None:
        version, latest = self.schema_version, len(self.migrations)
        if version > latest:
            raise LocalDiffusionError(
                f"The {self.what} {self.path} has schema version {version}, newer than this Local Diffusion knows "
                f"({latest}); upgrade Local Diffusion to open it."
            )
        for target in range(version + 1, latest + 1):
            with self.transaction() as conn:
                # Another process may have migrated while we waited for the write lock.
                if conn.execute("PRAGMA user_version").fetchone()[0] >= target:
                    continue
                for statement in _statements(self.migrations[target - 1]):
                    conn.execute(statement)
                if target == 1 and self.fts_script and fts5_available():
                    for statement in _statements(self.fts_script):
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")


class Database(SQLiteFile):
    """The project database. Safe to share between threads."""

    migrations = MIGRATIONS
    fts_script = _V1_FTS

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self.has_fts = self._table_exists("images_fts")
        self.local_owner_id = self.ensure_owner(LOCAL_OWNER)

    # -- audit log ------------------------------------------------------------------------

    def record_action(self, actor: str, action: str, target: str = "", details: dict | None = None) -> None:
        """One facilitator action in the audit log (`actor` is a user name, `action` a short verb like "freeze")."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO audit (at, actor, action, target, details) VALUES (?, ?, ?, ?, ?)",
                         (time.time(), actor, action, target, json.dumps(details or {})))

    def audit_log(self, limit: int = 500) -> list[AuditEntry]:
        """The newest actions first."""
        rows = self.query("SELECT at, actor, action, target, details FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [AuditEntry(at, actor, action, target, json.loads(details)) for at, actor, action, target, details in rows]

    # -- the class's policy (limits, allowed and pinned models) ------------------------------

    def policy(self, key: str, default: object = None) -> object:
        """A policy value (JSON) by key; `default` when it was never set."""
        rows = self.query("SELECT value FROM class_policy WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def set_policy(self, key: str, value: object) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO class_policy (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (key, json.dumps(value)))

    # -- owners ---------------------------------------------------------------------------

    def owner_names(self) -> dict[int, str]:
        return dict(self.query("SELECT id, name FROM owners"))

    def ensure_owner(self, name: str) -> int:
        rows = self.query("SELECT id FROM owners WHERE name = ?", (name,))
        if rows:  # the common case needs no write lock
            return rows[0][0]
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO owners (name, created_at) VALUES (?, ?)", (name, time.time()))
            return conn.execute("SELECT id FROM owners WHERE name = ?", (name,)).fetchone()[0]

    # -- who may use a kept input picture --------------------------------------------------

    def own_inputs(self, owner_id: int, refs: list[str] | tuple[str, ...]) -> None:
        """Record that `owner_id` uploaded or was given these kept inputs (`inputs/<hash>.png`)."""
        if refs:
            with self.transaction() as conn:
                conn.executemany("INSERT OR IGNORE INTO input_owners (ref, owner_id) VALUES (?, ?)",
                                 [(ref, owner_id) for ref in refs])

    def owns_input(self, owner_id: int, ref: str) -> bool:
        return bool(self.query("SELECT 1 FROM input_owners WHERE ref = ? AND owner_id = ?", (ref, owner_id)))

    # -- model paths registered with `models add` ----------------------------------------

    def register_model_path(self, path: Path | str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO model_paths (path, added_at) VALUES (?, ?)", (str(path), time.time()))

    def unregister_model_path(self, path: Path | str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM model_paths WHERE path = ?", (str(path),))

    def registered_model_paths(self) -> list[Path]:
        return [Path(p) for (p,) in self.query("SELECT path FROM model_paths ORDER BY added_at, path")]

    # -- hash cache -----------------------------------------------------------------------

    def cached_hash(self, path: Path | str, size: int, mtime_ns: int, algo: str = "sha256") -> str | None:
        """The digest stored for this file, or None when there is none or the file changed since."""
        rows = self.query(
            "SELECT digest FROM file_hashes WHERE path = ? AND algo = ? AND size = ? AND mtime_ns = ?",
            (str(path), algo, size, mtime_ns),
        )
        return rows[0][0] if rows else None

    def store_hash(self, path: Path | str, size: int, mtime_ns: int, digest: str, algo: str = "sha256") -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO file_hashes (path, algo, size, mtime_ns, digest) VALUES (?, ?, ?, ?, ?)",
                (str(path), algo, size, mtime_ns, digest),
            )

    # -- images ---------------------------------------------------------------------------

    def add_image(
        self,
        *,
        path: Path | str,
        recipe_json: str,
        width: int,
        height: int,
        infotext: str = "",
        prompt: str = "",
        model_hash: str | None = None,
        owner_id: int | None = None,
        created_at: float | None = None,
    ) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO images (owner_id, created_at, path, recipe_json, infotext, prompt, model_hash, width, height)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.local_owner_id if owner_id is None else owner_id,
                    time.time() if created_at is None else created_at,
                    str(path), recipe_json, infotext, prompt, model_hash, width, height,
                ),
            )
            return int(cur.lastrowid)

    def get_image(self, image_id: int) -> ImageRow | None:
        rows = self.query(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id = ?", (image_id,))
        return _image(rows[0]) if rows else None

    def list_images(
        self,
        owner_id: int | None = None,
        offset: int = 0,
        limit: int = 50,
        query: str | None = None,
        *,
        starred: bool | None = None,
        include_deleted: bool = False,
    ) -> list[ImageRow]:
        """One owner's images (all owners when `owner_id` is None), newest first.

        `query` matches images whose prompt contains every word of it (as a word prefix).
        """
        where, params = [], []
        if owner_id is not None:
            where.append("owner_id = ?")
            params.append(owner_id)
        if not include_deleted:
            where.append("deleted = 0")
        if starred is not None:
            where.append("starred = ?")
            params.append(int(starred))
        if query and query.strip():
            if self.has_fts:
                fts = _fts_query(query)
                if fts:
                    where.append("id IN (SELECT rowid FROM images_fts WHERE images_fts MATCH ?)")
                    params.append(fts)
            else:
                for word in query.split():
                    where.append("prompt LIKE ? ESCAPE '\\'")
                    params.append("%" + re.sub(r"([%_\\])", r"\\\1", word) + "%")
        sql = f"SELECT {_IMAGE_COLUMNS} FROM images"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        return [_image(r) for r in self.query(sql, [*params, limit, offset])]

    def set_image_flags(self, image_id: int, *, starred: bool | None = None, deleted: bool | None = None) -> None:
        with self.transaction() as conn:
            if starred is not None:
                conn.execute("UPDATE images SET starred = ? WHERE id = ?", (int(starred), image_id))
            if deleted is not None:
                conn.execute("UPDATE images SET deleted = ? WHERE id = ?", (int(deleted), image_id))


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (triggers keep their inner semicolons)."""
    statements, buffer = [], ""
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        buffer += line + "\n"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    return [s for s in statements if s.strip(" ;\n")]


# -- comic projects ---------------------------------------------------------------------------
# One row per project: the comic layer's JSON (`project_json`) beside the columns a listing needs, so
# that listing reads no JSON. `version` starts at 1 and every save adds one; a save that names the
# version it read is refused (None returned) when the row has moved on since.


@dataclass(frozen=True)
class ComicRow:
    id: str
    owner_id: int
    title: str
    version: int
    created: str
    updated: float
    pages: int
    panels: int
    authors: list[str]
    project_json: str  # '' in listings
    class_comic: bool = False


@dataclass(frozen=True)
class ComicFields:
    """What a save writes besides the id and the owner."""

    title: str
    created: str
    pages: int
    panels: int
    authors: list[str]
    project_json: str
    class_comic: bool = False  # a class comic: everyone in the class opens it (v8)


_COMIC_COLUMNS = "id, owner_id, title, version, created, updated, pages, panels, authors, class_comic"


def _comic(row: tuple, project_json: str = "") -> ComicRow:
    *head, authors, class_comic = row
    return ComicRow(*head, authors=json.loads(authors), project_json=project_json, class_comic=bool(class_comic))


class ComicTable:
    """The `comics` table's queries over a `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, project_id: str, owner_id: int, fields: ComicFields, *, if_absent: bool = False) -> bool:
        """Insert a project at version 1; with `if_absent`, a row that exists already is left alone (False)."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                f"INSERT {'OR IGNORE ' if if_absent else ''}INTO comics"
                " (id, owner_id, title, version, created, updated, pages, panels, authors, project_json, class_comic)"
                " VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
                (project_id, owner_id, fields.title, fields.created, time.time(), fields.pages, fields.panels,
                 json.dumps(fields.authors), fields.project_json, int(fields.class_comic)),
            )
            return cur.rowcount == 1

    def get(self, project_id: str) -> ComicRow | None:
        rows = self.db.query(f"SELECT {_COMIC_COLUMNS}, project_json FROM comics WHERE id = ?", (project_id,))
        return _comic(tuple(rows[0][:-1]), rows[0][-1]) if rows else None

    def owned(self, owner_id: int | None = None, *, with_class: bool = False) -> list[ComicRow]:
        """One owner's projects (everyone's when None), without their JSON; `with_class` adds the class comics."""
        sql, params = f"SELECT {_COMIC_COLUMNS} FROM comics", ()
        if owner_id is not None:
            sql, params = sql + f" WHERE owner_id = ?{' OR class_comic = 1' if with_class else ''}", (owner_id,)
        return [_comic(r) for r in self.db.query(sql + " ORDER BY id", params)]

    def update(self, project_id: str, fields: ComicFields, version: int | None = None, bump: bool = True) -> int | None:
        """Write the project and move its version on (unless not `bump`); the version it is at then, or None
        when `version` is given and the row is no longer at it (or the row is gone)."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE comics SET title = ?, created = ?, updated = ?, pages = ?, panels = ?, authors = ?,"
                " project_json = ?, class_comic = ?, version = version + ? WHERE id = ? AND (? IS NULL OR version = ?)",
                (fields.title, fields.created, time.time(), fields.pages, fields.panels, json.dumps(fields.authors),
                 fields.project_json, int(fields.class_comic), int(bump), project_id, version, version),
            )
            if cur.rowcount != 1:
                return None
            return conn.execute("SELECT version FROM comics WHERE id = ?", (project_id,)).fetchone()[0]
