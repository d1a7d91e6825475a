"""Our A1111 sampling core against the `k-diffusion` package (0.1.1.post1, the version A1111
v1.10.1 pins), wired by hand as A1111 wires it: `k_diffusion.external.CompVisDenoiser` (or
`CompVisVDenoiser`) around an LDM-style model, A1111's CFG batch [cond; uncond], the first
noise times sigmas[0], `torch.randn_like` inside k-diffusion replaced by each image's CPU
generator (reseeded with seed + ENSD), and a Brownian tree on the batch's seeds for the SDE
samplers. Every sampler × every schedule type must give the same latents bit for bit in fp32.

The package is for the tests only and is not a dependency. Install it beside the venv:

    python -m pip install --no-deps --target /tmp/kdiff-site k-diffusion==0.1.1.post1 torchdiffeq
    PYTHONPATH=$PWD/src:/tmp/kdiff-site python -m pytest tests/test_k_sampling_oracle.py

Without it these tests skip. Its `__init__` imports training code (wandb, clean-fid, ...), so
`_k_diffusion()` puts an empty package module in `sys.modules` first and loads only
`sampling`, `external` and `utils`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest
import torch

from localdiffusion.engine.k_sampling import schedules
from localdiffusion.engine.k_sampling.denoiser import CFGDenoiser, ldm_alphas_cumprod, make_denoiser, unet_network
from localdiffusion.engine.k_sampling.rng import ImageRNG
from localdiffusion.engine.k_sampling.run import SamplingOptions, denoiser_for, sample, sigmas_of
from localdiffusion.engine.k_sampling.table import K_SAMPLERS

# torchsde warns when a float32 sigma lies a rounding error outside the tree's float64 interval (k-diffusion too).
pytestmark = pytest.mark.filterwarnings("ignore:Should have:UserWarning", "ignore:To copy construct:UserWarning")

SEEDS = [1234, 99]
SHAPE = (4, 8, 8)
CFG = 7.0


def _k_diffusion():
    """k_diffusion.sampling and .external without the package's __init__, or skip."""
    if "k_diffusion" not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")
        if spec is None or spec.submodule_search_locations is None:
            pytest.skip("k-diffusion is not installed (see this file's docstring)")
        package = types.ModuleType("k_diffusion")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = package
    try:
        return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.external")
    except ImportError as exc:  # torchdiffeq missing, say
        pytest.skip(f"k-diffusion cannot be imported here: {exc}")


@pytest.fixture()
def kd(monkeypatch):
    sampling, external = _k_diffusion()
    # A1111 replaces to_d (no reshaping of sigma); the arithmetic is the same.
    monkeypatch.setattr(sampling, "to_d", lambda x, sigma, denoised: (x - denoised) / sigma)
    return types.SimpleNamespace(sampling=sampling, external=external, monkeypatch=monkeypatch)


class TinyNet(torch.nn.Module):
    """A small deterministic network of (x, t, hidden states), cheap enough for every combination."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.proj = torch.nn.Linear(8, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def forward(self, x, t, encoder_hidden_states):
        temb = torch.sin(t.float()[:, None] / torch.tensor([50.0, 150.0, 400.0, 900.0]))
        cond = self.proj(encoder_hidden_states.mean(dim=1))
        return torch.tanh(self.conv(x)) + (temb + cond)[:, :, None, None]


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(32, 64), layers_per_block=1,
        cross_attention_dim=8, attention_head_dim=8, norm_num_groups=32,
    ).eval()


class LDMModel:
    """What k-diffusion's CompVis wrappers expect: `alphas_cumprod` and `apply_model(x, t, cond)`."""

    def __init__(self, net):
        self.net = net
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0).float()

    def apply_model(self, x, t, cond):
        return self.net(x, t, encoder_hidden_states=cond["c_crossattn"][0])


