"""The fair queue (jobs/fair.py behind SQLiteJobQueue): deficit round robin by estimated GPU-seconds,
demo jobs and the front first, pause, learned speeds, and picks that read no queued rows."""

from __future__ import annotations

import pytest

from localdiffusion.jobs import SQLiteJobQueue
from localdiffusion.jobs.fair import CostFactors, Entry, FairScheduler, job_images, job_units
from localdiffusion.recipe import ControlUnit, Recipe
from localdiffusion.store.db import Database

SMALL = Recipe(prompt="a cat", steps=20, width=512, height=512, model="tiny-sd1")
LARGE = SMALL.model_copy(update={"batch_size": 4, "width": 1024, "height": 1024})  # 16x the work


@pytest.fixture()
def db(tmp_path):
    return Database(tmp_path / "db.sqlite")


@pytest.fixture()
def queue(db):
    return SQLiteJobQueue(db)


def owners(db, *names: str) -> list[int]:
    return [db.ensure_owner(name) for name in names]


def drain(queue) -> list:
    picked = []
    while (job := queue.claim(timeout=0)) is not None:
        picked.append(job)
    return picked


def by_units(entry: Entry) -> float:
    return entry.units


# --- what a job costs ------------------------------------------------------------------------------


def test_the_cost_grows_with_steps_pixels_images_hires_and_controlnet():
    base = job_units(SMALL)
    assert base == pytest.approx(20.0)  # 20 standard steps: one 512x512 image
    assert job_units(SMALL.model_copy(update={"steps": 40})) == pytest.approx(2 * base)
    assert job_units(SMALL.model_copy(update={"width": 1024})) == pytest.approx(2 * base)
    assert job_units(SMALL.model_copy(update={"batch_size": 2, "n_iter": 3})) == pytest.approx(6 * base)
    hires = SMALL.model_copy(update={"enable_hr": True, "hr_scale": 2.0, "denoising_strength": 0.5})
    assert job_units(hires) == pytest.approx(base + 10 * 4)  # half the steps again, at four times the pixels
    assert job_units(SMALL.model_copy(update={"controls": [ControlUnit()]})) > base
    assert job_units(SMALL.model_copy(update={"mode": "img2img", "denoising_strength": 0.5})) == pytest.approx(base / 2)
    assert job_units(SMALL, "compare", {"x": "seed=1,2,3", "y": "steps=10,20"}) == pytest.approx(6 * base)
    assert job_images(SMALL, "compare", {"x": "seed=1,2,3", "y": "steps=10,20"}) == 6


def test_each_models_speed_is_learned_and_kept(db):
    factors = CostFactors(db)
    assert factors.factor("tiny-sd1") == factors.factor("other")  # nothing measured: one default for all
    factors.learn("tiny-sd1", units=20.0, seconds=10.0)
    assert factors.factor("tiny-sd1") == pytest.approx(0.5)
    assert factors.factor("never-ran") == pytest.approx(0.5)  # the mean of the measured models
    factors.learn("tiny-sd1", units=20.0, seconds=30.0)  # slower now: the newer run weighs more
    assert 0.5 < factors.factor("tiny-sd1") < 1.5
    assert CostFactors(Database(db.path)).factor("tiny-sd1") == pytest.approx(factors.factor("tiny-sd1"))


def test_a_measured_run_records_device_and_gpu_seconds_and_teaches_the_estimate(queue, db):
    (ann,) = owners(db, "ann")
    job = queue.submit(SMALL, ann)
    before = job.estimated_seconds
    claimed = queue.claim(timeout=0)
    queue.record_run(claimed.id, "cuda:0 (Test GPU)", 40.0, learn=True)
    queue.finish(claimed.id, {})
    done = queue.get(job.id)
    assert done.device == "cuda:0 (Test GPU)" and done.gpu_seconds == 40.0
    assert queue.submit(SMALL, ann).estimated_seconds == pytest.approx(40.0) != before


# --- the order --------------------------------------------------------------------------------------


def test_a_paused_queue_starts_nothing_and_then_runs_the_second_person_second_at_the_latest(queue, db):
    ann, ben = owners(db, "ann", "ben")
    queue.pause()
    ann_jobs = [queue.submit(SMALL.model_copy(update={"seed": i}), ann) for i in range(4)]
    ben_job = queue.submit(SMALL, ben)
    assert queue.claim(timeout=0) is None and queue.paused
    assert queue.counts() == {"queued": 5, "running": 0}
    queue.resume()
    order = [job.id for job in drain(queue)]
    assert sorted(order) == sorted([j.id for j in ann_jobs] + [ben_job.id])
    assert order.index(ben_job.id) <= 1, f"ben's one job ran at place {order.index(ben_job.id) + 1} of {order}"


