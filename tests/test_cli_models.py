import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from localdiffusion.cli.app import main
from localdiffusion.errors import BadInput, ModelNotFound, OfflineError
from localdiffusion.models import hub
from localdiffusion.models.hashing import sha256_file
from localdiffusion.store.db import Database

SD1_CHECKPOINT = {
    "model.diffusion_model.input_blocks.0.0.weight": (32, 4, 3, 3),
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
}
SD1_LORA = {"lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768)}


def write_model(path, shapes):
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.randn(s) for k, s in shapes.items()}, str(path))
    return path


def run(capsys, *args):
    """Run the CLI in-process; (exit code, stdout, stderr)."""
    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- list / add / rescan ------------------------------------------------------------------


def test_list_json_has_hashes_and_model_info_fields(capsys, home):
    ckpt = write_model(home.model_dir("checkpoint") / "dreamy.safetensors", SD1_CHECKPOINT)
    write_model(home.model_dir("lora") / "styled.safetensors", SD1_LORA)
    code, out, err = run(capsys, "models", "list", "--json", "--home", str(home.root))
    assert code == 0, err
    models = {m["name"]: m for m in json.loads(out)}
    assert set(models) == {"dreamy", "styled"}
    dreamy = models["dreamy"]
    assert dreamy["kind"] == "checkpoint" and dreamy["family"] == "sd1" and dreamy["format"] == "safetensors"
    assert dreamy["sha256"] == sha256_file(ckpt) and dreamy["short_hash"] == dreamy["sha256"][:10]
    assert dreamy["path"] == str(ckpt.resolve()) and dreamy["size"] == ckpt.stat().st_size
    assert len(models["styled"]["short_hash"]) == 12
    code, out, _ = run(capsys, "models", "list", "--json", "--kind", "lora", "--home", str(home.root))
    assert [m["name"] for m in json.loads(out)] == ["styled"]


def test_list_table_and_problems(capsys, home):
    write_model(home.model_dir("checkpoint") / "dreamy.safetensors", SD1_CHECKPOINT)
    (home.model_dir("checkpoint") / "old.ckpt").write_bytes(b"pickle bytes")
    (home.model_dir("lora") / "junk.safetensors").write_bytes(b"junk")
    code, out, err = run(capsys, "models", "list", "--home", str(home.root))
    assert code == 0
    for text in ("dreamy", "checkpoint", "sd1", "safetensors", "old", "pickle"):
        assert text in out
    assert "Skipped" in err and "junk.safetensors" in err


def test_list_keeps_names_whole_on_a_narrow_terminal(capsys, home, monkeypatch):
    from rich.console import Console

    from localdiffusion.cli import models as cli_models

    long_name = "realisticVisionV60B1_v51HyperVAE-inpainting-fp16"
    write_model(home.model_dir("checkpoint") / f"{long_name}.safetensors", SD1_CHECKPOINT)
    write_model(home.model_dir("lora") / "styled.safetensors", SD1_LORA)
    for width in (60, 40, 200):
        monkeypatch.setattr(cli_models, "out", Console(width=width, emoji=False))
        code, out, err = run(capsys, "models", "list", "--home", str(home.root))
        assert code == 0, err
        assert long_name in out and "styled" in out and "…" not in out, out
        lines = out.splitlines()
        assert all(len(line) <= width for line in lines if long_name not in line)
        assert "checkpoint" in out and "safetensors" in out and ("lora" in out)
    assert "┃ name" in out  # wide enough: a table


def test_a_folder_and_a_file_of_one_model_are_listed_under_two_names(capsys, home, sd1_folder):
    os.symlink(sd1_folder, home.model_dir("checkpoint") / "tiny-sd1")
    write_model(home.model_dir("checkpoint") / "tiny-sd1.safetensors", SD1_CHECKPOINT)
    code, out, err = run(capsys, "models", "list", "--json", "--home", str(home.root))
    assert code == 0, err
    assert sorted((m["name"], m["format"]) for m in json.loads(out)) == [("tiny-sd1", "diffusers"), ("tiny-sd1.safetensors", "safetensors")]


def test_list_empty_home_says_how_to_add(capsys, home):
    code, out, _ = run(capsys, "models", "list", "--home", str(home.root))
    assert code == 0 and "models add PATH" in out


