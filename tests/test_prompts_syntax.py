"""A1111 prompt syntax: attention, scheduling and extra-network tags (no models needed)."""

from __future__ import annotations

import pytest

from localdiffusion.errors import BadInput
from localdiffusion.prompts import LoraRef, extract_loras, parse_attention, schedule

# Every example of A1111's `parse_prompt_attention` docstring (modules/prompt_parser.py).
ATTENTION_EXAMPLES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    (r"\(literal\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1),
         ("hill", 0.55), (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)],
    ),
]


@pytest.mark.parametrize("text, expected", ATTENTION_EXAMPLES)
def test_parse_attention_matches_a1111_docstring(text, expected):
    assert parse_attention(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("", [("", 1.0)]),
    ("[word]", [("word", 1 / 1.1)]),
    ("((word))", [("word", 1.1 * 1.1)]),
    ("(word:1.3)", [("word", 1.3)]),
    ("( word : 1.3 )", [(" word ", 1.3)]),
    ("[unbalanced", [("unbalanced", 1 / 1.1)]),
    ("a) b]", [("a) b]", 1.0)]),
    (r"a \\ b", [(r"a \ b", 1.0)]),
    (r"\[x\] \(y\)", [("[x] (y)", 1.0)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", -1), ("b", 1.0)]),
    ("a, BREAK\nb", [("a,", 1.0), ("BREAK", -1), ("b", 1.0)]),
    ("aBREAKb", [("aBREAKb", 1.0)]),
    ("(a:1.2) (b:1.2)", [("a", 1.2), (" ", 1.0), ("b", 1.2)]),
    ("(a:1.2)(b:1.2)", [("ab", 1.2)]),
    ("a:b", [("a:b", 1.0)]),
])
def test_parse_attention_rules(text, expected):
    assert parse_attention(text) == expected


def test_parse_attention_returns_tuples():
    assert all(isinstance(piece, tuple) for piece in parse_attention("a (b) [c] BREAK d"))


# Every example of A1111's `get_learned_conditioning_prompt_schedules` docstring.
SCHEDULE_EXAMPLES = [
    ("test", [(10, "test")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", [(10, "a [unbalanced")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    # The docstring expects [(5, 'a  c'), (10, 'a {b|d{ c')] ("not handling this right now"), but
    # since alternation made '|' a grammar symbol, A1111's own code cannot parse this prompt and
    # returns it unchanged; we match the code, checked by running A1111's grammar under lark.
    ("a [{b|d{:.5] c", [(10, "a [{b|d{:.5] c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", [(step, "a" if step % 2 else "(b:1.1)") for step in range(1, 11)]),
    ("[fe|]male", [(step, "female" if step % 2 else "male") for step in range(1, 11)]),
    ("[fe|||]male", [(step, "female" if step % 4 == 1 else "male") for step in range(1, 11)]),
]


@pytest.mark.parametrize("prompt, expected", SCHEDULE_EXAMPLES)
def test_schedule_matches_a1111_docstring(prompt, expected):
    assert schedule(prompt, 10) == expected


@pytest.mark.parametrize("prompt, expected", [
    ("a [b:.5] c", [(10, "a b c")]),
    ("a [b:1.5] c", [(5, "a  c"), (10, "a b c")]),
])
def test_schedule_hires_matches_a1111_docstring(prompt, expected):
    assert schedule(prompt, 10, 10) == expected


# `{`, `}` and `|` inside the parts of `[from:to:when]`, each checked against A1111's own grammar and
# schedule code (modules/prompt_parser.py of v1.10) run under lark 1.1.2 (A1111's pin) and lark 1.3:
# braces are plain text; a `|` outside an alternation `[a|b]` makes the whole prompt unparseable, so A1111
# uses it as it is written.
BRACES_AND_BARS = [
    ("[a{:b}:3]", [(3, "a{"), (6, "b}")]),
    ("[{a:b}:3]", [(3, "{a"), (6, "b}")]),
    ("[a}:{b:3]", [(3, "a}"), (6, "{b")]),
    ("a [{b:5] c", [(5, "a  c"), (6, "a {b c")]),
    ("a [b}:5] c", [(5, "a  c"), (6, "a b} c")]),
    ("a [{b|d{:.5] c", [(6, "a [{b|d{:.5] c")]),
    ("[a|b:c:3]", [(6, "[a|b:c:3]")]),
    ("[a:b|c:3]", [(6, "[a:b|c:3]")]),
    ("[a:{b|c}:3]", [(6, "[a:{b|c}:3]")]),
    ("[{a|b}:c:3]", [(6, "[{a|b}:c:3]")]),
    ("[a:b:|3]", [(6, "[a:b:|3]")]),
    ("{a|b}", [(6, "{a|b}")]),
    ("a | b", [(6, "a | b")]),
    ("[a|b{]", [(step, "a" if step % 2 else "b{") for step in range(1, 7)]),
    ("[a{|}b]", [(step, "a{" if step % 2 else "}b") for step in range(1, 7)]),
    ("[a:[b|c]:3]", [(1, "a"), (2, "a"), (3, "a"), (4, "c"), (5, "b"), (6, "c")]),
    ("[[a|b]:c:3]", [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "c"), (6, "c")]),
    ("[a|[b:c:3]]", [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "a"), (6, "c")]),
]


@pytest.mark.parametrize("prompt, expected", BRACES_AND_BARS)
def test_schedule_braces_and_bars_match_a1111(prompt, expected):
    assert schedule(prompt, 6) == expected


def test_schedule_hires_counts_whole_numbers_from_the_first_pass():
    assert schedule("a [b:c:25] d", 20, 10) == [(5, "a b d"), (10, "a c d")]
    assert schedule("a [b:c:5] d", 20, 10) == [(10, "a c d")]


def test_schedule_old_scheduling_uses_fractions_of_this_pass():
    assert schedule("a [b:.5] c", 10, 10, use_old_scheduling=True) == [(5, "a  c"), (10, "a b c")]


def test_schedule_forms():
    assert schedule("[cat:dog:0.5]", 10) == [(5, "cat"), (10, "dog")]
    assert schedule("[cat::4]", 10) == [(4, "cat"), (10, "")]
    assert schedule("[cat:dog:30]", 10) == [(10, "cat")]
    assert schedule("[cat|dog] and [x|y|z]", 3) == [(1, "cat and x"), (2, "dog and y"), (3, "cat and z")]


def test_extract_loras_removes_tags_and_keeps_weights():
    text, loras = extract_loras("a cat <lora:ink:0.6>, <lora:paper> <hypernet:h:1.0> <lora:both:0.3:0.9>")
    assert text == "a cat ,   "
    assert loras == [LoraRef("ink", 0.6), LoraRef("paper", 1.0), LoraRef("both", 0.3)]


def test_extract_loras_named_arguments_and_lyco_alias():
    _, loras = extract_loras("<lora:a:unet=0.2> <lyco:b:0.5:te=0.7>")
    assert loras == [LoraRef("a", 1.0), LoraRef("b", 0.7)]


def test_extract_loras_leaves_other_angle_brackets():
    assert extract_loras("a <not a tag> b <x-y:z>") == ("a <not a tag> b <x-y:z>", [])


def test_extract_loras_bad_weight():
    with pytest.raises(BadInput, match="heavy"):
        extract_loras("<lora:ink:heavy>")


def test_lora_ref_is_frozen():
    with pytest.raises(AttributeError):
        LoraRef("a", 1.0).weight = 2.0
