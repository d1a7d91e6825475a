"""`localdiffusion models ...` (placeholder until the library lands)."""

import typer

from localdiffusion.cli.app import app

models_app = typer.Typer(help="List, add and download models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
