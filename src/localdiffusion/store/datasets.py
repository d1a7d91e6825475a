"""Training datasets made in the studio: a name, a trigger word, a note of where the pictures came from, and the
pictures (kept inputs, stored once by content hash under HOME/inputs) with their captions and crops.

Each dataset is one JSON file `HOME/datasets/<id>.json`, written atomically, with its owner's id; the server
shows a dataset to its owner and to facilitators only.
"""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from localdiffusion.store.files import write_text_atomic

_LOCK = threading.Lock()


class DatasetPicture(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ref: str  # inputs/<hash>.png
    caption: str = Field("", max_length=2000)
    crop: list[int] | None = Field(None, min_length=4, max_length=4)  # left, top, right, bottom in pixels; None: whole
    width: int = 0
    height: int = 0


class DatasetRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    owner_id: int
    name: str = Field(max_length=100)
    trigger: str = Field("", max_length=100)
    source: str = Field("", max_length=1000)  # where the pictures came from and whose they are
    pictures: list[DatasetPicture]
    created_at: float
    updated_at: float


class Datasets:
    """The datasets of one home (HOME/datasets)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, dataset_id: str) -> Path | None:
        if not (len(dataset_id) == 16 and all(c in "0123456789abcdef" for c in dataset_id)):
            return None
        return self.root / f"{dataset_id}.json"

    def get(self, dataset_id: str) -> DatasetRecord | None:
        path = self.path(dataset_id)
        if path is None or not path.is_file():
            return None
        try:
            return DatasetRecord.model_validate_json(path.read_text("utf-8"))
        except (OSError, ValueError):
            return None

    def list(self, owner_id: int | None = None) -> list[DatasetRecord]:
        """Newest first; one owner's, or everyone's (None)."""
        found = [d for d in (self.get(p.stem) for p in self.root.glob("*.json")) if d is not None]
        return sorted((d for d in found if owner_id is None or d.owner_id == owner_id), key=lambda d: -d.created_at)

    def create(self, owner_id: int, name: str, trigger: str, source: str, pictures: list[DatasetPicture]) -> DatasetRecord:
        now = time.time()
        with _LOCK:
            while True:
                dataset_id = secrets.token_hex(8)
                if not (self.root / f"{dataset_id}.json").exists():
                    break
            record = DatasetRecord(id=dataset_id, owner_id=owner_id, name=name, trigger=trigger, source=source,
                                   pictures=pictures, created_at=now, updated_at=now)
            self.save(record)
        return record

    def save(self, record: DatasetRecord) -> DatasetRecord:
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.root / f"{record.id}.json", record.model_dump_json(indent=1))
        return record

    def delete(self, dataset_id: str) -> None:
        path = self.path(dataset_id)
        if path is not None:
            path.unlink(missing_ok=True)
