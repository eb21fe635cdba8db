"""The notebooks' studies as functions, on tiny generators: each checked against the quantity it
claims to compute, computed directly."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from magnet_lab import attributes, bootstrap, experiment, plots, sampling
from magnet_lab.models import generate
from magnet_lab.studies import (attribute_shift, estimator_agreement, per_class_polarity,
                                real_reference, records, sweep_evaluation, sweep_reference,
                                toy_uniformity, verdicts, volume_shift)


class PatchGen(nn.Module):
    """z [B, 4] -> a 1×4×4 float64 'image' whose brightness grows with z's first coordinate; a
    leaky unit makes the Jacobian, hence the volume, depend on z."""

    z_dim = 4

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.lin = nn.Linear(4, 16, dtype=torch.float64)
        with torch.no_grad():
            self.lin.weight.copy_(0.3 * torch.randn(16, 4, generator=g, dtype=torch.float64))
            self.lin.weight[:, 0] = 0.5
            self.lin.bias.zero_()

    def forward(self, z):
        return torch.nn.functional.leaky_relu(self.lin(z), 0.3).tanh().view(-1, 1, 4, 4)


class BrightnessClassifier(nn.Module):
    """Two classes: dark (mean < 0) and bright; ``features`` is the image mean and spread."""

    sidecar = {"class_names": ["dark", "bright"], "data": {}}

    def features(self, x):
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3))], 1)

    def forward(self, x):
        m = x.mean((1, 2, 3))
        return torch.stack([-m, m], 1)


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    return experiment.candidate_bank(PatchGen(), "patch", 120, seed=0,
                                     directory=tmp_path_factory.mktemp("banks"))


# ----------------------------------------------------------------------------- verdicts, plots

def test_cis_disjoint_is_symmetric_and_needs_a_gap():
    a, b = {"lo": 0.0, "hi": 1.0}, {"lo": 1.5, "hi": 2.0}
    assert verdicts.cis_disjoint(a, b) and verdicts.cis_disjoint(b, a)
    assert not verdicts.cis_disjoint(a, {"lo": 0.9, "hi": 3.0})
    assert not verdicts.cis_disjoint(a, {"lo": 1.0, "hi": 3.0})  # touching is overlapping


def test_bias_verdict_says_which_way_and_qualifies_overlaps():
    plain = {"value": 0.4, "lo": 0.35, "hi": 0.45}
    v = verdicts.bias_verdict(plain, {"value": 0.2, "lo": 0.15, "hi": 0.25})
    assert v["verdict"] == "MaGNET reduces the class bias" and v["cis_disjoint"] is True
    assert v["relative_change_kl"] == pytest.approx(-0.5) and v["kl_plain"] == 0.4
    w = verdicts.bias_verdict(plain, {"value": 0.42, "lo": 0.3, "hi": 0.5})
    assert w["verdict"] == "MaGNET increases the class bias (95 % CIs overlap: not a clear effect)"


def test_magnet_summary_reads_the_psi1_row_and_skips_unknown_attributes():
    ci = lambda v: {"value": v, "lo": v - 0.01, "hi": v + 0.01}  # noqa: E731
    cell = lambda v: {m: ci(v) for m in ("precision", "recall", "fid")}  # noqa: E731
    table = [{"psi": 0.5, "fractions": {"0": cell(9.0), "1": cell(9.0)}},
             {"psi": 1.0, "fractions": {"0": cell(0.2), "0.5": cell(0.5), "1": cell(0.205)}}]
    samplers = {"plain": {"mean_log_volume": ci(1.0), "ess_fraction": 1.0},
                "MaGNET": {"mean_log_volume": ci(2.0), "ess_fraction": 0.3}}
    attrs_ = {"class": {"plain": {"kl_to_uniform": ci(0.3)}, "MaGNET": {"kl_to_uniform": ci(0.1)}},
              "smiling": {"plain": {"kl_to_uniform": None}, "MaGNET": {"kl_to_uniform": None}}}
    s = verdicts.magnet_summary(samplers, table, attrs_)
    assert s["precision"]["plain"]["value"] == 0.2 and s["precision"]["magnet"]["value"] == 0.205
    assert s["recall"]["change"] == pytest.approx(0.005) and s["fid"]["cis_disjoint"] is False
    assert s["kl_to_uniform_class"]["cis_disjoint"] is True and "kl_to_uniform_smiling" not in s
    assert s["ess_fraction_magnet"] == 0.3
    assert "precision" not in verdicts.magnet_summary(samplers, [], {})


def test_intervals_and_ci_errorbar_draw_value_lo_hi():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = plots.intervals([{"value": 1.0, "lo": 0.5, "hi": 2.0, "n_boot": 9}, None])
    assert a.shape == (2, 3) and a[0].tolist() == [1.0, 0.5, 2.0] and np.isnan(a[1]).all()
    assert plots.intervals([]).shape == (0, 3)
    fig, ax = plt.subplots()
    y = plots.intervals([{"value": v, "lo": v - 1, "hi": v + 2} for v in (3.0, 4.0)])
    plots.ci_errorbar(ax, [0.1, 0.2], y, annotate=[0.1, 0.2], color="C1")
    assert [t.get_text() for t in ax.texts] == ["0.1", "0.2"]
    plots.step_histograms(ax, {"a": np.random.default_rng(0).random(50)})
    assert ax.get_legend_handles_labels()[1] == ["a"]
    plt.close(fig)


def test_panel_grid_gives_n_panels_and_hides_the_rest():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plots.panel_grid(7, ncol=3)
    assert len(axes) == 7 and len(fig.axes) == 9
    assert [ax.axison for ax in fig.axes] == [True] * 7 + [False] * 2
    assert tuple(fig.get_size_inches()) == pytest.approx((3 * 3.3, 3 * 3.1))
    plt.close(fig)
    fig, axes = plots.panel_grid(2)  # fewer panels than columns: one row of two
    assert len(fig.axes) == 2 and tuple(fig.get_size_inches()) == pytest.approx((6.6, 3.1))
    plt.close(fig)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="positive"):
            plots.panel_grid(bad)


# ----------------------------------------------------------------------------- records, volumes

def test_volume_record_summarises_the_top_k_log_volume_and_counts_zero_volumes(bank):
    rec = records.volume_record(bank, 2)
    log_vol = sampling.log_volume(bank.log_sv, 2)
    assert rec["n"] == 120 and rec["rank"] == bank.rank
    assert rec["log_volume_mean"] == pytest.approx(float(log_vol.mean()))
    assert rec["log_volume_std"] == pytest.approx(float(log_vol.std()))
    from magnet_lab.bank import VolumeBank

    log_sv = bank.log_sv[:5].clone()  # [5, r]
    log_sv[1, -1] = -math.inf  # a zero σ outside the top 2 does not zero the top-2 volume
    log_sv[3, 1:] = -math.inf  # σ_2 = 0: the top-2 volume is zero
    dead = VolumeBank(log_sv=log_sv, latents=bank.latents[:5].clone(), meta={})
    assert records.volume_record(dead, 2)["n_neg_inf"] == 1
    assert records.volume_record(dead, None)["n_neg_inf"] == 2


def test_generator_record_names_shape_kind_and_the_banks_fingerprint(bank):
    rec = records.generator_record(PatchGen(), "patch", bank, "class")
    assert rec == {"spec": "patch", "class": "PatchGen", "z_dim": 4, "image_shape": [1, 4, 4],
                   "attributes": "class",
                   "fingerprint": bank.meta["identity"]["generator_fingerprint"]}


def test_sampler_volumes_draw_through_the_sampler_and_bootstrap_the_mean(bank):
    plain = experiment.Sampler("plain", seed=1)
    magnet = experiment.Sampler("MaGNET", rho=1.0, top_k=2, seed=1)
    v = volume_shift.sampler_volumes(bank, [plain, magnet], 30, top_k=2, n_boot=50, seed=4)
    log_vol = sampling.log_volume(bank.log_sv, 2)
    for s in (plain, magnet):
        assert torch.equal(v.picked[s.name], s.indices(bank, 30))
        rec = v.summary[s.name]
        assert rec["mean_log_volume"] == bootstrap.mean_ci(log_vol[v.picked[s.name]], 50, 4)
        assert rec["n_distinct"] == 30 and rec["sampler"] == s.as_dict()
    assert v.summary["plain"]["ess_fraction"] == pytest.approx(1.0)
    assert v.summary["MaGNET"]["mean_log_volume"]["value"] > v.summary["plain"]["mean_log_volume"]["value"]
    assert list(v.table().index) == ["plain", "MaGNET"]


# ----------------------------------------------------------------------------- references

def test_real_reference_by_attribute_kind(monkeypatch):
    C = BrightnessClassifier()
    feats = torch.zeros(3, 2, dtype=torch.float64)
    monkeypatch.setattr(experiment, "fmnist_reference",
                        lambda clf, seed: (feats, {"n": 3, "split_seed": seed, "clf": clf}))
    ref = real_reference.real_reference("class", C, seed=5)
    assert ref.features is feats and ref.model is C and ref.n_classes == 10
    assert ref.description["split_seed"] == 5 and not ref.skipped
    face = real_reference.real_reference("face", None, seed=0)
    assert face.skipped and "real_images" in face.description["skipped"] and face.model is None
    with pytest.raises(ValueError, match="classifier"):
        real_reference.real_reference("class", None, seed=0)


# ----------------------------------------------------------------------------- 03's studies

class RGBPatchGen(PatchGen):
    """PatchGen's 16 outputs as a 3-channel image (the first 12, 3×2×2): an RGB generator."""

    def forward(self, z):
        return super().forward(z).view(-1, 16)[:, :12].reshape(-1, 3, 2, 2)


