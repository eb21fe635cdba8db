"""magnet_lab.bootstrap: the metric bootstrap's protocol (replicates equal the metrics recomputed on
the documented resamples), the one-sample bootstrap, and the CI helpers the notebooks report,
each against a direct recomputation or a closed form."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from scipy import stats

from magnet_lab import bootstrap, metrics

F64 = torch.float64


def _gauss(n: int, dim: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=F64) * scale + shift


def _resamples(n: int, n_boot: int, seed: int) -> list[torch.Tensor]:
    """The index draws ``bootstrap_statistic`` documents: randint(n, (n,)) from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(n, (n,), generator=g) for _ in range(n_boot)]


# --------------------------------------------------------------------------- metric bootstrap

def _overlapping_sets(n_real: int, n_fake: int, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return _gauss(n_real, dim, seed=20), _gauss(n_fake, dim, seed=21, scale=1.2, shift=0.3)


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    real, fake = _overlapping_sets(250, 200)
    a = bootstrap.bootstrap_ci(real, fake, n_boot=150, seed=5)
    b = bootstrap.bootstrap_ci(real, fake, n_boot=150, seed=5)
    c = bootstrap.bootstrap_ci(real, fake, n_boot=150, seed=6)
    assert a == b
    assert a["fid"]["lo"] != c["fid"]["lo"]
    point = metrics.metrics_from_features(real, fake)
    for m in metrics.ALL_METRICS:
        ci = a[m]
        assert ci["n_boot"] == 150 and ci["level"] == 0.95 and ci["se"] > 0
        assert ci["lo"] <= ci["value"] <= ci["hi"], m
        if m != "kid":  # kid is the full-set U-statistic; kid_mean averages it over random subsets
            assert ci["value"] == pytest.approx(point[m], rel=1e-6, abs=1e-6), m


def test_bootstrap_interval_narrows_with_more_samples():
    small = bootstrap.bootstrap_ci(*_overlapping_sets(80, 80), n_boot=120, seed=1)
    large = bootstrap.bootstrap_ci(*_overlapping_sets(640, 640), n_boot=120, seed=1)
    for m in metrics.ALL_METRICS:
        assert large[m]["hi"] - large[m]["lo"] < 0.7 * (small[m]["hi"] - small[m]["lo"]), m


def test_bootstrap_replicates_equal_metrics_recomputed_on_the_documented_resamples():
    real, fake = _overlapping_sets(60, 50, dim=3)
    n_boot, seed = 4, 9
    out = bootstrap.bootstrap_ci(real, fake, n_boot=n_boot, seed=seed, return_replicates=True)
    gen = torch.Generator().manual_seed(seed)
    tf = metrics.torch_fidelity_api()
    for b in range(n_boot):
        idx_f = torch.randint(50, (50,), generator=gen)
        idx_r = torch.randint(60, (60,), generator=gen)
        rep = {m: float(out[m]["replicates"][b]) for m in metrics.ALL_METRICS}
        # FID on the two resamples (duplicates and all), by torch-fidelity
        fid = tf.fid_statistics_to_metric(tf.fid_features_to_statistics(fake[idx_f]),
                                          tf.fid_features_to_statistics(real[idx_r]), verbose=False)
        assert rep["fid"] == pytest.approx(fid[tf.KEY_FID], rel=1e-9)
        # precision/density average over resampled fakes; real radii are unchanged by that
        prc_f = tf.prc_features_to_metric(fake[idx_f], real, prc_neighborhood=3, verbose=False)
        assert rep["precision"] == pytest.approx(prc_f[tf.KEY_PRECISION], abs=1e-6)
        assert rep["density"] == pytest.approx(metrics.density_coverage(real, fake[idx_f])["density"])
        # recall averages over resampled reals; fake radii are unchanged by that
        prc_r = tf.prc_features_to_metric(fake, real[idx_r], prc_neighborhood=3, verbose=False)
        assert rep["recall"] == pytest.approx(prc_r[tf.KEY_RECALL], abs=1e-6)
        # coverage: mean over resampled reals of "some fake in my full-set ball"
        full = metrics.point_scores(real, fake, 3, 5, ("coverage",))["coverage"]
        assert rep["coverage"] == pytest.approx(float(full[idx_r].mean()))
        # KID: unbiased MMD² over pairs of distinct original samples, poly kernel (x·y/F + 1)^3
        def within(x, idx):
            k = (x[idx] @ x[idx].T / 3 + 1) ** 3
            distinct = idx[:, None] != idx[None, :]
            return float(k[distinct].mean())
        cross = float(((fake[idx_f] @ real[idx_r].T / 3 + 1) ** 3).mean())
        assert rep["kid"] == pytest.approx(within(fake, idx_f) + within(real, idx_r) - 2 * cross, rel=1e-9)


def test_bootstrap_kid_value_is_torch_fidelity_mmd2_on_the_full_sets():
    real, fake = _overlapping_sets(70, 70)
    tf = metrics.torch_fidelity_api()
    full = tf.kid_features_to_metric(fake, real, kid_subsets=1, kid_subset_size=70, verbose=False)
    ci = bootstrap.bootstrap_ci(real, fake, n_boot=10, metrics=("kid",), resample_real=False)
    assert ci["kid"]["value"] == pytest.approx(full[tf.KEY_KID_MEAN], rel=1e-9)


def test_bootstrap_with_fixed_real_set_gives_narrower_fid_interval():
    real, fake = _overlapping_sets(300, 300)
    both = bootstrap.bootstrap_ci(real, fake, n_boot=200, metrics=("fid",))
    fixed = bootstrap.bootstrap_ci(real, fake, n_boot=200, metrics=("fid",), resample_real=False)
    assert fixed["fid"]["value"] == pytest.approx(both["fid"]["value"], rel=1e-9)
    assert fixed["fid"]["se"] < both["fid"]["se"]


def test_bootstrap_statistic_of_a_mean_has_standard_error_sigma_over_root_n():
    x = _gauss(400, 1, seed=30, scale=2.0)[:, 0]
    ci = bootstrap.bootstrap_statistic(lambda idx: x[idx].mean(), n=400, n_boot=400, seed=1)
    assert ci["value"] == pytest.approx(float(x.mean()))
    assert ci["lo"] <= ci["value"] <= ci["hi"]
    assert ci["se"] == pytest.approx(float(x.std()) / 400**0.5, rel=0.15)
    assert bootstrap.bootstrap_statistic(lambda idx: x[idx].mean(), n=400, n_boot=50, seed=1) == \
        bootstrap.bootstrap_statistic(lambda idx: x[idx].mean(), n=400, n_boot=50, seed=1)
    with pytest.raises(ValueError, match="not finite"):
        bootstrap.bootstrap_statistic(lambda idx: float("inf") if idx[0] > 200 else 0.0, n=400, n_boot=50)


# --------------------------------------------------------------------------- notebook CI helpers

def test_mean_ci_is_the_mean_with_replicates_the_means_of_the_documented_resamples():
    x = _gauss(50, 1, seed=31, scale=3.0, shift=-1.0)[:, 0]
    ci = bootstrap.mean_ci(x, n_boot=40, seed=4, level=0.9)
    assert ci["value"] == pytest.approx(float(x.mean()), rel=1e-15)
    reps = torch.tensor([float(x[idx].mean()) for idx in _resamples(50, 40, seed=4)], dtype=F64)
    lo, hi = torch.quantile(reps, torch.tensor([0.05, 0.95], dtype=F64)).tolist()
    assert (ci["lo"], ci["hi"]) == pytest.approx((lo, hi), rel=1e-12)
    assert ci["se"] == pytest.approx(float(reps.std()), rel=1e-12) and ci["level"] == 0.9
    with pytest.raises(ValueError, match=r"shape \[n\]"):
        bootstrap.mean_ci(x[None, :], n_boot=10)


def test_spearman_ci_value_is_the_closed_form_and_replicates_resample_pairs_together():
    a = torch.tensor([3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0], dtype=F64)
    b = torch.tensor([2.0, 1.0, 5.0, 3.0, 4.0, 8.0, 0.5, 7.0], dtype=F64)
    # no ties: rho_s = 1 - 6 sum d^2 / (n (n^2 - 1)) with d the rank differences
    d = a.argsort().argsort() - b.argsort().argsort()
    n = a.numel()
    closed = 1 - 6 * float((d.to(F64) ** 2).sum()) / (n * (n * n - 1))
    ci = bootstrap.spearman_ci(a, b, n_boot=30, seed=2)
    assert ci["value"] == pytest.approx(closed, rel=1e-12)
    reps = [stats.spearmanr(a[idx].numpy(), b[idx].numpy()).statistic
            for idx in _resamples(n, 30, seed=2)]
    assert ci["se"] == pytest.approx(float(torch.tensor(reps).std()), rel=1e-12)
    # a monotone transform of one variable leaves every replicate unchanged
    assert bootstrap.spearman_ci(a.exp(), b, n_boot=30, seed=2) == ci
    with pytest.raises(ValueError, match="paired"):
        bootstrap.spearman_ci(a, b[:-1], n_boot=10)


def test_count_ratio_ci_is_the_ratio_of_class_counts_with_a_half_count_floor():
    lab_a = torch.tensor([0, 0, 1, 2, 0, 1, 2, 2, 2, 0])
    lab_b = torch.tensor([1, 1, 1, 0, 2, 1, 1, 0, 1, 1])
    ci0 = bootstrap.count_ratio_ci(lab_a, lab_b, 0, n_boot=50, seed=3)
    assert ci0["value"] == pytest.approx(4 / 2)
    ci2 = bootstrap.count_ratio_ci(lab_a, lab_b, 2, n_boot=50, seed=3)
    assert ci2["value"] == pytest.approx(4 / 1)
    # class 3 never occurs in b: the denominator is the floor, half a count
    lab_a3 = lab_a.clone()
    lab_a3[:3] = 3
    assert bootstrap.count_ratio_ci(lab_a3, lab_b, 3, n_boot=20, seed=3)["value"] == pytest.approx(6.0)
    # one shared index draw per replicate: recompute the documented replicates
    reps = torch.tensor([float((lab_a[idx] == 0).sum()) / max(float((lab_b[idx] == 0).sum()), 0.5)
                         for idx in _resamples(10, 50, seed=3)], dtype=F64)
    lo, hi = torch.quantile(reps, torch.tensor([0.025, 0.975], dtype=F64)).tolist()
    assert (ci0["lo"], ci0["hi"]) == pytest.approx((lo, hi), rel=1e-12)
    with pytest.raises(ValueError, match="same size"):
        bootstrap.count_ratio_ci(lab_a, lab_b[:5], 0, n_boot=10)
    with pytest.raises(TypeError, match="int64"):
        bootstrap.count_ratio_ci(lab_a.double(), lab_b, 0, n_boot=10)
    with pytest.raises(ValueError, match="floor"):
        bootstrap.count_ratio_ci(lab_a, lab_b, 0, n_boot=10, floor=0.0)


def test_metrics_does_not_import_the_bootstrap():
    tree = ast.parse(Path(metrics.__file__).read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names] + [node.module or "" for node in ast.walk(tree)
                                            if isinstance(node, ast.ImportFrom)]
    assert imported and not any("bootstrap" in name for name in imported)
    assert not hasattr(metrics, "bootstrap_ci") and not hasattr(metrics, "bootstrap_statistic")
