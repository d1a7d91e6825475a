"""Where comic projects live, behind one interface (`ComicStore`), and the single-file archive to share.

- `HomeComics`, the studio's: a row per project in the home's database (its JSON, owner and a version
  that every save moves on) and its pictures as files, `HOME/comics/<project id>/assets/<panel>-<candidate>.png`.
  Project folders from before the database (`HOME/comics/<id>/project.json`) are imported on first open.
- `FolderComics`, the CLI's: one plain folder with `project.json` and `assets/` (`comic render -o DIR`
  makes `DIR/project/`, `comic new FOLDER`); it keeps no version, as one command writes it.

Asset references in the project are relative paths under the folder, so a folder (or an archive)
can be moved or shared and still opens.
"""

from __future__ import annotations

import io
import json
import sqlite3
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from pydantic import ValidationError

from localdiffusion.comic.model import ASSETS, Project, check_asset
from localdiffusion.errors import BadInput, LocalDiffusionError
from localdiffusion.store.db import ComicFields, ComicTable, Database
from localdiffusion.store.files import write_atomic, write_text_atomic

PROJECT_FILE = "project.json"
ARCHIVE_SUFFIXES = (".ldcomic", ".zip")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so the same project always gives the same archive bytes
MAX_ARCHIVE_BYTES = 2 * 2**30


def comics_dir(home_root: Path) -> Path:
    return Path(home_root) / "comics"


def project_folder(home_root: Path, project_id: str) -> Path:
    if not project_id.isalnum():
        raise BadInput(f"The project id '{project_id[:40]}' is not valid; ids are letters and digits only.", field="project")
    return comics_dir(home_root) / project_id


def save_project(project: Project, folder: Path) -> Path:
    """Write `project.json` atomically (assets are written as they are made; pictures from the project's
    `assets_source`, a story's folder, are copied in if the folder lacks them)."""
    folder = Path(folder)
    copy_sources(project, folder)
    return write_text_atomic(folder / PROJECT_FILE, project_json(project))


def project_json(project: Project) -> str:
    """The project as `project.json` holds it (and the database row, and an archive)."""
    return project.model_dump_json(indent=2)


def copy_sources(project: Project, folder: Path) -> None:
    """Make the assets folder and copy in the pictures from the project's `assets_source` it lacks."""
    (folder / ASSETS).mkdir(parents=True, exist_ok=True)
    source = project.assets_source
    for ref in sorted({c.reference_image for c in project.characters if c.reference_image}) if source else []:
        if not (folder / ref).exists():
            data = asset_path(source, ref, "reference_image").read_bytes()
            write_atomic(asset_path(folder, ref, "reference_image"), lambda f, d=data: f.write(d))


def open_project(folder: Path) -> Project:
    path = Path(folder) / PROJECT_FILE
    if not path.is_file():
        raise BadInput(f"The folder '{folder}' holds no {PROJECT_FILE}; give the folder of a saved comic project.", field="project")
    try:
        return Project.model_validate(json.loads(path.read_text("utf-8")))
    except (ValueError, ValidationError) as e:
        raise BadInput(f"The project file {path} is not valid ({_first_error(e)}); fix it or restore a backup.", field="project") from None


def _first_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        first = e.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(e).splitlines()[0]


def asset_path(folder: Path, ref: str, field: str = "image") -> Path:
    """The file an asset reference names (see `check_asset`), refused when it would leave the project's
    assets folder, through a link as well."""
    check_asset(ref, field)
    root = (Path(folder) / ASSETS).resolve()
    path = (Path(folder) / ref).resolve()
    if not path.is_relative_to(root):
        raise BadInput(f"The asset '{ref[:80]}' leads outside the project's {ASSETS}/ folder; it is refused.", field=field)
    return path


def archive_bytes(folder: Path, saved_json: str | None = None) -> bytes:
    """The project as a zip: `project.json` and every file under the folder's `assets/`, in a fixed order.
    `saved_json` is the project's JSON where it is kept elsewhere (a database row); otherwise the folder's
    `project.json` is packed as it is."""
    folder = Path(folder)
    if saved_json is None:
        open_project(folder)  # refuse to pack something that would not open
        saved_json = (folder / PROJECT_FILE).read_text("utf-8")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        members = [(PROJECT_FILE, saved_json.encode("utf-8")),
                   *((p.relative_to(folder).as_posix(), p.read_bytes())
                     for p in sorted(p for p in (folder / ASSETS).rglob("*") if p.is_file()))]
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buffer.getvalue()


