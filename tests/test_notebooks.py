"""Every notebook, run by papermill in smoke mode, with assertions on its results JSON.

Each run is a real execution of the notebook's code on a fresh kernel; the asserted numbers are
what the notebook computed (fixed seeds), compared with what the theory says they must be.
"""
from __future__ import annotations

import ast
import json
import math
import os
from pathlib import Path

import torch

import pytest

from magnet_lab import reports

pytestmark = pytest.mark.notebook

MAX_CELL_LINES = 15
LOOPS = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp,
         ast.GeneratorExp)
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def _code_lines(source: str) -> int:
    """Lines of a cell that hold code: not blank, not only a comment."""
    return sum(1 for line in source.splitlines()
               if line.strip() and not line.strip().startswith("#"))


def _is_plotting(tree: ast.AST) -> bool:
    """A plotting cell draws a figure: it calls matplotlib (``plt.*``), seaborn (``sns.*``) or
    ``plots.*`` (magnet_lab's figure helpers, ``save_figure`` included)."""
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
               and isinstance(node.func.value, ast.Name)
               and node.func.value.id in ("plt", "sns", "plots")
               for node in ast.walk(tree))


def _writes_results(tree: ast.AST) -> bool:
    """Whether a cell stores anything in ``results`` (``results[...] = ...``, ``.update``)."""
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, ast.Subscript) and getattr(sub.value, "id", None) == "results":
                    return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and getattr(node.func.value, "id", None) == "results"):
            return True
    return False


def _notebook_problems(path: Path) -> list[str]:
    """What makes a notebook more than calls into the package plus plots: a code cell over
    ``MAX_CELL_LINES`` code lines, a function, class or lambda, a loop or comprehension outside
    a plotting cell, a plotting cell that computes results, or a parameters cell that is more
    than assignments of literals."""
    import nbformat

    problems = []
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        tree = ast.parse(cell.source)
        where = f"{path.name} code cell {i}"
        if "parameters" in cell.metadata.get("tags", []):
            for stmt in tree.body:
                try:
                    assert isinstance(stmt, ast.Assign)
                    ast.literal_eval(stmt.value)
                except (AssertionError, ValueError):
                    problems.append(f"{where}: the parameters cell holds more than literal "
                                    f"assignments: {ast.unparse(stmt)[:60]!r}")
            continue
        if _code_lines(cell.source) > MAX_CELL_LINES:
            problems.append(f"{where}: {_code_lines(cell.source)} code lines > {MAX_CELL_LINES}")
        if any(isinstance(n, DEFINITIONS) for n in ast.walk(tree)):
            problems.append(f"{where}: defines a function, class or lambda")
        plotting = _is_plotting(tree)
        if not plotting and any(isinstance(n, LOOPS) for n in ast.walk(tree)):
            problems.append(f"{where}: a loop or comprehension outside a plotting cell")
        if plotting and _writes_results(tree):
            problems.append(f"{where}: a plotting cell that computes results")
    return problems


def test_notebooks_are_calls_into_the_package_plus_plots():
    books = reports.notebooks()
    assert [b.stem[:2] for b in books] == ["00", "01", "02", "03", "04", "05"]
    problems = [p for book in books for p in _notebook_problems(book)]
    assert not problems, "\n".join(problems)


def test_the_thinness_rule_catches_loops_long_cells_and_definitions(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("seed = 0\nn = len([1])")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x = [i for i in range(3)]"),
                nbformat.v4.new_code_cell("\n".join(f"a{i} = {i}" for i in range(16))),
                nbformat.v4.new_code_cell("f = lambda v: v"),
                nbformat.v4.new_code_cell("for i in range(2):\n    plt.plot([i])\n"
                                          "results['x'] = 1"),
                nbformat.v4.new_code_cell("for i in range(2):\n    plt.plot([i])  # fine")]
    path = tmp_path / "99_bad.ipynb"
    nbformat.write(nb, path)
    problems = "\n".join(_notebook_problems(path))
    for expected in ("parameters cell", "cell 1: a loop", "cell 2: 16 code lines",
                     "cell 3: defines", "cell 4: a plotting cell that computes results"):
        assert expected in problems, (expected, problems)
    assert "cell 5" not in problems


@pytest.fixture(scope="module")
def nb00(output_dirs):
    return reports.run_notebook("00", {"smoke": True, "seed": 0,
                                       "pr_results": str(output_dirs / "no-03-results.json")},
                                out_dir=output_dirs / "reports")


def test_nb00_readout_matches_the_bank_weights_and_flags_extreme_rho(nb00):
    from magnet_lab import bank, sampling

    p = nb00["parameters"]
    vb = bank.VolumeBank.load(nb00["bank"]["path"])
    assert len(vb) == nb00["bank"]["n"] == p["n_candidates"] == 200 and nb00["attributes"] == "class"
    top_k = nb00["bank"]["top_k"]
    for rho, h in nb00["health"].items():
        log_w = sampling.log_weights(vb.log_sv, float(rho), top_k)
        assert h["ess_fraction"] == pytest.approx(sampling.ess_fraction(log_w), rel=1e-9), rho
        assert h["n_distinct"] == len(set(h["indices"])) == p["n_grid"]  # without replacement
    assert nb00["health"]["0"]["health"] == "ok" and nb00["health"]["0"]["ess_fraction"] == pytest.approx(1)
    assert nb00["health"]["-3"]["health"] != "ok" and nb00["health"]["3"]["health"] != "ok"
    assert nb00["pr_plane"] is False  # no notebook-03 results at that path: said, not faked


