"""Results as artefacts: tasks write nothing, the result store is the only writer of a job's files and rows."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from PIL import Image

from localdiffusion.jobs import EventBus, SQLiteJobQueue, Worker
from localdiffusion.jobs.artefacts import FileArtefact, ImageArtefact, TaskOutput
from localdiffusion.jobs.results import ResultStore
from localdiffusion.recipe import Recipe
from localdiffusion.store.db import Database
from localdiffusion.store.inputs import keep_input
from localdiffusion.store.outputs import LOCK_NAME

RECIPE = Recipe(prompt="a cat", seed=1, steps=2, width=64, height=64, sampler_name="Euler", model="tiny-sd1")


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def leftovers(folder: Path) -> list[str]:
    """Hidden entries a half-finished write would leave (the numbering lock file is meant to stay)."""
    return [p.relative_to(folder).as_posix() for p in folder.rglob(".*") if p.name != LOCK_NAME]


@pytest.fixture()
def store(tmp_path) -> ResultStore:
    return ResultStore(tmp_path / "outputs", Database(tmp_path / "db.sqlite"))


def submit(engine, store: ResultStore, kind: str):
    """A job of `kind` for a second owner, in a queue on the store's database."""
    queue = SQLiteJobQueue(store.db)
    owner = store.db.ensure_owner("ada")
    if kind == "generate":
        return queue.submit(RECIPE, owner_id=owner)
    if kind == "upscale":
        ref = keep_input(engine.home.root, Image.new("RGB", (32, 24), (200, 40, 10)))
        return queue.submit(RECIPE, owner_id=owner, kind="upscale", params={"image": ref, "scale": 2.0, "infotext": "a cat"})
    if kind == "explain":
        return queue.submit(RECIPE, owner_id=owner, kind="explain", params={"image_id": None, "attention": True})
    if kind == "compare":
        return queue.submit(RECIPE, owner_id=owner, kind="compare", params={"x": "cfg_scale=3,7", "y": "seed=1"})
    recipes = [RECIPE, RECIPE.model_copy(update={"prompt": "a cat on a roof", "seed": 5})]
    return queue.submit(RECIPE, owner_id=owner, kind="panels",
                        params={"recipes": [r.model_dump(mode="json") for r in recipes], "share": 0.5})


@pytest.mark.parametrize("kind", ["generate", "upscale", "explain", "compare", "panels"])
def test_every_task_kind_writes_only_through_the_result_store(engine, store, kind):
    """The task runs on the engine of one home; the worker's result store writes into another. Nothing of the
    job's output lands in the engine's home or database: it all arrives, with the job's owner, through the store."""
    job = submit(engine, store, kind)
    before, rows_before = tree(engine.home.outputs), len(engine.library.db.list_images(limit=10_000, include_deleted=True))
    worker = Worker(SQLiteJobQueue(store.db), engine, EventBus(), results=store)
    worker.run(worker.queue.claim(timeout=0))
    done = worker.queue.get(job.id)
    assert done.status == "done", done.error
    assert tree(engine.home.outputs) == before, "a task wrote into the home"
    assert len(engine.library.db.list_images(limit=10_000, include_deleted=True)) == rows_before, "a task wrote into the database"
    assert leftovers(store.outputs) == []

    result = done.result
    if kind in ("generate", "upscale", "panels"):
        count = 2 if kind == "panels" else 1
        assert len(result["images"]) == len(result["infotexts"]) == len(result["seeds"]) == count
        folder = store.outputs / f"{'extras' if kind == 'upscale' else 'txt2img'}-images" / date.today().isoformat()
        for number, (image_id, infotext) in enumerate(zip(result["images"], result["infotexts"]), 1):
            row = store.db.get_image(image_id)
            assert row.owner_id == job.owner_id and row.infotext == infotext
            assert Path(row.path).parent == folder and Path(row.path).name.startswith(f"{number:05d}-")
            saved = Image.open(row.path)
            assert saved.text["parameters"] == infotext
            assert Recipe.from_json(saved.text["localdiffusion"]).seed == Recipe.from_json(row.recipe_json).seed
            assert (row.width, row.height) == saved.size
        if kind == "upscale":
            assert (result["width"], result["height"]) == (64, 48) == saved.size
        if kind == "panels":
            assert result["seeds"] == [1, 5] and result["kept_bytes"] > 0
    else:
        name = "explanations" if kind == "explain" else "compares"
        assert result["folder"] == f"{name}/job-{job.id}"
        folder = store.outputs / result["folder"]
        assert sorted(result["files"]) == sorted(tree(folder))
        summary = json.loads((folder / ("explain.json" if kind == "explain" else "compare.json")).read_text())
        if kind == "explain":
            assert summary["files"] == result["files"] and result["reused"] is False and "attention" in summary
        else:
            assert result["grid"] == "grid.png" and len(summary["cells"]) == 2 and result["engine_calls"] >= 1


