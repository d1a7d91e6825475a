"""UniPC (Zhao et al., "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models", 2023), multistep, data prediction, as A1111 v1.10.1 runs it.

Ported from the authors' implementation, wl-zhao/UniPC
(`example/stable-diffusion/ldm/models/diffusion/uni_pc/uni_pc.py`; MIT License, Copyright (c)
2023 Wenliang Zhao), which A1111 ships in `modules/models/diffusion/uni_pc/`. Only what A1111
uses is kept: the discrete VP noise schedule over the model's alpha_bar (log alpha interpolated
piecewise-linearly in t = (n + 1) / N), the three ways to space the steps, the B(h) variants
("bh1", "bh2") and "vary_coeff", multistep sampling with lower-order warm-up and the last step
without corrector. The arithmetic is kept operation for operation, so that with the same
network the latents are A1111's bit for bit.

What A1111 adds around it is here too: the network gets the model time (t - 1/N) * 1000
(fractional, from 999 down), and after every update a callback gets the new x and its data
prediction (None after the last step, which runs no corrector).

The "vary_coeff" variant in the original broadcasts per-image coefficients of shape (B,)
against the latents, which only works for one image at a time; here every coefficient is
expanded per image (the same numbers for one image).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from localdiffusion.errors import BadInput, one_of

UNIPC_VARIANTS = ("bh1", "bh2", "vary_coeff")
UNIPC_SKIP_TYPES = ("time_uniform", "time_quadratic", "logSNR")


def expand_dims(v: torch.Tensor, dims: int) -> torch.Tensor:
    """A per-image tensor (N,) as (N, 1, ..., 1) with `dims` dimensions."""
    return v[(...,) + (None,) * (dims - 1)]


def interpolate_fn(x: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear y = f(x) through the keypoints (xp, yp), extended linearly beyond them.

    x is (N, C), xp and yp (C, K); returns (N, C). The original's sort-based formulation, kept
    for identical rounding."""
    n, k = x.shape[0], xp.shape[1]
    all_x = torch.cat([x.unsqueeze(2), xp.unsqueeze(0).repeat((n, 1, 1))], dim=2)
    sorted_all_x, x_indices = torch.sort(all_x, dim=2)
    x_idx = torch.argmin(x_indices, dim=2)
    cand_start_idx = x_idx - 1
    first, last = torch.eq(x_idx, 0), torch.eq(x_idx, k)
    start_idx = torch.where(first, torch.tensor(1, device=x.device),
                            torch.where(last, torch.tensor(k - 2, device=x.device), cand_start_idx))
    end_idx = torch.where(torch.eq(start_idx, cand_start_idx), start_idx + 2, start_idx + 1)
    start_x = torch.gather(sorted_all_x, dim=2, index=start_idx.unsqueeze(2)).squeeze(2)
    end_x = torch.gather(sorted_all_x, dim=2, index=end_idx.unsqueeze(2)).squeeze(2)
    start_idx2 = torch.where(first, torch.tensor(0, device=x.device),
                             torch.where(last, torch.tensor(k - 2, device=x.device), cand_start_idx))
    y_positions = yp.unsqueeze(0).expand(n, -1, -1)
    start_y = torch.gather(y_positions, dim=2, index=start_idx2.unsqueeze(2)).squeeze(2)
    end_y = torch.gather(y_positions, dim=2, index=(start_idx2 + 1).unsqueeze(2)).squeeze(2)
    return start_y + (x - start_x) * (end_y - start_y) / (end_x - start_x)