def test_nb00_histogram_of_extreme_rho_differs_from_plain(nb00):
    hist = nb00["histogram"]["attributes"]["class"]
    assert len(hist["classes"]) == 10
    assert sum(hist["sample"]) == pytest.approx(1) and sum(hist["plain"]) == pytest.approx(1)
    # ρ = −3 concentrates on the modes: its most frequent class is more frequent than plain's
    assert max(hist["sample"]) > max(hist["plain"])


def test_nb00_opens_on_the_embedded_stylegan2_with_the_projected_estimator(output_dirs):
    """Any generator load_generator accepts: the StyleGAN2, banked by the authors' estimator;
    top-k stops before its structural zero singular value (J z = 0)."""
    from magnet_lab import bank, sampling

    res = reports.run_notebook("00", {"smoke": True, "seed": 0, "generator": "fmnist-stylegan2",
                                      "method": "projected", "top_k": None,
                                      "pr_results": str(output_dirs / "no-03-results.json")},
                               out_dir=output_dirs / "reports-sg2")
    vb = bank.VolumeBank.load(res["bank"]["path"])
    assert vb.meta["generator_id"] == "fmnist-stylegan2"
    assert vb.meta["identity"]["method"] == "projected" and len(vb) == 200
    assert res["bank"]["top_k"] == sampling.all_top_k(vb.log_sv) < vb.rank
    assert res["health"]["0"]["health"] == "ok" and res["attributes"] == "class"
    assert res["n_hist"] == 128  # smoke's size, recorded


@pytest.fixture(scope="module")
def nb01(output_dirs):
    return reports.run_notebook("01", {"smoke": True, "seed": 0}, out_dir=output_dirs / "reports")


def test_nb01_records_seed_parameters_and_provenance(nb01, output_dirs):
    assert nb01["seed"] == 0 and nb01["parameters"]["smoke"] is True
    assert nb01["provenance"]["versions"]["torch"].startswith("2.14.1")
    for stem in ("01_toy_curve", "01_density_check", "01_uniformity", "01_rho_sweep"):
        for ext in ("png", "pdf", "json"):
            assert (output_dirs / "figures" / f"{stem}.{ext}").stat().st_size > 0
        side = json.loads((output_dirs / "figures" / f"{stem}.json").read_text())
        assert side["parameters"]["seed"] == 0


def test_nb01_affine_map_from_pattern_equals_autograd_jacobian(nb01):
    for net, check in nb01["affine"].items():
        assert check["max_abs_A_minus_J"] <= 1e-10, net
        assert check["max_abs_b_error"] <= 1e-10, net
        assert check["max_abs_halflogdet_minus_sum_log_sv"] <= 1e-10, net


def test_nb01_analytic_density_matches_monte_carlo(nb01):
    dens = nb01["density"]
    assert abs(dens["integral_of_analytic_density"] - 1) < 5e-3
    assert dens["chi2_p"] > 1e-3
    assert dens["max_abs_z_score"] < 5


def test_nb01_magnet_is_uniform_on_the_manifold_and_plain_is_not(nb01):
    curve, surface = nb01["uniformity"]["curve"], nb01["uniformity"]["surface"]
    assert curve["plain"]["ks_p"] < 1e-6  # the training bias is reproduced
    assert curve["magnet_exact_box"]["ks_p"] > 0.01
    assert curve["magnet_exact_prior"]["ks_p"] > 0.01
    assert surface["plain"]["chi2_p"] < 1e-6
    assert surface["magnet_exact_box"]["chi2_p"] > 0.01
    # The authors' released weighting keeps the Gaussian prior: it is not uniform either.
    assert curve["magnet_released"]["ks_p"] < 1e-3


def test_nb01_rho_sweep_moves_mass_from_modes_to_anti_modes(nb01):
    for weighting in ("exact", "authors"):
        sweep = sorted(nb01["rho_sweep"][weighting], key=lambda r: r["rho"])
        log_vol = [r["mean_log_volume_exact"] for r in sweep]
        assert all(a < b for a, b in zip(log_vol, log_vol[1:]))  # d/dρ E_ρ[log vol] = Var > 0
    exact = sorted(nb01["rho_sweep"]["exact"], key=lambda r: r["rho"])
    mass = [r["mass_in_high_density_half"] for r in exact]
    assert all(a > b for a, b in zip(mass, mass[1:]))  # ρ < 0: modes of p_U; ρ > 0: anti-modes
    at0 = next(r for r in exact if r["rho"] == 0.0)
    # ρ = 0 weighs candidates equally: the 'half' holds >= 50 % (p_U is piecewise constant, so
    # candidates tie at the median and all ties count as high).
    assert 0.5 <= at0["mass_in_high_density_half"] < 0.6


@pytest.fixture(scope="module")
def nb03(output_dirs):
    return reports.run_notebook("03", {"smoke": True, "seed": 0}, out_dir=output_dirs / "reports")


@pytest.fixture(scope="module")
def nb04(output_dirs, nb03):  # after 03; its own 500-candidate smoke bank (03 uses 200)
    return reports.run_notebook("04", {"smoke": True, "seed": 0}, out_dir=output_dirs / "reports")


METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")