def patch_reference(C: nn.Module, real: torch.Tensor, balanced: torch.Tensor
                    ) -> sweep_reference.SweepReference:
    """A Fashion-MNIST-like reference for PatchGen: ``real`` and ``balanced`` ``[N, F]`` in
    ``C``'s features (2 classes), images scored as generated."""
    return sweep_reference.SweepReference(
        real_reference.RealReference(real, {"n": len(real)}, C, 2), balanced, "class", None, 500)


SKIPPED = sweep_reference.SweepReference(
    real_reference.RealReference(None, {"skipped": "no real_images given"}, None, None), None,
    "face", 3, 8)


def test_sweep_samplers_and_their_evaluation(bank):
    groups = sweep_evaluation.sweep_samplers([-1.0, 0.0, 1.0], [0.5, 1.0], top_k=2,
                                             replace=False, seed=3)
    assert [s.name for s in groups["rho"]] == ["rho=-1", "rho=0", "rho=1"]
    assert groups["exact"][0].exact_uniform and all(s.seed == 4 for s in groups["rho"])
    assert all(s.fresh_latents and s.seed == 5 for s in groups["psi"])
    G, C = PatchGen(), BrightnessClassifier()
    real = C.features(G(sampling.gaussian_latents(200, 4, seed=9).double())).double()
    samplers = groups["rho"][:2] + groups["psi"][:1]
    sweep = sweep_evaluation.sweep_evaluation(G, bank, samplers, 40, patch_reference(C, real, real),
                                              n_boot=20, seed=0)
    assert sweep.skipped is None
    for s in samplers:
        ev = sweep.evaluations[s.name]
        images = experiment.evaluate(sweep.images[s.name], real, C, n_boot=20, seed=0)
        assert ev["metrics"] == images["metrics"] and ev["sampler"] == s.as_dict()
        assert set(ev["balanced_reference"]) == set(sweep_evaluation.BALANCED_METRICS)
        assert ("ess_fraction" in ev) is (not s.fresh_latents)
        assert "features" not in ev and "predicted_labels" not in ev
    assert torch.equal(sweep.images["rho=0"], generate(G, groups["rho"][1].latents(bank, 40)))
    table = sweep.table()
    assert list(table.columns)[-1] == "ess_fraction" and math.isnan(table.loc["psi=0.5",
                                                                              "ess_fraction"])
    x, recall, precision, fid = sweep.frontier(groups["rho"][:2], "rho")
    assert x == [-1.0, 0.0] and recall.shape == precision.shape == fid.shape == (2, 3)
    assert recall[1, 0] == sweep.evaluations["rho=0"]["metrics"]["recall"]["value"]


