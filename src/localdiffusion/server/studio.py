"""The services one server runs with: home, database, library, engine, job queue, scheduler, events."""

from __future__ import annotations

from dataclasses import dataclass, replace

from localdiffusion.engine import Engine, EngineOptions
from localdiffusion.errors import BadInput, LocalDiffusionError
from localdiffusion.jobs import EventBus, JobQueue, SQLiteJobQueue
from localdiffusion.jobs.executor import Executor, LocalExecutor, Scheduler
from localdiffusion.jobs.queue import Job
from localdiffusion.jobs.results import ResultStore
from localdiffusion.models.library import ModelLibrary
from localdiffusion.store.accounts import Accounts
from localdiffusion.store.db import LOCAL_OWNER, Database
from localdiffusion.store.home import Home

EXECUTORS = ("local", "ray")


@dataclass
class Studio:
    home: Home
    db: Database
    library: ModelLibrary
    engine: Engine
    queue: JobQueue
    events: EventBus
    scheduler: Scheduler  # hands the queue's jobs to the workers (jobs/executor.py); started by the app
    token: str | None = None  # required on every request when set (with accounts: the operator's way in)
    join_code: str | None = None  # lets a person make a participant account (`serve --join-code`)

    @classmethod
    def open(cls, home: Home, token: str | None = None, options: EngineOptions | None = None,
             join_code: str | None = None, workers: str = "local", gpus: list[int] | None = None,
             ray_address: str | None = None, cpu_workers: int = 0) -> "Studio":
        """The studio's services. `workers`: "local" (one worker per device of `gpus`, else one on the engine's
        device) or "ray" (actors on a Ray cluster at `ray_address`, else a local one; `cpu_workers` CPU actors)."""
        if workers not in EXECUTORS:
            raise BadInput(f"Unknown workers '{workers}'; use 'local' or 'ray'.", field="workers")
        options = options or EngineOptions()
        if gpus:
            options = replace(options, device=f"cuda:{gpus[0]}")
        db = Database(home.db_path)
        library = ModelLibrary(home, db)
        engine = Engine(library, options)
        queue = SQLiteJobQueue(db)
        events = EventBus()
        executor: Executor
        if workers == "ray":
            from localdiffusion.jobs.ray_executor import RayExecutor

            executor = RayExecutor(address=ray_address, cpu_workers=cpu_workers, home_root=str(home.root), options=options)
        else:
            engines = [engine] + [Engine(library, replace(options, device=f"cuda:{g}")) for g in (gpus or [])[1:]]
            executor = LocalExecutor.for_engines(engines)
        scheduler = Scheduler(queue, events, ResultStore(home.outputs, db, home.model_dir), executor, home_root=home.root,
                              model_of=lambda job: checkpoint_of(library, job))
        return cls(home, db, library, engine, queue, events, scheduler, token, join_code)

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


def checkpoint_of(library: ModelLibrary, job: Job) -> str | None:
    """The name of the checkpoint a job runs on, as the workers report theirs (for affinity)."""
    try:
        return library.get(job.recipe.model, kind="checkpoint").name
    except LocalDiffusionError:
        return job.recipe.model or None