def test_nb03_every_sampler_has_all_metrics_with_ordered_cis(nb03, output_dirs):
    samplers = nb03["samplers"]
    p = nb03["parameters"]
    expected = {f"rho={r:g}" for r in p["rhos"]} | {f"psi={s:g}" for s in p["psis"]} | {"magnet_exact"}
    assert set(samplers) == expected
    for name, ev in samplers.items():
        for m in METRICS:
            e = ev["metrics"][m]
            assert e["lo"] <= e["hi"] and e["n_boot"] == p["n_boot"], (name, m)
        for m in ("precision", "recall", "density", "coverage"):
            assert 0 <= ev["metrics"][m]["value"] <= (1 if m != "density" else 10), (name, m)
            assert ev["metrics"][m]["lo"] <= ev["metrics"][m]["value"] <= ev["metrics"][m]["hi"]
        bal = ev["balanced_reference"]
        assert set(bal) == {"precision", "recall", "density", "coverage"}
        assert all(bal[m]["lo"] <= bal[m]["value"] <= bal[m]["hi"] for m in bal), name
    assert nb03["bank"]["n"] == p["n_candidates"] and nb03["bank"]["rank"] == 32
    assert samplers["rho=0"]["ess_fraction"] == pytest.approx(1.0)  # ρ=0: equal weights
    assert all(0 < ev["ess_fraction"] <= 1 + 1e-12 for n, ev in samplers.items() if "psi" not in n)
    for stem in ("03_frontier", "03_samples_per_rho", "03_estimators"):
        assert (output_dirs / "figures" / f"{stem}.png").stat().st_size > 0


def test_nb03_negative_rho_trades_recall_for_precision(nb03):
    s = nb03["samplers"]
    assert s["rho=-1"]["metrics"]["precision"]["value"] > s["rho=1"]["metrics"]["precision"]["value"]
    assert s["rho=-1"]["metrics"]["recall"]["value"] < s["rho=1"]["metrics"]["recall"]["value"]


def test_nb03_estimators_agree_with_the_exact_volume(nb03):
    est = nb03["estimators"]
    assert est["spearman_topk_vs_exact_topk"]["value"] > 0.99  # top-k reproduces exact σ_1..k
    assert est["max_abs_topk_minus_exact_log_sv"] < 1e-2
    assert est["spearman_projected_vs_exact_all"]["value"] > 0.9  # the authors' 128-direction sketch
    for n, m in est["metrics"].items():
        assert m["precision"]["lo"] <= m["precision"]["value"] <= m["precision"]["hi"], n
    # the same Gumbel noise for every estimator: the projected volume picks (nearly) what the
    # exact one picks, and matrix-free top-k picks what exact top-k weights pick
    n_sel, sel = est["n_selected"], est["selected"]
    assert est["selection_overlap_with_exact"]["projected"] >= 0.75
    assert len(set(sel["topk"]) & set(sel["exact_topk"])) >= 0.75 * n_sel
    # the exact top-k selection is Gumbel-top-n of the exact top-k log-volumes with its seed
    log_vol = torch.tensor(est["log_volume_exact_topk"], dtype=torch.float64)  # [n_subset]
    assert log_vol.shape == (est["n_subset"],)
    u = torch.rand(log_vol.shape, generator=torch.Generator().manual_seed(est["selection_seed"]),
                   dtype=torch.float64).clamp(min=torch.finfo(torch.float64).tiny)
    gumbel_top_n = torch.topk(log_vol - torch.log(-torch.log(u)), n_sel).indices
    assert sel["exact_topk"] == gumbel_top_n.tolist()
    assert all(len(set(i)) == len(i) == n_sel for i in sel.values())  # without replacement


def test_nb04_training_split_bias_is_the_documented_one(nb04):
    from magnet_lab import attributes, data

    keep = torch.tensor(data.DEFAULT_IMBALANCE.keep, dtype=torch.float64)
    freq = keep / keep.sum()  # the 60k training set has 6000 images per class
    split = nb04["training_split"]
    assert split["kl_to_uniform"] == pytest.approx(attributes.kl_to_uniform(freq), abs=1e-9)
    assert split["max_min_ratio"] == pytest.approx(10.0)


def test_nb04_class_distributions_have_cis_and_samplers_record_their_specification(nb04):
    for name, ev in nb04["samplers"].items():
        values = [c["value"] for c in ev["class_freq"]]
        assert sum(values) == pytest.approx(1.0) and len(values) == 10, name
        assert all(c["lo"] <= c["value"] <= c["hi"] for c in ev["class_freq"]), name
        kl = ev["kl_to_uniform"]
        assert 0 <= kl["lo"] <= kl["value"] <= kl["hi"] <= math.log(10) + 1e-12, name
        spec = ev["sampler"]
        assert spec["name"] == name and spec["replace"] is nb04["parameters"]["replace"] is False
        assert spec["seed"] == nb04["seed"] + 1
        assert 0 < ev["ess_fraction"] <= 1 + 1e-12, name
    assert nb04["samplers"]["plain (ρ=0)"]["ess_fraction"] == pytest.approx(1.0)
    assert nb04["samplers"]["MaGNET, all σ"]["sampler"]["top_k"] is None
    assert nb04["samplers"]["MaGNET (ρ=1)"]["sampler"]["top_k"] == nb04["parameters"]["top_k"]


def test_nb04_magnet_reduces_the_class_bias_with_disjoint_cis(nb04):
    plain = nb04["samplers"]["plain (ρ=0)"]["kl_to_uniform"]
    magnet = nb04["samplers"]["MaGNET (ρ=1)"]["kl_to_uniform"]
    assert magnet["hi"] < plain["lo"]  # the headline: less class bias, 95 % CIs disjoint
    assert nb04["summary"]["verdict"] == "MaGNET reduces the class bias"
    # ρ < 0 goes the other way: it concentrates on the modes and increases the bias
    assert nb04["samplers"]["ρ=-1"]["kl_to_uniform"]["lo"] > plain["hi"]


