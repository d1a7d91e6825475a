"""The `ray` executor: workers as Ray actors on every machine of a Ray cluster (`serve --workers ray`).

`pip install "localdiffusion[cluster]"` brings Ray; it is imported only when this executor starts. The server
connects to a cluster (`--ray-address HOST:6379`, or `auto`), or starts a local one, and creates one stateful
worker actor per GPU it finds (`num_gpus=1`, pinned to its node) and `--cpu-workers N` CPU actors. Each actor
keeps its engine and models warm between jobs; it reads models from its own machine's home (its models
folders: `LOCALDIFFUSION_HOME` there, else the server's home path), says at start which checkpoints it has (the
scheduler never gives it a job for another), and opens no database and writes no output: a job comes with the
bytes of its pictures, its progress streams back through a Ray streaming generator, and its artefacts come
back as bytes for the server's result store.

While the server runs, a watcher pings every actor (a heartbeat), notices nodes that join (it creates their GPU
workers) or leave, and reports a dead actor to the scheduler, whose lease rules put its job back in the queue.
Cancel reaches an actor within a step: the actor serves a `cancel` call beside the running job (a threaded
actor) and the engine polls the flag at every step.
"""

from __future__ import annotations

import logging
import os
import queue as threadqueue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from localdiffusion.engine import Engine, EngineOptions
from localdiffusion.errors import LocalDiffusionError
from localdiffusion.jobs.executor import Assignment, Executor, ExecutorWorker, Scheduler
from localdiffusion.jobs.runner import JobRunner, Outcome, unexpected

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 2.0  # seconds between pings of each actor
NODES_INTERVAL = 5.0  # seconds between looks at the cluster's nodes
START_TIMEOUT = 600.0  # an actor that has not said hello by then (no room on the cluster, a broken install) is given up


def ray_module() -> Any:
    """Ray, imported on first use; one sentence when the extra is not installed."""
    try:
        import ray
    except ImportError:
        raise LocalDiffusionError('Ray is not installed; install the cluster extra: pip install "localdiffusion[cluster]".',
                                  field="workers") from None
    return ray


@dataclass(frozen=True)
class HomeEngine:
    """How an actor makes its engine: on its machine's home (LOCALDIFFUSION_HOME there, else `home_root`), with the
    server's engine options on the actor's device. The library's bookkeeping stays in memory: a worker writes
    nothing to any database."""

    home_root: str | None = None
    options: EngineOptions | None = None

    def __call__(self, device: str) -> Engine:
        from dataclasses import replace

        from localdiffusion.models.library import ModelLibrary
        from localdiffusion.store.db import Database
        from localdiffusion.store.home import ENV_VAR, Home

        home = Home(os.environ.get(ENV_VAR) or self.home_root).ensure()
        return Engine(ModelLibrary(home, Database(":memory:")), replace(self.options or EngineOptions(), device=device))


class WorkerActor:
    """The actor's class (made a Ray actor by `RayExecutor`): one engine, one job at a time, a cancel flag."""

    def __init__(self, make_engine: Any, device: str) -> None:
        from localdiffusion.engine.device import device_name

        self.runner = JobRunner(make_engine(device))
        self.device = device_name(self.runner.engine.device) if self.runner.engine is not None else device
        self.cancelled: set[int] = set()

    def hello(self) -> dict[str, Any]:
        """Who this worker is and which checkpoints it has (all it can load) and holds (loaded)."""
        return {"node": socket.gethostname(), "pid": os.getpid(), "device": self.device,
                "available": self.runner.available_models(), "models": self.runner.held_models()}

    def ping(self) -> list[str]:
        return self.runner.held_models()

    def cancel(self, job_id: int) -> None:
        self.cancelled.add(job_id)

    def run(self, job: Any, files: dict[str, bytes]) -> Any:
        """A streaming generator: ("progress", Progress) per step, then ("outcome", Outcome)."""
        from localdiffusion.engine.inputs import BytesInputs

        items: threadqueue.Queue = threadqueue.Queue()

        def work() -> None:
            try:
                outcome = self.runner.execute(job, BytesInputs(files), on_progress=lambda p: items.put(("progress", p)),
                                              cancel=lambda: job.id in self.cancelled)
            except BaseException as e:  # noqa: BLE001 - whatever happens, the server hears how the job ended
                outcome = Outcome("failed", error=unexpected(e) if isinstance(e, Exception) else "The worker stopped.")
            items.put(("outcome", outcome))

        threading.Thread(target=work, name=f"job-{job.id}", daemon=True).start()
        try:
            while True:
                kind, item = items.get()
                yield kind, item
                if kind == "outcome":
                    return
        finally:
            self.cancelled.discard(job.id)


