"""Toy CPA generators with known targets, and exact arc-length / area helpers for them.

Two targets, each a known manifold with a deliberately non-uniform training distribution. Both are
parametrised by ``params`` in [0, 1]^k whose coordinates are independent Kumaraswamy(a, b) draws
(CDF ``F(u) = 1 − (1 − u^a)^b``, quantile ``F⁻¹(p) = (1 − (1 − p)^{1/b})^{1/a}``, a Beta-like law
with a closed-form quantile):

* ``"curve"`` (1-D latent → R²): the circular arc ``γ(u) = (cos θ, sin θ)``, ``θ = θ_max·u``,
  ``θ_max = 3π/2``, radius 1 (arc length ``θ_max·u``, so the true arc-length coordinate is u);
  ``u ~ Kumaraswamy(2, 5)``: mass piles up near the start of the arc (mode u = 1/3).
* ``"surface"`` (2-D latent → R³): the saddle patch ``(x, y, (x² − y²)/2)`` with ``x = 2u − 1``,
  ``y = 2v − 1``; ``u ~ Kumaraswamy(2, 5)``, ``v ~ Kumaraswamy(3, 2)`` independent; area element
  ``4·sqrt(1 + x² + y²) du dv``.

Training regresses a ReLU/LeakyReLU MLP onto the monotone transport map
``T(z) = γ(F⁻¹(Φ(z)))`` (coordinate-wise for the surface) on fresh N(0, I) latents: in 1-D, and
for a product law with a coordinate-wise map, T is the monotone (Knothe/optimal) map pushing
N(0, I) onto the training distribution, i.e. what a perfect GAN with this parametrisation would
learn, reached in seconds on a CPU instead of through adversarial training. The loss is the MSE of
the values plus (``jacobian_weight``, default 1) the MSE of the Jacobian against the closed-form
``ideal_jacobian``: a value-only fit to MSE 1e-4 leaves the piecewise-affine Jacobian ~50% off
(zig-zag facets, +5-10% surface area), and the Jacobian is exactly what MaGNET reweights by.
Latents beyond |z| ≈ 2.5 are rarely trained on, so the learned geometry is poorer there.

Helpers for uniformity checks on the *learned* manifold (exact for the CPA net, not for γ):
``arclength_coordinate`` (curve; exact, from the breakpoints of ``spline.regions_along_segment``)
for KS tests, and ``cell_area`` / ``cell_counts`` (surface; latent grid cells, their image areas and
sample counts) for chi-square tests; ``arclength_ks``, ``cell_chi2`` and
``arclength_density_check`` run those tests. Samples uniform on the image of a latent box have latent
density ∝ ``exp(half_logdet(A_ω))`` on the box (G injective), so cell probabilities are area shares.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import spline
from ..validation import check_latents

__all__ = [
    "CURVE_THETA_MAX",
    "DensityCheck",
    "ToyGenerator",
    "arclength_coordinate",
    "arclength_density_check",
    "arclength_ks",
    "cell_area",
    "cell_chi2",
    "cell_counts",
    "curve_length",
    "ideal_generator",
    "ideal_jacobian",
    "ideal_params",
    "sample_params",
    "target_distance",
    "target_points",
    "target_volume_element",
    "train_toy_generator",
    "training_samples",
]

Target = Literal["curve", "surface"]
CURVE_THETA_MAX = 1.5 * math.pi
_KUMARASWAMY = {"curve": ((2.0, 5.0),), "surface": ((2.0, 5.0), (3.0, 2.0))}  # (a, b) per param
_OUT_DIM = {"curve": 2, "surface": 3}
LEAKY_SLOPE = 0.2


def _check_target(target: str) -> int:
    if target not in _KUMARASWAMY:
        raise ValueError(f"target must be 'curve' or 'surface', got {target!r}")
    return len(_KUMARASWAMY[target])


def _check_params(target: str, params: Tensor) -> Tensor:
    k = _check_target(target)
    check_latents(params, k, name="params")
    if bool(((params < 0) | (params > 1)).any()):
        raise ValueError("params must lie in [0, 1]")
    return params


# ----------------------------------------------------------------------------- ground truth

def target_points(target: Target, params: Tensor) -> Tensor:
    """Points of the true manifold at ``params`` [N, k] in [0, 1]^k (k = 1 curve, 2 surface):
    [N, 2] on the arc or [N, 3] on the saddle, same dtype. Raises ValueError for a bad target or
    params outside [0, 1]."""
    _check_params(target, params)
    if target == "curve":
        theta = CURVE_THETA_MAX * params[:, 0]
        return torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    x, y = 2 * params[:, 0] - 1, 2 * params[:, 1] - 1
    return torch.stack([x, y, 0.5 * (x ** 2 - y ** 2)], dim=1)


def target_volume_element(target: Target, params: Tensor) -> Tensor:
    """|dγ/du| (curve, = θ_max) or |∂γ/∂u × ∂γ/∂v| (surface, = 4·sqrt(1 + x² + y²)) at
    ``params`` [N, k]: the true length/area per unit parameter, [N]."""
    _check_params(target, params)
    if target == "curve":
        return torch.full_like(params[:, 0], CURVE_THETA_MAX)
    x, y = 2 * params[:, 0] - 1, 2 * params[:, 1] - 1
    return 4 * torch.sqrt(1 + x ** 2 + y ** 2)


def ideal_params(target: Target, z: Tensor) -> Tensor:
    """``F⁻¹(Φ(z))`` coordinate-wise: the parameters [N, k] the ideal generator maps latents
    ``z`` [N, k] to; computed in the log domain (``log_ndtr``) so the tails stay accurate."""
    k = _check_target(target)
    check_latents(z, k)
    cols = []
    for i, (a, b) in enumerate(_KUMARASWAMY[target]):
        log_sf = torch.special.log_ndtr(-z[:, i])  # log(1 − Φ(z))
        cols.append((-torch.expm1(log_sf / b)).clamp(0, 1) ** (1 / a))
    return torch.stack(cols, dim=1)


def ideal_generator(target: Target, z: Tensor) -> Tensor:
    """The transport map ``T(z) = γ(F⁻¹(Φ(z)))`` [N, D] that training regresses onto."""
    return target_points(target, ideal_params(target, z))


def ideal_jacobian(target: Target, z: Tensor) -> Tensor:
    """Closed-form Jacobian dT/dz [N, D, k] of ``ideal_generator`` at ``z`` [N, k]:
    ``γ'(u) · diag(du_i/dz_i)`` with ``du/dz = φ(z) · dF⁻¹/dp`` evaluated in the log domain."""
    u = ideal_params(target, z)  # checks target and z
    log_dudz = []
    for i, (a, b) in enumerate(_KUMARASWAMY[target]):
        log_sf = torch.special.log_ndtr(-z[:, i])  # log(1 − p)
        log_w = torch.log(-torch.expm1(log_sf / b))  # log(1 − (1 − p)^{1/b}) = a·log u
        log_phi = -0.5 * z[:, i] ** 2 - 0.5 * math.log(2 * math.pi)
        log_dudz.append(log_phi + (1 / a - 1) * log_w + (1 / b - 1) * log_sf - math.log(a * b))
    dudz = torch.stack(log_dudz, dim=1).exp()  # [N, k]
    if target == "curve":
        theta = CURVE_THETA_MAX * u[:, 0]
        dgamma = CURVE_THETA_MAX * torch.stack([-torch.sin(theta), torch.cos(theta)], dim=1)
        return (dgamma * dudz)[:, :, None]  # [N, 2, 1]
    x, y = 2 * u[:, 0] - 1, 2 * u[:, 1] - 1
    zero, two = torch.zeros_like(x), torch.full_like(x, 2.0)
    dgamma = torch.stack([torch.stack([two, zero], 1), torch.stack([zero, two], 1),
                          torch.stack([2 * x, -2 * y], 1)], dim=1)  # [N, 3, 2]
    return dgamma * dudz[:, None, :]


