"""STORY.yaml validation: every key is known, and a mistake is one sentence with its line (no models needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from localdiffusion.comic.storage import open_project, save_project
from localdiffusion.comic.story import load_story, parse_story
from localdiffusion.errors import BadInput

STORY = """\
title: Typos
page: A4
style: {prefix: "ink", steps: 4}
characters:
  - name: Mia
    description: a girl in a green raincoat
pages:
  - panels:
      - description: Mia waves
        characters: [Mia]
        dialogue:
          - {speaker: Mia, text: "Hello?"}
        captions: ["It rained."]
"""


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_the_story_reads_with_every_key():
    project = parse_story(STORY)
    panel = project.pages[0].panels[0]
    assert project.style.prefix == "ink" and project.style.steps == 4
    assert [b.text for b in panel.balloons] == ["It rained.", "Hello?"]


@pytest.mark.parametrize("key, expected, what", [
    ("dialog", "dialogue", "a panel"),
    ("charactres", "characters", "a panel"),
    ("descripton", "description", "a character"),
    ("panles", "panels", "a page"),
    ("prefx", "prefix", "the style"),
    ("titel", "title", "the story"),
    ("speker", "speaker", "a dialogue line"),
])
def test_a_misspelt_key_is_named_with_its_line_and_the_closest_key(key, expected, what):
    first = {"description": "    description: a girl", "characters": "        characters:"}.get(expected, expected + ":")
    story = STORY.replace(first, first.replace(expected, key), 1)
    line = line_of(story, key)
    with pytest.raises(BadInput) as error:
        parse_story(story)
    assert str(error.value) == f"story.yaml line {line}: unknown key '{key}' in {what}; did you mean '{expected}'?"


def test_the_brief_example_sentence():
    story = STORY.replace("        dialogue:", "        dialog:")
    with pytest.raises(BadInput, match=r"^story.yaml line 11: unknown key 'dialog' in a panel; did you mean 'dialogue'\?$"):
        parse_story(story)


def test_an_unknown_key_with_nothing_close_lists_the_keys():
    with pytest.raises(BadInput, match=r"^story.yaml line 14: unknown key 'zzz' in a dialogue line; use 'speaker' or 'text'\.$"):
        parse_story(STORY.replace('text: "Hello?"}', 'text: "Hello?"}\n            # note\n          - {text: hi, zzz: 1}'))


def test_page_size_keys_and_values_are_checked():
    story = STORY.replace("page: A4", "page: {width: 8, heigth: 8, unit: in}")
    with pytest.raises(BadInput, match=r"^story.yaml line 2: unknown key 'heigth' in the page size; did you mean 'height'\?$"):
        parse_story(story)
    project = parse_story(STORY.replace("page: A4", "page: {width: 8, height: 8, unit: in}"))
    assert project.page_size.width_mm == pytest.approx(203.2)


def test_wrong_values_and_missing_keys_name_the_line():
    with pytest.raises(BadInput, match=r"^story.yaml line 3: the value 500 for steps is not allowed"):
        parse_story(STORY.replace("steps: 4", "steps: 500"))
    with pytest.raises(BadInput, match=r"^story.yaml line 5: each character needs at least a name \(and a description\)\.$"):
        parse_story(STORY.replace("  - name: Mia\n    description", "  - description"))
    with pytest.raises(BadInput, match=r"^story.yaml line 12: each dialogue line needs a text \(and a speaker\)\.$"):
        parse_story(STORY.replace('{speaker: Mia, text: "Hello?"}', "{speaker: Mia}"))
    with pytest.raises(BadInput, match=r"^story.yaml line 10: the value 'many' for 'seed' in a panel is not allowed: "):
        parse_story(STORY.replace("      - description: Mia waves", "      - description: Mia waves\n        seed: many"))
    with pytest.raises(BadInput, match=r"^story.yaml line 10: the value nan for 'seed' in a panel is not allowed: input should be a finite number\.$"):
        parse_story(STORY.replace("        characters: [Mia]", "        seed: .nan\n        characters: [Mia]"))


def write_story(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "story.yaml").write_text(text)
    return folder / "story.yaml"


@pytest.mark.parametrize("ref", ["/etc/passwd", "../outside.png", "assets/../../outside.png", "mia.png", "assets/mia.txt"])
def test_story_reference_images_go_through_the_asset_check(tmp_path, ref):
    (tmp_path / "outside.png").write_bytes(b"x")
    path = write_story(tmp_path / "story", STORY.replace("    description: a girl", f"    reference_image: '{ref}'\n    description: a girl"))
    with pytest.raises(BadInput, match=rf"^story.yaml line 6: the asset '{ref}' is not a picture in the project's assets/ folder"):
        load_story(path)


def test_story_reference_images_are_copied_into_the_project(tmp_path):
    story = STORY.replace("    description: a girl", "    reference_image: assets/mia.png\n    description: a girl")
    path = write_story(tmp_path / "story", story)
    with pytest.raises(BadInput, match=r"^story.yaml line 6: the reference image 'assets/mia.png' is not in .*; put the picture there\.$"):
        load_story(path)
    (tmp_path / "story" / "assets").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "story" / "assets" / "mia.png")
    project = load_story(path)
    save_project(project, tmp_path / "project")
    assert (tmp_path / "project" / "assets" / "mia.png").read_bytes() == (tmp_path / "story" / "assets" / "mia.png").read_bytes()
    assert open_project(tmp_path / "project").characters[0].reference_image == "assets/mia.png"
    with pytest.raises(BadInput, match="cannot name pictures"):
        parse_story(story)
