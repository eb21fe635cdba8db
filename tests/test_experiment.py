"""The notebooks' shared pipeline: truncation, generation, cached banks, attributes, widgets."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from magnet_lab import attributes, experiment, models, sampling, widgets
from magnet_lab.spectra import SpectraOptions


class TinyGen(nn.Module):
    """A linear 'image' generator z [B, 3] -> [B, 1, 2, 2] (closed-form Jacobian W)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.z_dim = 3
        self.lin = nn.Linear(3, 4, dtype=torch.float64)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(4, 3, generator=g, dtype=torch.float64))
            self.lin.bias.copy_(torch.randn(4, generator=g, dtype=torch.float64))

    def forward(self, z):
        return torch.nn.functional.hardtanh(self.lin(z)).view(-1, 1, 2, 2)


def test_truncation_scales_plain_latents_and_defers_to_the_generator():
    G, z = TinyGen(), torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(models.truncate(G, z, 0.5), 0.5 * z)
    assert models.truncate(G, z, 1.0) is z
    G.truncate = lambda z, psi: z + psi  # a StyleGAN-like generator truncates in its own way
    assert torch.equal(models.truncate(G, z, 0.5), z + 0.5)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="psi"):
            models.truncate(G, z, bad)


def test_generate_in_batches_equals_one_pass():
    G, z = TinyGen(), torch.randn(11, 3, dtype=torch.float64)
    out = models.generate(G, z, psi=0.7, batch_size=4)
    assert out.dtype == torch.float32 and out.shape == (11, 1, 2, 2)
    with torch.no_grad():
        assert torch.allclose(out, G(0.7 * z).float())


def test_fingerprint_follows_the_weights():
    a, b = TinyGen(0), TinyGen(0)
    assert models.fingerprint(a) == models.fingerprint(b)
    with torch.no_grad():
        b.lin.bias.add_(1e-6)
    assert models.fingerprint(a) != models.fingerprint(b)


def test_candidate_bank_is_exact_cached_and_keyed_by_weights(tmp_path):
    G = TinyGen()
    vb = experiment.candidate_bank(G, "tiny", 12, seed=3, shard_size=5, directory=tmp_path)
    z = sampling.gaussian_latents(12, 3, seed=3).double()
    assert torch.equal(vb.latents, z) and vb.meta["shards_computed"] == [0, 1, 2]
    # hardtanh clips some pixels: the Jacobian is diag(mask) W, whose σ we know in closed form
    with torch.no_grad():
        mask = (G.lin(z).abs() < 1).double()  # [N, 4]
    ref = torch.linalg.svdvals(mask[:, :, None] * G.lin.weight[None]).log()  # [N, 3]
    rank = mask.sum(1).clamp(max=3).long()  # W is generic: rank = number of unclipped pixels
    for i in range(12):
        r = int(rank[i])
        assert torch.allclose(vb.log_sv[i, :r], ref[i, :r], atol=1e-10)
        assert torch.isneginf(vb.log_sv[i, r:]).all()
    again = experiment.candidate_bank(G, "tiny", 12, seed=3, shard_size=5, directory=tmp_path)
    assert again.meta["shards_computed"] == [] and torch.equal(again.log_sv, vb.log_sv)
    with torch.no_grad():
        G.lin.weight.mul_(2)  # new weights: a new bank, never the stale one
    fresh = experiment.candidate_bank(G, "tiny", 12, seed=3, shard_size=5, directory=tmp_path)
    assert fresh.meta["shards_computed"] == [0, 1, 2]


def test_bank_identity_of_seeded_gaussian_candidates_is_unchanged(tmp_path):
    """Banks built before the latent law became a seam are still found in the cache: the folder
    names below were computed on the code before it (a871d27-era), for the same requests."""
    vb = experiment.candidate_bank(TinyGen(), "tiny", 12, seed=3, directory=tmp_path)
    assert Path(vb.meta["path"]).name == "tiny-5879e8890e67b615"
    assert vb.meta["identity"]["latents"]["law"] == "gaussian"
    assert vb.meta["identity"]["latents"]["seed"] == 3
    proj = experiment.candidate_bank(TinyGen(), "tiny", 12, seed=3, directory=tmp_path,
                                     options=SpectraOptions("projected", proj_dim=2, seed=3))
    assert Path(proj.meta["path"]).name == "tiny-7f82b61436ac3eb4"


