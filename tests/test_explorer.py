"""The explorer's computations without a browser: draws, their health, histograms, the P–R plane,
and the widget's save button."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from magnet_lab import bank, experiment, explorer, sampling, widgets


class PatchGen(nn.Module):
    """z [B, 4] -> a 1×4×4 'image' whose brightness is z's first coordinate (cheap, seeded)."""

    z_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 16)
        with torch.no_grad():
            self.lin.weight.zero_()
            self.lin.weight[:, 0] = 0.5
            self.lin.bias.zero_()

    def forward(self, z):
        return torch.tanh(self.lin(z)).view(-1, 1, 4, 4)


class BrightnessClassifier(nn.Module):
    """Two classes: dark (mean < 0) and bright; ``features`` is the image mean and spread."""

    sidecar = {"class_names": ["dark", "bright"]}

    def features(self, x):
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3))], 1)

    def forward(self, x):
        m = x.mean((1, 2, 3))
        return torch.stack([-m, m], 1)


def knobs(**fields) -> experiment.Sampler:
    """One explorer state: the explorer draws through ``experiment.Sampler``, like every caller."""
    return experiment.Sampler("explorer", **fields)


def _bank(n: int = 400, spread: float = 1.0) -> bank.VolumeBank:
    """A bank whose log-volume grows with the latents' first coordinate (bright = big volume)."""
    z = sampling.gaussian_latents(n, 4, seed=0)  # [n, 4]
    base = torch.linspace(0, -3, 6, dtype=torch.float64)  # [6] descending
    log_sv = base + spread * z[:, :1].double()  # [n, 6], rows still descending
    return bank.VolumeBank(log_sv=log_sv, latents=z, meta={"generator_id": "patch", "path": "/x"})


def test_draw_is_seeded_and_rho0_is_healthy_with_ess_equal_to_n():
    vb = _bank()
    a = explorer.draw(vb, knobs(rho=0.0, seed=3), 32)
    assert torch.equal(a.indices, explorer.draw(vb, knobs(rho=0.0, seed=3), 32).indices)
    assert a.ess == pytest.approx(len(vb)) and a.health == "ok" and a.n_distinct == 32
    assert "ESS/N = 1.00e+00" in a.readout() and "LOW" not in a.readout()


def test_draw_ess_is_the_sampling_ess_of_the_polarity_weights():
    vb = _bank()
    d = explorer.draw(vb, knobs(rho=2.0, top_k=3), 16)
    log_w = sampling.log_weights(vb.log_sv, 2.0, 3)
    assert d.ess == pytest.approx(sampling.ess(log_w), rel=1e-12)
    assert d.ess_fraction == pytest.approx(sampling.ess_fraction(log_w), rel=1e-12)


def test_health_flags_low_below_the_library_threshold_and_thin_below_the_draw_size():
    assert explorer.health(0.5 * sampling.LOW_ESS_FRACTION * 1000, 1000, 1) == "low"
    assert explorer.health(10.0, 1000, 32) == "thin"
    assert explorer.health(64.0, 1000, 32) == "ok"


def test_extreme_rho_is_flagged_low_and_the_warning_is_not_raised_but_shown():
    vb = _bank(n=3000, spread=25.0)  # ESS ≈ 1 < 1e-3 · N: the weights sit on one candidate
    with warnings.catch_warnings():
        warnings.simplefilter("error", sampling.LowESSWarning)
        d = explorer.draw(vb, knobs(rho=3.0, replace=True), 32)
    assert d.health == "low" and "LOW ESS" in d.readout()
    assert d.n_distinct < 4  # with replacement the collapse shows as repeats


def test_mixture_ess_grows_with_the_plain_share():
    vb = _bank(spread=3.0)
    ess = [explorer.draw(vb, knobs(rho=2.0, magnet_fraction=f), 16).ess
           for f in (1.0, 0.5, 0.0)]
    assert ess[0] < ess[1] < ess[2] == pytest.approx(len(vb))
    # the mixture law: f·w + (1 − f)/N, normalised
    log_w = knobs(rho=2.0, magnet_fraction=0.5).drawn_log_weights(vb)
    w = sampling.log_weights(vb.log_sv, 2.0).exp()
    assert torch.allclose(log_w.exp(), 0.5 * w + 0.5 / len(vb))


def test_draw_without_replacement_is_capped_at_the_candidates():
    vb = _bank(n=20)
    assert explorer.draw(vb, knobs(), 64).indices.numel() == 20


