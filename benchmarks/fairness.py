"""The fair queue against the old FIFO order, on a simulated clock, in one run.

A class: 40 participants each queue 5 jobs of mixed sizes within the first few seconds; one of them
(the heavy user) queues 20 large jobs at once, first. One GPU runs the jobs one at a time; a job takes its
estimated GPU-seconds (jobs/fair.py: standard steps x seconds per step). The same workload is run in
FIFO order (the old queue: oldest first) and by the fair scheduler (deficit round robin by GPU-seconds).

Figures:
1. each user's GPU share in the first quarter of the run, while everyone has work queued: Jain's index
   (1.0: everyone got the same GPU time);
2. the wait until each light user's first image (median, 90th percentile, worst);
3. the heavy user's share of the GPU while others had jobs waiting;
4. the scheduler's overhead per pick with 1,000 queued jobs (40 owners): the scheduler alone, and
   SQLiteJobQueue.claim on a real database file (pick + the row it claims), against the old FIFO query.

    .venv/bin/python benchmarks/fairness.py [--seed 0] [--picks 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model  # noqa: E402

from localdiffusion.jobs.fair import DEFAULT_SECONDS_PER_UNIT, Entry, FairScheduler, job_units  # noqa: E402
from localdiffusion.recipe import Recipe  # noqa: E402

PARTICIPANTS = 40
JOBS_EACH = 5
HEAVY_JOBS = 20
HEAVY = 0  # the participant who queues the large batch
SIZES = [  # (width, height, steps, batch): mixed sizes for the light users
    (512, 512, 20, 1), (512, 768, 25, 1), (768, 768, 30, 1), (512, 512, 20, 4), (1024, 1024, 30, 1),
]
LARGE = (1024, 1024, 40, 4)


@dataclass
class Job:
    id: int
    owner: int
    submitted: float
    seconds: float
    started: float = 0.0
    finished: float = 0.0


def workload(seed: int) -> list[Job]:
    rng = random.Random(seed)
    jobs: list[Job] = []

    def add(owner: int, at: float, size: tuple[int, int, int, int]) -> None:
        width, height, steps, batch = size
        units = job_units(Recipe(width=width, height=height, steps=steps, batch_size=batch))
        jobs.append(Job(len(jobs) + 1, owner, at, units * DEFAULT_SECONDS_PER_UNIT))

    for _ in range(HEAVY_JOBS):  # all at once, before anyone else
        add(HEAVY, 0.0, LARGE)
    arrivals = []
    for owner in range(1, PARTICIPANTS):
        start = rng.uniform(0.5, 5.0)
        arrivals += [(start + i * rng.uniform(0.05, 0.5), owner) for i in range(JOBS_EACH)]
    for at, owner in sorted(arrivals):
        add(owner, at, rng.choice(SIZES))
    return jobs


def simulate(jobs: list[Job], fair: bool) -> list[Job]:
    """Run the jobs on one simulated GPU; returns them with start and finish times."""
    jobs = [Job(j.id, j.owner, j.submitted, j.seconds) for j in jobs]
    pending = sorted(jobs, key=lambda j: (j.submitted, j.id))
    by_id = {j.id: j for j in jobs}
    scheduler, fifo = FairScheduler(), []
    seconds = {j.id: j.seconds for j in jobs}
    now, arrived = 0.0, 0
    while arrived < len(pending) or len(scheduler) or fifo:
        while arrived < len(pending) and pending[arrived].submitted <= now:
            job = pending[arrived]
            (scheduler.add(Entry(job.id, job.owner, seconds[job.id])) if fair else fifo.append(job.id))
            arrived += 1
        if not len(scheduler) and not fifo:
            now = pending[arrived].submitted
            continue
        job_id = scheduler.pick(lambda e: e.units).id if fair else fifo.pop(0)
        job = by_id[job_id]
        job.started, job.finished = now, now + job.seconds
        now = job.finished
    return jobs


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values)) if any(values) else 0.0


def received(jobs: list[Job], owner: int, start: float, end: float) -> float:
    return sum(max(0.0, min(j.finished, end) - max(j.started, start)) for j in jobs if j.owner == owner)


def figures(jobs: list[Job]) -> dict[str, float]:
    makespan = max(j.finished for j in jobs)
    window = (max(j.submitted for j in jobs), makespan / 4)  # everyone has queued by then
    shares = [received(jobs, owner, *window) for owner in range(PARTICIPANTS)]
    firsts = []
    for owner in range(1, PARTICIPANTS):
        mine = [j for j in jobs if j.owner == owner]
        firsts.append(min(j.finished for j in mine) - min(j.submitted for j in mine))
    # The heavy user's share while someone else had a job waiting: from the first other arrival until the
    # last other job started.
    others = [j for j in jobs if j.owner != HEAVY]
    busy = (min(j.submitted for j in others), max(j.started for j in others))
    heavy = received(jobs, HEAVY, *busy) / (busy[1] - busy[0])
    firsts.sort()
    return {"jain": jain(shares), "first_median": statistics.median(firsts),
            "first_p90": firsts[int(0.9 * (len(firsts) - 1))], "first_max": firsts[-1], "heavy_share": heavy,
            "makespan": makespan, "window": window[1] - window[0]}


def pick_overhead(picks: int, seed: int) -> tuple[float, float]:
    """Microseconds per pick of the scheduler alone, 1,000 queued over 40 owners (kept at 1,000 by adding
    one job per pick): median and 99th percentile."""
    rng = random.Random(seed)
    scheduler = FairScheduler()
    for i in range(1000):
        scheduler.add(Entry(i, rng.randrange(PARTICIPANTS), rng.choice([20.0, 45.0, 90.0, 240.0])))
    times = []
    next_id = 1000
    for _ in range(picks):
        t = time.perf_counter()
        scheduler.pick(lambda e: e.units)
        times.append(time.perf_counter() - t)
        scheduler.add(Entry(next_id, rng.randrange(PARTICIPANTS), rng.choice([20.0, 45.0, 90.0, 240.0])))
        next_id += 1
    times.sort()
    return statistics.median(times) * 1e6, times[int(0.99 * (len(times) - 1))] * 1e6


def claim_overhead(picks: int, seed: int) -> tuple[float, float, float, float]:
    """Milliseconds per SQLiteJobQueue.claim with 1,000 queued (pick + claiming its row + reading it back),
    median and 99th percentile, and the old FIFO claim's (its SELECT ... ORDER BY id LIMIT 1, the
    same UPDATE and read), on a database file in a temporary folder."""
    from localdiffusion.jobs import SQLiteJobQueue
    from localdiffusion.store.db import Database

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        db = Database(Path(folder) / "db.sqlite")
        owners = [db.ensure_owner(f"p{i}") for i in range(PARTICIPANTS)]
        queue = SQLiteJobQueue(db)
        recipes = [Recipe(width=w, height=h, steps=s, batch_size=b) for w, h, s, b in SIZES]

        def submit() -> None:
            queue.submit(rng.choice(recipes), rng.choice(owners))

        for _ in range(1000):
            submit()
        fair, fifo = [], []
        for _ in range(picks):
            t = time.perf_counter()
            job = queue.claim(timeout=0)
            fair.append(time.perf_counter() - t)
            queue.finish(job.id, {})
            submit()
            t = time.perf_counter()
            with db.transaction() as conn:  # the old claim, on the same table (then put back)
                row = conn.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1").fetchone()
                conn.execute("UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 WHERE id = ?",
                             (time.time(), row[0]))
            queue.get(row[0])
            fifo.append(time.perf_counter() - t)
            with db.transaction() as conn:
                conn.execute("UPDATE jobs SET status = 'queued', attempts = attempts - 1 WHERE id = ?", (row[0],))
        fair.sort()
        fifo.sort()
        p99 = int(0.99 * (len(fair) - 1))
        return statistics.median(fair) * 1e3, fair[p99] * 1e3, statistics.median(fifo) * 1e3, fifo[p99] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--picks", type=int, default=2000, help="picks timed for the overhead figures")
    args = parser.parse_args()

    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"cpu: {cpu_model()}, {os.cpu_count()} logical cores; python {platform.python_version()}")
    print(f"load average (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    jobs = workload(args.seed)
    total = sum(j.seconds for j in jobs)
    print(f"workload: {PARTICIPANTS} participants, {len(jobs)} jobs, {total:.0f} simulated GPU-seconds; "
          f"the heavy user's {HEAVY_JOBS} large jobs are {sum(j.seconds for j in jobs if j.owner == HEAVY):.0f} s of it\n")
    fifo, fair = figures(simulate(jobs, fair=False)), figures(simulate(jobs, fair=True))
    rows = [
        ("GPU share, Jain's index (first quarter of the run)", "jain", "{:.3f}"),
        ("wait for a light user's first image, median (s)", "first_median", "{:.1f}"),
        ("wait for a light user's first image, 90th percentile (s)", "first_p90", "{:.1f}"),
        ("wait for a light user's first image, worst (s)", "first_max", "{:.1f}"),
        ("heavy user's GPU share while others wait", "heavy_share", "{:.0%}"),
        ("makespan (s)", "makespan", "{:.0f}"),
    ]
    print("| figure | FIFO (old) | fair |")
    print("| --- | --- | --- |")
    for label, key, fmt in rows:
        print(f"| {label} | {fmt.format(fifo[key])} | {fmt.format(fair[key])} |")
    median, p99 = pick_overhead(args.picks, args.seed)
    claim, claim_p99, old, old_p99 = claim_overhead(min(args.picks, 1000), args.seed)
    print(f"| scheduler pick, 1,000 queued, 40 owners (µs, median / p99) | - | {median:.0f} / {p99:.0f} |")
    print(f"| claim (pick + UPDATE + read the row), 1,000 queued (ms, median / p99) | {old:.2f} / {old_p99:.2f} | "
          f"{claim:.2f} / {claim_p99:.2f} |")
    overhead = (claim - old) * 1e3
    verdict = "under" if median < 1000 and overhead < 1000 else "OVER"
    print(f"\nscheduler overhead per pick: {median:.0f} µs alone, {overhead:.0f} µs on a claim's median: {verdict} the 1 ms bound")


if __name__ == "__main__":
    main()
