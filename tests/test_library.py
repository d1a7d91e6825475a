import json
import os

import pytest
import torch
from safetensors.torch import save_file

from localdiffusion.errors import BadInput, ModelNotFound, UnsupportedModel
from localdiffusion.models import library as libmod
from localdiffusion.models.hashing import legacy_model_hash, sha256_file
from localdiffusion.models.library import ModelLibrary, roots_of_extra
from localdiffusion.store.db import Database
from localdiffusion.store.home import Settings

# Single files that detect() recognises from their tensor names and shapes alone.
SD1_CHECKPOINT = {
    "model.diffusion_model.input_blocks.0.0.weight": (32, 4, 3, 3),
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
}
SD1_LORA = {
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, 4),
}
SD1_EMBEDDING = {"emb_params": (2, 768)}
VAE = {"encoder.conv_in.weight": (8, 3, 3, 3), "decoder.conv_in.weight": (8, 4, 3, 3)}


def write_model(path, shapes, seed=0):
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.randn(s) for k, s in shapes.items()}, str(path))
    return path


@pytest.fixture
def db(home):
    with Database(home.db_path) as database:
        yield database


def make_library(home, db, accept_paths=False, **settings):
    if settings:
        home.save_settings(Settings(**settings))
    return ModelLibrary(home, db, accept_paths=accept_paths)


def test_scan_reads_the_home_layout_and_detection_decides_the_kind(home, db):
    write_model(home.model_dir("checkpoint") / "dreamy.safetensors", SD1_CHECKPOINT)
    # A LoRA misplaced among the checkpoints is still a LoRA.
    write_model(home.model_dir("checkpoint") / "sub" / "styled.safetensors", SD1_LORA)
    write_model(home.model_dir("embedding") / "badhands.safetensors", SD1_EMBEDDING)
    write_model(home.model_dir("vae") / "clear-vae.safetensors", VAE)
    (home.model_dir("checkpoint") / "dreamy.preview.png").write_bytes(b"png")  # ignored: not a model suffix
    library = make_library(home, db)
    kinds = {m.name: (m.kind, m.family, m.format) for m in library.list()}
    assert kinds == {
        "dreamy": ("checkpoint", "sd1", "safetensors"),
        "styled": ("lora", "sd1", "safetensors"),
        "badhands": ("embedding", "sd1", "safetensors"),
        "clear-vae": ("vae", "unknown", "safetensors"),
    }
    assert [m.name for m in library.list("lora")] == ["styled"]
    assert library.problems == []
    dreamy = library.get("dreamy")
    assert dreamy.size == dreamy.path.stat().st_size and dreamy.sha256 is None  # hashes are lazy


def test_scan_recognises_real_tiny_models_of_every_kind(home, db, sd1_folder):
    from factories import build_controlnet, build_embedding, build_lora, build_single_file, build_vae_file

    # Neutral names in one folder: only detection can tell these apart.
    drop = home.model_dir("checkpoint")
    build_single_file(sd1_folder, drop / "a.safetensors")
    build_lora(sd1_folder, drop / "b.safetensors")
    build_embedding(drop / "c.safetensors")
    build_vae_file(sd1_folder, drop / "d.safetensors")
    build_controlnet(sd1_folder, drop / "e")
    build_embedding(home.model_dir("embedding") / "f.pt")
    library = make_library(home, db)
    found = {m.name: (m.kind, m.format) for m in library.list()}
    assert found == {
        "a": ("checkpoint", "safetensors"),
        "b": ("lora", "safetensors"),
        "c": ("embedding", "safetensors"),
        "d": ("vae", "safetensors"),
        "e": ("controlnet", "diffusers"),
        "f": ("embedding", "ckpt"),  # a pickle: listed from its folder, never opened
    }, library.problems
    assert library.get("a").family == "sd1" and library.get("f", kind="embedding").family == "unknown"
    allowed = make_library(home, db, allow_pickle=True)
    assert allowed.get("f", kind="embedding").format == "ckpt"


