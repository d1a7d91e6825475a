"""The persistent job queue and the worker, on a tiny model."""

from __future__ import annotations

import queue as stdqueue
import time

import pytest

from localdiffusion.jobs import EventBus, SQLiteJobQueue, Worker
from localdiffusion.jobs.queue import JobProgress
from localdiffusion.jobs.worker import cancel_job
from localdiffusion.recipe import Recipe
from localdiffusion.store.db import Database

RECIPE = Recipe(prompt="a cat", seed=1, steps=2, width=64, height=64, sampler_name="Euler", model="tiny-sd1")


@pytest.fixture()
def queue(tmp_path):
    return SQLiteJobQueue(Database(tmp_path / "db.sqlite"))


@pytest.fixture()
def worker(engine):
    db = engine.library.db
    w = Worker(SQLiteJobQueue(db), engine, EventBus())
    yield w
    w.stop()


def wait_until(condition, what: str, timeout: float = 120.0):
    """Poll `condition` until it gives something true; fail (not hang) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} within {timeout:.0f} s")


def wait_for(worker, job_id, timeout=120.0):
    return wait_until(lambda: (job := worker.queue.get(job_id)).finished and job, f"job {job_id} did not finish", timeout)


def wait_for_a_step(events: stdqueue.Queue) -> None:
    wait_until(lambda: "step" in [e.type for e in list(events.queue)], "no step event came")


def events_of(q: stdqueue.Queue, job_id: int) -> list[str]:
    seen = []
    while not q.empty():
        event = q.get()
        if event.job_id == job_id:
            seen.append(event.type)
    return seen


def test_jobs_run_in_order_and_record_images(worker):
    _, events = worker.events.subscribe_queue()
    first = worker.queue.submit(RECIPE, owner_id=worker.engine.library.db.local_owner_id, client="tab-1")
    second = worker.queue.submit(RECIPE.model_copy(update={"seed": 2}), owner_id=first.owner_id, client="tab-2")
    assert worker.queue.position(second.id) == 1
    worker.start()
    done = wait_for(worker, second.id)
    assert worker.queue.get(first.id).status == "done"
    assert done.status == "done" and len(done.result["images"]) == 1 and done.result["seeds"] == [2]
    row = worker.engine.library.db.get_image(done.result["images"][0])
    assert row.owner_id == first.owner_id and row.width == 64
    kinds = events_of(events, first.id)
    assert kinds[0] == "started" and kinds.count("step") == 2 and kinds[-1] == "done"


def test_a_failing_job_records_its_reason_and_the_worker_goes_on(worker):
    owner = worker.engine.library.db.local_owner_id
    bad = worker.queue.submit(RECIPE.model_copy(update={"model": "no-such-model"}), owner_id=owner)
    good = worker.queue.submit(RECIPE, owner_id=owner)
    worker.start()
    assert wait_for(worker, good.id).status == "done"
    failed = worker.queue.get(bad.id)
    assert failed.status == "failed" and "no-such-model" in failed.error


def test_cancel_a_queued_and_a_running_job(worker):
    owner = worker.engine.library.db.local_owner_id
    long = worker.queue.submit(RECIPE.model_copy(update={"steps": 50}), owner_id=owner)
    queued = worker.queue.submit(RECIPE, owner_id=owner)
    assert cancel_job(worker.queue, worker.events, queued.id)
    assert worker.queue.get(queued.id).status == "cancelled"
    _, events = worker.events.subscribe_queue()
    worker.start()
    wait_for_a_step(events)
    assert cancel_job(worker.queue, worker.events, long.id)
    assert wait_for(worker, long.id).status == "cancelled"
    assert not cancel_job(worker.queue, worker.events, long.id)


def test_restart_requeues_a_running_job_once_then_fails_it(queue, tmp_path):
    job = queue.submit(RECIPE, owner_id=queue.db.local_owner_id)
    assert queue.claim(timeout=0).id == job.id  # the server "dies" while it runs
    reopened = SQLiteJobQueue(Database(tmp_path / "db.sqlite"))
    assert [j.id for j in reopened.recover()] == [job.id]
    assert reopened.get(job.id).status == "queued"
    assert reopened.claim(timeout=0).attempts == 2  # and dies again
    again = SQLiteJobQueue(Database(tmp_path / "db.sqlite"))
    assert again.recover() == []
    failed = again.get(job.id)
    assert failed.status == "failed" and "stopped twice" in failed.error


def test_events_are_filtered_by_client(queue):
    bus = EventBus()
    _, mine = bus.subscribe_queue(client="tab-1")
    from localdiffusion.jobs import Event

    bus.publish(Event("queued", 1, 1, "tab-1"))
    bus.publish(Event("queued", 2, 1, "tab-2"))
    assert [e.job_id for e in list(mine.queue)] == [1]


def test_a_graceful_stop_puts_the_running_job_back_in_the_queue(worker):
    owner = worker.engine.library.db.local_owner_id
    job = worker.queue.submit(RECIPE.model_copy(update={"steps": 100}), owner_id=owner)
    _, events = worker.events.subscribe_queue()
    worker.start()
    wait_for_a_step(events)
    worker.stop()
    back = worker.queue.get(job.id)
    assert back.status == "queued" and back.attempts == 0
    assert worker.queue.counts() == {"queued": 1, "running": 0}


def test_jobs_of_another_kind_run_their_task_with_their_params(queue):
    from localdiffusion.jobs.tasks import TaskContext

    db = queue.db
    seen: list[dict] = []

    def echo(ctx: TaskContext) -> dict:
        seen.append(ctx.job.params)
        return {"echo": ctx.job.params["word"]}

    worker = Worker(queue, engine=None, events=EventBus())  # type: ignore[arg-type]
    worker.tasks["echo"] = echo
    job = queue.submit(Recipe(prompt="x"), owner_id=db.local_owner_id, kind="echo", params={"word": "hello"})
    worker.run(queue.claim())
    done = queue.get(job.id)
    assert (done.status, done.kind, done.result, seen) == ("done", "echo", {"echo": "hello"}, [{"word": "hello"}])

    unknown = queue.submit(Recipe(prompt="x"), owner_id=db.local_owner_id, kind="nonsense")
    worker.run(queue.claim())
    assert queue.get(unknown.id).status == "failed"
    assert "kind 'nonsense'" in queue.get(unknown.id).error


def test_the_first_job_of_a_model_reports_the_model_loading_before_its_steps(home, sd1_folder):
    from localdiffusion.engine import Engine
    from localdiffusion.models.library import ModelLibrary

    (home.model_dir("checkpoint") / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    engine = Engine(ModelLibrary(home, Database(home.db_path)))  # a queue of its own, nothing loaded yet
    worker = Worker(SQLiteJobQueue(engine.library.db), engine, EventBus())
    _, events = worker.events.subscribe_queue()
    owner = engine.library.db.local_owner_id
    first = worker.queue.submit(RECIPE, owner_id=owner)
    worker.run(worker.queue.claim(timeout=0))
    seen = [e for e in list(events.queue) if e.job_id == first.id]
    assert [e.type for e in seen] == ["started", "loading", "loading", "step", "step", "done"]
    loading = [e.data for e in seen if e.type == "loading"]
    assert loading[0] == {"step": 0, "total": 2, "iteration": 0, "iterations": 1, "phase": "load",
                          "loading": "model 'tiny-sd1'", "loaded": 0, "parts": 1}
    assert (loading[1]["loading"], loading[1]["loaded"], loading[1]["parts"]) == ("", 1, 1)
    assert seen[3].data["phase"] == "sample" and "loading" not in seen[3].data

    # The model stays in memory: the next job goes straight to its steps.
    second = worker.queue.submit(RECIPE, owner_id=owner)
    worker.run(worker.queue.claim(timeout=0))
    assert [e.type for e in list(events.queue) if e.job_id == second.id] == ["started", "step", "step", "done"]


def test_running_progress_says_what_is_loading(queue):
    from localdiffusion.engine import Progress

    worker = Worker(queue, engine=None, events=EventBus())  # type: ignore[arg-type]
    job = queue.submit(RECIPE, owner_id=queue.db.local_owner_id)
    queue.report(JobProgress(job, total=2))
    worker._progress(job, Progress(0, 2, 0, 1, "load", loading="model 'tiny-sd1'", loaded=0, parts=2))
    assert queue.progress(job.id).data() == {"step": 0, "total": 2, "iteration": 0, "iterations": 1, "phase": "load",
                                             "loading": "model 'tiny-sd1'", "loaded": 0, "parts": 2}
    worker._progress(job, Progress(1, 2, 0, 1, "sample"))
    assert queue.progress(job.id).data() == {"step": 1, "total": 2, "iteration": 0, "iterations": 1, "phase": "sample"}


def test_progress_and_stop_requests_live_in_the_queue_until_the_job_ends(queue):
    """The seam between the server and the worker: the worker reports and listens, the server reads and asks."""
    owner = queue.db.local_owner_id
    for end in (lambda j: queue.finish(j, {}), lambda j: queue.fail(j, "x"), queue.mark_cancelled, queue.requeue):
        job = queue.submit(RECIPE, owner_id=owner)
        claimed = queue.claim(timeout=0)
        assert claimed.id == job.id and queue.progress(job.id) is None and not queue.cancel_requested(job.id)
        queue.report(JobProgress(claimed, step=1, total=2))
        queue.request_cancel(job.id)
        assert queue.progress(job.id).step == 1 and queue.cancel_requested(job.id)
        end(job.id)
        back = queue.get(job.id).status == "queued"  # back in the queue: its stop request stays, to stop it when claimed
        assert queue.progress(job.id) is None and queue.cancel_requested(job.id) is back
        if back:
            queue.cancel_queued(job.id)
            assert not queue.cancel_requested(job.id)


def test_the_server_reads_progress_and_cancels_through_the_queue_alone():
    """No route reads the worker's memory or calls it: progress and cancel go through the JobQueue interface."""
    import ast
    from pathlib import Path

    import localdiffusion.server as server

    for path in Path(server.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr in ("worker", "scheduler"):
                assert node.attr in ("start", "stop", "workers"), f"{path.name} uses scheduler.{node.attr}; go through studio.queue"


def test_direct_engine_callers_see_only_steps_and_a_refiner_is_its_own_load_part(model_home):
    from localdiffusion.engine import Engine
    from localdiffusion.models.library import ModelLibrary

    engine = Engine(ModelLibrary(model_home, Database(model_home.db_path)))
    recipe = Recipe(prompt="a cat", seed=1, steps=2, width=64, height=64, model="tiny-sdxl", refiner_checkpoint="tiny-sdxl-refiner",
                    refiner_switch_at=0.5)
    steps, loads = [], []
    with engine.reporting_loads(lambda p: loads.append((p.phase, p.step, p.total, p.loading, p.loaded, p.parts))):
        engine.generate(recipe, on_progress=lambda p: steps.append((p.phase, p.step, p.total)))
    assert steps == [("sample", 1, 2), ("sample", 2, 2)]
    assert loads == [("load", 0, 2, "model 'tiny-sdxl'", 0, 2), ("load", 0, 2, "", 1, 2),
                     ("load", 0, 2, "refiner 'tiny-sdxl-refiner'", 1, 2), ("load", 0, 2, "", 2, 2)]
    loads.clear()
    engine.generate(recipe)  # outside the block: nothing is reported, and nothing loads again anyway
    assert loads == [] and engine.cache.loads == 2


# -- a cancel that races the worker's claim ----------------------------------------------------------


class ClaimsDuringCancel:
    """The worker's queue, as cancel_job() sees it: just before cancel_job()'s `nth` call to the queue, the worker
    claims the next job, which is where a claim on the worker thread can land."""

    def __init__(self, queue, nth: int) -> None:
        self.queue, self.nth, self.calls = queue, nth, 0
        self.claimed: list = []

    def __getattr__(self, name):
        attr = getattr(self.queue, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls += 1
            if self.calls == self.nth:
                self.claimed.append(self.queue.claim(timeout=0))
            return attr(*args, **kwargs)

        return call


@pytest.fixture()
def own_queue_worker(engine, tmp_path):
    """A worker on the tiny engine whose queue holds only this test's jobs (images go to the engine's database)."""
    w = Worker(SQLiteJobQueue(Database(tmp_path / "jobs.sqlite")), engine, EventBus())
    yield w
    w.stop()


@pytest.mark.parametrize("nth", [1, 2, 3, 4])
def test_a_cancel_at_the_instant_the_worker_claims_the_job(own_queue_worker, nth):
    """Whichever side wins, the job ends cancelled (or done), and nothing runs or is saved once it has been
    reported cancelled. `nth` past cancel_job()'s last queue call means the claim comes right after it."""
    worker, queue = own_queue_worker, own_queue_worker.queue
    db = worker.engine.library.db
    job = queue.submit(RECIPE, owner_id=queue.db.local_owner_id)
    images_before = len(db.list_images(None, limit=1000))
    _, events = worker.events.subscribe_queue()
    racing = ClaimsDuringCancel(queue, nth)
    answered = cancel_job(racing, worker.events, job.id)
    claimed = racing.claimed[0] if racing.claimed else queue.claim(timeout=0)
    if claimed is not None:
        assert claimed.id == job.id
        worker.run(claimed)  # the worker goes on with the job it claimed
    kinds, final = events_of(events, job.id), queue.get(job.id)
    assert final.finished, final.status
    assert kinds.count("cancelled") + kinds.count("done") == 1, kinds
    if "cancelled" in kinds:
        assert final.status == "cancelled" and kinds[-1] == "cancelled"
        assert "step" not in kinds and "done" not in kinds  # it never ran
        assert len(db.list_images(None, limit=1000)) == images_before
    else:
        assert final.status == "done"
    assert answered == (final.status == "cancelled")
    assert not queue.cancel_requested(job.id) and queue.progress(job.id) is None  # nothing left behind


def test_cancelling_jobs_as_they_are_submitted_to_a_running_worker(own_queue_worker):
    """The same race on real threads: every job ends, and none that was reported cancelled ran."""
    worker = own_queue_worker
    db = worker.queue.db
    _, events = worker.events.subscribe_queue()
    worker.start()
    jobs = []
    for seed in range(6):
        job = worker.queue.submit(RECIPE.model_copy(update={"seed": seed}), owner_id=db.local_owner_id)
        jobs.append((job.id, cancel_job(worker.queue, worker.events, job.id)))
    finals = {job_id: wait_for(worker, job_id) for job_id, _ in jobs}
    seen = []
    while not events.empty():
        seen.append(events.get())
    for job_id, answered in jobs:
        kinds = [e.type for e in seen if e.job_id == job_id]
        assert finals[job_id].status in ("cancelled", "done"), finals[job_id].status
        assert answered == (finals[job_id].status == "cancelled")
        if finals[job_id].status == "cancelled":
            assert kinds[-1] == "cancelled" and kinds.count("cancelled") == 1 and "done" not in kinds
            assert not finals[job_id].result.get("images")


# -- a job's pictures, handed over by its worker ----------------------------------------------------------


class HandingOverWorker(Worker):
    """A worker that has no home of its own, as one on another machine: the job's pictures come as bytes."""

    def __init__(self, *args, files: dict[str, bytes], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.files = files

    def job_inputs(self, job):
        from localdiffusion.engine.inputs import BytesInputs

        return BytesInputs(self.files)


def test_the_engine_reads_a_jobs_pictures_from_what_its_worker_hands_over(engine, tmp_path):
    import io

    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGB", (64, 64), "orange").save(picture, format="PNG")
    name = "inputs/" + "ab" * 12 + ".png"  # named as an upload, but nowhere on this machine's disk
    assert not (engine.home.root / name).exists()
    recipe = RECIPE.model_copy(update={"mode": "img2img", "init_image": name, "denoising_strength": 0.5})
    queue = SQLiteJobQueue(Database(tmp_path / "jobs.sqlite"))

    handed = HandingOverWorker(queue, engine, EventBus(), files={name: picture.getvalue()})
    job = queue.submit(recipe, owner_id=queue.db.local_owner_id)
    handed.run(queue.claim(timeout=0))
    assert queue.get(job.id).status == "done", queue.get(job.id).error

    plain = Worker(queue, engine, EventBus())  # reads the home, where the picture is not
    job = queue.submit(recipe, owner_id=queue.db.local_owner_id)
    plain.run(queue.claim(timeout=0))
    assert queue.get(job.id).status == "failed" and "input image" in queue.get(job.id).error


# -- two workers on one database ---------------------------------------------------------------------------


def test_a_second_worker_on_the_same_database_never_reruns_the_first_ones_job(tmp_path):
    """Regression: every Worker.start() used to re-queue every running job, so a second worker on the same database
    took the first one's running job and ran it again. Recovery is the server's, once per start."""
    import threading

    path = tmp_path / "db.sqlite"
    release, runs = threading.Event(), []

    def hold(ctx) -> dict:
        runs.append(ctx.job.id)
        release.wait(60)
        return {"ran": ctx.job.id}

    def worker_on_its_own_connection() -> Worker:
        w = Worker(SQLiteJobQueue(Database(path)), engine=None, events=EventBus())  # type: ignore[arg-type]
        w.tasks["hold"] = hold
        return w

    first, second = worker_on_its_own_connection(), worker_on_its_own_connection()
    owner = first.queue.db.local_owner_id
    try:
        one = first.queue.submit(Recipe(prompt="x"), owner_id=owner, kind="hold")
        first.start()
        wait_until(lambda: runs == [one.id], "the first worker did not start its job")
        second.start()
        two = second.queue.submit(Recipe(prompt="y"), owner_id=owner, kind="hold")
        wait_until(lambda: len(runs) == 2, "the second worker took no job")
        release.set()
        done = [wait_for(first, one.id), wait_for(second, two.id)]
    finally:
        release.set()
        first.stop()
        second.stop()
    assert sorted(runs) == [one.id, two.id]
    assert [(j.status, j.attempts, j.result) for j in done] == [("done", 1, {"ran": one.id}), ("done", 1, {"ran": two.id})]
