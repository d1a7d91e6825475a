"""The `localdiffusion` command: runs it, answering every error in one sentence. Each command group lives in its
own module and adds itself to the root command (`cli/common.py`) when `_register_commands` imports it."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import typer

from localdiffusion.cli.common import app, err, opened_homes
from localdiffusion.errors import LocalDiffusionError

try:  # typer 0.2x carries its own copy of click; older typer uses click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer
    from click import exceptions as click_exceptions


def _register_commands() -> None:
    # Each command module adds its commands to `app` (from cli/common.py) when imported.
    # The order is the order of `localdiffusion --help` (commands first, then the command groups).
    from localdiffusion.cli import anatomy, generate, compare, explain, info, serve, upscale, bench, comic, models, pose, users, export, library, train  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a person sees one sentence for any error we expected, never a traceback.

    A usage mistake (an unknown command or option, a bad value) is answered as click answers it: the usage
    line, the error with the closest name, exit status 2. Anything else is a bug: one sentence naming a log
    file that holds the traceback, exit status 1.
    """
    _register_commands()
    opened_homes.clear()
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
    except click_exceptions.ClickException as e:
        show_usage_error(e)
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("Aborted.")
        sys.exit(1)
    except Exception as e:
        log = write_crash_log(e, argv if argv is not None else sys.argv[1:])
        err.print(f"[red]Error:[/red] unexpected failure ({e.__class__.__name__}: {_first_line(e)}). This is a bug in "
                  f"Local Diffusion; the details are in {log}, please include that file when you report it.",
                  highlight=False, soft_wrap=True)
        sys.exit(1)


def show_usage_error(e: Exception) -> None:
    """Click's own answer (usage line, help hint, the error), naming the closest option first:
    "No such option: --stpes. Did you mean --steps (or --sampler, --dtype)?"."""
    close = list(getattr(e, "possibilities", None) or [])  # closest first, as difflib ranks them
    if isinstance(e, click_exceptions.NoSuchOption) and close:
        others = f" (or {', '.join(close[1:])})" if close[1:] else ""
        e.message = f"No such option: {e.option_name}. Did you mean {close[0]}{others}?"
        e.possibilities = None
    e.show()  # type: ignore[attr-defined]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"


def write_crash_log(error: BaseException, argv: list[str]) -> Path:
    """Write the command line and the traceback to HOME/logs/ (or the temporary folder, before the command
    has a home, or when the home cannot be written); returns the file's path."""
    text = f"localdiffusion {' '.join(argv)}\n\n" + "".join(traceback.format_exception(error))
    prefix = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-"
    folders = [h.root / "logs" for h in opened_homes[-1:]] + [Path(tempfile.gettempdir())]
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=prefix if folder != folders[-1] else f"localdiffusion-{prefix}",
                                        suffix=".log", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            return Path(name)
        except OSError:
            continue
    return Path("(no log: neither the home folder nor the temporary folder can be written)")