def test_files_that_are_not_models_are_noted_not_fatal(home, db):
    write_model(home.model_dir("lora") / "tensors.safetensors", {"foo": (3,)})
    (home.model_dir("lora") / "broken.safetensors").write_bytes(b"\x01\x02not safetensors")
    write_model(home.model_dir("lora") / "ok.safetensors", SD1_LORA)
    library = make_library(home, db)
    assert [m.name for m in library.list()] == ["ok"]
    assert len(library.problems) == 2
    assert any("tensors.safetensors" in p for p in library.problems)
    assert any("broken.safetensors" in p for p in library.problems)


def test_pickles_are_listed_but_flagged_and_never_opened(home, db, monkeypatch):
    (home.model_dir("checkpoint") / "old.ckpt").write_bytes(b"pickle bytes")
    (home.model_dir("embedding") / "style.pt").write_bytes(b"pickle bytes")
    write_model(home.model_dir("checkpoint") / "safe.safetensors", SD1_CHECKPOINT)
    extra = home.root.parent / "loose"
    extra.mkdir()
    (extra / "mystery.pt").write_bytes(b"pickle bytes")
    opened = []
    real = libmod.detect
    monkeypatch.setattr(libmod, "detect", lambda p, allow_pickle=False: opened.append(p) or real(p, allow_pickle))
    library = make_library(home, db, extra_roots=[str(extra)])
    by_name = {m.name: m for m in library.list()}
    assert (by_name["old"].kind, by_name["old"].format, by_name["old"].family) == ("checkpoint", "ckpt", "unknown")
    assert by_name["style"].kind == "embedding"
    assert "mystery" not in by_name and any("mystery.pt" in p and "allow_pickle" in p for p in library.problems)
    assert all(p.suffix == ".safetensors" for p in opened)
    assert library.default_checkpoint().name == "safe"  # a loadable one first


def test_extra_roots_in_a1111_and_comfyui_layouts_are_read_in_place(home, db, tmp_path, sd1_folder):
    webui = tmp_path / "stable-diffusion-webui"
    write_model(webui / "models" / "Stable-diffusion" / "webui-ckpt.safetensors", SD1_CHECKPOINT)
    write_model(webui / "embeddings" / "webui-emb.safetensors", SD1_EMBEDDING)
    a1111_models = tmp_path / "other-webui" / "models"
    write_model(a1111_models / "Lora" / "a1111-lora.safetensors", SD1_LORA)
    comfy = tmp_path / "ComfyUI"
    write_model(comfy / "models" / "loras" / "comfy-lora.safetensors", SD1_LORA, seed=1)
    (comfy / "models" / "diffusers").mkdir(parents=True)
    os.symlink(sd1_folder, comfy / "models" / "diffusers" / "linked-sd1")
    comfy_models = tmp_path / "comfy2" / "models"
    write_model(comfy_models / "vae" / "comfy-vae.safetensors", VAE)
    plain = tmp_path / "downloads"
    write_model(plain / "nested" / "plain-lora.safetensors", SD1_LORA, seed=2)

    roots = [webui, a1111_models, comfy, comfy_models, plain, tmp_path / "missing"]
    library = make_library(home, db, extra_roots=[str(r) for r in roots])
    by_name = {m.name: m for m in library.list()}
    assert set(by_name) == {"webui-ckpt", "webui-emb", "a1111-lora", "comfy-lora", "linked-sd1", "comfy-vae", "plain-lora"}
    linked = by_name["linked-sd1"]
    assert (linked.kind, linked.family, linked.format, linked.prediction_type) == ("checkpoint", "sd1", "diffusers", "epsilon")
    assert linked.path == sd1_folder.resolve()  # read where it is, never copied
    assert not any(home.root.rglob("*.safetensors"))
    assert [p for p in library.problems if "missing" in p]
    # Given a webui's models folder, its embeddings (beside it) are read too.
    write_model(a1111_models.parent / "embeddings" / "e.safetensors", SD1_EMBEDDING)
    assert [(r.path.name, r.hint) for r in roots_of_extra(a1111_models)] == [("Lora", "lora"), ("embeddings", "embedding")]
    assert [(r.path.name, r.hint) for r in roots_of_extra(plain)] == [("downloads", None)]


