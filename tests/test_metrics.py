"""Metrics: known answers for FID / PR / density-coverage, the torch-fidelity library path against the
feature-level path, and the bootstrap's protocol (feature extraction: test_features.py)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from magnet_lab import features, metrics

F64 = torch.float64


def _gauss(n: int, dim: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=F64) * scale + shift


def _frechet_closed_form(x: np.ndarray, y: np.ndarray) -> float:
    """‖μx − μy‖² + tr(Σx + Σy − 2 (Σx Σy)^½) of the empirical statistics (scipy sqrtm)."""
    mx, my = x.mean(0), y.mean(0)
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(sx @ sy).real
    return float((mx - my) @ (mx - my) + np.trace(sx) + np.trace(sy) - 2 * np.trace(covmean))


# --------------------------------------------------------------------------- known answers

def test_identical_sets_fid_zero_pr_one_density_exactly_one_coverage_one():
    x = _gauss(200, 8, seed=1, scale=3.0)
    out = metrics.metrics_from_features(x, x.clone(), metrics=("fid", "precision", "recall",
                                                                "density", "coverage"))
    scale = float(torch.cov(x.T).trace())
    assert abs(out["fid"]) < 1e-6 * scale
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["coverage"] == 1.0
    # each fake is in its own ball and in the balls of the k-1 reals whose k-th neighbour lies
    # strictly farther: k balls per point, so density = N k / (k N) = 1 exactly
    assert out["density"] == 1.0
    boot = metrics.bootstrap_ci(x, x.clone(), n_boot=20, metrics=("fid", "density"))
    assert abs(boot["fid"]["value"]) < 1e-6 * scale and boot["density"]["value"] == 1.0


def test_disjoint_gaussians_have_zero_pr_dc_and_closed_form_fid():
    x = _gauss(150, 5, seed=2)
    y = _gauss(120, 5, seed=3, scale=0.5, shift=100.0)  # means 100σ apart in every coordinate
    out = metrics.metrics_from_features(x, y, metrics=("fid", "precision", "recall", "density", "coverage"))
    assert out["precision"] == 0.0 and out["recall"] == 0.0
    assert out["density"] == 0.0 and out["coverage"] == 0.0
    expected = _frechet_closed_form(x.numpy(), y.numpy())
    assert expected > 5 * 100.0**2 * 0.9
    assert out["fid"] == pytest.approx(expected, rel=1e-10)
    boot = metrics.bootstrap_ci(x, y, n_boot=10, metrics=("fid",))
    assert boot["fid"]["value"] == pytest.approx(expected, rel=1e-10)


def test_fid_of_gaussian_samples_matches_frechet_closed_form_of_empirical_statistics():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(6, 6, generator=g, dtype=F64), torch.randn(6, 6, generator=g, dtype=F64)
    x = _gauss(400, 6, seed=5) @ a.T + 1.0
    y = _gauss(300, 6, seed=6) @ b.T - 0.5
    expected = _frechet_closed_form(x.numpy(), y.numpy())
    assert metrics.metrics_from_features(x, y, metrics=("fid",))["fid"] == pytest.approx(expected, rel=1e-9)
    # the bootstrap's symmetric-eigensolver FID at unit counts is the same number
    boot = metrics.bootstrap_ci(x, y, n_boot=5, metrics=("fid",))
    assert boot["fid"]["value"] == pytest.approx(expected, rel=1e-9)


def test_density_coverage_hand_computed_on_a_line():
    real = torch.arange(10, dtype=F64)[:, None]  # radii (2nd NN): 2 at the ends, 1 inside
    fake = torch.tensor([[0.5], [100.0]], dtype=F64)
    out = metrics.density_coverage(real, fake, k=2)
    # 0.5 lies strictly inside the balls of reals 0 (r=2) and 1 (r=1), not of 2 (|1.5| ≮ 1)
    assert out["density"] == pytest.approx((2 + 0) / (2 * 2))
    assert out["coverage"] == pytest.approx(2 / 10)


# --------------------------------------------------------------------------- library path

def test_library_path_equals_feature_level_path_and_writes_no_cache(monkeypatch, tmp_path, output_dirs,
                                                                    tiny_net, uint8_images):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    net = tiny_net.train()
    real, fake = uint8_images(96, seed=7, brightness=0), uint8_images(80, seed=8, brightness=40)
    name = features.register_classifier_extractor("test-tiny-net", net)
    lib = metrics.fidelity_metrics(real, fake, name, seed=3, kid_subsets=20)
    rf = features.extract_features(net, real, batch_size=50)
    ff = features.extract_features(net, fake, batch_size=50)
    feat = metrics.metrics_from_features(rf, ff, seed=3, kid_subsets=20)
    assert lib["fid"] == pytest.approx(feat["fid"], rel=1e-9) and feat["fid"] > 1e-3
    assert lib["kid_mean"] == pytest.approx(feat["kid_mean"], rel=1e-9)
    assert lib["precision"] == pytest.approx(feat["precision"], abs=1e-6)
    assert lib["recall"] == pytest.approx(feat["recall"], abs=1e-6)
    assert 0.0 < feat["precision"] < 1.0 or 0.0 < feat["recall"] < 1.0
    boot = metrics.bootstrap_ci(rf, ff, n_boot=10, metrics=("fid", "precision", "recall"))
    for m in ("fid", "precision", "recall"):
        assert boot[m]["value"] == pytest.approx(lib[m], rel=1e-6, abs=1e-6)
    assert net.training and next(net.parameters()).device.type == "cpu"  # mode restored, not moved
    assert not (tmp_path / "torch_home").exists()  # no torch-fidelity cache, no downloads
    # a module (not a name) is registered on the fly and gives the same numbers
    assert metrics.fidelity_metrics(real, fake, net, metrics=("fid",))["fid"] == pytest.approx(lib["fid"])


def test_fidelity_metrics_refuses_builtin_extractor_names(no_network, uint8_images):
    imgs = uint8_images(8, seed=9, brightness=0)
    with pytest.raises(ValueError, match="standard_extractor"):
        metrics.fidelity_metrics(imgs, imgs, "inception-v3-compat", metrics=("fid",))


# --------------------------------------------------------------------------- bootstrap

def _overlapping_sets(n_real: int, n_fake: int, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return _gauss(n_real, dim, seed=20), _gauss(n_fake, dim, seed=21, scale=1.2, shift=0.3)


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    real, fake = _overlapping_sets(250, 200)
    a = metrics.bootstrap_ci(real, fake, n_boot=150, seed=5)
    b = metrics.bootstrap_ci(real, fake, n_boot=150, seed=5)
    c = metrics.bootstrap_ci(real, fake, n_boot=150, seed=6)
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
    small = metrics.bootstrap_ci(*_overlapping_sets(80, 80), n_boot=120, seed=1)
    large = metrics.bootstrap_ci(*_overlapping_sets(640, 640), n_boot=120, seed=1)
    for m in metrics.ALL_METRICS:
        assert large[m]["hi"] - large[m]["lo"] < 0.7 * (small[m]["hi"] - small[m]["lo"]), m


def test_bootstrap_replicates_equal_metrics_recomputed_on_the_documented_resamples():
    real, fake = _overlapping_sets(60, 50, dim=3)
    n_boot, seed = 4, 9
    out = metrics.bootstrap_ci(real, fake, n_boot=n_boot, seed=seed, return_replicates=True)
    gen = torch.Generator().manual_seed(seed)
    tf = metrics._tf()
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
        full = metrics._point_scores(real, fake, 3, 5, ("coverage",))["coverage"]
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
    tf = metrics._tf()
    full = tf.kid_features_to_metric(fake, real, kid_subsets=1, kid_subset_size=70, verbose=False)
    ci = metrics.bootstrap_ci(real, fake, n_boot=10, metrics=("kid",), resample_real=False)
    assert ci["kid"]["value"] == pytest.approx(full[tf.KEY_KID_MEAN], rel=1e-9)


def test_bootstrap_with_fixed_real_set_gives_narrower_fid_interval():
    real, fake = _overlapping_sets(300, 300)
    both = metrics.bootstrap_ci(real, fake, n_boot=200, metrics=("fid",))
    fixed = metrics.bootstrap_ci(real, fake, n_boot=200, metrics=("fid",), resample_real=False)
    assert fixed["fid"]["value"] == pytest.approx(both["fid"]["value"], rel=1e-9)
    assert fixed["fid"]["se"] < both["fid"]["se"]


def test_bootstrap_statistic_of_a_mean_has_standard_error_sigma_over_root_n():
    x = _gauss(400, 1, seed=30, scale=2.0)[:, 0]
    ci = metrics.bootstrap_statistic(lambda idx: x[idx].mean(), n=400, n_boot=400, seed=1)
    assert ci["value"] == pytest.approx(float(x.mean()))
    assert ci["lo"] <= ci["value"] <= ci["hi"]
    assert ci["se"] == pytest.approx(float(x.std()) / 400**0.5, rel=0.15)
    assert metrics.bootstrap_statistic(lambda idx: x[idx].mean(), n=400, n_boot=50, seed=1) == \
        metrics.bootstrap_statistic(lambda idx: x[idx].mean(), n=400, n_boot=50, seed=1)
    with pytest.raises(ValueError, match="not finite"):
        metrics.bootstrap_statistic(lambda idx: float("inf") if idx[0] > 200 else 0.0, n=400, n_boot=50)


# --------------------------------------------------------------------------- validation

def test_feature_level_functions_reject_bad_inputs_with_clear_errors():
    x = _gauss(10, 3, seed=40)
    with pytest.raises(ValueError, match=r"shape \[n, F\]"):
        metrics.metrics_from_features(x[:, 0], x)
    with pytest.raises(ValueError, match="feature dimension"):
        metrics.metrics_from_features(x, x[:, :2])
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        metrics.bootstrap_ci(x, bad, n_boot=5)
    with pytest.raises(ValueError, match="k=3"):
        metrics.metrics_from_features(x, x[:3], metrics=("recall",))  # M <= k
    with pytest.raises(ValueError, match="dc_k=5"):
        metrics.bootstrap_ci(x[:5], x, n_boot=5, metrics=("density",))
    with pytest.raises(ValueError, match="kid_subset_size"):
        metrics.metrics_from_features(x, x, metrics=("kid",), kid_subset_size=50)
    with pytest.raises(ValueError, match="subset of"):
        metrics.bootstrap_ci(x, x, n_boot=5, metrics=("fid", "is"))
