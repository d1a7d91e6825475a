"""Prompt anatomy: token view against the real CLIP tokenizer, the structure check and its lexicon,
the `anatomy` CLI and `POST /api/anatomy`. No UNet is needed."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from safetensors.torch import save_file

import localdiffusion.cli.anatomy  # noqa: F401  registers the command until cli/app.py imports it
from localdiffusion.cli.app import main
from localdiffusion.errors import BadInput
from localdiffusion.explain.anatomy import (
    CATEGORY_ORDER,
    LEXICON_DIR,
    load_lexicon,
    prompt_anatomy,
    structure_check,
)
from localdiffusion.models.tokenizer import load_tokenizer
from localdiffusion.prompts import parse_attention
from localdiffusion.prompts.chunks import split_into_chunks
from localdiffusion.server import explain
from localdiffusion.server.app import _add_error_handlers
from localdiffusion.server.studio import Studio
from localdiffusion.store.home import Home

PROMPTS = [
    "a photo of a cat",
    "masterpiece, best quality, portrait of an old fisherman, oil painting, golden hour, rim light",
    "café au lait, naïve art, 東京 at night, photorealistic!!!",
    "cat " * 100,
    "a lighthouse on a cliff, " * 12,
]


@pytest.fixture(scope="module")
def tokenizer(tokenizer_cache):
    return load_tokenizer(tokenizer_cache)


@pytest.fixture()
def cli_home(tmp_path, tokenizer_cache, tokenizer) -> Home:
    """A fresh home that reuses the session's tokenizer folder instead of building its own."""
    home = Home(tmp_path / "home").ensure()
    for folder in tokenizer_cache.iterdir():
        (home.cache / folder.name).symlink_to(folder, target_is_directory=True)
    return home


def tokenizer_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


# --- token view --------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS)
def test_token_count_equals_the_tokenizers(tokenizer, prompt):
    anatomy = prompt_anatomy(prompt, tokenizer)
    (view,) = anatomy.texts
    assert anatomy.token_count == view.token_count == tokenizer_count(tokenizer, prompt)
    assert [t.id for chunk in view.chunks for t in chunk.tokens] == tokenizer(prompt, add_special_tokens=False)["input_ids"]


def test_chunks_are_the_prompt_encoders_chunks(tokenizer):
    prompt = "a (red:1.3) kite, " * 20 + "BREAK [blue] sky, " + "hills " * 30
    (view,) = prompt_anatomy(prompt, tokenizer).texts
    tokenize = lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]
    expected = split_into_chunks(parse_attention(prompt), tokenize, tokenizer.get_vocab()[",</w>"])
    assert [[t.id for t in c.tokens] for c in view.chunks] == [c.tokens for c in expected]
    assert [[t.weight for t in c.tokens] for c in view.chunks] == [c.weights for c in expected]


def test_weights_follow_a1111_parsing(tokenizer):
    (view,) = prompt_anatomy("a (red:1.6) [[kite]] over hills", tokenizer).texts
    assert [(p.text, round(p.weight, 4)) for p in view.pieces] == [("a ", 1.0), ("red", 1.6), (" ", 1.0), ("kite", 0.8264), (" over hills", 1.0)]
    assert view.token_count == tokenizer_count(tokenizer, "a red kite over hills")
    red = next(t for t in view.chunks[0].tokens if t.text == "red")
    assert red.weight == 1.6 and view.pieces[red.piece].text == "red"


def test_a_100_token_prompt_gives_two_chunks(tokenizer):
    anatomy = prompt_anatomy("cat " * 100, tokenizer)
    chunks = anatomy.texts[0].chunks
    assert anatomy.chunk_count == 2 and [c.token_count for c in chunks] == [75, 25]
    assert chunks[0].ends_by == "full" and chunks[1].ends_by == "end"
    assert anatomy.texts[0].cut_by_75_token_tools.startswith("cat")
    assert any("would drop" in note for note in anatomy.notes)


