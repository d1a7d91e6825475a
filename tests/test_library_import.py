"""The reference library's importers: each kind, idempotence, one sentence naming the row of a malformed file,
styles round trips, and the CLI's contracts."""

from __future__ import annotations

import json

import pytest

from cli_runner import run_cli
from library_data import (A1111_STYLES_CSV, CIVITAI_RESPONSE, write_diffusiondb, write_fooocus, write_image_folder,
                          write_wildcards)
from test_metadata import FIXTURES

from localdiffusion.errors import BadInput
from localdiffusion.library import Library, guess_kind
from localdiffusion.store.library_db import SCHEMA_VERSION, LibraryDB

pytest.importorskip("pyarrow")


@pytest.fixture()
def library(tmp_path):
    with Library(tmp_path / "home") as lib:
        yield lib


def entries(library: Library) -> list[tuple]:
    return library.db.query("SELECT prompt, negative_prompt, settings, nsfw, external_id FROM prompts ORDER BY id")


def test_the_library_has_its_own_versioned_database(tmp_path):
    with LibraryDB(tmp_path / "library.sqlite") as db:
        assert db.schema_version == SCHEMA_VERSION
        assert db.has_fts


def test_diffusiondb_import_maps_samplers_keeps_nsfw_scores_and_adds_nothing_twice(library, tmp_path):
    parquet = write_diffusiondb(tmp_path / "metadata.parquet")
    assert guess_kind(parquet) == "diffusiondb"
    seen = []
    first = library.import_path(parquet, progress=lambda done, total: seen.append((done, total)))
    assert first["added"] == 5 and first["source"] == "DiffusionDB" and first["kind"] == "diffusiondb"
    assert seen[-1] == (5, 5)
    again = library.import_path(parquet)
    assert again["added"] == 0 and again["entries"] == 5
    rows = entries(library)
    settings = json.loads(rows[0][2])
    assert settings == {"seed": 1000, "steps": 50, "cfg_scale": 7.0, "sampler_name": "LMS", "width": 512, "height": 512}
    assert [json.loads(r[2])["sampler_name"] for r in rows] == ["LMS", "Euler a", "DDIM", "Euler", "Euler a"]
    assert rows[4][3] == pytest.approx(0.93)
    (source,) = library.sources()
    assert source["licence"] == "CC0 1.0" and source["entries"] == 5


def test_a_malformed_parquet_names_the_row(library, tmp_path):
    parquet = write_diffusiondb(tmp_path / "bad.parquet", bad_cfg_row=3)
    with pytest.raises(BadInput, match=r"bad\.parquet, row 3: the column 'cfg' holds 'seven', not a number"):
        library.import_path(parquet, "diffusiondb")


def test_a1111_styles_round_trip_byte_for_byte_and_legacy_text_reads(library, tmp_path):
    styles = tmp_path / "styles.csv"
    styles.write_bytes(A1111_STYLES_CSV)
    assert guess_kind(styles) == "styles"
    result = library.import_path(styles)
    assert result["styles_added"] == 3
    assert library.import_path(styles)["styles_added"] == 0
    assert [s.name for s in library.styles()] == ["Cinematic", "Watercolour", "Plain"]
    assert library.styles()[1].prompt == 'watercolour painting of {prompt}, "wet" edges'
    out = tmp_path / "exported.csv"
    assert library.export_styles(out) == 3
    assert out.read_bytes() == A1111_STYLES_CSV

    legacy = tmp_path / "old.csv"
    legacy.write_text("name,text\nOld, masterpiece\n", encoding="utf-8")
    library.import_path(legacy, "styles")
    assert library.styles()[-1].prompt == "masterpiece"  # A1111 reads with skipinitialspace


def test_a_styles_csv_with_a_broken_row_names_the_line(library, tmp_path):
    bad = tmp_path / "styles.csv"
    bad.write_text("name,prompt,negative_prompt\nGood,a,b\nBad,a,b,c,d\n", encoding="utf-8")
    with pytest.raises(BadInput, match=r"styles\.csv, line 3: this row has more fields"):
        library.import_path(bad, "styles")


def test_fooocus_styles_import_and_export_as_json(library, tmp_path):
    path = write_fooocus(tmp_path / "sdxl_styles.json")
    assert guess_kind(path) == "fooocus"
    assert library.import_path(path)["styles_added"] == 2
    out = tmp_path / "out.json"
    library.export_styles(out)
    assert json.loads(out.read_text()) == json.loads(path.read_text())
    bad = tmp_path / "broken.json"
    bad.write_text('[{"name": "a",\n "prompt": }]')
    with pytest.raises(BadInput, match=r"broken\.json, line 2: this is not valid JSON"):
        library.import_path(bad, "fooocus")