def test_sweep_evaluation_without_balanced_reference_scores_against_the_one_reference(bank):
    """An RGB generator's reference (no balanced counterpart): the same metrics as
    ``experiment.evaluate`` of its images (resized to the reference's size) with no class
    bias, no balanced entry, and only the first n_keep images kept."""
    G, C = RGBPatchGen(), BrightnessClassifier()
    real = C.features(G(sampling.gaussian_latents(200, 4, seed=9).double())).double()
    ref = sweep_reference.SweepReference(  # an extractor's features: no classes
        real_reference.RealReference(real, {"n": 200}, C, None), None, "face", 4, 8)
    s = sweep_evaluation.sweep_samplers([1.0], [], top_k=2, replace=False, seed=0)["rho"][0]
    sweep = sweep_evaluation.sweep_evaluation(G, bank, [s], 30, ref, n_boot=20, seed=0, n_keep=5)
    full = s.images(G, bank, 30, size=4, batch_size=8)  # [30, 3, 4, 4]
    ev = sweep.evaluations["rho=1"]
    assert ev["metrics"] == experiment.evaluate(full, real, C, n_boot=20, seed=0,
                                                n_classes=None)["metrics"]
    assert set(ev) == {"metrics", "ess_fraction", "sampler"}
    assert ev["ess_fraction"] == s.ess_fraction(bank) < 1
    assert torch.equal(sweep.images["rho=1"], full[:5])


def test_sweep_evaluation_without_a_reference_records_ess_and_images_and_skips_metrics(bank):
    G = RGBPatchGen()
    groups = sweep_evaluation.sweep_samplers([0.0, 2.0], [0.7], top_k=2, replace=False, seed=1)
    samplers = groups["rho"] + groups["psi"]
    sweep = sweep_evaluation.sweep_evaluation(G, bank, samplers, 30, SKIPPED, n_boot=20,
                                              seed=0, n_keep=6)
    assert sweep.skipped == "no real_images given"
    for s in samplers:
        ev = sweep.evaluations[s.name]
        assert ev["metrics"] == {"skipped": "no real_images given"}, s.name
        # the kept images are the first n_keep of the n drawn (and resized to the size, 3²)
        assert torch.equal(sweep.images[s.name], s.images(G, bank, 30, size=3)[:6]), s.name
    assert sweep.evaluations["rho=0"]["ess_fraction"] == pytest.approx(1.0)
    log_w = sampling.log_weights(bank.log_sv, 2.0, 2)
    assert sweep.evaluations["rho=2"]["ess_fraction"] == pytest.approx(sampling.ess_fraction(log_w))
    assert "ess_fraction" not in sweep.evaluations["psi=0.7"]
    table = sweep.table()
    assert list(table.columns) == ["ess_fraction"] and list(table.index) == ["rho=0", "rho=2",
                                                                             "psi=0.7"]
    with pytest.raises(ValueError, match="skipped"):
        sweep.frontier(groups["rho"], "rho")


def test_spectra_options_auto_is_exact_for_fashion_mnist_and_projected_for_rgb():
    opt = sweep_evaluation.spectra_options("class", "auto", proj_dim=128, seed=2)
    assert opt == sweep_evaluation.SpectraOptions(seed=2)  # what the bank used by default
    rgb = sweep_evaluation.spectra_options("face", "auto", proj_dim=64, seed=2)
    assert rgb.method == "projected" and rgb.proj_dim == 64 and rgb.seed == 2
    assert sweep_evaluation.spectra_options("face", "exact", proj_dim=64, seed=0).method == "exact"
    with pytest.raises(ValueError, match="method must be"):
        sweep_evaluation.spectra_options("class", "topk", proj_dim=128, seed=0)


