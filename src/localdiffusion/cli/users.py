"""`localdiffusion users add/import/list/passwd/remove`: the accounts of a class.

With no account in the home the studio has one local owner and needs no sign-in; the first account turns
sign-in on for every address (see server/accounts.py). Passwords are hashed (argon2) before they are kept:
a generated one is printed once, here, and never again.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import socket
from pathlib import Path
from typing import Optional

import typer

from localdiffusion.cli.common import HomeOption, app, home_from, out
from localdiffusion.errors import BadInput
from localdiffusion.store.accounts import ROLES, Accounts, readable_password
from localdiffusion.store.db import Database
from localdiffusion.store.files import write_atomic

users_app = typer.Typer(help="Accounts for a class: add, import a roster, list, change passwords, remove.",
                        no_args_is_help=True)
app.add_typer(users_app, name="users")

ROLE_HELP = f"{' or '.join(ROLES)} (facilitators see and manage everyone's work)."


def say(text: str) -> None:
    out.print(text, highlight=False, soft_wrap=True, markup=False)


def default_address(port: int = 7860) -> str:
    """Where participants open the studio when it is served for other machines (`serve --host 0.0.0.0`)."""
    return f"http://{socket.gethostname()}:{port}/"


@users_app.command("add")
def add(
    name: str = typer.Argument(..., help="The user name (letters, digits, '.', '_' or '-')."),
    role: str = typer.Option("participant", "--role", help=ROLE_HELP),
    password: Optional[str] = typer.Option(None, "--password", help="The password (at least 8 characters); left out, a readable one is made and printed once."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Add an account. The first one turns sign-in on: from then on everyone signs in, on every address."""
    with Database(home_from(home).db_path) as db:
        accounts = Accounts(db)
        first = not accounts.enabled()
        secret = password or readable_password()
        user = accounts.add(name, secret, role)
    if password is None:
        say(f"Added {user.role} '{user.name}' with the password: {secret}")
    else:
        say(f"Added {user.role} '{user.name}'.")
    if first:
        say("This is the first account: the studio now asks everyone to sign in.")


def read_roster(path: Path) -> list[tuple[str, str, Optional[str]]]:
    """(name, role, password or None) per line of a roster CSV with the header name[,role][,password]."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise BadInput(f"Cannot read the roster {path} ({e.strerror or e}).", field="roster") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise BadInput(f"The roster {path} is empty; its first line is the header name[,role][,password].", field="roster")
    header = [cell.strip().lower() for cell in rows[0]]
    allowed = ("name", "role", "password")
    if not header or header[0] != "name" or any(h not in allowed for h in header) or len(set(header)) != len(header):
        raise BadInput(f"The roster's header is '{','.join(rows[0])[:80]}'; it must be name, then role and/or password "
                       f"(for example: name,role,password).", field="roster")
    entries = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) > len(header):
            raise BadInput(f"Line {number} of the roster has {len(row)} values, more than the header's {len(header)}.",
                           field="roster")
        values = dict(zip(header, (cell.strip() for cell in row)))
        entries.append((values["name"], values.get("role") or "participant", values.get("password") or None))
    return entries


@users_app.command("import")
def import_roster(
    roster: Path = typer.Argument(..., help="A CSV file with the header name[,role][,password]."),
    cards: Optional[Path] = typer.Option(None, "--cards", help="Also write a printable PDF of login cards (name, password, address and its QR code)."),
    address: Optional[str] = typer.Option(None, "--address", help="The studio's address printed on the cards (default: http://THIS-MACHINE:7860/)."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Create the roster's missing accounts and print each new name and password (once)."""
    entries = read_roster(roster)
    made: list[tuple[str, str, str]] = []
    with Database(home_from(home).db_path) as db:
        accounts = Accounts(db)
        for number, (name, role, given) in enumerate(entries, start=2):
            if accounts.get(name) is not None:
                say(f"Kept '{name}': the account exists (its password is unchanged).")
                continue
            secret = given or readable_password()
            try:
                user = accounts.add(name, secret, role)
            except BadInput as e:
                raise BadInput(f"Line {number} of the roster: {e.message}", field=e.field) from None
            made.append((user.name, user.role, secret))
            typer.echo(f"{user.name},{user.role},{secret}")  # as the roster's lines: name,role,password
    say(f"Added {len(made)} account{'' if len(made) == 1 else 's'}.")
    if cards is not None:
        data = login_cards_pdf([(name, password) for name, _, password in made], address or default_address())
        write_atomic(cards, lambda f: f.write(data))
        say(f"Wrote {len(made)} login card{'' if len(made) == 1 else 's'} to {cards}.")