def test_bad_kind_is_one_sentence_and_non_zero(capsys, home):
    code, out, err = run(capsys, "models", "list", "--kind", "sampler", "--home", str(home.root))
    assert code == 2 and "Unknown model kind 'sampler'" in err and "Traceback" not in err


def test_add_then_list(capsys, home, tmp_path, sd1_folder):
    code, out, err = run(capsys, "models", "add", str(sd1_folder), "--home", str(home.root))
    assert code == 0, err
    assert "Added tiny-sd1" in out and "sd1 checkpoint" in out
    code, out, _ = run(capsys, "models", "list", "--json", "--home", str(home.root))
    (model,) = json.loads(out)
    assert model["name"] == "tiny-sd1" and model["format"] == "diffusers"
    assert model["sha256"] == sha256_file(sd1_folder / "unet" / "diffusion_pytorch_model.safetensors")


def test_add_a_bad_path_fails_cleanly(capsys, home, tmp_path):
    code, _, err = run(capsys, "models", "add", str(tmp_path / "nope.safetensors"), "--home", str(home.root))
    assert code == 2 and "no file or folder" in err
    with Database(home.db_path) as db:
        assert db.registered_model_paths() == []


def test_rescan_reports_counts_and_problems(capsys, home):
    write_model(home.model_dir("checkpoint") / "a.safetensors", SD1_CHECKPOINT)
    write_model(home.model_dir("lora") / "b.safetensors", SD1_LORA)
    (home.model_dir("lora") / "junk.safetensors").write_bytes(b"junk")
    code, out, err = run(capsys, "models", "rescan", "--home", str(home.root))
    assert code == 0
    assert "1 checkpoint" in out and "1 lora" in out and "junk.safetensors" in err