def test_get_by_name_title_hash_and_path(home, db, tmp_path):
    path = write_model(home.model_dir("checkpoint") / "Dreamy_V2.safetensors", SD1_CHECKPOINT)
    write_model(home.model_dir("checkpoint") / "realistic.safetensors", SD1_CHECKPOINT, seed=3)
    write_model(home.model_dir("lora") / "dreamy_v2.safetensors", SD1_LORA)
    library = make_library(home, db, accept_paths=True)
    full = sha256_file(path)
    for query in ["Dreamy_V2", "dreamy_v2", "DREAMY_V2.safetensors", f"Dreamy_V2.safetensors [{full[:10]}]",
                  "sub\\Dreamy_V2.safetensors", full[:10], full, legacy_model_hash(path), str(path)]:
        assert library.get(query).path == path.resolve(), query
    assert library.get("dreamy_v2", kind="lora").kind == "lora"
    assert library.get("dreamy_v2", kind=None).kind == "checkpoint"  # home order: checkpoints first
    # A title whose name no longer matches (renamed file) still finds the model by its hash.
    assert library.get(f"old-name.safetensors [{full[:10]}]").path == path.resolve()
    assert library.get(None).path == library.get("").path == path.resolve()  # nothing named: the default checkpoint


def test_a_library_without_paths_refuses_them_naming_the_field(home, db, tmp_path):
    path = write_model(home.model_dir("checkpoint") / "dreamy.safetensors", SD1_CHECKPOINT)
    loose = write_model(tmp_path / "elsewhere" / "loose.safetensors", SD1_CHECKPOINT, seed=1)
    library = make_library(home, db)  # the studio's: names come from requests
    for query in (str(path), str(loose), "../dreamy", "sub\\dreamy.safetensors"):
        with pytest.raises(BadInput, match="looks like a path") as e:
            library.get(query, field="model")
        assert e.value.field == "model"
    assert db.registered_model_paths() == [] and [m.name for m in library.list()] == ["dreamy"]
    with pytest.raises(ModelNotFound) as e:
        library.get("nope", kind="lora", field="references.0.model")
    assert e.value.field == "references.0.model"


def test_a_path_outside_the_library_is_added_in_place_and_resolves_again(home, db, tmp_path):
    loose = write_model(tmp_path / "elsewhere" / "loose.safetensors", SD1_LORA)
    ckpt = write_model(tmp_path / "elsewhere" / "loose-ckpt.safetensors", SD1_CHECKPOINT)
    library = make_library(home, db, accept_paths=True)
    with pytest.raises(ModelNotFound, match="is a lora, not a checkpoint"):
        library.get(str(loose))
    assert db.registered_model_paths() == []  # the wrong kind registers nothing
    info = library.get(str(loose), kind="lora")
    assert (info.name, info.path) == ("loose", loose.resolve())
    assert db.registered_model_paths() == [loose.resolve()]  # as `models add` would, read in place
    assert not any(home.root.rglob("*.safetensors"))
    # What a recipe records (the name) resolves again, in this library and in the studio's.
    assert library.get("loose", kind="lora") is info
    studio = ModelLibrary(home, db)
    assert studio.get("loose", kind="lora").path == loose.resolve()
    assert library.get(str(loose), kind="lora") is info  # once added, the same model
    # A bare relative file name works too, from the folder it sits in.
    import os as _os

    here = _os.getcwd()
    _os.chdir(ckpt.parent)
    try:
        assert library.get("loose-ckpt.safetensors").path == ckpt.resolve()
    finally:
        _os.chdir(here)
    with pytest.raises(ModelNotFound, match="no file or folder at"):
        library.get(str(tmp_path / "missing" / "nope.safetensors"))


def test_unknown_names_list_the_closest(home, db):
    write_model(home.model_dir("checkpoint") / "dreamshaper_8.safetensors", SD1_CHECKPOINT)
    write_model(home.model_dir("checkpoint") / "realisticVision.safetensors", SD1_CHECKPOINT, seed=1)
    library = make_library(home, db)
    with pytest.raises(ModelNotFound) as e:
        library.get("dreamshaper")
    assert "'dreamshaper'" in str(e.value) and "'dreamshaper_8'" in str(e.value) and "realistic" not in str(e.value)
    with pytest.raises(ModelNotFound) as e:
        library.get("zzz")
    assert "'dreamshaper_8'" in str(e.value) and "'realisticVision'" in str(e.value)
    with pytest.raises(ModelNotFound, match="models add"):
        library.get("zzz", kind="lora")
    with pytest.raises(BadInput, match="Unknown model kind"):
        library.list("sampler")


