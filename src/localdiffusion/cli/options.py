"""Options that several commands share (generate, compare, explain), defined once."""

from __future__ import annotations

import typer

NEGATIVE = typer.Option("", "--negative", "-n", help="What to avoid (same syntax).")
MODEL = typer.Option(None, "--model", "-m", help="Checkpoint name, hash or path (default: the first checkpoint).")
STEPS = typer.Option(20, "--steps", help="Denoising steps: more refines detail, slower.")
CFG = typer.Option(7.0, "--cfg", help="Guidance scale: how strongly the image follows the prompt.")
SAMPLER = typer.Option("Euler a", "--sampler", help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M'.")
SCHEDULER = typer.Option("Automatic", "--scheduler", help="Schedule type: Automatic, Karras, Exponential, SGM Uniform.")
CLIP_SKIP = typer.Option(1, "--clip-skip", help="Use an earlier CLIP layer (2 suits many anime models).")
DENOISE = typer.Option(0.75, "--denoise", help="Denoising strength: 0 keeps the input, 1 ignores it.")
