"""The A1111 sampling core without the k-diffusion package: the NV generator against Philox's
published answers and A1111's documented output, A1111's per-image noise (variation seeds,
ENSD), the schedule types against their formulas, the sampler table, CFG and 8-bit pixels.

The comparisons with k-diffusion itself are in test_k_sampling_oracle.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from localdiffusion.engine.k_sampling import rng, schedules
from localdiffusion.engine.k_sampling.denoiser import (
    CFGDenoiser, EpsDenoiser, LCMDenoiser, alphas_cumprod_from_config, combine_denoised, ldm_alphas_cumprod,
)
from localdiffusion.engine.k_sampling.pixels import to_uint8_a1111
from localdiffusion.engine.k_sampling.samplers import sample_lcm, sample_restart
from localdiffusion.engine.k_sampling.table import K_SAMPLERS, find_k_sampler
from localdiffusion.errors import BadInput

# --- NV: Philox4x32-10 and A1111's Box-Muller ------------------------------------------------

# Known-answer tests of Philox4x32-10 published with Random123 (kat_vectors): counter, key -> output.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0), (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, expected", PHILOX_KAT)
def test_philox_matches_the_published_known_answers(counter, key, expected):
    out = rng.philox4_32(np.array(counter, dtype=np.uint32).reshape(4, 1), np.array(key, dtype=np.uint32).reshape(2, 1))
    assert tuple(int(v) for v in out[:, 0]) == expected


def _philox_scalar(counter, key):
    """Philox4x32-10 with Python integers, written from the paper's round function."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    mask = 0xFFFFFFFF
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & mask, (k1 + 0xBB67AE85) & mask
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & mask, (p0 >> 32) ^ c3 ^ k1, p0 & mask
    return c0, c1, c2, c3


def test_nv_draws_use_the_offset_the_index_and_both_key_words():
    seed = 2**40 + 12345  # a key with a high word
    g = rng.PhiloxGenerator(seed)
    g.randn((5,))
    second = g.randn((2, 3))  # offset 1
    for index in range(6):
        c0, c1, _, _ = _philox_scalar((1, 0, index, 0), (seed & 0xFFFFFFFF, seed >> 32))
        u = np.float32(c0) * np.float32(2.3283064e-10) + np.float32(2.3283064e-10) / 2
        v = np.float32(c1) * np.float32(2.3283064e-10 * 6.2831855) + np.float32(2.3283064e-10 * 6.2831855) / 2
        expected = math.sqrt(-2.0 * math.log(u)) * math.sin(v)
        assert second.reshape(-1)[index] == pytest.approx(expected, abs=2e-6)


def test_nv_gives_the_cuda_numbers_a1111_documents():
    # rng_philox.py's docstring: torch.randn((3, 4), device="cuda") after seed 0.
    expected = [[-0.92466259, -0.42534415, -2.6438457, 0.14518388],
                [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
                [-1.07454231, -0.36314407, -1.67105067, 2.26550497]]
    got = rng.PhiloxGenerator(0).randn((3, 4))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_nv_is_deterministic_and_standard_normal():
    a = rng.PhiloxGenerator(1234).randn((200_000,))
    assert np.array_equal(a, rng.PhiloxGenerator(1234).randn((200_000,)))
    assert abs(float(a.mean())) < 0.01 and abs(float(a.std()) - 1) < 0.01
    assert not np.array_equal(a[:10], rng.PhiloxGenerator(1235).randn((10,)))


# --- ImageRNG: first noise, variation seeds, ENSD ----------------------------------------------

SHAPE = (4, 8, 8)


def _cpu(seed, shape=SHAPE, draws=1):
    g = torch.Generator("cpu").manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(draws)]


def test_cpu_noise_is_the_seeds_generator_and_steps_continue_it():
    image_rng = rng.ImageRNG(SHAPE, [7, 8])
    first, second = image_rng.next(), image_rng.next()
    a, b = _cpu(7, draws=2), _cpu(8, draws=2)
    assert torch.equal(first, torch.stack([a[0], b[0]]))
    assert torch.equal(second, torch.stack([a[1], b[1]]))


def test_ensd_reseeds_the_step_noise_with_seed_plus_delta_and_leaves_the_first_noise():
    image_rng = rng.ImageRNG(SHAPE, [7], eta_noise_seed_delta=31337)
    first, second, third = image_rng.next(), image_rng.next(), image_rng.next()
    assert torch.equal(first[0], _cpu(7)[0])
    steps = _cpu(7 + 31337, draws=2)
    assert torch.equal(second[0], steps[0]) and torch.equal(third[0], steps[1])


