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
    assert pick_dtype(torch.device("cuda")) == torch.float16  # GPUs keep their default


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