def test_sweep_reference_by_image_channels(monkeypatch, tmp_path):
    """One channel: the classifier, checked, with the imbalanced and balanced Fashion-MNIST
    references; RGB: real_images in the extractor's features (at its layer), no balanced
    reference and a record that says so, or skipped without real_images."""
    C = BrightnessClassifier()
    calls = []
    monkeypatch.setattr(experiment, "fmnist_reference", lambda clf, seed=0, balanced=False: (
        calls.append((seed, balanced)) or torch.full((5 if balanced else 3, 2), float(seed)),
        {"n": 5 if balanced else 3}))
    ref = sweep_reference.sweep_reference(PatchGen(), "patch", C, seed=4)
    assert ref.kind == "class" and ref.real.model is C and ref.size is None
    assert calls == [(4, False), (0, True)] and ref.skipped is None
    assert ref.description == {"n_real_imbalanced": 3, "n_real_balanced": 5}
    assert ref.space == "classifier features" and "imbalanced" in ref.against

    skipped = sweep_reference.sweep_reference(RGBPatchGen(), "rgb", "unused", seed=0,
                                              real_size=8)
    assert skipped.kind == "face" and "real_images" in skipped.skipped
    assert skipped.balanced is None and skipped.size == 8 and skipped.batch_size == 8
    assert "only for Fashion-MNIST" in skipped.description["balanced_reference"]

    from builders import real_image_folder

    class Extractor(nn.Module):
        layer = "64"

        def features(self, x):
            return torch.stack([x.mean((1, 2, 3)), x[:, 0].mean((1, 2))], 1)

    asked = []
    monkeypatch.setattr(real_reference.features, "standard_extractor",
                        lambda kind, weights, layer=None, device=None:
                        asked.append((kind, weights, layer, device)) or Extractor())
    folder = real_image_folder(tmp_path / "reals", 5, size=6)
    rgb = sweep_reference.sweep_reference(RGBPatchGen(), "rgb", "unused", seed=0,
                                          real_images=folder, n_real=4, real_size=8,
                                          extractor_weights="w.pth", feature_layer="64",
                                          device="cpu")
    assert asked == [("inception", "w.pth", "64", "cpu")] and rgb.skipped is None
    assert rgb.real.features.shape == (4, 2) and rgb.real.n_classes is None
    assert rgb.description["n"] == 4 and rgb.description["feature_layer"] == "64"
    assert rgb.space == "inception features" and rgb.against == "real_images"


def test_estimator_agreement_compares_each_estimator_with_exact(tmp_path, monkeypatch):
    monkeypatch.setenv("MAGNET_LAB_CACHE_DIR", str(tmp_path))
    G, C = PatchGen(), BrightnessClassifier()
    vb = experiment.candidate_bank(G, "patch", 24, seed=1, directory=tmp_path)
    real = C.features(G(sampling.gaussian_latents(100, 4, seed=9).double())).double()
    agree = estimator_agreement.estimator_agreement(G, "patch", vb, patch_reference(C, real, real),
                                                    subset=16, k=2, tol=1e-8, n_boot=20, seed=0,
                                                    proj_dim=8)
    res = agree.results
    assert res["n_subset"] == 16 and res["n_selected"] == 4 and res["selection_seed"] == 3
    # top-k with a tight tolerance reproduces the exact top σ: same weights, same selection
    assert res["max_abs_topk_minus_exact_log_sv"] < 1e-6
    assert torch.equal(res["selected"]["topk"], res["selected"]["exact_topk"])
    assert res["selection_overlap_with_exact"]["exact"] == 1.0
    want = experiment.Sampler("x", rho=1.0, top_k=2, seed=3).indices(vb.subset(slice(0, 16)), 4)
    assert torch.equal(res["selected"]["exact_topk"], want)
    assert res["spearman_topk_vs_exact_topk"]["value"] == pytest.approx(1.0)
    assert set(res["metrics"]) == {"exact", "projected", "topk", "exact_topk"}
    assert "metrics" not in agree.headline() and "selected" not in agree.headline()
    assert agree.log_volume_k["exact"].shape == (16,)


def test_estimator_agreement_on_a_projected_bank_computes_the_exact_volumes_and_can_skip_metrics(
        tmp_path, monkeypatch):
    """An RGB generator's bank is projected: the exact log σ of the subset are computed (equal
    to an exact bank's rows of the same latents), and without a reference the selections'
    metrics say why they are skipped."""
    monkeypatch.setenv("MAGNET_LAB_CACHE_DIR", str(tmp_path))
    G = PatchGen()
    projected = experiment.candidate_bank(G, "patch", 24, seed=1, directory=tmp_path,
                                          options=sweep_evaluation.spectra_options(
                                              "face", "auto", proj_dim=8, seed=1))
    exact = experiment.candidate_bank(G, "patch", 24, seed=1, directory=tmp_path)
    assert projected.meta["identity"]["method"] == "projected"
    agree = estimator_agreement.estimator_agreement(G, "patch", projected, SKIPPED, subset=12,
                                                    k=2, tol=1e-8, n_boot=20, seed=1, proj_dim=8)
    res = agree.results
    assert res["metrics"] == {"skipped": "no real_images given"}
    want_k = sampling.log_volume(exact.log_sv[:12], 2)  # [12] the exact top-2 log-volumes
    torch.testing.assert_close(agree.log_volume_k["exact"], want_k, rtol=1e-12, atol=1e-12)
    want = experiment.Sampler("x", rho=1.0, top_k=2, seed=4).indices(exact.subset(slice(0, 12)), 4)
    assert torch.equal(res["selected"]["exact_topk"], want)
    assert res["max_abs_topk_minus_exact_log_sv"] < 1e-6


