"""Denoising timeline and CFG triptychs, on the tiny SD1 model: frames per step, the guided x0 equal to
the engine's own, explanations drawn from the run's numbers, and the `explain` CLI's files."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from localdiffusion.explain.report import explain_run
from localdiffusion.errors import BadInput
from localdiffusion.explain import guidance, timeline as tl
from localdiffusion.recipe import Recipe
from cli_runner import run_cli

BASE = dict(prompt="a red fox in snow", negative_prompt="blurry", width=64, height=64, steps=6, cfg_scale=7.0,
            sampler_name="Euler", seed=7, model="tiny-sd1")
FAST = ["--size", "64x64", "--steps", "4", "--sampler", "Euler", "--seed", "3", "--model", "tiny-sd1"]


def observed(engine, recipe: Recipe, steps: list[int]):
    """One generation watched by the timeline and CFG recorders, plus the engine's own x0 per step."""
    film = tl.recorder_for(engine, recipe)
    cfg = guidance.recorder_for(engine, recipe, steps)
    own: dict[int, torch.Tensor] = {}

    def on_step(state, phase, batch):
        film(state, phase, batch)
        cfg(state, phase, batch)
        own[state.index + 1] = state.x0[:1].detach().cpu().clone()

    engine.generate(recipe, on_step=on_step)
    return film.timeline(), cfg.views, own


@pytest.fixture(scope="module")
def euler_run(engine):
    return observed(engine, Recipe(**BASE), [2, 5])


def test_timeline_has_one_frame_per_step_with_numbers(euler_run):
    timeline, _, own = euler_run
    assert [f.step for f in timeline.frames] == list(range(1, 7))
    assert all(f.phase == "sample" and isinstance(f.x0, Image.Image) for f in timeline.frames)
    assert all(f.change > 0 for f in timeline.frames)
    assert timeline.frames[0].change == pytest.approx(float(own[1].abs().mean()))  # from a blank canvas
    assert max(f.normalised for f in timeline.frames) == pytest.approx(1.0)
    film = timeline.filmstrip()
    assert film.width > 6 * tl.MIN_CELL and film.height > 2 * tl.MIN_CELL
    assert timeline.animation()[:4] == b"RIFF"


def test_explanation_comes_from_the_run(euler_run):
    timeline, _, _ = euler_run
    shares = [t.share for t in timeline.thirds]
    assert sum(shares) == pytest.approx(100.0)
    changes = [f.change for f in timeline.frames]
    assert shares[0] == pytest.approx(100 * sum(changes[:2]) / sum(changes))
    top = max(timeline.thirds, key=lambda t: t.share)
    assert tl.percent(top.share) in timeline.explanation


def test_thirds_and_wording_follow_the_numbers():
    early = tl.thirds_of([0, 10, 5, 3, 1, 1])
    assert [(t.first, t.last) for t in early] == [(1, 2), (3, 4), (5, 6)]
    assert [round(t.share) for t in early] == [50, 40, 10]
    assert "50% of the change happened in steps 1-2" in tl.explain(early) and "only 10%" in tl.explain(early)
    late = tl.thirds_of([0, 1, 1, 1, 5, 12])
    assert "late" in tl.explain(late) and "85%" in tl.explain(late)


def test_guided_image_equals_the_engines_own_x0_euler(euler_run):
    _, views, own = euler_run
    assert [v.step for v in views] == [2, 5]
    for view in views:
        assert torch.equal(view.guided_x0, own[view.step])
        assert not torch.equal(view.uncond_x0, view.cond_x0)
        assert float(view.difference.mean()) > 0
        assert "7 x (with prompt - unconditional)" in view.caption and "negative prompt" in view.caption
    assert views[0].triptych().width > 4 * guidance.CELL


def test_the_cfg_caption_is_not_drawn_into_the_triptych(euler_run):
    # The caption is text for the page (once for all steps), so the picture is the same size without it.
    import dataclasses

    view = euler_run[1][0]
    assert view.triptych().size == dataclasses.replace(view, caption="").triptych().size


@pytest.mark.parametrize("sampler, model", [("DPM++ 2M", "tiny-sd1"), ("Euler", "tiny-sd2-v")])
def test_guided_image_equals_the_engines_own_x0_other_samplers(engine, sampler, model):
    recipe = Recipe(**{**BASE, "sampler_name": sampler, "model": model, "steps": 4})
    _, views, own = observed(engine, recipe, [1, 3, 99])
    assert [v.step for v in views] == [1, 3, 4]  # 99 clamped to the last step
    for view in views:
        assert torch.equal(view.guided_x0, own[view.step])
        assert not torch.equal(view.uncond_x0, view.cond_x0)