class RayWorker(ExecutorWorker):
    """The server's handle on one actor: follows the job it runs and forwards a cancel."""

    remote = True

    def __init__(self, executor: "RayExecutor", handle: Any, worker_id: str, hello: dict[str, Any], node_id: str = "") -> None:
        self.executor, self.handle, self.id = executor, handle, worker_id
        self.node, self.pid, self.device = hello["node"], int(hello["pid"]), hello["device"]
        self.available = None if hello["available"] is None else set(hello["available"])
        self.node_id = node_id
        self.pinging: Any = None  # the heartbeat in flight

    def start_job(self, assignment: Assignment) -> None:
        threading.Thread(target=self._follow, args=(assignment,), name=f"follow-{assignment.job.id}", daemon=True).start()

    def _follow(self, a: Assignment) -> None:
        ray = ray_module()
        scheduler = self.executor.scheduler
        assert scheduler is not None
        files = getattr(a.inputs, "files", {})
        cancelled = False
        try:
            for ref in self.handle.run.remote(a.job, files):
                kind, item = ray.get(ref)
                if kind == "outcome":
                    scheduler.complete(a.lease, item)
                    return
                if not scheduler.progress(a.lease, item) and not cancelled:
                    cancelled = True
                    self.cancel(a.job.id)
            scheduler.complete(a.lease, Outcome("failed", error="The worker ended the job without a result."))
        except ray.exceptions.RayActorError as e:
            scheduler.lost(self.id, _why(e))
        except Exception as e:  # noqa: BLE001 - the job ends with a sentence, the worker goes on
            log.exception("Following job %s on %s failed", a.job.id, self.id)
            scheduler.fail_leased(a.lease, unexpected(e))

    def cancel(self, job_id: int) -> None:
        try:
            self.handle.cancel.remote(job_id)
        except Exception:  # noqa: BLE001 - a dead actor is noticed by the heartbeat
            pass

    def discard(self) -> None:
        self.executor.forget(self)


def _why(error: Exception) -> str:
    return "its process died or its machine left the cluster" if "died" in type(error).__name__.lower() or \
        "died" in str(error).lower() else f"Ray lost it ({type(error).__name__})"