def test_variation_seed_blends_by_slerp():
    from localdiffusion.engine.noise import slerp

    image_rng = rng.ImageRNG(SHAPE, [7], subseeds=[99], subseed_strength=0.3)
    got = image_rng.next()[0]
    assert torch.equal(got, slerp(0.3, _cpu(7)[0], _cpu(99)[0]))
    # the step noise goes on from the seed's own generator, after its one draw
    assert torch.equal(image_rng.next()[0], _cpu(7, draws=2)[1])


def test_resize_seed_from_centres_the_smaller_noise():
    image_rng = rng.ImageRNG((4, 8, 8), [5], seed_resize_from_h=32, seed_resize_from_w=48)
    got = image_rng.next()[0]
    small = _cpu(5, (4, 4, 6))[0]
    assert torch.equal(got[:, 2:6, 1:7], small)
    # outside, the seed's generator drew a full-size tensor after the small one... from a fresh start
    full = _cpu(5, (4, 8, 8))[0]
    assert torch.equal(got[:, 0, :], full[:, 0, :])


def test_nv_source_gives_philox_noise_per_image():
    image_rng = rng.ImageRNG(SHAPE, [3], source="nv", eta_noise_seed_delta=1)
    first, second = image_rng.next(), image_rng.next()
    assert np.array_equal(first[0].numpy(), rng.PhiloxGenerator(3).randn(SHAPE))
    assert np.array_equal(second[0].numpy(), rng.PhiloxGenerator(4).randn(SHAPE))


def test_gpu_source_is_refused_in_one_sentence_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so the GPU source works here")
    with pytest.raises(BadInput, match="NVIDIA GPU.*'NV'"):
        rng.ImageRNG(SHAPE, [1], source="GPU")
    with pytest.raises(BadInput, match="Unknown RNG source 'XPU'"):
        rng.check_source("XPU")


def test_rng_noise_sampler_draws_the_next_step_noise():
    image_rng = rng.ImageRNG(SHAPE, [11])
    image_rng.next()
    noise = rng.rng_noise_sampler(image_rng)(torch.tensor(1.0), torch.tensor(0.5))
    assert torch.equal(noise[0], _cpu(11, draws=2)[1])


# --- the model's sigmas and the schedule types ------------------------------------------------


@pytest.fixture(scope="module")
def sd_denoiser():
    return EpsDenoiser(lambda x, t, **c: x, ldm_alphas_cumprod())


def test_sd_sigmas_span_a1111s_range(sd_denoiser):
    assert sd_denoiser.sigmas[0].item() == pytest.approx(0.0292, abs=1e-4)
    assert sd_denoiser.sigmas[-1].item() == pytest.approx(14.6146, abs=1e-4)
    # "Automatic" for Euler: t = linspace(999, 0, 8) -> sigma, then 0; starts at 14.61, not diffusers' "leading" 7.37
    sig = sd_denoiser.get_sigmas(8)
    assert len(sig) == 9 and sig[-1] == 0 and sig[0].item() == pytest.approx(14.6146, abs=1e-3)


def test_config_betas_follow_the_original_code():
    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}
    assert torch.equal(alphas_cumprod_from_config(config), ldm_alphas_cumprod())
    with pytest.raises(BadInput, match="squaredcos_cap_v2"):
        alphas_cumprod_from_config({"beta_schedule": "squaredcos_cap_v2"})


def test_sigma_t_round_trip(sd_denoiser):
    t = torch.tensor([0.0, 1.5, 500.25, 999.0])
    assert torch.allclose(sd_denoiser.sigma_to_t(sd_denoiser.t_to_sigma(t)), t, atol=1e-3)


def _model_sigma_at(den, t):
    """The model's sigma at fractional t: linear in log sigma between the two discrete steps."""
    lo, hi = math.floor(t), math.ceil(t)
    w = t - lo
    return math.exp((1 - w) * den.log_sigmas[lo].item() + w * den.log_sigmas[hi].item())


def test_sgm_uniform_and_normal_space_timesteps_evenly(sd_denoiser):
    sgm = schedules.get_sigmas_sgm_uniform(4, sd_denoiser.sigmas[0].item(), sd_denoiser.sigmas[-1].item(), sd_denoiser)
    normal = schedules.get_sigmas_normal(4, sd_denoiser.sigmas[0].item(), sd_denoiser.sigmas[-1].item(), sd_denoiser)
    for got, ts in ((sgm, [999, 749.25, 499.5, 249.75]), (normal, [999, 666, 333, 0])):
        assert len(got) == 5 and got[-1] == 0
        for g, t in zip(got[:-1].tolist(), ts):
            assert g == pytest.approx(_model_sigma_at(sd_denoiser, t), rel=2e-3)


def test_simple_and_ddim_pick_the_models_own_sigmas(sd_denoiser):
    sig = sd_denoiser.sigmas
    simple = schedules.get_sigmas_simple(4, sd_denoiser)
    assert simple.tolist() == [sig[999].item(), sig[749].item(), sig[499].item(), sig[249].item(), 0.0]
    ddim = schedules.get_sigmas_ddim(4, sd_denoiser)
    assert ddim.tolist() == [sig[751].item(), sig[501].item(), sig[251].item(), sig[1].item(), 0.0]


