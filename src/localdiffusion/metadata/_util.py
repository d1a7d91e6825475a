"""Small helpers shared by the readers."""

from __future__ import annotations

import json
from typing import Any


def as_text(value: Any) -> str:
    """A setting's value as text for `extra`: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def load_json_object(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def to_int(value: Any) -> int | None:
    """An integer setting; numbers stored as strings (Fooocus seeds) count, booleans do not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def split_bracket_negative(text: str) -> tuple[str, str]:
    """InvokeAI 2's prompt syntax: `[...]` groups are the negative prompt.

    'a cat [blurry, dark]' -> ('a cat', 'blurry, dark').
    """
    positive, negative, depth, group = [], [], 0, []
    for ch in text:
        if ch == "[":
            if depth:
                group.append(ch)
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
            if depth:
                group.append(ch)
            else:
                negative.append("".join(group).strip())
                group = []
        elif depth:
            group.append(ch)
        else:
            positive.append(ch)
    return " ".join("".join(positive).split()), ", ".join(g for g in negative if g)