def test_prompt_lists_txt_csv_and_parquet_with_a_named_column(library, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    txt = tmp_path / "list.txt"
    txt.write_text("a foggy harbour at dawn\n\n# not this\na neon alley in the rain\n", encoding="utf-8")
    assert library.import_path(txt)["added"] == 2
    csv_file = tmp_path / "list.csv"
    csv_file.write_text('id,text\n1,"a snowy owl, close-up"\n2,a glass city\n', encoding="utf-8")
    with pytest.raises(BadInput, match="no column 'prompt'"):
        library.import_path(csv_file, "prompts")
    assert library.import_path(csv_file, "prompts", column="text")["added"] == 2
    pq.write_table(pa.table({"caption": ["a paper boat", None, "a copper kettle"]}), tmp_path / "list.parquet")
    assert guess_kind(tmp_path / "list.parquet") == "prompts"
    assert library.import_path(tmp_path / "list.parquet", column="caption")["added"] == 2
    assert {r[0] for r in entries(library)} >= {"a snowy owl, close-up", "a copper kettle", "a neon alley in the rain"}
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nbroken \xff line\n")
    with pytest.raises(BadInput, match=r"bad\.txt, line 2: this line is not UTF-8"):
        library.import_path(bad)


def test_a_wildcard_folder_is_indexed_and_copied_for_prompts_to_use(library, tmp_path):
    folder = write_wildcards(tmp_path / "cards")
    assert guess_kind(folder) == "wildcards"
    assert library.import_path(folder)["added"] == 5
    home_cards = library.home_root / "wildcards"
    assert (home_cards / "colours.txt").read_text() == (folder / "colours.txt").read_text()
    assert (home_cards / "animals" / "birds.txt").exists()
    ids = {r[4] for r in entries(library)}
    assert "__animals/birds__ line 1" in ids and "__colours__ line 5" in ids
    assert library.import_path(folder)["added"] == 0


def test_a_folder_of_images_gets_prompts_settings_and_thumbnails(library, tmp_path):
    folder = write_image_folder(tmp_path / "pics", FIXTURES)
    assert guess_kind(folder) == "images"
    result = library.import_path(folder)
    rows = library.db.query("SELECT p.prompt, p.settings, p.model, i.thumb FROM prompts p JOIN images i ON i.prompt_id = p.id")
    dune = next(r for r in rows if r[0] == "sand dunes under a starry night sky")
    assert json.loads(dune[1]) == {"steps": 24, "sampler_name": "DPM++ 2M", "cfg_scale": 6.0, "seed": 77, "width": 64, "height": 64}
    assert dune[2] == "dreamy"
    assert all(r[3].endswith(".webp") and __import__("pathlib").Path(r[3]).exists() for r in rows)
    assert result["added"] == len(rows) >= 1  # the picture without metadata adds nothing
    if (FIXTURES / "expected.json").is_file():
        assert len(rows) == 4  # ours, A1111, Fooocus and InvokeAI
    assert library.import_path(folder)["added"] == 0


def test_a_saved_civitai_answer_is_read_tolerantly(library, tmp_path):
    path = tmp_path / "civitai.json"
    path.write_text(json.dumps(CIVITAI_RESPONSE))
    assert guess_kind(path) == "civitai"
    assert library.import_path(path)["added"] == 3  # the item without meta is skipped
    rows = library.db.query("SELECT prompt, negative_prompt, settings, url, nsfw, model FROM prompts ORDER BY id")
    assert rows[0][:2] == ("a lighthouse on a cliff in a storm, dramatic clouds", "blurry")
    assert json.loads(rows[0][2]) == {"seed": 42, "steps": 28, "cfg_scale": 6.5, "sampler_name": "DPM++ 2M Karras",
                                      "width": 832, "height": 1216}
    assert rows[0][3] == "https://civitai.com/images/1001" and rows[0][5] == "juggernautXL"
    assert rows[1][4] == 1.0 and rows[2][2] == "{}"
    bad = tmp_path / "other.json"
    bad.write_text('{"results": []}')
    with pytest.raises(BadInput, match="has no \"items\" list"):
        library.import_path(bad, "civitai")


def test_the_gallery_imports_the_studios_own_images(tmp_path, home):
    from localdiffusion.recipe import Recipe
    from localdiffusion.store.db import Database

    picture = tmp_path / "00001-3.png"
    picture.write_bytes(b"")
    from PIL import Image
    Image.new("RGB", (16, 16)).save(picture)
    recipe = Recipe(prompt="a tiny red house", negative_prompt="fog", steps=12, cfg_scale=5.0, seed=3, width=64, height=64)
    with Database(home.db_path) as db:
        db.add_image(path=picture, recipe_json=recipe.to_json(), infotext="", prompt=recipe.prompt, model_hash=None,
                     width=64, height=64, owner_id=db.local_owner_id)
    with Library(home.root) as lib:
        result = lib.import_path("gallery", "gallery")
        assert result["added"] == 1 and result["source"] == "My gallery"
        (entry,) = lib.search("red house").entries
        assert entry["settings"]["steps"] == 12 and entry["negative_prompt"] == "fog" and entry["has_image"]


def test_cli_import_search_sources_and_export_shapes(capsys, tmp_path):
    home = tmp_path / "home"
    parquet = write_diffusiondb(tmp_path / "metadata.parquet")
    code, out, err = run_cli(capsys, "library", "import", parquet, "--home", home)
    assert code == 0, err
    assert "Imported 5 new entries" in out
    styles = tmp_path / "styles.csv"
    styles.write_bytes(A1111_STYLES_CSV)
    code, out, _ = run_cli(capsys, "library", "import", styles, "--kind", "styles", "--source-name", "Class styles",
                           "--licence", "CC-BY 4.0", "--home", home)
    assert code == 0
    code, out, _ = run_cli(capsys, "library", "search", "castle", "--json", "--home", home)
    results = json.loads(out)
    assert [set(r) for r in results] == [{"id", "prompt", "negative_prompt", "source", "licence", "score", "settings"}]
    assert results[0]["settings"]["sampler_name"] == "Euler a" and results[0]["licence"] == "CC0 1.0"
    code, out, _ = run_cli(capsys, "library", "search", "kitten napping on a couch", "--semantic", "--limit", "1", "--json", "--home", home)
    assert json.loads(out)[0]["prompt"].startswith("a photo of a cat")
    code, out, _ = run_cli(capsys, "library", "sources", "--json", "--home", home)
    assert json.loads(out) == [{"name": "DiffusionDB", "kind": "diffusiondb", "licence": "CC0 1.0", "entries": 5},
                               {"name": "Class styles", "kind": "styles", "licence": "CC-BY 4.0", "entries": 3}]
    code, out, _ = run_cli(capsys, "library", "export-styles", tmp_path / "back.csv", "--home", home)
    assert code == 0 and (tmp_path / "back.csv").read_bytes() == A1111_STYLES_CSV
    code, out, err = run_cli(capsys, "library", "import", tmp_path / "missing.parquet", "--home", home)
    assert code == 2 and "There is no file or folder" in err and "Traceback" not in err


def test_odd_values_in_saved_answers_and_parquets_are_missing_values_not_tracebacks(library, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    answer = {"items": [{"id": 7, "meta": {"prompt": "a tin robot", "sampler": ["Euler"], "steps": "1e999", "cfgScale": float("nan")}}]}
    saved = tmp_path / "odd.json"
    saved.write_text(json.dumps(answer))
    assert library.import_path(saved, "civitai")["added"] == 1
    (prompt, _, settings, _, _), = [r for r in entries(library) if r[0] == "a tin robot"]
    assert json.loads(settings) == {}
    rows = {"image_name": ["1.png"], "prompt": ["a glass harbour"], "part_id": [float("nan")], "seed": [float("nan")],
            "step": [20.0], "cfg": [7.0], "sampler": [float("nan")], "width": [512.0], "height": [512.0]}
    pq.write_table(pa.table(rows), tmp_path / "nan.parquet")
    assert library.import_path(tmp_path / "nan.parquet", "diffusiondb")["added"] == 1


def test_a_prompt_list_with_a_line_added_on_top_adds_only_that_line(library, tmp_path):
    txt = tmp_path / "list.txt"
    txt.write_text("a foggy harbour\na neon alley\n", encoding="utf-8")
    assert library.import_path(txt)["added"] == 2
    txt.write_text("a new first line\na foggy harbour\na neon alley\n", encoding="utf-8")
    assert library.import_path(txt)["added"] == 1


def test_an_entrys_page_is_kept_only_as_a_web_address(library, tmp_path):
    answer = {"items": [{"url": "javascript:alert(1)", "meta": {"prompt": "a red kite"}},
                        {"url": "https://example.org/kite", "meta": {"prompt": "a blue kite"}}]}
    saved = tmp_path / "links.json"
    saved.write_text(json.dumps(answer))
    library.import_path(saved, "civitai")
    urls = dict(library.db.query("SELECT prompt, url FROM prompts WHERE prompt LIKE '%kite'"))
    assert urls == {"a red kite": None, "a blue kite": "https://example.org/kite"}
