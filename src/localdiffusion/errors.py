"""Errors a person may see.

Every error raised for a person carries one clear sentence that names the bad value and
what would be allowed. The CLI prints it and exits non-zero; the HTTP API answers 4xx.
"""

from __future__ import annotations


class LocalDiffusionError(Exception):
    """An error whose message is meant for a person: one sentence, no traceback."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class BadInput(LocalDiffusionError):
    """A value the user gave cannot be used (size, sampler, image, mask, ...)."""


class ModelNotFound(LocalDiffusionError):
    """A model named by the user (or by a recipe) is not in the library."""


class UnsupportedModel(LocalDiffusionError):
    """A file is not a Stable Diffusion model we can load, or loading it is refused."""


class Cancelled(LocalDiffusionError):
    """A generation was cancelled by the user."""


class OfflineError(LocalDiffusionError):
    """An action needs the network and it could not be reached."""


def closest(value: str, allowed: list[str], n: int = 3) -> list[str]:
    """The few allowed names closest to `value`, for 'did you mean' sentences."""
    import difflib

    lowered = {a.lower(): a for a in allowed}
    hits = difflib.get_close_matches(value.lower(), list(lowered), n=n, cutoff=0.4)
    return [lowered[h] for h in hits]


def one_of(allowed: list[str], limit: int = 12) -> str:
    """'a, b or c' for an error sentence, cut to `limit` names."""
    names = [f"'{a}'" for a in allowed[:limit]]
    if len(allowed) > limit:
        names.append(f"{len(allowed) - limit} more")
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]
