import sqlite3
import threading

import pytest

from localdiffusion.errors import LocalDiffusionError
from localdiffusion.store import db as dbmod
from localdiffusion.store.db import SCHEMA_VERSION, Database


@pytest.fixture
def db(tmp_path):
    with Database(tmp_path / "db.sqlite") as database:
        yield database


def _image(db, prompt, **kw):
    return db.add_image(path=f"outputs/{prompt[:5]}.png", recipe_json="{}", width=64, height=64, prompt=prompt, **kw)


def test_new_database_has_schema_wal_and_local_owner(tmp_path):
    path = tmp_path / "sub" / "db.sqlite"
    with Database(path) as db:
        assert db.schema_version == SCHEMA_VERSION
        assert db.local_owner_id >= 1
        assert db.query("PRAGMA journal_mode")[0][0] == "wal"
        assert db.query("PRAGMA foreign_keys")[0][0] == 1
        owner = db.local_owner_id
    # Reopening neither migrates again nor makes a second local owner.
    with Database(path) as db:
        assert db.local_owner_id == owner
        assert db.query("SELECT COUNT(*) FROM owners")[0][0] == 1


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(LocalDiffusionError, match="newer"):
        Database(path)


def test_migrations_run_forward_from_an_older_version(tmp_path, monkeypatch):
    path = tmp_path / "db.sqlite"
    Database(path).close()
    monkeypatch.setattr(Database, "migrations", [*dbmod.MIGRATIONS, "CREATE TABLE projects (id INTEGER PRIMARY KEY);"])
    with Database(path) as db:
        assert db.schema_version == SCHEMA_VERSION + 1
        assert db._table_exists("projects")


def test_images_round_trip_and_list_newest_first(db):
    first = _image(db, "a red fox in snow", created_at=1.0, model_hash="abcdef1234")
    second = _image(db, "a blue whale", created_at=2.0)
    row = db.get_image(first)
    assert row.prompt == "a red fox in snow" and row.model_hash == "abcdef1234"
    assert row.owner_id == db.local_owner_id and not row.starred and not row.deleted
    assert [r.id for r in db.list_images(db.local_owner_id)] == [second, first]
    assert [r.id for r in db.list_images(db.local_owner_id, offset=1, limit=1)] == [first]
    assert db.get_image(9999) is None


def test_owner_must_exist(db):
    with pytest.raises(sqlite3.IntegrityError):
        _image(db, "x", owner_id=42)


def test_list_images_by_owner_star_and_deleted(db):
    other = db.ensure_owner("alice")
    mine = _image(db, "castle")
    theirs = _image(db, "castle", owner_id=other)
    assert [r.id for r in db.list_images(other)] == [theirs]
    assert {r.id for r in db.list_images(None)} == {mine, theirs}
    db.set_image_flags(mine, starred=True)
    assert [r.id for r in db.list_images(db.local_owner_id, starred=True)] == [mine]
    db.set_image_flags(mine, deleted=True)
    assert db.list_images(db.local_owner_id) == []
    assert [r.id for r in db.list_images(db.local_owner_id, include_deleted=True)] == [mine]


def test_prompt_search_matches_words_and_prefixes(db):
    fox = _image(db, "A red fox, (masterpiece:1.2), snow")
    _image(db, "a blue whale under the sea")
    owner = db.local_owner_id
    assert [r.id for r in db.list_images(owner, query="fox")] == [fox]
    assert [r.id for r in db.list_images(owner, query="FOX snow")] == [fox]
    assert [r.id for r in db.list_images(owner, query="mast")] == [fox]  # prefix
    assert db.list_images(owner, query="fox whale") == []
    # FTS syntax in user text is taken as words, never as a query language.
    assert [r.id for r in db.list_images(owner, query='fox" (*:')] == [fox]
    assert [r.id for r in db.list_images(owner, query='red OR')] == []  # OR is a word here
    assert len(db.list_images(owner, query="  ")) == 2


def test_prompt_search_without_fts(db):
    db.has_fts = False  # the LIKE fallback for SQLite builds without FTS5
    fox = _image(db, "a red fox 100%")
    _image(db, "a whale")
    assert [r.id for r in db.list_images(None, query="fox 100%")] == [fox]


def test_search_index_follows_prompt_edits_and_deletes(db):
    image = _image(db, "a red fox")
    with db.transaction() as conn:
        conn.execute("UPDATE images SET prompt = 'a grey wolf' WHERE id = ?", (image,))
    assert db.list_images(None, query="fox") == []
    assert [r.id for r in db.list_images(None, query="wolf")] == [image]
    with db.transaction() as conn:
        conn.execute("DELETE FROM images WHERE id = ?", (image,))
    assert db.list_images(None, query="wolf") == []