def test_kl_optimal_beta_and_align_your_steps_formulas():
    kl = schedules.get_sigmas_kl_optimal(4, 0.03, 14.6)
    expected = [math.tan((1 - i / 4) * math.atan(14.6) + i / 4 * math.atan(0.03)) for i in range(5)]
    assert kl.tolist() == pytest.approx(expected, rel=1e-5)  # KL Optimal ends at sigma_min, as A1111's

    from scipy.stats import beta

    b = schedules.get_sigmas_beta(5, 0.03, 14.6)
    expected = [0.03 + beta.ppf(1 - i / 4, 0.6, 0.6) * (14.6 - 0.03) for i in range(5)] + [0.0]
    assert b.tolist() == pytest.approx(expected, rel=1e-6)

    ays = schedules.get_sigmas_align_your_steps(11)
    assert ays.tolist() == pytest.approx(list(schedules.AYS_SD1) + [0.0], rel=1e-6)
    # 6 steps fall on every other entry of the table; 21 steps put the geometric mean between neighbours
    ays6 = schedules.get_sigmas_align_your_steps(6, is_sdxl=True)
    assert ays6.tolist() == pytest.approx(list(schedules.AYS_SDXL[::2]) + [0.0], rel=1e-6)
    ays21 = schedules.get_sigmas_align_your_steps(21)
    assert len(ays21) == 22 and ays21[1].item() == pytest.approx(math.sqrt(14.615 * 6.475), rel=1e-6)


def test_sigmas_for_resolves_automatic_and_discards_the_next_to_last(sd_denoiser):
    lo, hi = sd_denoiser.sigmas[0].item(), sd_denoiser.sigmas[-1].item()
    assert torch.equal(schedules.sigmas_for(sd_denoiser, 6, "Automatic"), sd_denoiser.get_sigmas(6))
    assert torch.equal(schedules.sigmas_for(sd_denoiser, 6, "Automatic", default_schedule="Karras"),
                       schedules.get_sigmas_karras(6, lo, hi))
    dpm2 = schedules.sigmas_for(sd_denoiser, 6, "Exponential", discard_next_to_last_sigma=True)
    full = schedules.get_sigmas_exponential(7, lo, hi)
    assert torch.equal(dpm2, torch.cat([full[:-2], full[-1:]]))
    assert torch.equal(schedules.sigmas_for(sd_denoiser, 6, "karras", rho=3.0), schedules.get_sigmas_karras(6, lo, hi, rho=3.0))
    assert torch.equal(schedules.sigmas_for(sd_denoiser, 6, "SGMUniform"), schedules.get_sigmas_sgm_uniform(6, lo, hi, sd_denoiser))
    with pytest.raises(BadInput, match="Unknown schedule type 'Karas'.*did you mean 'Karras'"):
        schedules.sigmas_for(sd_denoiser, 6, "Karas")


def test_every_schedule_type_gives_a_falling_schedule(sd_denoiser):
    for label in schedules.SCHEDULE_TYPES:
        sig = schedules.sigmas_for(sd_denoiser, 7, label)
        # A1111's DDIM type steps by 1000 // 7 = 142 from t = 1, which makes 8 sigmas, not 7
        assert len(sig) == (9 if label == "DDIM" else 8), label
        assert sig.dtype == torch.float32 and bool((sig[:-1] >= sig[1:]).all()), label


# --- the sampler table ---------------------------------------------------------------------------


def test_table_has_a1111_1_10s_k_diffusion_samplers_and_defaults():
    assert list(K_SAMPLERS) == [
        "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a", "Euler",
        "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM",
    ]
    defaults = {n: s.default_schedule for n, s in K_SAMPLERS.items() if s.default_schedule}
    assert defaults == {"DPM++ 2M": "Karras", "DPM++ SDE": "Karras", "DPM++ 2M SDE": "Exponential", "DPM++ 2M SDE Heun": "Exponential",
                        "DPM++ 2S a": "Karras", "DPM++ 3M SDE": "Exponential", "DPM2": "Karras", "DPM2 a": "Karras", "Restart": "Karras"}
    assert {n for n, s in K_SAMPLERS.items() if s.uses_ensd} == {"DPM++ 2S a", "Euler a", "DPM2 a", "DPM fast", "DPM adaptive"}
    assert {n for n, s in K_SAMPLERS.items() if s.brownian_noise} == {"DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"}
    assert {n for n, s in K_SAMPLERS.items() if s.discard_next_to_last_sigma} == {"DPM2", "DPM2 a", "DPM++ 3M SDE"}