class DiscreteVPSchedule:
    """The forward process of a discrete-time model as a continuous VP schedule on t in [1/N, 1].

    alpha_t = sqrt(alpha_bar), sigma_t = sqrt(1 - alpha_t^2), lambda_t = log(alpha_t / sigma_t)."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        log_alphas = 0.5 * torch.log(alphas_cumprod)
        self.total_N = len(log_alphas)
        self.T = 1.0
        self.t_array = torch.linspace(0.0, 1.0, self.total_N + 1)[1:].reshape((1, -1))
        self.log_alpha_array = log_alphas.reshape((1, -1))

    def marginal_log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        return interpolate_fn(t.reshape((-1, 1)), self.t_array.to(t.device), self.log_alpha_array.to(t.device)).reshape((-1))

    def marginal_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1.0 - torch.exp(2.0 * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t: torch.Tensor) -> torch.Tensor:
        log_mean_coeff = self.marginal_log_mean_coeff(t)
        log_std = 0.5 * torch.log(1.0 - torch.exp(2.0 * log_mean_coeff))
        return log_mean_coeff - log_std

    def inverse_lambda(self, lamb: torch.Tensor) -> torch.Tensor:
        log_alpha = -0.5 * torch.logaddexp(torch.zeros((1,)).to(lamb.device), -2.0 * lamb)
        t = interpolate_fn(log_alpha.reshape((-1, 1)), torch.flip(self.log_alpha_array.to(lamb.device), [1]),
                           torch.flip(self.t_array.to(lamb.device), [1]))
        return t.reshape((-1,))


def check_unipc_options(variant: str, skip_type: str, order: int) -> None:
    """One sentence for a UniPC option A1111 would not take."""
    if variant not in UNIPC_VARIANTS:
        raise BadInput(f"Unknown UniPC variant '{variant}'; choose one of {one_of(list(UNIPC_VARIANTS))}.", field="uni_pc_variant")
    if skip_type not in UNIPC_SKIP_TYPES:
        raise BadInput(f"Unknown UniPC skip type '{skip_type}'; choose one of {one_of(list(UNIPC_SKIP_TYPES))}.",
                       field="uni_pc_skip_type")
    if int(order) < 1:
        raise BadInput(f"The UniPC order must be 1 or more, not {order}.", field="uni_pc_order")


class UniPC:
    """Multistep UniPC with data prediction over `model(x, t_model) -> eps` (t_model = (t - 1/N) * 1000).

    `after_update(x, x0)` is called after every update (x0 is None after the last one)."""

    def __init__(
        self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], schedule: DiscreteVPSchedule,
        variant: str = "bh1", after_update: Callable[[torch.Tensor, torch.Tensor | None], None] | None = None,
    ) -> None:
        self.model = model
        self.noise_schedule = schedule
        self.variant = variant
        self.after_update = after_update

    def model_time(self, t_continuous: torch.Tensor) -> torch.Tensor:
        return (t_continuous - 1.0 / self.noise_schedule.total_N) * 1000.0

    def data_prediction(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 from the network's eps at continuous time t."""
        noise = self.model(x, self.model_time(t))
        dims = x.dim()
        alpha_t, sigma_t = self.noise_schedule.marginal_alpha(t), self.noise_schedule.marginal_std(t)
        return (x - expand_dims(sigma_t, dims) * noise) / expand_dims(alpha_t, dims)

    def time_steps(self, skip_type: str, t_T: Any, t_0: float, n: int, device: Any) -> torch.Tensor:
        """n + 1 continuous times from t_T down to t_0."""
        if skip_type == "logSNR":
            lambda_T = self.noise_schedule.marginal_lambda(torch.as_tensor(t_T).to(device))
            lambda_0 = self.noise_schedule.marginal_lambda(torch.tensor(t_0).to(device))
            steps = torch.linspace(lambda_T.cpu().item(), lambda_0.cpu().item(), n + 1).to(device)
            return self.noise_schedule.inverse_lambda(steps)
        if skip_type == "time_uniform":
            return torch.linspace(t_T, t_0, n + 1).to(device)
        if skip_type == "time_quadratic":
            return torch.linspace(t_T ** (1.0 / 2), t_0 ** (1.0 / 2), n + 1).pow(2).to(device)
        raise BadInput(f"Unknown UniPC skip type '{skip_type}'; choose one of {one_of(list(UNIPC_SKIP_TYPES))}.",
                       field="uni_pc_skip_type")

    def update(self, x: torch.Tensor, model_prev_list: list, t_prev_list: list, t: torch.Tensor, order: int,
               use_corrector: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        if len(t.shape) == 0:
            t = t.view(-1)
        if self.variant in ("bh1", "bh2"):
            return self._update_bh(x, model_prev_list, t_prev_list, t, order, use_corrector)
        return self._update_vary_coeff(x, model_prev_list, t_prev_list, t, order, use_corrector)

    def _common(self, model_prev_list: list, t_prev_list: list, t: torch.Tensor):
        ns = self.noise_schedule
        t_prev_0 = t_prev_list[-1]
        lambda_prev_0 = ns.marginal_lambda(t_prev_0)
        lambda_t = ns.marginal_lambda(t)
        sigma_prev_0, sigma_t = ns.marginal_std(t_prev_0), ns.marginal_std(t)
        alpha_t = torch.exp(ns.marginal_log_mean_coeff(t))
        h = lambda_t - lambda_prev_0
        return lambda_prev_0, sigma_prev_0, sigma_t, alpha_t, h

    def _update_bh(self, x, model_prev_list, t_prev_list, t, order, use_corrector):
        """UniPC with B(h) = h ("bh1") or e^h - 1 ("bh2"): a predictor from the last `order` data
        predictions, then (except at the last step) the corrector with the new one."""
        ns = self.noise_schedule
        dims = x.dim()
        lambda_prev_0, sigma_prev_0, sigma_t, alpha_t, h = self._common(model_prev_list, t_prev_list, t)
        model_prev_0 = model_prev_list[-1]

        rks, d1s = [], []
        for i in range(1, order):
            lambda_prev_i = ns.marginal_lambda(t_prev_list[-(i + 1)])
            rk = ((lambda_prev_i - lambda_prev_0) / h)[0]
            rks.append(rk)
            d1s.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
        rks.append(1.0)
        rks = torch.tensor(rks, device=x.device)

        hh = -h[0]  # data prediction
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        rows, b = [], []
        factorial_i = 1
        for i in range(1, order + 1):
            rows.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial_i / b_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        r = torch.stack(rows)
        b = torch.tensor(b, device=x.device)

        d1s_t = None
        if d1s:
            d1s_t = torch.stack(d1s, dim=1)  # (B, K, C, H, W)
            rhos_p = torch.tensor([0.5], device=b.device) if order == 2 else torch.linalg.solve(r[:-1, :-1], b[:-1])
        if use_corrector:
            rhos_c = torch.tensor([0.5], device=b.device) if order == 1 else torch.linalg.solve(r, b)

        x_t_ = expand_dims(sigma_t / sigma_prev_0, dims) * x - expand_dims(alpha_t * h_phi_1, dims) * model_prev_0
        pred_res = torch.einsum("k,bkchw->bchw", rhos_p, d1s_t) if d1s_t is not None else 0
        x_t = x_t_ - expand_dims(alpha_t * b_h, dims) * pred_res

        model_t = None
        if use_corrector:
            model_t = self.data_prediction(x_t, t)
            corr_res = torch.einsum("k,bkchw->bchw", rhos_c[:-1], d1s_t) if d1s_t is not None else 0
            d1_t = model_t - model_prev_0
            x_t = x_t_ - expand_dims(alpha_t * b_h, dims) * (corr_res + rhos_c[-1] * d1_t)
        return x_t, model_t

    def _update_vary_coeff(self, x, model_prev_list, t_prev_list, t, order, use_corrector):
        """UniPC with varying coefficients (the inverse of the Taylor matrix of the rk)."""
        ns = self.noise_schedule
        dims = x.dim()
        lambda_prev_0, sigma_prev_0, sigma_t, alpha_t, h = self._common(model_prev_list, t_prev_list, t)
        model_prev_0 = model_prev_list[-1]

        rks, d1s = [], []
        for i in range(1, order):
            lambda_prev_i = ns.marginal_lambda(t_prev_list[-(i + 1)])
            rk = (lambda_prev_i - lambda_prev_0) / h
            rks.append(rk[0])
            d1s.append((model_prev_list[-(i + 1)] - model_prev_0) / expand_dims(rk, dims))
        rks.append(1.0)
        rks = torch.tensor(rks, device=x.device)

        k_count = len(rks)
        cols, col = [], torch.ones_like(rks)
        for k in range(1, k_count + 1):
            cols.append(col)
            col = col * rks / (k + 1)
        c = torch.stack(cols, dim=1)
        if d1s:
            d1s_t = torch.stack(d1s, dim=1)
            a_p = torch.linalg.inv(c[:-1, :-1])
        if use_corrector:
            a_c = torch.linalg.inv(c)

        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_ks, h_phi_k, factorial_k = [], h_phi_1, 1
        for k in range(1, k_count + 2):
            h_phi_ks.append(h_phi_k)
            h_phi_k = h_phi_k / hh - 1 / factorial_k
            factorial_k *= k + 1

        a = expand_dims(alpha_t, dims)
        x_t_ = expand_dims(sigma_t / sigma_prev_0, dims) * x - a * expand_dims(h_phi_1, dims) * model_prev_0
        x_t = x_t_
        if d1s:
            for k in range(k_count - 1):
                x_t = x_t - a * expand_dims(h_phi_ks[k + 1], dims) * torch.einsum("bkchw,k->bchw", d1s_t, a_p[k])
        model_t = None
        if use_corrector:
            model_t = self.data_prediction(x_t, t)
            d1_t = model_t - model_prev_0
            x_t = x_t_
            k = 0
            for k in range(k_count - 1):
                x_t = x_t - a * expand_dims(h_phi_ks[k + 1], dims) * torch.einsum("bkchw,k->bchw", d1s_t, a_c[k][:-1])
            x_t = x_t - a * expand_dims(h_phi_ks[k_count], dims) * (d1_t * a_c[k][-1])
        return x_t, model_t

    def sample(self, x: torch.Tensor, steps: int, t_start: Any = None, order: int = 3, skip_type: str = "time_uniform",
               lower_order_final: bool = True) -> torch.Tensor:
        """`steps` multistep updates from t_start (default T = 1) down to 1/N."""
        t_0 = 1.0 / self.noise_schedule.total_N
        t_T = self.noise_schedule.T if t_start is None else t_start
        if steps < order:
            raise BadInput(f"UniPC of order {order} needs at least {order} steps and this run has {steps}; "
                           f"raise the steps or lower the UniPC order (A1111 refuses it too).", field="steps")
        timesteps = self.time_steps(skip_type, t_T, t_0, steps, x.device)
        batch = x.shape[0]
        vec_t = timesteps[0].expand((batch,))
        model_prev_list = [self.data_prediction(x, vec_t)]
        t_prev_list = [vec_t]
        for init_order in range(1, order):  # warm up with lower orders
            vec_t = timesteps[init_order].expand(batch)
            x, model_x = self.update(x, model_prev_list, t_prev_list, vec_t, init_order, use_corrector=True)
            if model_x is None:
                model_x = self.data_prediction(x, vec_t)
            if self.after_update is not None:
                self.after_update(x, model_x)
            model_prev_list.append(model_x)
            t_prev_list.append(vec_t)
        for step in range(order, steps + 1):
            vec_t = timesteps[step].expand(batch)
            step_order = min(order, steps + 1 - step) if lower_order_final else order
            x, model_x = self.update(x, model_prev_list, t_prev_list, vec_t, step_order, use_corrector=step != steps)
            if self.after_update is not None:
                self.after_update(x, model_x)
            for i in range(order - 1):
                t_prev_list[i] = t_prev_list[i + 1]
                model_prev_list[i] = model_prev_list[i + 1]
            t_prev_list[-1] = vec_t
            if step < steps:  # the final data prediction is never needed
                if model_x is None:
                    model_x = self.data_prediction(x, vec_t)
                model_prev_list[-1] = model_x
        return x
