"""Studio server benchmarks: the job queue's overhead, concurrent clients and the gallery at 10,000 images.

Every figure comes from one invocation, against the real app (`create_app(Studio.open(home))`) served
by uvicorn in a thread of this process on a free 127.0.0.1 port (`tests/web_server.py`), with the tiny
random-weight SD1 model from `tests/factories.py` (nothing is downloaded):

1. Job overhead: `POST /api/jobs` until the job's `done` event arrives on the WebSocket
   `/api/events?client=...` (events, not polling), against a direct `engine.generate(recipe)` call on
   the same studio's engine with the same recipe, both warm, in alternating order; medians of N.
   The job side also writes the PNG and its database row, which the direct call does not: that is
   part of what a job costs. Goal: at most 50 ms more per job.
2. Concurrent load: 20 clients (threads, each with its own httpx client, WebSocket and client id)
   each submit 5 tiny jobs and wait for their `done` events; then every job id must read `done` from
   `GET /api/jobs/{id}` and the gallery must hold exactly those 100 images. Bounded by `--timeout`.
3. Gallery speed: 10,000 image rows inserted through `Database.add_image` (pointing at a few real
   512x512 PNG files; a benchmark of the query, page and thumbnail path, not of generation), then the
   first page `GET /api/images?limit=60` (first request, then warm median), prompt searches, a deep
   page, and the thumbnails of the first page made cold, then served warm.

    python benchmarks/server.py --quick     # fewer repeats (about a minute on 2 CPU cores)
    python benchmarks/server.py             # the figures for BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from machine import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from websockets.sync.client import ClientConnection, connect  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # factories.py builds the tiny model; web_server.py serves the app

from localdiffusion.recipe import Recipe  # noqa: E402
from localdiffusion.store.db import Database  # noqa: E402
from localdiffusion.store.home import Home  # noqa: E402

MODEL = "tiny-sd1"
RECIPE = {"prompt": "a red lighthouse at dusk", "model": MODEL, "steps": 2, "width": 64, "height": 64,
          "sampler_name": "Euler", "seed": 5}
GOAL_OVERHEAD_MS = 50.0
PAGE = 60
FINISHED = ("done", "failed", "cancelled")

# Gallery prompts: "a {adjective} {subject} {place}, {style}"; 'zeppelin' is the rare subject.
ADJECTIVES = ["red", "quiet", "ancient", "glowing", "tiny", "misty", "golden", "broken", "frozen", "wild"]
SUBJECTS = ["lighthouse", "cat", "castle", "forest", "robot", "river", "mountain", "city", "ship", "garden",
            "dragon", "tower", "meadow", "volcano", "library", "harbor", "desert", "bridge", "owl", "train"]
PLACES = ["at dusk", "in the rain", "under the stars", "at noon", "in winter", "by the sea", "in fog", "at dawn"]
STYLES = ["oil painting", "watercolor", "photo", "ink sketch", "digital art", "pastel drawing"]
RARE_EVERY = 1000  # one image in this many has the rare subject


# ---------------------------------------------------------------------------------------------
# Report


@dataclass
class Row:
    figure: str
    what: str
    value: str
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, figure: str, what: str, value: str, note: str = "") -> None:
        self.rows.append(Row(figure, what, value, note))
        log(f"{figure}: {what}: {value} {note}")

    def markdown(self) -> str:
        lines = ["| figure | what | value | note |", "| --- | --- | --- | --- |"]
        lines += [f"| {r.figure} | {r.what} | {r.value} | {r.note} |" for r in self.rows]
        return "\n".join(lines)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def spread(values: list[float]) -> str:
    return f"min {ms(min(values))}, max {ms(max(values))}"


# ---------------------------------------------------------------------------------------------
# Machine


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> list[str]:
    import fastapi
    import uvicorn

    return [
        f"date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"cpu: {cpu_model()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}",
        f"python {platform.python_version()}, torch {torch.__version__}, fastapi {fastapi.__version__}, "
        f"uvicorn {uvicorn.__version__}, sqlite {__import__('sqlite3').sqlite_version}",
        f"uptime at start: {uptime()}",
    ]


# ---------------------------------------------------------------------------------------------
# Homes and the running server


def build_model(work: Path) -> Path:
    from factories import build_sd1

    return build_sd1(work / "models" / MODEL, work / "tokenizers")


def model_home(root: Path, model: Path) -> Home:
    """A fresh home (own database and outputs) whose checkpoint folder links the tiny model."""
    home = Home(root).ensure()
    (home.model_dir("checkpoint") / model.name).symlink_to(model, target_is_directory=True)
    return home


def ws_url(http_url: str, client: str) -> str:
    return http_url.replace("http://", "ws://", 1) + f"/api/events?client={client}"


def wait_for_done(ws: ClientConnection, job_id: int, deadline: float) -> tuple[str, float]:
    """The finishing event type of `job_id` and when it arrived (time.time()); ('timeout', now) if none in time."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout", time.time()
        try:
            message = json.loads(ws.recv(timeout=remaining))
        except TimeoutError:
            return "timeout", time.time()
        if message["job_id"] == job_id and message["type"] in FINISHED:
            return message["type"], time.time()