def sample_params(target: Target, n: int, seed: int) -> Tensor:
    """``n`` float64 draws [n, k] of the training parameter law (independent Kumaraswamy)."""
    k = _check_target(target)
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, k, generator=g, dtype=torch.float64)
    cols = [(1 - (1 - p[:, i]) ** (1 / b)) ** (1 / a)
            for i, (a, b) in enumerate(_KUMARASWAMY[target])]
    return torch.stack(cols, dim=1)


def training_samples(target: Target, n: int, seed: int) -> Tensor:
    """``n`` float64 points [n, D] from the (non-uniform) training distribution on the target."""
    return target_points(target, sample_params(target, n, seed))


def target_distance(target: Target, x: Tensor) -> Tensor:
    """Distance [N] from points ``x`` [N, D] to the true manifold: exact for the arc; for the
    saddle, the distance to the surface point above the clamped (x, y), an upper bound."""
    _check_target(target)
    check_latents(x, _OUT_DIM[target], name="x")
    if target == "curve":
        theta = torch.atan2(x[:, 1], x[:, 0]) % (2 * math.pi)  # in [0, 2π)
        ends = target_points("curve", torch.tensor([[0.0], [1.0]], dtype=x.dtype))
        d_ends = torch.cdist(x, ends).min(dim=1).values  # nearest point when θ is off the arc
        return torch.where(theta <= CURVE_THETA_MAX, (x.norm(dim=1) - 1).abs(), d_ends)
    params = ((x[:, :2] + 1) / 2).clamp(0, 1)
    return (x - target_points("surface", params)).norm(dim=1)