# ----------------------------------------------------------------------------- attributes

def test_candidate_attributes_and_the_training_split(bank):
    G, C = PatchGen(), BrightnessClassifier()
    cand = attribute_shift.candidate_attributes(G, bank, "class", C)
    assert cand.main == "class" and cand.names == ["dark", "bright"]
    assert torch.equal(cand.labels, attributes.predict_classes(C, generate(G, bank.latents)))
    rec = cand.record()
    assert rec["kind"] == "class" and rec["n_missing_candidates"] == 0
    G.sidecar = {"data": {"class_frequencies": [0.75, 0.25]}}
    split = attribute_shift.training_split_bias(G, "class")
    assert split["kl_to_uniform"] == pytest.approx(attributes.kl_to_uniform(
        torch.tensor([0.75, 0.25], dtype=torch.float64)))
    assert split["max_min_ratio"] == pytest.approx(3.0)
    assert attribute_shift.training_split_bias(G, "face") is None
    assert attribute_shift.training_split_bias(PatchGen(), "class") is None


def test_sampler_bias_and_class_change_follow_the_drawn_candidates(bank):
    G, C = PatchGen(), BrightnessClassifier()
    cand = attribute_shift.candidate_attributes(G, bank, "class", C)
    samplers = attribute_shift.attribute_samplers([-1.0], top_k=2, all_k=None, replace=False,
                                                  seed=0)
    assert [s.name for s in samplers] == ["plain (ρ=0)", "MaGNET (ρ=1)", "MaGNET exact-uniform",
                                          "MaGNET, all σ", "ρ=-1"]
    assert samplers[2].exact_uniform and samplers[3].top_k is None and samplers[0].seed == 1
    bias = attribute_shift.sampler_bias(bank, samplers, cand, 40, n_boot=30, seed=0)
    for s in samplers:
        idx = s.indices(bank, 40)
        assert torch.equal(bias.picked[s.name], idx)
        ev = bias.evaluations[s.name]
        assert torch.equal(ev["predicted_labels"], cand.labels[idx])
        assert ev["kl_to_uniform"] == attributes.attribute_bias(cand.labels[idx], cand.names,
                                                                n_boot=30, seed=0)["kl_to_uniform"]
    assert "predicted_labels" not in bias.record()["ρ=-1"]
    change = attribute_shift.class_change(bias, cand, bank, top_k=2, n_boot=30, seed=0)
    plain = bias.evaluations["plain (ρ=0)"]["class_freq"]
    magnet = bias.evaluations["MaGNET (ρ=1)"]["class_freq"]
    for c in range(2):
        assert change.change[c] == pytest.approx(magnet[c]["value"] / plain[c]["value"], rel=1e-6)
        assert change.ratio_ci[c]["value"] == pytest.approx(change.change[c], rel=1e-6)
    assert change.record["most_upweighted"] == cand.names[int(np.argmax(change.change))]
    assert change.record["spearman_ratio_vs_mean_log_volume"] is None  # 2 classes < 3
    lv = sampling.log_volume(bank.log_sv, 2)[cand.labels == 1]
    assert change.log_volume["bright"] == bootstrap.mean_ci(lv, 30, 0)
    shift = attribute_shift.attribute_shift(G, bank, bias.picked, "class", C, n_boot=30, seed=0)
    assert shift["class"]["ρ=-1"]["kl_to_uniform"] == bias.evaluations["ρ=-1"]["kl_to_uniform"]
    assert list(attribute_shift.bias_table(shift).index.names) == ["attribute", "sampler"]


def test_an_attribute_unknown_in_every_sample_gives_nan_ratios_and_no_verdict(bank):
    """Face attributes of a generator that draws no faces (an AFHQ StyleGAN3): every label
    missing. The table shows NaN, the ratios are NaN (None in the record), the candidates'
    frequencies None, and the verdict says there is none."""
    missing = torch.full((len(bank),), attributes.MISSING, dtype=torch.int64)
    cand = attribute_shift.CandidateAttributes(
        {"gender": {"labels": missing, "classes": ["female", "male"]}}, "face")
    samplers = attribute_shift.attribute_samplers([], top_k=2, all_k=None, replace=False, seed=0)
    bias = attribute_shift.sampler_bias(bank, samplers, cand, 20, n_boot=10, seed=0)
    table = bias.table()
    assert table["kl_value"].isna().all() and (table["n_missing"] == 20).all()
    change = attribute_shift.class_change(bias, cand, bank, top_k=2, n_boot=10, seed=0)
    assert all(math.isnan(c) for c in change.change) and change.ratio_ci == [None, None]
    assert change.record["most_upweighted"] is None and change.record["candidate_class_freq"] is None
    assert set(change.record["ratio_per_class"].values()) == {None}
    v = verdicts.bias_verdict(bias.evaluations[attribute_shift.PLAIN]["kl_to_uniform"],
                              bias.evaluations[attribute_shift.MAGNET]["kl_to_uniform"])
    assert v["verdict"].startswith("no verdict") and v["cis_disjoint"] is None


# ----------------------------------------------------------------------------- 01's studies

