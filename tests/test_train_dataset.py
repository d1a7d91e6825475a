"""Dataset folders: kohya's picture + .txt convention, checked with one sentence naming the file."""

from __future__ import annotations

import pytest
from PIL import Image

from localdiffusion.errors import BadInput
from localdiffusion.train.dataset import bucket_for, buckets, crop_box, load_dataset, with_trigger
from localdiffusion.train.settings import default_steps


def picture(path, size=(80, 64), colour=(255, 0, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def test_a_dataset_reads_pictures_captions_and_puts_the_trigger_in_front(tmp_path):
    picture(tmp_path / "a.png")
    picture(tmp_path / "b.jpg", (64, 128))
    (tmp_path / "a.txt").write_text("a girl, red scarf\n", encoding="utf-8")
    dataset = load_dataset(tmp_path, "mira_character", resolution=64)
    assert [i.caption for i in dataset.items] == ["mira_character, a girl, red scarf", "mira_character"]
    assert dataset.items[0].crop == (8, 0, 72, 64) and dataset.items[0].size == (64, 64)
    assert dataset.pixels(dataset.items[1]).shape == (3, 64, 64)
    assert dataset.tag_frequency() == {tmp_path.name: {"mira_character": 2, "a girl": 1, "red scarf": 1}}


def test_the_content_hash_follows_pictures_and_captions(tmp_path):
    picture(tmp_path / "a.png")
    picture(tmp_path / "b.png")
    first = load_dataset(tmp_path).content_hash
    assert load_dataset(tmp_path).content_hash == first
    (tmp_path / "a.txt").write_text("changed")
    assert load_dataset(tmp_path).content_hash != first


@pytest.mark.parametrize("make, names", [
    (lambda d: None, "holds no pictures"),
    (lambda d: (picture(d / "a.png"), (d / "b.png").write_bytes(b"not a png")), "b.png cannot be read"),
    (lambda d: (picture(d / "a.png"), picture(d / "b.png"), (d / "c.txt").write_text("x")), "c.txt has no picture"),
    (lambda d: picture(d / "only.png"), "only 1 picture (only.png)"),
    (lambda d: (picture(d / "a.png"), picture(d / "a.jpg")), "shares its name"),
])
def test_a_bad_dataset_is_refused_in_one_sentence_naming_the_file(tmp_path, make, names):
    folder = tmp_path / "ds"
    folder.mkdir()
    make(folder)
    with pytest.raises(BadInput) as caught:
        load_dataset(folder, "x")
    assert names in caught.value.message and caught.value.message.count(". ") == 0


def test_a_missing_folder_and_a_trigger_with_commas_are_refused(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        load_dataset(tmp_path / "nothing")
    picture(tmp_path / "a.png")
    picture(tmp_path / "b.png")
    with pytest.raises(BadInput, match="without commas"):
        load_dataset(tmp_path, "a, b")


def test_buckets_keep_the_shape_within_the_area():
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in buckets(512))
    assert bucket_for(1.0, 512) == (512, 512)
    wide = bucket_for(16 / 9, 512)
    assert wide[0] > wide[1]
    box, size = crop_box((1600, 900), 512, "buckets")
    assert size == wide and box[3] - box[1] == 900 or box[2] - box[0] == 1600


def test_trigger_and_default_steps():
    assert with_trigger("mira, smiling", "mira") == "mira, smiling"
    assert with_trigger("", "mira") == "mira"
    assert [default_steps(n) for n in (2, 10, 50)] == [300, 1000, 3000]
