"""The scheduler and the executors below it: who runs which job, with leases, exactly once.

The server stays the scheduler. `Scheduler` owns the queue (its fair pick, jobs/fair.py), the result store and
the event bus; it hands a job to a worker only when that worker is idle, so nothing below it holds a queue of its
own that could undo the fair order. A worker is one place jobs run (`ExecutorWorker`): a device in the server's
process (`LocalExecutor`, the default: one per visible device, `serve --gpus 0,1`) or a Ray actor on any machine
of a cluster (`jobs/ray_executor.py`, `serve --workers ray`). An `Executor` creates workers and tells the
scheduler when one comes or goes.

- **Leases.** A dispatched job carries a lease (`Lease`: job, worker, attempt), kept in the job's row. The
  scheduler accepts a worker's progress and result only while its lease is current, and records the result (the
  images' rows) and the job's status in one database transaction.
- **Lost workers.** A worker whose process dies, whose actor Ray reports lost, or that sends no heartbeat for
  `HEARTBEAT_TIMEOUT` seconds loses its lease: its job goes back to the queue in its place in its owner's line,
  the attempt counted; after `MAX_ATTEMPTS` it fails with a sentence. A result that comes later is refused.
- **Affinity.** The fair pick chooses the job; among the idle workers that have the job's model, one that holds
  it loaded comes first, then one holding nothing, then the one idle longest. A worker that lacks a model (it said
  which it has when it started) is never given jobs for it. A job whose model only busy workers have waits in its
  place (its owner neither charged nor credited) while the fair pick passes on to jobs an idle worker can run.
- **One event bus.** Progress from every worker comes through `progress()`, which keeps it in the queue
  (`JobQueue.report`, for `GET /api/jobs/{id}` and A1111's progress route) and publishes it on the bus.
- **Recovery** of jobs a dead server left running happens once, when the server starts (`start(recover=True)`),
  never because a worker starts.
"""

from __future__ import annotations

import logging
import os
import queue as threadqueue
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from localdiffusion.engine import Engine, Progress
from localdiffusion.engine.inputs import BytesInputs, HomeInputs, Inputs
from localdiffusion.errors import LocalDiffusionError
from localdiffusion.jobs.artefacts import TaskOutput
from localdiffusion.jobs.events import Event, EventBus
from localdiffusion.jobs.queue import MAX_ATTEMPTS, Job, JobProgress, JobQueue, Lease
from localdiffusion.jobs.results import ResultStore
from localdiffusion.jobs.runner import JobRunner, Outcome, unexpected
from localdiffusion.recipe import Recipe

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT = 30.0  # seconds without a sign of life before a worker's lease is lost
WATCH_INTERVAL = 0.1  # how often the scheduler forwards cancels and checks heartbeats
HAND_OVER_FAILED = "The server could not hand this job to a worker."

__all__ = ["Assignment", "Executor", "ExecutorWorker", "HEARTBEAT_TIMEOUT", "Lease", "LocalExecutor", "LocalWorker",
           "Scheduler", "input_refs", "job_input_names"]


# --- what a worker receives -----------------------------------------------------------------------------


def input_refs(recipe: Recipe) -> dict[str, str | None]:
    """Every picture a recipe names, by the field that names it."""
    refs = {"init_image": recipe.init_image, "mask": recipe.mask}
    for i, unit in enumerate(recipe.controls):
        refs[f"controls.{i}.image"], refs[f"controls.{i}.map"] = unit.image, unit.map
    for i, reference in enumerate(recipe.references):
        refs[f"references.{i}.image"] = reference.image
    return refs


def job_input_names(job: Job) -> list[str]:
    """The names of every picture a job reads: its recipe's, a comic job's panels', an upscale's source."""
    recipes = [job.recipe]
    if job.kind == "panels":
        recipes += [Recipe.model_validate(r) for r in job.params.get("recipes") or []]
    names = [ref for recipe in recipes for ref in input_refs(recipe).values() if ref]
    if isinstance(job.params.get("image"), str):
        names.append(job.params["image"])
    if job.kind == "train":  # a training job's pictures (jobs/tasks/train.py)
        names += [p["ref"] for p in job.params.get("pictures") or [] if isinstance(p, dict) and isinstance(p.get("ref"), str)]
    return list(dict.fromkeys(names))