# ----------------------------------------------------------------------------- the generator

class ToyGenerator(nn.Module):
    """A ReLU/LeakyReLU MLP generator ``z`` [B, z_dim] → ``x`` [B, out_dim].

    ``net`` is the plain ``nn.Sequential`` (Linear, act) × depth, Linear that ``magnet_lab.spline``
    reads; ``train_loss`` / ``train_jacobian_mse`` are the final value / Jacobian MSE against the
    ideal map (NaN until trained). ``forward`` checks ``z`` and returns ``net(z)``.
    """

    def __init__(self, target: Target, *, hidden: int, depth: int, activation: str,
                 dtype: torch.dtype) -> None:
        super().__init__()
        if activation not in ("relu", "leaky_relu"):
            raise ValueError(f"activation must be 'relu' or 'leaky_relu', got {activation!r}")
        if hidden < 1 or depth < 1:
            raise ValueError(f"hidden and depth must be >= 1, got {hidden} and {depth}")
        self.target = target
        self.z_dim = _check_target(target)
        self.out_dim = _OUT_DIM[target]
        self.activation = activation
        layers: list[nn.Module] = []
        width = self.z_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden, dtype=dtype),
                       nn.ReLU() if activation == "relu" else nn.LeakyReLU(LEAKY_SLOPE)]
            width = hidden
        layers.append(nn.Linear(width, self.out_dim, dtype=dtype))
        self.net = nn.Sequential(*layers)
        self.train_loss = math.nan
        self.train_jacobian_mse = math.nan

    def forward(self, z: Tensor) -> Tensor:
        check_latents(z, self.z_dim)
        return self.net(z)


def _seeded_init(net: nn.Sequential, g: torch.Generator) -> None:
    """He-uniform weights and small uniform biases, drawn from ``g`` (not the global RNG)."""
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                bound = math.sqrt(6.0 / m.in_features)
                m.weight.uniform_(-bound, bound, generator=g)
                m.bias.uniform_(-1 / math.sqrt(m.in_features), 1 / math.sqrt(m.in_features),
                                generator=g)


