"""The locked install: requirements/lock-linux.txt against pyproject.toml, and the commands scripts/setup.sh runs."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock-linux.txt"
PIP = ".venv/bin/python -m pip install --quiet -c requirements/lock-linux.txt"


def locked() -> dict[str, Version]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[A-Za-z0-9._-]+", name), f"not a plain pin: {line!r}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    for extra in ("mediapipe.txt", "test-oracles.txt"):
        lines += [line for line in (ROOT / "requirements" / extra).read_text().splitlines() if line and not line.startswith("#")]
    return [Requirement(line) for line in lines]


def test_the_lock_pins_every_declared_requirement_inside_its_range():
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is declared but not in the lock; run scripts/lock.sh"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"the lock's {name} {pins[name]} is outside {requirement}"


def test_the_ml_stack_has_tested_upper_bounds():
    pins = locked()
    for requirement in declared():
        if requirement.name in ("torch", "torchvision", "diffusers", "transformers", "peft", "accelerate"):
            assert any(s.operator == "<" for s in requirement.specifier), f"{requirement} has no upper bound"
            assert pins[requirement.name] in requirement.specifier


def test_the_lock_keeps_one_opencv():
    assert [name for name in locked() if name.startswith("opencv")] == ["opencv-python-headless"]


def setup_commands(*args: str, torch: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LOCALDIFFUSION_TORCH"}
    if torch is not None:
        env["LOCALDIFFUSION_TORCH"] = torch
    return subprocess.run(["bash", "scripts/setup.sh", "--dry-run", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def installs(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [line.removeprefix("+ ") for line in result.stdout.splitlines() if " -m pip install " in line]


def test_default_setup_installs_the_package_and_both_test_extras_from_the_lock():
    assert installs(setup_commands()) == [f"{PIP} -e .[test,test-e2e,openvino,cluster]", f"{PIP} --no-deps -r requirements/test-oracles.txt"]


@pytest.mark.skipif(platform.system() != "Linux", reason="the CPU-only build is a Linux choice (PyPI's torch elsewhere has no CUDA)")
@pytest.mark.parametrize("how", [{"torch": "cpu"}, {"args": ("--cpu",)}])
def test_cpu_setup_takes_the_locked_torch_from_the_cpu_index_first(how):
    pins = locked()
    commands = installs(setup_commands(*how.get("args", ()), torch=how.get("torch")))
    assert commands == [
        f"{PIP} --extra-index-url https://download.pytorch.org/whl/cpu torch=={pins['torch']}+cpu torchvision=={pins['torchvision']}+cpu",
        f"{PIP} -e .[test,test-e2e,openvino,cluster]",
        f"{PIP} --no-deps -r requirements/test-oracles.txt",
    ]
    # The lock's plain pin accepts the CPU build's local version, so the second install keeps it.
    assert Requirement(f"torch=={pins['torch']}").specifier.contains(Version(f"{pins['torch']}+cpu"))


def test_pose_setup_adds_the_extra_and_mediapipe_without_its_declared_dependencies():
    assert installs(setup_commands("--pose")) == [
        f"{PIP} -e .[test,test-e2e,openvino,cluster,pose]",
        f"{PIP} --no-deps -r requirements/test-oracles.txt",
        f"{PIP} --no-deps -r requirements/mediapipe.txt",
    ]


@pytest.mark.parametrize("args, torch, words", [(("--gpu",), None, "unknown option '--gpu'"), ((), "rocm", "LOCALDIFFUSION_TORCH is 'rocm'")])
def test_setup_refuses_unknown_choices_in_one_sentence(args, torch, words):
    result = setup_commands(*args, torch=torch)
    assert result.returncode == 2 and result.stdout == ""
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
