"""The services one server runs with: home, database, library, engine, job queue, worker, events."""

from __future__ import annotations

from dataclasses import dataclass

from localdiffusion.engine import Engine, EngineOptions
from localdiffusion.jobs import EventBus, JobQueue, SQLiteJobQueue, Worker
from localdiffusion.models.library import ModelLibrary
from localdiffusion.store.accounts import Accounts
from localdiffusion.store.db import LOCAL_OWNER, Database
from localdiffusion.store.home import Home


@dataclass
class Studio:
    home: Home
    db: Database
    library: ModelLibrary
    engine: Engine
    queue: JobQueue
    events: EventBus
    worker: Worker
    token: str | None = None  # required on every request when set (with accounts: the operator's way in)
    join_code: str | None = None  # lets a person make a participant account (`serve --join-code`)

    @classmethod
    def open(cls, home: Home, token: str | None = None, options: EngineOptions | None = None,
             join_code: str | None = None) -> "Studio":
        db = Database(home.db_path)
        library = ModelLibrary(home, db)
        engine = Engine(library, options)
        queue = SQLiteJobQueue(db)
        events = EventBus()
        return cls(home, db, library, engine, queue, events, Worker(queue, engine, events), token, join_code)

    @property
    def accounts(self) -> Accounts:
        """The home's accounts (none until the first is added: then everyone signs in)."""
        return Accounts(self.db)

    @property
    def owner_id(self) -> int:
        """The owner of everything made here; a single local owner until accounts arrive."""
        return self.db.local_owner_id

    @property
    def owner_name(self) -> str:
        return LOCAL_OWNER
