"""The job queue: one small interface, and the embedded SQLite implementation.

A deployment across several GPU machines can put an existing distributed queue behind the same
interface; the server and the features only ever see `JobQueue`. Which queued job runs next is the
scheduler's choice (`jobs/fair.py`: deficit round robin over owners by estimated GPU-seconds, demo jobs
and the front first), not the oldest. It is also how the server and the
worker talk while a job runs: the worker reports its progress to the queue and asks it whether the job
should stop; the server reads that progress and asks for a stop there, never in the worker's memory.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from localdiffusion.jobs.fair import CostFactors, Entry, FairScheduler, job_units
from localdiffusion.recipe import Recipe
from localdiffusion.store.db import Database

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: tuple[str, ...] = ("done", "failed", "cancelled")
MAX_ATTEMPTS = 2  # a job interrupted by a crash is re-queued once, then failed


@dataclass
class Job:
    id: int
    owner_id: int
    client: str
    recipe: Recipe
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)  # image ids, infotexts, timings
    kind: str = "generate"  # which task runs it (jobs/tasks): generate, explain, upscale, ...
    params: dict[str, Any] = field(default_factory=dict)  # the task's own parameters besides the recipe
    estimated_seconds: float = 0.0  # the scheduler's estimate of its GPU-seconds (jobs/fair.py)
    demo: bool = False  # a facilitator's demo job: runs before the others
    device: str | None = None  # where it ran
    gpu_seconds: float | None = None  # how long it held the device

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class Lease:
    """A running job handed to one worker: the server accepts its result only from `worker` and only for this
    `attempt` (the job's attempts when it was granted), so a worker thought lost that comes back is ignored."""

    job_id: int
    worker: str
    attempt: int


@dataclass(frozen=True)
class QueuedJob:
    """A queued job's place in the run order, without its recipe (what `GET /api/queue` shows)."""

    id: int
    owner_id: int
    kind: str
    estimated_seconds: float
    demo: bool = False
    front: bool = False


@dataclass(frozen=True)
class Usage:
    """One owner's use of the queue, for the limits: jobs queued or running, GPU-seconds measured for jobs that
    finished since the time asked for, the estimate of those not finished, and when the oldest measured one
    leaves that window (None: none counted)."""

    unfinished: int
    spent_seconds: float
    pending_seconds: float
    frees_at: float | None


@dataclass
class JobProgress:
    """What a running job is doing, as its worker last reported it."""

    job: Job
    step: int = 0
    total: int = 0
    iteration: int = 0
    iterations: int = 1
    phase: str = "sample"  # "load" while models load, then "sample", "hires"... as the engine reports
    preview: Any = None  # PIL image
    started: float = 0.0
    loading: str = ""  # the "load" phase: what is loading now, and how many of how many models are done
    loaded: int = 0
    parts: int = 0
    extra: dict[str, Any] | None = None  # what a job kind reports beside the step (a training job's loss...)

    def data(self) -> dict[str, Any]:
        """The progress as step events and GET /api/jobs/{id} give it; the load phase adds what is loading."""
        data = {"step": self.step, "total": self.total, "iteration": self.iteration, "iterations": self.iterations,
                "phase": self.phase}
        if self.phase == "load":
            data.update(loading=self.loading, loaded=self.loaded, parts=self.parts)
        if self.extra:
            data.update(self.extra)
        return data


class JobQueue(ABC):
    """What the server and the worker need from a queue."""

    @abstractmethod
    def submit(self, recipe: Recipe, owner_id: int, client: str = "", kind: str = "generate",
               params: dict[str, Any] | None = None, demo: bool = False) -> Job:
        """Queue a job; a `demo` job (a facilitator's) runs before the others."""

    @abstractmethod
    def get(self, job_id: int) -> Job | None: ...

    @abstractmethod
    def list(self, owner_id: int | None = None, client: str | None = None, limit: int = 50) -> list[Job]: ...

    @abstractmethod
    def claim(self, timeout: float = 1.0, runnable: Callable[[Job], bool] | None = None) -> Job | None:
        """The queued job the scheduler picks, now running; waits up to `timeout` seconds for one.
        Nothing while the queue is paused. With `runnable`, jobs it refuses (no idle worker can run them now) are
        passed over, keeping their places and their owners' shares: the first job it accepts in the fair order."""

    def wake(self) -> None:
        """A worker became free: a `claim` waiting for a runnable job looks again now."""

    @abstractmethod
    def finish(self, job_id: int, result: dict[str, Any]) -> None: ...

    @abstractmethod
    def fail(self, job_id: int, reason: str) -> None: ...

    @abstractmethod
    def cancel_queued(self, job_id: int) -> bool:
        """Cancel a job that is still queued, atomically against claim(); False when it is not queued
        (a worker claimed it, or it finished), so that it never runs once this said True."""

    @abstractmethod
    def mark_cancelled(self, job_id: int) -> bool:
        """Record that a job ended cancelled (the worker running it stopped); False when it had finished."""

    @abstractmethod
    def position(self, job_id: int) -> int:
        """How many queued jobs are ahead of this one in the run order (0: next, or running)."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """How many jobs are queued and running."""

    @abstractmethod
    def requeue(self, job: "int | Lease") -> bool:
        """Put a running job back in the queue without counting the attempt (a graceful shutdown); given a `Lease`,
        only while that lease is still the job's current one, in the same statement (a worker lost and its job
        handed to another meanwhile keeps it). Whether it went back."""

    @abstractmethod
    def recover(self) -> list[Job]:
        """At start-up: re-queue jobs a dead server left running (once), fail them the second time."""

    # -- leases: which worker holds a running job (jobs/executor.py) ----------------------------

    @abstractmethod
    def grant(self, job_id: int, worker: str) -> Lease | None:
        """Hand a claimed (running) job to `worker`; None when it is no longer running."""

    @abstractmethod
    def holds(self, lease: Lease) -> bool:
        """Whether the lease is still the job's current one (the job running on that worker, that attempt)."""

    @abstractmethod
    def settle(self, lease: Lease, status: str, result: dict[str, Any] | None = None, error: str | None = None) -> bool:
        """End a leased job (done, failed, cancelled) only if the lease is still current; False otherwise. Inside
        `db.transaction()` it commits with whatever else the block writes (the job's images)."""

    @abstractmethod
    def release(self, lease: Lease, reason: str) -> Job | None:
        """The lease's worker was lost: its job goes back to the queue, in its place in its owner's line, the
        attempt counted; after MAX_ATTEMPTS it fails with `reason`. The job as it is then; None if the lease had
        already ended."""

    # -- the order and the facilitator's controls -------------------------------------------------

    @abstractmethod
    def order(self) -> list[QueuedJob]:
        """Every queued job in the order it will run if nothing changes."""

    @abstractmethod
    def running(self) -> list[Job]:
        """The jobs running now."""

    @abstractmethod
    def front(self, job_id: int) -> bool:
        """Move a queued job before every other; False when it is not queued."""

    @abstractmethod
    def pause(self) -> None:
        """Start nothing new (a running job finishes) until `resume`; a restart resumes."""

    @abstractmethod
    def resume(self) -> None: ...

    @property
    @abstractmethod
    def paused(self) -> bool: ...

    @abstractmethod
    def usage(self, owner_id: int, since: float) -> Usage:
        """An owner's jobs and GPU-seconds, for the limits."""

    @abstractmethod
    def record_run(self, job_id: int, device: str, gpu_seconds: float, learn: bool = False) -> None:
        """Where a job ran and how long it held the device (the owner is charged that); with `learn` (a run
        that finished with its models already loaded) it also teaches the scheduler that model's speed."""

    # -- while a job runs: the worker reports and listens, the server reads and asks --------------

    @abstractmethod
    def report(self, progress: JobProgress) -> None:
        """The worker's latest progress on a running job; kept until the job ends."""

    @abstractmethod
    def progress(self, job_id: int) -> JobProgress | None:
        """A running job's latest progress; None when it is not running (or has not reported yet)."""

    @abstractmethod
    def request_cancel(self, job_id: int) -> None:
        """Ask whoever runs (or is about to run) the job to stop it; see `cancel_requested`."""

    @abstractmethod
    def cancel_requested(self, job_id: int) -> bool:
        """Whether the job should stop: the worker asks before it starts a job and at every step."""