def test_attribute_histogram_moves_towards_the_favoured_class_and_reuses_plain():
    G, C, vb = PatchGen(), BrightnessClassifier(), _bank(spread=2.0)
    h = explorer.attribute_histogram(G, vb, knobs(rho=2.0), 128, classifier=C)
    ours, plain = h["sample"]["attributes"]["class"], h["plain"]["attributes"]["class"]
    assert ours["classes"] == ["dark", "bright"] and h["sample"]["kind"] == "class"
    assert float(ours["freq"].sum()) == pytest.approx(1) and float(plain["freq"].sum()) == pytest.approx(1)
    assert ours["freq"][1] > plain["freq"][1] + 0.2  # big volume = bright: ρ > 0 favours it
    again = explorer.attribute_histogram(G, vb, knobs(rho=-2.0), 128, classifier=C,
                                         plain=h["plain"])
    assert again["plain"] is h["plain"] and again["sample"]["attributes"]["class"]["freq"][1] < plain["freq"][1]


def test_health_and_histogram_tables_record_the_draws_as_notebook_00_does():
    G, C, vb = PatchGen(), BrightnessClassifier(), _bank(spread=2.0)
    draws = explorer.draws_by_rho(vb, [-1, 0.0, 2.0], 16, top_k=3, seed=5)
    assert list(draws) == [-1.0, 0.0, 2.0]
    assert torch.equal(draws[2.0].indices, knobs(rho=2.0, top_k=3, seed=5).indices(vb, 16))
    table = explorer.health_table(draws)
    assert list(table) == ["-1", "0", "2"] and table["2"]["indices"] == draws[2.0].indices.tolist()
    assert table["0"]["ess_fraction"] == pytest.approx(1) and table["0"]["health"] == "ok"
    assert explorer.readout_table(draws)[0.0] == draws[0.0].readout()
    h = explorer.attribute_histogram(G, vb, knobs(rho=2.0), 64, classifier=C)
    rec = explorer.histogram_table(h, rho=2.0)
    assert rec["rho"] == 2.0 and rec["n"] == 64
    assert rec["attributes"]["class"]["sample"] == h["sample"]["attributes"]["class"]["freq"].tolist()
    assert rec["attributes"]["class"]["plain"] == h["plain"]["attributes"]["class"]["freq"].tolist()


def test_pr_frontier_reads_notebook03_results_and_is_none_without_them(tmp_path):
    assert explorer.pr_frontier(None) is None and explorer.pr_frontier(tmp_path / "no.json") is None
    pr = {"precision": {"value": 0.8}, "recall": {"value": 0.3}}
    res = {"seed": 0, "parameters": {"n_samples": 2000}, "samplers": {
        "rho=1": {"metrics": pr, "sampler": {"rho": 1.0, "psi": 1.0}},
        "rho=-1": {"metrics": pr, "sampler": {"rho": -1.0, "psi": 1.0}},
        "magnet_exact": {"metrics": pr, "sampler": {"rho": 1.0, "exact_uniform": True}},
        "psi=0.7": {"metrics": pr, "sampler": {"psi": 0.7, "fresh_latents": True}}}}
    (tmp_path / "03.json").write_text(json.dumps(res))
    f = explorer.pr_frontier(tmp_path / "03.json")
    assert f["rho"] == [(-1.0, 0.3, 0.8), (1.0, 0.3, 0.8)] and f["psi"] == [(0.7, 0.3, 0.8)]
    assert f["n_samples"] == 2000
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="notebook 03"):
        explorer.pr_frontier(tmp_path / "bad.json")
    # an RGB generator's 03 run without real_images: metrics skipped, no points to draw
    res["samplers"] = {n: {**ev, "metrics": {"skipped": "no real_images given"}}
                       for n, ev in res["samplers"].items()}
    (tmp_path / "03-rgb.json").write_text(json.dumps(res))
    assert explorer.pr_frontier(tmp_path / "03-rgb.json") is None


def test_pr_point_of_the_reference_itself_has_full_precision_and_recall():
    C = BrightnessClassifier()
    images = PatchGen()(sampling.gaussian_latents(64, 4, seed=1)).detach()
    real = C.features(images).double()
    pr = explorer.pr_point(C, images, real)
    assert pr["precision"] == pytest.approx(1) and pr["recall"] == pytest.approx(1)


def test_knobs_stem_names_every_knob_and_the_seed_last():
    stem = explorer.stem(knobs(rho=-1.5, psi=0.7, top_k=None, magnet_fraction=0.25,
                               replace=True, seed=7))
    assert stem == "rho-1.5_psi0.7_kall_f25_rep_seed0007"


