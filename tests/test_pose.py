"""Poses: OpenPose JSON, the ControlNet conditioning image, editor transforms, presets and detection."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from localdiffusion.control.pose import (
    KEYPOINTS,
    Person,
    Pose,
    detect_pose,
    duplicate,
    landmarks_to_person,
    mirror,
    pose_to_json,
    presets,
    read_pose,
    render_pose,
    rotate,
    scale,
    write_pose,
)
from localdiffusion.errors import BadInput

DATA = Path(__file__).parent / "data"

# A known two-person pose on a 256x256 canvas; person 0 lacks its left ear.
STANDING = [
    (128, 40), (128, 70), (104, 72), (96, 110), (92, 146), (152, 72), (160, 110), (164, 146),
    (114, 150), (112, 196), (110, 240), (142, 150), (144, 196), (146, 240), (122, 34), (134, 34), (114, 38), None,
]
KNOWN = {
    "canvas_width": 256,
    "canvas_height": 256,
    "people": [
        {"pose_keypoints_2d": [v for p in STANDING for v in ((*p, 1.0) if p else (0, 0, 0))]},
        {"pose_keypoints_2d": [v for p in STANDING for v in ((p[0] + 70, p[1] - 20, 0.8) if p else (0, 0, 0))]},
    ],
}


def reference_render(data: dict, width: int, height: int) -> np.ndarray:
    """The ControlNet OpenPose drawing, written from its published description (controlnet_aux
    `draw_bodypose`): normalised keypoints, 1-based limb pairs, ellipse2Poly sticks dimmed to 60%."""
    import cv2

    limb_seq = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13],
                [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18]]  # fmt: skip
    colors = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0], [0, 255, 0],
              [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255],
              [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]]  # fmt: skip
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for person in data["people"]:
        flat = person["pose_keypoints_2d"]
        kps = [
            (flat[i] / data["canvas_width"], flat[i + 1] / data["canvas_height"]) if flat[i + 2] > 0 else None
            for i in range(0, 54, 3)
        ]
        for (k1, k2), color in zip(limb_seq, colors):
            p1, p2 = kps[k1 - 1], kps[k2 - 1]
            if p1 is None or p2 is None:
                continue
            Y = np.array([p1[0], p2[0]]) * float(width)
            X = np.array([p1[1], p2[1]]) * float(height)
            length = ((X[0] - X[1]) ** 2 + (Y[0] - Y[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(X[0] - X[1], Y[0] - Y[1]))
            polygon = cv2.ellipse2Poly((int(np.mean(Y)), int(np.mean(X))), (int(length / 2), 4), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, [int(float(c) * 0.6) for c in color])
        for kp, color in zip(kps, colors):
            if kp is not None:
                cv2.circle(canvas, (int(kp[0] * width), int(kp[1] * height)), 4, color, thickness=-1)
    return canvas


# --- format ----------------------------------------------------------------------------------------


def test_read_write_round_trip(tmp_path):
    pose = read_pose(KNOWN)
    assert (pose.canvas_width, pose.canvas_height, len(pose.people)) == (256, 256, 2)
    assert not pose.people[0].present(KEYPOINTS.index("left_ear"))
    path = write_pose(pose, tmp_path / "p.json")
    assert read_pose(path) == pose
    assert read_pose(path.read_text()) == pose
    assert json.loads(path.read_text())["people"][1]["pose_keypoints_2d"][:3] == [198, 20, 0.8]
    assert pose_to_json(pose)["canvas_width"] == 256


def test_reads_the_controlnet_extension_variants():
    normalised = {
        "canvas_width": 200,
        "canvas_height": 100,
        "people": [
            {"pose_keypoints_2d": [0.5, 0.25, 1.0] * 18},
            {"face_keypoints_2d": [1, 2, 1], "pose_keypoints_2d": None},  # a face-only entry
        ],
    }
    pose = read_pose([normalised])
    assert len(pose.people) == 1
    assert pose.people[0].keypoints[0] == (100.0, 25.0, 1.0)


@pytest.mark.parametrize(
    "data, words",
    [
        ("{not json", "not valid JSON"),
        ({"people": []}, "canvas_width"),
        ({"canvas_width": 512, "canvas_height": 0, "people": []}, "canvas_height"),
        ({"canvas_width": 512, "canvas_height": 512}, "'people'"),
        ({"canvas_width": 512, "canvas_height": 512, "people": [{"pose_keypoints_2d": [1, 2, 3]}]}, "has 3 values; it needs 54"),
        ({"canvas_width": 512, "canvas_height": 512, "people": [{"pose_keypoints_2d": ["a"] * 54}]}, "must be a number"),
        ([{}, {}], "list of 2 poses"),
    ],
)
def test_malformed_json_is_one_sentence(data, words):
    with pytest.raises(BadInput) as e:
        read_pose(data)
    assert words in str(e.value)
    assert str(e.value).count(". ") == 0


def test_missing_file(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        read_pose(tmp_path / "nope.json")


# --- rendering -------------------------------------------------------------------------------------


def test_render_matches_the_reference_pixel_for_pixel():
    image = render_pose(read_pose(KNOWN))
    assert image.mode == "RGB" and image.size == (256, 256)
    stored = np.asarray(Image.open(DATA / "pose-reference.png").convert("RGB"))
    assert np.array_equal(reference_render(KNOWN, 256, 256), stored)
    assert np.array_equal(np.asarray(image), stored)


def test_render_probes_by_hand():
    pixels = np.asarray(render_pose(read_pose(KNOWN)))
    assert tuple(pixels[40, 128]) == (255, 0, 0)  # nose, colour 0
    assert tuple(pixels[70, 128]) == (255, 85, 0)  # neck, colour 1
    assert tuple(pixels[240, 146]) == (85, 0, 255)  # person 0's left ankle, colour 13
    assert tuple(pixels[92, 98]) == (int(255 * 0.6), int(170 * 0.6), 0)  # right upper arm, limb 2, dimmed
    assert tuple(pixels[110, 121]) == (0, int(255 * 0.6), 0)  # neck to right hip, limb 6, dimmed
    assert tuple(pixels[0, 0]) == (0, 0, 0) and tuple(pixels[200, 30]) == (0, 0, 0)
    assert pixels[38, 114].any() and not pixels[38, 142].any()  # the right ear is drawn, the missing left ear not


def test_render_scales_to_another_size():
    pose = read_pose(KNOWN)
    big = render_pose(pose, size=(512, 384))
    assert big.size == (512, 384)
    assert np.array_equal(np.asarray(big), reference_render(KNOWN, 512, 384))
    assert tuple(np.asarray(big)[int(40 * 1.5), 256]) == (255, 0, 0)


# --- transforms ------------------------------------------------------------------------------------


def person0() -> Person:
    return read_pose(KNOWN).people[0]


def test_mirror_flips_and_swaps_sides():
    flipped = mirror(person0(), 256)
    right, left = KEYPOINTS.index("right_wrist"), KEYPOINTS.index("left_wrist")
    assert flipped.keypoints[right][:2] == (256 - 164, 146)  # the old left wrist, now on the image left
    assert flipped.keypoints[left][:2] == (256 - 92, 146)
    assert not flipped.present(KEYPOINTS.index("right_ear"))  # the missing left ear became the missing right ear
    assert mirror(flipped, 256) == person0()


def test_scale_and_rotate_about_a_centre():
    p = person0()
    cx, cy = p.centre()
    bigger = scale(p, 2.0)
    assert bigger.centre() == pytest.approx((cx, cy))
    assert bigger.keypoints[0][:2] == pytest.approx((cx + 2 * (128 - cx), cy + 2 * (40 - cy)))
    turned = rotate(p, 90, centre=(128, 70))
    assert turned.keypoints[0][:2] == pytest.approx((128 + 30, 70))  # the nose, above the neck, turns to its right
    assert rotate(turned, -90, centre=(128, 70)).keypoints[5][:2] == pytest.approx(p.keypoints[5][:2])
    assert not turned.present(KEYPOINTS.index("left_ear")) and turned.keypoints[17] == (0, 0, 0)
    with pytest.raises(BadInput):
        scale(p, 0)


def test_duplicate_adds_a_shifted_copy():
    pose = read_pose(KNOWN)
    more = duplicate(pose, 0, offset=(10, 5))
    assert len(more.people) == 3 and len(pose.people) == 2
    assert more.people[2].keypoints[1] == (138, 75, 1.0)
    with pytest.raises(BadInput, match="no person 5"):
        duplicate(pose, 5)


# --- presets ---------------------------------------------------------------------------------------


def test_presets_ship_and_are_plausible():
    found = presets()
    assert set(found) >= {"standing", "walking", "running", "sitting", "pointing", "arms-crossed", "looking-back"}
    for name, pose in found.items():
        assert len(pose.people) == 1, name
        p = pose.people[0]
        for i in ("neck", "right_shoulder", "left_shoulder", "right_hip", "left_hip", "right_ankle", "left_ankle"):
            assert p.present(KEYPOINTS.index(i)), (name, i)
        y = {k: p.keypoints[KEYPOINTS.index(k)][1] for k in ("nose", "neck", "right_hip", "right_ankle")}
        assert y["nose"] < y["neck"] < y["right_hip"] < y["right_ankle"], name
        assert all(0 <= x <= pose.canvas_width and 0 <= yy <= pose.canvas_height for x, yy, c in p.keypoints if c), name
        assert render_pose(pose).getbbox() is not None


# --- detection -------------------------------------------------------------------------------------


def made_up_landmarks() -> list[tuple[float, float, float]]:
    """33 mediapipe landmarks: landmark i at x = i/40, y = i/50, fully visible."""
    return [(i / 40, i / 50, 0.99) for i in range(33)]


def test_landmarks_map_to_the_18_points():
    person = landmarks_to_person(made_up_landmarks(), 400, 500)
    at = {name: person.keypoints[i] for i, name in enumerate(KEYPOINTS)}
    assert at["nose"] == pytest.approx((0, 0, 1))
    assert at["neck"] == pytest.approx((11.5 * 10, 11.5 * 10, 1))  # the midpoint of landmarks 11 and 12
    expected = {"right_shoulder": 12, "left_shoulder": 11, "right_elbow": 14, "left_elbow": 13, "right_wrist": 16,
                "left_wrist": 15, "right_hip": 24, "left_hip": 23, "right_knee": 26, "left_knee": 25,
                "right_ankle": 28, "left_ankle": 27, "right_eye": 5, "left_eye": 2, "right_ear": 8, "left_ear": 7}  # fmt: skip
    for name, landmark in expected.items():
        assert at[name] == pytest.approx((landmark * 10, landmark * 10, 1)), name


def test_unsure_or_outside_landmarks_are_missing():
    landmarks = made_up_landmarks()
    landmarks[12] = (0.3, 0.3, 0.2)  # right shoulder barely visible: it and the neck go missing
    landmarks[27] = (1.2, 0.5, 0.99)  # left ankle outside the picture
    person = landmarks_to_person(landmarks, 400, 500)
    for name in ("right_shoulder", "neck", "left_ankle"):
        assert not person.present(KEYPOINTS.index(name)), name
    assert person.present(KEYPOINTS.index("left_shoulder"))
    with pytest.raises(BadInput, match="33"):
        landmarks_to_person(landmarks[:17], 400, 500)


def drawn_figure() -> Image.Image:
    """A flat cartoon person, facing the viewer, with their left arm raised (it is on the image's right)."""
    from PIL import ImageDraw, ImageFilter

    im = Image.new("RGB", (384, 640), (200, 210, 220))
    d = ImageDraw.Draw(im)
    skin, shirt, pants, hair, shoe = (224, 172, 138), (40, 90, 160), (50, 50, 60), (60, 40, 20), (30, 20, 20)
    cx = 192
    for side in (-1, 1):  # legs and shoes
        d.line([(cx + side * 28, 360), (cx + side * 32, 470), (cx + side * 34, 585)], fill=pants, width=34, joint="curve")
        d.ellipse(sorted([cx + side * 14, cx + side * 60]) + [575, 600], fill=shoe)
    d.rounded_rectangle([cx - 62, 150, cx + 62, 375], radius=26, fill=shirt)
    d.line([(cx - 58, 165), (cx - 76, 260)], fill=shirt, width=30, joint="curve")  # right arm, hanging
    d.line([(cx - 76, 260), (cx - 84, 350)], fill=skin, width=24, joint="curve")
    d.ellipse([cx - 98, 340, cx - 68, 378], fill=skin)
    d.line([(cx + 58, 165), (cx + 110, 110)], fill=shirt, width=30, joint="curve")  # left arm, raised
    d.line([(cx + 110, 110), (cx + 128, 40)], fill=skin, width=24, joint="curve")
    d.ellipse([cx + 113, 12, cx + 143, 50], fill=skin)
    d.rectangle([cx - 14, 120, cx + 14, 158], fill=skin)  # neck, head, hair, ears
    d.ellipse([cx - 42, 40, cx + 42, 140], fill=skin)
    d.chord([cx - 44, 32, cx + 44, 110], 180, 360, fill=hair)
    d.ellipse([cx - 50, 80, cx - 38, 104], fill=skin)
    d.ellipse([cx + 38, 80, cx + 50, 104], fill=skin)
    for ex in (cx - 18, cx + 18):  # eyes and brows
        d.ellipse([ex - 9, 80, ex + 9, 90], fill=(255, 255, 255))
        d.ellipse([ex - 4, 81, ex + 4, 89], fill=(40, 30, 20))
        d.line([(ex - 10, 72), (ex + 10, 72)], fill=hair, width=3)
    d.polygon([(cx, 88), (cx - 6, 106), (cx + 6, 106)], fill=(200, 140, 110))  # nose and mouth
    d.line([(cx - 14, 118), (cx, 122), (cx + 14, 118)], fill=(170, 70, 70), width=3)
    return im.filter(ImageFilter.GaussianBlur(1.2))


@pytest.fixture(scope="module")
def detected() -> Pose:
    return detect_pose(drawn_figure())


@pytest.mark.pose
def test_detects_the_drawn_figure(detected):
    assert (detected.canvas_width, detected.canvas_height) == (384, 640)
    assert len(detected.people) == 1
    person = detected.people[0]
    assert all(person.present(i) for i in range(18))
    at = {name: person.keypoints[i][:2] for i, name in enumerate(KEYPOINTS)}
    assert at["nose"][1] < at["neck"][1] < at["right_hip"][1] < at["right_knee"][1] < at["right_ankle"][1]
    assert at["right_shoulder"][0] < at["left_shoulder"][0]  # facing the viewer: their right is on the image's left
    assert at["left_wrist"][1] < at["nose"][1] < at["right_wrist"][1]  # the raised arm is the left one
    assert math.dist(at["left_wrist"], (320, 40)) < 30 and math.dist(at["right_wrist"], (108, 355)) < 30


@pytest.mark.pose
def test_detection_without_a_person_finds_nobody():
    assert detect_pose(Image.new("RGB", (128, 128), (90, 90, 90))).people == []


def test_detection_needs_the_pose_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(BadInput, match=r"\[pose\] extra .* `bash scripts/setup\.sh --pose`"):
        detect_pose(Image.new("RGB", (64, 64)))


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_render_a_file_and_a_preset(tmp_path, capsys):
    from cli_runner import run_cli

    pose_file = write_pose(read_pose(KNOWN), tmp_path / "known.json")
    code, stdout, _ = run_cli(capsys, "pose", "render", pose_file, "-o", tmp_path / "known.png")
    assert code == 0 and "known.png" in stdout
    assert np.array_equal(np.asarray(Image.open(tmp_path / "known.png")), np.asarray(Image.open(DATA / "pose-reference.png").convert("RGB")))
    code, _, _ = run_cli(capsys, "pose", "render", "walking", "-o", tmp_path / "walking.png", "--size", "256x384")
    assert code == 0 and Image.open(tmp_path / "walking.png").size == (256, 384)
    code, stdout, _ = run_cli(capsys, "pose", "presets")
    assert code == 0 and "looking-back" in stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["render", "{pose}", "--size", "big"], "WIDTHxHEIGHT"),
        (["render", "{pose}", "--size", "0x512"], "between 1 and"),
        (["render", "dancing"], "neither a file nor a preset"),
        (["render", "{bad}"], "54"),
        (["detect", "{missing}"], "does not exist"),
    ],
)
def test_cli_errors_are_one_sentence_and_write_nothing(tmp_path, capsys, args, words):
    from cli_runner import run_cli

    pose_file = write_pose(read_pose(KNOWN), tmp_path / "known.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"canvas_width": 8, "canvas_height": 8, "people": [{"pose_keypoints_2d": [1, 2]}]}))
    names = {"pose": pose_file, "bad": bad, "missing": tmp_path / "nope.jpg"}
    target = tmp_path / "out.png"
    code, _, stderr = run_cli(capsys, "pose", *[a.format(**names) for a in args], "-o", target)
    assert code != 0 and words in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "known.json"]


@pytest.mark.pose
def test_cli_detect_writes_json_and_image(tmp_path, capsys):
    from cli_runner import run_cli

    drawn_figure().save(tmp_path / "person.png")
    code, stdout, _ = run_cli(capsys, "pose", "detect", tmp_path / "person.png", "-o", tmp_path / "pose.json", "--render", tmp_path / "pose.png")
    assert code == 0 and "18 of 18" in stdout
    assert len(read_pose(tmp_path / "pose.json").people) == 1
    assert Image.open(tmp_path / "pose.png").size == (384, 640)
    Image.new("RGB", (96, 96), (128, 128, 128)).save(tmp_path / "empty.png")
    code, _, stderr = run_cli(capsys, "pose", "detect", tmp_path / "empty.png", "-o", tmp_path / "none.json")
    assert code != 0 and "No person" in stderr and not (tmp_path / "none.json").exists()