@pytest.fixture(scope="module")
def toys():
    return toy_uniformity.toy_setup(train_steps=200, seed=0, box=3.0)


def test_toy_setup_and_affine_agreement_of_cpa_nets(toys):
    assert set(toys.generators) == {"curve", "surface"} and toys.curve_regions.n_regions >= 2
    assert toys.train_loss == {t: g.train_loss for t, g in toys.generators.items()}
    torch.manual_seed(0)
    leaky = nn.Sequential(nn.Linear(3, 16), nn.LeakyReLU(0.2), nn.Linear(16, 5)).double()
    leaky.z_dim = 3
    out = toy_uniformity.affine_agreement({"leaky": leaky, **toys.generators},
                                          rng=torch.Generator().manual_seed(1), n=32)
    for net, check in out.items():
        assert max(check.values()) <= 1e-10, net


def test_pushforward_density_keeps_the_latents_in_the_box(toys):
    g = torch.Generator().manual_seed(0)
    d = toy_uniformity.pushforward_density(toys.generators["curve"], 4000, 1.0, rng=g, bins=10)
    z = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert d.summary["n_mc"] == int((z.abs() <= 1.0).sum()) and d.summary["bins"] == 10


def test_uniformity_draws_four_samplers_and_tests_them(toys):
    u = toy_uniformity.uniformity(toys.generators, n_candidates=1500, n_samples=150, box=3.0,
                                  rng=torch.Generator().manual_seed(2), cell_bins=4, area_sub=4)
    for target in ("curve", "surface"):
        assert list(u.results[target]) == list(toy_uniformity.SAMPLERS)
        for name, e in u.results[target].items():
            assert u.drawn[target][name].shape[0] == 150
            assert e["n_candidates"] + e["dropped_outside_box"] == 1500
            assert ("ks_p" in e) is (target == "curve") and ("chi2_p" in e) is (target == "surface")
        assert u.results[target]["plain"]["ess_fraction"] == pytest.approx(1.0)
        assert u.results[target]["magnet_exact_box"]["dropped_outside_box"] == 0
    panel = u.cell_ratio_panel(("plain", "magnet_exact_box"), 3.0)
    assert panel.shape == (4, 9) and np.isnan(panel[:, 4]).all()
    assert np.isfinite(panel[:, :4]).all() and abs(np.nanmean(panel) - 1) < 0.5
    arcs = u.arclength(toys.generators["curve"], ("plain",), 3.0)
    assert arcs["plain"].shape == (150,) and (0 <= arcs["plain"]).all() and (arcs["plain"] <= 1).all()
    assert len(u.table()) == 8


def test_polarity_mass_sweep_raises_the_mean_log_volume_with_rho(toys):
    rng = torch.Generator().manual_seed(3)
    sweep = toy_uniformity.polarity_mass_sweep(toys.generators["curve"], n_candidates=2000,
                                               box=3.0, rhos=[-1.0, 0.0, 1.0], rng=rng)
    for rows in sweep.sweep.values():
        lv = [r["mean_log_volume_exact"] for r in rows]
        assert lv[0] < lv[1] < lv[2]  # d/dρ E_ρ[log vol] = Var_ρ(log vol) > 0
        assert rows[1]["ess_fraction"] == pytest.approx(1.0)
    assert sweep.z_box.shape == (2000, 1) and sweep.log_sv_box.shape == (2000, 1)
    samples = toy_uniformity.polarity_arclength_samples(toys.generators["curve"], sweep,
                                                        [-1.0, 1.0], 100, 3.0, rng=rng)
    assert set(samples) == {-1.0, 1.0} and all(s.shape == (100,) for s in samples.values())


def test_the_rho_sweep_refuses_one_channel_images_its_classifier_cannot_read():
    """Notebook 03 scores a one-channel generator in the Fashion-MNIST classifier's features: a
    1×16×16 generator is refused by its reference (before any bank) with its shape and what
    the sweep does with RGB; the DCGAN passes."""
    import magnet_lab

    C = magnet_lab.load_classifier("fmnist")
    gray = nn.Sequential(nn.Linear(4, 16 * 16), nn.Tanh(), nn.Unflatten(1, (1, 16, 16)))
    gray.z_dim = 4
    with pytest.raises(ValueError, match=r"gray-gen makes \[1, 16, 16\] images.*RGB generator.*"
                                         r"real_images"):
        sweep_reference.sweep_reference(gray, "gray-gen", "fmnist", seed=0)
    sweep_reference.check_generator_fits(magnet_lab.load_generator("fmnist-dcgan"),
                                         "fmnist-dcgan", C)


# ----------------------------------------------------------------------------- 05's per-class study

class ChannelClassifier(nn.Module):
    """Three classes for 3-channel images: the brightest channel; ``features`` are the channel
    means and spreads (float64)."""

    def features(self, x):
        x = x.double()
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)  # [B, 6]

    def forward(self, x):
        return x.double().mean((2, 3))  # [B, 3] logits


@pytest.fixture(scope="module")
def cond_G():
    from magnet_lab import latent, registry
    from magnet_lab.models.biggan import BigGANDeep

    from builders import BIGGAN_TINY, randomise_biggan

    G = randomise_biggan(BigGANDeep(**BIGGAN_TINY)).double().eval().requires_grad_(False)
    G.latent_spec = latent.LatentSpec(registry.latent_law(G), G.z_dim, n_classes=G.c_dim)
    return G