def test_explorer_save_button_writes_png_pdf_and_a_sidecar_with_knobs_and_bank(tmp_path,
                                                                               monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("MAGNET_LAB_FIGURES_DIR", str(tmp_path))
    box = widgets.polarity_explorer(PatchGen(), _bank(), n=8, n_hist=32, seed=2,
                                    classifier=BrightnessClassifier(), generator_id="patch")
    parts = {c: widgets.element(box, c) for c in ("rho", "ess", "hist", "save", "status", "pr")}
    hist_before, ess_before = parts["hist"].value, parts["ess"].value
    parts["rho"].value = 2.0
    assert parts["hist"].value != hist_before and parts["ess"].value != ess_before
    assert parts["pr"].layout.display == "none"  # no notebook-03 numbers: no empty plane
    parts["save"].click()
    files = sorted(p.name for p in tmp_path.iterdir())
    stem = "00_explore_patch_rho2_psi1_k6_f100_norep_seed0002"
    assert files == [f"{stem}.json", f"{stem}.pdf", f"{stem}.png"]
    side = json.loads((tmp_path / f"{stem}.json").read_text())["parameters"]
    assert side["generator"] == "patch" and side["bank_path"] == "/x" and side["rho"] == 2.0
    assert side["seed"] == 2 and len(side["indices"]) == 8 and side["health"] in explorer.HEALTH
    assert parts["status"].value.startswith("saved ")


def test_figure_name_uses_the_checkpoint_stem_and_only_file_safe_characters():
    name = explorer.figure_name("/w/stylegan2 ffhq(1).pkl", knobs(rho=-0.5, seed=3))
    assert name == "00_explore_stylegan2_ffhq_1__rho-0.5_psi1_kall_f100_norep_seed0003"


def test_hist_size_keeps_face_redraws_short_and_refuses_unknown_kinds():
    assert explorer.hist_size("class") == 512 and explorer.hist_size("face") == 64
    with pytest.raises(ValueError, match="unknown attribute kind"):
        explorer.hist_size("colour")


# ----------------------------------------------------------------------------- conditional

class ClassPatchGen(nn.Module):
    """A conditional generator: z [B, 4], c [B, 2] one-hot -> 1×4×4; class 0 is dark, class 1
    bright (the class sets the brightness, z only nudges it)."""

    z_dim, c_dim = 4, 2

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 16, bias=False)
        with torch.no_grad():
            self.lin.weight.zero_()
            self.lin.weight[:, 0] = 0.05

    def forward(self, z, c):
        return torch.tanh(self.lin(z) + (c[:, 1:] - c[:, :1])).view(-1, 1, 4, 4)


def _class_bank(n: int = 300) -> bank.VolumeBank:
    """``_bank`` with class labels 0/1 (two thirds class 0)."""
    vb = _bank(n)
    vb.labels = (torch.arange(n) % 3 == 0).long()  # [n]: class 1 every third candidate
    return vb


def test_a_conditional_banks_draws_carry_their_classes_and_per_class_health():
    vb = _class_bank()
    only = explorer.draw(vb, knobs(rho=1.0, classes=(1,), seed=2), 16)
    assert set(only.labels.tolist()) == {1} and torch.equal(only.labels, vb.labels[only.indices])
    members = vb.labels == 1
    log_w = sampling.log_weights(vb.log_sv[members], 1.0)
    assert only.ess == pytest.approx(sampling.ess(log_w), rel=1e-12)
    assert only.ess_fraction == pytest.approx(sampling.ess(log_w) / int(members.sum()), rel=1e-12)
    assert explorer.draw(vb, knobs(classes=(1,)), 500).indices.numel() == 100  # capped at M
    equal = explorer.draws_by_rho(vb, [0.0, 1.0], 10, class_balance="equal")
    assert all(torch.bincount(d.labels).tolist() == [5, 5] for d in equal.values())
    table = explorer.health_table(equal)
    assert table["1"]["labels"] == equal[1.0].labels.tolist()
    with pytest.raises(ValueError, match="no labels"):
        explorer.draw(_bank(), knobs(classes=(1,)), 4)