def submit(http: httpx.Client, **changes: Any) -> int:
    response = http.post("/api/jobs", json={**RECIPE, **changes})
    if response.status_code != 201:
        raise RuntimeError(f"POST /api/jobs answered {response.status_code}: {response.text[:300]}")
    return int(response.json()["id"])


# ---------------------------------------------------------------------------------------------
# Figure 1: job overhead


@dataclass
class JobTiming:
    total: float  # POST sent -> done event received
    post: float  # the POST round trip
    wait: float  # POST sent -> the worker claimed the job
    run: float  # claimed -> finished (generate + PNG + database row)
    notify: float  # finished -> done event received
    engine: float  # the engine's own time inside the worker (the job result's timings)


def timed_job(http: httpx.Client, ws: ClientConnection, timeout: float) -> JobTiming:
    sent = time.time()
    job_id = submit(http)
    posted = time.time()
    status, arrived = wait_for_done(ws, job_id, time.monotonic() + timeout)
    if status != "done":
        raise RuntimeError(f"job {job_id} ended '{status}' instead of 'done'")
    job = http.get(f"/api/jobs/{job_id}").json()
    return JobTiming(arrived - sent, posted - sent, job["started_at"] - sent, job["finished_at"] - job["started_at"],
                     arrived - job["finished_at"], job["result"]["timings"]["total"])


def job_overhead(work: Path, model: Path, repeats: int, timeout: float, report: Report) -> float:
    """Returns the median direct generate time (the engine's own pace, for figure 2)."""
    from web_server import running_studio

    home = model_home(work / "home-overhead", model)
    recipe = Recipe(**RECIPE)
    with running_studio(home) as server, httpx.Client(base_url=server.url, headers={"X-Client-Id": "bench"}) as http, \
            connect(ws_url(server.url, "bench")) as ws:
        log("job overhead: warm-up (loads the model)")
        for _ in range(2):
            server.studio.engine.generate(recipe)
            timed_job(http, ws, timeout)
        direct: list[float] = []
        jobs: list[JobTiming] = []

        def run_direct() -> None:
            start = time.perf_counter()
            server.studio.engine.generate(recipe)
            direct.append(time.perf_counter() - start)

        def run_job() -> None:
            jobs.append(timed_job(http, ws, timeout))

        for i in range(repeats):
            pair = [run_direct, run_job] if i % 2 == 0 else [run_job, run_direct]
            for step in pair:
                step()
    totals = [j.total for j in jobs]
    overhead = statistics.median(totals) - statistics.median(direct)
    # Each job ran next to one direct call; their difference shrugs off slow drifts in machine load.
    paired = statistics.median(j - d for j, d in zip(totals, direct))
    met = overhead * 1000 <= GOAL_OVERHEAD_MS
    what = f"64x64, 2 steps, median of {repeats}"
    report.add("1 job overhead", f"direct engine.generate ({what})", ms(statistics.median(direct)), spread(direct))
    report.add("1 job overhead", f"POST /api/jobs -> 'done' WebSocket event ({what})", ms(statistics.median(totals)),
               spread(totals))
    report.add("1 job overhead", "difference per job (median job - median direct)", ms(overhead),
               f"goal <= {GOAL_OVERHEAD_MS:.0f} ms: {'met' if met else 'NOT MET'}; median of paired differences "
               f"{ms(paired)}; best job - best direct {ms(min(totals) - min(direct))}")
    report.add("1 job overhead", "where a job's time goes (medians)",
               f"sent -> claimed {ms(statistics.median(j.wait for j in jobs))}",
               f"claimed -> finished {ms(statistics.median(j.run for j in jobs))} (of which the engine "
               f"{ms(statistics.median(j.engine for j in jobs))}, PNG + row + queue update "
               f"{ms(statistics.median(j.run - j.engine for j in jobs))}); finished -> event received "
               f"{ms(statistics.median(j.notify for j in jobs))}; the POST's answer came after "
               f"{ms(statistics.median(j.post for j in jobs))}, while the job already ran")
    if not met:
        report.failures.append(f"job overhead {ms(overhead)} is above the goal of {GOAL_OVERHEAD_MS:.0f} ms")
    return statistics.median(direct)


