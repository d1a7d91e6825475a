"""A1111's timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC) in k_sampling/timesteps.py.

There is no package that runs them as A1111 does, so they are checked against:
(a) references written here from the papers' formulas, over the same tiny network: DDIM, CFG++
    and PLMS do the same float32 operations in the same order, so they must agree bit for bit;
    UniPC's reference is first order in float64 (its own schedule interpolation, np.interp), so
    it agrees to a tolerance;
(b) diffusers' DDIMScheduler on A1111's timesteps and the CompVis alpha_bar (eta 0);
(c) diffusers' UniPCMultistepScheduler on the same (integer) times, order 3 with bh1 and bh2;
(d) the behaviour A1111 has: v-prediction, img2img, CFG++'s use of the unconditional eps, eta's
    RNG noise, and that the SGM noise multiplier does not touch them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from localdiffusion.engine.k_sampling import timesteps as ts
from localdiffusion.engine.k_sampling.denoiser import ldm_alphas_cumprod
from localdiffusion.engine.k_sampling.rng import ImageRNG
from localdiffusion.engine.k_sampling.run import SamplingOptions, denoiser_for, sample
from localdiffusion.engine.k_sampling.table import K_SAMPLERS, find_k_sampler
from localdiffusion.errors import BadInput

import test_k_sampling_oracle

SEEDS = [1234, 99]
SHAPE = (4, 8, 8)
CFG = 7.0
ACP = ldm_alphas_cumprod()


class TinyNet(test_k_sampling_oracle.TinyNet):
    """The oracle tests' small deterministic network, remembering the timesteps it was called at."""

    def __init__(self):
        super().__init__()
        self.calls: list[torch.Tensor] = []

    def forward(self, x, t, encoder_hidden_states):
        self.calls.append(t.detach().clone())
        return super().forward(x, t, encoder_hidden_states)


_conds = test_k_sampling_oracle._conds  # the same prompt and negative prompt states


def _extra():
    cond, uncond = _conds()
    return {"cond": {"encoder_hidden_states": cond}, "uncond": {"encoder_hidden_states": uncond}, "cond_scale": CFG}


def _ours(name, net, steps, *, v=False, options=None, init=None, strength=1.0, ensd=0, seeds=SEEDS, callback=None,
          acp=None):
    sampler, _ = find_k_sampler(name)
    den = denoiser_for(sampler, lambda x, t, **c: net(x, t, **c), ACP if acp is None else acp, "v" if v else "eps")
    image_rng = ImageRNG(SHAPE, seeds, eta_noise_seed_delta=ensd)
    with torch.no_grad():
        return sample(sampler, ts.TimestepCFG(den), den, image_rng, seeds, steps, extra_args=_extra(),
                      options=options, init_latent=init, denoising_strength=strength, callback=callback)


# --- (a) references from the papers ---------------------------------------------------------------


def _ref_eps(net, scale=CFG):
    """eps with A1111's CFG: [cond; uncond] as one batch, uncond + (cond - uncond) * scale; and the uncond eps."""
    cond, uncond = _conds()

    def eps(x, t):
        out = net(torch.cat([x, x]), torch.full((2 * x.shape[0],), float(t)), encoder_hidden_states=torch.cat([cond, uncond]))
        c, u = out[: x.shape[0]], out[x.shape[0]:]
        return u + (c - u) * scale, u

    return eps