def test_break_splits_and_is_marked(tokenizer):
    anatomy = prompt_anatomy("a red kite BREAK over green hills", tokenizer)
    view = anatomy.texts[0]
    assert [c.token_count for c in view.chunks] == [3, 3]
    assert view.chunks[0].ends_by == "break"
    assert [p.is_break for p in view.pieces] == [False, True, False]
    assert any(note.startswith("BREAK ends chunk 1") for note in anatomy.notes)


def test_break_inside_brackets_is_explained(tokenizer):
    anatomy = prompt_anatomy("(a BREAK b)", tokenizer)
    assert anatomy.chunk_count == 1 and any("BREAK inside brackets" in note for note in anatomy.notes)
    assert [w.terms for w in structure_check("(a BREAK b)").warnings] == [["BREAK"]]


def test_comma_backtrack_is_shown(tokenizer):
    view = prompt_anatomy("cat " * 70 + ", " + "dog " * 10, tokenizer).texts[0]
    assert [c.token_count for c in view.chunks] == [71, 10]
    assert view.chunks[0].ends_by == "comma" and view.chunks[0].moved_to_next == 4


def test_schedule_of_prompt_editing(tokenizer):
    anatomy = prompt_anatomy("a [cat:dog:0.5] on a sofa", tokenizer, steps=20)
    assert [(e.first_step, e.last_step, e.text) for e in anatomy.schedule] == [(1, 10, "a cat on a sofa"), (11, 20, "a dog on a sofa")]
    assert [(v.text, v.steps) for v in anatomy.texts] == [("a cat on a sofa", [(1, 10)]), ("a dog on a sofa", [(11, 20)])]
    assert "The prompt changes during sampling: at step 11 'cat' becomes 'dog'." in anatomy.notes
    alternating = prompt_anatomy("[cat|dog]", tokenizer, steps=4)
    assert [v.steps for v in alternating.texts] == [[(1, 1), (3, 3)], [(2, 2), (4, 4)]]


def test_lora_tags_are_listed_and_not_tokenized(tokenizer):
    anatomy = prompt_anatomy("a kite <lora:paper style:0.7>, <hypernet:x:1>hills", tokenizer)
    assert [(lora.name, lora.weight) for lora in anatomy.loras] == [("paper style", 0.7)]
    assert "The LoRA 'paper style' is applied at weight 0.7; its tag is not part of the text." in anatomy.notes
    assert anatomy.token_count == tokenizer_count(tokenizer, "a kite , hills")


def test_embeddings_count_their_vectors(tokenizer, tmp_path):
    path = tmp_path / "shiny-style.safetensors"
    save_file({"emb_params": torch.zeros(3, 8)}, str(path))
    anatomy = prompt_anatomy("a shiny-style kite", tokenizer, embeddings={"shiny-style": path})
    view = anatomy.texts[0]
    assert view.embeddings == ["shiny-style"]
    assert anatomy.token_count == 1 + 3 + 1
    assert [t.embedding for t in view.chunks[0].tokens] == [None, "shiny-style", "shiny-style", "shiny-style", None]
    late = prompt_anatomy("cat " * 73 + "shiny-style", tokenizer, embeddings={"shiny-style": path}).texts[0]
    assert [(c.token_count, c.ends_by) for c in late.chunks] == [(73, "embedding"), (3, "end")]


def test_pipeline_and_tokenizer_pairs_are_accepted(tokenizer):
    pipe = SimpleNamespace(tokenizer=tokenizer, tokenizer_2=tokenizer)
    assert prompt_anatomy("a kite", pipe).token_count == prompt_anatomy("a kite", [tokenizer]).token_count == 2


def test_bad_steps_are_one_sentence(tokenizer):
    with pytest.raises(BadInput, match="Steps 0 is not allowed"):
        prompt_anatomy("a kite", tokenizer, steps=0)


# --- structure check ---------------------------------------------------------------------