# ---------------------------------------------------------------------------------------------
# Figure 2: concurrent load


@dataclass
class ClientRun:
    name: str
    seed: int
    job_ids: list[int] = field(default_factory=list)
    ended: dict[int, str] = field(default_factory=dict)  # job id -> finishing event type (or 'timeout')
    error: str | None = None


def one_client(url: str, run: ClientRun, jobs: int, deadline: float, start: threading.Barrier) -> None:
    try:
        with httpx.Client(base_url=url, headers={"X-Client-Id": run.name}, timeout=60) as http, \
                connect(ws_url(url, run.name)) as ws:
            start.wait(timeout=60)
            run.job_ids = [submit(http, seed=run.seed + i, prompt=f"{run.name} job {i}") for i in range(jobs)]
            pending = set(run.job_ids)
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    message = json.loads(ws.recv(timeout=remaining))
                except TimeoutError:
                    break
                if message["job_id"] in pending and message["type"] in FINISHED:
                    run.ended[message["job_id"]] = message["type"]
                    pending.discard(message["job_id"])
            for job_id in pending:
                run.ended[job_id] = "timeout"
    except Exception as e:  # a broken client is a result to report, not a crash of the benchmark
        run.error = f"{type(e).__name__}: {e}"


def gallery_ids(http: httpx.Client) -> list[int]:
    ids, offset = [], 0
    while True:
        page = http.get("/api/images", params={"offset": offset, "limit": 200}).json()
        ids += [item["id"] for item in page["items"]]
        if not page["has_more"]:
            return ids
        offset += 200