def test_nb04_magnet_vs_plain_ratios_have_cis(nb04):
    ratios = nb04["magnet_vs_plain"]["ratio_per_class"]
    plain = nb04["samplers"]["plain (ρ=0)"]["class_freq"]
    for c, (name, ci) in enumerate(nb04["magnet_vs_plain"]["ratio_per_class_ci"].items()):
        assert ci["lo"] <= ci["hi"], name
        if plain[c]["value"] > 0:  # equal sample sizes: the ratio of counts is the ratio of freqs
            assert ci["value"] == pytest.approx(ratios[name], rel=1e-6), name
    assert nb04["magnet_vs_plain"]["most_upweighted"] == max(ratios, key=ratios.get)


# ----------------------------------------------------------------- 02, and 03/04 on StyleGAN2

@pytest.fixture(scope="module")
def nb02(output_dirs):
    return reports.run_notebook("02", {"smoke": True, "seed": 0}, out_dir=output_dirs / "reports")


def test_nb02_runs_the_authors_estimator_on_the_embedded_stylegan2(nb02):
    import magnet_lab
    from magnet_lab import models

    p = nb02["parameters"]
    assert p["generator"] == "fmnist-stylegan2" and p["method"] == "projected"
    G = magnet_lab.load_generator("fmnist-stylegan2")
    assert nb02["generator"]["fingerprint"] == models.fingerprint(G)
    assert nb02["generator"]["class"] == "FmnistStyleGAN2" and nb02["generator"]["attributes"] == "class"
    b = nb02["bank"]
    assert b["n"] == 200 and b["rank"] == min(p["proj_dim"], G.z_dim) and b["n_neg_inf"] == 0


def test_nb02_magnet_samples_sit_at_higher_volume_and_record_their_ess(nb02):
    s = nb02["samplers"]
    plain, magnet = s["plain"], s["MaGNET"]
    assert magnet["mean_log_volume"]["lo"] > plain["mean_log_volume"]["hi"]
    assert plain["ess_fraction"] == pytest.approx(1.0)
    assert 0 < magnet["ess_fraction"] < 1
    n = nb02["parameters"]["n_samples"]
    assert plain["n_distinct"] == magnet["n_distinct"] == n  # drawn without replacement
    assert magnet["sampler"]["rho"] == 1.0 and plain["sampler"]["rho"] == 0.0


def test_nb02_mixture_table_has_one_row_per_psi_with_ordered_cis(nb02):
    p = nb02["parameters"]
    rows = nb02["mixture_table"]
    assert [r["psi"] for r in rows] == p["psis"]
    for r in rows:
        assert list(r["fractions"]) == [f"{f:g}" for f in p["magnet_fractions"]]
        for f, cell in r["fractions"].items():
            for m in ("precision", "recall", "fid", "kl_to_uniform"):
                assert cell[m]["lo"] <= cell[m]["hi"], (r["psi"], f, m)
            assert 0 <= cell["precision"]["value"] <= 1
    # truncation trades diversity for fidelity: plain sampling's recall at ψ = 0.5 is no higher
    at = {r["psi"]: r["fractions"]["0"] for r in rows}
    assert at[0.5]["recall"]["value"] <= at[1.0]["recall"]["value"]
    summary = nb02["summary"]
    assert summary["precision"]["plain"] == at[1.0]["precision"]
    assert summary["precision"]["magnet"] == rows[0]["fractions"]["1"]["precision"]


def test_nb02_attribute_shift_is_recorded_for_both_samplers(nb02):
    by = nb02["attributes"]["class"]
    for name in ("plain", "MaGNET"):
        assert len(by[name]["class_freq"]) == 10 and by[name]["n_missing"] == 0
        assert sum(c["value"] for c in by[name]["class_freq"]) == pytest.approx(1.0)
    assert nb02["summary"]["kl_to_uniform_class"]["plain"] == by["plain"]["kl_to_uniform"]


def test_nb02_writes_its_figures_with_sidecars(nb02, output_dirs):
    for name in ("02_log_volume", "02_montage", "02_mixture", "02_attributes", "02_realism"):
        for suffix in (".png", ".pdf", ".json"):
            assert (output_dirs / "figures" / f"{name}{suffix}").is_file(), name + suffix


@pytest.fixture(scope="module")
def nb03_sg2(output_dirs):
    return reports.run_notebook("03", {"smoke": True, "seed": 0, "generator": "fmnist-stylegan2"},
                                out_dir=output_dirs / "reports-stylegan2")


@pytest.fixture(scope="module")
def nb04_sg2(output_dirs, nb03_sg2):
    # 03's 200-candidate smoke bank (same identity, so cached), not 04's own 500-candidate one
    return reports.run_notebook("04", {"seed": 0, "generator": "fmnist-stylegan2",
                                       "n_candidates": 200, "n_samples": 100, "n_boot": 50,
                                       "rhos": [-1.0]},
                                out_dir=output_dirs / "reports-stylegan2")


def test_nb03_runs_on_the_embedded_stylegan2(nb03_sg2):
    assert nb03_sg2["parameters"]["generator"] == "fmnist-stylegan2"
    samplers = nb03_sg2["samplers"]
    for name, ev in samplers.items():
        for m in METRICS:
            assert ev["metrics"][m]["lo"] <= ev["metrics"][m]["hi"], (name, m)
    # ρ < 0 concentrates on the modes: precision up from plain sampling
    assert samplers["rho=-1"]["metrics"]["precision"]["value"] >= samplers["rho=0"]["metrics"]["precision"]["value"]


def test_nb04_runs_on_the_embedded_stylegan2(nb04_sg2):
    s = nb04_sg2["samplers"]
    assert nb04_sg2["attributes"]["kind"] == "class" and nb04_sg2["attributes"]["main"] == "class"
    # "all σ" leaves out the one σ that StyleGAN2's z-normalisation zeroes at every latent
    assert s["MaGNET, all σ"]["sampler"]["top_k"] == 31
    for name, ev in s.items():
        assert sum(c["value"] for c in ev["class_freq"]) == pytest.approx(1.0), name
    assert nb04_sg2["summary"]["verdict"].startswith("MaGNET ")