def test_phrases_are_sorted_into_categories():
    report = structure_check("portrait of an old fisherman, oil painting, by Rembrandt, close-up, golden hour, "
                             "muted tones, masterpiece, a red boat")
    assert report.categories["subject"] == ["portrait of an old fisherman"]
    assert report.categories["medium"] == ["oil painting"]
    assert report.categories["style"] == ["by Rembrandt"]
    assert report.categories["composition"] == ["close-up"]
    assert report.categories["lighting"] == ["golden hour"]
    assert report.categories["colour"] == ["muted tones"]
    assert report.categories["quality"] == ["masterpiece"]
    assert report.categories["other"] == ["a red boat"]
    assert report.missing == [] and report.suggestions == [] and report.warnings == []


def test_missing_categories_get_plain_suggestions():
    report = structure_check("a lighthouse on a cliff, (photograph:1.2)")
    assert report.categories["subject"] == ["a lighthouse on a cliff"]
    assert "lighting" in report.missing and "medium" not in report.missing
    assert "No lighting words: try 'soft window light' or 'golden hour'." in report.suggestions
    assert structure_check("").suggestions[0].startswith("The prompt is empty")


def test_strong_and_faint_weights_are_named():
    report = structure_check("a (red:1.6) kite, ((((((hills)))))), (fog:0.3), (sky:1.3)")
    weights = [w for w in report.warnings if w.kind == "weight"]
    assert [w.terms for w in weights] == [["red"], ["hills"], ["fog"]]
    assert "'red' has weight 1.60" in weights[0].message


def test_conflicts_are_warned():
    report = structure_check("a kite, photograph, watercolor, sunny day, night sky")
    conflicts = [w for w in report.warnings if w.kind == "conflict"]
    assert [w.terms for w in conflicts] == [["photograph", "watercolor"], ["sunny", "night sky"]]
    assert "'photograph' and 'watercolor'" in conflicts[0].message
    assert not [w for w in structure_check("a kite at night, moonlight").warnings if w.kind == "conflict"]


def test_words_in_both_prompts_are_warned():
    report = structure_check("a kite, blurry", negative_prompt="(blurry:1.2), lowres")
    assert [w.terms for w in report.warnings] == [["blurry"]]


def test_scheduled_texts_all_count():
    report = structure_check("a [cat:dog:0.5], [oil painting|watercolor]")
    assert report.categories["subject"] == ["a cat"] and "a dog" in report.categories["other"]
    assert report.categories["medium"] == ["oil painting", "watercolor"]


def test_shipped_lexicon_is_plain_readable_data():
    lexicon = load_lexicon()
    assert list(lexicon.categories)[: len(CATEGORY_ORDER)] == list(CATEGORY_ORDER)
    for name in CATEGORY_ORDER[1:]:
        data = json.loads((LEXICON_DIR / f"{name}.json").read_text("utf-8"))
        assert 30 <= len(data["terms"]) <= 90 and data["suggestion"]
        assert lexicon.categories[name].terms == data["terms"]
    assert len(lexicon.conflicts) == len(json.loads((LEXICON_DIR / "conflicts.json").read_text("utf-8"))["conflicts"])


def test_user_lexicon_files_extend_it(home):
    folder = home.root / "lexicon"
    folder.mkdir()
    (folder / "mine.json").write_text(json.dumps({"category": "lighting", "terms": ["aurora glow"]}))
    (folder / "mood.json").write_text(json.dumps({
        "category": "mood", "label": "Mood", "terms": ["melancholic", "cheerful"],
        "suggestion": "No mood: try 'melancholic'.",
        "conflicts": [{"sides": [["melancholic"], ["cheerful"]], "why": "a sad and a happy mood"}],
    }))
    lexicon = load_lexicon(home)
    assert "golden hour" in lexicon.categories["lighting"].terms and "aurora glow" in lexicon.categories["lighting"].terms
    report = structure_check("a kite, aurora glow, melancholic, cheerful", lexicon=lexicon)
    assert report.categories["lighting"] == ["aurora glow"] and report.labels["mood"] == "Mood"
    assert report.categories["mood"] == ["melancholic", "cheerful"]
    assert [w.terms for w in report.warnings] == [["melancholic", "cheerful"]]
    assert "aurora glow" not in load_lexicon().categories["lighting"].terms  # the shipped one is untouched


