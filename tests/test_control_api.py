"""The studio's ControlNet and pose routes (/api/controls/*, /api/poses/*), over FastAPI's TestClient; no model needed."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from localdiffusion.control.pose import COLOURS, KEYPOINTS, read_pose, render_pose
from localdiffusion.server.app import create_app
from localdiffusion.server.studio import Studio
from localdiffusion.store.home import Home

POSE = {"canvas_width": 200, "canvas_height": 300,
        "people": [{"pose_keypoints_2d": [v for i in range(18) for v in (40 + 6 * i, 30 + 12 * i, 1)]}]}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("control-home")).ensure()
    with TestClient(create_app(Studio.open(home), start_worker=False), headers={"X-Client-Id": "tab-c"}) as c:
        yield c


def upload(client: TestClient, image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    response = client.post("/api/uploads", files={"file": ("a.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 201, response.text
    return response.json()["ref"]


def fetch(client: TestClient, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content)).convert("RGB")


def drawing() -> Image.Image:
    """Dark lines on white: a square and a diagonal, as a person would sketch them."""
    image = Image.new("RGB", (160, 120), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((30, 20, 110, 90), outline="black", width=3)
    draw.line((0, 119, 159, 0), fill="black", width=3)
    return image


# --- poses ----------------------------------------------------------------------------------------


def test_presets_are_openpose_json(client):
    presets = client.get("/api/poses/presets").json()
    names = [p["name"] for p in presets]
    for name in ("standing", "walking", "running", "sitting", "pointing", "arms-crossed", "looking-back"):
        assert name in names
    standing = next(p for p in presets if p["name"] == "standing")
    assert standing["label"] == "Standing"
    assert len(standing["pose"]["people"][0]["pose_keypoints_2d"]) == 3 * len(KEYPOINTS)
    read_pose(standing["pose"])  # reads back


def test_render_keeps_the_exact_map_as_an_input(client):
    answer = client.post("/api/poses/render", json={"pose": POSE}).json()
    assert answer["ref"].startswith("inputs/") and (answer["width"], answer["height"]) == (200, 300)
    served = fetch(client, answer["url"])
    assert np.array_equal(np.asarray(served), np.asarray(render_pose(read_pose(POSE))))
    x, y, _ = POSE["people"][0]["pose_keypoints_2d"][3:6]  # the neck, drawn last among its limbs
    assert served.getpixel((x, y)) == COLOURS[1]


def test_render_at_another_size_scales_the_pose(client):
    answer = client.post("/api/poses/render", json={"pose": POSE, "width": 400, "height": 600}).json()
    served = fetch(client, answer["url"])
    assert served.size == (400, 600)
    x, y, _ = POSE["people"][0]["pose_keypoints_2d"][0:3]
    assert served.getpixel((2 * x, 2 * y)) == COLOURS[0]


def test_render_refuses_bad_poses_with_one_sentence(client):
    bad = {**POSE, "people": [{"pose_keypoints_2d": [1, 2, 3]}]}
    response = client.post("/api/poses/render", json={"pose": bad})
    assert response.status_code == 422
    assert response.json()["field"] == "pose" and "54" in response.json()["detail"]
    response = client.post("/api/poses/render", json={"pose": POSE, "width": 9000, "height": 64})
    assert response.status_code == 422 and response.json()["field"] == "width"
    assert "2048" in response.json()["detail"]


@pytest.mark.pose
def test_detect_gives_the_drawn_figures_pose(client):
    from test_pose import drawn_figure

    figure = drawn_figure()
    response = client.post("/api/poses/detect", json={"image": upload(client, figure)})
    assert response.status_code == 200, response.text
    pose = read_pose(response.json())
    assert (pose.canvas_width, pose.canvas_height) == figure.size and len(pose.people) == 1
    nose, hip = pose.people[0].keypoints[0], pose.people[0].keypoints[8]
    assert nose[2] > 0 and hip[2] > 0 and nose[1] < hip[1]


@pytest.mark.pose
def test_detect_says_when_no_person_is_found(client):
    ref = upload(client, Image.new("RGB", (96, 96), (90, 140, 200)))
    response = client.post("/api/poses/detect", json={"image": ref})
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": "No person was found in the photo; use one where a whole body is clearly visible.",
                               "field": "image"}


def test_detect_without_mediapipe_names_the_extra(client, monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # `import mediapipe` now fails
    ref = upload(client, Image.new("RGB", (64, 64), "white"))
    response = client.post("/api/poses/detect", json={"image": ref})
    assert response.status_code == 400
    assert "[pose] extra" in response.json()["detail"] and "`bash scripts/setup.sh --pose`" in response.json()["detail"]


def test_refs_must_be_uploads(client):
    for route, extra in (("/api/poses/detect", {}), ("/api/controls/preview", {"module": "canny"})):
        response = client.post(route, json={"image": "/etc/passwd", **extra})
        assert response.status_code == 422 and response.json()["field"] == "image"
    assert client.get("/api/inputs/..%2Fdb.sqlite").status_code == 404
    assert client.get("/api/inputs/" + "0" * 24 + ".png").status_code == 404


# --- control maps ---------------------------------------------------------------------------------

preprocessors = pytest.importorskip("localdiffusion.control.preprocessors")


def test_modules_have_labels_help_and_parameters(client):
    body = client.get("/api/controls/modules").json()
    modules = {m["name"]: m for m in body["modules"]}
    assert list(modules) == list(preprocessors.MODULES)
    for module in modules.values():
        assert module["label"] and module["help"].endswith(".")
        for param in module["params"]:
            assert param["label"] and param["help"] and param["min"] < param["max"]
    assert modules["none"]["params"] == [] and modules["none"]["control_type"] == ""
    canny = [p["name"] for p in modules["canny"]["params"]]
    assert canny == ["threshold_a", "threshold_b", "processor_res"]
    fields = body["unit_fields"]
    assert fields["weight"]["max"] == 2.0 and fields["guidance_end"]["default"] == 1.0
    assert fields["resize_mode"]["choices"] == ["Just Resize", "Crop and Resize", "Resize and Fill"]
    assert fields["control_mode"]["choices"] == ["Balanced", "My prompt is more important", "ControlNet is more important"]
    assert fields["control_mode"]["default"] == "Balanced" and fields["pixel_perfect"]["default"] is False
    assert all(f["help"] for f in fields.values())
    assert "Press Preview" not in fields["module"]["help"] and "'None' uses the picture as the map" in fields["module"]["help"]


def test_canny_preview_is_kept_and_thresholds_matter(client):
    ref = upload(client, drawing())
    request = {"image": ref, "module": "canny", "processor_res": 120, "threshold_a": 100, "threshold_b": 200}
    answer = client.post("/api/controls/preview", json=request).json()
    assert answer["module"] == "canny" and answer["ref"] != ref
    edges = np.asarray(fetch(client, answer["url"]))
    assert edges.shape[:2] == (120, 160)  # the short side is processor_res
    assert 0 < (edges > 0).mean() < 0.3
    strict = client.post("/api/controls/preview", json={**request, "threshold_a": 254, "threshold_b": 255}).json()
    assert (np.asarray(fetch(client, strict["url"])) > 0).sum() <= (edges > 0).sum()


@pytest.mark.parametrize("size, mode, res", [
    ((640, 480), "Crop and Resize", 480),  # the 160x120 drawing covering 640x480: 4 x 120
    ((640, 240), "Crop and Resize", 480),  # covering 640x240: the width's 4 wins over the height's 2
    ((640, 240), "Resize and Fill", 240),  # fitting inside 640x240: 2 x 120
])
def test_pixel_perfect_preview_works_at_the_images_size(client, size, mode, res):
    ref = upload(client, drawing())
    request = {"image": ref, "module": "canny", "processor_res": 64, "pixel_perfect": True, "resize_mode": mode,
               "width": size[0], "height": size[1]}
    answer = client.post("/api/controls/preview", json=request).json()
    assert answer["processor_res"] == res and min(answer["width"], answer["height"]) == res
    plain = client.post("/api/controls/preview", json={**request, "pixel_perfect": False}).json()
    assert plain["processor_res"] == 64 and plain["height"] == 64
    response = client.post("/api/controls/preview", json={**request, "width": None})
    assert response.status_code == 422 and response.json()["field"] == "width" and "Pixel perfect needs" in response.json()["detail"]


def test_preview_none_is_the_image_itself(client):
    ref = upload(client, drawing())
    answer = client.post("/api/controls/preview", json={"image": ref, "module": "none"}).json()
    assert answer["ref"] == ref and answer["url"] == f"/api/{ref}"


def test_unknown_module_lists_the_choices(client):
    ref = upload(client, drawing())
    response = client.post("/api/controls/preview", json={"image": ref, "module": "sketchy"})
    assert response.status_code == 422 and response.json()["field"] == "module"
    assert "'canny'" in response.json()["detail"]
