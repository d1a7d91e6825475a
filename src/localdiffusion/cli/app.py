"""The `localdiffusion` command. Each command group lives in its own module and registers here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from localdiffusion.errors import LocalDiffusionError
from localdiffusion.store.home import Home

app = typer.Typer(
    name="localdiffusion",
    help="Local Diffusion: make images with Stable Diffusion on your own machine, and see what each setting does.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, emoji=False)
out = Console(emoji=False)

HomeOption = typer.Option(None, "--home", help="Home folder (models, outputs, database). Default: $LOCALDIFFUSION_HOME or the user data dir.")


def home_from(path: Optional[Path]) -> Home:
    return Home(path).ensure()


def _register_commands() -> None:
    # Imported here so that each module can import `app` helpers above without a cycle.
    from localdiffusion.cli import anatomy, comic, compare, explain, generate, info, models, pose, serve, upscale  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a person sees one sentence for any error we expected, never a traceback."""
    _register_commands()
    try:
        app(args=argv, standalone_mode=False)
    except LocalDiffusionError as e:
        err.print(f"[red]Error:[/red] {e.message}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("Interrupted.")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click's own usage errors arrive here too
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        err.print(f"[red]Error:[/red] unexpected failure: {e.__class__.__name__}: {e}", highlight=False)
        sys.exit(1)
