"""Training a LoRA and an embedding on tiny random-weight models: it learns, the files are kohya's and A1111's
and load everywhere, a run resumes from its checkpoint, and the CLI drives it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from localdiffusion.errors import Cancelled
from localdiffusion.recipe import Recipe
from localdiffusion.train.settings import TrainSettings

RES = 64


def make_dataset(folder: Path, count: int = 2, caption: str = "a red square") -> Path:
    """`count` copies of one fixed picture (a red square on black), each with its caption."""
    folder.mkdir(parents=True, exist_ok=True)
    picture = np.zeros((RES, RES, 3), np.uint8)
    picture[16:48, 16:48] = (255, 0, 0)
    for i in range(count):
        Image.fromarray(picture).save(folder / f"picture{i}.png")
        (folder / f"picture{i}.txt").write_text(caption)
    return folder


@pytest.fixture(scope="module")
def train_home(tmp_path_factory, sd1_folder, sdxl_folder):
    """A home of its own (trained files land in it) with the tiny SD1 folder and the tiny SDXL as a single file."""
    from factories import build_single_file

    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("train-home")).ensure()
    (home.model_dir("checkpoint") / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    build_single_file(sdxl_folder, home.model_dir("checkpoint") / "tiny-xl.safetensors")
    make_dataset(home.root / "dataset")
    return home


@pytest.fixture(scope="module")
def library(train_home):
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    return ModelLibrary(train_home, Database(train_home.db_path))


@pytest.fixture(scope="module")
def train_engine(library):
    from localdiffusion.engine import Engine, EngineOptions

    return Engine(library, EngineOptions(dtype="float32"))


def settings(**changes) -> TrainSettings:
    return TrainSettings(**{"steps": 30, "resolution": RES, "learning_rate": 1e-2, "rank": 4, "min_snr_gamma": None,
                            **changes})


@pytest.fixture(scope="module")
def sd1_lora(library, train_home):
    """A LoRA trained for 30 steps on the fixed picture, with the loss on fixed noise and timesteps before and after."""
    from localdiffusion.train.lora import LoraTrainer

    trainer = LoraTrainer(library, train_home.root / "dataset", model="tiny-sd1", trigger="mira_character",
                          settings=settings(), source="drawn by me")
    before = trainer.training.measure()
    path = trainer.run()
    library.rescan()
    return path, before, trainer.training.measure()


def test_a_lora_learns_the_fixed_picture(sd1_lora):
    _, before, after = sd1_lora
    assert after < 0.95 * before


def test_the_lora_has_kohyas_keys_and_metadata(sd1_lora, train_home):
    path, _, _ = sd1_lora
    assert path == train_home.model_dir("lora") / "local" / "mira_character.safetensors"
    with safe_open(str(path), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= keys
    assert f"lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0.lora_up.weight" in keys
    assert all(k.startswith("lora_unet_") and k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in keys)
    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("4", "4.0")
    assert (meta["ss_steps"], meta["ss_max_train_steps"], meta["ss_num_train_images"]) == ("30", "30", "2")
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_sd_model_name"] == "tiny-sd1"
    assert meta["ss_resolution"] == f"({RES}, {RES})"
    assert json.loads(meta["ss_tag_frequency"]) == {"dataset": {"mira_character": 2, "a red square": 2}}
    from localdiffusion.models.hashing import addnet_hash

    assert meta["sshs_model_hash"] == addnet_hash(path)
    record = json.loads(meta["localdiffusion.provenance"])
    assert record["trained_by"] == "local" and record["dataset"]["pictures"] == 2
    assert record["dataset"]["source"] == "drawn by me" and record["base_model"]["name"] == "tiny-sd1"
    assert record["base_model"]["sha256"] == meta["ss_new_sd_model_hash"] and len(record["base_model"]["sha256"]) == 64


def test_the_lora_loads_in_diffusers(sd1_lora, sd1_folder):
    from factories import load_folder

    pipe = load_folder(sd1_folder)
    pipe.load_lora_weights(str(sd1_lora[0]), adapter_name="mira")
    assert "mira" in pipe.get_list_adapters()["unet"]


def test_the_lora_steers_generation_and_weight_0_is_the_base_image(sd1_lora, train_engine):
    recipe = dict(prompt="mira_character, a red square", seed=7, steps=3, width=RES, height=RES, model="tiny-sd1")
    base = np.asarray(train_engine.generate(Recipe(**recipe)).images[0])
    at_0 = np.asarray(train_engine.generate(Recipe(**{**recipe, "prompt": recipe["prompt"] + " <lora:mira_character:0>"})).images[0])
    at_1 = np.asarray(train_engine.generate(Recipe(**{**recipe, "prompt": recipe["prompt"] + " <lora:mira_character:1>"})).images[0])
    assert np.array_equal(base, at_0)
    assert np.abs(base.astype(int) - at_1.astype(int)).mean() > 0.5


def test_an_sdxl_single_file_lora_uses_kohyas_sgm_names_and_loads(library, train_home, train_engine):
    from localdiffusion.train.lora import LoraTrainer

    trainer = LoraTrainer(library, train_home.root / "dataset", model="tiny-xl", trigger="xl_character",
                          settings=settings(steps=3, train_text_encoder=True))
    path = trainer.run()
    with safe_open(str(path), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    # sgm numbers input blocks 1 + block * (layers + 1) + layer: the tiny SDXL (1 layer per block) has its first
    # attention in down block 1, sgm's input block 3 (real SDXL, with 2 layers per block: input block 4)
    assert "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k.lora_up.weight" in keys
    assert "lora_unet_output_blocks_0_1_transformer_blocks_1_attn1_to_v.alpha" in keys
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
    assert "lora_te2_text_model_encoder_layers_2_self_attn_out_proj.lora_up.weight" in keys
    library.rescan()
    recipe = dict(prompt="xl_character", seed=3, steps=2, width=RES, height=RES, model="tiny-xl")
    base = np.asarray(train_engine.generate(Recipe(**recipe)).images[0])
    at_0 = np.asarray(train_engine.generate(Recipe(**{**recipe, "prompt": "xl_character <lora:xl_character:0>"})).images[0])
    at_1 = np.asarray(train_engine.generate(Recipe(**{**recipe, "prompt": "xl_character <lora:xl_character:1>"})).images[0])
    assert np.array_equal(base, at_0) and not np.array_equal(base, at_1)


def test_an_embedding_loads_as_a1111s_and_its_word_changes_the_conditioning(library, train_home):
    from factories import load_folder

    from localdiffusion.prompts.embeddings import load_embedding
    from localdiffusion.prompts.encoder import PromptEncoder
    from localdiffusion.train.embedding import EmbeddingTrainer

    trainer = EmbeddingTrainer(library, train_home.root / "dataset", model="tiny-sd1", token="mira",
                               settings=settings(steps=20, vectors=2, init_word="girl", learning_rate=5e-2))
    before = trainer.training.measure(draws=4)
    start = trainer.trainee.vectors[0].detach().clone()
    path = trainer.run()
    assert trainer.training.measure(draws=4) < before
    assert path == train_home.model_dir("embedding") / "local" / "mira.safetensors"
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == {"emb_params"}
    embedding = load_embedding(path)
    assert embedding.vectors.shape == (2, 64) and not torch.equal(embedding.vectors, start)
    pipe = load_folder(Path(library.get("tiny-sd1").path))
    plain = PromptEncoder.from_pipeline(pipe).encode("a picture of mira").embeds
    with_word = PromptEncoder.from_pipeline(pipe, embeddings={"mira": path}).encode("a picture of mira").embeds
    assert not torch.equal(plain, with_word)


def test_a_crashed_run_resumes_from_its_checkpoint_and_ends_where_an_unbroken_run_ends(library, train_home, tmp_path):
    from localdiffusion.train.lora import LoraTrainer

    def trainer(out: Path) -> LoraTrainer:
        return LoraTrainer(library, train_home.root / "dataset", model="tiny-sd1", trigger="resume",
                           settings=settings(steps=8, save_every=3), out_dir=out)

    whole = trainer(tmp_path / "whole")
    whole.training.run()
    expected = {k: v.detach().clone() for k, v in whole.trainee.weights().items()}

    class Crash(Exception):
        pass

    def crash_at_5(p):
        if p.step == 5:
            raise Crash  # as a kill -9 after step 5: nothing more is written

    out = tmp_path / "broken"
    with pytest.raises(Crash):
        trainer(out).training.run(on_progress=crash_at_5)
    state = json.loads((out / "state.json").read_text())
    assert state["step"] == 3 and state["checkpoint"] == "checkpoint-000003.pt"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-000003.pt", "state.json"]  # nothing half-written

    (out / ".checkpoint-000006.pt.x1y2.pt.tmp").write_bytes(b"half")  # what a kill -9 mid-write leaves behind
    steps: list[int] = []
    resumed = trainer(out)
    resumed.training.run(on_progress=lambda p: steps.append(p.step))
    assert steps == [4, 5, 6, 7, 8]
    assert not list(out.glob(".*.tmp"))  # the resumed run cleared it
    for key, tensor in resumed.trainee.weights().items():
        assert torch.allclose(tensor, expected[key], atol=1e-6), key


def test_cancel_keeps_the_steps_done_and_the_next_run_goes_on(library, train_home, tmp_path):
    from localdiffusion.train.lora import LoraTrainer

    seen: list[int] = []
    trainer = LoraTrainer(library, train_home.root / "dataset", model="tiny-sd1", trigger="cancel",
                          settings=settings(steps=6, save_every=100), out_dir=tmp_path / "run")
    with pytest.raises(Cancelled, match="after step 2 of 6"):
        trainer.training.run(on_progress=lambda p: seen.append(p.step), cancel=lambda: len(seen) >= 2)
    assert json.loads((tmp_path / "run" / "state.json").read_text())["step"] == 2
    again = LoraTrainer(library, train_home.root / "dataset", model="tiny-sd1", trigger="cancel",
                        settings=settings(steps=6, save_every=100), out_dir=tmp_path / "run")
    steps: list[int] = []
    again.training.run(on_progress=lambda p: steps.append(p.step))
    assert steps == [3, 4, 5, 6]


def test_a_run_with_other_settings_in_the_same_folder_is_refused(library, train_home, tmp_path):
    from localdiffusion.errors import BadInput
    from localdiffusion.train.lora import LoraTrainer

    LoraTrainer(library, train_home.root / "dataset", model="tiny-sd1", trigger="same",
                settings=settings(steps=1), out_dir=tmp_path / "run").training.run()
    other = LoraTrainer(library, train_home.root / "dataset", model="tiny-sd1", trigger="same",
                        settings=settings(steps=1, rank=8), out_dir=tmp_path / "run")
    with pytest.raises(BadInput, match="another settings"):
        other.training.run()


def test_cli_trains_a_lora_and_an_embedding(capsys, train_home):
    from cli_runner import run_cli

    dataset = train_home.root / "dataset"
    code, out, err = run_cli(capsys, "train", "lora", dataset, "--model", "tiny-sd1", "--trigger", "cli_char",
                             "--steps", "2", "--rank", "2", "--out", "cli-lora", "--resolution", RES, "--home", train_home.root)
    assert code == 0, err
    path = train_home.model_dir("lora") / "local" / "cli-lora.safetensors"
    assert str(path) in out.replace("\n", "")
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["ss_network_dim"] == "2" and f.metadata()["ss_steps"] == "2"
    code, out, err = run_cli(capsys, "train", "embedding", dataset, "--model", "tiny-sd1", "--token", "cli_word",
                             "--vectors", "3", "--steps", "2", "--resolution", RES, "--home", train_home.root)
    assert code == 0, err
    with safe_open(str(train_home.model_dir("embedding") / "local" / "cli_word.safetensors"), "pt") as f:
        assert f.get_tensor("emb_params").shape == (3, 64)


def test_cli_refuses_a_bad_dataset_in_one_sentence(capsys, train_home, tmp_path):
    from cli_runner import run_cli

    make_dataset(tmp_path / "one", count=1)
    code, _, err = run_cli(capsys, "train", "lora", tmp_path / "one", "--model", "tiny-sd1", "--trigger", "x",
                           "--home", train_home.root)
    assert code == 2 and "picture0.png" in err and "at least 2 pictures" in err and "Traceback" not in err
