"""Sampling as A1111 v1.10.1 samples: k-diffusion 0.1.1's shape, ported (not yet wired into `Engine.generate`).

- `denoiser`: the network wrapped with its parameterization (eps, v, LCM) and A1111's CFG.
- `schedules`: one `get_sigmas_*` per A1111 schedule type, and `sigmas_for` (A1111's get_sigmas).
- `samplers`: one `sample_*` function per A1111 k-diffusion sampler, plus Restart and LCM.
- `timesteps`: A1111's timestep samplers DDIM, DDIM CFG++, PLMS and UniPC (`uni_pc`), their
  noise-predicting `TimestepDenoiser` and `TimestepCFG` (A1111's CFG++ protocol).
- `rng`: the RNG sources CPU, GPU and NV (Philox), `ImageRNG` (variation seeds, ENSD).
- `table`: A1111's sampler table (default schedule and options per sampler; `kind` sigmas or timesteps).
- `run`: one run as A1111's `KDiffusionSampler.sample` / `sample_img2img`.
- `pixels`: A1111's 8-bit conversion (truncation).
"""