def train_toy_generator(target: Target, *, hidden: int = 64, depth: int = 3, steps: int = 1500,
                        batch: int = 256, lr: float = 5e-3, seed: int = 0,
                        dtype: torch.dtype = torch.float64, activation: str = "relu",
                        jacobian_weight: float = 1.0) -> ToyGenerator:
    """Train a toy generator for ``target`` by regression onto ``ideal_generator``.

    Loss: MSE of values + ``jacobian_weight`` × MSE of Jacobians (0 gives plain MSE). Seeded
    (init and latents from one ``torch.Generator``; same seed → identical weights); Adam with a
    cosine learning-rate decay over ``steps`` steps of ``batch`` fresh N(0, I) latents (about 5 s
    of one CPU core at the defaults). Sets ``gen.train_loss`` (value MSE) and
    ``gen.train_jacobian_mse`` on 4096 fresh latents after training. Returns the generator in eval
    mode. Runs single-threaded (the thread count is restored after). Raises ValueError for a bad
    target, activation or size.
    """
    _check_target(target)
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got {steps} and {batch}")
    if not jacobian_weight >= 0:
        raise ValueError(f"jacobian_weight must be >= 0, got {jacobian_weight}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only add sync cost (x4 on 2 cores)
    try:
        return _train(target, hidden, depth, steps, batch, lr, seed, dtype, activation,
                      jacobian_weight)
    finally:
        torch.set_num_threads(threads)


def _forward_with_jacobian(net: nn.Sequential, z: Tensor) -> tuple[Tensor, Tensor]:
    """``net(z)`` [B, D] and its Jacobian [B, D, d], differentiable in the weights: the d tangent
    columns ride along (Linear: bias-free; ReLU/LeakyReLU: times the unit's slope)."""
    x, J = z, torch.eye(z.shape[1], dtype=z.dtype).expand(z.shape[0], -1, -1)  # J: [B, d, width]
    for m in net:
        if isinstance(m, nn.Linear):
            x, J = m(x), J @ m.weight.T
        else:
            slope = (x > 0).to(x.dtype)  # [B, width]
            if isinstance(m, nn.LeakyReLU):
                slope = slope + (1 - slope) * m.negative_slope
            x, J = m(x), J * slope[:, None, :]
    return x, J.transpose(1, 2)


def _train(target: Target, hidden: int, depth: int, steps: int, batch: int, lr: float, seed: int,
           dtype: torch.dtype, activation: str, jacobian_weight: float) -> ToyGenerator:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # nn.Linear's default init must not move the global RNG
        gen = ToyGenerator(target, hidden=hidden, depth=depth, activation=activation, dtype=dtype)
    _seeded_init(gen.net, g)
    opt = torch.optim.Adam(gen.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 1e-3)
    for _ in range(steps):
        z = torch.randn(batch, gen.z_dim, generator=g, dtype=dtype)
        if jacobian_weight > 0:
            x, J = _forward_with_jacobian(gen.net, z)
            loss = (F.mse_loss(x, ideal_generator(target, z))
                    + jacobian_weight * F.mse_loss(J, ideal_jacobian(target, z)))
        else:
            loss = F.mse_loss(gen.net(z), ideal_generator(target, z))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    gen.eval()
    with torch.no_grad():
        z = torch.randn(4096, gen.z_dim, generator=g, dtype=dtype)
        x, J = _forward_with_jacobian(gen.net, z)
        gen.train_loss = float(F.mse_loss(x, ideal_generator(target, z)))
        gen.train_jacobian_mse = float(F.mse_loss(J, ideal_jacobian(target, z)))
    return gen


# ----------------------------------------------------------------------------- uniformity helpers

def _sequential(gen: nn.Module) -> nn.Sequential:
    return gen if isinstance(gen, nn.Sequential) else gen.net


def _dtype(gen: nn.Module) -> torch.dtype:
    return next(_sequential(gen).parameters()).dtype


def _check_interval(lo: float, hi: float) -> None:
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"need finite lo < hi, got lo={lo}, hi={hi}")


