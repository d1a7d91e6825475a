"""Wildcards in prompts, as the Dynamic Prompts extension writes them, expanded per image with its seed.

- `{red|green|blue}` picks one variant; `{2$$red|green|blue}` picks two different ones, joined by ", ";
- `__colours__` picks one line of `HOME/wildcards/colours.txt` (blank lines and `#` comments skipped);
  `__art/styles__` reads `HOME/wildcards/art/styles.txt`;
- both nest: a variant or a wildcard line may hold more of them.

The choice is a function of the template and the image's seed only, so image i of a batch (which has its own
seed) reproduces alone, and the expanded prompt is what the engine conditions on. A1111's own syntax keeps
its meaning: `[a|b]` (alternation) and `(a:1.2)` are left alone.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from localdiffusion.errors import BadInput

WILDCARD = re.compile(r"__([\w.\-/ ]+?)__")
MAX_DEPTH = 20  # a wildcard file that names itself stops here, with a sentence
SEPARATOR = ", "


def has_wildcards(text: str) -> bool:
    """True when the text has a `__name__` or a `{a|b}` variant group; plain braces (`{masterpiece}` in a NovelAI
    or A1111 prompt) are not wildcards and stay as written."""
    if WILDCARD.search(text) or _unclosed_variants(text) is not None:
        return True
    return any(_is_variants(text[i + 1:end]) for i, end in _groups(text))


def _unclosed_variants(text: str) -> int | None:
    """Where a `{` that is never closed starts variants (a `|` follows it), or None."""
    i = 0
    while (i := text.find("{", i)) >= 0:
        if _closing(text, i) is None:
            return i if "|" in text[i:] else None
        i += 1
    return None


def _groups(text: str) -> list[tuple[int, int]]:
    """(start, end) of every closed outermost `{...}` in the text."""
    found, i = [], 0
    while (i := text.find("{", i)) >= 0:
        end = _closing(text, i)
        if end is None:
            break
        found.append((i, end))
        i = end + 1
    return found


def _is_variants(body: str) -> bool:
    return len(_split_top(body)) > 1 or bool(re.match(r"\s*\d+\$\$", body))


def wildcard_names(folder: Path) -> list[str]:
    """The wildcards a folder offers, as `__name__` would name them."""
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(folder).with_suffix("")).replace("\\", "/") for p in folder.rglob("*.txt"))


def expand(template: str, seed: int, folder: Path, *, field: str = "prompt") -> str:
    """The prompt that `template` gives for the image with this seed."""
    if not has_wildcards(template):
        return template
    return _Expander(random.Random(f"{seed}\x00{template}"), folder, field).text(template, 0)


class _Expander:
    def __init__(self, rng: random.Random, folder: Path, field: str) -> None:
        self.rng, self.folder, self.field = rng, folder, field
        self.lines: dict[str, list[str]] = {}

    def text(self, text: str, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise BadInput(f"The wildcards in the {self.field} nest more than {MAX_DEPTH} deep; does a wildcard file name itself?", field=self.field)
        if (start := _unclosed_variants(text)) is not None:
            raise BadInput(f"The {{ at character {start + 1} of the {self.field} is never closed; write variants as {{a|b|c}}.", field=self.field)
        out: list[str] = []
        i = 0
        while i < len(text):
            if text[i] == "{" and (end := _closing(text, i)) is not None:
                body = text[i + 1:end]
                out.append(self.variants(body, depth) if _is_variants(body) else "{" + self.text(body, depth + 1) + "}")
                i = end + 1
                continue
            match = WILDCARD.match(text, i)
            if match:
                out.append(self.text(self.rng.choice(self.options(match.group(1))), depth + 1))
                i = match.end()
                continue
            out.append(text[i])
            i += 1
        return "".join(out)

    def variants(self, body: str, depth: int) -> str:
        count = 1
        head, sep, rest = body.partition("$$")
        if sep and head.strip().isdigit():
            count, body = int(head), rest
        options = _split_top(body)
        picked = self.rng.sample(options, min(count, len(options)))
        return SEPARATOR.join(self.text(option, depth + 1) for option in picked)

    def options(self, name: str) -> list[str]:
        if name not in self.lines:
            if name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
                raise BadInput(f"The wildcard __{name}__ is not a name in {self.folder}; use names such as __colours__ "
                               "or __art/styles__.", field=self.field)
            path = self.folder / f"{name}.txt"
            try:
                lines = path.read_text("utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                raise BadInput(f"The wildcard __{name}__ has no file {name}.txt in {self.folder}; add it there "
                               "(one option per line) or import a wildcard folder into the library.", field=self.field) from None
            options = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
            if not options:
                raise BadInput(f"The wildcard file {path} has no options; write one per line.", field=self.field)
            self.lines[name] = options
        return self.lines[name]


def _closing(text: str, start: int) -> int | None:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _split_top(body: str) -> list[str]:
    """`a|{b|c}|d` -> ['a', '{b|c}', 'd']: the variants at the top level of one pair of braces."""
    parts, depth, current = [], 0, []
    for ch in body:
        if ch == "|" and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        depth += ch == "{"
        depth -= ch == "}"
        current.append(ch)
    parts.append("".join(current))
    return parts


WILDCARDS_DIR = "wildcards"  # under the home: HOME/wildcards/name.txt


def wildcards_folder(home_root: Path) -> Path:
    return Path(home_root) / WILDCARDS_DIR


def check(prompt: str, negative_prompt: str, folder: Path) -> None:
    """Refuse, before any model loads, templates that cannot expand (an unclosed brace, a missing wildcard file
    on the path seed 0 takes)."""
    expand(prompt, 0, folder)
    expand(negative_prompt, 0, folder, field="negative_prompt")
