"""The scheduler and its leases (jobs/executor.py) with local workers: who may report a result, what happens to a
lost worker's job, the fair order and affinity with two workers. Fake tasks, no engine: these are about the
scheduling, not the pictures."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from localdiffusion.engine.inputs import BytesInputs
from localdiffusion.jobs import EventBus, SQLiteJobQueue
from localdiffusion.jobs.executor import LocalExecutor, LocalWorker, Scheduler
from localdiffusion.jobs.queue import MAX_ATTEMPTS
from localdiffusion.jobs.runner import Outcome
from localdiffusion.recipe import Recipe
from localdiffusion.store.db import Database
from test_jobs import wait_until

RECIPE = Recipe(prompt="x", steps=2, width=64, height=64, model="m1")


def two_workers(task, **kwargs):
    workers = [LocalWorker(None, i) for i in range(2)]
    for w in workers:
        w.runner.tasks["fake"] = task
    return workers


@pytest.fixture()
def queue(tmp_path):
    return SQLiteJobQueue(Database(tmp_path / "db.sqlite"))


def scheduler_for(queue, workers, **kwargs) -> Scheduler:
    return Scheduler(queue, EventBus(), None, LocalExecutor(workers), **kwargs)


def test_a_result_is_accepted_only_from_the_current_lease_holder(queue):
    owner = queue.db.local_owner_id
    scheduler = scheduler_for(queue, [])
    worker = LocalWorker(None, 0)
    scheduler.add(worker)
    job = queue.submit(RECIPE, owner_id=owner, kind="fake")
    lease = scheduler._lease(queue.claim(timeout=0), scheduler.slot(worker.id))
    assert queue.holds(lease)
    scheduler.lost(worker.id, "a test")  # the lease is lost: the job goes back, the attempt counted
    back = queue.get(job.id)
    assert (back.status, back.attempts) == ("queued", 1) and not queue.holds(lease)
    assert not scheduler.complete(lease, Outcome("done", {"late": True}))  # the lost worker's late result
    assert queue.get(job.id).status == "queued" and queue.get(job.id).result == {}


def test_a_job_whose_worker_is_lost_twice_fails_with_a_sentence(queue):
    owner = queue.db.local_owner_id
    scheduler = scheduler_for(queue, [])
    job = queue.submit(RECIPE, owner_id=owner, kind="fake")
    for n in range(MAX_ATTEMPTS):
        worker = LocalWorker(None, n)
        scheduler.add(worker)
        scheduler._lease(queue.claim(timeout=0), scheduler.slot(worker.id))
        scheduler.lost(worker.id, "its process died")
    failed = queue.get(job.id)
    assert failed.status == "failed" and failed.attempts == MAX_ATTEMPTS
    assert "lost 2 times" in failed.error and "its process died" in failed.error
    assert scheduler.workers() == []  # lost workers are no longer listed


def test_two_workers_run_jobs_at_once_in_the_fair_order(queue):
    db = queue.db
    ann, ben = db.ensure_owner("ann"), db.ensure_owner("ben")
    gate, started, lock = threading.Barrier(2, timeout=30), [], threading.Lock()

    def fake(ctx):
        with lock:
            started.append(ctx.job.id)
            first_two = len(started) <= 2
        if first_two:
            gate.wait()  # the first two jobs only finish once both run: two workers at once
        time.sleep(0.05)  # every job holds its device alike, so the measured costs keep the owners even
        return {"by": threading.current_thread().name}

    scheduler = scheduler_for(queue, two_workers(fake))
    _, events = scheduler.events.subscribe_queue()
    queue.pause()
    jobs = [queue.submit(RECIPE, owner_id=ann, kind="fake") for _ in range(4)]
    jobs += [queue.submit(RECIPE, owner_id=ben, kind="fake") for _ in range(2)]
    scheduler.start(recover=False)
    try:
        queue.resume()
        done = [wait_until(lambda j=j: (g := queue.get(j.id)).finished and g, "a job to finish", 60) for j in jobs]
    finally:
        scheduler.stop()
    assert all(j.status == "done" for j in done), [j.error for j in done]
    # In the order the scheduler handed them out: one of each owner first, and ben's two among the first four,
    # not behind ann's backlog (measured times move the deficits, so the exact order after that may vary).
    dispatched = [e.job_id for e in list(events.queue) if e.type == "started"]
    owner_of = {j.id: j.owner_id for j in jobs}
    assert sorted(dispatched) == sorted(started) == sorted(owner_of)
    assert {owner_of[i] for i in dispatched[:2]} == {ann, ben}
    assert {j.id for j in jobs[4:]} <= set(dispatched[:4])
    assert {j.result["by"] for j in done} == {"localdiffusion-worker-" + w["id"] for w in scheduler.workers()}
    assert sum(w["jobs_done"] for w in scheduler.workers()) == 6


def test_affinity_prefers_an_idle_worker_that_holds_the_model(queue):
    """Jobs alternate between two models, one after the other: each model stays on one worker."""
    owner = queue.db.local_owner_id
    ran: dict[int, str] = {}

    class Holding(LocalWorker):
        held: list[str]

    workers = [LocalWorker(None, i) for i in range(2)]
    holds = {w.id: [] for w in workers}
    for w in workers:
        def fake(ctx, w=w):
            holds[w.id] = [ctx.job.recipe.model]  # holds one model at a time: a switch is a reload
            ran[ctx.job.id] = w.id
            return {}

        w.runner.tasks["fake"] = fake
        w.runner.held_models = lambda w=w: list(holds[w.id])  # type: ignore[method-assign]
    scheduler = scheduler_for(queue, workers)
    scheduler.start(recover=False)
    try:
        for model in ["m1", "m2"] * 3:
            job = queue.submit(RECIPE.model_copy(update={"model": model}), owner_id=owner, kind="fake")
            wait_until(lambda: queue.get(job.id).finished, "a job to finish", 30)
    finally:
        scheduler.stop()
    by_model = {}
    for job_id, worker_id in ran.items():
        by_model.setdefault(queue.get(job_id).recipe.model, set()).add(worker_id)
    assert by_model == {"m1": {by_model["m1"].copy().pop()}, "m2": {by_model["m2"].copy().pop()}}
    assert by_model["m1"] != by_model["m2"]


def test_a_worker_without_the_model_is_never_given_its_jobs(queue):
    owner = queue.db.local_owner_id
    ran: dict[int, str] = {}
    workers = [LocalWorker(None, i) for i in range(2)]
    for w in workers:
        w.runner.tasks["fake"] = lambda ctx, w=w: ran.__setitem__(ctx.job.id, w.id) or {}
    workers[0].available = {"m1"}  # it said at start that it has m1 only
    workers[1].available = {"m1", "m2"}
    scheduler = scheduler_for(queue, workers)
    jobs = [queue.submit(RECIPE.model_copy(update={"model": "m2"}), owner_id=owner, kind="fake") for _ in range(4)]
    nowhere = queue.submit(RECIPE.model_copy(update={"model": "m3"}), owner_id=owner, kind="fake")
    scheduler.start(recover=False)
    try:
        for job in [*jobs, nowhere]:
            wait_until(lambda j=job: queue.get(j.id).finished, "a job to finish", 30)
    finally:
        scheduler.stop()
    assert {ran[j.id] for j in jobs} == {workers[1].id}
    failed = queue.get(nowhere.id)
    assert failed.status == "failed" and "No worker of this server has the model 'm3'" in failed.error


def test_a_scheduler_stopped_and_started_again_runs_the_next_job(queue):
    """Stop reaches each local worker twice (the executor's and the scheduler's); no stop sentinel may be left for
    the thread the next start makes."""
    owner = queue.db.local_owner_id
    worker = LocalWorker(None, 0)
    worker.runner.tasks["fake"] = lambda ctx: {}
    scheduler = scheduler_for(queue, [worker])
    scheduler.start(recover=False)
    first = queue.submit(RECIPE, owner_id=owner, kind="fake")
    try:
        wait_until(lambda: queue.get(first.id).finished, "the first job to finish", 30)
    finally:
        scheduler.stop()
    scheduler.start(recover=False)
    second = queue.submit(RECIPE, owner_id=owner, kind="fake")
    try:
        assert wait_until(lambda: (j := queue.get(second.id)).finished and j, "the job after the restart to finish", 30).status == "done"
    finally:
        scheduler.stop()


def test_an_error_handing_a_job_over_fails_that_job_and_frees_the_worker(queue):
    """An unexpected error after the lease is granted (the job's pictures cannot be read, say) fails the job with a
    sentence; the only worker is free again for the next job."""
    owner = queue.db.local_owner_id

    def job_inputs(job):
        if job.params.get("broken"):
            raise RuntimeError("the disk went away")
        return BytesInputs({})

    worker = LocalWorker(None, 0, job_inputs=job_inputs)
    worker.runner.tasks["fake"] = lambda ctx: {}
    scheduler = scheduler_for(queue, [worker])
    broken = queue.submit(RECIPE, owner_id=owner, kind="fake", params={"broken": True})
    after = queue.submit(RECIPE, owner_id=owner, kind="fake")
    scheduler.start(recover=False)
    try:
        ended = [wait_until(lambda j=j: (g := queue.get(j.id)).finished and g, "a job to finish", 30) for j in (broken, after)]
    finally:
        scheduler.stop()
    assert (ended[0].status, ended[0].error) == ("failed", "The server could not hand this job to a worker.")
    assert ended[1].status == "done"
    assert scheduler.workers()[0]["job"] is None


def test_a_database_error_recording_a_result_fails_that_job_and_the_worker_goes_on(queue, monkeypatch):
    """`complete` raising in the worker's thread (SQLite says the database is locked, twice) neither kills the
    thread nor leaves the lease held: the job fails with a sentence once the database answers, the next job runs."""
    owner = queue.db.local_owner_id
    worker = LocalWorker(None, 0)
    worker.runner.tasks["fake"] = lambda ctx: {}
    scheduler = scheduler_for(queue, [worker])
    settle, locked = queue.settle, [2]

    def flaky_settle(*args, **kwargs):
        if locked[0]:
            locked[0] -= 1
            raise sqlite3.OperationalError("database is locked")
        return settle(*args, **kwargs)

    monkeypatch.setattr(queue, "settle", flaky_settle)
    first = queue.submit(RECIPE, owner_id=owner, kind="fake")
    second = queue.submit(RECIPE, owner_id=owner, kind="fake")
    scheduler.start(recover=False)
    try:
        ended = [wait_until(lambda j=j: (g := queue.get(j.id)).finished and g, "a job to finish", 30) for j in (first, second)]
    finally:
        scheduler.stop()
    assert (ended[0].status, ended[0].error) == ("failed", "The server could not record this job's result (OperationalError).")
    assert ended[1].status == "done"


def test_a_job_only_a_busy_worker_can_run_does_not_hold_back_the_others(queue):
    """Worker 0 has m1, worker 1 has m1 and m2 and is busy: a queued m2 job waits for worker 1 in its place, and
    the m1 job behind it goes to idle worker 0 meanwhile."""
    owner = queue.db.local_owner_id
    gate, ran = threading.Event(), {}
    workers = [LocalWorker(None, i) for i in range(2)]

    def fake(ctx, w):
        ran[ctx.job.id] = w.id
        if ctx.job.params.get("hold"):
            assert gate.wait(60)
        return {}

    for w in workers:
        w.runner.tasks["fake"] = lambda ctx, w=w: fake(ctx, w)
    workers[0].available = {"m1"}
    workers[1].available = {"m1", "m2"}
    scheduler = scheduler_for(queue, workers)
    m2 = RECIPE.model_copy(update={"model": "m2"})
    held = queue.submit(m2, owner_id=owner, kind="fake", params={"hold": True})
    waiting = queue.submit(m2, owner_id=owner, kind="fake")
    m1 = queue.submit(RECIPE, owner_id=owner, kind="fake")
    scheduler.start(recover=False)
    try:
        wait_until(lambda: queue.get(m1.id).finished, "the m1 job to finish while the m2 job waits", 30)
        assert queue.get(waiting.id).status == "queued" and queue.get(held.id).status == "running"
        gate.set()
        for job in (held, waiting):
            wait_until(lambda j=job: queue.get(j.id).finished, "the m2 jobs to finish", 30)
    finally:
        gate.set()
        scheduler.stop()
    assert ran == {held.id: workers[1].id, m1.id: workers[0].id, waiting.id: workers[1].id}


def test_a_job_passed_over_keeps_its_place_and_its_owners_share(queue):
    """A pick that passes over ann's job (no idle worker can run it) neither charges nor credits ann: her deficit
    is as it was, and her job keeps its place."""
    ann, ben = queue.db.ensure_owner("ann"), queue.db.ensure_owner("ben")
    passed = queue.submit(RECIPE.model_copy(update={"model": "m2", "steps": 6}), owner_id=ann, kind="fake")
    bens = [queue.submit(RECIPE, owner_id=ben, kind="fake") for _ in range(3)]
    fair = queue._shared.scheduler
    assert queue.claim(timeout=0).id == bens[0].id  # ann's job costs three of ben's: ben first, ann credited
    before = fair.deficits()[ann]
    assert before > 0
    assert queue.claim(timeout=0, runnable=lambda job: job.recipe.model != "m2").id == bens[1].id
    assert fair.deficits()[ann] == before
    assert passed.id in [q.id for q in queue.order()]
    assert {queue.claim(timeout=0).id, queue.claim(timeout=0).id} == {passed.id, bens[2].id}


def test_a_cancel_asked_while_a_job_is_briefly_claimed_survives_its_requeue(queue):
    owner = queue.db.local_owner_id
    job = queue.submit(RECIPE, owner_id=owner, kind="fake")
    assert queue.claim(timeout=0).id == job.id
    queue.request_cancel(job.id)  # cancel_job: the job is running, so the worker is to stop it
    queue.requeue(job.id)  # ... but the scheduler gives it back before any worker has it
    assert queue.get(job.id).status == "queued" and queue.cancel_requested(job.id)


def test_a_requeue_by_an_old_lease_never_takes_the_job_from_its_new_worker(queue):
    """Putting a job back by its lease (a worker's `stopped` outcome, the Ray executor's stop) happens only while
    that lease is current, in one statement: once the worker was lost and the job handed to another, the late
    requeue changes nothing, and the job stays with the other."""
    owner = queue.db.local_owner_id
    scheduler = scheduler_for(queue, [])
    first = LocalWorker(None, 0)
    scheduler.add(first)
    job = queue.submit(RECIPE, owner_id=owner, kind="fake")
    old = scheduler._lease(queue.claim(timeout=0), scheduler.slot(first.id))
    queue.release(old, "a test")  # lost: back in the queue, then claimed and granted to another worker
    new = queue.grant(queue.claim(timeout=0).id, "elsewhere/local-1")
    assert queue.requeue(old) is False
    assert not scheduler.complete(old, Outcome("stopped"))
    now = queue.get(job.id)
    assert (now.status, now.attempts) == ("running", 2) and queue.holds(new)
    assert queue.requeue(new) is True and queue.get(job.id).status == "queued"


def test_the_schedulers_watcher_goes_on_after_an_error(queue, monkeypatch):
    scheduler = scheduler_for(queue, [])
    calls = []

    def watch():
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(scheduler, "watch", watch)
    scheduler.start(recover=False)
    try:
        wait_until(lambda: len(calls) >= 3, "the watcher to look again after an error", 30)
    finally:
        scheduler.stop()


# --- the Ray executor's watcher, with a stand-in for Ray's API (no cluster: these are about the error handling) ---


class _RayActorError(Exception):
    pass


class _ActorUnavailableError(_RayActorError):  # Ray's transient one is a RayActorError too
    pass


class _RayTaskError(Exception):
    pass


class _FakeRay:
    """`wait`, `get` and `kill` as the watcher uses them; a ping's answer is what `answers` holds for its actor."""

    exceptions = type("exceptions", (), {"RayActorError": _RayActorError, "ActorUnavailableError": _ActorUnavailableError,
                                         "RayTaskError": _RayTaskError})

    def __init__(self):
        self.answers, self.killed = {}, []

    def wait(self, refs, num_returns, timeout):
        return list(refs), []

    def get(self, ref):
        answer = self.answers[ref.actor]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def kill(self, handle, no_restart=True):
        self.killed.append(handle.name)


class _Ref:
    def __init__(self, actor):
        self.actor = actor


class _Handle:
    def __init__(self, name):
        self.name = name
        self.ping = type("ping", (), {"remote": staticmethod(lambda: _Ref(name))})


def _ray_watcher(queue, monkeypatch, names):
    from localdiffusion.jobs import ray_executor

    fake = _FakeRay()
    monkeypatch.setattr(ray_executor, "ray_module", lambda: fake)
    executor = ray_executor.RayExecutor(gpu_workers=False)
    scheduler = scheduler_for(queue, [])
    executor.scheduler = scheduler
    for name in names:
        worker = ray_executor.RayWorker(executor, _Handle(name), f"node/{name}",
                                        {"node": "node", "pid": 1, "device": "cpu", "available": None})
        executor.workers[worker.id] = worker
        scheduler.add(worker)
    return fake, executor, scheduler


def test_a_ray_actor_that_is_briefly_unavailable_is_not_lost(queue, monkeypatch):
    fake, executor, scheduler = _ray_watcher(queue, monkeypatch, ["a", "b"])
    fake.answers = {"a": _ActorUnavailableError("the network blinked"), "b": ["m1"]}
    executor.heartbeat()
    assert [w["id"] for w in scheduler.workers()] == ["node/a", "node/b"] and fake.killed == []
    fake.answers["a"] = ["m2"]
    executor.heartbeat()  # it answers the next ping
    assert {w["id"]: w["models"] for w in scheduler.workers()} == {"node/a": ["m2"], "node/b": ["m1"]}
    fake.answers["a"] = _RayActorError("the actor died")
    executor.heartbeat()
    assert [w["id"] for w in scheduler.workers()] == ["node/b"] and set(fake.killed) == {"a"}


def test_an_error_pinging_one_ray_actor_leaves_the_watcher_and_the_others_going(queue, monkeypatch):
    """A failed ping (a task error) is not a dead actor, and a database error recording one worker's heartbeat stops
    neither the others' heartbeats nor the watcher's thread."""
    from localdiffusion.jobs import ray_executor

    fake, executor, scheduler = _ray_watcher(queue, monkeypatch, ["a", "b", "c"])
    fake.answers = {"a": _RayTaskError("ping raised"), "b": ["m1"], "c": ["m3"]}
    seen = scheduler.seen

    def flaky_seen(worker_id, models=None):
        if worker_id == "node/b":
            raise sqlite3.OperationalError("database is locked")
        seen(worker_id, models)

    monkeypatch.setattr(scheduler, "seen", flaky_seen)
    executor.heartbeat()
    assert {w["id"]: w["models"] for w in scheduler.workers()} == {"node/a": [], "node/b": [], "node/c": ["m3"]}
    assert fake.killed == [] and all(w.pinging is None for w in executor.workers.values())

    calls = []

    def heartbeat():
        calls.append(1)
        if len(calls) == 1:
            raise _RayTaskError("ray.wait raised")

    monkeypatch.setattr(ray_executor, "HEARTBEAT_INTERVAL", 0.01)
    monkeypatch.setattr(executor, "heartbeat", heartbeat)
    watcher = threading.Thread(target=executor._watch, daemon=True)
    watcher.start()
    try:
        wait_until(lambda: len(calls) >= 3, "the Ray watcher to ping again after an error", 30)
    finally:
        executor._stop.set()
        watcher.join(10)
