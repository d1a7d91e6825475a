"""Run the `localdiffusion` command in-process, the way the tests drive it."""

from __future__ import annotations

from localdiffusion.cli.app import main


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one command line."""
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err