def concurrent_load(work: Path, model: Path, clients: int, jobs: int, timeout: float, direct: float,
                    report: Report) -> None:
    from web_server import running_studio

    home = model_home(work / "home-load", model)
    runs = [ClientRun(f"client-{i:02d}", seed=1000 * (i + 1)) for i in range(clients)]
    with running_studio(home) as server:
        log("concurrent load: warm-up (loads the model)")
        server.studio.engine.generate(Recipe(**RECIPE))
        start = threading.Barrier(clients + 1)
        deadline = time.monotonic() + timeout
        threads = [threading.Thread(target=one_client, args=(server.url, r, jobs, deadline, start), daemon=True)
                   for r in runs]
        for t in threads:
            t.start()
        start.wait(timeout=60)
        began = time.perf_counter()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + 5)
        elapsed = time.perf_counter() - began
        with httpx.Client(base_url=server.url, timeout=60) as http:
            all_ids = [i for r in runs for i in r.job_ids]
            states = {i: http.get(f"/api/jobs/{i}").json() for i in all_ids}
            in_gallery = set(gallery_ids(http))
    expected = clients * jobs
    done = [i for i, s in states.items() if s["status"] == "done"]
    images = {img for s in states.values() if s["status"] == "done" for img in s["result"]["images"]}
    events_done = sum(1 for r in runs for t in r.ended.values() if t == "done")
    errors = [f"{r.name}: {r.error}" for r in runs if r.error]
    lost = expected - len(done)
    complete = lost == 0 and not errors and images == in_gallery and len(in_gallery) == expected
    report.add("2 concurrent load", f"{clients} clients x {jobs} jobs (64x64, 2 steps), all submitted at once",
               f"{elapsed:.2f} s, {len(done) / elapsed:.2f} jobs/s",
               f"serial engine pace for comparison: {expected} x {ms(direct)} = {expected * direct:.2f} s")
    report.add("2 concurrent load", "jobs done / images in gallery / 'done' events received",
               f"{len(done)}/{expected} done, {len(in_gallery)} images, {events_done} events",
               "none lost" if complete else f"LOST OR MISMATCHED: {lost} not done; {'; '.join(errors)[:300]}")
    if not complete:
        report.failures.append(f"concurrent load: {lost} of {expected} jobs not done, {len(in_gallery)} images, "
                               f"errors: {errors[:3]}")


# ---------------------------------------------------------------------------------------------
# Figure 3: gallery speed


