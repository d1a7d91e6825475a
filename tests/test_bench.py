"""`localdiffusion bench` on tiny models: the JSON it prints, its ratio arithmetic, bad values, a backend that
cannot run. The full-size builders are swapped for the tiny test builders (tests/factories.py)."""

from __future__ import annotations

import json

import pytest

from cli_runner import run_cli
from localdiffusion import bench
from localdiffusion.errors import BadInput

KEYS = ["name", "family", "backend", "dtype", "decoder", "steps", "width", "height", "seconds", "its", "peak_mb",
        "baseline_seconds", "ratio"]


@pytest.fixture()
def tiny(monkeypatch, tokenizer_cache, tmp_path):
    """bench builds the tiny SD1 / SD2 test models instead of the full-size ones, at 128x128."""
    from factories import build_sd1, build_sd2

    builders = {"sd1": lambda folder: build_sd1(folder, tokenizer_cache),
                "sd2": lambda folder: build_sd2(folder, tokenizer_cache, v_prediction=False)}
    monkeypatch.setattr(bench, "build_model", lambda configs, folder: builders[configs](folder))
    monkeypatch.setattr(bench, "CASES", tuple(c.__class__(**{**c.__dict__, "size": 128}) for c in bench.CASES))
    monkeypatch.setenv("TMPDIR", str(tmp_path))


def test_bench_json_has_the_cases_and_ratios(tiny, capsys):
    code, stdout, stderr = run_cli(capsys, "bench", "--quick", "--json")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert set(data) == {"machine", "cases"}
    assert {"cpu", "cores", "device", "torch", "diffusers"} <= set(data["machine"])
    cases = {c["name"]: c for c in data["cases"]}
    assert list(cases) == ["sd15-512", "turbo-512"]
    for case in data["cases"]:
        assert list(case) == KEYS
        assert case["backend"] == "torch" and case["seconds"] > 0 and case["its"] > 0 and case["peak_mb"] > 0
        assert case["ratio"] == pytest.approx(case["baseline_seconds"] / case["seconds"], abs=1e-3)
    assert cases["sd15-512"]["steps"] == 20 and cases["sd15-512"]["decoder"] == "full"
    assert cases["turbo-512"]["steps"] == 1 and cases["turbo-512"]["decoder"] == "fast" and cases["turbo-512"]["family"] == "sd2"
    assert "sdxl-1024" in stderr and "GPU" in stderr  # skipped on a CPU, with its sentence


def test_bench_table_says_quick_and_family_picks_the_case(tiny, capsys):
    code, stdout, stderr = run_cli(capsys, "bench", "--quick", "--family", "sd2")
    assert code == 0, stderr
    assert "turbo-512" in stdout and "sd15-512" not in stdout
    assert "--quick" in stdout and "ratio" in stdout


def test_quick_timing_adds_the_steps_not_run():
    # 2 of 20 steps run: the step ends 1.0 s apart, 5.0 s in all, so 18 more steps of 1.0 s.
    timing = bench._timing(5.0, [10.0, 11.0], 8.0, 2, 20)
    assert timing.seconds == pytest.approx(23.0) and timing.its == pytest.approx(1.0)
    # One step: its rate counts from the call's start.
    timing = bench._timing(3.0, [10.5], 10.0, 1, 1)
    assert timing.seconds == pytest.approx(3.0) and timing.its == pytest.approx(2.0)


@pytest.mark.parametrize("args, word", [
    (["--device", "gpu"], "'gpu'"), (["--family", "sd3"], "'sd3'"), (["--backend", "onnx"], "'onnx'"),
])
def test_bad_values_are_one_sentence(capsys, args, word):
    code, stdout, stderr = run_cli(capsys, "bench", *args)
    assert code == 2 and word in stderr and "Traceback" not in stderr and stdout == ""


def test_cuda_without_a_gpu_is_one_sentence(monkeypatch):
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    with pytest.raises(BadInput, match="no.*GPU|has none"):
        bench.check("cuda", None, "torch")


def test_an_unavailable_backend_is_a_skipped_case(tiny, monkeypatch, capsys):
    import localdiffusion.engine as engine_module

    real = engine_module.Engine

    def engine(library, options=None):
        if options is not None and options.backend == "openvino":
            raise BadInput("The OpenVINO backend needs the openvino package; pip install \"localdiffusion[openvino]\".")
        return real(library, options)

    monkeypatch.setattr(engine_module, "Engine", engine)
    code, stdout, stderr = run_cli(capsys, "bench", "--quick", "--family", "sd1", "--backend", "openvino", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["cases"] == []
    assert "sd15-512" in stderr and "openvino" in stderr.lower() and "pip install" in stderr