def test_model_paths(db, tmp_path):
    db.register_model_path(tmp_path / "a.safetensors")
    db.register_model_path(tmp_path / "a.safetensors")
    db.register_model_path(tmp_path / "b")
    assert db.registered_model_paths() == [tmp_path / "a.safetensors", tmp_path / "b"]
    db.unregister_model_path(tmp_path / "b")
    assert db.registered_model_paths() == [tmp_path / "a.safetensors"]


def test_hash_cache_is_keyed_by_size_and_mtime(db):
    db.store_hash("/m/x.safetensors", 10, 111, "aa" * 32)
    assert db.cached_hash("/m/x.safetensors", 10, 111) == "aa" * 32
    assert db.cached_hash("/m/x.safetensors", 10, 112) is None
    assert db.cached_hash("/m/x.safetensors", 11, 111) is None
    assert db.cached_hash("/m/x.safetensors", 10, 111, algo="addnet") is None
    db.store_hash("/m/x.safetensors", 10, 112, "bb" * 32)
    assert db.cached_hash("/m/x.safetensors", 10, 112) == "bb" * 32


def test_rollback_on_error(db):
    with pytest.raises(RuntimeError):
        with db.transaction() as conn:
            conn.execute("INSERT INTO model_paths (path, added_at) VALUES ('x', 0)")
            raise RuntimeError
    assert db.registered_model_paths() == []


def test_threads_share_one_database(db):
    missing: list[tuple[int, int]] = []  # an assert inside a thread would be lost: the main thread checks
    errors: list[BaseException] = []

    def work(n):
        try:
            for i in range(20):
                image = _image(db, f"thread {n} image {i}")
                if db.get_image(image) is None:
                    missing.append((n, i))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and missing == []
    assert len(db.list_images(None, limit=1000)) == 80


def test_memory_database():
    with Database(":memory:") as db:
        assert [r.prompt for r in db.list_images(None)] == []
        _image(db, "x")
        assert len(db.list_images(None)) == 1


def test_two_processes_opening_a_new_database_at_once(tmp_path):
    import subprocess
    import sys

    code = f"from localdiffusion.store.db import Database; Database({str(tmp_path / 'db.sqlite')!r}).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(3)]
    assert all(p.wait(timeout=60) == 0 for p in procs), [p.stderr.read() for p in procs]
    with Database(tmp_path / "db.sqlite") as db:
        assert db.schema_version == SCHEMA_VERSION
        assert db.query("SELECT COUNT(*) FROM owners")[0][0] == 1


SAVER = """
import sys, time
from pathlib import Path
from PIL import Image
from localdiffusion.recipe import Recipe
from localdiffusion.store.db import Database
from localdiffusion.store.outputs import save_image

root, who, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
with Database(root / "db.sqlite") as db:
    (root / f"ready-{who}").touch()
    while not (root / "go").exists():
        time.sleep(0.001)
    for i in range(count):
        recipe = Recipe(prompt=f"{who} {i}", seed=7, width=64, height=64)
        save_image(Image.new("RGB", (64, 64), (i, 0, 0)), recipe, recipe.prompt, root / "out", db)
"""


def test_two_processes_saving_into_one_folder_never_share_a_number(tmp_path):
    """Both savers start at the same moment with the same seed, so each name is wanted by both: every image
    must still get its own number and file, complete, and its own database row."""
    import subprocess
    import sys
    import time

    from localdiffusion.metadata.ours import RECIPE_CHUNK
    from localdiffusion.recipe import Recipe

    Database(tmp_path / "db.sqlite").close()
    count = 25
    procs = [subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path), who, str(count)], stderr=subprocess.PIPE)
             for who in ("a", "b")]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{who}").exists() for who in ("a", "b")) and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()
    assert all(p.wait(timeout=120) == 0 for p in procs), [p.stderr.read().decode() for p in procs]

    files = sorted((tmp_path / "out").glob("*.png"))
    assert [f.name for f in files] == [f"{n:05d}-7.png" for n in range(1, 2 * count + 1)]
    from PIL import Image

    prompts = sorted(Recipe.model_validate_json(Image.open(f).text[RECIPE_CHUNK]).prompt for f in files)
    assert prompts == sorted(f"{who} {i}" for who in ("a", "b") for i in range(count))
    assert [p.name for p in (tmp_path / "out").iterdir() if p.suffix != ".png"] == [".localdiffusion-numbering.lock"]
    with Database(tmp_path / "db.sqlite") as db:
        rows = db.list_images(None, limit=1000)
        assert sorted(r.path for r in rows) == sorted(str(f) for f in files)