_COLUMNS = ("id, owner_id, client, payload, status, created_at, started_at, finished_at, attempts, error, result, kind, params, "
            "cost_units, cost_model, demo, device, gpu_seconds")
_ENTRY_COLUMNS = "id, owner_id, kind, cost_units, cost_model, demo, front_at"


class _Shared:
    """The queued set in memory, one per database connection, whichever SQLiteJobQueue objects use it: the
    scheduler, the learned speeds and whether the queue is paused. `PRAGMA data_version` tells when another
    connection (another process) has changed the database, and the queued set is read again."""

    def __init__(self, db: Database) -> None:
        self.lock = threading.RLock()
        self.scheduler = FairScheduler()
        self.factors = CostFactors(db)
        self.data_version: int | None = None
        self.paused = False
        self.order: tuple[tuple[int, int], list[QueuedJob]] | None = None  # (versions, run order)


_SHARED: weakref.WeakKeyDictionary[Database, _Shared] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def _shared(db: Database) -> _Shared:
    with _SHARED_LOCK:
        shared = _SHARED.get(db)
        if shared is None:
            shared = _SHARED[db] = _Shared(db)
        return shared


class SQLiteJobQueue(JobQueue):
    """The embedded queue: a table in the home folder's database; survives restarts. The queued jobs are
    also kept in memory for the scheduler, so a pick reads no rows but the one it claims."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._work = threading.Condition()
        # Running jobs' progress and stop requests live in memory: the worker is in this process.
        self._running = threading.Lock()
        self._progress: dict[int, JobProgress] = {}
        self._stop_requested: set[int] = set()
        self._shared = _shared(db)
        with self._shared.lock:
            self._sync()

    # -- the queued set in memory ------------------------------------------------------------

    def _estimate(self, entry: Entry) -> float:
        return entry.units * self._shared.factors.factor(entry.model)

    def _sync(self, force: bool = False) -> None:
        """Bring the scheduler's queued set in step with the table when another connection changed it
        (or `force`, after this queue moved jobs back to queued itself). Call with the shared lock held."""
        shared = self._shared
        version = self.db.query("PRAGMA data_version")[0][0]
        if not force and version == shared.data_version:
            return
        shared.data_version = version
        rows = self.db.query(f"SELECT {_ENTRY_COLUMNS} FROM jobs WHERE status = 'queued'")
        queued = {row[0] for row in rows}
        for job_id in [i for i in shared.scheduler.ids() if i not in queued]:
            shared.scheduler.remove(job_id)
        for row in rows:
            if row[0] not in shared.scheduler:
                shared.scheduler.add(self._entry(row))

    def _entry(self, row: tuple) -> Entry:
        job_id, owner, kind, units, model, demo, front_at = row
        if not units:  # queued before costs were kept: estimated once from its recipe
            payload, params = self.db.query("SELECT payload, params FROM jobs WHERE id = ?", (job_id,))[0]
            recipe = Recipe.model_validate_json(payload)
            units, model = job_units(recipe, kind, json.loads(params or "{}")), recipe.model or ""
        return Entry(job_id, owner, float(units), model or "", kind, bool(demo), float(front_at or 0.0))

    def _job(self, row: tuple) -> Job:
        (id_, owner, client, payload, status, created, started, finished, attempts, error, result, kind, params,
         units, model, demo, device, gpu_seconds) = row
        recipe = Recipe.model_validate_json(payload)
        params = json.loads(params or "{}")
        if not units:
            units, model = job_units(recipe, kind, params), recipe.model or ""
        return Job(id_, owner, client, recipe, status, created, started, finished, attempts, error,
                   json.loads(result or "{}"), kind, params, units * self._shared.factors.factor(model or ""),
                   bool(demo), device, gpu_seconds)

    # -- the interface --------------------------------------------------------------------------

    def submit(self, recipe: Recipe, owner_id: int, client: str = "", kind: str = "generate",
               params: dict[str, Any] | None = None, demo: bool = False) -> Job:
        params = params or {}
        units, model = job_units(recipe, kind, params), recipe.model or ""
        with self.db.transaction() as conn:
            cur = conn.execute("INSERT INTO jobs (owner_id, client, payload, created_at, kind, params, cost_units, cost_model, demo) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (owner_id, client, recipe.to_json(), time.time(), kind, json.dumps(params), units, model, int(demo)))
            job_id = int(cur.lastrowid)
        with self._shared.lock:
            self._shared.scheduler.add(Entry(job_id, owner_id, units, model, kind, demo))
        with self._work:
            self._work.notify_all()
        return self.get(job_id)  # type: ignore[return-value]

    def get(self, job_id: int) -> Job | None:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return self._job(rows[0]) if rows else None

    def list(self, owner_id: int | None = None, client: str | None = None, limit: int = 50) -> list[Job]:
        where, params = [], []
        if owner_id is not None:
            where.append("owner_id = ?")
            params.append(owner_id)
        if client is not None:
            where.append("client = ?")
            params.append(client)
        sql = f"SELECT {_COLUMNS} FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        return [self._job(r) for r in self.db.query(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])]

    def claim(self, timeout: float = 1.0, runnable: Callable[[Job], bool] | None = None) -> Job | None:
        deadline = time.monotonic() + timeout
        while True:
            job = self._claim_next(runnable)
            remaining = deadline - time.monotonic()
            if job is not None or remaining <= 0:
                return job
            with self._work:
                self._work.wait(min(remaining, 0.5))

    def wake(self) -> None:
        with self._work:
            self._work.notify_all()

    def _claim_next(self, runnable: Callable[[Job], bool] | None = None) -> Job | None:
        shared = self._shared
        eligible = None
        if runnable is not None:
            seen: dict[int, bool] = {}  # each candidate's row read once per claim

            def eligible(entry: Entry) -> bool:
                if entry.id not in seen:
                    job = self.get(entry.id)
                    seen[entry.id] = job is not None and runnable(job)
                return seen[entry.id]

        with shared.lock:
            if shared.paused:
                return None
            self._sync()
            while True:
                entry = shared.scheduler.pick(self._estimate, eligible)
                if entry is None:
                    return None
                with self.db.transaction() as conn:
                    claimed = conn.execute("UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 "
                                           "WHERE id = ? AND status = 'queued'", (time.time(), entry.id)).rowcount
                if claimed:  # else another connection took or ended it meanwhile: pick again
                    break
        return self.get(entry.id)

    def finish(self, job_id: int, result: dict[str, Any]) -> None:
        self._end(job_id, "done", None, result)

    def fail(self, job_id: int, reason: str) -> None:
        self._end(job_id, "failed", reason, None)

    def cancel_queued(self, job_id: int) -> bool:
        with self._shared.lock:  # atomic against a claim, which picks under the same lock
            with self.db.transaction() as conn:
                cur = conn.execute("UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status = 'queued'",
                                   (time.time(), job_id))
                cancelled = cur.rowcount > 0
            if cancelled:
                self._shared.scheduler.remove(job_id)
        if cancelled:
            self._forget(job_id)
        return cancelled

    def mark_cancelled(self, job_id: int) -> bool:
        with self._shared.lock:
            with self.db.transaction() as conn:
                cur = conn.execute("UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status IN ('queued', 'running')",
                                   (time.time(), job_id))
            self._shared.scheduler.remove(job_id)
        self._forget(job_id)
        return cur.rowcount > 0

    def _end(self, job_id: int, status: str, error: str | None, result: dict[str, Any] | None) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error = ?, result = COALESCE(?, result), lease_worker = NULL "
                "WHERE id = ? AND status = 'running'",
                (status, time.time(), error, None if result is None else json.dumps(result), job_id),
            )
        self._forget(job_id)

    def grant(self, job_id: int, worker: str) -> Lease | None:
        with self.db.transaction() as conn:
            if not conn.execute("UPDATE jobs SET lease_worker = ? WHERE id = ? AND status = 'running'", (worker, job_id)).rowcount:
                return None
            attempts = conn.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        return Lease(job_id, worker, int(attempts))

    _HELD = "id = ? AND status = 'running' AND lease_worker = ? AND attempts = ?"

    def holds(self, lease: Lease) -> bool:
        return bool(self.db.query(f"SELECT 1 FROM jobs WHERE {self._HELD}", (lease.job_id, lease.worker, lease.attempt)))

    def settle(self, lease: Lease, status: str, result: dict[str, Any] | None = None, error: str | None = None) -> bool:
        # Not under the shared lock: a running job is not in the queued set, and the caller may hold the database
        # (its images' transaction), which a claim takes after the shared lock.
        with self.db.transaction() as conn:
            settled = conn.execute(
                f"UPDATE jobs SET status = ?, finished_at = ?, error = ?, result = COALESCE(?, result), lease_worker = NULL "
                f"WHERE {self._HELD}",
                (status, time.time(), error, None if result is None else json.dumps(result), lease.job_id, lease.worker,
                 lease.attempt)).rowcount > 0
        if settled:
            self._forget(lease.job_id)
        return settled

    def release(self, lease: Lease, reason: str) -> Job | None:
        with self._shared.lock:
            with self.db.transaction() as conn:
                failed = conn.execute(f"UPDATE jobs SET status = 'failed', finished_at = ?, error = ?, lease_worker = NULL "
                                      f"WHERE {self._HELD} AND attempts >= ?",
                                      (time.time(), reason, lease.job_id, lease.worker, lease.attempt, MAX_ATTEMPTS)).rowcount
                back = conn.execute(f"UPDATE jobs SET status = 'queued', started_at = NULL, lease_worker = NULL WHERE {self._HELD}",
                                    (lease.job_id, lease.worker, lease.attempt)).rowcount
            if back:
                self._sync(force=True)
        if not (failed or back):
            return None
        self._forget(lease.job_id, keep_stop=bool(back))
        return self.get(lease.job_id)

    def position(self, job_id: int) -> int:
        for i, queued in enumerate(self.order()):
            if queued.id == job_id:
                return i
        return 0

    def order(self) -> list[QueuedJob]:
        shared = self._shared
        with shared.lock:
            self._sync()
            versions = (shared.scheduler.version, shared.factors.version)
            if shared.order is None or shared.order[0] != versions:  # worked out once per change of the queue
                shared.order = (versions, [QueuedJob(e.id, e.owner, e.kind, self._estimate(e), e.demo, bool(e.front))
                                           for e in shared.scheduler.order(self._estimate)])
            return list(shared.order[1])

    def running(self) -> list[Job]:
        return [self._job(r) for r in self.db.query(f"SELECT {_COLUMNS} FROM jobs WHERE status = 'running' ORDER BY started_at")]

    def front(self, job_id: int) -> bool:
        with self._shared.lock:
            self._sync()
            stamp = self._shared.scheduler.front(job_id)
            if stamp is None:
                return False
            with self.db.transaction() as conn:
                conn.execute("UPDATE jobs SET front_at = ? WHERE id = ?", (stamp, job_id))
        return True

    def pause(self) -> None:
        self._shared.paused = True

    def resume(self) -> None:
        self._shared.paused = False
        with self._work:
            self._work.notify_all()

    @property
    def paused(self) -> bool:
        return self._shared.paused

    def usage(self, owner_id: int, since: float) -> Usage:
        spent, frees_at = self.db.query("SELECT COALESCE(SUM(gpu_seconds), 0), MIN(finished_at) FROM jobs "
                                        "WHERE owner_id = ? AND finished_at >= ? AND gpu_seconds IS NOT NULL", (owner_id, since))[0]
        rows = self.db.query("SELECT cost_units, cost_model FROM jobs WHERE owner_id = ? AND status IN ('queued', 'running')",
                             (owner_id,))
        factors = self._shared.factors
        pending = sum(units * factors.factor(model) for units, model in rows)
        return Usage(len(rows), float(spent), pending, frees_at)

    def record_run(self, job_id: int, device: str, gpu_seconds: float, learn: bool = False) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE jobs SET device = ?, gpu_seconds = ? WHERE id = ?", (device, gpu_seconds, job_id))
        job = self.get(job_id)
        if job is None:
            return
        units, model = self.db.query("SELECT cost_units, cost_model FROM jobs WHERE id = ?", (job_id,))[0]
        shared = self._shared
        if not job.demo:
            with shared.lock:  # the owner pays what the job really took, not what it was estimated to take
                shared.scheduler.charge(job.owner_id, gpu_seconds - job.estimated_seconds)
        if learn:
            shared.factors.learn(model, units, gpu_seconds)

    def counts(self) -> dict[str, int]:
        rows = dict(self.db.query("SELECT status, COUNT(*) FROM jobs WHERE status IN ('queued', 'running') GROUP BY status"))
        return {"queued": int(rows.get("queued", 0)), "running": int(rows.get("running", 0))}

    def requeue(self, job: int | Lease) -> bool:
        if isinstance(job, Lease):
            job_id, where, params = job.job_id, self._HELD, (job.job_id, job.worker, job.attempt)
        else:
            job_id, where, params = job, "id = ? AND status = 'running'", (job,)
        with self._shared.lock:
            with self.db.transaction() as conn:
                back = conn.execute("UPDATE jobs SET status = 'queued', started_at = NULL, attempts = MAX(attempts - 1, 0), "
                                    f"lease_worker = NULL WHERE {where}", params).rowcount > 0
            if back:
                self._sync(force=True)
        if back:
            self._forget(job_id, keep_stop=True)  # a cancel that came meanwhile still stops it when it is claimed again
        return back

    def recover(self) -> list[Job]:
        with self._shared.lock:
            with self.db.transaction() as conn:
                conn.execute(
                    "UPDATE jobs SET status = 'failed', finished_at = ?, error = ? WHERE status = 'running' AND attempts >= ?",
                    (time.time(), "The server stopped twice while this job was running, so it was not retried again.", MAX_ATTEMPTS),
                )
                ids = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE status = 'running'").fetchall()]
                conn.execute("UPDATE jobs SET status = 'queued', lease_worker = NULL WHERE status = 'running'")
            self._sync(force=True)
        return [j for j in (self.get(i) for i in ids) if j is not None]

    def report(self, progress: JobProgress) -> None:
        with self._running:
            self._progress[progress.job.id] = progress

    def progress(self, job_id: int) -> JobProgress | None:
        with self._running:
            return self._progress.get(job_id)

    def request_cancel(self, job_id: int) -> None:
        with self._running:
            self._stop_requested.add(job_id)

    def cancel_requested(self, job_id: int) -> bool:
        with self._running:
            return job_id in self._stop_requested

    def _forget(self, job_id: int, keep_stop: bool = False) -> None:
        """A job that ended has no progress and no stop request any more; one that went back to the queue
        (`keep_stop`) keeps its stop request, so a cancel asked while it was briefly claimed is not lost."""
        with self._running:
            self._progress.pop(job_id, None)
            if not keep_stop:
                self._stop_requested.discard(job_id)