def _curve_knots(gen: nn.Module, lo: float, hi: float) -> tuple[Tensor, Tensor]:
    """Latent breakpoints [n+1] of the learned curve on [lo, hi] and cumulative lengths [n+1]."""
    _check_interval(lo, hi)
    dtype = _dtype(gen)
    seg = spline.regions_along_segment(gen, torch.tensor([lo], dtype=dtype),
                                       torch.tensor([hi], dtype=dtype))
    zk = seg.knots()  # [n+1, 1]
    with torch.no_grad():
        xk = _sequential(gen)(zk).to(torch.float64)  # [n+1, D]
    seg_len = (xk[1:] - xk[:-1]).norm(dim=1)  # exact: the curve is a straight segment per piece
    cum = torch.cat([seg_len.new_zeros(1), seg_len.cumsum(0)])
    return zk[:, 0].to(torch.float64), cum


def curve_length(gen: nn.Module, lo: float, hi: float) -> float:
    """Exact length of the learned curve ``G([lo, hi])`` for a generator with a 1-D latent."""
    return float(_curve_knots(gen, lo, hi)[1][-1])


def arclength_coordinate(gen: nn.Module, z: Tensor, lo: float, hi: float) -> Tensor:
    """Normalised arc-length coordinate s(z) ∈ [0, 1] [N] (float64) of ``G(z)`` along the learned
    curve from ``G(lo)`` (s = 0) to ``G(hi)`` (s = 1), for latents ``z`` [N, 1] in [lo, hi].

    Exact for a CPA curve: the breakpoints come from ``spline.regions_along_segment`` and the
    curve is a straight segment between consecutive ones. If the samples are uniform in arc length
    on ``G([lo, hi])``, s is Uniform(0, 1) (KS-testable). Raises ValueError for ``z`` outside
    [lo, hi] or not [N, 1].
    """
    check_latents(z, 1)
    _check_interval(lo, hi)
    z64 = z[:, 0].detach().to(torch.float64)
    if bool(((z64 < lo) | (z64 > hi)).any()):
        raise ValueError(f"{int(((z64 < lo) | (z64 > hi)).sum())} latents lie outside "
                         f"[lo, hi] = [{lo}, {hi}]; filter them first")
    zk, cum = _curve_knots(gen, lo, hi)
    k = (torch.searchsorted(zk, z64, right=True) - 1).clamp(0, zk.numel() - 2)
    frac = ((z64 - zk[k]) / (zk[k + 1] - zk[k])).clamp(0, 1)
    s = (cum[k] + frac * (cum[k + 1] - cum[k])) / cum[-1]
    return s.clamp(0, 1)


def cell_area(gen: nn.Module, lo: float, hi: float, bins: int, sub: int = 16,
              chunk: int = 16384) -> Tensor:
    """Area [bins, bins] (float64) of the image of each cell of the latent grid on [lo, hi]²
    (cell (i, j) covers z₁ in bin i, z₂ in bin j), for a generator with a 2-D latent.

    Midpoint rule on a ``sub``×``sub`` sub-grid per cell with the exact region volume
    ``exp(half_logdet(A_ω))``: exact on every sub-cell that lies in one linear region, so the
    error is confined to sub-cells crossed by region boundaries (it shrinks like 1/sub). Divide by
    the sum for the area shares a chi-square test compares ``cell_counts`` against.
    """
    _check_interval(lo, hi)
    if bins < 1 or sub < 1:
        raise ValueError(f"bins and sub must be >= 1, got {bins} and {sub}")
    n = bins * sub
    h = (hi - lo) / n
    c = lo + (torch.arange(n, dtype=torch.float64) + 0.5) * h  # [n] sub-cell centres
    grid = torch.cartesian_prod(c, c).to(_dtype(gen))  # [n*n, 2], z₁ slowest
    vol = torch.cat([spline.half_logdet(spline.region_affine(gen, zc)[0]).exp()
                     for zc in grid.split(chunk)])  # [n*n]
    return vol.view(bins, sub, bins, sub).sum(dim=(1, 3)) * h * h


