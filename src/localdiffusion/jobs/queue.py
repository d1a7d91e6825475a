"""The job queue: one small interface, and the embedded SQLite implementation.

A deployment across several GPU machines can put an existing distributed queue behind the same
interface; the server and the features only ever see `JobQueue`. It is also how the server and the
worker talk while a job runs: the worker reports its progress to the queue and asks it whether the job
should stop; the server reads that progress and asks for a stop there, never in the worker's memory.
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

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

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


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

    def data(self) -> dict[str, Any]:
        """The progress as step events and GET /api/jobs/{id} give it; the load phase adds what is loading."""
        data = {"step": self.step, "total": self.total, "iteration": self.iteration, "iterations": self.iterations,
                "phase": self.phase}
        if self.phase == "load":
            data.update(loading=self.loading, loaded=self.loaded, parts=self.parts)
        return data


class JobQueue(ABC):
    """What the server and the worker need from a queue."""

    @abstractmethod
    def submit(self, recipe: Recipe, owner_id: int, client: str = "", kind: str = "generate",
               params: dict[str, Any] | None = None) -> Job: ...

    @abstractmethod
    def get(self, job_id: int) -> Job | None: ...

    @abstractmethod
    def list(self, owner_id: int | None = None, client: str | None = None, limit: int = 50) -> list[Job]: ...

    @abstractmethod
    def claim(self, timeout: float = 1.0) -> Job | None:
        """The oldest queued job, now running; waits up to `timeout` seconds for one."""

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
        """How many queued jobs are ahead of this one (0: next, or running)."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """How many jobs are queued and running."""

    @abstractmethod
    def requeue(self, job_id: int) -> None:
        """Put a running job back in the queue without counting the attempt (a graceful shutdown)."""

    @abstractmethod
    def recover(self) -> list[Job]:
        """At start-up: re-queue jobs a dead server left running (once), fail them the second time."""

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


_COLUMNS = "id, owner_id, client, payload, status, created_at, started_at, finished_at, attempts, error, result, kind, params"


def _job(row: tuple) -> Job:
    id_, owner, client, payload, status, created, started, finished, attempts, error, result, kind, params = row
    return Job(id_, owner, client, Recipe.model_validate_json(payload), status, created, started, finished,
               attempts, error, json.loads(result or "{}"), kind, json.loads(params or "{}"))


class SQLiteJobQueue(JobQueue):
    """The embedded queue: a table in the home folder's database; survives restarts."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._work = threading.Condition()
        # Running jobs' progress and stop requests live in memory: the worker is in this process.
        self._running = threading.Lock()
        self._progress: dict[int, JobProgress] = {}
        self._stop_requested: set[int] = set()

    def submit(self, recipe: Recipe, owner_id: int, client: str = "", kind: str = "generate",
               params: dict[str, Any] | None = None) -> Job:
        with self.db.transaction() as conn:
            cur = conn.execute("INSERT INTO jobs (owner_id, client, payload, created_at, kind, params) VALUES (?, ?, ?, ?, ?, ?)",
                               (owner_id, client, recipe.to_json(), time.time(), kind, json.dumps(params or {})))
            job_id = int(cur.lastrowid)
        with self._work:
            self._work.notify_all()
        return self.get(job_id)  # type: ignore[return-value]

    def get(self, job_id: int) -> Job | None:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def list(self, owner_id: int | None = None, client: str | None = None, limit: int = 50) -> list[Job]:
        where, params = [], []
        if owner_id is not None:
            where.append("owner_id = ?")
            params.append(owner_id)
        if client is not None:
            where.append("client = ?")
            params.append(client)
        sql = f"SELECT {_COLUMNS} FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        return [_job(r) for r in self.db.query(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])]

    def claim(self, timeout: float = 1.0) -> Job | None:
        deadline = time.monotonic() + timeout
        while True:
            job = self._claim_next()
            remaining = deadline - time.monotonic()
            if job is not None or remaining <= 0:
                return job
            with self._work:
                self._work.wait(min(remaining, 0.5))

    def _claim_next(self) -> Job | None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            conn.execute("UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 WHERE id = ?",
                         (time.time(), row[0]))
        return self.get(row[0])

    def finish(self, job_id: int, result: dict[str, Any]) -> None:
        self._end(job_id, "done", None, result)

    def fail(self, job_id: int, reason: str) -> None:
        self._end(job_id, "failed", reason, None)

    def cancel_queued(self, job_id: int) -> bool:
        with self.db.transaction() as conn:
            cur = conn.execute("UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status = 'queued'",
                               (time.time(), job_id))
            cancelled = cur.rowcount > 0
        if cancelled:
            self._forget(job_id)
        return cancelled

    def mark_cancelled(self, job_id: int) -> bool:
        with self.db.transaction() as conn:
            cur = conn.execute("UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status IN ('queued', 'running')",
                               (time.time(), job_id))
        self._forget(job_id)
        return cur.rowcount > 0

    def _end(self, job_id: int, status: str, error: str | None, result: dict[str, Any] | None) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error = ?, result = COALESCE(?, result) WHERE id = ? AND status = 'running'",
                (status, time.time(), error, None if result is None else json.dumps(result), job_id),
            )
        self._forget(job_id)

    def position(self, job_id: int) -> int:
        rows = self.db.query("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND id < ?", (job_id,))
        return int(rows[0][0])

    def counts(self) -> dict[str, int]:
        rows = dict(self.db.query("SELECT status, COUNT(*) FROM jobs WHERE status IN ('queued', 'running') GROUP BY status"))
        return {"queued": int(rows.get("queued", 0)), "running": int(rows.get("running", 0))}

    def requeue(self, job_id: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE jobs SET status = 'queued', started_at = NULL, attempts = MAX(attempts - 1, 0) "
                         "WHERE id = ? AND status = 'running'", (job_id,))
        self._forget(job_id)

    def recover(self) -> list[Job]:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, error = ? WHERE status = 'running' AND attempts >= ?",
                (time.time(), "The server stopped twice while this job was running, so it was not retried again.", MAX_ATTEMPTS),
            )
            ids = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE status = 'running'").fetchall()]
            conn.execute("UPDATE jobs SET status = 'queued' WHERE status = 'running'")
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

    def _forget(self, job_id: int) -> None:
        """A job that ended (or went back to the queue) has no progress and no stop request any more."""
        with self._running:
            self._progress.pop(job_id, None)
            self._stop_requested.discard(job_id)