def _ref_timesteps(steps):
    return [min(t + 1, 999) for t in range(0, 1000, 1000 // steps)]


def _pairs(steps):
    """(t, t_prev) from the largest timestep down; the smallest is only ever a t_prev."""
    t = _ref_timesteps(steps)
    return list(zip(reversed(t[1:]), reversed(t[:-1])))


def _noise(seeds=SEEDS):
    return ImageRNG(SHAPE, seeds)


def ref_ddim(net, x, steps, *, eta=0.0, rng=None, cfgpp=False):
    """DDIM (Song et al. 2020, eq. 12) over A1111's timesteps; CFG++ (Chung et al. 2024) when asked."""
    eps_fn = _ref_eps(net, CFG / 12.5 if cfgpp else CFG)
    for t, t_prev in _pairs(steps):
        a, ap = ACP[t], ACP[t_prev]
        e, u = eps_fn(x, t)
        x0 = (x - (1 - a).sqrt() * e) / a.sqrt()
        s = eta * math.sqrt((1 - ap.item()) / (1 - a.item()) * (1 - a.item() / ap.item()))
        s = torch.tensor(s, dtype=torch.float32)
        z = rng.next() if rng is not None else torch.zeros_like(x)
        x = ap.sqrt() * x0 + (1 - ap - s ** 2).sqrt() * (u if cfgpp else e) + s * z
    return x


def ref_plms(net, x, steps):
    """PLMS (Liu et al. 2022): a pseudo improved Euler step, then Adams-Bashforth of order 2, 3, 4 on eps."""
    eps_fn = _ref_eps(net)

    def step(x, e, t, t_prev):
        a, ap = ACP[t], ACP[t_prev]
        x0 = (x - (1 - a).sqrt() * e) / a.sqrt()
        return ap.sqrt() * x0 + (1 - ap).sqrt() * e

    history = []
    for t, t_prev in _pairs(steps):
        e = eps_fn(x, t)[0]
        if not history:
            e_prime = (e + eps_fn(step(x, e, t, t_prev), t_prev)[0]) / 2
        elif len(history) == 1:
            e_prime = (3 * e - history[-1]) / 2
        elif len(history) == 2:
            e_prime = (23 * e - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            e_prime = (55 * e - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        x = step(x, e_prime, t, t_prev)
        history = (history + [e])[-3:]
    return x


def ref_unipc_order1(net, x, n, variant="bh1"):
    """UniPC of order 1 (Zhao et al. 2023: the DDIM/DPM-Solver-1 predictor, a corrector with
    rho = 1/2) in float64 on t = linspace(1, 1/1000, n + 1), log alpha interpolated by np.interp."""
    eps_fn = _ref_eps(net)
    log_alpha = 0.5 * np.log(ACP.double().numpy())
    grid = np.arange(1, 1001) / 1000.0

    def alpha(t):
        return math.exp(np.interp(t, grid, log_alpha))

    def sigma(t):
        return math.sqrt(1 - alpha(t) ** 2)

    def lam(t):
        return math.log(alpha(t)) - math.log(sigma(t))

    def x0(x, t):
        return (x - sigma(t) * eps_fn(x, (t - 0.001) * 1000)[0]) / alpha(t)

    times = np.linspace(1.0, 0.001, n + 1)
    m_prev = x0(x, times[0])
    for i in range(1, n + 1):
        s, t = times[i - 1], times[i]
        h = lam(t) - lam(s)
        b_h = -h if variant == "bh1" else math.expm1(-h)
        x_pred = sigma(t) / sigma(s) * x - alpha(t) * math.expm1(-h) * m_prev
        if i == n:
            return x_pred
        m_t = x0(x_pred, t)
        x = x_pred - alpha(t) * b_h * (0.5 * (m_t - m_prev))
        m_prev = m_t
    return x


@pytest.mark.parametrize("steps", [5, 8, 30])
def test_ddim_is_the_papers_step_on_a1111s_timesteps_bit_for_bit(steps):
    net = TinyNet()
    with torch.no_grad():
        expected = ref_ddim(net, _noise().next(), steps)
    assert torch.equal(_ours("DDIM", net, steps), expected)


def test_ddim_cfgpp_is_the_papers_step_bit_for_bit_and_differs_from_ddim():
    net = TinyNet()
    with torch.no_grad():
        expected = ref_ddim(net, _noise().next(), 8, cfgpp=True)
    got = _ours("DDIM CFG++", net, 8)
    assert torch.equal(got, expected)
    assert (got - _ours("DDIM", net, 8)).abs().max() > 1e-2


@pytest.mark.parametrize("steps", [3, 8, 12])
def test_plms_is_the_papers_method_bit_for_bit(steps):
    net = TinyNet()
    with torch.no_grad():
        expected = ref_plms(net, _noise().next(), steps)
    assert torch.equal(_ours("PLMS", net, steps), expected)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_order_1_matches_the_papers_update_in_float64(variant):
    # Tolerance: the reference computes the schedule in float64 (np.interp) and the network's
    # times exactly; ours works in float32 like A1111 (times like 799.00006), so about 1e-6 relative.
    net = TinyNet()
    opts = SamplingOptions(uni_pc_order=1, uni_pc_variant=variant)
    with torch.no_grad():
        expected = ref_unipc_order1(net, _noise().next(), 8, variant)
    got = _ours("UniPC", net, 8, options=opts)
    assert torch.allclose(got, expected, atol=2e-5, rtol=1e-5), (got - expected).abs().max()


def test_ddim_with_eta_follows_the_papers_sigma_and_draws_the_images_rng():
    # Tolerance: the reference's sigma is plain float64; A1111's computes 1 / (1 - a_t) in float32
    # (see timesteps._step_tables), which moves sigma by about 1e-9 and may flip its float32 rounding.
    net = TinyNet()
    opts = SamplingOptions(eta_ddim=0.7)
    rng = _noise()
    with torch.no_grad():
        expected = ref_ddim(net, rng.next(), 8, eta=0.7, rng=rng)
    got = _ours("DDIM", net, 8, options=opts)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(got, _ours("DDIM", net, 8, options=opts))  # seeded: reproducible
    assert not torch.allclose(got, _ours("DDIM", net, 8, options=opts, seeds=[7, 8]))
    assert not torch.equal(got, _ours("DDIM", net, 8, options=opts, ensd=31337))  # the step noise is the RNG's
    assert not torch.equal(got, _ours("DDIM", net, 8))
    # p.eta (SamplingOptions.eta) wins over the eta_ddim setting, as in A1111
    assert torch.equal(got, _ours("DDIM", net, 8, options=SamplingOptions(eta=0.7, eta_ddim=0.3)))


def test_ddim_sigma_reproduces_a1111s_mixed_precision():
    alphas = ACP[ts.a1111_timesteps(7)]
    _, _, _, sigmas = ts._step_tables(ACP, ts.a1111_timesteps(7), torch.zeros(1), eta=0.5)
    a, ap = alphas.double(), ACP[torch.nn.functional.pad(ts.a1111_timesteps(7)[:-1], (1, 0))].double()
    recip = (1 / (1 - alphas)).double()  # float32 reciprocal, as torch's reflected division makes it
    assert torch.equal(sigmas, 0.5 * torch.sqrt((1 - ap) * recip * (1 - a / ap)))
    assert sigmas.dtype == torch.float64


# --- (b), (c) diffusers' schedulers ----------------------------------------------------------------


def test_ddim_eta_0_matches_diffusers_ddim_scheduler_on_the_same_timesteps():
    from diffusers import DDIMScheduler

    net, steps = TinyNet(), 8
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=False)
    sched.alphas_cumprod = ACP.clone()
    sched.num_inference_steps = steps
    sched.timesteps = torch.tensor([t for t, _ in _pairs(steps)])
    eps_fn = _ref_eps(net)
    with torch.no_grad():
        x = _noise().next()
        for t in sched.timesteps:
            x = sched.step(eps_fn(x, int(t))[0], int(t), x, eta=0.0).prev_sample
    # Tolerance: diffusers takes powers (** 0.5) of 0-dim tensors where A1111 takes sqrt; 1e-6.
    assert torch.allclose(_ours("DDIM", net, steps), x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_order_3_matches_diffusers_unipc_on_the_same_times(variant):
    from diffusers import UniPCMultistepScheduler

    net, n = TinyNet(), 9  # 9 steps from model time 999 to 0 are whole timesteps (999 / 9 = 111)
    sched = UniPCMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, solver_order=3,
                                    solver_type=variant, lower_order_final=True, timestep_spacing="linspace",
                                    final_sigmas_type="sigma_min")
    sched.alphas_cumprod = ACP.clone()
    sched.set_timesteps(n)
    assert sched.timesteps.tolist() == [999 - 111 * i for i in range(n)]
    eps_fn = _ref_eps(net)
    with torch.no_grad():
        x = _noise().next()
        for t in sched.timesteps:
            x = sched.step(eps_fn(x, int(t))[0], t, x).prev_sample
        den = ts.TimestepDenoiser(lambda x, t, **c: net(x, t, **c), ACP)
        got = ts.sample_unipc(ts.TimestepCFG(den), _noise().next(), torch.arange(n), ACP, extra_args=_extra(), variant=variant)
    # Tolerance: A1111's times are float32 (888.00006 for 888), its log alpha interpolated; diffusers
    # takes sigmas at whole timesteps in float64 before casting; 1e-4 on latents of size ~1.
    assert torch.allclose(got, x, atol=1e-4, rtol=1e-4), (got - x).abs().max()


# --- (d) A1111's behaviour ----------------------------------------------------------------------


def test_a1111_timesteps_and_the_smallest_is_never_evaluated():
    assert ts.a1111_timesteps(20).tolist() == list(range(1, 1000, 50))
    assert len(ts.a1111_timesteps(30)) == 31  # 1000 // 30 = 33: A1111 makes 31 timesteps
    assert ts.a1111_timesteps(3).tolist() == [1, 334, 667, 999]  # 1000 is clipped to 999
    assert ts.a1111_timesteps(7, discard_next_to_last_sigma=True).tolist() == ts.a1111_timesteps(8).tolist()
    for bad in (0, 1001):
        with pytest.raises(BadInput, match="1 to 1000 steps"):
            ts.a1111_timesteps(bad)
    net = TinyNet()
    _ours("DDIM", net, 5)
    called = [int(t[0]) for t in net.calls]
    assert called == [801, 601, 401, 201]  # 1 is never evaluated, as in A1111


def test_discard_penultimate_sigma_adds_a_step():
    net = TinyNet()
    _ours("DDIM", net, 5, options=SamplingOptions(always_discard_next_to_last_sigma=True))
    assert [int(t[0]) for t in net.calls] == [997, 831, 665, 499, 333, 167]  # the timesteps of 6 steps


def test_unipc_counts_a1111s_timesteps_and_calls_back_with_x0():
    net, seen = TinyNet(), []
    _ours("UniPC", net, 30, callback=seen.append)
    assert len(seen) == 31  # len(timesteps) updates
    assert [d["i"] for d in seen] == list(range(31))
    assert all(d["denoised"] is not None for d in seen[:-1]) and seen[-1]["denoised"] is None
    assert float(net.calls[0][0]) == pytest.approx(999.0)
    assert float(net.calls[-1][0]) == pytest.approx(999 / 31, abs=1e-3)  # the last model time before 0


def test_unipc_refuses_an_order_above_its_steps_in_one_sentence():
    with pytest.raises(BadInput, match="UniPC of order 5 needs at least 5 steps"):
        _ours("UniPC", TinyNet(), 3, options=SamplingOptions(uni_pc_order=5))
    with pytest.raises(BadInput, match="Unknown UniPC variant 'bh3'"):
        _ours("UniPC", TinyNet(), 8, options=SamplingOptions(uni_pc_variant="bh3"))


@pytest.mark.parametrize("option", [dict(uni_pc_variant="vary_coeff"), dict(uni_pc_skip_type="logSNR"),
                                    dict(uni_pc_skip_type="time_quadratic"), dict(uni_pc_order=2),
                                    dict(uni_pc_lower_order_final=False)])
def test_unipc_options_change_the_result_and_stay_close(option):
    net = TinyNet()
    base = _ours("UniPC", net, 10)
    got = _ours("UniPC", net, 10, options=SamplingOptions(**option))
    assert torch.isfinite(got).all()
    assert not torch.equal(got, base)
    assert (got - base).abs().max() < 0.1 * base.abs().max()  # the same ODE, solved differently


def test_callbacks_give_a1111s_dicts_with_pred_x0():
    net = TinyNet()
    for name in ("DDIM", "DDIM CFG++", "PLMS"):
        seen = []
        _ours(name, net, 6, callback=seen.append)
        assert [d["i"] for d in seen] == list(range(6))  # 1000 // 6 = 166: 7 timesteps, 6 steps
        assert all(set(d) == {"x", "i", "sigma", "sigma_hat", "denoised"} and d["sigma"] == 0 for d in seen)
        assert torch.equal(seen[-1]["x"], _ours(name, net, 6))


def test_v_prediction_gives_eps_from_v_with_float64_tables():
    def v_net(x, t, **c):
        return torch.full_like(x, 0.25) + 0.1 * x

    acp64 = ldm_alphas_cumprod(dtype=torch.float64)
    den = ts.TimestepDenoiser(v_net, acp64, "v")
    x, t = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([500.0, 17.9])
    eps = den(x, t)
    for i, step in enumerate((500, 17)):  # the index is truncated, as CompVis' t.to(int)
        sa = torch.tensor(math.sqrt(acp64[step].item()), dtype=torch.float32)
        sm = torch.tensor(math.sqrt(1 - acp64[step].item()), dtype=torch.float32)
        assert torch.equal(eps[i], sa * v_net(x, t)[i] + sm * x[i])
    assert den.alphas_cumprod.dtype == torch.float32 and torch.equal(den.alphas_cumprod, ACP)


def test_v_prediction_ddim_predicts_x0_as_the_v_definition():
    net = TinyNet()
    seen = []
    x_t = _noise().next()
    _ours("DDIM", net, 5, v=True, callback=seen.append, acp=ldm_alphas_cumprod(dtype=torch.float64))
    # x0 = sqrt(a) x_t - sqrt(1 - a) v at the first step (t = 801), v being the CFG-combined output
    cond, uncond = _conds()
    with torch.no_grad():
        out = net(torch.cat([x_t, x_t]), torch.full((4,), 801.0), encoder_hidden_states=torch.cat([cond, uncond]))
    v = out[2:] + (out[:2] - out[2:]) * CFG
    a = ACP[801].double().item()
    assert torch.allclose(seen[0]["denoised"], math.sqrt(a) * x_t - math.sqrt(1 - a) * v, atol=1e-5)
    assert not torch.allclose(_ours("DDIM", net, 5, v=True), _ours("DDIM", net, 5))


@pytest.mark.parametrize("name", ["DDIM", "PLMS"])
def test_img2img_noises_to_timesteps_t_enc_and_samples_below_it(name):
    net = TinyNet()
    init = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(3))
    steps, strength = 10, 0.6  # t_enc = 6: noise at timesteps[6] = 601, sample over timesteps[:6]
    got = _ours(name, net, steps, init=init, strength=strength)
    noise = _noise().next()
    a = ACP[601]
    x = init * a.sqrt() + noise * (1 - a).sqrt()
    net.calls.clear()
    with torch.no_grad():
        if name == "DDIM":
            eps_fn = _ref_eps(net)
            for t, t_prev in [(501, 401), (401, 301), (301, 201), (201, 101), (101, 1)]:
                aa, ap = ACP[t], ACP[t_prev]
                e = eps_fn(x, t)[0]
                x = ap.sqrt() * ((x - (1 - aa).sqrt() * e) / aa.sqrt()) + (1 - ap).sqrt() * e
            assert torch.equal(got, x)
    assert not torch.equal(got, _ours(name, net, steps, init=init, strength=0.3))


def test_unipc_img2img_starts_at_the_timestep_below_t_enc():
    net = TinyNet()
    init = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(3))
    _ours("UniPC", net, 10, init=init, strength=0.6)
    # A1111: t_start = timesteps[t_enc - 1] / 1000 + 1/1000, i.e. model time 501; 6 UniPC steps
    assert float(net.calls[0][0]) == pytest.approx(501.0, abs=1e-3)
    with pytest.raises(BadInput, match="UniPC of order 3 needs at least 3 steps"):
        _ours("UniPC", net, 10, init=init, strength=0.2)


def test_img2img_fix_steps_schedules_more_timesteps():
    net = TinyNet()
    init = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(3))
    _ours("DDIM", net, 5, init=init, strength=0.5, options=SamplingOptions(img2img_fix_steps=True))
    # 10 timesteps scheduled, t_enc = 4: DDIM evaluates timesteps[3..1]
    assert [int(t[0]) for t in net.calls] == [301, 201, 101]