@dataclass
class Assignment:
    """A job handed to a worker: its lease, the job (Recipe, kind, params) and its pictures."""

    lease: Lease
    job: Job
    inputs: Inputs


# --- workers and executors --------------------------------------------------------------------------------


class ExecutorWorker(ABC):
    """One place jobs run, one at a time. It reports to its scheduler: `progress` while a job runs (which says
    whether to go on), `complete` when it ends, `seen` as a heartbeat, `lost` when it is gone."""

    id: str
    node: str = ""
    device: str = "cpu"
    pid: int = 0
    remote: bool = False  # True: it needs the job's pictures as bytes and its cancels forwarded
    available: set[str] | None = None  # the checkpoints it can load, by name; None: every one of the server's library

    @abstractmethod
    def start_job(self, assignment: Assignment) -> None:
        """Begin running the job (without waiting for it); the result comes to `Scheduler.complete`."""

    def cancel(self, job_id: int) -> None:
        """Ask the worker to stop the job within a step (a remote worker; a local one polls the queue)."""

    def stop(self, timeout: float = 30.0) -> None:
        """Stop within a step; a job cut short is given back (outcome `stopped`)."""

    def discard(self) -> None:
        """The scheduler has given this worker up (lost): end whatever is left of it."""


class Executor(ABC):
    """Creates workers and hands them to the scheduler (`Scheduler.add`), and tells it when one is lost."""

    @abstractmethod
    def start(self, scheduler: "Scheduler") -> None: ...

    @abstractmethod
    def stop(self, timeout: float = 30.0) -> None: ...


@dataclass
class _Slot:
    """The scheduler's record of one worker."""

    worker: ExecutorWorker
    models: list[str] = field(default_factory=list)  # the checkpoints it holds loaded
    lease: Lease | None = None
    job: Job | None = None
    cancel_sent: bool = False
    jobs_done: int = 0
    gpu_seconds: float = 0.0
    loads: int = 0  # jobs during which it loaded a model
    last_seen: float = field(default_factory=time.time)
    idle_since: float = field(default_factory=time.monotonic)

    def can_run(self, model: str | None) -> bool:
        available = self.worker.available
        return model is None or available is None or model.lower() in {m.lower() for m in available}

    def json(self) -> dict[str, Any]:
        w = self.worker
        return {"id": w.id, "node": w.node, "device": w.device, "pid": w.pid, "models": list(self.models),
                "job": self.lease.job_id if self.lease else None, "jobs_done": self.jobs_done,
                "gpu_seconds": round(self.gpu_seconds, 3), "last_seen": self.last_seen}


