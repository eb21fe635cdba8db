"""magnet_lab.sampling: Polarity/MaGNET weights, resampling, ESS, mixtures, per-class weights."""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch

from magnet_lab import sampling
from magnet_lab.sampling import (LowESSWarning, check_ess, ess, ess_fraction, gaussian_latents,
                                 gaussian_log_prior, latents_from_seeds, log_weights,
                                 mixture_indices, per_class_log_weights, resample,
                                 uniform_box_latents)

INF = math.inf


def _sorted_log_sv(n: int, r: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, r, generator=g, dtype=torch.float64).sort(1, descending=True).values


# ----------------------------------------------------------------------------- log_weights

def test_polarity_rho0_is_uniform_over_candidates():
    lw = log_weights(_sorted_log_sv(7, 3), rho=0.0)
    assert lw.dtype == torch.float64 and lw.shape == (7,)
    torch.testing.assert_close(lw, torch.full((7,), -math.log(7), dtype=torch.float64))


@pytest.mark.parametrize("rho", [1.0, -0.5, 2.3])
def test_weights_invariant_to_scaling_all_sigmas_by_a_constant(rho):
    log_sv = _sorted_log_sv(50, 4, seed=1)
    a = log_weights(log_sv, rho)
    b = log_weights(log_sv + math.log(37.5), rho)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert float(torch.logsumexp(a, 0)) == pytest.approx(0.0, abs=1e-12)