def test_cfgpp_sets_a1111s_protocol_and_uses_the_uncond_eps():
    calls = []

    def net(x, t, encoder_hidden_states):
        calls.append(x.shape[0])
        return x * 0 + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)

    cfg = ts.TimestepCFG(ts.TimestepDenoiser(net, ACP))
    assert (cfg.cond_scale_multiplier, cfg.need_last_noise_uncond, cfg.last_noise_uncond) == (1.0, False, None)
    x = torch.ones(1, 4, 2, 2)
    extra = {"cond": {"encoder_hidden_states": torch.full((1, 3, 8), 2.0)},
             "uncond": {"encoder_hidden_states": torch.zeros(1, 6, 8)}, "cond_scale": 6.25}
    ts.sample_ddim_cfgpp(cfg, x, ts.a1111_timesteps(4), ACP, extra_args=extra)
    assert cfg.cond_scale_multiplier == 1 / 12.5 and cfg.need_last_noise_uncond
    assert torch.equal(cfg.last_noise_uncond, torch.zeros(1, 4, 2, 2))  # kept also when cond and uncond run apart
    assert calls == [1, 1] * 3
    eps = cfg(x, torch.tensor([501.0]), **extra)
    assert torch.allclose(eps, torch.full_like(x, 2.0 * 6.25 / 12.5))