class Scheduler:
    """The server side of running jobs (see the module docstring)."""

    def __init__(self, queue: JobQueue, events: EventBus, results: ResultStore | None, executor: Executor | None = None,
                 home_root: Any = None, model_of: Callable[[Job], str | None] | None = None,
                 heartbeat_timeout: float = HEARTBEAT_TIMEOUT) -> None:
        self.queue, self.events, self.results, self.executor = queue, events, results, executor
        self.home_root = home_root  # where the jobs' kept inputs are, to hand their bytes to remote workers
        self.model_of = model_of or (lambda job: job.recipe.model or None)
        self.heartbeat_timeout = heartbeat_timeout
        self._slots: dict[str, _Slot] = {}
        self._cond = threading.Condition()
        self._saving = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle ---

    def start(self, recover: bool = True) -> None:
        """Start dispatching; with `recover` (once per server start) re-queue what a dead server left running."""
        if recover:
            for job in self.queue.recover():
                log.warning("Re-queued job %s, which was running when the server stopped.", job.id)
        self._stopping.clear()
        if self.executor is not None:
            self.executor.start(self)
        for name, target in (("dispatch", self._dispatch_loop), ("watch", self._watch_loop)):
            thread = threading.Thread(target=target, name=f"localdiffusion-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Dispatch nothing more; the workers stop within a step and their jobs go back to the queue."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        if self.executor is not None:
            self.executor.stop(timeout)
        for slot in list(self._slots.values()):
            slot.worker.stop(timeout)

    # --- workers come and go ---

    def add(self, worker: ExecutorWorker, models: list[str] | None = None) -> None:
        """A worker ready for jobs (`models`: what it holds loaded already)."""
        with self._cond:
            if worker.id not in self._slots:
                self._slots[worker.id] = _Slot(worker, list(models or []))
                log.info("Worker %s (%s on %s) joined.", worker.id, worker.device, worker.node)
            self._cond.notify_all()
        self.queue.wake()

    def seen(self, worker_id: str, models: list[str] | None = None) -> None:
        """A heartbeat: the worker is alive (and holds `models`)."""
        slot = self._slots.get(worker_id)
        if slot is not None:
            slot.last_seen = time.time()
            if models is not None:
                slot.models = list(models)

    def lost(self, worker_id: str, reason: str) -> None:
        """The worker is gone: it is forgotten, and the job it held goes back to the queue (or fails, the
        second time)."""
        with self._cond:
            slot = self._slots.pop(worker_id, None)
            self._cond.notify_all()
        if slot is None:
            return
        log.warning("Worker %s is lost (%s).", worker_id, reason)
        slot.worker.discard()
        if slot.lease is None:
            return
        job = self.queue.release(slot.lease, f"The worker running this job was lost {MAX_ATTEMPTS} times (the last: {reason}), "
                                             f"so it was not retried again.")
        if job is None:
            return
        if job.status == "failed":
            publish(self.events, "failed", job, {"error": job.error})
        else:
            publish(self.events, "queued", job, {"requeued": True, "reason": reason})
        with self._cond:
            self._cond.notify_all()

    def workers(self) -> list[dict[str, Any]]:
        """Every worker as `GET /api/workers` lists it."""
        return [slot.json() for slot in sorted(list(self._slots.values()), key=lambda s: s.worker.id)]

    def slot(self, worker_id: str) -> _Slot | None:
        return self._slots.get(worker_id)

    # --- dispatch ---

    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            with self._cond:
                if not any(s.lease is None for s in self._slots.values()):
                    self._cond.wait(0.5)
                    continue
            try:
                job = self.queue.claim(timeout=0.5, runnable=self._runnable)
            except Exception:  # a row that cannot be read: logged, and the scheduler goes on
                log.exception("Claiming the next job failed")
                self._stopping.wait(0.5)
                continue
            if job is None:
                continue
            if self._stopping.is_set():
                self.queue.requeue(job.id)
                return
            try:
                self.dispatch(job)
            except Exception:  # the scheduler goes on whatever one job does
                log.exception("Dispatching job %s failed", job.id)
                try:
                    self._fail_unleased(job, HAND_OVER_FAILED)
                except Exception:
                    log.exception("Failing job %s failed", job.id)

    def _runnable(self, job: Job) -> bool:
        """Whether to claim the job now: an idle worker has its model, or no worker has (it fails with a sentence).
        A job only busy workers can run waits in its place while the fair pick passes on to the others."""
        model = self.model_of(job)
        able = [s for s in list(self._slots.values()) if s.can_run(model)]
        return not able or any(s.lease is None for s in able)

    def _choose(self, job: Job) -> tuple[_Slot | None, bool]:
        """The idle worker for a job, and whether any worker at all (idle or not) could run it."""
        model = self.model_of(job)
        able = [s for s in self._slots.values() if s.can_run(model)]
        idle = [s for s in able if s.lease is None]
        if not idle:
            return None, bool(able)
        lowered = model.lower() if model else None

        def preference(slot: _Slot) -> tuple:
            holds = lowered is not None and lowered in {m.lower() for m in slot.models}
            return (not holds, bool(slot.models), slot.idle_since, slot.worker.id)

        return min(idle, key=preference), True

    def dispatch(self, job: Job) -> Lease | None:
        """Hand a claimed job to the idle worker the affinity rule picks (see the module docstring)."""
        with self._cond:
            slot, possible = self._choose(job)
            if slot is None:
                if possible:  # only busy workers have its model (one became busy or was lost since the claim)
                    self.queue.requeue(job.id)
                    self._cond.wait(0.5)
                    return None
                model = self.model_of(job)
                self._fail_unleased(job, f"No worker of this server has the model '{model}'; install it on a worker machine "
                                         f"(in its models folder) or choose another model.")
                return None
            lease = self._lease(job, slot)
        if lease is None:
            return None
        assignment = self._hand_over(lease, job, slot)
        if assignment is not None:
            try:
                slot.worker.start_job(assignment)
            except Exception:
                log.exception("Handing job %s to worker %s failed", job.id, slot.worker.id)
                self.fail_leased(lease, HAND_OVER_FAILED)
        return lease

    def _lease(self, job: Job, slot: _Slot) -> Lease | None:
        lease = self.queue.grant(job.id, slot.worker.id)
        if lease is None:
            return None
        slot.lease, slot.job, slot.cancel_sent = lease, job, False
        self.queue.report(JobProgress(job, total=job.recipe.steps, started=time.time()))
        return lease

    def _hand_over(self, lease: Lease, job: Job, slot: _Slot) -> Assignment | None:
        """Announce a leased job and gather its pictures; None when that failed (the job failed with a sentence and
        the worker is free again), so no error leaves a worker holding a lease it never runs."""
        try:
            publish(self.events, "started", job, {"worker": slot.worker.id})
            return Assignment(lease, job, self.inputs_for(job, slot.worker))
        except LocalDiffusionError as e:
            self.fail_leased(lease, e.message)
        except Exception:
            log.exception("Handing job %s to worker %s failed", job.id, slot.worker.id)
            self.fail_leased(lease, HAND_OVER_FAILED)
        return None

    def fail_leased(self, lease: Lease, reason: str) -> None:
        """End a leased job as failed with `reason` (if the lease is still current) and free its worker, whatever
        the database says: an error here is logged, never left to stop a worker or the scheduler."""
        try:
            self.complete(lease, Outcome("failed", error=reason))
        except Exception:
            log.exception("Failing job %s failed", lease.job_id)
        finally:
            self._free(lease)

    def _free(self, lease: Lease, outcome: Outcome | None = None) -> None:
        """The lease's worker is idle again (nothing if it has moved on to another lease)."""
        with self._cond:
            slot = self._slots.get(lease.worker)
            if slot is not None and slot.lease == lease:
                slot.lease, slot.job, slot.idle_since = None, None, time.monotonic()
                slot.last_seen = time.time()
                if outcome is not None:
                    slot.models = list(outcome.models)
                    slot.gpu_seconds += outcome.seconds
                    slot.loads += int(outcome.loaded)
            self._cond.notify_all()
        self.queue.wake()  # a job waiting for this worker's model is claimed now

    def run_now(self, job: Job, worker: "LocalWorker") -> None:
        """Run a claimed job on a local worker in the calling thread (tests, and `Worker.run`)."""
        self.add(worker)
        slot = self._slots[worker.id]
        with self._cond:
            lease = self._lease(job, slot)
        if lease is not None and (assignment := self._hand_over(lease, job, slot)) is not None:
            worker.execute(assignment)

    def inputs_for(self, job: Job, worker: ExecutorWorker) -> Inputs:
        """What the worker reads the job's pictures from: the bytes of each (remote), else the server's home."""
        if not worker.remote:
            return worker.job_inputs(job) if isinstance(worker, LocalWorker) else HomeInputs(self.home_root, paths=False)
        names = job_input_names(job)
        if not names:
            return BytesInputs({})
        home = HomeInputs(self.home_root, paths=False)
        return BytesInputs({name: home.read(name, "input image") for name in names})

    def _fail_unleased(self, job: Job, reason: str) -> None:
        self.queue.fail(job.id, reason)
        publish(self.events, "failed", job, {"error": reason})

    # --- while a job runs ---

    def current(self, lease: Lease) -> bool:
        slot = self._slots.get(lease.worker)
        return slot is not None and slot.lease == lease

    def progress(self, lease: Lease, p: Progress) -> bool:
        """A worker's progress on its job; False when it should stop (cancelled, or the lease is gone)."""
        slot = self._slots.get(lease.worker)
        if slot is None or slot.lease != lease or slot.job is None:
            return False
        slot.last_seen = time.time()
        self.publish_progress(slot.job, p)
        return not self.queue.cancel_requested(lease.job_id)

    def cancelled(self, lease: Lease) -> bool:
        """Whether the worker should stop the job: it was cancelled, or the lease is no longer current."""
        return self.queue.cancel_requested(lease.job_id) or not self.current(lease)

    def publish_progress(self, job: Job, p: Progress) -> None:
        last = self.queue.progress(job.id)
        running = JobProgress(job, p.step, p.total, p.iteration, p.iterations, p.phase, p.preview,
                              last.started if last is not None else time.time(), p.loading, p.loaded, p.parts,
                              getattr(p, "extra", None))
        self.queue.report(running)
        kind = "loading" if p.phase == "load" else "step"  # clients that count steps see only steps
        self.events.publish(Event(kind, job.id, job.owner_id, job.client, running.data(), p.preview))

    def lookup(self, name: str) -> Any:
        return self.results.read_json(name) if self.results is not None else None

    def complete(self, lease: Lease, outcome: Outcome) -> bool:
        """A worker's result. Accepted only from the current lease holder: the artefacts are written and the job's
        status recorded in one transaction; False (and nothing written) for a lease that is no longer current."""
        slot = self._slots.get(lease.worker)
        accepted = False
        try:  # whatever the database does, the worker is free again after its result
            job = (slot.job if slot is not None and slot.lease == lease else None) or self.queue.get(lease.job_id)
            if job is not None:
                if outcome.status == "stopped":  # back to the queue only while the lease is current (one statement)
                    accepted = self.queue.requeue(lease)
                else:
                    accepted = self._settle(lease, job, outcome)
        finally:
            if slot is not None and slot.lease == lease:
                slot.jobs_done += int(accepted and outcome.status != "stopped")
            self._free(lease, outcome)
        if accepted and job is not None and outcome.status != "stopped":
            final = self.queue.get(job.id) or job
            publish(self.events, outcome.status, final, {"error": outcome.error} if outcome.status == "failed" else None)
        return accepted

    def _settle(self, lease: Lease, job: Job, outcome: Outcome) -> bool:
        db = getattr(self.queue, "db", None)
        status, error = outcome.status, outcome.error
        try:
            with self._saving, db.transaction() if db is not None else nullcontext():
                if not self.queue.holds(lease):
                    return False
                result = self._save(job, outcome.output) if status == "done" else None
                accepted = self.queue.settle(lease, status, result, error)
        except Exception as e:  # writing the result failed: the job fails with the reason, nothing half-written
            log.exception("Saving job %s failed", job.id)
            status, error = "failed", unexpected(e)
            outcome.status, outcome.error = status, error
            accepted = self.queue.settle(lease, status, None, error)
        if accepted:
            device = self._slots[lease.worker].worker.device if lease.worker in self._slots else ""
            self.queue.record_run(job.id, device, outcome.seconds, learn=status == "done" and not outcome.loaded)
        return accepted

    def _save(self, job: Job, output: TaskOutput | dict[str, Any] | None) -> dict[str, Any]:
        if not isinstance(output, TaskOutput):
            return output or {}
        if self.results is None:
            raise RuntimeError("This server has no result store for the job's artefacts.")
        return self.results.save(output, owner_id=job.owner_id)

    # --- heartbeats and cancels ---

    def _watch_loop(self) -> None:
        while not self._stopping.wait(WATCH_INTERVAL):
            try:
                self.watch()
            except Exception:  # logged; the watcher goes on (cancels and heartbeats need it)
                log.exception("Watching the workers failed")

    def watch(self) -> None:
        """Forward cancels to remote workers; a worker silent for the heartbeat timeout is lost."""
        now = time.time()
        for slot in list(self._slots.values()):
            if slot.lease is not None and slot.worker.remote and not slot.cancel_sent \
                    and self.queue.cancel_requested(slot.lease.job_id):
                slot.cancel_sent = True
                slot.worker.cancel(slot.lease.job_id)
            if not slot.worker.remote:  # in this process: alive while the server is
                slot.last_seen = now
            elif now - slot.last_seen > self.heartbeat_timeout:
                self.lost(slot.worker.id, f"no heartbeat for {self.heartbeat_timeout:.0f} s")


def publish(events: EventBus, kind: str, job: Job, data: dict[str, Any] | None = None) -> None:
    """A job's lifecycle event (queued, started, done, failed, cancelled) to its subscribers."""
    payload = {"status": kind, **(data or {})}
    if kind == "done":
        payload["result"] = job.result
    events.publish(Event(kind, job.id, job.owner_id, job.client, payload))


# --- the local executor ------------------------------------------------------------------------------------


class LocalWorker(ExecutorWorker):
    """A device in the server's process: one thread that runs the jobs it is handed on its own engine. It shares
    the server's home, so it reads a job's pictures there; it writes nothing (the scheduler saves)."""

    def __init__(self, engine: Engine | None, index: int = 0, tasks: dict | None = None,
                 job_inputs: Callable[[Job], Inputs] | None = None) -> None:
        from localdiffusion.engine.device import device_name

        self.runner = JobRunner(engine, tasks)
        self.engine = engine
        self.id = f"{socket.gethostname()}/local-{index}"
        self.node = socket.gethostname()
        self.device = device_name(engine.device) if engine is not None else "cpu"
        self.pid = os.getpid()
        self.scheduler: Scheduler | None = None
        self._job_inputs = job_inputs
        self._jobs: threadqueue.Queue[Assignment | None] = threadqueue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def job_inputs(self, job: Job) -> Inputs:
        if self._job_inputs is not None:
            return self._job_inputs(job)
        return HomeInputs(self.engine.home.root) if self.engine is not None else BytesInputs({})

    def start_job(self, assignment: Assignment) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                # A new thread gets a new queue: a stop sentinel left for an earlier thread is not its to take.
                self._jobs = threadqueue.Queue()
                self._thread = threading.Thread(target=self._loop, args=(self._jobs,),
                                                name=f"localdiffusion-worker-{self.id}", daemon=True)
                self._thread.start()
            self._jobs.put(assignment)

    def _loop(self, jobs: "threadqueue.Queue[Assignment | None]") -> None:
        while (assignment := jobs.get()) is not None:
            try:
                self.execute(assignment)
            except Exception:  # the thread goes on to the next job whatever one job did
                log.exception("Worker %s: job %s failed", self.id, assignment.job.id)

    def execute(self, assignment: Assignment) -> None:
        scheduler = self.scheduler
        assert scheduler is not None, "a local worker runs jobs for the scheduler it was added to"
        lease = assignment.lease
        try:
            outcome = self.runner.execute(assignment.job, assignment.inputs,
                                          on_progress=lambda p: scheduler.progress(lease, p),
                                          cancel=lambda: scheduler.queue.cancel_requested(lease.job_id),
                                          stopping=lambda: self._stop.is_set() or not scheduler.current(lease),
                                          lookup=scheduler.lookup)
            scheduler.complete(lease, outcome)
        except Exception as e:  # recording the result failed (a locked database...): the job fails, the slot is freed
            log.exception("Worker %s: ending job %s failed", self.id, lease.job_id)
            scheduler.fail_leased(lease, f"The server could not record this job's result ({type(e).__name__}).")

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        with self._lock:
            thread, jobs = self._thread, self._jobs
        if thread is not None and thread.is_alive():  # a stopped worker stops again at no cost
            jobs.put(None)
            thread.join(timeout)


class LocalExecutor(Executor):
    """One worker per device in the server's process (`serve --gpus 0,1`; one on a CPU-only machine)."""

    def __init__(self, workers: list[LocalWorker]) -> None:
        self.local = workers

    @classmethod
    def for_engines(cls, engines: list[Engine]) -> "LocalExecutor":
        return cls([LocalWorker(engine, i) for i, engine in enumerate(engines)])

    def start(self, scheduler: Scheduler) -> None:
        for worker in self.local:
            worker.scheduler = scheduler
            scheduler.add(worker, worker.runner.held_models())

    def stop(self, timeout: float = 30.0) -> None:
        for worker in self.local:
            worker.stop(timeout)