def cell_counts(z: Tensor, lo: float, hi: float, bins: int) -> Tensor:
    """Counts [bins, bins] (int64) of latents ``z`` [N, 2] in the cells of ``cell_area``'s grid
    on [lo, hi]² (the upper edge belongs to the last bin). Raises ValueError for ``z`` outside."""
    check_latents(z, 2)
    _check_interval(lo, hi)
    z64 = z.detach().to(torch.float64)
    outside = ((z64 < lo) | (z64 > hi)).any(dim=1)
    if bool(outside.any()):
        raise ValueError(f"{int(outside.sum())} latents lie outside [lo, hi]² = "
                         f"[{lo}, {hi}]²; filter them first")
    idx = ((z64 - lo) / (hi - lo) * bins).floor().long().clamp(0, bins - 1)  # [N, 2]
    flat = idx[:, 0] * bins + idx[:, 1]
    return torch.bincount(flat, minlength=bins * bins).view(bins, bins)


# ----------------------------------------------------------------------------- uniformity tests

def arclength_ks(gen: nn.Module, z: Tensor, lo: float, hi: float) -> dict[str, float]:
    """KS test of the normalised arc-length coordinate ``arclength_coordinate(gen, z, lo, hi)``
    (``z`` ``[N, 1]`` in [lo, hi]) against Uniform(0, 1): samples uniform in arc length on the
    learned curve ``G([lo, hi])`` pass it. Returns ``{"ks_stat", "ks_p"}`` (scipy's two-sided
    exact/asymptotic KS). Raises as ``arclength_coordinate`` does."""
    from scipy import stats

    ks = stats.kstest(arclength_coordinate(gen, z, lo, hi).numpy(), "uniform")
    return {"ks_stat": float(ks.statistic), "ks_p": float(ks.pvalue)}


def cell_chi2(z: Tensor, area: Tensor, lo: float, hi: float,
              min_expected: float = 5.0) -> dict[str, float | int]:
    """χ² test of latent-cell counts against image-area shares, for a 2-D-latent generator.

    ``area`` is ``cell_area(gen, lo, hi, bins, ...)`` ``[bins, bins]``; ``z`` ``[N, 2]`` latents in
    [lo, hi]². Samples uniform on the image of the box fall in cell c with probability
    ``area_c / Σ area``. Cells whose expected count ``N · share`` is below ``min_expected`` (the
    usual rule: 5) are left out and the kept shares renormalised to the kept counts. Returns
    ``{"chi2_stat", "chi2_p", "chi2_cells"}`` (cells kept). Raises ValueError for a non-square,
    non-positive or non-finite ``area``, fewer than 2 cells kept, and as ``cell_counts`` does."""
    from scipy import stats

    if not isinstance(area, Tensor) or area.ndim != 2 or area.shape[0] != area.shape[1]:
        raise ValueError(f"area must be a square [bins, bins] tensor, got "
                         f"{tuple(getattr(area, 'shape', ()))}")
    if not bool(torch.isfinite(area).all()) or bool((area < 0).any()) or float(area.sum()) <= 0:
        raise ValueError("area must be finite and non-negative with a positive sum")
    share = (area / area.sum()).flatten().numpy()  # [bins²]
    counts = cell_counts(z, lo, hi, area.shape[0]).flatten().numpy()  # [bins²]
    keep = share * z.shape[0] >= min_expected
    if int(keep.sum()) < 2:
        raise ValueError(f"only {int(keep.sum())} cells have an expected count >= {min_expected} "
                         f"with N={z.shape[0]} samples; use fewer bins or more samples")
    expected = share[keep] / share[keep].sum() * counts[keep].sum()
    chi = stats.chisquare(counts[keep], expected)
    return {"chi2_stat": float(chi.statistic), "chi2_p": float(chi.pvalue),
            "chi2_cells": int(keep.sum())}


