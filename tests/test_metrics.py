"""Metrics: known answers for FID / PR / density-coverage, the torch-fidelity library path against the
feature-level path (and the bootstrap's estimates equal to them). Feature extraction and the
no-download guarantee: test_features.py; the bootstrap's protocol: test_bootstrap.py."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from magnet_lab import bootstrap, features, metrics

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
    boot = bootstrap.bootstrap_ci(x, x.clone(), n_boot=20, metrics=("fid", "density"))
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
    boot = bootstrap.bootstrap_ci(x, y, n_boot=10, metrics=("fid",))
    assert boot["fid"]["value"] == pytest.approx(expected, rel=1e-10)


def test_fid_of_gaussian_samples_matches_frechet_closed_form_of_empirical_statistics():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(6, 6, generator=g, dtype=F64), torch.randn(6, 6, generator=g, dtype=F64)
    x = _gauss(400, 6, seed=5) @ a.T + 1.0
    y = _gauss(300, 6, seed=6) @ b.T - 0.5
    expected = _frechet_closed_form(x.numpy(), y.numpy())
    assert metrics.metrics_from_features(x, y, metrics=("fid",))["fid"] == pytest.approx(expected, rel=1e-9)
    # the bootstrap's symmetric-eigensolver FID at unit counts is the same number
    boot = bootstrap.bootstrap_ci(x, y, n_boot=5, metrics=("fid",))
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
    boot = bootstrap.bootstrap_ci(rf, ff, n_boot=10, metrics=("fid", "precision", "recall"))
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
        bootstrap.bootstrap_ci(x, bad, n_boot=5)
    with pytest.raises(ValueError, match="k=3"):
        metrics.metrics_from_features(x, x[:3], metrics=("recall",))  # M <= k
    with pytest.raises(ValueError, match="dc_k=5"):
        bootstrap.bootstrap_ci(x[:5], x, n_boot=5, metrics=("density",))
    with pytest.raises(ValueError, match="kid_subset_size"):
        metrics.metrics_from_features(x, x, metrics=("kid",), kid_subset_size=50)
    with pytest.raises(ValueError, match="subset of"):
        bootstrap.bootstrap_ci(x, x, n_boot=5, metrics=("fid", "is"))
