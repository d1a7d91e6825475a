"""The `localdiffusion` entry point: usage mistakes are answered as click answers them (exit 2), and a real
bug is one sentence that names a log file holding the traceback (exit 1)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from cli_runner import run_cli


@pytest.fixture(autouse=True)
def temp_dir(tmp_path, monkeypatch) -> Path:
    """Crash logs written before a command has a home go to the temporary folder: this test's own."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_a_mistyped_command_gets_the_usage_line_and_the_closest_name(capsys):
    code, out, err = run_cli(capsys, "genrate", "a cat")
    assert code == 2
    assert "Usage:" in err and "COMMAND [ARGS]" in err and "--help" in err
    assert "Error: No such command 'genrate'. Did you mean 'generate'?" in err
    assert "unexpected" not in err and "Traceback" not in err


def test_a_mistyped_option_gets_the_commands_usage_and_the_closest_option(capsys):
    code, _, err = run_cli(capsys, "generate", "--stpes", "3", "a cat")
    assert code == 2
    assert re.search(r"Usage: .* generate \[OPTIONS\]", err)
    assert "Error: No such option: --stpes. Did you mean --steps" in err
    assert "unexpected" not in err and "Traceback" not in err


def test_an_option_with_nothing_close_is_named_alone(capsys):
    code, _, err = run_cli(capsys, "models", "list", "--zzzz")
    assert code == 2 and err.rstrip().endswith("Error: No such option: --zzzz")


def test_a_bad_value_for_an_option_is_a_usage_error(capsys):
    code, _, err = run_cli(capsys, "generate", "--steps", "many", "a cat")
    assert code == 2 and "Invalid value for '--steps'" in err and "unexpected" not in err


@pytest.mark.parametrize("args", [[], ["models"]])
def test_no_command_shows_the_help_not_a_failure(capsys, args):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert "Usage:" in out + err and "unexpected" not in out + err
    assert ("generate" if not args else "rescan") in out + err


def test_a_bug_is_one_sentence_naming_a_log_with_the_traceback(capsys, monkeypatch, temp_dir, tmp_path):
    def broken(path):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("localdiffusion.cli.info.read_image_metadata", broken)
    code, _, err = run_cli(capsys, "info", tmp_path / "x.png")
    assert code == 1
    message = one_line(err)
    assert message.startswith("Error: unexpected failure (RuntimeError: boom).") and "Traceback" not in err
    log = Path(re.search(r"the details are in (\S+\.log)", message).group(1))
    assert log.parent == temp_dir and log.name.startswith("localdiffusion-crash-")
    text = log.read_text("utf-8")
    assert text.startswith(f"localdiffusion info {tmp_path / 'x.png'}")
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom" in text and "in broken" in text


def test_a_bug_after_the_home_is_known_is_logged_in_its_logs_folder(capsys, monkeypatch, home, temp_dir):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("localdiffusion.cli.models.ModelLibrary", broken)
    code, _, err = run_cli(capsys, "models", "list", "--home", home.root)
    assert code == 1
    log = Path(re.search(r"the details are in (\S+\.log)", one_line(err)).group(1))
    assert log.parent == home.root / "logs" and "ZeroDivisionError" in log.read_text("utf-8")
    assert list(temp_dir.iterdir()) == []
    # The next command that fails before it has a home does not log into this one's.
    monkeypatch.setattr("localdiffusion.cli.info.read_image_metadata", broken)
    run_cli(capsys, "info", "x.png")
    assert len(list(temp_dir.iterdir())) == 1 and len(list((home.root / "logs").iterdir())) == 1


def test_a_person_s_mistake_is_still_one_sentence_and_exit_2(capsys, tmp_path):
    code, _, err = run_cli(capsys, "info", tmp_path / "missing.png")
    assert code == 2 and "unexpected" not in err and "Traceback" not in err
