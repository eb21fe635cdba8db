"""The notebooks' shared pipeline: truncation, generation, cached banks, attributes, widgets."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
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