def sample_pngs(folder: Path, count: int = 8, side: int = 512) -> list[Path]:
    """Real 512x512 PNGs (gradients with noise, so they compress like photos rather than flat colour)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    for i in range(count):
        base = np.stack([np.add.outer(ramp, ramp * (c + i) / 8) / 2 for c in range(3)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 24, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"sample-{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def gallery_prompt(rng: random.Random, index: int) -> str:
    subject = "zeppelin" if index % RARE_EVERY == RARE_EVERY // 2 else rng.choice(SUBJECTS)
    return f"a {rng.choice(ADJECTIVES)} {subject} {rng.choice(PLACES)}, {rng.choice(STYLES)}"


def gallery_rows(count: int, pngs: list[Path]) -> list[dict[str, Any]]:
    """`Database.add_image` arguments for `count` images, one a minute up to now, oldest first."""
    from localdiffusion.infotext import to_infotext

    rng, now, rows = random.Random(0), time.time(), []
    for i in range(count):
        recipe = Recipe(prompt=gallery_prompt(rng, i), model=MODEL, steps=20, width=512, height=512, seed=i)
        rows.append({"path": pngs[i % len(pngs)], "recipe_json": recipe.to_json(), "width": 512, "height": 512,
                     "prompt": recipe.prompt, "model_hash": "0123456789", "created_at": now - (count - i) * 60,
                     "infotext": to_infotext(recipe, model_name=MODEL, model_hash="0123456789")})
    return rows


def fill_gallery(home: Home, rows: list[dict[str, Any]]) -> float:
    """Seconds to add the rows through Database.add_image (one transaction per row, as the worker writes them)."""
    with Database(home.db_path) as db:
        start = time.perf_counter()
        for row in rows:
            db.add_image(**row)
        return time.perf_counter() - start


def timed_get(http: httpx.Client, path: str, params: dict[str, Any] | None = None) -> tuple[float, Any]:
    start = time.perf_counter()
    response = http.get(path, params=params)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed, response


def median_get(http: httpx.Client, path: str, params: dict[str, Any], repeats: int) -> tuple[float, list[float], Any]:
    times, last = [], None
    for _ in range(repeats):
        elapsed, last = timed_get(http, path, params)
        times.append(elapsed)
    return statistics.median(times), times, last


def matching(prompts: list[str], query: str) -> int:
    words = query.lower().split()
    def has(prompt: str, word: str) -> bool:
        return any(token.startswith(word) for token in prompt.replace(",", "").split())

    return sum(1 for p in prompts if all(has(p, w) for w in words))


def gallery_speed(work: Path, count: int, repeats: int, report: Report) -> None:
    from web_server import running_studio

    home = Home(work / "home-gallery").ensure()
    pngs = sample_pngs(work / "sample-pngs")
    log(f"gallery: inserting {count} image rows")
    rows = gallery_rows(count, pngs)
    prompts = [row["prompt"] for row in rows]
    insert = fill_gallery(home, rows)
    report.add("3 gallery", f"setup: {count} rows through Database.add_image", f"{insert:.2f} s",
               f"{insert / count * 1e6:.0f} us per row, one transaction each; {len(pngs)} real 512x512 PNGs "
               f"({sum(p.stat().st_size for p in pngs) // len(pngs) // 1024} KiB each) shared by all rows")
    with running_studio(home) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        first, response = timed_get(http, "/api/images", {"limit": PAGE})
        page = response.json()["items"]
        if len(page) != PAGE:
            report.failures.append(f"gallery: first page had {len(page)} items, not {PAGE}")
        warm, times, _ = median_get(http, "/api/images", {"limit": PAGE}, repeats)
        report.add("3 gallery", f"first page GET /api/images?limit={PAGE}", f"first request {ms(first)}, "
                   f"then median {ms(warm)}", f"{repeats} repeats, {spread(times)}")
        for query in ("lighthouse", "red lighthouse", "zeppelin"):
            took, times, _ = median_get(http, "/api/images", {"limit": PAGE, "q": query}, repeats)
            report.add("3 gallery", f"search q='{query}' ({matching(prompts, query)} of {count} match)", ms(took),
                       f"median of {repeats}, {spread(times)}")
        deep, times, _ = median_get(http, "/api/images", {"limit": PAGE, "offset": count - PAGE}, repeats)
        report.add("3 gallery", f"last page (offset {count - PAGE})", ms(deep), f"median of {repeats}, {spread(times)}")
        in_process = timed_median(lambda: server.studio.db.list_images(server.studio.owner_id, 0, PAGE + 1), repeats)
        report.add("3 gallery", "the same first-page query in process (Database.list_images)", ms(in_process),
                   "the rest of the page time is HTTP and JSON")
        thumbs = [item["thumb"] for item in page]
        cold = [timed_get(http, t)[0] for t in thumbs]
        hot = [timed_get(http, t)[0] for t in thumbs]
        report.add("3 gallery", f"first page's {len(thumbs)} thumbnails, cold (made now, WEBP 256 px)",
                   f"{sum(cold):.2f} s",
                   f"one after another; median {ms(statistics.median(cold))} each, {spread(cold)}")
        report.add("3 gallery", f"the same {len(thumbs)} thumbnails, warm (cached files)", f"{sum(hot) * 1000:.0f} ms",
                   f"median {ms(statistics.median(hot))} each, {spread(hot)}")


def timed_median(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (overhead 8, gallery 5)")
    p.add_argument("--repeats", type=int, default=None, help="timed pairs for the job overhead (default 30, quick 8)")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--jobs-per-client", type=int, default=5)
    p.add_argument("--images", type=int, default=10_000, help="gallery rows")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds the concurrent load may take at most")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repeats = args.repeats or (8 if args.quick else 30)
    gallery_repeats = 5 if args.quick else 20
    header = machine()
    report = Report()
    with tempfile.TemporaryDirectory(prefix="ld-server-bench-") as tmp:
        work = Path(tmp)
        log("building the tiny SD1 model")
        model = build_model(work)
        direct = job_overhead(work, model, repeats, args.timeout, report)
        concurrent_load(work, model, args.clients, args.jobs_per_client, args.timeout, direct, report)
        gallery_speed(work, args.images, gallery_repeats, report)
    header.append(f"uptime at end: {uptime()}")
    print("\n".join(f"- {line}" for line in header))
    print(f"- command: python benchmarks/server.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print("- server: uvicorn in a thread of the benchmark process, 127.0.0.1; clients in the same process\n")
    print(report.markdown())
    for failure in report.failures:
        print(f"\nFAILED: {failure}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