def test_sgm_noise_multiplier_does_not_touch_the_timestep_samplers():
    net = TinyNet()
    for name in ("DDIM", "UniPC"):
        assert torch.equal(_ours(name, net, 8, options=SamplingOptions(sgm_noise_multiplier=True)), _ours(name, net, 8))


def test_the_table_has_a1111s_timestep_samplers_in_order():
    names = list(K_SAMPLERS)
    assert names[names.index("Restart") + 1:] == ["DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"]
    for name, alias in (("DDIM", "ddim"), ("DDIM CFG++", "ddim_cfgpp"), ("PLMS", "plms"), ("UniPC", "unipc")):
        sampler, schedule = find_k_sampler(alias)
        assert (sampler.name, sampler.kind, sampler.uses_schedule, sampler.uses_ensd) == (name, "timesteps", False, False)
    assert find_k_sampler("DDIM Karras") == (K_SAMPLERS["DDIM"], "Karras")  # accepted and ignored, as A1111
    assert isinstance(denoiser_for(K_SAMPLERS["PLMS"], lambda x, t: x, ACP), ts.TimestepDenoiser)
    # a schedule type changes nothing for them
    net = TinyNet()
    den = denoiser_for(K_SAMPLERS["DDIM"], lambda x, t, **c: net(x, t, **c), ACP)
    with torch.no_grad():
        a = sample(K_SAMPLERS["DDIM"], ts.TimestepCFG(den), den, ImageRNG(SHAPE, SEEDS), SEEDS, 5, schedule="Karras", extra_args=_extra())
    assert torch.equal(a, _ours("DDIM", net, 5))