@pytest.fixture(scope="module")
def nb02_faces(output_dirs, tmp_path_factory):
    """Notebook 02 on a 3-channel StyleGAN2 given by path (random weights, 32×32): the plumbing
    a user with stylegan2-ffhq-config-f.pkl goes through, minus the real weights."""
    from magnet_lab.models.readers import save_checkpoint
    from magnet_lab.models.stylegan2 import StyleGAN2Generator

    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
                           mapping_kwargs=dict(num_layers=2),
                           synthesis_kwargs=dict(channel_base=128, channel_max=16))
    path = tmp_path_factory.mktemp("faces") / "tiny-rgb-stylegan2.safetensors"
    save_checkpoint(G, path, {"architecture": "StyleGAN2Generator", "kwargs": G.config()})
    return reports.run_notebook("02", {"smoke": True, "seed": 0, "generator": str(path)},
                                out_dir=output_dirs / "reports-faces")


def test_nb02_face_generator_path_gets_face_attributes_and_says_what_it_skipped(nb02_faces):
    assert nb02_faces["generator"]["attributes"] == "face"
    assert nb02_faces["generator"]["image_shape"] == [3, 32, 32]
    assert "real_images" in nb02_faces["reference"]["skipped"] and nb02_faces["mixture_table"] == []
    n = nb02_faces["parameters"]["n_samples"]
    assert set(nb02_faces["attributes"]) == {"gender", "age_group", "smiling"}
    for attr, by in nb02_faces["attributes"].items():
        for name in ("plain", "MaGNET"):
            b = by[name]
            assert b["n"] + b["n_missing"] == n, (attr, name)
            # random weights draw (almost) no faces: dlib found one "face" in 100 noise images
            assert b["n_missing"] >= 0.9 * n, (attr, name)
            if b["n"]:
                assert sum(c["value"] for c in b["class_freq"]) == pytest.approx(1.0)
    s = nb02_faces["samplers"]
    assert s["MaGNET"]["mean_log_volume"]["lo"] > s["plain"]["mean_log_volume"]["hi"]
    assert "precision" not in nb02_faces["summary"]
    assert nb02_faces["realism"] == {}  # realism needs a real reference too


