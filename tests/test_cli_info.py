"""`localdiffusion info IMAGE [--json]` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import localdiffusion.cli.info  # noqa: F401  registers the command until cli/app.py imports it
from localdiffusion.cli.app import main
from localdiffusion.infotext import to_infotext
from localdiffusion.recipe import Recipe
from localdiffusion.store.png import save_png

RECIPE = Recipe(prompt="a red kite, over hills", negative_prompt="fog", seed=77, steps=9, width=64, height=64, sampler_name="DPM++ 2M", scheduler="Karras")


@pytest.fixture
def our_image(tmp_path: Path) -> Path:
    path = tmp_path / "kite.png"
    save_png(Image.new("RGB", (64, 64)), path, to_infotext(RECIPE, model_name="tiny-sd", model_hash="abc123def0"), None)
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(["info", *args])
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())  # rich wraps long sentences


def test_table_shows_prompt_settings_source_and_model(capsys, our_image):
    code, out, _ = run(capsys, str(our_image))
    assert code == 0
    for text in ("a red kite, over hills", "fog", "DPM++ 2M", "Karras", "77", "AUTOMATIC1111", "tiny-sd", "abc123def0"):
        assert text in out
    assert out.index("Prompt") < out.index("Negative prompt") < out.index("Sampler") < out.index("Source tool")


def test_json_holds_only_recovered_recipe_fields(capsys, our_image):
    code, out, _ = run(capsys, str(our_image), "--json")
    data = json.loads(out)
    assert code == 0
    assert data["source"] == "a1111" and data["model_name"] == "tiny-sd" and data["model_hash"] == "abc123def0"
    assert data["prompt"] == RECIPE.prompt and data["seed"] == 77 and data["scheduler"] == "Karras"
    assert "clip_skip" not in data and "enable_hr" not in data  # not stated in the file, so not invented
    assert set(data) - {"source", "model_name", "model_hash"} <= set(Recipe.model_fields)


def test_missing_file_is_one_sentence_and_non_zero_exit(capsys, tmp_path):
    code, out, err = run(capsys, str(tmp_path / "nope.png"))
    assert code != 0 and "There is no file at" in err and "Traceback" not in err + out


def test_non_image_file(capsys, tmp_path):
    path = tmp_path / "readme.png"
    path.write_text("hello")
    code, _, err = run(capsys, str(path))
    assert code != 0 and "is not an image" in err


def test_image_without_metadata_says_so(capsys, tmp_path):
    path = tmp_path / "blank.png"
    Image.new("RGB", (8, 8)).save(path)
    code, out, _ = run(capsys, str(path))
    assert code == 0 and "holds no generation settings" in " ".join(out.split())
    code, out, _ = run(capsys, str(path), "--json")
    assert json.loads(out) == {"source": None, "model_name": None, "model_hash": None}