@dataclass(frozen=True)
class DensityCheck:
    """``arclength_density_check``'s result: ``summary`` (JSON-ready numbers) and the arrays to
    draw it: histogram ``edges`` ``[bins + 1]`` and ``hist_density`` ``[bins]`` of the samples'
    arc-length coordinate, and the analytic density ``density`` on the grid ``s_grid`` ``[M]``."""

    summary: dict[str, float | int]
    edges: np.ndarray
    hist_density: np.ndarray
    s_grid: np.ndarray
    density: np.ndarray


def arclength_density_check(gen: nn.Module, z: Tensor, lo: float, hi: float, bins: int = 40,
                            n_grid: int = 20_001) -> DensityCheck:
    """Compare the analytic pushforward density with a histogram along a learned curve.

    ``z`` ``[N, 1]`` are N(0, 1) latents restricted to [lo, hi] (filter them first). Their
    normalised arc-length coordinate s has density ``L · p_G(G(z)) / P(lo ≤ z ≤ hi)`` on [0, 1]
    (``p_G`` from ``spline.log_density``, L the curve length), evaluated on ``n_grid`` latents and
    integrated per bin (trapezoid in s) into bin probabilities; the histogram of ``bins`` equal
    bins is χ²-tested against them. ``summary`` holds n_mc, bins, chi2_stat, chi2_p,
    integral_of_analytic_density (≈ 1), median_rel_err and max_rel_err_bins_with_100_counts (per
    bin, against the density averaged over the bin: p_G jumps at region boundaries) and
    max_abs_z_score (per-bin (count − expected) / √expected). Raises ValueError for ``bins`` < 2,
    ``n_grid`` < 2, and as ``arclength_coordinate`` does."""
    from scipy import stats

    if bins < 2 or n_grid < 2:
        raise ValueError(f"bins and n_grid must be >= 2, got {bins} and {n_grid}")
    s_mc = arclength_coordinate(gen, z, lo, hi).numpy()  # [N]
    length = curve_length(gen, lo, hi)
    p_interval = 0.5 * (math.erf(hi / math.sqrt(2)) - math.erf(lo / math.sqrt(2)))
    z_grid = torch.linspace(lo, hi, n_grid, dtype=torch.float64)[:, None]  # [M, 1]
    s_grid = arclength_coordinate(gen, z_grid, lo, hi).numpy()  # [M]
    density = (length * spline.log_density(gen, z_grid).exp() / p_interval).numpy()  # [M] of s
    edges = np.linspace(0, 1, bins + 1)
    counts, _ = np.histogram(s_mc, edges)
    cum = np.concatenate([[0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(s_grid))])
    p_bins = np.diff(np.interp(edges, s_grid, cum))  # [bins]
    expected = p_bins / p_bins.sum() * counts.sum()
    chi2 = stats.chisquare(counts, expected)
    hist_density = counts / counts.sum() / np.diff(edges)
    bin_density = p_bins / p_bins.sum() / np.diff(edges)
    rel_err = np.abs(hist_density - bin_density) / bin_density
    well_filled = counts >= 100
    summary = {"n_mc": int(len(s_mc)), "bins": bins, "chi2_stat": float(chi2.statistic),
               "chi2_p": float(chi2.pvalue), "integral_of_analytic_density": float(cum[-1]),
               "median_rel_err": float(np.median(rel_err)),
               "max_rel_err_bins_with_100_counts": (float(rel_err[well_filled].max())
                                                    if well_filled.any() else math.nan),
               "max_abs_z_score": float(np.max(np.abs(counts - expected) / np.sqrt(expected)))}
    return DensityCheck(summary, edges, hist_density, s_grid, density)