def test_attribute_histogram_of_a_conditional_generator_uses_the_drawn_classes():
    G, C, vb = ClassPatchGen(), BrightnessClassifier(), _class_bank()
    h = explorer.attribute_histogram(G, vb, knobs(rho=1.0, classes=(1,)), 32, classifier=C)
    assert h["sample"]["attributes"]["class"]["freq"].tolist() == [0.0, 1.0]  # all bright
    assert h["plain"]["attributes"]["class"]["freq"].tolist() == [0.0, 1.0]  # same classes
    pooled = explorer.attribute_histogram(G, vb, knobs(), 300, classifier=C)
    assert pooled["sample"]["attributes"]["class"]["freq"][1] == pytest.approx(1 / 3)
    assert explorer.stem(knobs(classes=(1, 0), class_balance="equal", seed=1)) == \
        "rho0_psi1_kall_f100_norep_c1-0_equal_seed0001"


def test_explorer_widget_on_a_conditional_bank_has_a_class_selector_that_redraws(tmp_path,
                                                                                 monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("MAGNET_LAB_FIGURES_DIR", str(tmp_path))
    box = widgets.polarity_explorer(ClassPatchGen(), _class_bank(), n=8, n_hist=32, seed=2,
                                    classifier=BrightnessClassifier(), generator_id="cpatch")
    pick, balance, grid = (widgets.element(box, c) for c in ("class", "balance", "grid"))
    assert [v for _, v in pick.options] == [None, 0, 1]
    before = grid.value
    pick.value = 1
    assert grid.value != before
    balance.value = "equal"
    widgets.element(box, "save").click()
    (sidecar,) = [p for p in tmp_path.iterdir() if p.suffix == ".json"]
    side = json.loads(sidecar.read_text())["parameters"]
    assert side["classes"] == [1] and side["class_balance"] == "equal"
    assert side["labels"] == [1] * 8 and "_c1_equal_" in sidecar.name
    assert widgets.element(widgets.polarity_explorer(
        PatchGen(), _bank(), n=4, n_hist=8, classifier=BrightnessClassifier()), "class") is None
    with pytest.raises(ValueError, match="labels"):
        widgets.polarity_explorer(PatchGen(), _bank(), n=4, classes=(1,))


def test_the_explorer_runs_on_a_stylegan3_bank(tmp_path, monkeypatch):
    """A StyleGAN3 snapshot (tiny, official layout) through load_generator, banked by the
    authors' estimator: draws and their health, the attribute histogram at ψ < 1 (truncation in
    w, by StyleGAN3's own truncate) and the widget, whose ψ slider changes the grid and whose
    save button names the pickle."""
    import matplotlib

    import magnet_lab
    from magnet_lab import models, spectra
    from builders import stylegan3_snapshot

    matplotlib.use("Agg")
    monkeypatch.setenv("MAGNET_LAB_FIGURES_DIR", str(tmp_path / "figures"))
    path, _ = stylegan3_snapshot(tmp_path / "stylegan3-t-tiny.pkl")
    G = magnet_lab.load_generator(path)
    vb = experiment.candidate_bank(G, str(path), 24, seed=0, directory=tmp_path / "banks",
                                   options=spectra.SpectraOptions("projected", proj_dim=16))
    top_k = sampling.all_top_k(vb.log_sv)
    assert top_k == G.z_dim - 1  # z is normalised: J z = 0, the last σ is 0 at every latent
    table = explorer.health_table(explorer.draws_by_rho(vb, [-1.0, 0.0, 1.0], 8, top_k=top_k))
    assert table["0"]["ess_fraction"] == pytest.approx(1) and table["1"]["ess_fraction"] < 1
    C = BrightnessClassifier()
    h = explorer.attribute_histogram(G, vb, knobs(rho=1.0, psi=0.7, top_k=top_k), 12,
                                     classifier=C, kind="class")
    idx = h["draw"].indices
    w = G.mapping(vb.latents[idx], None, 0.7, None)  # [12, num_ws, w_dim], towards w_avg
    assert torch.allclose(h["sample"]["images"], G(w).clamp(-1, 1), atol=1e-6)
    assert not torch.allclose(h["sample"]["images"], models.generate(G, vb.latents[idx]))
    box = widgets.polarity_explorer(G, vb, n=8, n_hist=12, classifier=C, attributes="class",
                                    top_k=top_k, generator_id=str(path))
    parts = {c: widgets.element(box, c) for c in ("psi", "grid", "save")}
    grid = parts["grid"].value
    parts["psi"].value = 0.5
    assert parts["grid"].value != grid
    parts["save"].click()
    saved = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert saved[0].startswith("00_explore_stylegan3-t-tiny_rho0_psi0.5_k7") and len(saved) == 3