def test_threads_with_their_own_connections_save_into_one_folder(tmp_path):
    from PIL import Image

    from localdiffusion.recipe import Recipe
    from localdiffusion.store.outputs import save_image

    Database(tmp_path / "db.sqlite").close()
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def work(who):
        try:
            with Database(tmp_path / "db.sqlite") as db:
                start.wait(timeout=60)
                for i in range(10):
                    recipe = Recipe(prompt=f"{who} {i}", seed=3, width=64, height=64)
                    save_image(Image.new("RGB", (64, 64)), recipe, recipe.prompt, tmp_path / "out", db)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(who,)) for who in "xyz"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert names == [f"{n:05d}-3.png" for n in range(1, 31)]


def test_saving_goes_on_after_the_highest_number_and_around_names_it_cannot_take(tmp_path, monkeypatch):
    from PIL import Image

    from localdiffusion.recipe import Recipe
    from localdiffusion.store import outputs

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "00041-1.png").write_bytes(b"from A1111")
    assert outputs.save_image(Image.new("RGB", (8, 8)), Recipe(prompt="x", seed=5), "x", folder)[0].name == "00042-5.png"

    counted = outputs.next_number

    def another_tool_saves_meanwhile(f):
        number = counted(f)
        if number == 43:  # a writer that does not take our lock takes the name between count and publish
            (f / "00043-5.png").write_bytes(b"theirs")
        return number

    monkeypatch.setattr(outputs, "next_number", another_tool_saves_meanwhile)
    path, _ = outputs.save_image(Image.new("RGB", (8, 8)), Recipe(prompt="x", seed=5), "x", folder)
    assert path.name == "00044-5.png" and (folder / "00043-5.png").read_bytes() == b"theirs"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == [outputs.LOCK_NAME]


def _comic_fields(title: str = "A comic", json_text: str = '{"id": "abc"}') -> "dbmod.ComicFields":
    return dbmod.ComicFields(title=title, created="2024-01-01T00:00:00+00:00", pages=2, panels=5, authors=["Ann"],
                             project_json=json_text)


def test_comic_rows_keep_owner_and_a_version_that_every_save_moves_on(db):
    comics = dbmod.ComicTable(db)
    other = db.ensure_owner("someone else")
    assert comics.add("abc", db.local_owner_id, _comic_fields())
    assert not comics.add("abc", other, _comic_fields("Taken"), if_absent=True)  # the first row stays
    assert comics.add("xyz", other, _comic_fields("Theirs"))
    row = comics.get("abc")
    assert (row.owner_id, row.title, row.version, row.pages, row.panels, row.authors, row.project_json) == \
        (db.local_owner_id, "A comic", 1, 2, 5, ["Ann"], '{"id": "abc"}')
    assert [r.id for r in comics.owned(db.local_owner_id)] == ["abc"]
    assert {r.id for r in comics.owned()} == {"abc", "xyz"} and all(r.project_json == "" for r in comics.owned())
    assert comics.update("abc", _comic_fields("Renamed", '{"v": 2}'), version=1) == 2
    assert comics.update("abc", _comic_fields("Stale", '{"v": "stale"}'), version=1) is None  # read at 1, saved at 2
    assert (comics.get("abc").title, comics.get("abc").project_json) == ("Renamed", '{"v": 2}')
    assert comics.update("abc", _comic_fields("Forced"), version=None) == 3
    assert comics.update("nothere", _comic_fields()) is None and comics.get("nothere") is None
    with pytest.raises(sqlite3.IntegrityError):
        comics.add("orphan", 999, _comic_fields())


def test_a_version_3_database_gains_the_comics_table(tmp_path, monkeypatch):
    path = tmp_path / "db.sqlite"
    monkeypatch.setattr(Database, "migrations", dbmod.MIGRATIONS[:3])
    with Database(path) as old:
        assert old.schema_version == 3 and not old._table_exists("comics")
    monkeypatch.undo()
    with Database(path) as db:
        assert db.schema_version == SCHEMA_VERSION >= 4 and db._table_exists("comics")
        assert dbmod.ComicTable(db).add("abc", db.local_owner_id, _comic_fields())
