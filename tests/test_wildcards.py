"""Wildcards in prompts ({a|b}, {2$$a|b|c}, __name__ from HOME/wildcards, nested), expanded per image with its
seed; the infotext keeps the templates as Dynamic Prompts writes them, and reading it back reproduces the image."""

from __future__ import annotations

import numpy as np
import pytest

from localdiffusion.errors import BadInput
from localdiffusion.infotext import from_infotext, recipe_from_infotext, with_templates
from localdiffusion.prompts.wildcards import expand, has_wildcards, wildcard_names, wildcards_folder
from localdiffusion.recipe import Recipe


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "wildcards"
    (root / "art").mkdir(parents=True)
    (root / "colours.txt").write_text("# colours\nred\n\ngreen\nblue\n{pale|deep} violet\n")
    (root / "art" / "styles.txt").write_text("ink wash\noil on canvas by a __colours__ painter\n")
    (root / "self.txt").write_text("again __self__\n")
    return root


def test_variants_and_wildcards_expand_reproducibly_by_seed(folder):
    template = "a {cat|dog|fox} in __colours__, __art/styles__"
    first = [expand(template, seed, folder) for seed in range(40)]
    assert first == [expand(template, seed, folder) for seed in range(40)]  # same seed, same prompt
    assert len(set(first)) > 5  # seeds pick different prompts
    for prompt in first:
        assert not has_wildcards(prompt) and prompt.startswith("a ")
    assert any("violet" in p for p in first) and any("painter" in p for p in first)  # nested, in files too
    assert wildcard_names(folder) == ["art/styles", "colours", "self"]


def test_pick_several_and_leave_a1111_syntax_alone(folder):
    two = expand("{2$$red|green|blue}", 3, folder).split(", ")
    assert len(two) == 2 and len(set(two)) == 2 and set(two) <= {"red", "green", "blue"}
    assert expand("(a cat:1.2) [day|night] {x|x}", 1, folder) == "(a cat:1.2) [day|night] x"
    assert expand("a plain prompt", 1, folder) == "a plain prompt"
    # braces without variants are NovelAI/A1111 text, not wildcards: kept as written (and no per-image runs)
    assert not has_wildcards("{masterpiece}, a {{castle}} at dusk {")
    assert expand("{masterpiece}, a {red|red} castle {", 1, folder) == "{masterpiece}, a red castle {"


def test_a_wildcard_name_cannot_leave_the_wildcards_folder(folder, tmp_path):
    (tmp_path / "secret.txt").write_text("the password\n")
    for name in ("../secret", "/" + str(tmp_path / "secret").lstrip("/"), "art/../../secret"):
        with pytest.raises(BadInput, match="is not a name in"):
            expand(f"a __{name}__", 0, folder)


def test_missing_file_unclosed_brace_and_loops_are_one_sentence(folder):
    with pytest.raises(BadInput) as e:
        expand("a __animals__", 0, folder)
    assert "__animals__" in e.value.message and str(folder) in e.value.message and e.value.field == "prompt"
    with pytest.raises(BadInput, match="never closed"):
        expand("a {cat|dog", 0, folder, field="negative_prompt")
    with pytest.raises(BadInput, match="name itself"):
        expand("__self__", 0, folder)


def test_infotext_keeps_the_templates_as_dynamic_prompts_writes_them():
    text = with_templates("a red cat\nNegative prompt: blurry\nSteps: 4, Sampler: Euler, Seed: 7, Size: 64x64",
                          "a {red|blue} cat", "{blurry|dark}")
    assert text.endswith("Seed: 7, Size: 64x64\nTemplate: a {red|blue} cat\nNegative Template: {blurry|dark}")
    fields, rest = from_infotext(text)
    assert (fields["prompt"], fields["negative_prompt"], fields["seed"], fields["steps"]) == ("a red cat", "blurry", 7, 4)
    assert rest["Template"] == "a {red|blue} cat" and rest["Negative Template"] == "{blurry|dark}"
    assert with_templates("p\nSteps: 4, Seed: 1, Size: 8x8", "t", "").endswith("\nTemplate: t")


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_batch_images_differ_and_each_reproduces_alone_from_its_infotext(engine):
    folder = wildcards_folder(engine.home.root)
    folder.mkdir(exist_ok=True)
    (folder / "beasts.txt").write_text("\n".join(f"a {n} beast" for n in ("red", "green", "blue", "gold", "white", "black")))
    template = "__beasts__ {in snow|at dawn|under rain|on a hill}"
    recipe = Recipe(prompt=template, negative_prompt="{blurry|dark}", seed=11, batch_size=3, steps=2, width=64, height=64,
                    sampler_name="Euler", model="tiny-sd1")
    result = engine.generate(recipe)
    prompts = [r.prompt for r in result.recipes]
    assert [r.seed for r in result.recipes] == [11, 12, 13]
    assert prompts == [expand(template, s, folder) for s in (11, 12, 13)] and len(set(prompts)) > 1
    assert all(not has_wildcards(p) for p in prompts)
    assert all(text.endswith(f"\nTemplate: {template}\nNegative Template: {{blurry|dark}}") for text in result.infotexts)
    again = engine.generate(recipe_from_infotext(result.infotexts[1]).model_copy(update={"model": "tiny-sd1"}))
    assert again.recipes[0].prompt == prompts[1]
    assert np.array_equal(pixels(again.images[0]), pixels(result.images[1]))
    plain = engine.generate(recipe.model_copy(update={"prompt": prompts[1], "negative_prompt": result.recipes[1].negative_prompt,
                                                      "seed": 12, "batch_size": 1}))
    assert np.array_equal(pixels(plain.images[0]), pixels(result.images[1]))  # the engine conditions on the expanded prompt


def test_a_missing_wildcard_is_refused_before_any_model_loads(engine):
    with pytest.raises(BadInput, match="__nowhere__.*wildcards"):
        engine.prepare(Recipe(prompt="a __nowhere__ cat", model="tiny-sd1", steps=1, width=64, height=64))


def test_a_template_with_line_breaks_keeps_the_infotext_readable():
    text = with_templates("a red cat\nin snow\nNegative prompt: blurry\nSteps: 4, Sampler: Euler, Seed: 7, Size: 64x64",
                          "a {red|blue} cat\nin snow", "")
    fields, rest = from_infotext(text)
    assert (fields["prompt"], fields["negative_prompt"], fields["seed"]) == ("a red cat\nin snow", "blurry", 7)
    assert rest["Template"] == "a {red|blue} cat\nin snow"
