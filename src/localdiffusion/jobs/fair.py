"""Which queued job runs next: deficit round robin over owners, weighted by each job's estimated GPU-seconds.

The worker no longer takes the oldest job. Every queued job has an estimated cost (`job_units`: steps x
pixels x images, plus the hires pass and ControlNet units, in "standard steps" of one 512x512 image),
turned into GPU-seconds by a per-model factor learned from measured run times (`CostFactors`).
`FairScheduler` then serves the owners in turn (deficit round robin): on each visit an owner's deficit
grows by a quantum, and the owner is served when it covers the cost of the first job in their line. So
a person with one small job never waits behind another person's long batch, and two people with
backlogs get the same GPU time whatever the sizes of their jobs.

Before the round robin come the jobs a facilitator moved to the front (the latest first), then demo
jobs (a facilitator's, for showing something to the room; oldest first); neither is charged to anyone.

The scheduler keeps the queued set in memory: a pick looks at the first job of each owner's line only,
O(owners), however long the queue. `jobs/queue.py` keeps it in step with the database.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from localdiffusion.recipe import Recipe

REFERENCE_PIXELS = 512 * 512  # one "standard step" is one denoising step of one 512x512 image
DEFAULT_SECONDS_PER_UNIT = 0.05  # a mid-range GPU's standard step (SD1, fp16), until a run has been measured
CONTROLNET_SHARE = 0.5  # a ControlNet unit runs beside the UNet at about half its cost
HIRES_MIN_STEPS = 1
TRAIN_STEP_UNITS = 1.5  # a training step (forward and backward) against a standard CFG sampling step
KIND_FACTOR = {"explain": 1.5}  # an explanation records and decodes extra stills
PLAIN_UPSCALE_UNITS = 0.5  # an upscale without SD: one upscaler pass, about half a second on a GPU
DEFAULT_CELLS = 9  # a comparison whose axes cannot be read is taken as 3x3
LEARN_DECAY = 0.8  # older measurements fade: each new run keeps 80 % of the weight of the ones before


def recipe_units(recipe: Recipe, native: int = 512, per_image: bool = False) -> float:
    """The work of one recipe in standard steps: steps x pixels (x images, unless per_image), with A1111's
    img2img steps (steps x denoising strength), the hires pass and ControlNet units."""
    width, height = recipe.width or native, recipe.height or native
    pixels = width * height / REFERENCE_PIXELS
    steps = recipe.steps
    if recipe.mode != "txt2img":
        steps = max(1, round(steps * recipe.denoising_strength))
    units = steps * pixels
    if recipe.enable_hr and recipe.mode == "txt2img":
        hr_steps = recipe.hr_second_pass_steps or recipe.steps
        units += max(HIRES_MIN_STEPS, round(hr_steps * recipe.denoising_strength)) * pixels * recipe.hr_scale ** 2
    units *= 1 + CONTROLNET_SHARE * len(recipe.controls)
    return units if per_image else units * recipe_images(recipe)


def recipe_images(recipe: Recipe) -> int:
    return recipe.batch_size * recipe.n_iter


def compare_cells(params: dict[str, Any]) -> int:
    """How many cells a comparison job makes (the product of its axes' value counts)."""
    from localdiffusion.explain.axes import parse_axis
    from localdiffusion.errors import LocalDiffusionError

    cells = 1
    for name in ("x", "y", "z"):
        text = params.get(name)
        if not text:
            continue
        try:
            cells *= len(parse_axis(text, name.upper()).values)
        except LocalDiffusionError:
            return DEFAULT_CELLS
    return cells


def job_images(recipe: Recipe, kind: str, params: dict[str, Any]) -> int:
    """How many images a job makes: its batch, a comparison's cells, a comic's panels."""
    if kind == "compare":
        return compare_cells(params)
    if kind == "panels":
        return max(1, len(params.get("recipes") or []))
    if kind == "upscale":
        return 1
    return recipe_images(recipe)


def job_units(recipe: Recipe, kind: str = "generate", params: dict[str, Any] | None = None, native: int = 512) -> float:
    """A job's estimated work in standard steps (the per-model factor turns it into GPU-seconds)."""
    params = params or {}
    if kind == "compare":
        return recipe_units(recipe, native, per_image=True) * compare_cells(params)
    if kind == "panels":
        recipes = [Recipe.model_validate(r) for r in params.get("recipes") or []] or [recipe]
        return sum(recipe_units(r, native) for r in recipes) * 1.2  # shared attention keeps and reads more tokens
    if kind == "train":
        return train_units(params, native)
    if kind == "upscale":
        if not params.get("sd"):
            return PLAIN_UPSCALE_UNITS
        scale = float(params.get("scale") or 2.0)
        width = params.get("width") or (recipe.width or native) * scale
        height = params.get("height") or (recipe.height or native) * scale
        steps = max(1, round(recipe.steps * recipe.denoising_strength))
        return steps * width * height / REFERENCE_PIXELS
    return recipe_units(recipe, native) * KIND_FACTOR.get(kind, 1.0)


def train_steps(params: dict[str, Any]) -> int:
    """A training job's steps: its settings' or the default for its number of pictures (train/settings.py)."""
    from localdiffusion.train.settings import default_steps

    settings = params.get("settings") or {}
    return int(settings.get("steps") or default_steps(len(params.get("pictures") or [])))


def train_units(params: dict[str, Any], native: int = 512) -> float:
    """A training job's work in standard steps: each step is a forward and a backward pass of the UNet (about three
    passes, 1.5 standard CFG steps) per picture of the batch at the training resolution, plus its samples (two
    images of `sample_steps` each, four times by default)."""
    settings = params.get("settings") or {}
    steps = train_steps(params)
    side = int(settings.get("resolution") or native)
    per_step = TRAIN_STEP_UNITS * int(settings.get("batch_size") or 1) * side * side / REFERENCE_PIXELS
    every = int(params.get("sample_every") or 0) or max(1, steps // 4)
    sample_side = int(params.get("sample_size") or side)
    samples = (steps // every) * 2 * 2 * int(params.get("sample_steps") or 20) * sample_side * sample_side / REFERENCE_PIXELS
    return steps * per_step + samples


class CostFactors:
    """Seconds per standard step for each model, learned from measured runs and kept in the database.

    Each model's factor is the ratio of its measured seconds to its standard steps, summed over its runs with
    older runs fading (`LEARN_DECAY`), so a few large jobs weigh more than many tiny ones. A model that has
    not run yet takes the mean of the others, or `DEFAULT_SECONDS_PER_UNIT` before any run."""

    def __init__(self, db: Any = None) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._sums: dict[str, tuple[float, float]] = {}  # model -> (seconds, units)
        self.version = 0
        if db is not None:
            for model, seconds, units in db.query("SELECT model, seconds, units FROM cost_factors"):
                self._sums[model] = (seconds, units)

    def factor(self, model: str) -> float:
        sums = self._sums.get(model)
        if sums is not None and sums[1] > 0:
            return sums[0] / sums[1]
        return self.typical()

    def typical(self) -> float:
        known = [s / u for s, u in self._sums.values() if u > 0]
        return sum(known) / len(known) if known else DEFAULT_SECONDS_PER_UNIT

    def learn(self, model: str, units: float, seconds: float) -> None:
        """One measured run of `units` standard steps that took `seconds` on the device."""
        if units <= 0 or seconds <= 0:
            return
        with self._lock:
            old_seconds, old_units = self._sums.get(model, (0.0, 0.0))
            sums = (old_seconds * LEARN_DECAY + seconds, old_units * LEARN_DECAY + units)
            self._sums[model] = sums
            self.version += 1
        if self.db is not None:
            with self.db.transaction() as conn:
                conn.execute("INSERT INTO cost_factors (model, seconds, units, updated_at) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT(model) DO UPDATE SET seconds = excluded.seconds, units = excluded.units, "
                             "updated_at = excluded.updated_at", (model, *sums, time.time()))

    def snapshot(self) -> dict[str, float]:
        return {model: self.factor(model) for model in self._sums}


@dataclass
class Entry:
    """A queued job as the scheduler sees it."""

    id: int
    owner: int
    units: float
    model: str = ""
    kind: str = "generate"
    demo: bool = False
    front: float = 0.0  # when a facilitator moved it to the front (0: never); the latest goes first


@dataclass
class _State:
    """The round robin's state, copied whole when the run order is simulated."""

    lines: dict[int, deque[Entry]] = field(default_factory=dict)  # each owner's queued jobs, oldest first
    ring: list[int] = field(default_factory=list)  # owners with queued jobs, in the order of their turns
    turn: int = 0  # index in ring of the owner whose turn it is (or comes next)
    visiting: bool = False  # whether that owner's turn has begun (its quantum given)
    deficit: dict[int, float] = field(default_factory=dict)
    fronted: list[Entry] = field(default_factory=list)  # the latest first
    demo: list[Entry] = field(default_factory=list)  # oldest first

    def copy(self) -> "_State":
        return _State({o: deque(line) for o, line in self.lines.items()}, list(self.ring), self.turn, self.visiting,
                      dict(self.deficit), list(self.fronted), list(self.demo))


Cost = Callable[[Entry], float]
Eligible = Callable[[Entry], bool]


class FairScheduler:
    """Deficit round robin over owners, weighted by each job's cost (see the module docstring).

    The quantum of a round is the smallest cost among the jobs at the heads of the owners' lines, so an
    owner is never served twice in a row while another waits with a job as small. Rather than loop
    round by round, a pick works out at once how many rounds each owner needs and serves the first to get
    there (ties in turn order), crediting every owner the rounds that passed: O(owners) per pick."""

    def __init__(self) -> None:
        self._s = _State()
        self._entries: dict[int, Entry] = {}
        self._fronts = 0.0  # the latest front stamp
        self.version = 0  # moves on with every change, so a cached run order knows it is stale

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: int) -> bool:
        return job_id in self._entries

    def ids(self) -> list[int]:
        return list(self._entries)

    def entry(self, job_id: int) -> Entry | None:
        return self._entries.get(job_id)

    def clear(self) -> None:
        self._s, self._entries = _State(), {}
        self.version += 1

    def add(self, entry: Entry) -> None:
        if entry.id in self._entries:
            return
        self._entries[entry.id] = entry
        self.version += 1
        s = self._s
        if entry.front:
            self._fronts = max(self._fronts, entry.front)
            s.fronted.append(entry)
            s.fronted.sort(key=lambda e: -e.front)
        elif entry.demo:
            s.demo.append(entry)
            s.demo.sort(key=lambda e: e.id)
        else:
            line = s.lines.get(entry.owner)
            if line is None:
                s.lines[entry.owner] = deque([entry])
                _join_ring(s, entry.owner)
            elif not line or line[-1].id < entry.id:
                line.append(entry)
            else:  # an older job back in the queue (after a restart): in its place by age
                at = next(i for i, e in enumerate(line) if e.id > entry.id)
                line.insert(at, entry)

    def remove(self, job_id: int) -> Entry | None:
        entry = self._entries.pop(job_id, None)
        if entry is None:
            return None
        self.version += 1
        s = self._s
        if entry in s.fronted:
            s.fronted.remove(entry)
        elif entry in s.demo:
            s.demo.remove(entry)
        else:
            line = s.lines[entry.owner]
            line.remove(entry)
            if not line:
                _leave_ring(s, entry.owner)
        return entry

    def front(self, job_id: int) -> float | None:
        """Move a queued job before every other (the latest moved goes first); its front stamp (a time, to
        keep), or None when it is not queued."""
        entry = self.remove(job_id)
        if entry is None:
            return None
        entry.front = max(time.time(), self._fronts + 1e-3)
        self.add(entry)
        return entry.front

    def charge(self, owner: int, seconds: float) -> None:
        """Correct an owner's deficit when a job took more (or less) than estimated."""
        if owner in self._s.deficit:
            self._s.deficit[owner] -= seconds
            self.version += 1

    def pick(self, cost: Cost, eligible: Eligible | None = None) -> Entry | None:
        """The next job to run, taken out of the queue. With `eligible`, the first of the jobs it accepts in the fair
        order among them: the others keep their places, and their owners are neither charged nor credited."""
        entry = _pick(self._s, cost, eligible)
        if entry is not None:
            del self._entries[entry.id]
            self.version += 1
        return entry

    def order(self, cost: Cost) -> list[Entry]:
        """Every queued job in the order it would run if nothing changed; the queue itself is untouched."""
        state = self._s.copy()
        ordered = []
        while (entry := _pick(state, cost)) is not None:
            ordered.append(entry)
        return ordered

    def deficits(self) -> dict[int, float]:
        return dict(self._s.deficit)


def _join_ring(s: _State, owner: int) -> None:
    """A newly waiting owner takes the last turn of the round (the tail of DRR's active list)."""
    s.deficit[owner] = 0.0
    if not s.ring:
        s.ring.append(owner)
        s.turn, s.visiting = 0, False
        return
    s.ring.insert(s.turn, owner)
    s.turn += 1


def _leave_ring(s: _State, owner: int) -> None:
    """An owner with nothing queued leaves the round and loses their deficit (DRR)."""
    at = s.ring.index(owner)
    s.ring.pop(at)
    del s.lines[owner]
    s.deficit.pop(owner, None)
    if at < s.turn:
        s.turn -= 1
    elif at == s.turn:
        s.visiting = False  # the turn passes to whoever came after
    if s.turn >= len(s.ring):
        s.turn = 0


def _pick(s: _State, cost: Cost, eligible: Eligible | None = None) -> Entry | None:
    """The next entry, taken out of `s`. With `eligible`, the round robin runs over the jobs it accepts only: each
    owner's first such job is their head, and an owner with none takes no part in this pick (no quantum, no charge).
    Every call of `eligible` comes before any change to `s`."""
    for waiting in (s.fronted, s.demo):
        for at, entry in enumerate(waiting):
            if eligible is None or eligible(entry):
                return waiting.pop(at)
    if not s.ring:
        return None
    if eligible is None:
        first = {owner: s.lines[owner][0] for owner in s.ring}
    else:
        first = {}
        for owner in s.ring:
            head = next((e for e in s.lines[owner] if eligible(e)), None)
            if head is not None:
                first[owner] = head
        if not first:
            return None
    n = len(s.ring)
    if s.visiting:
        owner = s.ring[s.turn]
        if owner in first and cost(first[owner]) <= s.deficit[owner] + 1e-9:
            return _serve(s, owner, first[owner], cost)
        s.visiting, s.turn = False, (s.turn + 1) % n
    heads = [o for o in (s.ring[(s.turn + k) % n] for k in range(n)) if o in first]
    costs = [cost(first[o]) for o in heads]
    quantum = max(min(costs), 1e-9)
    best_key, best_k, best_visits = None, 0, 1
    for k, (owner, c) in enumerate(zip(heads, costs)):
        visits = max(1, math.ceil((c - s.deficit[owner]) / quantum - 1e-9))
        key = (visits - 1) * n + k
        if best_key is None or key < best_key:
            best_key, best_k, best_visits = key, k, visits
    for k, owner in enumerate(heads):  # every owner gets the quantum of each turn that passed
        s.deficit[owner] += quantum * (best_visits - 1 + (1 if k <= best_k else 0))
    owner = heads[best_k]
    s.turn, s.visiting = s.ring.index(owner), True
    return _serve(s, owner, first[owner], cost)


def _serve(s: _State, owner: int, entry: Entry, cost: Cost) -> Entry:
    line = s.lines[owner]
    if line[0] is entry:
        line.popleft()
    else:  # a later job of the line, the ones before it skipped (not eligible now): they keep their places
        line.remove(entry)
    s.deficit[owner] -= cost(entry)
    if not s.lines[owner]:
        _leave_ring(s, owner)
    return entry