@pytest.fixture(scope="module")
def class_banks(cond_G, tmp_path_factory):
    return per_class_polarity.class_banks(cond_G, "tiny-biggan", [0, 2], 24, seed=3,
                                          directory=tmp_path_factory.mktemp("class-banks"))


def test_conditional_classes_checks_ids_against_the_generator(cond_G):
    assert per_class_polarity.conditional_classes(cond_G, None) == [0, 1, 2]
    assert per_class_polarity.conditional_classes(cond_G, [2, 0]) == [2, 0]
    for bad in ([], [0, 0], [3], 1):
        with pytest.raises(ValueError, match="class"):
            per_class_polarity.conditional_classes(cond_G, bad)
    with pytest.raises(ValueError, match="class-conditional"):
        per_class_polarity.conditional_classes(PatchGen(), None)


def test_class_banks_hold_one_class_each_with_the_jacobian_at_that_class(cond_G, class_banks):
    from torch.func import jacrev

    assert list(class_banks) == [0, 2]
    b0, b2 = class_banks[0], class_banks[2]
    assert len(b0) == len(b2) == 24 and b0.labels.unique().tolist() == [0]
    assert b2.labels.unique().tolist() == [2]
    assert torch.equal(b0.latents, b2.latents)  # the same candidates in every class (paired)
    assert not torch.allclose(b0.log_sv, b2.log_sv)  # the class changes the Jacobian
    for c, vb in class_banks.items():
        for i in (0, 17):  # the spectrum of z -> G(z, c) computed directly, float64
            onehot = cond_G.one_hot([c])[0]
            J = jacrev(lambda z: cond_G(z, onehot).reshape(-1))(vb.latents[i])  # [D, d]
            sv = torch.linalg.svdvals(J)
            assert torch.allclose(vb.log_sv[i].exp(), sv, rtol=1e-8, atol=1e-12), (c, i)


def test_rho_samplers_are_named_by_rho_and_drawn_from_seed_plus_one():
    s = per_class_polarity.rho_samplers([-1, 0.5, 1.0], top_k=3, seed=4)
    assert [x.name for x in s] == ["rho=-1", "rho=0.5", "rho=1"]
    assert all(x.seed == 5 and x.top_k == 3 and not x.replace for x in s)
    for bad in ([], [1.0, 1]):
        with pytest.raises(ValueError, match="rhos"):
            per_class_polarity.rho_samplers(bad, top_k=3, seed=0)


def test_class_draws_take_equal_counts_within_each_class_with_its_own_weights(class_banks):
    samplers = per_class_polarity.rho_samplers([0.0, 1.0], top_k=2, seed=0)
    draws = per_class_polarity.class_draws(class_banks, samplers, 10, top_k=2, n_boot=30, seed=2)
    for s in samplers:
        for c, vb in class_banks.items():
            idx, rec = draws.picked[s.name][c], draws.summary[s.name][c]
            assert torch.equal(idx, s.indices(vb, 10)) and rec["n"] == rec["n_distinct"] == 10
            log_w = sampling.log_weights(vb.log_sv, s.rho, top_k=2)  # within the class's bank
            assert rec["ess_fraction"] == pytest.approx(sampling.ess_fraction(log_w), rel=1e-12)
            lv = sampling.log_volume(vb.log_sv, 2)[idx]
            assert rec["mean_log_volume"] == bootstrap.mean_ci(lv, 30, 2)
    assert all(r["ess_fraction"] == pytest.approx(1.0) for r in draws.summary["rho=0"].values())
    assert all(0 < r["ess_fraction"] < 1 for r in draws.summary["rho=1"].values())
    z, labels = draws.latents(class_banks, "rho=1")
    assert z.shape == (20, 4) and labels.tolist() == [0] * 10 + [2] * 10
    assert torch.equal(z[10:], class_banks[2].latents[draws.picked["rho=1"][2]])
    assert draws.ess()[2]["rho=1"] == draws.summary["rho=1"][2]["ess_fraction"]
    assert list(draws.table().columns) == ["rho=0", "rho=1"]
    with pytest.raises(ValueError, match="without replacement"):  # more than the bank
        per_class_polarity.class_draws(class_banks, samplers, 25, top_k=2, n_boot=5, seed=0)


def test_class_reference_says_why_it_skips(cond_G):
    ref = per_class_polarity.class_reference(cond_G, ChannelClassifier(), [0, 2])
    assert ref.skipped and ref.classifier is None and ref.names == {0: "class 0", 2: "class 2"}
    assert "[3, 16, 16]" in ref.description["skipped"]
    assert ref.description["image_shape"] == [3, 16, 16]
    none = per_class_polarity.class_reference(cond_G, None, [1])
    assert "no classifier" in none.description["skipped"] and none.names == {1: "class 1"}


