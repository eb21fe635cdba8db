"""magnet_lab.models.toy: seeded training, fidelity to the known targets, exact arc-length and
area helpers, and the non-uniformity of plain samples that MaGNET is meant to correct."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from magnet_lab import spline
from magnet_lab.models import toy

DT = torch.float64
LO, HI = -3.0, 3.0  # latent interval / box used for the uniformity checks


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster


STEPS, BATCH = 800, 128  # cheaper than the defaults (1500, 256), to keep this file fast


@pytest.fixture(scope="module")
def curve_gen() -> toy.ToyGenerator:
    return toy.train_toy_generator("curve", steps=STEPS, batch=BATCH, seed=0)


@pytest.fixture(scope="module")
def surface_gen() -> toy.ToyGenerator:
    return toy.train_toy_generator("surface", steps=STEPS, batch=BATCH, seed=0)


def _rejection_sample(gen: nn.Module, n: int, dim: int, seed: int) -> torch.Tensor:
    """Exact draws of latents on [LO, HI]^dim with density ∝ exp(half_logdet(A_ω(z))): their
    images are uniform on G([LO, HI]^dim) when G is injective."""
    g = torch.Generator().manual_seed(seed)
    z = LO + (HI - LO) * torch.rand(n, dim, generator=g, dtype=DT)
    vol = spline.half_logdet(spline.region_affine(gen, z)[0]).exp()
    keep = torch.rand(n, generator=g, dtype=DT) * vol.max() < vol
    return z[keep]


def test_training_is_seeded_and_reproducible():
    torch.manual_seed(0)
    expected_global_draw = torch.rand(1)
    torch.manual_seed(0)
    a = toy.train_toy_generator("surface", steps=20, seed=3, activation="leaky_relu")
    assert torch.equal(torch.rand(1), expected_global_draw)  # the global RNG is left alone
    b = toy.train_toy_generator("surface", steps=20, seed=3, activation="leaky_relu")
    c = toy.train_toy_generator("surface", steps=20, seed=4, activation="leaky_relu")
    assert any(isinstance(m, nn.LeakyReLU) for m in a.net)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(),
                                  c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.net[0].weight, c.net[0].weight)
    assert a.train_loss == b.train_loss


def test_training_loss_below_threshold(curve_gen, surface_gen):
    assert curve_gen.train_loss < 3e-5 and curve_gen.train_jacobian_mse < 5e-3
    assert surface_gen.train_loss < 3e-4 and surface_gen.train_jacobian_mse < 1e-2
    assert curve_gen.net[0].weight.dtype == DT and (curve_gen.z_dim, curve_gen.out_dim) == (1, 2)
    assert (surface_gen.z_dim, surface_gen.out_dim) == (2, 3)


def test_learned_manifolds_are_close_to_the_true_ones(curve_gen, surface_gen):
    z = torch.linspace(-2.5, 2.5, 501, dtype=DT)[:, None]
    with torch.no_grad():
        assert toy.target_distance("curve", curve_gen(z)).max() < 0.05
        zs = torch.cartesian_prod(z[::25, 0], z[::25, 0])
        assert toy.target_distance("surface", surface_gen(zs)).max() < 0.15
        # and close to the ideal generator itself, not just to the manifold
        assert (curve_gen(z) - toy.ideal_generator("curve", z)).norm(dim=1).max() < 0.05
    # the local geometry MaGNET reweights by: region Jacobians vs the closed-form ideal Jacobian
    for gen in (curve_gen, surface_gen):
        zj = torch.randn(2000, gen.z_dim, dtype=DT, generator=torch.Generator().manual_seed(5))
        A, _ = spline.region_affine(gen, zj)
        J = toy.ideal_jacobian(gen.target, zj)
        assert (A - J).norm() / J.norm() < (0.12 if gen.target == "curve" else 0.3)


def test_ideal_params_invert_the_kumaraswamy_cdf_to_the_gaussian_cdf():
    z = torch.linspace(-6, 6, 241, dtype=DT)[:, None].repeat(1, 2)
    u = toy.ideal_params("surface", z)
    for i, (a, b) in enumerate([(2.0, 5.0), (3.0, 2.0)]):
        cdf = 1 - (1 - u[:, i] ** a) ** b
        assert torch.allclose(cdf, torch.special.ndtr(z[:, i]), rtol=0, atol=1e-12)
    # samples from the training law have the same parameter law (KS against the closed-form CDF)
    p = toy.sample_params("curve", 4000, seed=1)[:, 0].numpy()
    assert stats.kstest(p, lambda x: 1 - (1 - x ** 2) ** 5).pvalue > 1e-3
    assert toy.training_samples("curve", 10, seed=1).shape == (10, 2)


def test_target_volume_element_matches_autograd_and_distance_vanishes_on_target():
    params = torch.rand(20, 2, dtype=DT, generator=torch.Generator().manual_seed(0))
    for target, k in (("curve", 1), ("surface", 2)):
        p = params[:, :k]
        J = torch.stack([torch.autograd.functional.jacobian(
            lambda v: toy.target_points(target, v[None])[0], pi) for pi in p])  # [N, D, k]
        vol = torch.linalg.det(J.transpose(1, 2) @ J).sqrt()
        assert torch.allclose(toy.target_volume_element(target, p), vol, rtol=1e-12, atol=0)
        x = toy.target_points(target, p)
        assert toy.target_distance(target, x).max() < 1e-12
        off = x * 1.1 if target == "curve" else x + torch.tensor([0.0, 0.0, 0.1], dtype=DT)
        assert torch.allclose(toy.target_distance(target, off), 0.1 * torch.ones(20, dtype=DT))
    # a point beyond the arc's end (θ = 7π/4) is nearest to the endpoint γ(1) = (0, -1)
    x = torch.tensor([[math.cos(1.75 * math.pi), math.sin(1.75 * math.pi)]], dtype=DT)
    assert toy.target_distance("curve", x).item() == pytest.approx(2 * math.sin(math.pi / 8))


def test_arclength_coordinate_is_exact_on_a_linear_curve():
    net = nn.Sequential(nn.Linear(1, 2)).to(DT)
    z = torch.linspace(-1.0, 2.0, 31, dtype=DT)[:, None]
    s = toy.arclength_coordinate(net, z, -1.0, 2.0)
    assert torch.allclose(s, (z[:, 0] + 1) / 3, rtol=0, atol=1e-14)
    assert toy.curve_length(net, -1.0, 2.0) == pytest.approx(3 * net[0].weight.norm().item(),
                                                             rel=1e-14)


def test_arclength_coordinate_is_exact_on_a_bent_curve():
    # G(z) = (relu(z), 2 relu(-z)): speed 2 for z < 0, 1 for z > 0; length on [-1, 2] is 4
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 2)).to(DT)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.diag(torch.tensor([1.0, 2.0])))
        net[2].bias.zero_()
    z = torch.tensor([[-1.0], [-0.5], [0.0], [0.7], [2.0]], dtype=DT)
    s = toy.arclength_coordinate(net, z, -1.0, 2.0)
    assert torch.allclose(s, torch.tensor([0.0, 0.25, 0.5, 2.7 / 4, 1.0], dtype=DT), atol=1e-14)
    assert toy.curve_length(net, -1.0, 2.0) == pytest.approx(4.0, rel=1e-14)
    with pytest.raises(ValueError, match="outside"):
        toy.arclength_coordinate(net, torch.tensor([[2.5]], dtype=DT), -1.0, 2.0)


def test_arclength_coordinate_of_learned_curve_is_monotone_with_spline_speed(curve_gen):
    z = torch.linspace(LO, HI, 2001, dtype=DT)[:, None]
    s = toy.arclength_coordinate(curve_gen, z, LO, HI)
    assert s[0] == 0 and s[-1] == 1 and bool((s.diff() > 0).all())
    # ds/dz = |G'(z)| / L = exp(half_logdet(A_ω)) / L, checked inside regions
    h = 1e-7
    zq = torch.tensor([[-1.3], [0.2], [1.7]], dtype=DT)
    same = [torch.equal(a, b) for a, b in zip(spline.activation_codes(curve_gen, zq),
                                               spline.activation_codes(curve_gen, zq + h))]
    assert all(same)
    ds = (toy.arclength_coordinate(curve_gen, zq + h, LO, HI)
          - toy.arclength_coordinate(curve_gen, zq, LO, HI)) / h
    speed = spline.half_logdet(spline.region_affine(curve_gen, zq)[0]).exp()
    assert torch.allclose(ds, speed / toy.curve_length(curve_gen, LO, HI), rtol=1e-6)
    # the learned arc-length coordinate tracks the true one (arc length on the circle ∝ u)
    u = toy.ideal_params("curve", torch.cat([z, torch.tensor([[LO], [HI]], dtype=DT)]))[:, 0]
    s_true = (u[:-2] - u[-2]) / (u[-1] - u[-2])
    assert (s - s_true).abs().max() < 0.02


def test_plain_samples_are_not_uniform_in_arclength_but_volume_weighted_ones_are(curve_gen):
    z = torch.randn(3000, 1, dtype=DT, generator=torch.Generator().manual_seed(7))
    z = z[(z[:, 0] >= LO) & (z[:, 0] <= HI)]
    s_plain = toy.arclength_coordinate(curve_gen, z, LO, HI).numpy()
    assert stats.kstest(s_plain, "uniform").pvalue < 1e-3
    z_vol = _rejection_sample(curve_gen, 6000, 1, seed=8)
    assert z_vol.shape[0] > 1000
    s_vol = toy.arclength_coordinate(curve_gen, z_vol, LO, HI).numpy()
    assert stats.kstest(s_vol, "uniform").pvalue > 1e-3


def test_cell_area_is_exact_for_a_linear_net_and_cell_counts_bin_correctly():
    net = nn.Sequential(nn.Linear(2, 3)).to(DT)
    W = net[0].weight.detach()
    area = toy.cell_area(net, -1.0, 1.0, bins=4, sub=2)
    expected = torch.linalg.det(W.T @ W).sqrt() * 0.5 ** 2
    assert area.shape == (4, 4) and torch.allclose(area, expected.expand(4, 4), rtol=1e-13)
    z = torch.tensor([[-1.0, -1.0], [-0.6, 0.1], [0.99, 1.0], [1.0, 1.0], [0.0, -0.5]], dtype=DT)
    counts = toy.cell_counts(z, -1.0, 1.0, bins=4)
    expected_counts = torch.zeros(4, 4, dtype=torch.int64)
    for i, j in [(0, 0), (0, 2), (3, 3), (3, 3), (2, 1)]:
        expected_counts[i, j] += 1
    assert torch.equal(counts, expected_counts)
    with pytest.raises(ValueError, match="outside"):
        toy.cell_counts(torch.tensor([[0.0, 1.5]], dtype=DT), -1.0, 1.0, bins=4)


def test_learned_surface_area_matches_the_true_patch_and_chi_square_separates_samples(surface_gen):
    # true area of the image of [-2, 2]² under the ideal map: ∫∫ 4 sqrt(1 + x² + y²) du dv
    # (beyond |z| ≈ 2.5 training latents are rare and the learned geometry is poorer)
    learned_area = toy.cell_area(surface_gen, -2.0, 2.0, bins=4, sub=24).sum()
    ends = toy.ideal_params("surface", torch.tensor([[-2.0, -2.0], [2.0, 2.0]], dtype=DT))
    n = 400
    grids = [ends[0, i] + (torch.arange(n, dtype=DT) + 0.5) / n * (ends[1, i] - ends[0, i])
             for i in range(2)]
    uv = torch.cartesian_prod(*grids)
    true_area = toy.target_volume_element("surface", uv).mean() * (ends[1] - ends[0]).prod()
    assert float(learned_area) == pytest.approx(float(true_area), rel=0.03)
    bins = 6
    area = toy.cell_area(surface_gen, LO, HI, bins=bins, sub=12)
    shares = (area / area.sum()).flatten().numpy()
    z = torch.randn(4000, 2, dtype=DT, generator=torch.Generator().manual_seed(9))
    z = z[((z >= LO) & (z <= HI)).all(dim=1)]
    plain = toy.cell_counts(z, LO, HI, bins).flatten().numpy()
    assert stats.chisquare(plain, shares * plain.sum()).pvalue < 1e-3
    z_vol = _rejection_sample(surface_gen, 8000, 2, seed=10)
    assert z_vol.shape[0] > 1000
    counts = toy.cell_counts(z_vol, LO, HI, bins).flatten().numpy()
    assert stats.chisquare(counts, shares * counts.sum()).pvalue > 1e-3


def test_bad_arguments_raise_clear_errors(curve_gen):
    with pytest.raises(ValueError, match="target"):
        toy.train_toy_generator("torus")
    with pytest.raises(ValueError, match="activation"):
        toy.train_toy_generator("curve", activation="tanh", steps=1)
    with pytest.raises(ValueError, match="jacobian_weight"):
        toy.train_toy_generator("curve", jacobian_weight=-1.0, steps=1)
    with pytest.raises(ValueError, match=r"\[B, 1\]"):
        curve_gen(torch.zeros(3, 2, dtype=DT))
    with pytest.raises(ValueError, match="lo < hi"):
        toy.arclength_coordinate(curve_gen, torch.zeros(3, 1, dtype=DT), 1.0, -1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        toy.target_points("curve", torch.tensor([[1.5]], dtype=DT))


# ----------------------------------------------------------------------------- uniformity tests

def test_arclength_ks_is_scipys_test_of_the_arclength_coordinate_and_separates_laws():
    # a straight line: s = (z - lo) / (hi - lo), so uniform latents are uniform in arc length
    net = nn.Sequential(nn.Linear(1, 2)).to(DT)
    g = torch.Generator().manual_seed(11)
    z_unif = -1.0 + 3.0 * torch.rand(2000, 1, generator=g, dtype=DT)
    out = toy.arclength_ks(net, z_unif, -1.0, 2.0)
    ref = stats.kstest(((z_unif[:, 0] + 1) / 3).numpy(), "uniform")
    assert out == pytest.approx({"ks_stat": ref.statistic, "ks_p": ref.pvalue}, rel=1e-9)
    assert out["ks_p"] > 0.01
    z_squashed = -1.0 + 3.0 * torch.rand(2000, 1, generator=g, dtype=DT) ** 2  # piles up at lo
    assert toy.arclength_ks(net, z_squashed, -1.0, 2.0)["ks_p"] < 1e-6


def test_cell_chi2_follows_area_shares_and_drops_cells_below_five_expected():
    area = torch.tensor([[1.0, 1.0], [2.0, 0.01]], dtype=DT)  # cell (1, 1): 0.25 % of the area
    g = torch.Generator().manual_seed(12)
    n = 1000
    share = (area / area.sum()).flatten()
    cells = torch.multinomial(share, n, replacement=True, generator=g)  # cell index i * 2 + j
    z = torch.stack([cells // 2, cells % 2], 1).to(DT) - 1 + torch.rand(n, 2, generator=g, dtype=DT)
    z = z.clamp(-1.0, 1.0)  # cell (i, j) covers [i - 1, i] × [j - 1, j] on [-1, 1]²
    out = toy.cell_chi2(z, area, -1.0, 1.0)
    assert out["chi2_cells"] == 3  # 1000 · 0.0025 = 2.5 < 5 expected: left out
    counts = toy.cell_counts(z, -1.0, 1.0, 2).flatten()[:3].to(DT)
    expected = share[:3] / share[:3].sum() * counts.sum()
    assert out["chi2_stat"] == pytest.approx(float(((counts - expected) ** 2 / expected).sum()),
                                             rel=1e-12)
    assert out["chi2_p"] > 0.01
    flat = toy.cell_chi2(z, torch.ones(2, 2, dtype=DT), -1.0, 1.0)  # wrong shares: rejected
    assert flat["chi2_cells"] == 4 and flat["chi2_p"] < 1e-6
    with pytest.raises(ValueError, match="expected count"):
        toy.cell_chi2(z[:10], area, -1.0, 1.0)
    with pytest.raises(ValueError, match="square"):
        toy.cell_chi2(z, area[:1], -1.0, 1.0)


def test_density_check_of_a_line_is_the_truncated_gaussian_of_the_arclength(curve_gen):
    # on a straight line of speed c the density of s = (z - lo)/(hi - lo) is the truncated normal
    # (hi - lo) φ(z) / P(lo ≤ z ≤ hi): known in closed form
    net = nn.Sequential(nn.Linear(1, 2)).to(DT)
    g = torch.Generator().manual_seed(13)
    z = torch.randn(40_000, 1, generator=g, dtype=DT)
    z = z[(z[:, 0] >= -2.0) & (z[:, 0] <= 1.0)]
    check = toy.arclength_density_check(net, z, -2.0, 1.0, bins=20, n_grid=3001)
    z_grid = -2.0 + 3.0 * torch.from_numpy(check.s_grid)
    p_int = stats.norm.cdf(1.0) - stats.norm.cdf(-2.0)
    np_expected = 3.0 * stats.norm.pdf(z_grid.numpy()) / p_int
    assert np.allclose(check.density, np_expected, rtol=1e-10)
    assert check.summary["integral_of_analytic_density"] == pytest.approx(1.0, abs=1e-6)
    assert check.summary["n_mc"] == len(z) and check.summary["chi2_p"] > 1e-3
    assert check.edges.shape == (21,) and check.hist_density.shape == (20,)
    # the learned curve's analytic density also matches its Monte Carlo histogram
    zc = torch.randn(20_000, 1, generator=g, dtype=DT)
    zc = zc[zc[:, 0].abs() <= HI]
    learned = toy.arclength_density_check(curve_gen, zc, LO, HI).summary
    assert abs(learned["integral_of_analytic_density"] - 1) < 5e-3 and learned["chi2_p"] > 1e-3
