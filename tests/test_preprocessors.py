"""Control preprocessors: canny, scribble, lineart, openpose and depth maps, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from localdiffusion.control.preprocessors import MODULES, control_type, run_preprocessor, skeleton
from localdiffusion.errors import BadInput, ModelNotFound
from localdiffusion.recipe import ControlUnit


def square_photo(size=(96, 64)) -> Image.Image:
    im = Image.new("RGB", size, (20, 20, 20))
    ImageDraw.Draw(im).rectangle([24, 16, 71, 47], fill=(230, 230, 230))
    return im


def pencil_drawing(width: int = 6) -> Image.Image:
    """A dark cross and circle on white paper."""
    im = Image.new("RGB", (128, 128), (250, 248, 240))
    d = ImageDraw.Draw(im)
    d.line([(10, 64), (118, 64)], fill=(30, 30, 30), width=width)
    d.line([(64, 10), (64, 118)], fill=(30, 30, 30), width=width)
    d.ellipse([30, 30, 98, 98], outline=(30, 30, 30), width=width)
    return im


def unit(module: str, **kw) -> ControlUnit:
    return ControlUnit(module=module, **kw)


def test_modules_and_types():
    assert MODULES == ("none", "canny", "scribble", "lineart", "openpose", "depth")
    assert [control_type(m) for m in MODULES] == ["", "canny", "scribble", "lineart", "openpose", "depth"]
    with pytest.raises(BadInput, match="'sketchy' is unknown; choose one of 'none', 'canny'"):
        control_type("sketchy")
    with pytest.raises(BadInput, match="'sketchy'"):
        run_preprocessor(unit("canny").model_copy(update={"module": "sketchy"}), square_photo(), Path("."))


def test_none_passes_the_map_through(tmp_path):
    photo = square_photo().convert("L")
    out = run_preprocessor(unit("none", processor_res=256), photo, tmp_path)
    assert out.mode == "RGB" and out.size == photo.size


def test_canny_finds_the_square_edges_at_the_processor_resolution(tmp_path):
    out = run_preprocessor(unit("canny", processor_res=128), square_photo(), tmp_path)
    assert out.mode == "RGB" and out.size == (192, 128)  # short side 64 -> 128
    edges = np.asarray(out)[:, :, 0]
    assert set(np.unique(edges)) == {0, 255}
    assert edges[64, 60:130].max() == 0  # inside the square: flat, no edges
    assert edges[30:34, 48:144].any() and edges[:20].max() == 0  # the top edge (y=32 at 2x), nothing above it
    strict = np.asarray(run_preprocessor(unit("canny", processor_res=128, threshold_a=1000, threshold_b=2000), square_photo(), tmp_path))
    assert strict.sum() < np.asarray(out).sum()


def test_scribble_inverts_a_pencil_drawing_to_white_on_black(tmp_path):
    drawing = pencil_drawing()
    out = np.asarray(run_preprocessor(unit("scribble", processor_res=128), drawing, tmp_path))[:, :, 0]
    assert set(np.unique(out)) == {0, 255}
    assert out[64, 64] == 255 and out[64, 10:20].all()  # the strokes are white
    assert out[5, 5] == 0 and out[45, 45] == 0  # paper is black
    white_on_black = Image.fromarray(255 - np.asarray(drawing))  # already inverted: left as it is
    assert np.array_equal(np.asarray(run_preprocessor(unit("scribble", processor_res=128), white_on_black, tmp_path))[:, :, 0], out)


def test_a_transparent_drawing_counts_as_drawn_on_white(tmp_path):
    strokes = Image.new("RGBA", (128, 128), (0, 0, 0, 0))
    ImageDraw.Draw(strokes).line([(10, 64), (118, 64)], fill=(0, 0, 0, 255), width=6)
    out = np.asarray(run_preprocessor(unit("scribble", processor_res=128), strokes, tmp_path))[:, :, 0]
    assert out[64, 64] == 255 and out[20, 20] == 0


def test_thinning_keeps_every_stroke(tmp_path):
    thick = np.asarray(run_preprocessor(unit("scribble", processor_res=128), pencil_drawing(9), tmp_path))[:, :, 0]
    thin = np.asarray(run_preprocessor(unit("scribble", processor_res=128, threshold_b=20), pencil_drawing(9), tmp_path))[:, :, 0]
    assert 0 < (thin > 0).sum() < (thick > 0).sum() / 3
    assert not (thin & ~thick).any()  # thinning only removes
    for row in (20, 40, 100):  # the vertical stroke still crosses these rows, about one pixel wide
        assert 1 <= (thin[row, 55:75] > 0).sum() <= 3


def test_skeleton_of_a_bar_is_its_centre_line():
    bar = np.zeros((20, 40), np.uint8)
    bar[8:13, 5:35] = 255
    ys, xs = np.nonzero(skeleton(bar))
    assert set(ys[(xs > 8) & (xs < 30)]) == {10}


def test_lineart_keeps_soft_edges(tmp_path):
    soft = pencil_drawing().resize((256, 256), Image.BICUBIC).resize((100, 100), Image.BOX)
    out = np.asarray(run_preprocessor(unit("lineart", processor_res=100), soft, tmp_path))[:, :, 0]
    values = set(np.unique(out))
    assert 0 in values and len(values) > 10  # grey levels, not a binary map
    assert out[0, 0] == 0 and out[50, 50] > 180


@pytest.mark.pose
def test_openpose_renders_the_detected_person(tmp_path):
    from test_pose import drawn_figure

    out = run_preprocessor(unit("openpose", processor_res=320), drawn_figure(), tmp_path)
    assert out.size == (320, round(640 * 320 / 384))
    pixels = np.asarray(out)
    assert pixels[:5, :5].max() == 0
    assert (pixels == (255, 0, 0)).all(axis=2).sum() > 20  # the nose joint, in colour 0


@pytest.fixture(scope="module")
def depth_home(tmp_path_factory) -> Path:
    """A home folder holding a tiny random-weight DPT depth model, saved the way transformers saves one."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    home = tmp_path_factory.mktemp("depth-home")
    folder = home / "models" / "depth" / "tiny-dpt"
    torch.manual_seed(0)
    config = DPTConfig(
        hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=8,
        backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 8, 8], fusion_hidden_size=8,
    )  # fmt: skip
    DPTForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return home


def test_depth_runs_the_home_folders_model(depth_home):
    out = run_preprocessor(unit("depth", processor_res=64), square_photo(), depth_home)
    assert out.mode == "RGB" and out.size == (96, 64)
    pixels = np.asarray(out)
    assert pixels.min() == 0 and pixels.max() == 255  # normalised to the full range
    again = run_preprocessor(unit("depth", processor_res=64), square_photo(), depth_home)
    assert np.array_equal(np.asarray(again), pixels)


def test_depth_without_a_model_says_where_to_put_one(tmp_path):
    with pytest.raises(ModelNotFound, match=r"models/depth/<name>/"):
        run_preprocessor(unit("depth"), square_photo(), tmp_path)