def login_cards_pdf(entries: list[tuple[str, str]], address: str) -> bytes:
    """A4 pages of login cards, eight a page (two columns, four rows, with cut lines): the name, the password,
    the address as text and as a QR code."""
    import segno
    from fpdf import FPDF

    pdf = FPDF(format="A4", unit="mm")
    pdf.set_auto_page_break(False)
    pdf.set_creator("Local Diffusion")
    qr = io.BytesIO()
    segno.make(address, error="m").save(qr, kind="png", scale=8, border=2)
    card_w, card_h, left, top = 95.0, 68.0, 10.0, 12.5
    for i, (name, password) in enumerate(entries):
        if i % 8 == 0:
            pdf.add_page()
        x, y = left + (i % 2) * card_w, top + (i % 8 // 2) * card_h
        pdf.set_draw_color(180, 180, 180)
        pdf.set_dash_pattern(dash=1, gap=1)
        pdf.rect(x, y, card_w, card_h)
        pdf.set_dash_pattern()
        pdf.set_xy(x + 5, y + 6)
        pdf.set_font("Helvetica", "B", 13)
        pdf.cell(55, 7, "Local Diffusion")
        # the name beside the QR code; the password and the address below it, across the card
        rows = ((18, 52, "Name", name, 12), (38, 85, "Password", password, 11), (52, 85, "Open", address, 9))
        for top_mm, width, label, value, size in rows:
            pdf.set_xy(x + 5, y + top_mm)
            pdf.set_font("Helvetica", "", 8)
            pdf.cell(width, 4, label)
            pdf.set_xy(x + 5, y + top_mm + 4)
            pdf.set_font("Courier", "B", size)
            pdf.cell(width, 6, value)
        qr.seek(0)
        pdf.image(qr, x + card_w - 33, y + 5, w=28, h=28)
    if not entries:
        pdf.add_page()
    return bytes(pdf.output())


@users_app.command("list")
def list_users(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    home: Optional[Path] = HomeOption,
) -> None:
    """The accounts: name, role, whether frozen."""
    with Database(home_from(home).db_path) as db:
        users = Accounts(db).list()
    if as_json:
        typer.echo(json.dumps([{"name": u.name, "role": u.role, "frozen": u.frozen, "created_at": u.created_at}
                               for u in users], indent=2))
        return
    if not users:
        say("No accounts: the studio has one local owner and asks nobody to sign in. Add one with 'localdiffusion users add NAME'.")
    for user in users:
        typer.echo(f"{user.name}\t{user.role}{'  (frozen)' if user.frozen else ''}")


@users_app.command("passwd")
def passwd(
    name: str = typer.Argument(..., help="The user name."),
    password: Optional[str] = typer.Option(None, "--password", help="The new password; left out, a readable one is made and printed once."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Give a user a new password; their signed-in sessions end (their API tokens stay)."""
    with Database(home_from(home).db_path) as db:
        secret = password or readable_password()
        Accounts(db).set_password(name, secret)
    say(f"New password for '{name}': {secret}" if password is None else f"Changed the password of '{name}'.")


@users_app.command("remove")
def remove(
    name: str = typer.Argument(..., help="The user name."),
    delete_work: bool = typer.Option(False, "--delete-work", help="Also delete their images and comics from disk."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Remove an account (sessions and API tokens too). Their images stay on disk unless --delete-work."""
    home_folder = home_from(home)
    with Database(home_folder.db_path) as db:
        user = Accounts(db).remove(name)
        if not delete_work:
            say(f"Removed '{user.name}'; their work stays in {home_folder.outputs}.")
            return
        images, comics = delete_owned_work(db, home_folder.root, user.owner_id)
    say(f"Removed '{user.name}' and deleted {images} image{'' if images == 1 else 's'} and "
        f"{comics} comic{'' if comics == 1 else 's'}.")


def delete_owned_work(db: Database, home_root: Path, owner_id: int) -> tuple[int, int]:
    """Delete an owner's images (files and rows) and comic projects (rows and folders): (images, comics)."""
    images = db.list_images(owner_id, 0, 1_000_000_000, include_deleted=True)
    for row in images:
        Path(row.path).unlink(missing_ok=True)
    comics = [project_id for (project_id,) in db.query("SELECT id FROM comics WHERE owner_id = ?", (owner_id,))]
    with db.transaction() as conn:
        conn.execute("DELETE FROM images WHERE owner_id = ?", (owner_id,))
        conn.execute("DELETE FROM comics WHERE owner_id = ?", (owner_id,))
    for project_id in comics:
        shutil.rmtree(Path(home_root) / "comics" / project_id, ignore_errors=True)
    return len(images), len(comics)