def test_guided_matches_the_cfg_formula_in_x0_space(euler_run):
    # x0 is affine in the noise prediction, so the guided x0 is the CFG extrapolation of the two x0s.
    _, views, _ = euler_run
    for v in views:
        expected = v.uncond_x0 + v.cfg_scale * (v.cond_x0 - v.uncond_x0)
        assert torch.allclose(v.guided_x0, expected, atol=1e-3)


def test_cfg_steps_parse_and_guidance_off_is_refused():
    assert guidance.parse_steps("5, 15") == [5, 15]
    with pytest.raises(BadInput, match="CFG steps 'a,2'"):
        guidance.parse_steps("a,2")
    assert guidance.default_steps(20) == [5, 15]
    with pytest.raises(BadInput, match="scale 1"):
        guidance.check_guidance(Recipe(**{**BASE, "cfg_scale": 1.0}))




def test_cli_writes_timeline_cfg_image_and_json(capsys, model_home, tmp_path):
    out = tmp_path / "why"
    code, stdout, stderr = run_cli(capsys, "explain", "a red fox", "--negative", "blurry", *FAST, "--decode-steps", "2",
                                   "--home", model_home.root, "-o", out)
    assert code == 0, stderr
    for name in ("timeline.png", "timeline.webp", "cfg-1.png", "cfg-3.png", "image.png", "explain.json"):
        assert (out / name).is_file(), name
    data = json.loads((out / "explain.json").read_text())
    assert set(data["files"]) == {p.name for p in out.iterdir()}
    assert data["recipe"]["seed"] == 3 and data["recipe"]["steps"] == 4
    assert len(data["timeline"]["steps"]) == 4 and data["timeline"]["explanation"]
    assert [s["decoded"] for s in data["timeline"]["steps"]] == [False, True, False, False]
    assert sum(t["share"] for t in data["timeline"]["thirds"]) == pytest.approx(100, abs=0.1)
    assert [c["step"] for c in data["cfg"]] == [1, 3] and "blurry" in data["cfg"][0]["caption"]
    assert "parameters" in Image.open(out / "image.png").info


def test_explain_run_writes_only_what_was_asked(engine, tmp_path):
    out = tmp_path / "why"
    recipe = Recipe(**{**BASE, "steps": 3})
    written = explain_run(engine, recipe, out, timeline=False, cfg_steps=[2])
    assert written == ["image.png", "cfg-2.png", "explain.json"]
    assert {p.name for p in out.iterdir()} == set(written)


@pytest.mark.parametrize("value", ["5,x", "0", ""])
def test_cli_bad_cfg_steps_exits_nonzero_and_writes_nothing(capsys, model_home, tmp_path, value):
    out = tmp_path / "why"
    code, _, stderr = run_cli(capsys, "explain", "a red fox", *FAST, "--cfg-steps", value, "--home", model_home.root, "-o", out)
    assert code != 0 and "CFG steps" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_shown_steps_spread_over_the_run_and_large_latents_shrink_before_decoding():
    assert tl.shown_steps(4) == [1, 2, 3, 4]
    spread = tl.shown_steps(30)
    assert len(spread) == tl.FRAMES and spread[0] == 1 and spread[-1] == 30
    assert tl.shrunk(torch.zeros(1, 4, 64, 80)).shape == (1, 4, 32, 40)  # 512 x 640: decoded at 256 x 320
    assert tl.shrunk(torch.zeros(1, 4, 32, 32)).shape == (1, 4, 32, 32)  # 256 px already: full size


def test_studio_frames_are_vae_decodes_of_up_to_ten_steps_decoded_in_batches(engine, tmp_path, monkeypatch):
    import numpy as np

    from localdiffusion.engine.backend import TorchBackend

    batches = []
    decode = TorchBackend.vae_decode  # every VAE decode, the engine's and the timeline's, goes through the backend
    monkeypatch.setattr(TorchBackend, "vae_decode", lambda self, latents, **kw: batches.append(latents.shape[0]) or decode(self, latents, **kw))
    explain_run(engine, Recipe(**{**BASE, "steps": 12}), tmp_path, frames=True)
    data = json.loads((tmp_path / "explain.json").read_text())
    framed = [s for s in data["timeline"]["steps"] if "frame" in s]
    assert [s["step"] for s in framed] == tl.shown_steps(12) and len(framed) == tl.FRAMES
    assert {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "timeline").iterdir()} == {s["frame"] for s in framed}
    assert batches == [1, 4, 4, 2]  # the image, then the ten frames four at a time
    # The last step's prediction is the image itself, so its decoded frame looks like it (not 8 x 8 blocks).
    image = np.asarray(Image.open(tmp_path / "image.png").convert("RGB"), dtype=np.int16)
    last = np.asarray(Image.open(tmp_path / framed[-1]["frame"]).convert("RGB"), dtype=np.int16)
    assert last.shape == image.shape and np.abs(last - image).mean() < 2
