"""Projects on disk: a folder with `project.json` and `assets/`, and a single-file archive to share.

    HOME/comics/<project id>/project.json
                             assets/<panel id>-<candidate id>.png

Asset references in the project are relative paths under the folder, so a folder (or an archive)
can be moved or shared and still opens.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from localdiffusion.comic.model import ASSETS, Project, check_asset
from localdiffusion.errors import BadInput
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
    (folder / ASSETS).mkdir(parents=True, exist_ok=True)
    source = project.assets_source
    for ref in sorted({c.reference_image for c in project.characters if c.reference_image}) if source else []:
        if not (folder / ref).exists():
            data = asset_path(source, ref, "reference_image").read_bytes()
            write_atomic(asset_path(folder, ref, "reference_image"), lambda f, d=data: f.write(d))
    return write_text_atomic(folder / PROJECT_FILE, project.model_dump_json(indent=2))


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


def list_projects(home_root: Path, owner_id: int | None = None) -> list[tuple[Path, Project]]:
    """Saved projects under HOME/comics (one owner's, when given), by title."""
    found = []
    root = comics_dir(home_root)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / PROJECT_FILE).is_file():
            try:
                project = open_project(folder)
            except BadInput:
                continue
            if owner_id is None or project.owner_id == owner_id:
                found.append((folder, project))
    return sorted(found, key=lambda item: item[1].title.lower())


def archive_bytes(folder: Path) -> bytes:
    """The project folder as a zip: `project.json` and every file under `assets/`, in a fixed order."""
    folder = Path(folder)
    open_project(folder)  # refuse to pack something that would not open
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        files = [folder / PROJECT_FILE, *sorted(p for p in (folder / ASSETS).rglob("*") if p.is_file())]
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, path.read_bytes())
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