class OracleCFG:
    """A1111's CFGDenoiser for one prompt part per image: one batch [cond; uncond], then
    uncond + (cond - uncond) * (weight * scale)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, x, sigma, cond, uncond, cond_scale):
        out = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]), cond={"c_crossattn": [torch.cat([cond, uncond])]})
        denoised_uncond = out[-uncond.shape[0]:]
        denoised = torch.clone(denoised_uncond)
        for i in range(x.shape[0]):
            denoised[i] += (out[i] - denoised_uncond[i]) * (1.0 * cond_scale)
        return denoised


class OracleNoise:
    """A1111's TorchHijack over its ImageRNG with the CPU source: one generator per seed; after
    the first noise, generators seeded with seed + ENSD when ENSD is set."""

    def __init__(self, seeds, ensd=0):
        self.seeds, self.ensd = seeds, ensd
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]

    def first(self):
        out = torch.stack([torch.randn(SHAPE, generator=g) for g in self.gens])
        if self.ensd:
            self.gens = [torch.Generator().manual_seed(s + self.ensd) for s in self.seeds]
        return out

    def __getattr__(self, item):
        return getattr(torch, item)

    def randn_like(self, x):
        return torch.stack([torch.randn(SHAPE, generator=g) for g in self.gens])


def _conds():
    g = torch.Generator().manual_seed(5)
    return torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)


def oracle_sigmas(kd, wrap, sampler, steps, schedule):
    """A1111's sigmas for the sampler and schedule type, from the k-diffusion package where it has the type."""
    m_min, m_max = wrap.sigmas[0].item(), wrap.sigmas[-1].item()
    name = sampler.default_schedule if schedule == "Automatic" else schedule
    n = steps + (1 if sampler.discard_next_to_last_sigma else 0)
    if name in (None, "Uniform"):
        sigmas = wrap.get_sigmas(n)
    elif name == "Karras":
        sigmas = kd.sampling.get_sigmas_karras(n, m_min, m_max)
    elif name == "Exponential":
        sigmas = kd.sampling.get_sigmas_exponential(n, m_min, m_max)
    elif name == "Polyexponential":
        sigmas = kd.sampling.get_sigmas_polyexponential(n, m_min, m_max)
    else:  # A1111-only types: checked against their formulas in test_k_sampling.py
        sigmas = schedules.sigmas_for(make_denoiser(None, ldm_alphas_cumprod()), n, name)
    if sampler.discard_next_to_last_sigma:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def _oracle(kd, sampler, net, steps, schedule, *, v=False, ensd=0, eta=1.0, init=None, strength=1.0):
    """A1111's KDiffusionSampler.sample (or sample_img2img) over the k-diffusion package."""
    ldm = LDMModel(net)
    wrap = (kd.external.CompVisVDenoiser if v else kd.external.CompVisDenoiser)(ldm)
    noise = OracleNoise(SEEDS, ensd)
    kd.monkeypatch.setattr(kd.sampling, "torch", noise)
    m_min, m_max = wrap.sigmas[0].item(), wrap.sigmas[-1].item()
    t_enc = None if init is None else int(min(strength, 0.999) * steps)
    sigmas = oracle_sigmas(kd, wrap, sampler, steps, schedule)
    first = noise.first()
    if init is None:
        sched, x = sigmas, first * sigmas[0]
        s_min, s_max = m_min, m_max
    else:
        sched = sigmas[steps - t_enc - 1:]
        x = init + first * sched[0]
        s_min, s_max, n = sched[-2], sched[0], len(sched) - 1
    func = sampler.function.__name__
    kwargs = {}
    if func in ("sample_dpm_fast", "sample_dpm_adaptive"):
        kwargs.update(sigma_min=s_min, sigma_max=s_max)
        if func == "sample_dpm_fast":
            kwargs["n"] = steps if init is None else n
        kwargs["eta"] = eta
    else:
        kwargs["sigmas"] = sched
    if sampler.uses_ensd and func not in ("sample_dpm_fast", "sample_dpm_adaptive"):
        kwargs["eta"] = eta
    if sampler.brownian_noise:
        kwargs["eta"] = eta
        kwargs["noise_sampler"] = kd.sampling.BrownianTreeNoiseSampler(
            first * sigmas[0] if init is None else init, sigmas[sigmas > 0].min(), sigmas.max(), seed=SEEDS)
    if sampler.solver_type:
        kwargs["solver_type"] = sampler.solver_type
    kfunc = getattr(kd.sampling, func)
    cond, uncond = _conds()
    return kfunc(OracleCFG(wrap), x, extra_args={"cond": cond, "uncond": uncond, "cond_scale": CFG}, disable=True, **kwargs)


def _ours(sampler, net, steps, schedule, *, v=False, ensd=0, eta=1.0, init=None, strength=1.0):
    network = lambda x, t, **c: net(x, t, **c)  # noqa: E731
    den = denoiser_for(sampler, network, ldm_alphas_cumprod(), "v" if v else "eps")
    cond, uncond = _conds()
    extra = {"cond": {"encoder_hidden_states": cond}, "uncond": {"encoder_hidden_states": uncond}, "cond_scale": CFG}
    image_rng = ImageRNG(SHAPE, SEEDS, eta_noise_seed_delta=ensd)
    return sample(sampler, CFGDenoiser(den), den, image_rng, SEEDS, steps, schedule=schedule, extra_args=extra,
                  options=SamplingOptions(eta=eta), init_latent=init, denoising_strength=strength)


ORACLE_SAMPLERS = [name for name, s in K_SAMPLERS.items() if s.name not in ("Restart", "LCM") and s.kind == "sigmas"]  # timestep samplers: test_k_sampling_timesteps.py


