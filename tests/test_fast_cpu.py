"""The fast CPU path: bf16 by default where the CPU computes it natively, and TAESD (a tiny approximate VAE)
from HOME/models/VAE-approx for previews and, when asked, for the final image."""

from __future__ import annotations

import json

import pytest
import torch

from localdiffusion.engine import device
from localdiffusion.engine.device import bf16_in_cpuinfo, cpu_has_bf16, pick_dtype
from localdiffusion.errors import BadInput

CPU = torch.device("cpu")

# /proc/cpuinfo of an AVX512-BF16 x86 CPU, one without, and an ARM one with bf16 (abridged).
X86_BF16 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu vme de pse tsc msr avx2 avx512f avx512_bf16 avx512_vnni
bugs\t\t: sysret_ss_attrs
"""
X86_AMX = "flags\t\t: fpu sse avx2 avx512f amx_tile amx_bf16 amx_int8\n"
X86_PLAIN = """processor\t: 0
model name\t: Intel(R) Core(TM) i7-8550U CPU @ 1.80GHz
flags\t\t: fpu vme de pse tsc msr sse sse2 avx avx2 fma avx512f
bugs\t\t: spectre_v1
"""
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics bf16 i8mm\n"
# A model name that mentions bf16 is not a flag.
NAMED_ONLY = "model name\t: Imaginary avx512_bf16 Edition\nflags\t\t: fpu sse avx2\n"


@pytest.mark.parametrize("text, expected", [
    (X86_BF16, True), (X86_AMX, True), (ARM_BF16, True), (X86_PLAIN, False), (NAMED_ONLY, False), ("", False),
])
def test_native_bf16_is_read_from_the_cpuinfo_flags(text, expected):
    assert bf16_in_cpuinfo(text) is expected


def test_the_detector_reads_cpuinfo_on_linux(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text(X86_BF16)
    monkeypatch.setattr(device, "Path", lambda _: fake)
    monkeypatch.setattr(device.sys, "platform", "linux")
    device.detect_cpu_bf16.cache_clear()
    try:
        assert device.detect_cpu_bf16() is True
        fake.write_text(X86_PLAIN)
        device.detect_cpu_bf16.cache_clear()
        assert device.detect_cpu_bf16() is False
    finally:
        device.detect_cpu_bf16.cache_clear()


def test_the_environment_variable_tells_the_detector(monkeypatch):
    monkeypatch.setattr(device, "detect_cpu_bf16", lambda: True)
    monkeypatch.setenv(device.BF16_ENV, "0")
    assert cpu_has_bf16() is False
    monkeypatch.setenv(device.BF16_ENV, "1")
    monkeypatch.setattr(device, "detect_cpu_bf16", lambda: False)
    assert cpu_has_bf16() is True
    monkeypatch.delenv(device.BF16_ENV)
    assert cpu_has_bf16() is False


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_the_cpu_default_is_bf16_only_where_the_cpu_has_it(monkeypatch, native, expected):
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: native)
    assert pick_dtype(CPU) == expected
    assert pick_dtype(CPU, "float32") == torch.float32  # --dtype wins
    monkeypatch.setattr(device, "cuda_bf16_supported", lambda: False)
    assert pick_dtype(torch.device("cuda")) == torch.float16  # GPUs keep their default (bf16 where supported: test_gpu_path)


def test_the_tests_run_in_fp32_whatever_the_cpu():
    """conftest tells the detector the CPU has no bf16, so exact-image tests compare fp32 images everywhere."""
    assert cpu_has_bf16() is False
    assert pick_dtype(CPU) == torch.float32


def test_an_unknown_precision_is_one_sentence():
    with pytest.raises(BadInput, match=r"Unknown precision 'float8'; use .*float32"):
        pick_dtype(CPU, "float8")


# -- the engine's precision: --dtype, settings.json, the default -----------------------------------


@pytest.fixture
def sd1_home(tmp_path, sd1_folder):
    from localdiffusion.store.home import Home

    home = Home(tmp_path / "home").ensure()
    (home.model_dir("checkpoint") / sd1_folder.name).symlink_to(sd1_folder, target_is_directory=True)
    return home


def engine_for(home, **options):
    from localdiffusion.engine import Engine, EngineOptions
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    return Engine(ModelLibrary(home, Database(home.db_path)), EngineOptions(device="cpu", **options))


def test_the_engine_defaults_to_bf16_on_a_bf16_cpu(monkeypatch, sd1_home):
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    assert engine_for(sd1_home).dtype == torch.bfloat16
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    assert engine_for(sd1_home).dtype == torch.float32


def test_settings_and_dtype_override_the_default(monkeypatch, sd1_home):
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    sd1_home.settings_path.write_text(json.dumps({"dtype": "float32"}))
    assert engine_for(sd1_home).dtype == torch.float32  # the settings beat the detector
    assert engine_for(sd1_home, dtype="bfloat16").dtype == torch.bfloat16  # --dtype beats the settings


def test_a_bad_dtype_in_the_settings_names_the_file(sd1_home):
    sd1_home.settings_path.write_text(json.dumps({"dtype": "half"}))
    with pytest.raises(BadInput, match=r"Unknown precision 'half' in .*settings\.json; use"):
        engine_for(sd1_home)


def test_a_bf16_run_records_the_same_recipe_and_infotext_as_fp32(sd1_home):
    from localdiffusion.recipe import Recipe

    recipe = Recipe(prompt="a cat", seed=3, steps=2, width=64, height=64, sampler_name="Euler", model="tiny-sd1")
    fp32 = engine_for(sd1_home, dtype="float32").generate(recipe)
    bf16 = engine_for(sd1_home, dtype="bfloat16").generate(recipe)
    assert bf16.infotexts == fp32.infotexts
    assert [r.model_dump() for r in bf16.recipes] == [r.model_dump() for r in fp32.recipes]
    assert bf16.images[0].size == (64, 64)


# -- TAESD in HOME/models/VAE-approx ------------------------------------------------------------------


def build_taesd(seed: int):
    """A tiny random-weight AutoencoderTiny (TAESD's architecture, 8 channels wide): 8x upsampling, as TAESD."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    model = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8))
    with torch.no_grad():  # random weights bright enough to tell apart from the matrix's previews
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


def save_single(model, path, original_decoder: bool = False) -> None:
    """One safetensors file: diffusers' layout, or madebyollin's original decoder (`taesd_decoder.safetensors`)."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if original_decoder:
        state = {f"{int(k.split('.')[2]) + 1}.{k.split('.', 3)[3]}": v for k, v in state.items() if k.startswith("decoder.")}
    save_file(state, str(path))


@pytest.fixture(scope="module")
def taesd_home(tmp_path_factory, sd1_folder, sdxl_folder):
    """SD1 and SDXL checkpoints, TAESD for SD1 as a diffusers folder and TAESDXL as one file, and the original
    decoder layout and a diffusers one-file copy in an extra A1111 root."""
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("taesd-home")).ensure()
    for folder in (sd1_folder, sdxl_folder):
        (home.model_dir("checkpoint") / folder.name).symlink_to(folder, target_is_directory=True)
    approx = home.model_dir("vae-approx")
    build_taesd(1).save_pretrained(approx / "taesd")
    save_single(build_taesd(2), approx / "taesdxl.safetensors")
    return home


@pytest.fixture(scope="module")
def taesd_engine(taesd_home):
    from localdiffusion.engine import Engine, EngineOptions
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    return Engine(ModelLibrary(taesd_home, Database(taesd_home.db_path)), EngineOptions(device="cpu", dtype="float32"))


def recipe_for(model: str, size: int = 64):
    from localdiffusion.recipe import Recipe

    return Recipe(prompt="a lighthouse", seed=5, steps=2, width=size, height=size, sampler_name="Euler", model=model)


def test_taesd_is_a_library_kind_with_its_family(taesd_engine):
    approx = {m.name: m for m in taesd_engine.library.list("vae-approx")}
    assert sorted(approx) == ["taesd", "taesdxl"]
    assert (approx["taesd"].family, approx["taesd"].format) == ("sd1", "diffusers")
    assert (approx["taesdxl"].family, approx["taesdxl"].format) == ("sdxl", "safetensors")
    assert [m.name for m in taesd_engine.library.list("vae")] == []  # not mistaken for a full VAE


def test_models_list_shows_taesd(capsys, taesd_home):
    from cli_runner import run_cli

    code, out, _ = run_cli(capsys, "models", "list", "--kind", "vae-approx", "--home", taesd_home.root)
    assert code == 0 and "taesd" in out and "taesdxl" in out


def test_every_single_file_layout_loads_and_decodes_alike(tmp_path):
    from localdiffusion.engine.backend import taesd_decode
    from localdiffusion.models.detect import detect
    from localdiffusion.models.info import ModelInfo
    from localdiffusion.models.taesd import load_taesd

    model = build_taesd(3)
    latents = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        expected = model.decode(latents, return_dict=False)[0]
    whole, original, folder = tmp_path / "taesd.safetensors", tmp_path / "taesdxl_decoder.safetensors", tmp_path / "taesd-folder"
    save_single(model, whole)
    save_single(model, original, original_decoder=True)
    model.save_pretrained(folder)
    for path, family in [(whole, "sd1"), (original, "sdxl"), (folder, "sd1")]:
        found = detect(path)
        assert (found.kind, found.family) == ("vae-approx", family)
        info = ModelInfo(name=path.stem, path=path, kind="vae-approx", family=family, format=found.format)
        loaded = load_taesd(info, torch.float32)
        with torch.no_grad():
            assert torch.equal(loaded.decode(latents, return_dict=False)[0], expected), path.name
    image = taesd_decode(load_taesd(ModelInfo(name="t", path=whole, kind="vae-approx", family="sd1", format="safetensors"),
                                    torch.float32), latents)[0]
    assert image.size == (64, 64)


def test_a_taesd_encoder_alone_or_for_16_channel_latents_is_refused(tmp_path):
    from diffusers import AutoencoderTiny
    from safetensors.torch import save_file

    from localdiffusion.errors import UnsupportedModel
    from localdiffusion.models.detect import detect

    model = build_taesd(4)
    encoder = {k.split(".", 2)[2]: v.contiguous() for k, v in model.state_dict().items() if k.startswith("encoder.")}
    save_file(encoder, str(tmp_path / "taesd_encoder.safetensors"))
    with pytest.raises(UnsupportedModel, match="encoder only"):
        detect(tmp_path / "taesd_encoder.safetensors")
    wide = AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4, latent_channels=16)
    wide.save_pretrained(tmp_path / "taesd3")
    with pytest.raises(UnsupportedModel, match="16-channel"):
        detect(tmp_path / "taesd3")


def previews_of(engine, recipe, **options):
    shown = []
    result = engine.generate(recipe, on_progress=lambda p: shown.append(p.preview) if p.preview is not None else None, **options)
    return result, shown


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_previews_go_through_taesd_when_it_is_installed(taesd_engine, monkeypatch, model):
    import numpy as np

    from localdiffusion.engine.previews import latent_to_rgb

    matrices = []
    monkeypatch.setattr("localdiffusion.engine.hooks.latent_to_rgb", lambda *a, **k: matrices.append(1) or latent_to_rgb(*a, **k))
    result, shown = previews_of(taesd_engine, recipe_for(model))
    assert len(shown) == 2 and matrices == []
    assert shown[0].size == (64, 64)  # TAESD's 8x; the matrix gives one pixel per latent (8x8)
    assert result.decoder == "full"  # previews only: the final image is the full VAE's


def test_a_taesd_preview_is_not_the_matrix_preview(taesd_engine):
    import numpy as np

    from localdiffusion.engine.previews import latent_to_rgb, taesd_preview

    latent = torch.randn(4, 8, 8)
    taesd = taesd_engine.models.taesd(taesd_engine.models.taesd_info("sd1"))
    fast, matrix = taesd_preview(taesd, latent), latent_to_rgb(latent)
    assert fast.size == (64, 64) and matrix.size == (8, 8)
    assert not np.array_equal(np.asarray(fast.resize((8, 8))), np.asarray(matrix))
    assert taesd_preview(taesd, torch.randn(4, 64, 48), max_latents=32).size == (24 * 8, 32 * 8)  # shrunk on a CPU


def test_without_taesd_previews_use_the_matrix(engine):
    _, shown = previews_of(engine, recipe_for("tiny-sd1"))
    assert shown and shown[0].size == (8, 8)


def test_fast_decode_makes_the_final_image_with_taesd(taesd_engine):
    import numpy as np

    full = taesd_engine.generate(recipe_for("tiny-sd1"))
    fast = taesd_engine.generate(recipe_for("tiny-sd1"), vae_decode="fast")
    assert (full.decoder, fast.decoder) == ("full", "fast")
    assert fast.images[0].size == full.images[0].size == (64, 64)
    assert not np.array_equal(np.asarray(fast.images[0]), np.asarray(full.images[0]))
    assert fast.infotexts == full.infotexts  # a run option: the recipe and infotext do not record it
    assert [r.model_dump() for r in fast.recipes] == [r.model_dump() for r in full.recipes]
    xl = taesd_engine.generate(recipe_for("tiny-sdxl"), vae_decode="fast")  # TAESDXL for SDXL
    assert xl.decoder == "fast" and xl.images[0].size == (64, 64)


def test_the_job_result_says_which_decoder_made_the_images(taesd_engine):
    from localdiffusion.jobs.artefacts import generation_result

    assert generation_result(taesd_engine.generate(recipe_for("tiny-sd1"), vae_decode="fast"))["decoder"] == "fast"


def test_fast_decode_without_taesd_is_refused_in_one_sentence(engine):
    with pytest.raises(BadInput, match=r"^Fast decoding needs TAESD for SD1/SD2 models in .*VAE-approx.*models pull madebyollin/taesd --kind vae-approx") as e:
        engine.generate(recipe_for("tiny-sd1"), vae_decode="fast")
    assert e.value.message.count(". ") == 0
    with pytest.raises(BadInput, match="Unknown VAE decode 'quick'"):
        engine.generate(recipe_for("tiny-sd1"), vae_decode="quick")


def test_the_cli_decodes_fast_when_asked(capsys, taesd_home, tmp_path):
    from cli_runner import run_cli

    code, _, err = run_cli(capsys, "generate", "a lighthouse", "--steps", "2", "--size", "64x64", "--seed", "3",
                           "--model", "tiny-sd1", "--vae-decode", "fast", "-o", tmp_path, "--home", taesd_home.root)
    assert code == 0, err
    assert "TAESD" in err and list(tmp_path.glob("*.png"))


def test_models_pull_fetches_a_taesd_repo_into_vae_approx(monkeypatch, tmp_path):
    """The code path only: the Hub's listing and download are replaced by a local copy."""
    import shutil

    from localdiffusion.models import hub
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database
    from localdiffusion.store.home import Home

    remote = tmp_path / "remote"
    build_taesd(6).save_pretrained(remote)
    (remote / "taesd_decoder.pth").write_bytes(b"not wanted")
    listing = sorted(p.name for p in remote.iterdir())

    def snapshot(repo_id, revision, local_dir, allow_patterns):
        for name in allow_patterns:
            shutil.copy(remote / name, local_dir / name)

    for offline in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # lifted: every network call is replaced
        monkeypatch.delenv(offline, raising=False)
    monkeypatch.setattr(hub, "_list_files", lambda *a: listing)
    monkeypatch.setattr(hub, "_snapshot", snapshot)
    home = Home(tmp_path / "home")
    with pytest.raises(BadInput, match="--kind"):
        hub.pull("madebyollin/taesd", home)  # a checkpoint it is not
    path = hub.pull("madebyollin/taesd", home, kind="vae-approx")
    assert path == home.model_dir("vae-approx") / "taesd"
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    info = ModelLibrary(home, Database(home.db_path)).get("taesd", kind="vae-approx")
    assert (info.kind, info.family) == ("vae-approx", "sd1")