def test_an_explanation_that_covers_the_request_is_reused_through_the_store(engine, store):
    queue = SQLiteJobQueue(store.db)
    worker = Worker(queue, engine, EventBus(), results=store)
    owner = store.db.ensure_owner("ada")
    first = queue.submit(RECIPE, owner_id=owner, kind="explain", params={"image_id": 42, "attention": False})
    worker.run(queue.claim(timeout=0))
    made = queue.get(first.id).result
    assert made["folder"] == "explanations/42" and made["reused"] is False and "explain.json" in made["files"]
    summary = store.outputs / "explanations" / "42" / "explain.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "marker": 1}))

    again = queue.submit(RECIPE, owner_id=owner, kind="explain", params={"image_id": 42, "attention": False})
    worker.run(queue.claim(timeout=0))
    reused = queue.get(again.id).result
    assert reused == {**made, "reused": True}
    assert json.loads(summary.read_text())["marker"] == 1, "a reused explanation is not rewritten"


def png(recipe: Recipe, colour=(1, 2, 3)) -> ImageArtefact:
    return ImageArtefact.of(Image.new("RGB", (16, 8), colour), recipe, f"a cat, Seed: {recipe.seed}", "txt2img", "abc123")


def test_the_store_saves_image_bytes_as_given_with_the_owner_and_the_ids_first(store):
    owner = store.db.ensure_owner("ada")
    images = [png(RECIPE), png(RECIPE.model_copy(update={"seed": 7}), (9, 9, 9))]
    result = store.save(TaskOutput({"infotexts": ["x", "y"], "seeds": [1, 7]}, images), owner_id=owner)
    assert list(result) == ["images", "infotexts", "seeds"]
    for image_id, artefact in zip(result["images"], images):
        row = store.db.get_image(image_id)
        assert Path(row.path).read_bytes() == artefact.png
        assert (row.owner_id, row.model_hash, row.width, row.height) == (owner, "abc123", 16, 8)
    assert [Path(store.db.get_image(i).path).name for i in result["images"]] == ["00001-1.png", "00002-7.png"]
    assert store.save(TaskOutput({"echo": 1}), owner_id=owner) == {"echo": 1}


def test_the_store_replaces_a_folder_whole_and_a_failed_write_keeps_the_older_one(store, monkeypatch):
    from localdiffusion.jobs import results

    store.save(TaskOutput({}, [FileArtefact("old.png", b"old"), FileArtefact("timeline/a.png", b"a")], "explanations/3"), None)
    folder = store.outputs / "explanations" / "3"
    store.save(TaskOutput({}, [FileArtefact("timeline/b.png", b"b"), FileArtefact("explain.json", b"{}")], "explanations/3"), None)
    assert tree(folder).keys() == {"timeline/b.png", "explain.json"}, "no file of the older explanation lingers"

    real = results.write_atomic

    def fail_on_json(target, write):
        if target.name == "explain.json":
            raise OSError("disk full")
        return real(target, write)

    monkeypatch.setattr(results, "write_atomic", fail_on_json)
    with pytest.raises(OSError):
        store.save_files("explanations/3", [FileArtefact("new.png", b"new"), FileArtefact("explain.json", b"{}")])
    assert tree(folder).keys() == {"timeline/b.png", "explain.json"} and (folder / "explain.json").read_bytes() == b"{}"
    assert leftovers(store.outputs) == []


@pytest.mark.parametrize("name", ["../escape", "/abs/path", "a//b", "a/./b", "a\\b", "", "C:/x"])
def test_the_store_refuses_names_that_leave_the_output_folder(store, name):
    with pytest.raises(ValueError):
        store.save_files("compares/job-1", [FileArtefact(name, b"x")])
    with pytest.raises(ValueError):
        store.save_files(name, [])
    assert not (store.outputs.parent / "escape").exists()


def test_named_files_without_a_folder_are_a_bug_of_the_task(store):
    with pytest.raises(ValueError, match="folder"):
        store.save(TaskOutput({}, [FileArtefact("a.png", b"a")]), None)