def test_nb02_relates_realism_to_log_volume_per_class_and_psi(nb02):
    """The "why" section: for each ψ in realism_psis, Spearman's ρ between log-volume and
    realism over the candidates and per class (CIs ordered, within [-1, 1]) and the n it used.
    On the shipped StyleGAN2 even the smoke run's 200 candidates show what docs/results.md
    reports: at every ψ the correlation is negative beyond its CI and the top volume quartile is
    less often inside the real manifold than the bottom one. Truncation's rise in mean realism
    (full run: -0.226 -> -0.185 at ψ 1 -> 0.7) is within the noise at 200, so it is only checked
    not to fall beyond the CIs."""
    p = nb02["parameters"]
    r = nb02["realism"]
    assert list(r) == [f"{psi:g}" for psi in p["realism_psis"]]
    for psi, cell in r.items():
        s = cell["summary"]
        assert s["all"]["n"] == p["n_realism"]
        assert -1 <= s["all"]["lo"] <= s["all"]["spearman"] <= s["all"]["hi"] <= 1
        assert sum(c["n"] for c in s["per_class"].values()) <= p["n_realism"]
        assert set(s["per_class"]) <= {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                       "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}
        m = cell["mean_log_realism"]
        assert m["lo"] <= m["value"] <= m["hi"]
        assert s["all"]["hi"] < 0, (psi, s["all"])  # high volume, low realism
        q = s["quartiles"]
        assert q["inside_top_volume"] < q["inside_bottom_volume"], (psi, q)
    first, last = r[f"{p['realism_psis'][0]:g}"], r[f"{p['realism_psis'][-1]:g}"]
    assert last["mean_log_realism"]["hi"] >= first["mean_log_realism"]["lo"]


@pytest.fixture(scope="module")
def nb02_stylegan3(output_dirs, tmp_path_factory):
    """Notebook 02 on a StyleGAN3 pickle given by path: a tiny config-T generator (random
    weights, 16², z 16) written in the stylegan3 repository's snapshot layout, the plumbing a
    user with stylegan3-t-afhqv2-512x512.pkl goes through, minus the real weights."""
    from builders import stylegan3_snapshot

    path, _ = stylegan3_snapshot(tmp_path_factory.mktemp("sg3") / "stylegan3-t-tiny.pkl",
                                 z_dim=16, w_dim=16)
    res = reports.run_notebook("02", {"smoke": True, "seed": 0, "generator": str(path)},
                               out_dir=output_dirs / "reports-stylegan3")
    return path, res


def test_nb02_runs_the_authors_estimator_on_a_stylegan3_pickle(nb02_stylegan3):
    import magnet_lab
    from magnet_lab import experiment, models, spectra

    path, res = nb02_stylegan3
    assert not (path.parent / "src_ran").exists()  # the pickle's embedded source never ran
    G = magnet_lab.load_generator(path)
    gen = res["generator"]
    assert gen["class"] == "StyleGAN3Generator" and gen["image_shape"] == [3, 16, 16]
    assert gen["fingerprint"] == models.fingerprint(G) and gen["attributes"] == "face"
    p, b = res["parameters"], res["bank"]
    assert b["n"] == p["n_candidates"] == 200 and b["rank"] == 16 and b["n_neg_inf"] == 0
    # the notebook's bank, found again in the cache by its identity: G at ψ = 1, its last σ
    # zero (z is normalised: J z = 0), the top-k finite, the recorded log-volumes its own
    vb = experiment.candidate_bank(G, str(path), 200, seed=0, options=spectra.SpectraOptions(
        "projected", proj_dim=p["proj_dim"], seed=0))
    assert vb.meta["identity"]["generator_fingerprint"] == gen["fingerprint"]
    assert torch.isfinite(vb.log_sv[:, :p["top_k"]]).all() and torch.isneginf(vb.log_sv[:, 15]).all()
    assert float(vb.log_sv[:, :p["top_k"]].sum(1).mean()) == pytest.approx(b["log_volume_mean"],
                                                                           rel=1e-12)
    s = res["samplers"]
    assert s["MaGNET"]["mean_log_volume"]["lo"] > s["plain"]["mean_log_volume"]["hi"]
    assert res["mixture_table"] == [] and "real_images" in res["reference"]["skipped"]
    for attr, by in res["attributes"].items():  # face attributes, known or counted missing
        assert all(v["n"] + v["n_missing"] == p["n_samples"] for v in by.values()), attr


def test_nb04_on_a_stylegan3_that_draws_no_faces_records_them_missing_and_no_verdict(
        nb02_stylegan3, output_dirs):
    """An RGB generator gets face attributes; one that draws no faces (an AFHQ StyleGAN3, here
    random weights) runs through notebook 04 with every sample counted missing, NaN figures,
    and a summary that gives no verdict instead of a crash or a made-up one."""
    path, _ = nb02_stylegan3
    res = reports.run_notebook("04", {"seed": 0, "generator": str(path), "method": "projected",
                                      "n_candidates": 40, "n_samples": 16, "n_boot": 10,
                                      "rhos": [-1.0]},
                               out_dir=output_dirs / "reports-stylegan3")
    att = res["attributes"]
    assert att["kind"] == "face" and att["main"] == "gender" and att["n_missing_candidates"] == 40
    for name, ev in res["samplers"].items():
        assert ev["n"] == 0 and ev["n_missing"] == 16 and ev["kl_to_uniform"] is None, name
        assert 0 < ev["ess_fraction"] <= 1 + 1e-12, name
    assert res["samplers"]["MaGNET, all σ"]["sampler"]["top_k"] == 15  # J z = 0: 16 - 1
    change = res["magnet_vs_plain"]
    assert change["most_upweighted"] is None and set(change["ratio_per_class"].values()) == {None}
    assert res["summary"]["verdict"].startswith("no verdict") and res["summary"]["kl_plain"] is None
    assert (output_dirs / "figures" / "04_class_change.png").is_file()


def test_nb03_on_a_stylegan3_without_real_images_skips_the_metrics_and_keeps_the_rest(
        nb02_stylegan3, output_dirs):
    """The ρ sweep on an RGB StyleGAN3 pickle without real_images: the bank (the authors'
    projected estimator, 02's, found in the cache), ESS/N per ρ, the sample grids and the
    estimators' agreement run; every metric is recorded as skipped with the reason, and the
    reference says the balanced/imbalanced pair is Fashion-MNIST's."""
    import magnet_lab
    from magnet_lab import experiment, spectra

    path, _ = nb02_stylegan3
    banks = Path(os.environ["MAGNET_LAB_CACHE_DIR"]) / "banks"
    before = set(banks.iterdir())
    res = reports.run_notebook("03", {"smoke": True, "seed": 0, "generator": str(path)},
                               out_dir=output_dirs / "reports-stylegan3")
    # 02's bank (same N, proj_dim, seed) read from the cache; new: the estimators' three banks
    assert len(set(banks.iterdir()) - before) == 3
    assert not (path.parent / "src_ran").exists()  # the pickle's embedded source never ran
    assert res["generator"]["class"] == "StyleGAN3Generator"
    assert res["generator"]["image_shape"] == [3, 16, 16]
    p, ref = res["parameters"], res["reference"]
    assert res["bank"]["method"] == "projected" and res["bank"]["n"] == p["n_candidates"] == 200
    assert "real_images" in ref["skipped"] and "only for Fashion-MNIST" in ref["balanced_reference"]
    samplers = res["samplers"]
    assert set(samplers) == ({f"rho={r:g}" for r in p["rhos"]} | {"magnet_exact"}
                             | {f"psi={s:g}" for s in p["psis"]})
    for name, ev in samplers.items():
        assert ev["metrics"] == {"skipped": ref["skipped"]}, name
        assert "balanced_reference" not in ev and "classes" not in ev, name
    assert samplers["rho=0"]["ess_fraction"] == pytest.approx(1.0)  # ρ = 0: equal weights
    vb = experiment.candidate_bank(magnet_lab.load_generator(path), str(path), 200, seed=0,
                                   options=spectra.SpectraOptions("projected", seed=0))
    for name, ev in samplers.items():  # ESS/N of each weighting, recomputed from the bank
        if "psi" in name:
            assert "ess_fraction" not in ev, name
        else:
            s = experiment.Sampler(**ev["sampler"])
            assert ev["ess_fraction"] == pytest.approx(s.ess_fraction(vb), rel=1e-12), name
    assert samplers["rho=1"]["ess_fraction"] < 1 and samplers["rho=-1"]["ess_fraction"] < 1
    est = res["estimators"]
    assert est["metrics"] == {"skipped": ref["skipped"]}
    assert est["max_abs_topk_minus_exact_log_sv"] < 1e-3  # exact computed on the subset
    assert -1 <= est["spearman_projected_vs_exact_all"]["value"] <= 1
    assert (output_dirs / "figures" / "03_samples_per_rho.png").stat().st_size > 0


@pytest.fixture(scope="module")
def nb03_stylegan3_real(nb02_stylegan3, output_dirs, tmp_path_factory):
    """Notebook 03 on the tiny StyleGAN3 pickle with a folder of 24 real PNGs and a random-weight
    Inception file (torch-fidelity's architecture, nothing downloaded) at its 64-d layer; sizes
    set by hand (smoke's 100 images per sampler would cost a minute of Inception on one core)."""
    from builders import random_inception_weights, real_image_folder

    path, _ = nb02_stylegan3
    tmp = tmp_path_factory.mktemp("nb03-real")
    folder = real_image_folder(tmp / "reals", 24)
    weights = random_inception_weights(tmp / "weights-inception-2015-12-05-6726825d.pth")
    params = {"seed": 0, "generator": str(path), "real_images": str(folder), "n_real": 24,
              "real_size": 32, "extractor_weights": str(weights), "feature_layer": "64",
              "n_candidates": 40, "n_samples": 12, "n_boot": 10, "rhos": [-1.0, 0.0, 1.0],
              "psis": [1.0], "estimator_subset": 8, "estimator_k": 3}
    res = reports.run_notebook("03", params, out_dir=output_dirs / "reports-stylegan3-real")
    return path, folder, weights, res


def test_nb03_on_a_stylegan3_with_real_images_scores_every_sampler_with_cis(nb03_stylegan3_real):
    """With real_images: the ρ sweep and the ψ baseline scored against that one reference in
    the extractor's features (finite metrics, lo <= value <= hi), no balanced reference; the
    ρ = 0 row equals the metrics recomputed here from the cached bank, the folder and the
    weights file."""
    import magnet_lab
    from magnet_lab import bootstrap, data, experiment, features, spectra

    path, folder, weights, res = nb03_stylegan3_real
    ref, p = res["reference"], res["parameters"]
    assert ref["n"] == 24 and ref["size"] == 32 and ref["feature_layer"] == "64"
    assert "skipped" not in ref and "only for Fashion-MNIST" in ref["balanced_reference"]
    assert set(res["samplers"]) == {"rho=-1", "rho=0", "rho=1", "magnet_exact", "psi=1"}
    for name, ev in res["samplers"].items():
        assert set(ev["metrics"]) == set(METRICS) and "balanced_reference" not in ev, name
        for m, e in ev["metrics"].items():
            assert all(math.isfinite(e[q]) for q in ("lo", "value", "hi")), (name, m)
            assert e["lo"] <= e["value"] <= e["hi"] and e["n_boot"] == p["n_boot"], (name, m)
    assert res["samplers"]["rho=0"]["ess_fraction"] == pytest.approx(1.0)
    assert all(m["precision"]["lo"] <= m["precision"]["value"] <= m["precision"]["hi"]
               for m in res["estimators"]["metrics"].values())
    G = magnet_lab.load_generator(path)
    vb = experiment.candidate_bank(G, str(path), 40, seed=0,
                                   options=spectra.SpectraOptions("projected", seed=0))
    ext = features.standard_extractor("inception", weights, layer="64")
    real = features.extract_features(ext, data.image_folder(folder, 24, size=32))  # [24, 64]
    s = experiment.Sampler(**res["samplers"]["rho=0"]["sampler"])
    fake = features.extract_features(ext, s.images(G, vb, 12, size=32, batch_size=8))  # [12, 64]
    want = bootstrap.bootstrap_ci(real, fake, n_boot=10, seed=0)
    for m, got in res["samplers"]["rho=0"]["metrics"].items():  # float32 Inception: thread order
        assert got == pytest.approx(want[m], rel=1e-5, abs=1e-12), m


# ----------------------------------------------------------------- 05, per class

TINY_FMNIST_BIGGAN = dict(output_dim=32, z_dim=6, class_embed_dim=6, channel_width=4,
                          num_classes=10, layers=[[True, 2, 2], [True, 2, 1], [True, 1, 1]],
                          attention_layer_position=1, eps=1e-4, n_stats=51, img_channels=1)


@pytest.fixture(scope="module")
def nb05(output_dirs, tmp_path_factory):
    """Notebook 05 on a tiny class-conditional BigGAN of the embedded model's architecture (random
    weights, 32×32 cropped to 28×28, 10 classes), scored by the embedded classifier."""
    from magnet_lab.models.fmnist import FmnistBigGAN
    from magnet_lab.models.readers import save_checkpoint

    from builders import randomise_biggan

    G = randomise_biggan(FmnistBigGAN(**TINY_FMNIST_BIGGAN))
    path = tmp_path_factory.mktemp("biggan") / "tiny-fmnist-biggan.safetensors"
    save_checkpoint(G, path, {"architecture": "FmnistBigGAN", "kwargs": G.config()})
    return reports.run_notebook("05", {"smoke": True, "seed": 0, "generator": str(path),
                                       "top_k": 4}, out_dir=output_dirs / "reports-05")


def test_nb05_draws_equal_counts_per_class_with_each_class_bank_weights(nb05):
    from magnet_lab import bank, sampling

    p = nb05["parameters"]
    classes, n = nb05["generator"]["classes"], p["n_per_class"]
    assert classes == list(range(10)) and nb05["generator"]["image_shape"] == [1, 28, 28]
    assert set(nb05["draws"]) == {str(c) for c in classes}
    for c in classes:
        by = nb05["draws"][str(c)]
        assert set(by) == {f"rho={r:g}" for r in p["rhos"]}
        for name, rec in by.items():
            assert rec["n"] == rec["n_distinct"] == n, (c, name)  # equal counts, no repeats
            assert 0 < rec["ess_fraction"] <= 1 + 1e-12
            m = rec["mean_log_volume"]
            assert math.isfinite(m["value"]) and m["lo"] <= m["hi"]
        assert by["rho=0"]["ess_fraction"] == pytest.approx(1.0)  # equal weights within a class
    vb = bank.VolumeBank.load(nb05["banks"]["per_class"]["7"]["path"])  # one bank per class
    assert len(vb) == p["n_candidates"] and vb.labels.unique().tolist() == [7]
    for name, rec in nb05["draws"]["7"].items():
        log_w = sampling.log_weights(vb.log_sv, rec["sampler"]["rho"], top_k=p["top_k"])
        assert rec["ess_fraction"] == pytest.approx(sampling.ess_fraction(log_w), rel=1e-9)
    # positive ρ draws higher volumes than negative ρ, class by class on average
    mean = {r: sum(nb05["draws"][str(c)][f"rho={r:g}"]["mean_log_volume"]["value"]
                   for c in classes) / len(classes) for r in (-1.0, 1.0)}
    assert mean[1.0] > mean[-1.0]


def test_nb05_scores_every_class_at_every_rho_and_truncation(nb05, output_dirs):
    p = nb05["parameters"]
    settings = {f"rho={r:g}" for r in p["rhos"]} | {f"truncation={t:g}" for t in p["truncations"]}
    assert nb05["reference"]["dataset"] == "fashion-mnist" and nb05["reference"]["split"] == "test"
    assert set(nb05["quality"]) == {str(c) for c in range(10)}
    for c, by in nb05["quality"].items():
        assert set(by) == settings, c
        assert nb05["reference"]["n_per_class"][c] == 1000  # the class's test images
        for name, q in by.items():
            assert q["n"] == p["n_per_class"], (c, name)  # equal counts per class
            for m in ("precision", "recall", "coverage", "agreement"):
                v = q["agreement"] if m == "agreement" else q["metrics"][m]
                assert 0 <= v["value"] <= 1 and 0 <= v["lo"] <= v["hi"] <= 1, (c, name, m)
            fid = q["metrics"]["fid"]
            assert math.isfinite(fid["value"]) and 0 <= fid["lo"] <= fid["hi"], (c, name)
            assert sum(q["predicted"]) == q["n"]
    # one cell recomputed from the bank: class 7's MaGNET draw, its images, their quality
    import magnet_lab
    from magnet_lab import bank, class_quality, experiment, models

    G, C = magnet_lab.load_generator(p["generator"]), magnet_lab.load_classifier("fmnist")
    vb = bank.VolumeBank.load(nb05["banks"]["per_class"]["7"]["path"])
    idx = experiment.Sampler("rho=1", rho=1.0, top_k=p["top_k"], seed=p["seed"] + 1).indices(
        vb, p["n_per_class"])
    images = models.generate(G, vb.latents[idx], labels=vb.labels[idx])
    real = class_quality.real_features_by_class(C, classes=[7])
    again = class_quality.per_class_quality(images, vb.labels[idx], real, C, seed=p["seed"],
                                            n_boot=p["n_boot"])[7]
    got = nb05["quality"]["7"]["rho=1"]
    assert got["predicted"] == again["predicted"] and got["agreement"] == again["agreement"]
    for m, v in again["metrics"].items():  # images batched otherwise: float rounding only
        for k in ("value", "lo", "hi"):
            assert got["metrics"][m][k] == pytest.approx(v[k], rel=1e-5, abs=1e-7), (m, k)
    for c, s in nb05["summary"].items():
        assert s["ess_fraction_plain"] == pytest.approx(1.0)
        fid = s["fid"]
        assert fid["change"] == pytest.approx(fid["magnet"]["value"] - fid["plain"]["value"])
        assert fid["plain"] == nb05["quality"][c]["rho=0"]["metrics"]["fid"]
    for stem in ("05_ess_per_class", "05_frontier_per_class", "05_fid_agreement_per_class",
                 "05_samples_per_class"):
        for ext in ("png", "pdf", "json"):
            assert (output_dirs / "figures" / f"{stem}.{ext}").stat().st_size > 0, stem


def test_nb05_on_a_biggan_folder_skips_the_metrics_and_says_why(output_dirs, tmp_path_factory):
    """A user's BigGAN-deep folder (pytorch-pretrained-biggan's format; here a tiny RGB one with
    3 classes): banks, draws, ESS and grids per class; no per-class reference, said so."""
    from magnet_lab.models.biggan import AUTHORS_RECIPE, BigGANDeep

    from builders import BIGGAN_TINY, randomise_biggan, write_biggan_folder

    folder = tmp_path_factory.mktemp("biggan-folder") / "tiny-biggan-deep"
    write_biggan_folder(randomise_biggan(BigGANDeep(**BIGGAN_TINY)), folder)
    res = reports.run_notebook("05", {"smoke": True, "seed": 0, "generator": str(folder),
                                      "top_k": 3, "classes": [2, 0], "authors_recipe": True},
                               out_dir=output_dirs / "reports-05-folder")
    assert res["generator"]["classes"] == [2, 0] and res["generator"]["options"] == AUTHORS_RECIPE
    assert res["generator"]["image_shape"] == [3, 16, 16]
    assert "per-class real reference" in res["reference"]["skipped"] and res["quality"] == {}
    assert set(res["draws"]) == {"2", "0"} and set(res["summary"]) == {"2", "0"}
    assert all("fid" not in s for s in res["summary"].values())
    assert res["draws"]["0"]["rho=0"]["ess_fraction"] == pytest.approx(1.0)
