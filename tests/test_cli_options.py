"""The recipe flags that `generate`, `compare` and `explain` share are declared once (`cli/options.recipe_options`)
and reach the Recipe the same way in each command."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from cli_runner import run_cli
from typer.testing import CliRunner

from localdiffusion.cli.app import _register_commands
from localdiffusion.cli.common import app
from localdiffusion.cli.options import RecipeFlags, recipe_options

SHARED = ["prompt", "negative", "model", "steps", "cfg", "sampler", "scheduler", "seed", "size", "clip_skip", "init", "denoise",
          "eta", "ensd", "rng", "sgm_noise_multiplier", "pad_conds", "preset"]


def params_of(command_name: str) -> dict:
    _register_commands()
    command = typer.main.get_command(app).commands[command_name]
    return {p.name: p for p in command.params}


@pytest.mark.parametrize("command", ["generate", "compare", "explain"])
def test_each_recipe_command_has_the_shared_flags_with_the_same_names_and_defaults(command):
    params = params_of(command)
    assert set(SHARED) <= set(params)
    flags = {name: (params[name].opts, params[name].default) for name in SHARED}
    assert flags == {
        "prompt": (["prompt"], None), "negative": (["--negative", "-n"], ""), "model": (["--model", "-m"], None),
        "steps": (["--steps"], 20), "cfg": (["--cfg"], 7.0), "sampler": (["--sampler"], "Euler a"),
        "scheduler": (["--scheduler"], "Automatic"), "seed": (["--seed"], -1), "size": (["--size"], None),
        "clip_skip": (["--clip-skip"], 1), "init": (["--init"], None), "denoise": (["--denoise"], 0.75),
        "eta": (["--eta"], None), "ensd": (["--ensd"], 0), "rng": (["--rng"], "cpu"),
        "sgm_noise_multiplier": (["--sgm-noise-multiplier"], False), "pad_conds": (["--pad-conds"], False), "preset": (["--preset"], None),
    }
    same_help = ["negative", "model", "steps", "cfg", "sampler", "scheduler", "clip_skip", "denoise"]
    assert {n: params[n].help for n in same_help} == {n: params_of("generate")[n].help for n in same_help}


def test_the_commands_keep_their_own_wording_of_seed_size_and_init():
    helps = {c: {n: params_of(c)[n].help for n in ("seed", "size", "init")} for c in ("generate", "compare", "explain")}
    assert helps["generate"]["seed"] == "-1 picks a random seed (recorded in the image)."
    assert helps["compare"]["seed"] == "-1 picks one random seed for the whole comparison (recorded)."
    assert helps["explain"]["seed"] == "-1 picks a random seed (recorded)."
    assert helps["generate"]["size"] == "WIDTHxHEIGHT, multiples of 8 (default: the model's native size, or the input image's)."
    assert helps["compare"]["size"] == helps["explain"]["size"] == "WIDTHxHEIGHT, multiples of 8 (default: the model's native size)."
    assert helps["compare"]["init"] == "Input image: compare img2img results."
    assert helps["explain"]["init"] == "Input image: explain an img2img run."


def test_recipe_options_put_the_flags_where_the_command_names_them_and_gather_them(tmp_path):
    seen: list = []
    demo = typer.Typer(add_completion=False)

    @demo.command()
    @recipe_options(seed_help="the seed", init_help="the input")
    def make(first: int = typer.Option(0, "--first"), flags: RecipeFlags = None, last: int = typer.Option(0, "--last")):
        seen.append((first, flags, last))

    picture = tmp_path / "in.png"
    picture.write_bytes(b"not read here")
    runner = CliRunner()
    result = runner.invoke(demo, ["a cat", "--first", "1", "--size", "64x32", "--init", str(picture), "--steps", "3", "--last", "2"])
    assert result.exit_code == 0, result.output
    first, flags, last = seen[0]
    assert (first, last) == (1, 2)
    assert flags == RecipeFlags(prompt="a cat", negative="", model=None, steps=3, cfg=7.0, sampler="Euler a",
                                scheduler="Automatic", seed=-1, size="64x32", clip_skip=1, init=picture, denoise=0.75,
                                eta=None, ensd=0, rng="cpu", sgm_noise_multiplier=False, pad_conds=False)
    fields = flags.recipe_fields()
    assert (fields["width"], fields["height"], fields["mode"], fields["init_image"]) == (64, 32, "img2img", str(picture.resolve()))
    assert fields["cfg_scale"] == 7.0 and fields["sampler_name"] == "Euler a" and fields["denoising_strength"] == 0.75

    names = [p.name for p in typer.main.get_command(demo).params]
    assert names == ["first", *SHARED, "last"]


def test_a_command_without_a_flags_parameter_is_refused():
    with pytest.raises(TypeError, match="flags: RecipeFlags"):
        recipe_options(seed_help="s", init_help="i")(lambda steps=1: None)


@pytest.mark.parametrize("command", ["generate", "compare", "explain"])
def test_a_bad_size_is_one_sentence_in_every_recipe_command(command, capsys, tmp_path: Path):
    extra = {"compare": ["--x", "steps=1,2", "--y", "seed=1,2", "-o", str(tmp_path)], "explain": ["-o", str(tmp_path)]}.get(command, [])
    code, _, err = run_cli(capsys, command, "a cat", "--size", "64by32", "--home", str(tmp_path / "home"), *extra)
    assert code == 2
    assert "Error: The size '64by32' is not WIDTHxHEIGHT; write it like 512x768." in " ".join(err.split())


@pytest.mark.parametrize("command", ["generate", "compare", "explain"])
def test_a_missing_input_image_is_one_sentence_in_every_recipe_command(command, capsys, tmp_path: Path):
    extra = {"compare": ["--x", "steps=1,2", "--y", "seed=1,2", "-o", str(tmp_path)], "explain": ["-o", str(tmp_path)]}.get(command, [])
    missing = tmp_path / "nowhere.png"
    code, _, err = run_cli(capsys, command, "a cat", "--init", str(missing), "--home", str(tmp_path / "home"), *extra)
    assert code == 2
    assert f"Error: The input image '{missing}' does not exist; give the path of an image file." in " ".join(err.split())