def test_find_k_sampler_by_name_alias_and_legacy_name():
    assert find_k_sampler("euler A")[0].name == "Euler a"
    assert find_k_sampler("k_dpmpp_2m_sde_heun")[0].name == "DPM++ 2M SDE Heun"
    sampler, schedule = find_k_sampler("DPM++ 2M Karras")
    assert (sampler.name, schedule) == ("DPM++ 2M", "Karras")
    assert find_k_sampler("DPM++ 2M Karras", "Beta")[1] == "Karras"  # the name's suffix wins, as in A1111
    assert find_k_sampler("Euler a sgm_uniform")[1] == "SGM Uniform"
    with pytest.raises(BadInput, match="Unknown sampler 'Eular'.*did you mean"):
        find_k_sampler("Eular")


# --- CFG, LCM, Restart's plan, pixels -----------------------------------------------------------


def test_cfg_blends_below_one_and_runs_cond_and_uncond_as_one_batch():
    calls = []

    def net(x, t, encoder_hidden_states):
        calls.append(x.shape[0])
        return x * 0 + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)

    den = CFGDenoiser(EpsDenoiser(net, ldm_alphas_cumprod()))
    x, sigma = torch.ones(1, 4, 2, 2), torch.tensor([1.0])
    cond, uncond = {"encoder_hidden_states": torch.full((1, 3, 8), 2.0)}, {"encoder_hidden_states": torch.zeros(1, 3, 8)}
    out = den(x, sigma, cond=cond, uncond=uncond, cond_scale=0.5)
    assert calls == [2]
    d_cond, d_uncond = x - 2.0 * sigma.item(), x - 0.0
    assert torch.allclose(out, d_uncond + (d_cond - d_uncond) * 0.5)
    # prompts of different lengths run as two calls
    den(x, sigma, cond=cond, uncond={"encoder_hidden_states": torch.zeros(1, 6, 8)}, cond_scale=7.0)
    assert calls == [2, 1, 1]


def test_combine_denoised_keeps_a1111s_operation_order():
    g = torch.Generator().manual_seed(0)
    u, c = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    out = combine_denoised(u, [[(c[0], 1.0)], [(c[1], 1.0)]], 7.5)
    assert torch.equal(out, u + (c - u) * 7.5)


def test_lcm_snaps_timesteps_and_applies_its_boundary_condition():
    ts = []

    def net(x, t, **c):
        ts.append(t.tolist())
        return torch.zeros_like(x)

    den = LCMDenoiser(net, ldm_alphas_cumprod())
    assert len(den.sigmas) == 50
    sigmas = den.get_sigmas(4)
    x = torch.ones(1, 1, 2, 2)
    out = sample_lcm(den, x, sigmas, noise_sampler=lambda a, b: torch.zeros_like(x))
    assert ts == [[999], [679], [339], [19]]  # linspace(999, 19, 4) snapped to the 50 LCM steps
    # eps 0: each step keeps x0 = x and applies the boundary condition c_out * x0 + c_skip * x
    expected = 1.0
    for (t,) in ts:
        scaled = t * 10.0
        expected *= scaled / (scaled ** 2 + 0.25) ** 0.5 + 0.25 / (scaled ** 2 + 0.25)
    assert out.flatten()[0].item() == pytest.approx(expected, rel=1e-5)


def test_restart_from_20_steps_goes_back_up_the_karras_schedule(sd_denoiser):
    seen, noise_calls = [], []

    def model(x, sigma):
        seen.append(round(sigma[0].item(), 4))
        return torch.zeros_like(x)

    sigmas = schedules.get_sigmas_karras(20, sd_denoiser.sigmas[0].item(), sd_denoiser.sigmas[-1].item())
    sample_restart(model, torch.zeros(1, 1, 1, 1), sigmas, noise_sampler=lambda a, b: noise_calls.append(1) or torch.zeros(1, 1, 1, 1))
    main = schedules.get_sigmas_karras(11, sigmas[-2].item(), sigmas[0].item())
    assert noise_calls == [1]  # one restart: 9 steps + 1, once
    assert seen[0] == round(main[0].item(), 4)
    assert len(seen) == 2 * 10 + 1 + 2 * 9  # Heun over 11 steps (the last Euler), then 9 restart Heun steps


def test_pixels_truncate_as_a1111():
    decoded = torch.tensor([-1.0, 1.0, 0.0, 0.999, 2.0, -3.0]).view(1, 3, 1, 2)
    got = to_uint8_a1111(decoded)
    assert got.shape == (1, 1, 2, 3) and got.dtype == np.uint8
    assert got.reshape(-1).tolist() == [0, 127, 255, 255, 254, 0]  # pixels (-1, 0, 2), (1, 0.999, -3); rounding would give 128 for 0.0 and 255 for 0.999