def test_python_dash_m_list_json(home):
    write_model(home.model_dir("checkpoint") / "dreamy.safetensors", SD1_CHECKPOINT)
    env = {**os.environ, "LOCALDIFFUSION_HOME": str(home.root)}
    proc = subprocess.run([sys.executable, "-m", "localdiffusion", "models", "list", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [m["name"] for m in json.loads(proc.stdout)] == ["dreamy"]


# -- models pull: never reaches the network ---------------------------------------------

SD15_FILES = [
    ".gitattributes", "README.md", "model_index.json", "v1-5-pruned.safetensors", "v1-5-pruned.ckpt",
    "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json",
    "safety_checker/config.json", "safety_checker/model.safetensors", "safety_checker/pytorch_model.bin",
    "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors",
    "text_encoder/pytorch_model.bin",
    "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.non_ema.bin", "unet/diffusion_pytorch_model.bin",
    "vae/config.json", "vae/diffusion_pytorch_model.bin",
]


def test_choose_files_keeps_configs_and_one_set_of_weights():
    chosen = hub.choose_files(SD15_FILES)
    assert "v1-5-pruned.safetensors" not in chosen and "v1-5-pruned.ckpt" not in chosen
    assert "unet/diffusion_pytorch_model.safetensors" in chosen
    assert not any(f.startswith("unet/") and f.endswith(".bin") for f in chosen)
    assert "unet/diffusion_pytorch_model.fp16.safetensors" not in chosen
    assert "vae/diffusion_pytorch_model.bin" in chosen  # no safetensors there: .bin is all there is
    assert "text_encoder/model.safetensors" in chosen and "text_encoder/pytorch_model.bin" not in chosen
    assert "tokenizer/merges.txt" in chosen and "model_index.json" in chosen and ".gitattributes" not in chosen
    fp16 = hub.choose_files(SD15_FILES, "fp16")
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in fp16 and "unet/diffusion_pytorch_model.safetensors" not in fp16
    assert "vae/diffusion_pytorch_model.bin" in fp16  # fp32 when there is no fp16


def online(monkeypatch):
    """Lift the test suite's offline switches; the tests replace every function that would use the network."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def _no_network(*args, **kwargs):
    raise AssertionError("the network must not be used")


def test_pull_refuses_when_offline(monkeypatch, home):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_list_files", _no_network)
    monkeypatch.setattr(hub, "_download_file", _no_network)
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        hub.pull("someone/tiny", home)
    with pytest.raises(OfflineError):
        hub.pull("someone/tiny", home, filename="model.safetensors")


def test_connection_failures_become_offline_errors(monkeypatch, home):
    import httpx2
    from huggingface_hub.errors import LocalEntryNotFoundError

    online(monkeypatch)
    for error in [httpx2.ConnectError("no route"), LocalEntryNotFoundError("not cached"), ConnectionError("down")]:
        monkeypatch.setattr(hub, "_list_files", lambda *a, e=error: (_ for _ in ()).throw(e))
        with pytest.raises(OfflineError, match="Could not reach"):
            hub.pull("someone/tiny", home)
    assert list(home.model_dir("checkpoint").iterdir()) == []


def test_hub_errors_become_sentences(monkeypatch, home):
    import httpx2
    from huggingface_hub.errors import RepositoryNotFoundError

    response = httpx2.Response(404, request=httpx2.Request("GET", "http://127.0.0.1/api/models/x/y"))
    online(monkeypatch)
    monkeypatch.setattr(hub, "_list_files", lambda *a: (_ for _ in ()).throw(RepositoryNotFoundError("404", response=response)))
    with pytest.raises(ModelNotFound, match="no repository 'x/y'"):
        hub.pull("x/y", home)
    with pytest.raises(BadInput, match="OWNER/NAME"):
        hub.pull("not a repo id", home)
    monkeypatch.setattr(hub, "_list_files", lambda *a: ["README.md", "model.safetensors"])
    with pytest.raises(BadInput, match="--file"):
        hub.pull("x/single", home)


def _fake_snapshot(source: Path, fail_after: int | None = None):
    def snapshot(repo_id, revision, local_dir, allow_patterns):
        for i, rel in enumerate(allow_patterns):
            if fail_after is not None and i == fail_after:
                raise ConnectionError("connection reset")
            if (source / rel).is_file():
                (local_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source / rel, local_dir / rel)
        (local_dir / ".cache" / "huggingface").mkdir(parents=True)
    return snapshot


def _listing(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]


def test_pull_downloads_into_a_temp_folder_then_renames(monkeypatch, home, sd1_folder):
    online(monkeypatch)
    monkeypatch.setattr(hub, "_list_files", lambda *a: _listing(sd1_folder) + ["tiny.ckpt"])
    monkeypatch.setattr(hub, "_snapshot", _fake_snapshot(sd1_folder, fail_after=3))
    with pytest.raises(OfflineError):
        hub.pull("someone/tiny-sd1", home)
    assert list(home.model_dir("checkpoint").iterdir()) == []  # nothing half-written is left
    monkeypatch.setattr(hub, "_snapshot", _fake_snapshot(sd1_folder))
    path = hub.pull("someone/tiny-sd1", home)
    assert path == home.model_dir("checkpoint") / "tiny-sd1"
    assert sorted(p.name for p in home.model_dir("checkpoint").iterdir()) == ["tiny-sd1"]
    assert not (path / ".cache").exists() and (path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    monkeypatch.setattr(hub, "_list_files", _no_network)
    assert hub.pull("someone/tiny-sd1", home) == path  # already there: no download


def test_pull_one_file(monkeypatch, home, tmp_path):
    source = write_model(tmp_path / "remote" / "loras" / "styled.safetensors", SD1_LORA)
    online(monkeypatch)

    def download(repo_id, revision, local_dir, filename):
        (local_dir / filename).parent.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(source, local_dir / filename))

    monkeypatch.setattr(hub, "_download_file", download)
    path = hub.pull("someone/loras", home, filename="loras/styled.safetensors", kind="lora")
    assert path == home.model_dir("lora") / "styled.safetensors" and path.read_bytes() == source.read_bytes()
    assert [p.name for p in home.model_dir("lora").iterdir()] == ["styled.safetensors"]


def test_cli_pull(capsys, monkeypatch, home, sd1_folder):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run(capsys, "models", "pull", "someone/tiny-sd1", "--home", str(home.root))
    assert code == 2 and "HF_HUB_OFFLINE" in err and "Traceback" not in err
    online(monkeypatch)
    monkeypatch.setattr(hub, "_list_files", lambda *a: _listing(sd1_folder))
    monkeypatch.setattr(hub, "_snapshot", _fake_snapshot(sd1_folder))
    code, out, err = run(capsys, "models", "pull", "someone/tiny-sd1", "--home", str(home.root))
    assert code == 0, err
    assert "Downloaded: tiny-sd1 (sd1 checkpoint, diffusers" in out
    code, out, _ = run(capsys, "models", "pull", "someone/tiny-sd1", "--home", str(home.root))
    assert "Already present" in out