def test_one_small_job_never_waits_behind_another_persons_long_batch(queue, db):
    heavy, light = owners(db, "heavy", "light")
    for i in range(20):
        queue.submit(LARGE.model_copy(update={"seed": i}), heavy)
    small = queue.submit(SMALL, light)
    assert queue.position(small.id) <= 1
    assert small.id in [job.id for job in drain(queue)[:2]]


def test_two_backlogs_get_equal_gpu_time_whatever_their_job_sizes():
    scheduler = FairScheduler()
    for i in range(200):
        scheduler.add(Entry(i, owner=1, units=4.0))  # big jobs
        scheduler.add(Entry(1000 + i, owner=2, units=1.0))  # small jobs
    served = {1: 0.0, 2: 0.0}
    while served[1] + served[2] < 200:
        entry = scheduler.pick(by_units)
        served[entry.owner] += entry.units
    assert abs(served[1] - served[2]) <= 4.0, served  # within one big job


def test_each_owner_keeps_their_own_order(queue, db):
    ann, ben = owners(db, "ann", "ben")
    jobs = [queue.submit(SMALL.model_copy(update={"seed": i}), owner) for i, owner in enumerate([ann, ben, ann, ben, ann])]
    picked = drain(queue)
    for owner in (ann, ben):
        mine = [j.id for j in picked if j.owner_id == owner]
        assert mine == sorted(mine) == [j.id for j in jobs if j.owner_id == owner]


def test_demo_jobs_go_first_and_the_front_before_them(queue, db):
    ann, teacher = owners(db, "ann", "teacher")
    waiting = [queue.submit(SMALL.model_copy(update={"seed": i}), ann) for i in range(3)]
    demo = queue.submit(LARGE, teacher, demo=True)
    assert queue.get(demo.id).demo and queue.position(demo.id) == 0
    assert queue.front(waiting[2].id) and queue.front(waiting[1].id)  # the later move goes first
    assert not queue.front(999)
    assert [q.id for q in queue.order()] == [waiting[1].id, waiting[2].id, demo.id, waiting[0].id]
    reopened = SQLiteJobQueue(Database(db.path))  # demo and front are kept in the database
    assert [q.id for q in reopened.order()] == [waiting[1].id, waiting[2].id, demo.id, waiting[0].id]
    assert [j.id for j in drain(queue)] == [waiting[1].id, waiting[2].id, demo.id, waiting[0].id]


def test_the_order_the_queue_shows_is_the_order_it_runs(queue, db):
    people = owners(db, "a", "b", "c")
    for i in range(12):
        recipe = (LARGE if i % 4 == 0 else SMALL).model_copy(update={"seed": i})
        queue.submit(recipe, people[i % 3])
    shown = [q.id for q in queue.order()]
    assert [queue.position(i) for i in shown] == list(range(12))
    assert [j.id for j in drain(queue)] == shown


def test_a_cancelled_job_leaves_the_order(queue, db):
    ann, ben = owners(db, "ann", "ben")
    first = queue.submit(SMALL, ann)
    second = queue.submit(SMALL, ben)
    assert queue.cancel_queued(first.id)
    assert [q.id for q in queue.order()] == [second.id]
    assert [j.id for j in drain(queue)] == [second.id]


def test_jobs_queued_through_another_connection_are_picked(queue, db):
    (ann,) = owners(db, "ann")
    other = SQLiteJobQueue(Database(db.path))  # another process's connection to the same home
    job = other.submit(SMALL, ann)
    assert queue.claim(timeout=0).id == job.id


def test_usage_counts_unfinished_jobs_and_the_hours_gpu_seconds(queue, db):
    (ann,) = owners(db, "ann")
    ran = queue.submit(SMALL, ann)
    queue.claim(timeout=0)
    queue.record_run(ran.id, "cpu", 12.0)
    queue.finish(ran.id, {})
    waiting = queue.submit(SMALL, ann)
    usage = queue.usage(ann, since=0)
    assert usage.unfinished == 1 and usage.spent_seconds == 12.0
    assert usage.pending_seconds == pytest.approx(queue.get(waiting.id).estimated_seconds)
    assert queue.usage(ann, since=ran.created_at + 3600).spent_seconds == 0


def test_a_pick_reads_no_queued_rows(queue, db):
    """With 1,000 queued jobs a claim runs a fixed handful of statements: the queued set lives in memory."""
    people = owners(db, *[f"p{i}" for i in range(40)])
    for i in range(1000):
        queue.submit(SMALL.model_copy(update={"seed": i}), people[i % 40])
    statements: list[str] = []
    db._conn.set_trace_callback(statements.append)
    try:
        job = queue.claim(timeout=0)
    finally:
        db._conn.set_trace_callback(None)
    assert job is not None
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(statements) <= 6 and len(reads) == 1 and "WHERE id" in reads[0], statements
