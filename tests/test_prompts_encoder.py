"""Prompt encoding: chunking, weights, clip skip, SDXL, embeddings and per-step conditioning.

Tiny random-weight pipelines are built once per session and compared with diffusers' own
`encode_prompt`, which our encoder must equal bit for bit on plain prompts.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import save_file

from factories import TEXT_WIDTH, build_sd1, build_sd2, build_sdxl
from localdiffusion.errors import BadInput
from localdiffusion.models.tokenizer import load_tokenizer
from localdiffusion.prompts import PromptEncoder, match_lengths, parse_attention
from localdiffusion.prompts.chunks import CHUNK_LENGTH, split_into_chunks

PROMPT = "a photo of a cat"


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return load_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def sd1(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd1")
    build_sd1(root / "model", root / "cache")
    return StableDiffusionPipeline.from_pretrained(str(root / "model"), local_files_only=True)


@pytest.fixture(scope="session")
def sd2(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd2")
    build_sd2(root / "model", root / "cache")
    return StableDiffusionPipeline.from_pretrained(str(root / "model"), local_files_only=True)


@pytest.fixture(scope="session")
def sdxl(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl")
    build_sdxl(root / "model", root / "cache")
    return StableDiffusionXLPipeline.from_pretrained(str(root / "model"), local_files_only=True)


def diffusers_embeds(pipe, prompt: str, **kwargs) -> torch.Tensor:
    return pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False, **kwargs)[0]


def chunk_tokens(tokenizer, text: str):
    tokenize = lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]
    return split_into_chunks(parse_attention(text), tokenize, tokenizer.get_vocab()[",</w>"])


# --- chunking ---------------------------------------------------------------------------------

def test_short_prompt_is_one_chunk(tokenizer):
    (chunk,) = chunk_tokens(tokenizer, PROMPT)
    ids = chunk.ids(tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    expected = tokenizer(PROMPT, padding="max_length", max_length=77)["input_ids"]
    assert ids == expected


def test_long_prompt_splits_at_75_tokens(tokenizer):
    chunks = chunk_tokens(tokenizer, "cat " * 100)
    assert [len(c.tokens) for c in chunks] == [75, 25]


def test_comma_backtrack_moves_the_tail_after_the_last_comma(tokenizer):
    # 70 cats, a comma, then 10 dogs: the 4 dogs that fit after the comma move to chunk two.
    chunks = chunk_tokens(tokenizer, "cat " * 70 + ", " + "dog " * 10)
    assert [len(c.tokens) for c in chunks] == [71, 10]
    assert chunks[0].tokens[-1] == tokenizer.get_vocab()[",</w>"]


def test_comma_further_back_than_20_tokens_is_ignored(tokenizer):
    chunks = chunk_tokens(tokenizer, "cat " * 50 + ", " + "dog " * 40)
    assert [len(c.tokens) for c in chunks] == [75, 16]


def test_break_forces_a_new_chunk(tokenizer):
    chunks = chunk_tokens(tokenizer, "cat BREAK dog")
    assert [len(c.tokens) for c in chunks] == [1, 1]
    assert chunk_tokens(tokenizer, "BREAK dog")[0].tokens == []


def test_weights_follow_tokens(tokenizer):
    (chunk,) = chunk_tokens(tokenizer, "a (red:1.5) cat")
    assert chunk.weights == [1.0, 1.5, 1.0]
    assert chunk.full_weights()[:5] == [1.0, 1.0, 1.5, 1.0, 1.0] and len(chunk.full_weights()) == 77


# --- SD1 encoding -----------------------------------------------------------------------------

def test_plain_prompt_equals_diffusers_bit_for_bit(sd1):
    cond = PromptEncoder.from_pipeline(sd1).encode(PROMPT)
    assert cond.embeds.shape == (1, 77, TEXT_WIDTH) and cond.pooled is None
    assert torch.equal(cond.embeds, diffusers_embeds(sd1, PROMPT))


def test_empty_prompt_equals_diffusers(sd1):
    assert torch.equal(PromptEncoder.from_pipeline(sd1).encode("").embeds, diffusers_embeds(sd1, ""))


def test_clip_skip_2_equals_diffusers_clip_skip_1(sd1, monkeypatch):
    # diffusers' clip_skip path reads `text_encoder.text_model.final_layer_norm`, which CLIPTextModel
    # lost in transformers 5.6 (huggingface/transformers#46285). The bug is open upstream as
    # huggingface/diffusers#14124; 0.42.1, the newest diffusers, still has it. Alias the attribute
    # (outside the module registry) so diffusers' own code can serve as the oracle; drop this once
    # the locked diffusers fixes it.
    monkeypatch.setitem(sd1.text_encoder.__dict__, "text_model", sd1.text_encoder)
    cond = PromptEncoder.from_pipeline(sd1, clip_skip=2).encode(PROMPT)
    assert torch.equal(cond.embeds, diffusers_embeds(sd1, PROMPT, clip_skip=1))
    assert not torch.equal(cond.embeds, diffusers_embeds(sd1, PROMPT))


def test_long_prompt_is_never_cut(sd1):
    encoder = PromptEncoder.from_pipeline(sd1)
    cond = encoder.encode("cat " * 100)
    assert cond.embeds.shape == (1, 154, TEXT_WIDTH) and cond.chunks == 2
    assert torch.equal(cond.embeds[:, 77:], encoder.encode("cat " * 25).embeds)


@pytest.fixture
def trained_looking_norm(sd1):
    # A freshly initialised final layer norm makes every output's mean exactly 0, which A1111's
    # mean restoring divides by; a trained model's bias never does that, so give it one for a while.
    bias = sd1.text_encoder.final_layer_norm.bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias.fill_(0.5)
    yield
    with torch.no_grad():
        bias.copy_(saved)


def test_weights_change_embeddings_and_keep_the_mean(sd1, trained_looking_norm):
    encoder = PromptEncoder.from_pipeline(sd1)
    plain, weighted = encoder.encode("a red cat"), encoder.encode("a (red:1.5) cat")
    assert not torch.allclose(plain.embeds, weighted.embeds)
    assert torch.allclose(plain.embeds.mean(), weighted.embeds.mean(), atol=1e-6)
    assert torch.equal(encoder.encode("a (red:1.0) cat").embeds, plain.embeds)


def test_encodings_are_cached(sd1):
    encoder = PromptEncoder.from_pipeline(sd1)
    assert encoder.encode(PROMPT) is encoder.encode(PROMPT)
    first = encoder.encode(PROMPT)
    encoder.clear_cache()
    assert encoder.encode(PROMPT) is not first


def test_match_lengths_pads_with_the_empty_chunk(sd1):
    encoder = PromptEncoder.from_pipeline(sd1)
    long, empty = encoder.encode("cat " * 100), encoder.encode("")
    a, b = match_lengths(long, empty)
    assert a is long and b.embeds.shape == long.embeds.shape
    assert torch.equal(b.embeds[:, 77:], empty.embeds)
    b2, a2 = match_lengths(empty, long)
    assert torch.equal(b2.embeds, b.embeds) and a2 is long


def test_sd2_pads_with_its_pad_token_and_ignores_clip_skip(sd2):
    # SD2's tokenizer pads with "!" after the end token; A1111 ignores clip skip for OpenCLIP.
    plain = PromptEncoder.from_pipeline(sd2).encode(PROMPT)
    assert torch.equal(plain.embeds, diffusers_embeds(sd2, PROMPT))
    assert torch.equal(PromptEncoder.from_pipeline(sd2, clip_skip=2).encode(PROMPT).embeds, plain.embeds)


def test_bad_clip_skip(sd1):
    with pytest.raises(BadInput, match="Clip skip 0"):
        PromptEncoder.from_pipeline(sd1, clip_skip=0)


# --- SDXL -------------------------------------------------------------------------------------

def test_sdxl_equals_diffusers(sdxl):
    cond = PromptEncoder.from_pipeline(sdxl).encode(PROMPT)
    embeds, _, pooled, _ = sdxl.encode_prompt(PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    assert cond.embeds.shape == (1, 77, 2 * TEXT_WIDTH) and cond.pooled.shape == (1, TEXT_WIDTH)
    assert torch.equal(cond.embeds, embeds) and torch.equal(cond.pooled, pooled)


def test_sdxl_long_prompt_pools_the_first_chunk(sdxl):
    encoder = PromptEncoder.from_pipeline(sdxl)
    cond = encoder.encode(PROMPT + " BREAK dog")
    assert cond.embeds.shape == (1, 154, 2 * TEXT_WIDTH)
    assert torch.equal(cond.pooled, encoder.encode(PROMPT).pooled)


def test_sdxl_refiner_uses_only_the_second_encoder(sdxl):
    refiner = PromptEncoder([(sdxl.tokenizer_2, sdxl.text_encoder_2)]).encode(PROMPT)
    full = PromptEncoder.from_pipeline(sdxl).encode(PROMPT)
    assert torch.equal(refiner.embeds, full.embeds[..., TEXT_WIDTH:])
    assert torch.equal(refiner.pooled, full.pooled)


# --- textual inversion ------------------------------------------------------------------------

def token_vectors(encoder_model, tokenizer, words: str) -> torch.Tensor:
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    return encoder_model.get_input_embeddings().weight[ids].detach().clone()


def test_embedding_is_spliced_in_place_of_its_name(sd1, tmp_path):
    # An embedding whose vectors are the token embeddings of "red dog" must encode exactly as "red dog".
    path = tmp_path / "mystyle.safetensors"
    save_file({"emb_params": token_vectors(sd1.text_encoder, sd1.tokenizer, "red dog")}, str(path))
    encoder = PromptEncoder.from_pipeline(sd1, embeddings={"mystyle": path})
    assert torch.equal(encoder.encode("a mystyle cat").embeds, encoder.encode("a red dog cat").embeds)
    weighted = encoder.encode("a (mystyle:1.3) cat").embeds
    assert torch.equal(weighted, encoder.encode("a (red dog:1.3) cat").embeds)


def test_a1111_pt_embedding_loads_with_weights_only(sd1, tmp_path):
    path = tmp_path / "style.pt"
    vectors = token_vectors(sd1.text_encoder, sd1.tokenizer, "blue")
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "style", "step": 10}, str(path))
    encoder = PromptEncoder.from_pipeline(sd1, embeddings={"style": path})
    assert torch.equal(encoder.encode("style house").embeds, encoder.encode("blue house").embeds)


class NotATensor:
    pass


def test_pickled_code_is_refused(sd1, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": NotATensor()}}, str(path))
    encoder = PromptEncoder.from_pipeline(sd1, embeddings={"evil": path})
    with pytest.raises(BadInput, match="cannot be read safely"):
        encoder.encode("evil")


def test_embedding_of_the_wrong_width(sd1, tmp_path):
    path = tmp_path / "wide.safetensors"
    save_file({"emb_params": torch.zeros(2, TEXT_WIDTH * 2)}, str(path))
    encoder = PromptEncoder.from_pipeline(sd1, embeddings={"wide": path})
    assert encoder.encode("narrow").embeds.shape == (1, 77, TEXT_WIDTH)  # unused, so harmless
    with pytest.raises(BadInput, match="'wide'.*width 128"):
        encoder.encode("a wide cat")


def test_sdxl_embedding_uses_clip_l_and_clip_g(sdxl, tmp_path):
    path = tmp_path / "xlstyle.safetensors"
    save_file({"clip_l": token_vectors(sdxl.text_encoder, sdxl.tokenizer, "red dog"),
               "clip_g": token_vectors(sdxl.text_encoder_2, sdxl.tokenizer_2, "red dog")}, str(path))
    encoder = PromptEncoder.from_pipeline(sdxl, embeddings={"xlstyle": path})
    a, b = encoder.encode("a xlstyle cat"), encoder.encode("a red dog cat")
    assert torch.equal(a.embeds, b.embeds) and torch.equal(a.pooled, b.pooled)


def test_sd1_embedding_on_sdxl_is_refused(sdxl, tmp_path):
    path = tmp_path / "old.safetensors"
    save_file({"emb_params": torch.zeros(1, TEXT_WIDTH)}, str(path))
    with pytest.raises(BadInput, match="'old'"):
        PromptEncoder.from_pipeline(sdxl, embeddings={"old": path}).encode("old")


def test_embedding_vectors_count_as_tokens(sd1, tmp_path):
    path = tmp_path / "big.safetensors"
    save_file({"emb_params": torch.zeros(10, TEXT_WIDTH)}, str(path))
    encoder = PromptEncoder.from_pipeline(sd1, embeddings={"big": path})
    assert encoder.encode("cat " * 70 + "big").chunks == 2


# --- per-step conditioning --------------------------------------------------------------------

def test_for_steps_switches_like_a1111(sd1):
    encoder = PromptEncoder.from_pipeline(sd1)
    steps = encoder.for_steps("[cat:dog:0.5]", 10)
    cat, dog = encoder.encode("cat"), encoder.encode("dog")
    # A1111's sampler uses entry (5, 'cat') while step index <= 5: indices 0-5 are cat, 6-9 dog.
    assert [steps.text_at(i) for i in range(10)] == ["cat"] * 6 + ["dog"] * 4
    assert steps.at(0) is cat and steps.at(5) is cat and steps.at(6) is dog and steps.at(9) is dog
    assert steps.changes == (6,)
    assert len(steps.by_text) == 2


def test_for_steps_alternates(sd1):
    encoder = PromptEncoder.from_pipeline(sd1)
    steps = encoder.for_steps("a [cat|dog]", 6)
    # Entry (1, 'a cat') covers step indices 0 and 1, then one entry per index (A1111's counting).
    assert [steps.text_at(i) for i in range(6)] == ["a cat", "a cat", "a dog", "a cat", "a dog", "a cat"]
    assert steps.changes == (2, 3, 4, 5)
    assert set(steps.by_text) == {"a cat", "a dog"}


def test_for_steps_plain_prompt_is_constant(sd1):
    steps = PromptEncoder.from_pipeline(sd1).for_steps(PROMPT, 20)
    assert steps.is_constant and steps.changes == ()
    with pytest.raises(BadInput):
        steps.at(-1)