def test_sampler_rho0_is_plain_and_exact_uniform_divides_the_law_prior(tmp_path):
    vb = experiment.candidate_bank(TinyGen(), "tiny", 50, seed=0, directory=tmp_path)
    idx0 = experiment.Sampler("plain", seed=1).indices(vb, 50)
    assert sorted(idx0.tolist()) == list(range(50))  # all candidates, each once
    a = experiment.Sampler("exact", rho=1.0, exact_uniform=True, seed=1).indices(vb, 5)
    log_w = sampling.log_weights(vb.log_sv, 1.0, log_prior=sampling.gaussian_log_prior(vb.latents))
    b = sampling.resample(log_w, 5, rng=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_exact_uniform_divides_out_the_prior_of_the_law_the_bank_records(tmp_path):
    """A truncated-normal bank's exact weights divide out the truncated normal's density, not
    the Gaussian's; a bank of given latents has no known prior and says so."""
    from magnet_lab import latent

    law = latent.TruncatedNormalLaw(bound=1.5, scale=0.5)
    G = latent.wrap(TinyGen(), 3, law=law)
    vb = experiment.candidate_bank(G, "tiny-trunc", 30, seed=2, directory=tmp_path)
    recorded = vb.meta["identity"]["latents"]
    assert {k: recorded[k] for k in ("law", "bound", "scale", "seed")} == {
        "law": "truncated_normal", "bound": 1.5, "scale": 0.5, "seed": 2}
    assert float(vb.latents.abs().max()) <= 0.75
    exact = experiment.Sampler("exact", rho=1.0, exact_uniform=True)
    want = sampling.log_weights(vb.log_sv, 1.0, log_prior=law.log_prior(vb.latents))
    torch.testing.assert_close(exact.log_weights(vb), want)
    gaussian = sampling.log_weights(vb.log_sv, 1.0,
                                    log_prior=sampling.gaussian_log_prior(vb.latents))
    assert not torch.allclose(exact.log_weights(vb), gaussian)
    given = experiment.candidate_bank(TinyGen(), "tiny", 30, seed=0, directory=tmp_path,
                                      latents=vb.latents)
    with pytest.raises(ValueError, match="'given'"):
        exact.log_weights(given)
    fresh = experiment.Sampler("fresh", fresh_latents=True, seed=4).latents(vb, 7)  # [7, 3]
    assert fresh.shape == (7, 3) and float(fresh.abs().max()) <= 0.75


def test_sampler_with_replacement_draws_iid_from_the_weighted_law(tmp_path):
    vb = experiment.candidate_bank(TinyGen(), "tiny", 30, seed=0, directory=tmp_path)
    idx = experiment.Sampler("iid", rho=1.0, top_k=2, replace=True, seed=4).indices(vb, 90)
    log_w = sampling.log_weights(vb.log_sv, 1.0, top_k=2)
    assert torch.equal(idx, sampling.resample(log_w, 90, replace=True,
                                              rng=torch.Generator().manual_seed(4)))
    assert idx.unique().numel() < 30  # 90 draws from 30 candidates: repeats are the point
    with pytest.raises(ValueError, match="without replacement"):
        experiment.Sampler("default", rho=1.0, top_k=2, seed=4).indices(vb, 90)


def test_sampler_draws_what_its_specification_says(tmp_path):
    vb = experiment.candidate_bank(TinyGen(), "tiny", 40, seed=0, directory=tmp_path)
    magnet = experiment.Sampler("magnet", rho=1.0, top_k=2, seed=7)
    assert torch.equal(magnet.indices(vb, 10), sampling.resample(
        sampling.log_weights(vb.log_sv, 1.0, top_k=2), 10, rng=torch.Generator().manual_seed(7)))
    assert torch.equal(magnet.latents(vb, 10), vb.latents[magnet.indices(vb, 10)])
    assert magnet.ess_fraction(vb) == pytest.approx(sampling.ess_fraction(
        sampling.log_weights(vb.log_sv, 1.0, top_k=2)))
    exact = experiment.Sampler("exact", rho=1.0, exact_uniform=True, replace=True, seed=7)
    log_w = sampling.log_weights(vb.log_sv, 1.0, log_prior=sampling.gaussian_log_prior(vb.latents))
    torch.testing.assert_close(exact.log_weights(vb), log_w)
    assert torch.equal(exact.indices(vb, 60), sampling.resample(
        log_w, 60, replace=True, rng=torch.Generator().manual_seed(7)))
    mixed = experiment.Sampler("half", rho=2.0, magnet_fraction=0.5, seed=3)
    assert torch.equal(mixed.indices(vb, 12), sampling.mixture_indices(
        sampling.log_weights(vb.log_sv, 2.0), 12, 0.5, rng=torch.Generator().manual_seed(3)))
    fresh = experiment.Sampler("psi=0.7", psi=0.7, fresh_latents=True, seed=2)
    assert torch.equal(fresh.latents(vb, 5), torch.randn(5, 3, generator=torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="fresh latents"):
        fresh.indices(vb, 5)
    assert experiment.Sampler(**exact.as_dict()) == exact and exact.as_dict()["replace"] is True


@pytest.mark.parametrize("kwargs, match", [
    (dict(rho=float("nan")), "rho"), (dict(psi=0.0), "psi"), (dict(psi=float("inf")), "psi"),
    (dict(magnet_fraction=1.2), "magnet_fraction"), (dict(rho=1.0, fresh_latents=True), "fresh"),
    (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"),
])
def test_sampler_rejects_inconsistent_specifications(kwargs, match):
    with pytest.raises(ValueError, match=match):
        experiment.Sampler("bad", **kwargs)
    assert experiment.Sampler("anti-truncation", psi=1.5).psi == 1.5  # as models.truncate allows


def _class_bank(sizes=(30, 20, 10), classes=(0, 3, 7), r=3, seed=0):
    """A labelled bank (a conditional generator's): ``sizes[i]`` candidates of class
    ``classes[i]``, random sorted log σ, Gaussian latents recorded as such."""
    from magnet_lab.bank import VolumeBank

    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    labels = torch.cat([torch.full((k,), c, dtype=torch.int64) for k, c in zip(sizes, classes)])
    log_sv = torch.randn(n, r, generator=g, dtype=torch.float64).sort(1, descending=True).values
    meta = {"identity": {"latents": {"law": "gaussian", "seed": seed}}}
    return VolumeBank(log_sv, torch.randn(n, 2, generator=g), labels=labels, meta=meta)


def test_equal_class_balance_at_rho0_draws_exactly_n_over_k_per_class():
    vb = _class_bank()
    idx = experiment.Sampler("eq", class_balance="equal", seed=2).indices(vb, 30)  # 30 = 3·10
    assert torch.bincount(vb.labels[idx], minlength=8)[[0, 3, 7]].tolist() == [10, 10, 10]
    assert idx.unique().numel() == 30  # without replacement
    assert vb.labels[idx].tolist() == sorted(vb.labels[idx].tolist())  # grouped, sorted classes
    idx = experiment.Sampler("eq", class_balance="equal", seed=2).indices(vb, 29)  # 29 = 3·9 + 2
    assert torch.bincount(vb.labels[idx], minlength=8)[[0, 3, 7]].tolist() == [10, 10, 9]
    only = experiment.Sampler("eq", class_balance="equal", classes=(7, 3)).indices(vb, 20)
    assert torch.bincount(vb.labels[only], minlength=8)[[0, 3, 7]].tolist() == [0, 10, 10]
    with pytest.raises(ValueError, match="class 7: cannot draw 11"):  # class 7 holds 10
        experiment.Sampler("eq", class_balance="equal").indices(vb, 33)
    assert torch.bincount(vb.labels[experiment.Sampler(
        "eq", class_balance="equal", replace=True).indices(vb, 33)], minlength=8)[7] == 11


def test_equal_class_balance_draws_within_class_by_the_normalised_weights():
    """Chi-square over many seeds: within class c, candidate i is drawn with probability
    w_i / Σ_{j in c} w_j (w = vol^ρ), whatever the class sizes."""
    vb = _class_bank(sizes=(6, 4), classes=(1, 2))
    w = sampling.log_weights(vb.log_sv, 1.0, top_k=2).exp().numpy()
    counts = np.zeros(len(vb))
    for seed in range(200):
        s = experiment.Sampler("eq", rho=1.0, top_k=2, class_balance="equal", replace=True,
                               seed=seed)
        counts += np.bincount(s.indices(vb, 40).numpy(), minlength=len(vb))
    for c in (1, 2):
        members = (vb.labels == c).numpy()
        assert counts[members].sum() == 200 * 20
        p = w[members] / w[members].sum()
        assert scipy.stats.chisquare(counts[members], p * 200 * 20).pvalue > 1e-3
    eq = experiment.Sampler("eq", rho=1.0, top_k=2, class_balance="equal")
    mass = torch.zeros(3, dtype=torch.float64).index_add_(0, vb.labels, eq.log_weights(vb).exp())
    torch.testing.assert_close(mass[1:], torch.tensor([0.5, 0.5], dtype=torch.float64))
    ess = eq.class_ess(vb)
    assert set(ess) == {1, 2}
    assert ess[1] == pytest.approx(sampling.ess(torch.tensor(np.log(w[:6]))))
    assert eq.class_ess(vb, fraction=True)[2] == pytest.approx(ess[2] / 4)


def test_mass_class_balance_gives_each_class_its_mass_and_keeps_ratios_within():
    vb = _class_bank()
    s = experiment.Sampler("mass", rho=1.0, class_balance="mass", class_mass=(0.2, 0.3, 0.5),
                           replace=True, seed=5)
    log_w = s.log_weights(vb)
    pooled = sampling.log_weights(vb.log_sv, 1.0)
    mass = torch.zeros(8, dtype=torch.float64).index_add_(0, vb.labels, log_w.exp())[[0, 3, 7]]
    torch.testing.assert_close(mass, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    for c in (0, 3, 7):
        diff = (log_w - pooled)[vb.labels == c]
        torch.testing.assert_close(diff, diff[:1].expand_as(diff))  # ratios kept within class
    counts = torch.bincount(vb.labels[s.indices(vb, 6000)], minlength=8)[[0, 3, 7]].numpy()
    assert scipy.stats.chisquare(counts, np.array([0.2, 0.3, 0.5]) * 6000).pvalue > 1e-3
    shares = experiment.Sampler("mass", rho=1.0, class_balance="mass").log_weights(vb)
    mass = torch.zeros(8, dtype=torch.float64).index_add_(0, vb.labels, shares.exp())[[0, 3, 7]]
    torch.testing.assert_close(mass, torch.tensor([0.5, 1 / 3, 1 / 6], dtype=torch.float64))


def test_classes_restrict_the_pooled_draw_and_its_weights():
    vb = _class_bank()
    s = experiment.Sampler("two", rho=1.0, classes=(3, 7), seed=1)
    log_w = s.log_weights(vb)
    keep = vb.labels != 0
    assert bool((log_w[~keep] == -math.inf).all())
    torch.testing.assert_close(log_w[keep], sampling.log_weights(vb.log_sv[keep], 1.0))
    idx = s.indices(vb, 25)
    assert set(vb.labels[idx].tolist()) <= {3, 7} and idx.unique().numel() == 25
    assert s.ess_fraction(vb) == pytest.approx(sampling.ess_fraction(log_w[keep]))
    z, labels = s.inputs(vb, 25)
    assert torch.equal(z, vb.latents[idx]) and torch.equal(labels, vb.labels[idx])
    half = experiment.Sampler("half", rho=1.0, classes=(3,), magnet_fraction=0.5, seed=1)
    drawn = half.drawn_log_weights(vb)
    torch.testing.assert_close(drawn.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    assert bool((drawn[vb.labels != 3] == -math.inf).all())
    assert set(vb.labels[half.indices(vb, 12)].tolist()) == {3}


def test_equal_mixture_law_is_per_class_and_each_class_has_mass_one_over_k():
    vb = _class_bank()
    s = experiment.Sampler("eq", rho=1.0, class_balance="equal", magnet_fraction=0.5)
    drawn = s.drawn_log_weights(vb).exp()
    for c, n_c in ((0, 30), (3, 20), (7, 10)):
        sel = vb.labels == c
        w_c = sampling.log_weights(vb.log_sv[sel], 1.0).exp()  # within-class law
        torch.testing.assert_close(drawn[sel], (0.5 * w_c + 0.5 / n_c) / 3)
    assert torch.bincount(vb.labels[s.indices(vb, 12)], minlength=8)[[0, 3, 7]].tolist() == [4, 4, 4]


def test_pooled_sampler_is_unchanged_and_class_options_round_trip():
    vb = _class_bank()
    plain = experiment.Sampler("magnet", rho=1.0, seed=3)
    assert torch.equal(plain.indices(vb, 10), sampling.resample(
        sampling.log_weights(vb.log_sv, 1.0), 10, rng=torch.Generator().manual_seed(3)))
    assert set(plain.as_dict()) == {"name", "rho", "top_k", "exact_uniform", "psi", "replace",
                                    "magnet_fraction", "fresh_latents", "seed"}
    s = experiment.Sampler("m", class_balance="mass", classes=(7, 0), class_mass=(1, 3))
    assert s.as_dict()["classes"] == [7, 0] and experiment.Sampler(**s.as_dict()) == s
    fresh = experiment.Sampler("fresh", fresh_latents=True, class_balance="equal", seed=4)
    z, labels = fresh.inputs(vb, 7)
    assert torch.equal(z, torch.randn(7, 2, generator=torch.Generator().manual_seed(4)))
    assert labels.tolist() == [0, 0, 0, 3, 3, 7, 7]


@pytest.mark.parametrize("kwargs, match", [
    (dict(class_balance="per-class"), "class_balance"), (dict(classes=(1, 1)), "distinct"),
    (dict(classes=()), "classes"), (dict(classes=(-1,)), "classes"),
    (dict(class_mass=(1.0,)), "class_balance='mass' only"),
    (dict(class_balance="mass", class_mass=(1.0, -1.0)), "non-negative"),
    (dict(class_balance="mass", classes=(0, 1), class_mass=(1.0,)), "one mass per"),
    (dict(class_balance="mass", magnet_fraction=0.5), "magnet_fraction"),
])
def test_sampler_rejects_inconsistent_class_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        experiment.Sampler("bad", **kwargs)


def test_class_options_need_a_labelled_bank_with_those_classes():
    vb = _class_bank()
    unlabelled = type(vb)(vb.log_sv, vb.latents, meta=vb.meta)  # an unconditional bank
    with pytest.raises(ValueError, match="no labels"):
        experiment.Sampler("eq", class_balance="equal").indices(unlabelled, 3)
    with pytest.raises(ValueError, match="no labels"):
        experiment.Sampler("fresh", fresh_latents=True, classes=(1,)).inputs(unlabelled, 3)
    with pytest.raises(ValueError, match=r"classes \[5\] have no candidate"):
        experiment.Sampler("eq", classes=(3, 5)).indices(vb, 3)
    with pytest.raises(ValueError, match="one mass per class"):
        experiment.Sampler("m", class_balance="mass", class_mass=(1, 1)).indices(vb, 3)


class TinyCondGen(nn.Module):
    """z [B, 3], c [B, 4] one-hot -> [B, 1, 2, 2]: the class adds its own offset image."""

    def __init__(self) -> None:
        super().__init__()
        self.z_dim, self.c_dim = 3, 4
        self.lin = nn.Linear(3, 4, bias=False, dtype=torch.float64)
        self.offsets = nn.Linear(4, 4, bias=False, dtype=torch.float64)

    def forward(self, z, c):
        return (0.1 * self.lin(z) + self.offsets(c)).view(-1, 1, 2, 2)


def test_generate_passes_each_latents_class_to_a_conditional_generator():
    G = TinyCondGen()
    z = torch.randn(5, 3, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 3, 2])
    want = G(z, torch.nn.functional.one_hot(labels, 4).double()).clamp(-1, 1).float()
    torch.testing.assert_close(models.generate(G, z, labels=labels, batch_size=2), want)
    psi = models.generate(G, z, labels=labels, psi=0.5)  # a plain z-space G: ψ·z
    torch.testing.assert_close(psi, G(0.5 * z, torch.nn.functional.one_hot(labels, 4).double())
                               .clamp(-1, 1).float())
    with pytest.raises(ValueError, match="class-conditional"):
        models.generate(G, z)
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        models.generate(G, z, labels=torch.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match="rows of z"):
        models.generate(G, z, labels=labels[:3])
    with pytest.raises(ValueError, match="unconditional"):
        models.generate(TinyGen(), z, labels=labels)
    vb = _class_bank(sizes=(5, 5), classes=(1, 3))
    vb.latents = torch.randn(10, 3)
    s = experiment.Sampler("eq", class_balance="equal", seed=1)
    z, labels = s.inputs(vb, 4)
    torch.testing.assert_close(s.images(G, vb, 4), models.generate(G, z, labels=labels))


def test_generate_on_a_conditional_stylegan2_passes_one_hot_classes_and_truncates_in_w():
    from builders import conditional_stylegan2

    G = conditional_stylegan2(c_dim=3)
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([2, 0, 1, 2])
    c = torch.nn.functional.one_hot(labels, 3).float()
    torch.testing.assert_close(models.generate(G, z, labels=labels), G(z, c).clamp(-1, 1))
    torch.testing.assert_close(models.generate(G, z, labels=labels, psi=0.5),
                               G(z, c, psi=0.5).clamp(-1, 1))
    other = models.generate(G, z, labels=(labels + 1) % 3)
    assert (other - models.generate(G, z, labels=labels)).abs().max() > 1e-3  # the class matters
    with pytest.raises(ValueError, match="class-conditional"):
        models.generate(G, z, psi=0.5)


def test_kl_to_uniform_and_ratio_closed_forms():
    assert attributes.kl_to_uniform(torch.full((4,), 0.25)) == pytest.approx(0, abs=1e-15)
    assert attributes.kl_to_uniform(torch.tensor([1.0, 0, 0, 0])) == pytest.approx(math.log(4))
    p = torch.tensor([0.5, 0.25, 0.25])
    assert attributes.kl_to_uniform(p) == pytest.approx(math.log(3) + 0.5 * math.log(0.5)
                                                        + 0.5 * math.log(0.25))
    assert attributes.max_min_ratio(p) == 2 and attributes.max_min_ratio(torch.tensor([1.0, 0])) == math.inf
    with pytest.raises(ValueError, match="probability"):
        attributes.kl_to_uniform(torch.tensor([0.5, 0.6]))


def test_bias_measures_cis_bracket_the_estimate_and_are_seeded():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    a = attributes.bias_measures(labels, 3, n_boot=200, seed=0)
    b = attributes.bias_measures(labels, 3, n_boot=200, seed=0)
    assert a["class_freq"][0]["value"] == pytest.approx(0.6) and a == b
    for entry in [a["kl_to_uniform"], a["max_min_ratio"], *a["class_freq"]]:
        assert entry["lo"] <= entry["value"] <= entry["hi"]
    assert a["max_min_ratio"]["value"] == pytest.approx(6.0)
    with pytest.raises(ValueError, match="0..2"):
        attributes.class_distribution(torch.tensor([0, 3]), 3)


def test_predict_classes_is_argmax_of_logits():
    clf = nn.Linear(4, 3, bias=False)
    x = torch.randn(7, 1, 2, 2)
    clf_img = nn.Sequential(nn.Flatten(), clf)
    assert torch.equal(attributes.predict_classes(clf_img, x, batch_size=3),
                       clf(x.flatten(1)).argmax(1))


def test_polarity_explorer_builds_a_widget_and_redraws(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    vb = experiment.candidate_bank(TinyGen(), "tiny", 40, seed=0, directory=tmp_path)
    box = widgets.polarity_explorer(TinyGen(), vb, n=8)
    rho, psi, _ = box.children[0].children[0].children
    before = widgets.element(box, "grid").value
    rho.value = 1.5  # triggers a redraw through the observer; must not raise
    assert rho.description == "ρ" and psi.description == "ψ"
    assert widgets.element(box, "grid").value != before
    # no classifier for a one-channel generator: no histogram, and the explorer says why
    assert "no attribute histogram" in widgets.element(box, "notes").value
    monkeypatch.setenv("MAGNET_LAB_HEADLESS", "1")
    assert widgets.headless()


def test_candidate_bank_with_progress_is_the_same_bank(tmp_path, monkeypatch):
    monkeypatch.setenv("MAGNET_LAB_PROGRESS", "1")
    shown = experiment.candidate_bank(TinyGen(), "tiny", 40, seed=0, shard_size=16,
                                      directory=tmp_path / "a", progress=True)
    plain = experiment.candidate_bank(TinyGen(), "tiny", 40, seed=0, shard_size=16,
                                      directory=tmp_path / "b")
    assert torch.equal(shown.log_sv, plain.log_sv) and torch.equal(shown.latents, plain.latents)
    assert shown.meta["identity"] == plain.meta["identity"]
    assert len(list(Path(shown.meta["path"]).glob("shard-*.safetensors"))) == 3


def test_kind_of_a_generator_is_decided_once_from_one_image():
    class RGB(nn.Module):
        z_dim = 2

        def forward(self, z):
            return z[:, :1, None, None].expand(-1, 3, 4, 4).tanh()

    assert attributes.kind_of(TinyGen()) == "class"  # one channel
    assert attributes.kind_of(RGB()) == "face"
    assert attributes.kind_of(RGB(), "class") == "class"  # asked for: no image needed
    with pytest.raises(ValueError, match="attributes must be"):
        attributes.kind_of(RGB(), "hair")