def test_our_alphas_and_sigmas_are_k_diffusions(kd):
    ldm = LDMModel(TinyNet())
    wrap = kd.external.CompVisDenoiser(ldm)
    ours = make_denoiser(None, ldm_alphas_cumprod())
    assert torch.equal(ldm.alphas_cumprod, ldm_alphas_cumprod())
    assert torch.equal(ours.sigmas, wrap.sigmas)
    sig = torch.tensor([14.6, 3.3, 1.0, 0.2, 0.03])
    assert torch.equal(ours.sigma_to_t(sig), wrap.sigma_to_t(sig))
    t = torch.tensor([999.0, 500.5, 10.25, 0.0])
    assert torch.equal(ours.t_to_sigma(t), wrap.t_to_sigma(t))
    for n in (1, 4, 25):
        assert torch.equal(ours.get_sigmas(n), wrap.get_sigmas(n))
    lo, hi = wrap.sigmas[0].item(), wrap.sigmas[-1].item()
    for n in (3, 10):
        assert torch.equal(schedules.get_sigmas_karras(n, lo, hi), kd.sampling.get_sigmas_karras(n, lo, hi))
        assert torch.equal(schedules.get_sigmas_karras(n, lo, hi, rho=5.0), kd.sampling.get_sigmas_karras(n, lo, hi, rho=5.0))
        assert torch.equal(schedules.get_sigmas_exponential(n, lo, hi), kd.sampling.get_sigmas_exponential(n, lo, hi))
        assert torch.equal(schedules.get_sigmas_polyexponential(n, lo, hi, rho=2.0), kd.sampling.get_sigmas_polyexponential(n, lo, hi, rho=2.0))


@pytest.mark.parametrize("name", ORACLE_SAMPLERS)
def test_every_sampler_with_every_schedule_type_matches_k_diffusion(kd, name):
    sampler, net = K_SAMPLERS[name], TinyNet()
    steps = 5
    for schedule in schedules.SCHEDULE_TYPES:
        expected = _oracle(kd, sampler, net, steps, schedule)
        got = _ours(sampler, net, steps, schedule)
        assert torch.equal(got, expected), f"{name}, {schedule}: max diff {(got - expected).abs().max().item()}"


@pytest.mark.parametrize("name, schedule", [("Euler a", "Karras"), ("DPM++ 2M", "Automatic"), ("DPM++ 2M SDE", "Automatic"),
                                            ("Heun", "Beta"), ("DPM++ 2S a", "Align Your Steps")])
def test_a_tiny_unet_matches_k_diffusion(kd, name, schedule):
    unet = _tiny_unet()
    net = unet_network(unet)
    with torch.no_grad():
        expected = _oracle(kd, K_SAMPLERS[name], net, 4, schedule)
        got = _ours(K_SAMPLERS[name], net, 4, schedule)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", ["Euler", "DPM++ 2M SDE", "DPM2 a"])
def test_v_prediction_matches_compvis_v_denoiser(kd, name):
    net = TinyNet()
    assert torch.equal(_ours(K_SAMPLERS[name], net, 5, "Automatic", v=True), _oracle(kd, K_SAMPLERS[name], net, 5, "Automatic", v=True))


@pytest.mark.parametrize("name", ["Euler a", "DPM2 a", "DPM++ 2S a", "DPM fast"])
def test_ensd_and_eta_change_the_step_noise_as_in_a1111(kd, name):
    net, sampler = TinyNet(), K_SAMPLERS[name]
    plain = _ours(sampler, net, 5, "Automatic", eta=0.7)
    with_ensd = _ours(sampler, net, 5, "Automatic", ensd=31337, eta=0.7)
    assert torch.equal(with_ensd, _oracle(kd, sampler, net, 5, "Automatic", ensd=31337, eta=0.7))
    assert torch.equal(plain, _oracle(kd, sampler, net, 5, "Automatic", eta=0.7))
    assert not torch.equal(plain, with_ensd)


@pytest.mark.parametrize("name", ["Euler a", "DPM++ SDE", "DPM fast", "DPM2"])
def test_img2img_matches_a1111s_sample_img2img(kd, name):
    net, sampler = TinyNet(), K_SAMPLERS[name]
    init = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(3))
    expected = _oracle(kd, sampler, net, 6, "Automatic", init=init, strength=0.6)
    assert torch.equal(_ours(sampler, net, 6, "Automatic", init=init, strength=0.6), expected)


def test_restart_below_20_steps_is_k_diffusions_heun(kd):
    net = TinyNet()
    ldm = LDMModel(net)
    wrap = kd.external.CompVisDenoiser(ldm)
    den = make_denoiser(lambda x, t, **c: net(x, t, **c), ldm_alphas_cumprod())
    sigmas = sigmas_of(K_SAMPLERS["Restart"], den, 6, "Automatic", SamplingOptions())
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1)) * sigmas[0]
    cond, uncond = _conds()
    expected = kd.sampling.sample_heun(OracleCFG(wrap), x, sigmas, extra_args={"cond": cond, "uncond": uncond, "cond_scale": CFG}, disable=True)
    got = K_SAMPLERS["Restart"].function(CFGDenoiser(den), x, sigmas, extra_args={
        "cond": {"encoder_hidden_states": cond}, "uncond": {"encoder_hidden_states": uncond}, "cond_scale": CFG})
    assert torch.equal(got, expected)