@pytest.fixture(scope="module")
def class_sweep_result(cond_G, class_banks):
    samplers = per_class_polarity.rho_samplers([0.0, 1.0], top_k=2, seed=0)
    draws = per_class_polarity.class_draws(class_banks, samplers, 12, top_k=2, n_boot=20, seed=0)
    C = ChannelClassifier()
    real_z = torch.randn(60, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    real = {c: C.features(cond_G(real_z, cond_G.one_hot([c] * 60))) for c in (0, 2)}
    ref = per_class_polarity.ClassReference(real, C, {"dataset": "made"}, {0: "a", 2: "c"})
    sweep = per_class_polarity.class_sweep(cond_G, class_banks, draws, ref, truncations=[0.5],
                                           n_grid=5, n_boot=20, seed=1)
    return draws, ref, sweep


def test_class_sweep_scores_every_class_at_every_setting(cond_G, class_banks, class_sweep_result):
    from magnet_lab import class_quality

    draws, ref, sweep = class_sweep_result
    assert sweep.knobs == {"rho=0": ("rho", 0.0), "rho=1": ("rho", 1.0),
                           "truncation=0.5": ("truncation", 0.5)}
    z, labels = draws.latents(class_banks, "rho=1")
    images = generate(cond_G, z, labels=labels)  # [24, 3, 16, 16]
    assert sweep.quality["rho=1"] == class_quality.per_class_quality(
        images, labels, ref.features, ref.classifier, seed=1, n_boot=20)
    fresh, fresh_labels = class_quality.class_images(cond_G, [0, 2], 12, seed=3, truncation=0.5)
    assert sweep.quality["truncation=0.5"] == class_quality.per_class_quality(
        fresh, fresh_labels, ref.features, ref.classifier, seed=1, n_boot=20)
    show = torch.randperm(12, generator=torch.Generator().manual_seed(1))[:5]
    assert torch.equal(sweep.images["rho=1"][2], images[12:][show])
    assert torch.equal(sweep.images["truncation=0.5"][0], fresh[:12][show])
    for name, by in sweep.quality.items():
        assert sorted(by) == [0, 2] and all(q["n"] == 12 for q in by.values()), name
        for q in by.values():
            for m in ("precision", "recall", "fid"):
                assert q["metrics"][m]["lo"] <= q["metrics"][m]["hi"], (name, m)
    x, recall, precision, fid = sweep.frontier(2, "rho")
    assert x == [0.0, 1.0] and recall.shape == precision.shape == fid.shape == (2, 3)
    assert fid[1, 0] == sweep.quality["rho=1"][2]["metrics"]["fid"]["value"]
    assert sweep.intervals(0, "truncation", "agreement")[0, 0] == \
        sweep.quality["truncation=0.5"][0]["agreement"]["value"]
    assert sweep.table("fid").loc[2, "rho=1"] == fid[1, 0]
    assert set(sweep.record()) == {"0", "2"} and set(sweep.record()["0"]) == set(sweep.knobs)


def test_class_summary_compares_magnet_with_plain_per_class(class_sweep_result):
    draws, ref, sweep = class_sweep_result
    summary = per_class_polarity.class_summary(sweep, draws)
    assert set(summary) == {"0", "2"}
    for c, entry in summary.items():
        assert entry["ess_fraction_plain"] == pytest.approx(1.0)
        assert entry["ess_fraction_magnet"] == draws.summary["rho=1"][int(c)]["ess_fraction"]
        for m in ("precision", "recall", "fid", "agreement"):
            a, b = entry[m]["plain"], entry[m]["magnet"]
            assert entry[m]["change"] == pytest.approx(b["value"] - a["value"])
            assert entry[m]["cis_disjoint"] == verdicts.cis_disjoint(a, b)
    table = per_class_polarity.summary_table(summary, ref.names)
    assert list(table.index) == ["a", "c"] and "fid_change" in table.columns


def test_class_sweep_without_a_reference_makes_only_the_grid_images(cond_G, class_banks):
    samplers = per_class_polarity.rho_samplers([0.0, 1.0], top_k=2, seed=0)
    draws = per_class_polarity.class_draws(class_banks, samplers, 12, top_k=2, n_boot=5, seed=0)
    ref = per_class_polarity.class_reference(cond_G, None, [0, 2])
    sweep = per_class_polarity.class_sweep(cond_G, class_banks, draws, ref, truncations=[1.0],
                                           n_grid=3, n_boot=5, seed=0)
    assert sweep.quality == {"rho=0": {}, "rho=1": {}, "truncation=1": {}}
    assert sweep.record() == {} and sweep.table().empty
    assert all(x.shape == (3, 3, 16, 16) for by in sweep.images.values() for x in by.values())
    summary = per_class_polarity.class_summary(sweep, draws)
    assert "precision" not in summary["0"]
    assert summary["0"]["ess_fraction_plain"] == pytest.approx(1)


def test_generator_options_and_the_plain_generator_of_the_authors_recipe(cond_G):
    from magnet_lab.models.biggan import AUTHORS_RECIPE

    assert per_class_polarity.generator_options(1.0, False) == {}
    assert per_class_polarity.generator_options(0.5, False) == {"truncation": 0.5}
    assert per_class_polarity.generator_options(1.0, True) == AUTHORS_RECIPE
    for t, recipe in ((0.5, True), (1.5, False), (0.0, False)):
        with pytest.raises(ValueError, match="truncation"):
            per_class_polarity.generator_options(t, recipe)
    assert per_class_polarity.plain_generator(cond_G) is cond_G
    Ga = cond_G.with_options(**AUTHORS_RECIPE)
    plain = per_class_polarity.plain_generator(Ga)
    assert plain.options()["z_scale"] == 1.0 and plain.generator is cond_G.generator
    z = torch.randn(2, 4, dtype=torch.float64)
    c = cond_G.one_hot([0, 1])
    assert torch.equal(plain(z, c), cond_G(z, c)) and torch.allclose(Ga(z, c), cond_G(0.9 * z, c))