def export_archive(folder: Path, target: Path) -> Path:
    target = Path(target)
    if target.suffix.lower() not in ARCHIVE_SUFFIXES:
        raise BadInput(f"The archive name '{target.name}' must end in .ldcomic or .zip.", field="target")
    data = archive_bytes(folder)
    return write_atomic(target, lambda f: f.write(data))


def _safe_member(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name and ":" not in name \
        and (name == PROJECT_FILE or path.parts[0] == ASSETS)


def import_archive(archive: Path, folder: Path) -> Project:
    """Unpack a shared project archive into `folder` (which must not hold a project yet) and open it.
    Members outside `project.json` and `assets/`, or with paths that would escape the folder, are refused."""
    archive, folder = Path(archive), Path(folder)
    if (folder / PROJECT_FILE).exists():
        raise BadInput(f"The folder '{folder}' already holds a project; import into a new folder.", field="folder")
    try:
        z = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise BadInput(f"The file '{archive.name}' is not a comic archive ({e}); give a .ldcomic or .zip made by 'comic export'.") from None
    with z:
        members = [m for m in z.infolist() if not m.is_dir()]
        bad = next((m.filename for m in members if not _safe_member(m.filename)), None)
        if bad is not None:
            raise BadInput(f"The archive member '{bad[:80]}' is outside project.json and assets/; the archive is refused.", field="archive")
        if PROJECT_FILE not in {m.filename for m in members}:
            raise BadInput(f"The archive '{archive.name}' holds no {PROJECT_FILE}; it is not a comic project.", field="archive")
        if sum(m.file_size for m in members) > MAX_ARCHIVE_BYTES:
            raise BadInput(f"The archive '{archive.name}' unpacks to more than 2 GiB; it is refused.", field="archive")
        try:
            project = Project.model_validate(json.loads(z.read(PROJECT_FILE)))
        except (ValueError, ValidationError) as e:
            raise BadInput(f"The archive's {PROJECT_FILE} is not valid ({_first_error(e)}).", field="archive") from None
        for m in members:
            target = folder / m.filename
            data = z.read(m)
            write_atomic(target, lambda f, d=data: f.write(d))
    return project


# -- stores -------------------------------------------------------------------------------------

STALE = "This comic was changed in another tab or by another person since you opened it; reload it to see the changes."
LEGACY_SUFFIX = ".imported"  # a home folder's project.json becomes project.json.imported once its row exists


class StaleVersion(LocalDiffusionError):
    """A save named a version of the project that is no longer the saved one."""

    def __init__(self) -> None:
        super().__init__(STALE, field="version")


@dataclass
class Stored:
    project: Project
    version: int  # moved on by every save; 0 in a folder, which keeps none
    folder: Path  # where its assets/ live


@dataclass(frozen=True)
class Summary:
    """What a list of projects shows."""

    id: str
    title: str
    authors: list[str]
    pages: int
    panels: int
    created: str
    class_comic: bool = False


class ComicStore(Protocol):
    """Where comic projects are kept: read one, list one owner's, save one (refused with `StaleVersion` when
    `version` is given and is no longer the saved one), the folder of its pictures, its archive."""

    def get(self, project_id: str) -> Stored | None: ...

    def summaries(self, owner_id: int | None = None) -> list[Summary]: ...

    def save(self, project: Project, version: int | None = None) -> int: ...

    def folder(self, project_id: str) -> Path: ...

    def archive(self, project_id: str) -> bytes: ...


def summary_of(project: Project) -> Summary:
    return Summary(project.id, project.title, list(project.authors), len(project.pages),
                   sum(len(page.panels) for page in project.pages), project.created)


class FolderComics:
    """One project in a plain folder (`project.json` and `assets/`), as the CLI writes and reads it."""

    def __init__(self, folder: Path) -> None:
        self.root = Path(folder)

    def get(self, project_id: str) -> Stored | None:
        if not (self.root / PROJECT_FILE).is_file():
            return None
        project = open_project(self.root)
        return Stored(project, 0, self.root) if project.id == project_id else None

    def summaries(self, owner_id: int | None = None) -> list[Summary]:
        if not (self.root / PROJECT_FILE).is_file():
            return []
        project = open_project(self.root)
        return [summary_of(project)] if owner_id is None or project.owner_id == owner_id else []

    def save(self, project: Project, version: int | None = None) -> int:
        save_project(project, self.root)
        return 0

    def folder(self, project_id: str) -> Path:
        return self.root

    def archive(self, project_id: str) -> bytes:
        return archive_bytes(self.root)


def _fields(project: Project) -> ComicFields:
    return ComicFields(title=project.title, created=project.created, pages=len(project.pages),
                       panels=sum(len(page.panels) for page in project.pages), authors=list(project.authors),
                       project_json=project_json(project), class_comic=project.class_comic)


class HomeComics:
    """The home's projects: a row each in the database, pictures under `HOME/comics/<id>/assets/`.
    The row's owner is the project's owner (a project without one is saved as the database's local owner)."""

    def __init__(self, db: Database, home_root: Path) -> None:
        self.db, self.table, self.root = db, ComicTable(db), Path(home_root)

    @classmethod
    def open(cls, db: Database, home_root: Path) -> "HomeComics":
        """The store, with the project folders from before the database imported."""
        store = cls(db, home_root)
        store.import_folders()
        return store

    def get(self, project_id: str) -> Stored | None:
        row = self.table.get(project_id) if project_id.isalnum() else None
        if row is None:
            return None
        try:
            project = Project.model_validate_json(row.project_json)
        except ValidationError as e:
            raise BadInput(f"The saved comic '{project_id}' is not valid ({_first_error(e)}); restore it from an "
                           "archive.", field="project") from None
        project.owner_id = row.owner_id
        return Stored(project, row.version, self.folder(project_id))

    def summaries(self, owner_id: int | None = None, *, with_class: bool = False) -> list[Summary]:
        """By title, from the rows alone; `with_class` adds the class comics."""
        rows = sorted(self.table.owned(owner_id, with_class=with_class), key=lambda r: r.title.lower())
        return [Summary(r.id, r.title, r.authors, r.pages, r.panels, r.created, r.class_comic) for r in rows]

    def save(self, project: Project, version: int | None = None, *, bump: bool = True) -> int:
        """Save and return the new version; a new project starts at 1. With `version`, a project saved by
        someone else since that version is refused (`StaleVersion`) and nothing is written. `bump=False`
        keeps the version: for the server's own bookkeeping (finished candidates brought in), which no
        tab's edit can conflict with."""
        folder = self.folder(project.id)
        fields = _fields(project)
        if version is None and self.table.get(project.id) is None:
            owner = self.db.local_owner_id if project.owner_id is None else project.owner_id
            if self.table.add(project.id, owner, fields, if_absent=True):
                copy_sources(project, folder)
                return 1
        saved = self.table.update(project.id, fields, version, bump=bump)
        if saved is None:
            raise StaleVersion()
        copy_sources(project, folder)
        return saved

    def folder(self, project_id: str) -> Path:
        return project_folder(self.root, project_id)

    def archive(self, project_id: str) -> bytes:
        row = self.table.get(project_id)
        if row is None:
            raise BadInput(f"There is no comic project '{project_id[:40]}'.", field="project")
        return archive_bytes(self.folder(project_id), row.project_json)

    def import_folders(self) -> list[str]:
        """Give every `HOME/comics/<id>/project.json` from before the database a row (its folder keeps the
        assets; the file is renamed `project.json.imported`, so it is imported once). A file that does not
        open, or names an owner the database does not know, stays as it is. The ids imported."""
        imported = []
        root = comics_dir(self.root)
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            legacy = folder / PROJECT_FILE
            if not folder.name.isalnum() or not legacy.is_file():
                continue
            try:
                project = open_project(folder).model_copy(update={"id": folder.name})
            except BadInput:
                continue
            owner = self.db.local_owner_id if project.owner_id is None else project.owner_id
            try:
                added = self.table.add(project.id, owner, _fields(project.model_copy(update={"owner_id": owner})),
                                       if_absent=True)
            except sqlite3.IntegrityError:  # an owner this database does not have
                continue
            legacy.replace(legacy.with_name(PROJECT_FILE + LEGACY_SUFFIX))
            if added:
                imported.append(project.id)
        return imported
