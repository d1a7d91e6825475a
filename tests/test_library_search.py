"""Searching the reference library: words (bm25), meaning (a query sharing no word), both fused, facets, the NSFW
threshold, "more like this" and the typical settings of prompts like yours."""

from __future__ import annotations

import json

import pytest

from library_data import CIVITAI_RESPONSE, write_diffusiondb

from localdiffusion.errors import BadInput
from localdiffusion.library import Filters, Library

pytest.importorskip("pyarrow")


@pytest.fixture()
def library(tmp_path):
    with Library(tmp_path / "home") as lib:
        lib.import_path(write_diffusiondb(tmp_path / "metadata.parquet"))
        civitai = tmp_path / "civitai.json"
        civitai.write_text(json.dumps(CIVITAI_RESPONSE))
        lib.import_path(civitai)
        yield lib


def prompts(result) -> list[str]:
    return [e["prompt"] for e in result.entries]


def test_words_rank_by_bm25_and_an_entry_knows_its_source_and_licence(library):
    result = library.search("painting")
    assert set(prompts(result)) == {"a medieval castle on a mountain at sunset, matte painting",
                                    "portrait of an old fisherman with a beard, oil painting"}
    assert result.entries[0]["score"] >= result.entries[1]["score"]
    assert result.entries[0]["source"] == "DiffusionDB" and result.entries[0]["licence"] == "CC0 1.0"
    assert library.search("nonexistentword").entries == []


def test_meaning_finds_an_entry_that_shares_no_word_with_the_query(library):
    query = "kitten napping on the couch"
    assert library.search(query).entries == []  # no shared word
    assert prompts(library.search(query, semantic=True))[0] == "a photo of a cat sleeping on a sofa, soft light"
    assert prompts(library.search("fast automobile on the motorway", semantic=True))[0].startswith("a red sports car")
    assert prompts(library.search("elderly sailor painted in oils", semantic=True))[0].startswith("portrait of an old fisherman")


def test_hybrid_keeps_word_matches_first(library):
    top = library.search("lighthouse storm", semantic=True).entries[0]
    assert top["prompt"].startswith("a lighthouse on a cliff") and top["source"] == "Civitai"
    assert top["url"] == "https://civitai.com/images/1001"


def test_nsfw_entries_are_hidden_above_the_threshold_which_can_change(library):
    assert "a risque figure study" not in prompts(library.search("figure study"))
    assert library.search("explicit").entries == []
    library.set_nsfw_threshold(1.0)
    assert prompts(library.search("figure study")) == ["a risque figure study"]
    with pytest.raises(BadInput, match="threshold 3"):
        library.set_nsfw_threshold(3)


def test_facets_count_and_filter(library):
    result = library.search("", facets=True, limit=50)
    facets = {name: {f["value"]: f["count"] for f in values} for name, values in result.facets.items()}
    assert facets["source"] == {"DiffusionDB": 4, "Civitai": 2}
    assert facets["sampler"]["Euler a"] == 1 and facets["sampler"]["DPM++ 2M Karras"] == 1
    assert facets["size"]["512x512"] == 2 and facets["licence"]["CC0 1.0"] == 4
    assert facets["model"] == {"Stable Diffusion 1.x": 4, "juggernautXL": 1}
    assert facets["has_image"] == {False: 6}
    only = library.search("", filters=Filters(sampler="DDIM"), limit=50)
    assert prompts(only) == ["portrait of an old fisherman with a beard, oil painting"]
    sized = library.search("painting", filters=Filters(size="512x768", source="DiffusionDB"))
    assert prompts(sized) == ["a medieval castle on a mountain at sunset, matte painting"]
    assert library.search("painting", filters=Filters(licence="nope")).entries == []
    assert prompts(library.search("cat sofa", semantic=True, filters=Filters(source="Civitai"))) == []


def test_more_like_this_and_prompts_like_yours_with_typical_settings(library):
    cat = library.search("cat").entries[0]
    like = library.more_like(cat["id"], limit=3)
    assert cat["id"] not in [e["id"] for e in like] and len(like) == 3
    similar = library.similar("a kitten dozing on a couch", count=2)
    assert [e["prompt"] for e in similar["entries"]][0].startswith("a photo of a cat")
    assert len(similar["entries"]) == 2
    typical = similar["typical"]
    # the nearest 100 with settings: the four visible DiffusionDB entries and the Civitai one with settings
    # (steps 50, 30, 40, 25, 28; CFG 7, 9, 7.5, 7, 6.5)
    assert typical["sampler_name"] in {"LMS", "Euler a", "DDIM", "Euler", "DPM++ 2M Karras"}
    assert (typical["width"], typical["height"]) == (512, 512)
    assert typical["steps"] == 30 and typical["cfg_scale"] == 7.0 and similar["based_on"] == 5
    assert library.similar("   ") == {"entries": [], "typical": {}}


def test_a_hidden_entrys_picture_is_hidden_too(tmp_path):
    from library_data import write_image_folder

    with Library(tmp_path / "home") as library:
        library.import_path(write_image_folder(tmp_path / "pics"), "images")
        image_id, prompt_id = library.db.query("SELECT id, prompt_id FROM images ORDER BY id LIMIT 1")[0]
        assert library.image_of(image_id) is not None
        with library.db.transaction() as conn:
            conn.execute("UPDATE prompts SET nsfw = 0.9 WHERE id = ?", (prompt_id,))
        assert library.image_of(image_id) is None  # above the threshold (0.5): no picture either
        library.set_nsfw_threshold(1.0)
        assert library.image_of(image_id) is not None
