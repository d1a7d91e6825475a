"""Local Diffusion: a local-first Stable Diffusion studio that people can understand and steer."""

__version__ = "0.1.0"
