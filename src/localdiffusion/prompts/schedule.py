"""A1111 prompt editing: `[from:to:when]`, `[to:when]`, `[from::when]` and alternation `[a|b]`.

A port of A1111's `get_learned_conditioning_prompt_schedules` and its lark grammar
(`modules/prompt_parser.py`, AGPL-3.0, AUTOMATIC1111 and contributors). The grammar is kept as it is,
because its ambiguities are resolved by lark and the results must match A1111 exactly.

A schedule is a list of `(end_at_step, text)`: `text` is used up to and including `end_at_step`
(1-based steps), and the last entry always ends at the total number of steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import lark

_GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
        | "(" prompt ":" prompt ")"
        | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""


@lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(_GRAMMAR)


def schedule(
    prompt: str, steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[tuple[int, str]]:
    """The texts a prompt turns into over `steps` sampling steps, as A1111 computes them.

    Parsing costs milliseconds and the same prompts come back every generation, so results are cached.
    """
    return list(_cached_schedule(prompt, steps, hires_steps, use_old_scheduling))


@lru_cache(maxsize=512)
def _cached_schedule(prompt: str, steps: int, hires_steps: int | None, use_old_scheduling: bool) -> tuple[tuple[int, str], ...]:
    return tuple(_schedule(prompt, steps, hires_steps, use_old_scheduling))


def _schedule(
    prompt: str, steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[tuple[int, str]]:
    """Parse and schedule one prompt (uncached).

    With `hires_steps` (the second pass of hires fix) whole numbers count on from the end of the
    first pass and fractions from 1.0 up to 2.0 cover the second pass, as in current A1111;
    `use_old_scheduling` restores A1111's earlier rule (fractions of the steps of this pass).
    """
    try:
        tree = _parser().parse(prompt)
    except lark.exceptions.LarkError:
        total = steps if hires_steps is None or use_old_scheduling else hires_steps
        return [(total, prompt)]
    timing = _Timing(steps, hires_steps, use_old_scheduling)
    ends = _collect_ends(tree, timing)
    return [(end, _text_at(end, tree)) for end in ends]


class _Timing:
    def __init__(self, base_steps: int, hires_steps: int | None, use_old_scheduling: bool) -> None:
        self.old = use_old_scheduling
        if hires_steps is None or use_old_scheduling:
            self.steps, self.int_offset, self.float_offset = base_steps, 0, 0.0
        else:
            self.steps, self.int_offset, self.float_offset = hires_steps, base_steps, 1.0

    def end_step(self, number: str) -> int:
        value = float(number)
        if self.old:
            value = value * self.steps if value < 1 else value
        elif "." in number:
            value = (value - self.float_offset) * self.steps
        else:
            value = value - self.int_offset
        return min(self.steps, int(value))


def _collect_ends(tree: lark.Tree, timing: _Timing) -> list[int]:
    ends = {timing.steps}
    for node in tree.iter_subtrees():
        if node.data == "scheduled":
            # The number is replaced by its step in place, as A1111 does, for _text_at to read.
            end = timing.end_step(str(node.children[-2]))
            node.children[-2] = end
            if end >= 1:
                ends.add(end)
        elif node.data == "alternate":
            ends.update(range(1, timing.steps + 1))
    return sorted(ends)


def _text_at(step: int, tree: lark.Tree) -> str:
    return "".join(_flatten(_TextAtStep(step).transform(tree)))


class _TextAtStep(lark.Transformer):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def scheduled(self, args):
        before, after, _, when, _ = args
        yield (before or ()) if self.step <= when else after

    def alternate(self, args):
        options = [option or "" for option in args]
        yield options[(self.step - 1) % len(options)]

    def plain(self, args):
        yield args[0].value

    def start(self, args):
        return args

    def __default__(self, data, children, meta):
        yield from children


def _flatten(node) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif node is not None:
        for child in node:
            yield from _flatten(child)
