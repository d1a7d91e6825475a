"""The executors' own cost: dispatch to result stored per job, scaling from 1 to 8 workers, and recovery time.

    PYTHONPATH=src python benchmarks/cluster.py [--jobs 40] [--sleep 0.2] [--max-workers 8] [--skip-ray]

A fake engine stands in for the model: its task sleeps a fixed time (`--sleep`) and returns one tiny PNG, so the
figures are the scheduler's, the executor's and the result store's, not the GPU's.

- overhead: per job, the time from dispatch (the job handed to a worker) to its result stored, less the task's
  own time, with one worker and jobs of no sleep; `local` (a thread here) and `ray` (a CPU actor).
- scaling: jobs per second with 1, 2, 4, 8 workers (Ray CPU actors with num_cpus=0, so 8 fit on two cores; they
  only sleep), against the ideal n / sleep.
- recovery: from a worker's kill -9 to its job running on another worker (the `started` event of attempt 2).
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from localdiffusion.jobs import EventBus, SQLiteJobQueue
from localdiffusion.jobs.artefacts import ImageArtefact, TaskOutput
from localdiffusion.jobs.executor import LocalExecutor, LocalWorker, Scheduler
from localdiffusion.jobs.results import ResultStore
from localdiffusion.recipe import Recipe
from localdiffusion.store.db import Database

RECIPE = Recipe(prompt="bench", steps=1, width=64, height=64, model="fake")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "gray").save(buffer, format="PNG")
    return buffer.getvalue()


def sleeping_task(ctx):
    """The fake engine: sleeps the job's `sleep` seconds (polling cancel), then one small image."""
    from localdiffusion.engine import Progress
    from localdiffusion.errors import Cancelled

    end = time.monotonic() + float(ctx.job.params.get("sleep", 0.0))
    while time.monotonic() < end:
        if ctx.cancel():
            raise Cancelled("cancelled")
        time.sleep(min(0.01, max(0.0, end - time.monotonic())))
    ctx.on_progress(Progress(1, 1, 0, 1, "sample"))
    return TaskOutput({"slept": ctx.job.params.get("sleep", 0.0)}, [ImageArtefact(_png(), ctx.job.recipe, "bench", 8, 8, "txt2img")])


class FakeEngine:
    """What an actor makes instead of an Engine: the runner sees engine=None and the task sleeps."""

    def __call__(self, device: str):
        return None


def patched_actor_tasks():
    """Actors run `JobRunner(None)` with the default tasks; the fake kind is added on the actor's side."""
    from localdiffusion.jobs import ray_executor

    class BenchActor(ray_executor.WorkerActor):
        def __init__(self, make_engine, device):
            super().__init__(make_engine, device)
            self.runner.tasks["sleep"] = sleeping_task

    ray_executor.WorkerActor = BenchActor  # type: ignore[misc]


def server(tmp: Path):
    db = Database(tmp / "db.sqlite")
    queue = SQLiteJobQueue(db)
    return db, queue, EventBus(), ResultStore(tmp / "outputs", db)


def run_jobs(queue, events, jobs: int, sleep: float) -> tuple[float, list[float]]:
    """Submit `jobs` jobs, wait for all; wall time, and each job's dispatch-to-stored time less its sleep."""
    _, inbox = events.subscribe_queue()
    started: dict[int, float] = {}
    overheads: list[float] = []
    begin = time.perf_counter()
    ids = [queue.submit(RECIPE, owner_id=queue.db.local_owner_id, kind="sleep", params={"sleep": sleep}).id for _ in range(jobs)]
    left = set(ids)
    while left:
        event = inbox.get(timeout=120)
        if event.type == "started":
            started[event.job_id] = time.perf_counter()
        elif event.type in ("done", "failed", "cancelled") and event.job_id in left:
            left.discard(event.job_id)
            if event.type != "done":
                raise SystemExit(f"job {event.job_id} {event.type}: {event.data}")
            overheads.append(time.perf_counter() - started[event.job_id] - sleep)
    return time.perf_counter() - begin, overheads


def local_overhead(jobs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        db, queue, events, results = server(Path(tmp))
        worker = LocalWorker(None, 0)
        worker.runner.tasks["sleep"] = sleeping_task
        scheduler = Scheduler(queue, events, results, LocalExecutor([worker]))
        scheduler.start(recover=False)
        try:
            run_jobs(queue, events, 3, 0.0)  # warm
            return run_jobs(queue, events, jobs, 0.0)[1]
        finally:
            scheduler.stop()


def ray_bench(jobs: int, sleep: float, max_workers: int) -> dict:
    import ray

    from localdiffusion.jobs.ray_executor import RayExecutor

    patched_actor_tasks()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    figures: dict = {"scaling": {}}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db, queue, events, results = server(Path(tmp))
            executor = RayExecutor(cpu_workers=1, make_engine=FakeEngine(), cpu_worker_cpus=0, gpu_workers=False)
            scheduler = Scheduler(queue, events, results, executor)
            scheduler.start(recover=False)
            try:
                run_jobs(queue, events, 3, 0.0)
                figures["overhead"] = run_jobs(queue, events, jobs, 0.0)[1]
                n = 1
                while n <= max_workers:
                    while len(scheduler.workers()) < n:
                        executor.add_workers(n - len(scheduler.workers()))
                    count = max(jobs, 4 * n)
                    wall, _ = run_jobs(queue, events, count, sleep)
                    figures["scaling"][n] = count / wall
                    n *= 2
                figures["recovery"] = recovery(queue, events, scheduler)
            finally:
                scheduler.stop()
    finally:
        ray.shutdown()
    return figures


def recovery(queue, events, scheduler) -> float:
    """Kill -9 the worker running a long job; seconds until the job starts again elsewhere."""
    _, inbox = events.subscribe_queue()
    job = queue.submit(RECIPE, owner_id=queue.db.local_owner_id, kind="sleep", params={"sleep": 3.0})
    while True:
        event = inbox.get(timeout=60)
        if event.type == "started" and event.job_id == job.id:
            break
    victim = next(w for w in scheduler.workers() if w["job"] == job.id)
    killed = time.perf_counter()
    os.kill(victim["pid"], signal.SIGKILL)
    while True:
        event = inbox.get(timeout=120)
        if event.type == "started" and event.job_id == job.id:
            return time.perf_counter() - killed


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.1f} ms, p90 {sorted(values)[int(len(values) * 0.9)] * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--sleep", type=float, default=0.2)
    parser.add_argument("--max-workers", type=int, default=8)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    print(f"local overhead per job (dispatch -> stored): {ms(local_overhead(args.jobs))}")
    if args.skip_ray:
        return
    figures = ray_bench(args.jobs, args.sleep, args.max_workers)
    print(f"ray overhead per job (dispatch -> stored): {ms(figures['overhead'])}")
    base = figures["scaling"][1]
    for n, rate in figures["scaling"].items():
        print(f"ray, {n} worker(s), {args.sleep:.2f} s jobs: {rate:.2f} jobs/s ({rate / base:.2f}x of one; ideal {n}x; "
              f"{rate * args.sleep / n * 100:.0f} % of n / sleep)")
    print(f"ray recovery: kill -9 of a worker -> its job running on another: {figures['recovery']:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
