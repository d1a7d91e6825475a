"""Compare (parameter sweeps): axis syntax as A1111's X/Y/Z plot, grid drawing, batching by seed,
reproducible cells, compare.json and the `compare` command, on the tiny SD1 model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from localdiffusion.errors import BadInput, LocalDiffusionError
from localdiffusion.explain.axes import apply, parse_axis
from localdiffusion.explain.compare import batch_runs, compare, explain_axis, plan_cells
from localdiffusion.explain.grid import BACKGROUND, draw_grid, font_size, layout_grid
from localdiffusion.recipe import Recipe
from cli_runner import run_cli

BASE = dict(prompt="a red fox in the snow", negative_prompt="blurry", steps=2, width=64, height=64,
            sampler_name="Euler a", seed=11, model="tiny-sd1")


# --- axis syntax ---

@pytest.mark.parametrize("text, values", [
    # The examples of A1111's wiki (Features > X/Y/Z plot), with their documented results.
    ("steps=1-5", [1, 2, 3, 4, 5]),
    ("steps=1-5 (+2)", [1, 3, 5]),
    ("steps=10-5 (-3)", [10, 7]),
    ("cfg_scale=1-3 (+0.5)", [1, 1.5, 2, 2.5, 3]),
    ("steps=1-10 [5]", [1, 3, 5, 7, 10]),
    ("cfg_scale=0.0-1.0 [6]", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    # From the script's code: a float range without a step counts by 1, end included.
    ("cfg_scale=1-3", [1.0, 2.0, 3.0]),
    ("seed=1-3, 7, 20-22", [1, 2, 3, 7, 20, 21, 22]),
    ("seed=-1", [-1]),
])
def test_ranges_parse_as_a1111(text, values):
    assert list(parse_axis(text).values) == pytest.approx(values)


def test_values_are_csv_with_quoted_strings_and_aliases():
    assert parse_axis('sampler="Euler a",DPM++ 2M').values == ("Euler a", "DPM++ 2M")
    assert parse_axis('Prompt S/R=fox,"cat, big"').field == "prompt_sr"
    assert parse_axis('prompt_sr=fox,"cat, big"').values == ("fox", "cat, big")
    assert parse_axis("size=512x512,768x512").values == ((512, 512), (768, 512))
    assert parse_axis("lora:ink=0.2,0.6,1").field == "lora:ink"


@pytest.mark.parametrize("text, words", [
    ("steps=ten", ["Y axis", "'ten'"]),
    ("steps=1-10 (2)", ["Y axis", "'1-10 (2)'"]),  # A1111 needs a sign in the step
    ("cfg_scale=high", ["Y axis", "'high'"]),
    ("size=512", ["Y axis", "'512'"]),
    ("colour=red", ["Y axis", "'colour'"]),
    ("steps", ["Y axis", "field=values"]),
])
def test_bad_values_give_one_sentence_naming_the_axis_and_value(text, words):
    with pytest.raises(BadInput) as e:
        parse_axis(text, "Y")
    assert all(w in e.value.message for w in words) and e.value.message.count(". ") == 0


def test_prompt_sr_and_lora_weight_change_the_prompts():
    recipe = Recipe(prompt="a fox <lora:ink:0.5:0.3>, snow", negative_prompt="fox fur")
    sr = parse_axis("prompt_sr=fox,cat")
    assert apply(recipe, sr, "cat").prompt.startswith("a cat") and apply(recipe, sr, "cat").negative_prompt == "cat fur"
    assert apply(recipe, sr, "fox") == recipe
    with pytest.raises(BadInput, match="did not find 'wolf'"):
        apply(recipe, parse_axis("prompt_sr=wolf,cat"), "cat")
    assert apply(recipe, parse_axis("lora:ink=0.8"), 0.8).prompt == "a fox <lora:ink:0.8:0.3>, snow"
    assert apply(recipe, parse_axis("lora:paper=1"), 1.0).prompt.endswith(" <lora:paper:1>")
    with pytest.raises(BadInput, match="X axis value '200'"):
        apply(recipe, parse_axis("steps=200"), 200)


def test_controlnet_weight_sets_every_unit_and_needs_one():
    from localdiffusion.recipe import ControlUnit

    axis = parse_axis("ControlNet weight=0-1 [3]")
    assert axis.field == "control_weight" and axis.values == (0.0, 0.5, 1.0) and axis.label == "ControlNet weight"
    units = [ControlUnit(image="a.png", module="none", weight=1.0, guidance_end=0.6), ControlUnit(image="b.png", module="none")]
    changed = apply(Recipe(prompt="a fox", controls=units), axis, 0.5)
    assert [u.weight for u in changed.controls] == [0.5, 0.5] and changed.controls[0].guidance_end == 0.6
    with pytest.raises(BadInput, match="needs a recipe with a ControlNet unit"):
        apply(Recipe(prompt="a fox"), axis, 0.5)
    with pytest.raises(BadInput, match="X axis value '3'"):
        apply(Recipe(prompt="a fox", controls=units), parse_axis("control_weight=3"), 3.0)


def test_explanations_say_what_the_field_does_and_what_to_look_for():
    text = explain_axis(parse_axis("cfg_scale=3,7"), "X")
    assert "left to right" in text and "3, 7" in text and "follows the prompt" in text and "What to look for:" in text
    for axis in ("seed=1", "steps=1", "sampler=Euler", "scheduler=Karras", "denoise=0.5", "clip_skip=2", "width=64",
                 "height=64", "size=64x64", "model=a", "prompt_sr=a,b", "lora:x=1", "control_weight=1"):
        assert len(explain_axis(parse_axis(axis), "Y")) > 120


# --- grid drawing ---

def test_grid_size_is_cells_plus_label_margins_and_labels_are_drawn():
    cells = [[Image.new("RGB", (64, 64), (40 * ix, 90, 40 * iy)) for ix in range(3)] for iy in range(2)]
    args = ("CFG scale", ["3", "7", "12"], "Seed", ["1", "2"])
    grid = draw_grid(cells, *args, title="Sampler: Euler")
    layout = layout_grid([[c.size for c in row] for row in cells], *args, title="Sampler: Euler")
    assert grid.size == (layout.left + 3 * 64, layout.top + 2 * 64) and layout.left > 0 and layout.top > 0
    pixels = np.asarray(grid)
    assert (pixels[: layout.top, layout.left:] != BACKGROUND).any(), "X title and values are drawn"
    assert (pixels[layout.top:, : layout.left] != BACKGROUND).any(), "Y values are drawn"
    for iy in range(2):
        for ix in range(3):
            x0, y0 = layout.cell_origin(ix, iy)
            assert grid.getpixel((x0 + 5, y0 + 5)) == cells[iy][ix].getpixel((5, 5))


def test_label_font_grows_with_the_cells_and_mixed_sizes_line_up():
    assert font_size(64, 64) < font_size(512, 512) < font_size(1024, 1024)
    cells = [[Image.new("RGB", (64, 64)), Image.new("RGB", (96, 64))], [Image.new("RGB", (64, 32)), Image.new("RGB", (96, 32))]]
    layout = layout_grid([[c.size for c in row] for row in cells], "Size", ["64", "96"], "Y", ["a", "b"])
    assert layout.col_widths == [64, 96] and layout.row_heights == [64, 32]
    assert draw_grid(cells, "Size", ["64", "96"], "Y", ["a", "b"]).size == layout.size


# --- running on the tiny model ---

class CountingEngine:
    """Wraps the session engine to count (and inspect) generate() calls."""

    def __init__(self, engine):
        self.engine = engine
        self.batches: list[int] = []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, recipe, *args, **kwargs):
        self.batches.append(recipe.batch_size)
        return self.engine.generate(recipe, *args, **kwargs)


@pytest.fixture(scope="module")
def cfg_by_seed(engine, tmp_path_factory):
    counting = CountingEngine(engine)
    events = []
    result = compare(Recipe(**BASE), "cfg_scale=3,7", "seed=1-3", out_dir=tmp_path_factory.mktemp("compare") / "out",
                     engine=counting, on_progress=events.append)
    return result, counting, events


def test_seed_axis_runs_as_batches(cfg_by_seed):
    result, counting, events = cfg_by_seed
    assert counting.batches == [3, 3] and result.engine_calls == 2
    assert events[-1].done == events[-1].total == 6
    assert [c.resolved.seed for c in result.cells] == [1, 1, 2, 2, 3, 3]
    assert [c.resolved.cfg_scale for c in result.cells] == [3, 7, 3, 7, 3, 7]


def test_non_consecutive_seeds_split_into_runs(engine):
    cells = plan_cells(Recipe(**BASE), {"X": parse_axis("steps=2"), "Y": parse_axis("seed=5,1,2,3,4,9,10")})
    runs = batch_runs(cells, {id(c): c.recipe for c in cells}, engine)
    assert sorted([c.recipe.seed for c in run] for run in runs) == [[1, 2, 3, 4], [5], [9, 10]]  # 4: the CPU limit
    varied = plan_cells(Recipe(**BASE, subseed=3, subseed_strength=0.5), {"X": parse_axis("steps=2"), "Y": parse_axis("seed=1-3")})
    assert all(len(run) == 1 for run in batch_runs(varied, {id(c): c.recipe for c in varied}, engine))


def test_outputs_are_written_with_full_metadata(cfg_by_seed):
    result, _, _ = cfg_by_seed
    out = result.out_dir
    assert sorted(p.name for p in out.iterdir()) == ["cells", "compare.json", "grid.png"]
    assert sorted(p.name for p in (out / "cells").iterdir()) == [f"x{x}-y{y}.png" for x in range(2) for y in range(3)]
    png = Image.open(out / "cells" / "x1-y2.png")
    assert "CFG scale: 7" in png.text["parameters"] and "Seed: 3" in png.text["parameters"]
    assert Recipe.from_json(png.text["localdiffusion"]) == result.cells[5].resolved
    grid = Image.open(out / "grid.png")
    assert grid.width > 2 * 64 and grid.height > 3 * 64 and not [p for p in out.rglob(".*")]


def test_compare_json_holds_axes_cells_and_explanations(cfg_by_seed):
    result, _, _ = cfg_by_seed
    data = json.loads((result.out_dir / "compare.json").read_text())
    assert set(data) >= {"recipe", "axes", "grids", "cells"}
    assert data["axes"]["x"]["field"] == "cfg_scale" and data["axes"]["x"]["values"] == [3.0, 7.0]
    assert data["axes"]["y"]["values"] == [1, 2, 3] and "Seed" in data["axes"]["y"]["explanation"]
    assert data["grids"] == [{"file": "grid.png", "z": None}]
    assert len(data["cells"]) == 6
    cell = data["cells"][3]
    assert (cell["x"], cell["y"], cell["z"], cell["x_value"], cell["y_value"]) == (1, 1, None, 7.0, 2)
    assert cell["file"] == "cells/x1-y1.png" and Recipe.model_validate(cell["recipe"]).seed == 2


def test_each_cell_recipe_reproduces_its_image(engine, cfg_by_seed):
    result, _, _ = cfg_by_seed
    for cell in result.cells:
        saved = Recipe.from_json(Image.open(result.out_dir / cell.file).text["localdiffusion"])
        again = np.asarray(engine.generate(saved).images[0], dtype=np.int16)
        stored = np.asarray(Image.open(result.out_dir / cell.file).convert("RGB"), dtype=np.int16)
        # The cell ran inside a batch of 3 and is replayed alone: same noise (one generator per seed),
        # but the UNet's matrix products may sum in another order for another batch size, which can
        # move a pixel by a unit or two after rounding to 8 bits.
        assert np.abs(again - stored).max() <= 2, cell.file


def test_z_axis_gives_one_grid_per_value(engine, tmp_path):
    result = compare(Recipe(**BASE), "steps=1,2", "cfg_scale=5", "sampler=Euler,DDIM", out_dir=tmp_path / "z", engine=engine)
    assert result.grid_files == ["grid-z0.png", "grid-z1.png"]
    assert (tmp_path / "z" / "grid.png").read_bytes() == (tmp_path / "z" / "grid-z0.png").read_bytes()
    assert (tmp_path / "z" / "cells" / "x1-y0-z1.png").is_file()
    data = json.loads((tmp_path / "z" / "compare.json").read_text())
    assert [g["z"] for g in data["grids"]] == ["Euler", "DDIM"] and "one grid to the next" in data["axes"]["z"]["explanation"]
    # Unbatched cells replay bit for bit.
    cell = result.cells[-1]
    assert cell.resolved.sampler_name == "DDIM"
    assert np.array_equal(np.asarray(engine.generate(cell.resolved).images[0]), np.asarray(cell.image))


def test_seed_minus_one_is_resolved_once(engine, tmp_path):
    result = compare(Recipe(**{**BASE, "seed": -1}), "steps=1,2", "cfg_scale=5", out_dir=tmp_path / "s", engine=engine)
    assert result.cells[0].resolved.seed == result.cells[1].resolved.seed >= 0


def test_bad_axis_values_fail_before_any_work(engine, tmp_path):
    counting = CountingEngine(engine)
    for x, message in [("sampler=Euler,Nope", "X axis value 'Nope'"), ("model=tiny-sd1,missing", "X axis value 'missing'"),
                       ("width=64,65", "X axis value '65'"), ("lora:nope=0.5", "X axis value '0.5'")]:
        with pytest.raises(LocalDiffusionError, match=message):
            compare(Recipe(**BASE), x, "seed=1", out_dir=tmp_path / "bad", engine=counting)
    assert counting.batches == [] and not (tmp_path / "bad").exists()


def test_a_bad_base_recipe_is_reported_plainly_unless_an_axis_replaces_it(engine, tmp_path):
    with pytest.raises(LocalDiffusionError) as e:
        compare(Recipe(**{**BASE, "model": "missing"}), "cfg_scale=3,7", "seed=1", out_dir=tmp_path / "bad", engine=engine)
    assert "'missing'" in e.value.message and "axis" not in e.value.message
    result = compare(Recipe(**{**BASE, "model": "missing"}), "model=tiny-sd1", "seed=1", out_dir=tmp_path / "ok", engine=engine)
    assert result.cells[0].resolved.model == "tiny-sd1"


# --- CLI ---



FAST = ["--model", "tiny-sd1", "--steps", "2", "--size", "64x64", "--sampler", "Euler", "--seed", "4"]


def test_cli_writes_grid_cells_and_json(capsys, model_home, tmp_path):
    out = tmp_path / "cmp"
    code, stdout, stderr = run_cli(capsys, "compare", "a fox", "--x", "cfg_scale=3,7", "--y", "seed=1-2", *FAST,
                                   "--home", model_home.root, "-o", out)
    assert code == 0, stderr
    assert (out / "grid.png").is_file() and (out / "compare.json").is_file()
    assert len(list((out / "cells").glob("*.png"))) == 4 and "grid.png" in stdout
    assert "2 engine call" in stderr


@pytest.mark.parametrize("axis", ["cfg_scale=3,abc", "sampler=Euler,Nope", "steps=1-3 [x]"])
def test_cli_bad_axis_exits_nonzero_and_writes_nothing(capsys, model_home, tmp_path, axis):
    out = tmp_path / "cmp"
    code, _, stderr = run_cli(capsys, "compare", "a fox", "--x", axis, "--y", "seed=1", *FAST,
                              "--home", model_home.root, "-o", out)
    assert code != 0 and "X axis" in stderr and "Traceback" not in stderr
    assert not out.exists() or not any(out.iterdir())
