"""Metrics: known answers for FID / PR / density-coverage, the torch-fidelity library path against the
feature-level path (and the bootstrap's estimates equal to them), and the no-download guarantee
for standard extractors. The bootstrap's protocol is tested in test_bootstrap.py."""
from __future__ import annotations

import socket
import urllib.request

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from magnet_lab import bootstrap, metrics

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


class _TinyNet(nn.Module):
    """A small random conv net with a ``features`` method, in float64 (stands in for the classifier)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 5, stride=3), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(4 * 8 * 8, 6), nn.Dropout(0.5)).double()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _images(n: int, seed: int, brightness: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 160, (n, 1, 28, 28), generator=g) + brightness).clamp(0, 255).to(torch.uint8)


@pytest.fixture
def no_network(monkeypatch):
    """Make every download route fail loudly for the duration of a test."""
    import torch_fidelity.feature_extractor_inceptionv3 as incep

    def boom(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)
    monkeypatch.setattr(incep, "load_state_dict_from_url", boom)
    monkeypatch.setattr(urllib.request, "urlopen", boom)
    monkeypatch.setattr(socket.socket, "connect", boom)


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

def test_library_path_equals_feature_level_path_and_writes_no_cache(monkeypatch, tmp_path, output_dirs):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    net = _TinyNet().train()
    real, fake = _images(96, seed=7, brightness=0), _images(80, seed=8, brightness=40)
    name = metrics.register_classifier_extractor("test-tiny-net", net)
    lib = metrics.fidelity_metrics(real, fake, name, seed=3, kid_subsets=20)
    rf = metrics.extract_features(net, real, batch_size=50)
    ff = metrics.extract_features(net, fake, batch_size=50)
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


def test_fidelity_metrics_refuses_builtin_extractor_names(no_network):
    imgs = _images(8, seed=9, brightness=0)
    with pytest.raises(ValueError, match="standard_extractor"):
        metrics.fidelity_metrics(imgs, imgs, "inception-v3-compat", metrics=("fid",))


def test_extract_features_accepts_uint8_and_float_alike_and_checks_inputs():
    net = _TinyNet()
    u8 = _images(10, seed=10, brightness=0)
    as_float = u8.to(F64) / 127.5 - 1.0
    f_u8, f_float = metrics.extract_features(net, u8), metrics.extract_features(net, as_float)
    assert f_u8.dtype == F64 and f_u8.shape == (10, 6)
    torch.testing.assert_close(f_u8, f_float, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        metrics.extract_features(net, as_float * 200)
    with pytest.raises(ValueError, match="N, C, H, W"):
        metrics.extract_features(net, as_float[0])
    with pytest.raises(ValueError, match="non-finite"):
        metrics.extract_features(lambda x: torch.full((x.shape[0], 3), float("nan")), as_float)


# --------------------------------------------------------------------------- standard extractors

@pytest.mark.parametrize("kind, file_name, env", [
    ("inception", "weights-inception-2015-12-05-6726825d.pth", "MAGNET_LAB_INCEPTION_WEIGHTS"),
    ("vgg16", "vgg16-397923af.pth", "MAGNET_LAB_VGG16_WEIGHTS"),
])
def test_standard_extractor_without_weights_raises_and_never_downloads(no_network, monkeypatch, tmp_path,
                                                                       kind, file_name, env):
    monkeypatch.delenv(env, raising=False)
    with pytest.raises(FileNotFoundError) as err:
        metrics.standard_extractor(kind)
    assert file_name in str(err.value) and env in str(err.value) and "weights_path" in str(err.value)
    monkeypatch.setenv(env, str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        metrics.standard_extractor(kind)


class _Tripwire:
    """Unpickling this object would run ``__setstate__``; weights_only loading must refuse it."""
    ran = False

    def __setstate__(self, state):
        type(self).ran = True


def test_standard_extractor_refuses_pickled_objects_without_running_them(no_network, tmp_path, output_dirs):
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "payload": _Tripwire()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        metrics.standard_extractor("inception", path)
    assert not _Tripwire.ran
    torch.save({"not.a.layer": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="does not hold the weights"):
        metrics.standard_extractor("inception", path)


def test_standard_inception_from_local_file_runs_offline(no_network, monkeypatch, tmp_path, output_dirs):
    import torch_fidelity.feature_extractor_inceptionv3 as incep

    with monkeypatch.context() as patch:  # random weights of the right architecture, no file needed
        patch.setattr(incep, "load_state_dict_from_url", lambda *a, **k: None)
        patch.setattr(incep.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        state = incep.FeatureExtractorInceptionV3("inception-v3-compat", ["64"]).state_dict()
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    monkeypatch.setenv("MAGNET_LAB_INCEPTION_WEIGHTS", str(path))
    ext = metrics.standard_extractor("inception", layer="64")
    assert ext.fidelity_name == "inception-v3-compat" and ext.weights_path == path
    real, fake = _images(5, seed=11, brightness=0), _images(4, seed=12, brightness=60)
    lib = metrics.fidelity_metrics(real, fake, ext, metrics=("fid", "precision", "recall"))
    feats = metrics.extract_features(ext, real), metrics.extract_features(ext, fake)
    assert feats[0].shape == (5, 64)  # Inception's first pooled block
    feat = metrics.metrics_from_features(*feats, metrics=("fid", "precision", "recall"))
    assert lib["precision"] == pytest.approx(feat["precision"])
    assert lib["recall"] == pytest.approx(feat["recall"])
    assert lib["fid"] == pytest.approx(feat["fid"], rel=1e-3)  # library works in float32
    assert not list((output_dirs / "cache").glob("fidelity-weights-*"))  # sanitised copies removed


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
