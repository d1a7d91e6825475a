"""Accounts for a class: users, their passwords, sign-in sessions and personal API tokens.

Accounts are off until the first one exists: then the server asks everyone to sign in (server/accounts.py).
Each user has an owner row (`owners`), so their jobs, images, uploads and comics are theirs. Passwords are
kept as argon2id hashes (argon2-cffi), never in clear; session and API token secrets are random and kept as
SHA-256 digests, so the database alone opens nothing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from localdiffusion.errors import BadInput, one_of
from localdiffusion.store.db import LOCAL_OWNER, Database

ROLES = ("participant", "facilitator")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
MIN_PASSWORD = 8
MAX_PASSWORD = 256
SESSION_DAYS = 30
TOKEN_PREFIX = "ldp_"  # a personal API token; a password never starts with it (see check_password)

# Short words that read aloud and type easily, for generated passwords (3 words and 3 digits: about 34 bits,
# enough behind the sign-in throttle).
WORDS = (
    "acorn amber anchor apple arrow aspen autumn badge bamboo banjo basil beacon berry birch bison blossom "
    "breeze brook cactus candle canyon cedar cherry cloud clover cobalt comet coral cotton crane crystal daisy "
    "delta dune eagle ember fable falcon fern fiddle finch flint forest fossil fox galaxy garnet ginger glacier "
    "harbor hazel heron honey island ivory jade jasmine kayak kettle kiwi lagoon lantern lemon lilac lime lotus "
    "maple marble meadow melon mint mirror moss nectar nova oak ocean olive onyx orbit orchid otter owl palm "
    "panda pebble pepper pine planet plum poppy prairie quartz quill rabbit raven reef river robin ruby saffron "
    "sage salmon sand sapphire sierra silver sparrow spruce star stone summit sun swan tango thistle thunder "
    "tiger topaz tulip tundra valley velvet violet walnut willow wren yarrow zebra zephyr"
).split()


def readable_password() -> str:
    """A password a person can read off a card and type: three words and three digits, e.g. maple-otter-river-482."""
    words = [secrets.choice(WORDS) for _ in range(3)]
    return "-".join(words) + f"-{secrets.randbelow(1000):03d}"


def digest(secret: str) -> str:
    """What the database keeps of a random secret (a session or API token): enough to find it, not to use it."""
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class User:
    id: int
    name: str
    owner_id: int
    role: str
    frozen: bool
    created_at: float
    password_hash: str = ""

    @property
    def public(self) -> dict:
        return {"name": self.name, "role": self.role}


@dataclass(frozen=True)
class ApiToken:
    id: int
    label: str
    created_at: float
    last_used: float | None


_USER_COLUMNS = "id, name, owner_id, role, frozen, created_at, password_hash"


def _user(row: tuple) -> User:
    id_, name, owner_id, role, frozen, created_at, password_hash = row
    return User(id_, name, owner_id, role, bool(frozen), created_at, password_hash)


def check_name(name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise BadInput(f"The user name '{(name or '')[:40]}' is not allowed; use 1 to 32 letters, digits, '.', '_' or '-', "
                       f"starting with a letter or digit.", field="username")
    if name.lower() == LOCAL_OWNER:
        raise BadInput(f"The user name '{name}' is kept for the home's own owner; choose another.", field="username")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise BadInput(f"Unknown role '{role[:40]}'; choose {one_of(list(ROLES))}.", field="role")
    return role


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadInput(f"The password has {len(password)} characters; use {MIN_PASSWORD} to {MAX_PASSWORD}.", field="password")
    if password.startswith(TOKEN_PREFIX):
        raise BadInput(f"A password may not start with '{TOKEN_PREFIX}' (that is how API tokens start); choose another.",
                       field="password")
    return password


class Accounts:
    """The users of one home, over its database. Safe to share between threads (as the Database is)."""

    def __init__(self, db: Database, hasher: PasswordHasher | None = None) -> None:
        self.db = db
        self.hasher = hasher or PasswordHasher()

    # -- users ---------------------------------------------------------------------------

    def enabled(self) -> bool:
        """Whether any account exists (then everyone signs in)."""
        return bool(self.db.query("SELECT 1 FROM users LIMIT 1"))

    def get(self, name: str) -> User | None:
        rows = self.db.query(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))
        return _user(rows[0]) if rows else None

    def by_id(self, user_id: int) -> User | None:
        rows = self.db.query(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return _user(rows[0]) if rows else None

    def list(self) -> list[User]:
        return [_user(r) for r in self.db.query(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name COLLATE NOCASE")]

    def find(self, name: str) -> User:
        user = self.get(name)
        if user is None:
            names = [u.name for u in self.list()]
            raise BadInput(f"There is no user '{name[:40]}'" + (f"; the users are {one_of(names)}." if names else "; add one first."),
                           field="username")
        return user

    def add(self, name: str, password: str, role: str = "participant") -> User:
        """A new account with its own owner row; refused when the name is taken."""
        check_name(name)
        check_role(role)
        check_password(password)
        if self.get(name) is not None:
            raise BadInput(f"There is already a user '{name}'; choose another name.", field="username")
        owner_id = self.db.ensure_owner(name)
        hashed = self.hasher.hash(password)
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO users (name, owner_id, role, password_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                         (name, owner_id, role, hashed, time.time()))
        return self.find(name)

    def set_password(self, name: str, password: str) -> None:
        """A new password; every session of the user ends (their API tokens stay)."""
        user = self.find(name)
        check_password(password)
        with self.db.transaction() as conn:
            conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (self.hasher.hash(password), user.id))
            conn.execute("DELETE FROM sessions WHERE user_id = ?", (user.id,))

    def set_frozen(self, name: str, frozen: bool) -> User:
        user = self.find(name)
        with self.db.transaction() as conn:
            conn.execute("UPDATE users SET frozen = ? WHERE id = ?", (int(frozen), user.id))
        return self.find(name)

    def remove(self, name: str) -> User:
        """Remove the account, its sessions and tokens; its owner row and work stay (see `users remove`), under a
        retired name, so that a later account of the same name starts with an owner row (and work) of its own."""
        user = self.find(name)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM users WHERE id = ?", (user.id,))
            conn.execute("UPDATE owners SET name = ? WHERE id = ?", (f"{user.name} (removed account {user.id})", user.owner_id))
        return user

    def verify_password(self, user: User, password: str) -> bool:
        try:
            return self.hasher.verify(user.password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    # -- sessions ------------------------------------------------------------------------

    def new_session(self, user: User) -> tuple[str, str]:
        """(the session secret for the cookie, its CSRF token)."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE created_at < ?", (time.time() - SESSION_DAYS * 86400,))
            conn.execute("INSERT INTO sessions (token_hash, user_id, csrf, created_at) VALUES (?, ?, ?, ?)",
                         (digest(token), user.id, csrf, time.time()))
        return token, csrf

    def session(self, token: str) -> tuple[User, str] | None:
        """The user and CSRF token of a live session, or None."""
        rows = self.db.query("SELECT user_id, csrf FROM sessions WHERE token_hash = ? AND created_at >= ?",
                             (digest(token), time.time() - SESSION_DAYS * 86400))
        if not rows:
            return None
        user = self.by_id(rows[0][0])
        return (user, rows[0][1]) if user is not None else None

    def end_session(self, token: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (digest(token),))

    # -- personal API tokens ---------------------------------------------------------------

    def new_token(self, user: User, label: str) -> tuple[int, str]:
        """(its id, the token): the token is shown once and kept only as a digest."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(30)
        with self.db.transaction() as conn:
            cur = conn.execute("INSERT INTO api_tokens (user_id, label, token_hash, created_at) VALUES (?, ?, ?, ?)",
                               (user.id, label, digest(token), time.time()))
            return int(cur.lastrowid), token

    def tokens(self, user: User) -> list[ApiToken]:
        rows = self.db.query("SELECT id, label, created_at, last_used FROM api_tokens WHERE user_id = ? ORDER BY id", (user.id,))
        return [ApiToken(*row) for row in rows]

    def delete_token(self, user: User, token_id: int) -> bool:
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM api_tokens WHERE id = ? AND user_id = ?", (token_id, user.id)).rowcount > 0

    def token_user(self, token: str) -> User | None:
        """The user a personal API token belongs to, or None."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        rows = self.db.query("SELECT id, user_id, last_used FROM api_tokens WHERE token_hash = ?", (digest(token),))
        if not rows:
            return None
        token_id, user_id, last_used = rows[0]
        if last_used is None or time.time() - last_used > 60:  # a client asking many times a minute writes once
            with self.db.transaction() as conn:
                conn.execute("UPDATE api_tokens SET last_used = ? WHERE id = ?", (time.time(), token_id))
        return self.by_id(user_id)