class RayExecutor(Executor):
    """Workers as Ray actors (see the module docstring)."""

    def __init__(self, address: str | None = None, cpu_workers: int = 0, home_root: str | None = None,
                 options: EngineOptions | None = None, make_engine: Any = None, cpu_worker_cpus: float = 1.0,
                 gpu_workers: bool = True, init: dict[str, Any] | None = None) -> None:
        self.address, self.cpu_workers, self.cpu_worker_cpus = address, cpu_workers, cpu_worker_cpus
        self.make_engine = make_engine or HomeEngine(home_root, options)
        self.gpu_workers = gpu_workers
        self.init = init or {}
        self.scheduler: Scheduler | None = None
        self.workers: dict[str, RayWorker] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_ray = False
        self._count = 0
        self._pending_gpus: dict[str, int] = {}  # GPU workers being created per node

    # --- lifecycle ---

    def start(self, scheduler: Scheduler) -> None:
        ray = ray_module()
        self.scheduler = scheduler
        if not ray.is_initialized():
            kwargs = {"log_to_driver": False, **self.init}
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(include_dashboard=False, **kwargs)
                self._started_ray = True
        self._stop.clear()
        if self.gpu_workers:
            self.sync_nodes()
        self.add_workers(self.cpu_workers)
        self._thread = threading.Thread(target=self._watch, name="localdiffusion-ray-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        ray = ray_module()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        scheduler = self.scheduler
        for worker in list(self.workers.values()):
            slot = scheduler.slot(worker.id) if scheduler is not None else None
            if slot is not None and (lease := slot.lease) is not None:
                scheduler.queue.requeue(lease)  # a graceful stop costs no attempt (only while the lease is current)
            try:
                ray.kill(worker.handle, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self.workers.clear()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()

    # --- workers ---

    def add_worker(self, gpu: bool = False, node_id: str | None = None, make_engine: Any = None) -> RayWorker:
        """Create one worker actor (a GPU one pinned to `node_id`, else a CPU one anywhere), wait for its hello and
        hand it to the scheduler."""
        return self._welcome(*self._create(gpu, node_id, make_engine))

    def add_workers(self, count: int, make_engine: Any = None) -> list[RayWorker]:
        """`count` CPU workers, started side by side."""
        created = [self._create(False, None, make_engine) for _ in range(count)]
        return [self._welcome(*c) for c in created]

    def _create(self, gpu: bool, node_id: str | None, make_engine: Any) -> tuple[Any, int, bool, str]:
        ray = ray_module()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        with self._lock:
            self._count += 1
            number = self._count
        options: dict[str, Any] = {"num_gpus": 1 if gpu else 0, "num_cpus": 0 if gpu else self.cpu_worker_cpus,
                                   "max_concurrency": 4, "max_restarts": 0}
        if node_id:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
        handle = ray.remote(WorkerActor).options(**options).remote(make_engine or self.make_engine, "cuda" if gpu else "cpu")
        return handle, number, gpu, node_id or ""

    def _welcome(self, handle: Any, number: int, gpu: bool, node_id: str) -> RayWorker:
        hello = ray_module().get(handle.hello.remote(), timeout=START_TIMEOUT)
        worker = RayWorker(self, handle, f"{hello['node']}/{'gpu' if gpu else 'cpu'}-{number}", hello, node_id)
        with self._lock:
            self.workers[worker.id] = worker
        log.warning("Worker %s (%s, pid %s) has the models: %s.", worker.id, worker.device, worker.pid,
                    "any (no library)" if worker.available is None else ", ".join(sorted(worker.available)) or "none")
        if self.scheduler is not None:
            self.scheduler.add(worker, hello["models"])
        return worker

    def forget(self, worker: RayWorker) -> None:
        with self._lock:
            self.workers.pop(worker.id, None)
        try:
            ray_module().kill(worker.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - it is gone already
            pass

    def sync_nodes(self) -> None:
        """A GPU worker for every GPU of every live node that has none yet; the workers of a node that left are lost."""
        ray = ray_module()
        alive = {}
        for node in ray.nodes():
            if node.get("Alive"):
                alive[node["NodeID"]] = int(node.get("Resources", {}).get("GPU", 0))
        for worker in list(self.workers.values()):
            if worker.node_id and worker.node_id not in alive and self.scheduler is not None:
                self.scheduler.lost(worker.id, "its machine left the cluster")
                self.forget(worker)
        for node_id, gpus in alive.items():
            have = sum(1 for w in self.workers.values() if w.node_id == node_id) + self._pending_gpus.get(node_id, 0)
            for _ in range(gpus - have):
                self._pending_gpus[node_id] = self._pending_gpus.get(node_id, 0) + 1
                threading.Thread(target=self._add_gpu, args=(node_id,), daemon=True).start()

    def _add_gpu(self, node_id: str) -> None:
        try:
            self.add_worker(gpu=True, node_id=node_id)
        except Exception as e:  # noqa: BLE001 - one sentence in the log; the next look at the nodes tries again
            log.warning("Could not start a GPU worker on node %s: %s", node_id, e)
        finally:
            self._pending_gpus[node_id] -= 1

    # --- the watcher ---

    def _watch(self) -> None:
        last_nodes = time.monotonic()
        while not self._stop.wait(HEARTBEAT_INTERVAL):
            try:
                self.heartbeat()
            except Exception:  # noqa: BLE001 - logged; the watcher goes on, or every worker would be lost in 30 s
                log.exception("Pinging the workers failed")
            if self.gpu_workers and time.monotonic() - last_nodes >= NODES_INTERVAL:
                last_nodes = time.monotonic()
                try:
                    self.sync_nodes()
                except Exception:  # noqa: BLE001
                    log.exception("Looking at the cluster's nodes failed")

    def heartbeat(self) -> None:
        """Ping every worker (one ping in flight each); an answer is a heartbeat, a dead actor is lost. An error about
        one worker is logged and ends nothing but that worker's ping."""
        ray = ray_module()
        for worker in list(self.workers.values()):
            if worker.pinging is None:
                try:
                    worker.pinging = worker.handle.ping.remote()
                except Exception:  # noqa: BLE001
                    log.exception("Pinging worker %s failed", worker.id)
        pending = {w.pinging: w for w in list(self.workers.values()) if w.pinging is not None}
        if not pending:
            return
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=1.0)
        for ref in ready:
            worker = pending[ref]
            worker.pinging = None
            try:
                self._answered(ray, worker, ref)
            except Exception:  # noqa: BLE001 - a database error in seen() or lost(): logged, the others go on
                log.exception("Recording the heartbeat of worker %s failed", worker.id)

    def _answered(self, ray: Any, worker: RayWorker, ref: Any) -> None:
        scheduler = self.scheduler
        try:
            models = ray.get(ref)
        except ray.exceptions.ActorUnavailableError as e:  # transient (a network blip): no answer yet, not dead
            log.info("Worker %s did not answer its ping yet (%s).", worker.id, type(e).__name__)
            return
        except ray.exceptions.RayActorError as e:
            try:
                if scheduler is not None:
                    scheduler.lost(worker.id, _why(e))
            finally:
                self.forget(worker)
            return
        except Exception as e:  # noqa: BLE001 - the ping failed (a task error, a lost object); the actor may be fine
            log.warning("Worker %s's ping failed (%s); it is pinged again.", worker.id, unexpected(e))
            return
        if scheduler is not None:
            scheduler.seen(worker.id, models)
