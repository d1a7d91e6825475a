"""A1111 attention syntax: `(word)`, `(word:1.3)`, `[word]`, escapes and `BREAK`.

A port of A1111's `modules/prompt_parser.py::parse_prompt_attention` (AGPL-3.0, AUTOMATIC1111 and
contributors). It must give the same pieces and the same float weights, quirks included: unbalanced
brackets still apply their multiplier to the end of the text, and neighbours of equal weight merge.
"""

from __future__ import annotations

import re

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK = ("BREAK", -1.0)

_ATTENTION = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) pieces; a `BREAK` is the piece ("BREAK", -1)."""
    pieces: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, multiplier: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= multiplier

    for match in _ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(pieces))
        elif token == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            multiply_from(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            multiply_from(round_open.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_open:
            multiply_from(square_open.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i > 0:
                    pieces.append(list(BREAK))
                pieces.append([part, 1.0])

    for start in round_open:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply_from(start, SQUARE_MULTIPLIER)

    if not pieces:
        pieces = [["", 1.0]]
    return [(text, weight) for text, weight in _merge_equal_weights(pieces)]


def _merge_equal_weights(pieces: list[list]) -> list[list]:
    i = 0
    while i + 1 < len(pieces):
        if pieces[i][1] == pieces[i + 1][1]:
            pieces[i][0] += pieces[i + 1][0]
            pieces.pop(i + 1)
        else:
            i += 1
    return pieces