def test_default_checkpoint_explains_how_to_add_one(home, db):
    library = make_library(home, db)
    with pytest.raises(ModelNotFound) as e:
        library.default_checkpoint()
    message = str(e.value)
    assert "models add PATH" in message and "models pull REPO_ID" in message and "extra_roots" in message
    with pytest.raises(ModelNotFound, match="models pull"):
        library.get("anything")


def test_ensure_hash_for_a_diffusers_folder_hashes_its_unet(home, db, sd1_folder):
    library = make_library(home, db, extra_roots=[str(sd1_folder.parent)])
    info = library.ensure_hash(library.get("tiny-sd1"))
    unet = sha256_file(sd1_folder / "unet" / "diffusion_pytorch_model.safetensors")
    assert (info.sha256, info.short_hash) == (unet, unet[:10])
    assert library.get(unet[:10]) is info
    # Cached in the database: a fresh library does not read the weights again.
    assert db.cached_hash((sd1_folder / "unet" / "diffusion_pytorch_model.safetensors").resolve(),
                          info_size(sd1_folder), info_mtime(sd1_folder)) == unet


def info_size(folder):
    return (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size


def info_mtime(folder):
    return (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns


def test_lora_hash_is_a1111s(home, db):
    path = write_model(home.model_dir("lora") / "styled.safetensors", SD1_LORA)
    library = make_library(home, db)
    info = library.ensure_hash(library.get("styled", kind="lora"))
    assert len(info.short_hash) == 12 and info.sha256 != sha256_file(path)
    assert library.get(info.short_hash, kind="lora") is info


def test_add_registers_in_place_and_persists(home, db, tmp_path, sd1_folder):
    loose = write_model(tmp_path / "elsewhere" / "loose.safetensors", SD1_LORA)
    library = make_library(home, db)
    library.list()
    info = library.add(loose)
    assert (info.name, info.kind, info.path) == ("loose", "lora", loose.resolve())
    assert library.get("loose", kind="lora") is info  # visible without a rescan
    assert library.add(sd1_folder).format == "diffusers"
    fresh = ModelLibrary(home, db)
    assert {m.name for m in fresh.list()} == {"loose", "tiny-sd1"}
    assert db.registered_model_paths() == [loose.resolve(), sd1_folder.resolve()]


def test_add_refuses_bad_paths_and_registers_nothing(home, db, tmp_path):
    library = make_library(home, db)
    with pytest.raises(BadInput, match="no file or folder"):
        library.add(tmp_path / "nope.safetensors")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UnsupportedModel, match="notes.txt"):
        library.add(tmp_path / "notes.txt")
    with pytest.raises(UnsupportedModel):
        library.add(write_model(tmp_path / "tensors.safetensors", {"foo": (3,)}))
    (tmp_path / "a-folder").mkdir()
    with pytest.raises(BadInput, match="extra_roots"):
        library.add(tmp_path / "a-folder")
    (tmp_path / "old.ckpt").write_bytes(b"pickle")
    with pytest.raises(UnsupportedModel, match="allow_pickle"):
        library.add(tmp_path / "old.ckpt")
    assert db.registered_model_paths() == []


def test_scan_is_cached_and_notices_new_models_without_a_rescan(home, db, monkeypatch):
    write_model(home.model_dir("checkpoint") / "one.safetensors", SD1_CHECKPOINT)
    calls = []
    real = libmod.detect
    monkeypatch.setattr(libmod, "detect", lambda p, allow_pickle=False: calls.append(p.name) or real(p, allow_pickle))
    library = make_library(home, db)
    assert [m.name for m in library.list()] == ["one"]
    library.list("checkpoint")
    library.get("one")
    assert calls == ["one.safetensors"]
    # A file dropped into a model folder, even a new sub-folder, shows up at the next read.
    write_model(home.model_dir("checkpoint") / "more" / "two.safetensors", SD1_CHECKPOINT, seed=1)
    assert sorted(m.name for m in library.list()) == ["one", "two"]
    assert calls == ["one.safetensors", "two.safetensors"]  # the unchanged file is not read again
    (home.model_dir("checkpoint") / "one.safetensors").unlink()
    assert [m.name for m in library.list()] == ["two"]
    assert [m.name for m in library.rescan()] == ["two"]
    assert calls[-1] == "two.safetensors"  # an explicit rescan reads every model again


def test_models_added_elsewhere_and_new_extra_roots_show_up(home, tmp_path):
    """A running server's library sees `models add` from another process and an edited settings.json."""
    loose = write_model(tmp_path / "elsewhere" / "loose.safetensors", SD1_CHECKPOINT)
    with Database(home.db_path) as server_db, Database(home.db_path) as cli_db:
        server = ModelLibrary(home, server_db)
        assert server.list() == []
        ModelLibrary(home, cli_db).add(loose)  # `localdiffusion models add` while the server runs
        assert [m.name for m in server.list()] == ["loose"]
        extra = tmp_path / "webui"
        write_model(extra / "models" / "Stable-diffusion" / "webui.safetensors", SD1_CHECKPOINT, seed=1)
        home.save_settings(Settings(extra_roots=[str(extra)]))
        assert [m.name for m in server.list()] == ["webui", "loose"]
        write_model(extra / "models" / "Lora" / "styled.safetensors", SD1_LORA)  # a new folder in the extra root
        assert [m.name for m in server.list("lora")] == ["styled"]


def test_every_model_gets_a_unique_name_and_a_bare_name_picks_one(home, db, tmp_path, sd1_folder):
    from factories import build_single_file

    drop = home.model_dir("checkpoint")
    os.symlink(sd1_folder, drop / "tiny-sd1")
    single = build_single_file(sd1_folder, drop / "tiny-sd1.safetensors")
    a = write_model(drop / "a" / "x.safetensors", SD1_CHECKPOINT)
    b = write_model(drop / "b" / "x.safetensors", SD1_CHECKPOINT, seed=1)
    (drop / "x.ckpt").write_bytes(b"pickle bytes")
    write_model(home.model_dir("lora") / "x.safetensors", SD1_LORA)  # another kind may share a name
    library = make_library(home, db)
    names = {m.name: m.path for m in library.list("checkpoint")}
    assert names == {"tiny-sd1": sd1_folder.resolve(), "tiny-sd1.safetensors": single.resolve(),
                     "a/x.safetensors": a.resolve(), "b/x.safetensors": b.resolve(), "x.ckpt": (drop / "x.ckpt").resolve()}
    assert [m.name for m in library.list("lora")] == ["x"]
    for name, path in names.items():  # every name resolves to its own model, in any case
        assert library.get(name).path == path and library.get(name.upper()).path == path
    # A bare name that several models answer to: the one it names, else the first listed.
    assert library.get("tiny-sd1").format == "diffusers"
    assert library.get("x").path == a.resolve() and library.get("x.safetensors").path == a.resolve()
    # A1111's title settles it by the hash.
    assert library.get(f"x.safetensors [{sha256_file(b)[:10]}]").path == b.resolve()
    # Names stay while the models of that name stay; a lone model again gets its plain name.
    (drop / "x.ckpt").unlink()
    b.unlink()
    assert {m.name for m in library.list("checkpoint")} == {"tiny-sd1", "tiny-sd1.safetensors", "x"}


def test_a_model_reached_twice_is_listed_once(home, db):
    path = write_model(home.model_dir("checkpoint") / "one.safetensors", SD1_CHECKPOINT)
    library = make_library(home, db, extra_roots=[str(home.root)])  # the home is an A1111 layout too
    library.add(path)
    assert [m.name for m in library.rescan()] == ["one"]


def test_a_registered_path_that_vanished_is_noted(home, db, tmp_path):
    loose = write_model(tmp_path / "loose.safetensors", SD1_LORA)
    library = make_library(home, db)
    library.add(loose)
    loose.unlink()
    assert library.rescan() == []
    assert any("loose.safetensors" in p and "gone" in p for p in library.problems)


def test_settings_file_is_respected_on_rescan(home, db, tmp_path):
    library = make_library(home, db)
    assert library.list() == []
    extra = tmp_path / "more"
    write_model(extra / "checkpoints" / "x.safetensors", SD1_CHECKPOINT)
    home.settings_path.write_text(json.dumps({"extra_roots": [str(extra)]}))
    assert [m.name for m in library.rescan()] == ["x"]