def test_a_broken_user_lexicon_file_is_named(home):
    (home.root / "lexicon").mkdir()
    (home.root / "lexicon" / "bad.json").write_text("{not json")
    with pytest.raises(BadInput, match="bad.json is not valid"):
        load_lexicon(home)


# --- CLI and API ---------------------------------------------------------------------------

CLI_PROMPT = "masterpiece, a (red:1.6) kite, [cat:dog:0.5], photograph, watercolor BREAK over hills"


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(["anatomy", *args])
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def test_cli_json_shape(capsys, cli_home):
    code, out, _ = run(capsys, CLI_PROMPT, "--negative", "blurry", "--steps", "10", "--json", "--home", str(cli_home.root))
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"prompt", "negative", "structure", "model", "family"}
    assert data["prompt"]["steps"] == 10 and data["prompt"]["chunk_count"] == 2
    assert [e["last_step"] for e in data["prompt"]["schedule"]] == [5, 10]
    chunk = data["prompt"]["texts"][0]["chunks"][0]
    assert set(chunk) == {"index", "token_count", "tokens", "ends_by", "moved_to_next"} and chunk["ends_by"] == "break"
    assert set(chunk["tokens"][0]) == {"id", "text", "weight", "piece", "word_end", "embedding"}
    assert data["negative"]["token_count"] == 1
    assert {w["kind"] for w in data["structure"]["warnings"]} == {"weight", "conflict"}


def test_cli_rich_view(capsys, cli_home):
    code, out, _ = run(capsys, CLI_PROMPT, "--home", str(cli_home.root))
    assert code == 0
    flat = " ".join(out.split())
    for text in ("Prompt", "Chunk 1", "ended by BREAK", "red×1.60", "Schedule", "Structure", "Suggestions", "Warnings", "'red' has weight 1.60"):
        assert text in flat, text


def test_cli_errors_are_one_sentence(capsys, cli_home):
    code, _, err = run(capsys, "a kite", "--steps", "0", "--home", str(cli_home.root))
    assert code == 2 and "Steps 0 is not allowed; use 1 to 150." in err
    code, _, err = run(capsys, "a kite", "--model", "nope", "--home", str(cli_home.root))
    assert code == 2 and err.startswith("Error: No checkpoint found")


@pytest.fixture()
def api(cli_home):
    app = FastAPI()
    app.state.studio = Studio.open(cli_home)
    _add_error_handlers(app)
    app.include_router(explain.router)
    with TestClient(app) as client:
        yield client


def test_api_answers_the_same_json_as_the_cli(capsys, api, cli_home):
    _, out, _ = run(capsys, CLI_PROMPT, "--negative", "blurry", "--steps", "10", "--json", "--home", str(cli_home.root))
    answer = api.post("/api/anatomy", json={"prompt": CLI_PROMPT, "negative_prompt": "blurry", "steps": 10})
    assert answer.status_code == 200
    assert answer.json() == json.loads(out)


def test_api_errors(api):
    assert api.post("/api/anatomy", json={"prompt": "a kite", "steps": 0}).status_code == 422
    missing = api.post("/api/anatomy", json={"prompt": "a kite", "model": "nope"})
    assert missing.status_code == 404 and missing.json()["detail"].startswith("No checkpoint found")


def test_api_names_the_models_family(api, cli_home, sd1_folder):
    (cli_home.model_dir("checkpoint") / sd1_folder.name).symlink_to(sd1_folder, target_is_directory=True)
    answer = api.post("/api/anatomy", json={"prompt": "a kite", "model": sd1_folder.name}).json()
    assert (answer["model"], answer["family"]) == (sd1_folder.name, "sd1")
