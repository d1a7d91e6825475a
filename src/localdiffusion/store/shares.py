"""The class wall's shares (migration v8, table `shares`): an image or a comic its owner put on the wall.

One row per shared thing (`kind` "image" or "comic", `item_id` the image id or the comic project id as
text): sharing again keeps the row (and its place on the wall), unsharing deletes it. A facilitator may
hide a share (`hidden_by`, `hidden_at`); participants no longer see it, facilitators see it marked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from localdiffusion.store.db import Database

KINDS = ("image", "comic")


@dataclass(frozen=True)
class Share:
    id: int
    kind: str
    item_id: str
    owner_id: int
    shared_at: float
    hidden_by: str | None
    hidden_at: float | None

    @property
    def hidden(self) -> bool:
        return self.hidden_at is not None


_COLUMNS = "id, kind, item_id, owner_id, shared_at, hidden_by, hidden_at"


class ShareTable:
    """The `shares` table's queries over a `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def share(self, kind: str, item_id: str | int, owner_id: int) -> Share:
        """Put the thing on the wall (once: sharing it again answers the share there is)."""
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO shares (kind, item_id, owner_id, shared_at) VALUES (?, ?, ?, ?)",
                         (kind, str(item_id), owner_id, time.time()))
        found = self.find(kind, item_id)
        assert found is not None
        return found

    def unshare(self, kind: str, item_id: str | int) -> bool:
        """Take the thing off the wall. A share a facilitator hid stays (hidden), so that unsharing and sharing
        again cannot bring a hidden item back."""
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM shares WHERE kind = ? AND item_id = ? AND hidden_at IS NULL",
                                (kind, str(item_id))).rowcount == 1

    def find(self, kind: str, item_id: str | int) -> Share | None:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM shares WHERE kind = ? AND item_id = ?", (kind, str(item_id)))
        return Share(*rows[0]) if rows else None

    def get(self, share_id: int) -> Share | None:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM shares WHERE id = ?", (share_id,))
        return Share(*rows[0]) if rows else None

    def listed(self, *, with_hidden: bool) -> list[Share]:
        """Newest first; hidden shares only `with_hidden`."""
        where = "" if with_hidden else " WHERE hidden_at IS NULL"
        return [Share(*r) for r in self.db.query(f"SELECT {_COLUMNS} FROM shares{where} ORDER BY shared_at DESC, id DESC")]

    def hide(self, share_id: int, by: str | None) -> None:
        """Hide (`by` a facilitator's name) or, with None, show again."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE shares SET hidden_by = ?, hidden_at = ? WHERE id = ?",
                         (by, None if by is None else time.time(), share_id))
