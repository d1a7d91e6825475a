"""Where comic projects are kept: rows in the home's database (`HomeComics`), a plain folder for the CLI
(`FolderComics`), the same archive from both, and the project folders from before the database imported."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from localdiffusion.comic import Project, new_page, save_project
from localdiffusion.comic.storage import (
    PROJECT_FILE, STALE, FolderComics, HomeComics, StaleVersion, archive_bytes, comics_dir, open_project,
)
from localdiffusion.store.db import Database


@pytest.fixture
def db(tmp_path):
    with Database(tmp_path / "db.sqlite") as database:
        yield database


def comic(title: str = "Rain", owner_id: int | None = None) -> Project:
    project = Project(title=title, authors=["Ann"], owner_id=owner_id)
    project.pages.append(new_page(project, "grid-2x2"))
    return project


def picture(folder: Path, name: str = "assets/upload-a.png") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_a_home_project_is_a_row_with_a_version_and_a_stale_save_is_refused(db, tmp_path):
    store = HomeComics(db, tmp_path)
    project = comic(owner_id=db.local_owner_id)
    assert store.save(project) == 1
    assert not (store.folder(project.id) / PROJECT_FILE).exists()  # the row holds it; the folder holds pictures
    stored = store.get(project.id)
    assert stored.project == project and stored.version == 1 and stored.folder == comics_dir(tmp_path) / project.id

    first, second = store.get(project.id), store.get(project.id)  # two tabs open it
    first.project.title = "Rain, first tab"
    assert store.save(first.project, first.version) == 2
    second.project.title = "Rain, second tab"
    with pytest.raises(StaleVersion) as refused:
        store.save(second.project, second.version)
    assert refused.value.message == STALE and refused.value.field == "version"
    assert store.get(project.id).project.title == "Rain, first tab" and store.get(project.id).version == 2
    assert store.save(second.project) == 3  # without a version: saved over, as before versions


def test_listing_reads_rows_only_and_by_owner(db, tmp_path):
    store = HomeComics(db, tmp_path)
    other = db.ensure_owner("someone else")
    for project in (comic("beta", db.local_owner_id), comic("Alpha", db.local_owner_id), comic("Theirs", other)):
        store.save(project)
    for folder in comics_dir(tmp_path).iterdir():  # no file is read to list them
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
    summaries = store.summaries(db.local_owner_id)
    assert [s.title for s in summaries] == ["Alpha", "beta"]
    assert (summaries[0].pages, summaries[0].panels, summaries[0].authors) == (1, 4, ["Ann"])
    assert store.get(store.summaries(other)[0].id).project.owner_id == other


def test_the_archive_is_the_same_from_a_row_as_from_a_folder(db, tmp_path):
    project = comic(owner_id=db.local_owner_id)
    home = HomeComics(db, tmp_path / "home")
    home.save(project)
    folder = FolderComics(tmp_path / "cli" / "project")
    folder.save(project)
    for root in (home.folder(project.id), folder.folder(project.id)):
        picture(root)
    archive = home.archive(project.id)
    assert archive == folder.archive(project.id) == archive_bytes(folder.root)
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        assert z.namelist() == [PROJECT_FILE, "assets/upload-a.png"]
        assert Project.model_validate_json(z.read(PROJECT_FILE)) == project


def test_a_folder_keeps_no_version_and_writes_project_json(tmp_path):
    store = FolderComics(tmp_path / "project")
    project = comic()
    assert store.get(project.id) is None and store.summaries() == []
    assert store.save(project) == 0 and store.save(project, version=7) == 0
    assert open_project(tmp_path / "project") == project == store.get(project.id).project
    assert store.get("someotherid") is None and [s.id for s in store.summaries()] == [project.id]


def test_project_folders_from_before_the_database_are_imported_once(db, tmp_path):
    root = comics_dir(tmp_path)
    mine = comic("Mine", db.local_owner_id)
    save_project(mine, root / mine.id)
    data = picture(root / mine.id, f"assets/{mine.pages[0].panels[0].id}-c1.png")
    unowned = comic("Made by the CLI")  # no owner: it becomes the local owner's
    save_project(unowned, root / unowned.id)
    strangers = comic("A stranger's", owner_id=999)  # an owner this database does not know: left alone
    save_project(strangers, root / strangers.id)
    (root / "broken").mkdir()
    (root / "broken" / PROJECT_FILE).write_text("{ not json")

    store = HomeComics.open(db, tmp_path)
    assert sorted(s.title for s in store.summaries(db.local_owner_id)) == ["Made by the CLI", "Mine"]
    stored = store.get(mine.id)
    assert stored.project == mine and stored.version == 1
    assert (stored.folder / f"assets/{mine.pages[0].panels[0].id}-c1.png").read_bytes() == data
    assert not (root / mine.id / PROJECT_FILE).exists() and (root / mine.id / "project.json.imported").is_file()
    assert (root / strangers.id / PROJECT_FILE).is_file() and (root / "broken" / PROJECT_FILE).is_file()

    stored.project.title = "Mine, edited"
    store.save(stored.project, stored.version)
    assert HomeComics.open(db, tmp_path).import_folders() == []  # the edit stays; nothing is imported again
    assert store.get(mine.id).project.title == "Mine, edited"
