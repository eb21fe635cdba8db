"""magnet_lab.realism: the realism score against its definition, and the volume–realism summary."""
from __future__ import annotations

import math

import pytest
import torch

from magnet_lab import realism


def brute_realism(real, fake, k, keep_quantile, eps):
    """The definition written out with Python loops in float64."""
    n = len(real)
    radii = []
    for i in range(n):
        d = sorted(float((real[i] - real[j]).norm()) for j in range(n) if j != i)
        radii.append(d[k - 1])
    r = torch.tensor(radii, dtype=torch.float64)
    cut = float(torch.quantile(r, keep_quantile))
    out = []
    for g in fake:
        out.append(max(radii[i] / (float((g - real[i]).norm()) + eps)
                       for i in range(n) if radii[i] <= cut))
    return torch.tensor(out, dtype=torch.float64)


def test_realism_equals_the_definition_written_out():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(40, 5, generator=g, dtype=torch.float64)
    fake = 1.5 * torch.randn(25, 5, generator=g, dtype=torch.float64)
    for k, q in [(3, 0.5), (1, 1.0), (5, 0.25)]:
        ours = realism.realism_scores(real, fake, k=k, keep_quantile=q)
        assert torch.allclose(ours, brute_realism(real, fake, k, q, 1e-5), rtol=1e-12, atol=0)


def test_realism_on_a_line_has_its_closed_form():
    """Reals at 0, 1, 2, 3, 10 on a line (k = 1): radii 1, 1, 1, 1, 7; the median keeps the four
    unit balls, so a fake at 1.25 has realism 1 / 0.25 = 4 and a fake at 6 has 1 / 3."""
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]], dtype=torch.float64)
    assert realism.knn_radii(real, 1).tolist() == [1.0, 1.0, 1.0, 1.0, 7.0]
    r = realism.realism_scores(real, torch.tensor([[1.25], [6.0]], dtype=torch.float64), k=1,
                               eps=1e-12)
    assert math.isclose(float(r[0]), 4.0, rel_tol=1e-9) and math.isclose(float(r[1]), 1 / 3, rel_tol=1e-9)
    # without the quantile clamp, the outlier's radius-7 ball makes the fake at 6 "real"
    r_all = realism.realism_scores(real, torch.tensor([[6.0]], dtype=torch.float64), k=1,
                                   keep_quantile=1.0, eps=1e-12)
    assert math.isclose(float(r_all[0]), 7 / 4, rel_tol=1e-9)


def test_realism_refuses_bad_input():
    real = torch.randn(10, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="feature widths differ"):
        realism.realism_scores(real, torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, N - 1 = 9\]"):
        realism.realism_scores(real, real, k=10)
    with pytest.raises(ValueError, match="keep_quantile"):
        realism.realism_scores(real, real, keep_quantile=0.0)
    bad = real.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="real_feats"):
        realism.realism_scores(bad, real)
    with pytest.raises(ValueError, match="feature matrix"):
        realism.realism_scores(real, torch.randn(3))


def test_volume_realism_finds_a_planted_negative_correlation_per_class():
    g = torch.Generator().manual_seed(1)
    n = 300
    labels = torch.arange(n) % 3
    lv = torch.randn(n, generator=g, dtype=torch.float64)
    rs = torch.exp(-lv + 0.3 * torch.randn(n, generator=g, dtype=torch.float64))  # high volume, low realism
    rs[labels == 2] = torch.exp(torch.randn(int((labels == 2).sum()), generator=g, dtype=torch.float64))
    out = realism.volume_realism(lv, rs, labels, class_names=["a", "b", "c"], n_boot=200)
    assert out["all"]["hi"] < 0 and out["per_class"]["a"]["hi"] < -0.8
    assert out["per_class"]["c"]["lo"] < 0 < out["per_class"]["c"]["hi"]  # independent class
    assert out["per_class"]["a"]["n"] == 100
    q = out["quartiles"]
    assert q["mean_log_realism_top_volume"] < q["mean_log_realism_bottom_volume"]
    with pytest.raises(ValueError, match="non-finite"):
        realism.volume_realism(torch.tensor([0.0, -math.inf]), torch.ones(2), torch.zeros(2))


def test_bank_realism_on_the_embedded_dcgan_runs_per_psi():
    """End to end on the shipped DCGAN with a small real reference: one entry per ψ, realism
    positive, per-class correlations within [-1, 1], and truncation raises mean realism."""
    import magnet_lab
    from magnet_lab import features, sampling
    from magnet_lab.data import fmnist_dir

    if not fmnist_dir().is_dir():
        pytest.skip("Fashion-MNIST not installed (setup installs Debian's dataset-fashion-mnist)")
    from magnet_lab import data

    G = magnet_lab.load_generator("fmnist-dcgan")
    clf = magnet_lab.load_classifier("fmnist")
    images, _ = data.fashion_mnist("test")
    real = features.extract_features(clf, data.to_model_range(images[:600]))
    z = sampling.gaussian_latents(200, G.z_dim, seed=0)
    lv = -z.square().sum(1).double()  # a stand-in volume with a known trend: far latents low
    out = realism.bank_realism(G, z, lv, clf, real, psis=(1.0, 0.5), classifier=clf, n_boot=50)
    assert set(out["psi"]) == {"1", "0.5"}
    for psi, cell in out["psi"].items():
        assert all(-1 <= c["spearman"] <= 1 for c in cell["summary"]["per_class"].values())
        assert (out["arrays"][psi]["realism"] > 0).all()
    assert out["psi"]["0.5"]["mean_log_realism"]["value"] > out["psi"]["1"]["mean_log_realism"]["value"]
