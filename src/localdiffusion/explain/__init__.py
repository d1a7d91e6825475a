"""Explain layer: what each parameter does, shown on the user's own images."""