def test_magnet_rho1_weights_are_product_of_sigmas_hand_computed():
    sv = torch.tensor([[2.0, 1.0], [3.0, 0.5], [1.0, 1.0]], dtype=torch.float64)
    w = log_weights(sv.log(), rho=1.0).exp()
    torch.testing.assert_close(w, torch.tensor([2.0, 1.5, 1.0], dtype=torch.float64) / 4.5)
    # rho = -1 (modes / precision): inverse volume
    w_neg = log_weights(sv.log(), rho=-1.0).exp()
    inv = torch.tensor([1 / 2, 1 / 1.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(w_neg, inv / inv.sum())


def test_top_k_uses_only_the_first_k_columns():
    log_sv = _sorted_log_sv(20, 5, seed=2)
    for k in (1, 3):
        expected = (2.0 * log_sv[:, :k].sum(1))
        torch.testing.assert_close(log_weights(log_sv, 2.0, top_k=k),
                                   expected - torch.logsumexp(expected, 0))
    # changing the unused columns (keeping rows descending) changes nothing
    changed = log_sv.clone()
    changed[:, 3:] -= 5.0 + 0.1 * torch.arange(20, dtype=torch.float64)[:, None]  # per-row shift
    torch.testing.assert_close(log_weights(changed, 2.0, top_k=3),
                               log_weights(log_sv, 2.0, top_k=3))
    assert not torch.allclose(log_weights(changed, 2.0), log_weights(log_sv, 2.0))


def test_log_volume_sums_the_top_k_log_sigmas_and_weights_are_rho_times_it():
    sv = torch.tensor([[2.0, 1.0, 0.5], [3.0, 0.5, 0.25]], dtype=torch.float64)
    torch.testing.assert_close(sampling.log_volume(sv.log(), 2),
                               torch.tensor([2.0, 1.5], dtype=torch.float64).log())
    torch.testing.assert_close(sampling.log_volume(sv.log()),
                               torch.tensor([1.0, 0.375], dtype=torch.float64).log())
    log_sv = _sorted_log_sv(30, 5, seed=3)
    for top_k in (1, 4, None):
        lv = sampling.log_volume(log_sv, top_k)
        torch.testing.assert_close(log_weights(log_sv, -1.5, top_k), torch.log_softmax(-1.5 * lv, 0))
    assert sampling.log_volume(log_sv.float(), 2).dtype == torch.float64
    with pytest.raises(ValueError, match="top_k must be in"):
        sampling.log_volume(log_sv, 6)
    with pytest.raises(ValueError, match=r"\[N, r\]"):
        sampling.log_volume(log_sv[0], 2)


def test_top_k_errors():
    log_sv = _sorted_log_sv(4, 3)
    with pytest.raises(ValueError, match="top_k must be in"):
        log_weights(log_sv, 1.0, top_k=4)
    with pytest.raises(ValueError, match="top_k must be in"):
        log_weights(log_sv, 1.0, top_k=0)
    with pytest.raises(ValueError, match="sorted descending"):
        log_weights(log_sv.flip(1), 1.0, top_k=2)


def test_log_prior_mode_weights_equal_volume_over_density_on_piecewise_linear_map():
    # G(z) = a_neg * z (z < 0), a_pos * z (z >= 0): a 1-D CPA map with vol = |slope|.
    a_neg, a_pos = 0.5, 3.0
    z = gaussian_latents(1000, 1, seed=3, dtype=torch.float64)
    vol = torch.where(z[:, 0] < 0, a_neg, a_pos).to(torch.float64)
    log_sv = vol.log()[:, None]  # [N, 1]
    lw = log_weights(log_sv, 1.0, log_prior=gaussian_log_prior(z))
    p = scipy.stats.norm.pdf(z[:, 0].numpy())
    ratio = vol.numpy() / p
    np.testing.assert_allclose(lw.exp().numpy(), ratio / ratio.sum(), rtol=1e-10)
    # authors' mode (no prior): weights are vol alone
    np.testing.assert_allclose(log_weights(log_sv, 1.0).exp().numpy(),
                               (vol / vol.sum()).numpy(), rtol=1e-12)


def test_uniform_box_candidates_with_rho1_give_uniform_output_on_the_manifold():
    a_neg, a_pos, h = 0.5, 3.0, 2.0
    z = uniform_box_latents(100_000, 1, half_width=h, seed=4, dtype=torch.float64)
    slope = torch.where(z[:, 0] < 0, a_neg, a_pos).to(torch.float64)
    lw = log_weights(slope.log()[:, None], 1.0)
    idx = resample(lw, 3000, replace=True, rng=torch.Generator().manual_seed(5))
    x = (slope * z[:, 0])[idx].numpy()  # G(z) of the resampled latents
    lo, hi = -a_neg * h, a_pos * h
    assert scipy.stats.kstest(x, scipy.stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue > 1e-3
    # plain sampling (rho = 0) is far from uniform on G(box): only 1/7 of the length is negative
    idx0 = resample(log_weights(slope.log()[:, None], 0.0), 3000, replace=True,
                    rng=torch.Generator().manual_seed(5))
    x0 = (slope * z[:, 0])[idx0].numpy()
    assert scipy.stats.kstest(x0, scipy.stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue < 1e-6


def test_nan_in_used_columns_raises_naming_the_count():
    log_sv = _sorted_log_sv(6, 3)
    log_sv[1, 0] = math.nan
    log_sv[4, 2] = math.nan
    with pytest.raises(ValueError, match="2 NaN"):
        log_weights(log_sv, 1.0)
    with pytest.raises(ValueError, match="1 NaN"):
        log_weights(log_sv, 1.0, top_k=2)


def test_plus_inf_raises():
    log_sv = _sorted_log_sv(3, 2)
    log_sv[0, 0] = INF
    with pytest.raises(ValueError, match=r"\+inf"):
        log_weights(log_sv, 0.0)


@pytest.mark.parametrize("rho", [1.0, -1.0])
def test_zero_sigma_candidates_are_excluded_with_a_warning_when_rho_nonzero(rho):
    log_sv = _sorted_log_sv(5, 3)
    log_sv[2, 2] = -INF
    log_sv[4, 1:] = -INF
    with pytest.warns(UserWarning, match="2 of 5 candidates"):
        lw = log_weights(log_sv, rho)
    assert lw[2] == -INF and lw[4] == -INF  # excluded even for rho < 0 (never +inf)
    assert torch.isfinite(lw[[0, 1, 3]]).all()
    assert float(torch.logsumexp(lw, 0)) == pytest.approx(0.0, abs=1e-12)
    # with top_k=1 the zero sigmas are not used: nothing excluded, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isfinite(log_weights(log_sv, rho, top_k=1)).all()


def test_zero_sigma_candidates_keep_their_plain_weight_when_rho_is_zero():
    log_sv = _sorted_log_sv(4, 2)
    log_sv[0, 1] = -INF
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lw = log_weights(log_sv, 0.0)
    torch.testing.assert_close(lw, torch.full((4,), -math.log(4), dtype=torch.float64))


def test_all_candidates_excluded_raises():
    log_sv = _sorted_log_sv(3, 2)
    log_sv[:, 1] = -INF
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no candidate has a positive"):
        log_weights(log_sv, 1.0)


def test_log_weights_shape_and_argument_errors():
    with pytest.raises(ValueError, match=r"\[N, r\]"):
        log_weights(torch.zeros(4, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match=r"\[N, r\]"):
        log_weights(torch.zeros(0, 3, dtype=torch.float64), 1.0)
    with pytest.raises(TypeError):
        log_weights(torch.zeros(3, 2, dtype=torch.int64), 1.0)
    for bad_rho in (math.nan, INF):
        with pytest.raises(ValueError, match="rho"):
            log_weights(_sorted_log_sv(3, 2), bad_rho)
    with pytest.raises(ValueError, match=r"log_prior must have shape \[3\]"):
        log_weights(_sorted_log_sv(3, 2), 1.0, log_prior=torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="log_prior"):
        log_weights(_sorted_log_sv(3, 2), 1.0,
                    log_prior=torch.tensor([0.0, math.nan, 0.0], dtype=torch.float64))


# ----------------------------------------------------------------------------- candidates

def test_gaussian_log_prior_matches_scipy():
    z = gaussian_latents(10, 4, seed=0, dtype=torch.float64)
    expected = scipy.stats.multivariate_normal(mean=np.zeros(4)).logpdf(z.numpy())
    np.testing.assert_allclose(gaussian_log_prior(z).numpy(), expected, rtol=1e-13)
    assert gaussian_log_prior(z.float()).dtype == torch.float64


def test_latent_draws_are_seeded_and_checked():
    torch.testing.assert_close(gaussian_latents(5, 3, seed=7), gaussian_latents(5, 3, seed=7))
    assert not torch.equal(gaussian_latents(5, 3, seed=7), gaussian_latents(5, 3, seed=8))
    torch.testing.assert_close(gaussian_latents(5, 3), gaussian_latents(5, 3, seed=0))
    with pytest.raises(ValueError, match="either seed or rng"):
        gaussian_latents(5, 3, seed=1, rng=torch.Generator())
    with pytest.raises(TypeError, match="rng must be a torch.Generator"):
        gaussian_latents(5, 3, rng=0)
    # a torch.Generator goes by rng=, never generator= (generator is the model)
    with pytest.raises(TypeError, match="generator"):
        gaussian_latents(5, 3, generator=torch.Generator())
    box = uniform_box_latents(2000, 2, half_width=1.5, seed=1, dtype=torch.float64)
    assert box.abs().max() <= 1.5 and box.abs().max() > 1.4
    with pytest.raises(ValueError, match="half_width"):
        uniform_box_latents(3, 2, half_width=0.0)
    seeds = torch.tensor([3, 11, 3])
    z = latents_from_seeds(seeds, 4)
    torch.testing.assert_close(z[1:2], gaussian_latents(1, 4, seed=11))
    torch.testing.assert_close(z[0], z[2])


# ----------------------------------------------------------------------------- resampling

def _plackett_luce_pair_probs(w: np.ndarray) -> dict[tuple[int, int], float]:
    """Exact probability of each ordered pair (first, second) drawn without replacement ∝ w."""
    total = w.sum()
    return {(i, j): w[i] / total * w[j] / (total - w[i])
            for i, j in itertools.permutations(range(len(w)), 2)}


def test_gumbel_top_k_matches_plackett_luce_pair_and_inclusion_probabilities():
    w = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    log_w = torch.tensor(np.log(w))
    reps = 20_000
    g = torch.Generator().manual_seed(123)
    draws = torch.stack([resample(log_w, 2, replace=False, rng=g) for _ in range(reps)])
    assert (draws[:, 0] != draws[:, 1]).all()
    probs = _plackett_luce_pair_probs(w)
    pairs = list(probs)
    code = (draws[:, 0] * 5 + draws[:, 1]).numpy()
    observed = np.array([(code == i * 5 + j).sum() for i, j in pairs])
    expected = np.array([probs[p] for p in pairs]) * reps
    assert observed.sum() == reps
    assert scipy.stats.chisquare(observed, expected).pvalue > 1e-3
    # first-order inclusion probabilities, binomial z-score per item
    incl = np.array([sum(p for (i, j), p in probs.items() if c in (i, j)) for c in range(5)])
    freq = np.array([(draws == c).any(1).float().mean().item() for c in range(5)])
    sd = np.sqrt(incl * (1 - incl) / reps)
    assert np.all(np.abs(freq - incl) < 4.5 * sd), (freq, incl)


def test_multinomial_frequencies_match_weights():
    w = np.array([0.5, 1.0, 0.0, 2.5, 6.0])
    with np.errstate(divide="ignore"):
        log_w = torch.tensor(np.log(w))
    reps = 40_000
    idx = resample(log_w, reps, replace=True, rng=torch.Generator().manual_seed(9))
    counts = np.bincount(idx.numpy(), minlength=5)
    assert counts[2] == 0  # zero weight is never drawn
    keep = w > 0
    p = w[keep] / w.sum()
    assert scipy.stats.chisquare(counts[keep], p * reps).pvalue > 1e-3


def test_same_generator_seed_gives_identical_indices():
    log_w = log_weights(_sorted_log_sv(100, 3), 1.0)
    for replace in (False, True):
        a = resample(log_w, 30, replace, torch.Generator().manual_seed(42))
        b = resample(log_w, 30, replace, torch.Generator().manual_seed(42))
        c = resample(log_w, 30, replace, torch.Generator().manual_seed(43))
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert torch.equal(resample(log_w, 30, replace), resample(log_w, 30, replace))  # seed 0
    assert resample(log_w, 100).unique().numel() == 100


def _weighted_ks_pvalue(x: torch.Tensor, p: torch.Tensor, drawn: torch.Tensor) -> float:
    """KS p-value of the values ``drawn`` against the discrete law putting mass p_i on x_i."""
    order = x.argsort()
    xs, cdf = x[order].numpy(), torch.cumsum(p[order], 0).numpy()

    def law_cdf(v: np.ndarray) -> np.ndarray:
        k = np.searchsorted(xs, v, side="right")
        return np.where(k > 0, cdf[np.maximum(k - 1, 0)], 0.0)

    return float(scipy.stats.kstest(drawn.numpy(), law_cdf).pvalue)


def test_with_replacement_draws_follow_the_weighted_law_and_gumbel_top_k_does_not_at_low_ess():
    # Log-normal weights w = exp(s·ξ) with ESS/N = exp(-s²) ≈ 0.09; drawing 1/8 of the candidates.
    # Multinomial draws with replacement are i.i.d. from the weighted law and pass a KS test
    # against it; Gumbel-top-k without replacement cannot take a heavy candidate twice, so its
    # draws under-represent the high-weight tail and fail it, on every seed.
    n_cand, n_draw = 40_000, 5_000
    xi = torch.randn(n_cand, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    log_w = math.sqrt(math.log(1 / 0.09)) * xi  # [N]
    assert 0.05 < ess_fraction(log_w) < 0.15
    p = torch.softmax(log_w, 0)
    for seed in (0, 1, 2):
        with_rep = resample(log_w, n_draw, replace=True, rng=torch.Generator().manual_seed(seed))
        without = resample(log_w, n_draw, replace=False, rng=torch.Generator().manual_seed(seed))
        assert _weighted_ks_pvalue(xi, p, xi[with_rep]) > 0.01, seed
        assert _weighted_ks_pvalue(xi, p, xi[without]) < 1e-6, seed
        assert float(xi[without].mean()) < float((p * xi).sum())  # the tail is what is missing


def test_resample_errors():
    log_w = torch.tensor([0.0, -INF, 1.0, -INF], dtype=torch.float64)
    assert set(resample(log_w, 2).tolist()) == {0, 2}
    with pytest.raises(ValueError, match="only 2 of 4"):
        resample(log_w, 3, replace=False)
    with pytest.raises(ValueError, match="n must be >= 1"):
        resample(log_w, 0)
    with pytest.raises(ValueError, match="1 NaN"):
        resample(torch.tensor([0.0, math.nan], dtype=torch.float64), 1)
    with pytest.raises(ValueError, match=r"1 \+inf"):
        resample(torch.tensor([0.0, INF], dtype=torch.float64), 1)
    with pytest.raises(ValueError, match=r"shape \[N\]"):
        resample(torch.zeros(2, 2, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="all 2 candidates have zero weight"):
        resample(torch.tensor([-INF, -INF], dtype=torch.float64), 1, replace=True)


# ----------------------------------------------------------------------------- ESS

def test_ess_edge_cases():
    assert ess(torch.zeros(10, dtype=torch.float64)) == pytest.approx(10.0)
    assert ess(torch.full((10,), -123.0, dtype=torch.float64)) == pytest.approx(10.0)
    one = torch.full((10,), -INF, dtype=torch.float64)
    one[3] = 5.0
    assert ess(one) == pytest.approx(1.0)
    two = torch.tensor([0.0, 0.0, -INF, -INF], dtype=torch.float64)
    assert ess(two) == pytest.approx(2.0)
    assert ess_fraction(two) == pytest.approx(0.5)
    w = np.array([1.0, 2.0, 7.0])
    assert ess(torch.tensor(np.log(w))) == pytest.approx(w.sum() ** 2 / (w ** 2).sum(), rel=1e-12)
    huge = torch.tensor([1000.0, 999.0], dtype=torch.float64)  # no overflow in log space
    assert math.isfinite(ess(huge)) and 1 < ess(huge) < 2


def test_check_ess_warns_when_weights_collapse():
    log_w = torch.zeros(10_000, dtype=torch.float64)
    log_w[0] = 50.0
    with pytest.warns(LowESSWarning, match="N=10000"):
        value = check_ess(log_w)
    assert value == pytest.approx(1.0, abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_ess(torch.zeros(100, dtype=torch.float64)) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="min_fraction"):
        check_ess(log_w, min_fraction=2.0)


# ----------------------------------------------------------------------------- mixtures

def test_mixture_indices_counts_and_disjointness():
    n_cand = 200
    log_w = torch.full((n_cand,), -INF, dtype=torch.float64)
    log_w[:20] = torch.linspace(0, 2, 20, dtype=torch.float64)  # only 20 candidates have weight
    g = torch.Generator().manual_seed(0)
    idx = mixture_indices(log_w, 10, 0.25, g)  # round(2.5) half up = 3 weighted draws
    assert idx.shape == (10,) and idx.dtype == torch.int64
    assert idx.unique().numel() == 10
    assert (idx[:3] < 20).all()
    only_plain = mixture_indices(log_w, 50, 0.0, torch.Generator().manual_seed(1))
    assert (only_plain >= 20).sum() > 30  # uniform over all 200 candidates, zero weight included
    only_weighted = mixture_indices(log_w, 15, 1.0, torch.Generator().manual_seed(1))
    assert (only_weighted < 20).all() and only_weighted.unique().numel() == 15
    with pytest.raises(ValueError, match="fraction"):
        mixture_indices(log_w, 10, 1.5, g)
    with pytest.raises(ValueError, match="distinct"):
        mixture_indices(log_w, 201, 0.5, g)


def test_mixture_with_replacement_draws_plain_part_uniformly():
    log_w = torch.full((50,), -INF, dtype=torch.float64)
    log_w[7] = 0.0
    idx = mixture_indices(log_w, 400, 0.5, torch.Generator().manual_seed(2), replace=True)
    assert (idx[:200] == 7).all()
    assert idx[200:].unique().numel() > 40


# ----------------------------------------------------------------------------- per class

def test_per_class_log_weights_preserve_class_mass_and_within_class_ratios():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    log_w = torch.tensor([0.0, 1.0, -2.0, 3.0, 0.5, 4.0], dtype=torch.float64)
    out = per_class_log_weights(log_w, labels)
    mass = torch.zeros(3, dtype=torch.float64).index_add_(0, labels, out.exp())
    torch.testing.assert_close(mass, torch.tensor([2 / 6, 3 / 6, 1 / 6], dtype=torch.float64))
    for c in range(3):
        sel = labels == c
        diff = (out - log_w)[sel]
        torch.testing.assert_close(diff, diff[:1].expand_as(diff))  # ratios kept
    custom = per_class_log_weights(log_w, labels, torch.tensor([1.0, 1.0, 2.0]))
    mass = torch.zeros(3, dtype=torch.float64).index_add_(0, labels, custom.exp())
    torch.testing.assert_close(mass, torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64))
    dropped = per_class_log_weights(log_w, labels, torch.tensor([1.0, 0.0, 1.0]))
    assert (dropped[2:5] == -INF).all()


def test_per_class_log_weights_errors():
    labels = torch.tensor([0, 0, 1])
    log_w = torch.tensor([0.0, 1.0, -INF], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        per_class_log_weights(log_w, labels)
    ok = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"shape \[3\]"):
        per_class_log_weights(ok, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="negative"):
        per_class_log_weights(ok, torch.tensor([0, -1, 1]))
    with pytest.raises(TypeError):
        per_class_log_weights(ok, torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="only 2 classes"):
        per_class_log_weights(ok, torch.tensor([0, 1, 2]), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="non-negative"):
        per_class_log_weights(ok, labels, torch.tensor([1.0, -1.0]))


def test_equal_class_counts_split_n_and_give_the_remainder_to_the_first_sorted_classes():
    assert sampling.equal_class_counts(12, [7, 0, 3]) == {0: 4, 3: 4, 7: 4}
    assert sampling.equal_class_counts(8, [7, 0, 3]) == {0: 3, 3: 3, 7: 2}  # 8 = 3·2 + 2
    assert list(sampling.equal_class_counts(8, [7, 0, 3])) == [0, 3, 7]  # sorted order
    assert sampling.equal_class_counts(2, [5, 1, 9]) == {1: 1, 5: 1, 9: 0}
    for bad in ([], [1, 1], [-1]):
        with pytest.raises(ValueError):
            sampling.equal_class_counts(4, bad)


def test_per_class_indices_draw_the_counts_of_each_class_grouped_in_sorted_order():
    labels = torch.tensor([2, 0, 2, 0, 1, 1, 2, 0])
    log_w = torch.tensor([0.0, 1.0, -INF, 3.0, 0.5, 4.0, 1.0, 2.0], dtype=torch.float64)
    counts = {0: 3, 1: 2, 2: 2}
    idx = sampling.per_class_indices(log_w, labels, counts, rng=torch.Generator().manual_seed(1))
    assert labels[idx].tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert idx.unique().numel() == 7 and 2 not in idx.tolist()  # distinct; zero weight never
    with pytest.raises(ValueError, match="class 2: cannot draw 3"):
        sampling.per_class_indices(log_w, labels, {2: 3})  # class 2 has 2 positive weights
    with pytest.raises(ValueError, match="class 5 has no candidate"):
        sampling.per_class_indices(log_w, labels, {5: 1})
    with pytest.raises(ValueError, match="labels"):
        sampling.per_class_indices(log_w, labels[:3], counts)


def test_per_class_draw_frequencies_match_the_within_class_normalised_weights():
    """Chi-square against the closed form: class c's draws follow w_i / Σ_{j in c} w_j."""
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    w = np.array([1.0, 2.0, 5.0, 0.5, 0.5, 3.0, 6.0])
    log_w = torch.tensor(np.log(w))
    reps = 20_000
    idx = sampling.per_class_indices(log_w, labels, {0: reps, 1: reps}, replace=True,
                                     rng=torch.Generator().manual_seed(3))
    counts = np.bincount(idx.numpy(), minlength=7)
    for members in ([0, 1, 2], [3, 4, 5, 6]):
        p = w[members] / w[members].sum()
        assert counts[members].sum() == reps
        assert scipy.stats.chisquare(counts[members], p * reps).pvalue > 1e-3


def test_module_documents_truncation_is_not_a_sampling_concern():
    assert "Truncation" in sampling.__doc__ and "log_prior" in log_weights.__doc__


def test_all_top_k_leaves_out_only_columns_zero_at_every_candidate():
    from magnet_lab.sampling import all_top_k

    ninf = -math.inf
    log_sv = torch.tensor([[2.0, 1.0, ninf], [3.0, ninf, ninf]], dtype=torch.float64)
    assert all_top_k(log_sv) == 2  # column 1 is zero at one candidate only: kept
    assert all_top_k(log_sv[:, :2]) is None
    assert all_top_k(torch.full((2, 3), ninf, dtype=torch.float64)) == 1
