"""Notebook 05's per-class study on a class-conditional generator: one bank per class (the
Jacobian with respect to z with the class fixed), a polarity ρ sweep within each class (the
authors' per-class normalisation, the same number of draws per class, without replacement),
the truncation baseline per class, and per-class quality against that class's real images."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import bank, bootstrap, class_quality, data, experiment, latent, models, plots, sampling
from ..models.biggan import AUTHORS_RECIPE
from ..spectra import SpectraOptions
from ..validation import check_class_ids, check_int, check_real
from .records import volume_record
from .verdicts import cis_disjoint

SUMMARY_METRICS = ("precision", "recall", "fid")


def conditional_classes(G: nn.Module, classes: Sequence[int] | None) -> list[int]:
    """The class ids the study runs on: ``classes`` checked against G's latent spec (distinct
    ids in ``[0, n_classes)``), or all of G's classes for None. Raises ValueError for an
    unconditional G, an empty or repeated list, or an id out of range."""
    n_classes = latent.spec_of(G).n_classes
    if n_classes is None:
        raise ValueError("the per-class study needs a class-conditional generator (its latent "
                         "spec has n_classes None)")
    if classes is None:
        return list(range(n_classes))
    return check_class_ids(classes, n_classes)


def generator_options(truncation: float, authors_recipe: bool) -> dict[str, float]:
    """The run options the study loads its generator with: the MaGNET authors' BigGAN-deep
    recipe (``models.biggan.AUTHORS_RECIPE``: samples G(0.9·z, c) with the truncation input at
    1, candidates from truncnorm(−2, 2)) when ``authors_recipe``; else ``{"truncation": t}``
    (candidates t · truncnorm(−2, 2) and the batch-norm statistics of t), and none at t = 1,
    the default, so that a conditional generator without that option loads too. Raises
    ValueError for a truncation outside (0, 1], or one other than 1 with the recipe."""
    t = check_real("truncation", truncation, positive=True, high=1.0)
    if authors_recipe:
        if t != 1.0:
            raise ValueError(f"the authors' recipe runs at truncation 1 (z scaled by "
                             f"{AUTHORS_RECIPE['z_scale']}); got truncation={t:g}")
        return dict(AUTHORS_RECIPE)
    return {} if t == 1.0 else {"truncation": t}


def plain_generator(G: nn.Module) -> nn.Module:
    """G without the authors' z scaling (its run option ``z_scale`` set back to 1, weights
    shared), the generator the truncation baseline draws from; G itself when it has no
    ``z_scale`` or it is 1."""
    options = G.options() if callable(getattr(G, "options", None)) else {}
    if options.get("z_scale", 1.0) == 1.0:
        return G
    plain = G.with_options(z_scale=1.0)
    plain.latent_spec = latent.spec_of(G)  # the law of t · truncnorm(−2, 2) is unchanged
    return plain


def class_banks(G: nn.Module, generator_id: str, classes: Sequence[int], n_candidates: int, *,
                seed: int, options: SpectraOptions | None = None,
                directory: str | Path | None = None,
                progress: bool = False) -> dict[int, bank.VolumeBank]:
    """One volume bank per class: ``experiment.candidate_bank(G, generator_id, n_candidates,
    seed=seed, classes=[c], options=options)`` for each c in ``classes``, so every candidate's
    spectrum is that of z ↦ G(z, c) with its class fixed. The latents come from ``seed`` in
    every class (the same candidates z, a paired design: the class alone differs between
    banks); each bank is cached under its own identity (its labels differ), in ``directory``
    (default: the cache). Returns ``{class: VolumeBank}`` (``len(vb) == n_candidates``).
    Raises ValueError as ``candidate_bank`` does."""
    check_int("n_candidates", n_candidates, low=1)
    return {int(c): experiment.candidate_bank(G, generator_id, n_candidates, seed=seed,
                                              options=options, classes=[int(c)],
                                              directory=directory, progress=progress)
            for c in classes}


def rho_samplers(rhos: Sequence[float], *, top_k: int | None, seed: int,
                 replace: bool = False) -> list[experiment.Sampler]:
    """The sweep's samplers ``rho=<ρ>`` (``top_k`` σ in the volume, without replacement unless
    ``replace``), all drawn from seed + 1. Raises ValueError for an empty or repeated ``rhos``
    and as ``Sampler`` does."""
    rhos = [float(r) for r in rhos]
    if not rhos or len({f"{r:g}" for r in rhos}) != len(rhos):
        raise ValueError(f"rhos must be a non-empty list of distinct values, got {rhos!r}")
    return [experiment.Sampler(rho_name(r), rho=r, top_k=top_k, replace=replace, seed=seed + 1)
            for r in rhos]


def rho_name(rho: float) -> str:
    """A ρ sampler's name in tables and results: ``rho=<ρ:g>``."""
    return f"rho={float(rho):g}"


def truncation_name(truncation: float) -> str:
    """A truncation baseline's name in tables and results: ``truncation=<t:g>``."""
    return f"truncation={float(truncation):g}"


@dataclass(frozen=True)
class ClassDraws:
    """``class_draws``' result: per sampler name and class the drawn bank indices (``picked``,
    ``[n_per_class]``) and their record (``summary``: sampler specification, ``n``,
    ``n_distinct``, ESS/N of the class's weights, mean top-k log-volume with a CI)."""

    picked: dict[str, dict[int, torch.Tensor]]
    summary: dict[str, dict[int, dict[str, Any]]]

    def latents(self, banks: dict[int, bank.VolumeBank], name: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampler ``name``'s latents ``[K·n, d]`` and their classes ``[K·n]`` (int64),
        class-major in the order of ``picked``."""
        z = torch.cat([banks[c].latents[idx] for c, idx in self.picked[name].items()])  # [K·n, d]
        labels = torch.cat([banks[c].labels[idx] for c, idx in self.picked[name].items()])
        return z, labels  # [K·n, d], [K·n]

    def ess(self) -> dict[int, dict[str, float]]:
        """ESS/N per class and sampler: ``{class: {sampler: fraction}}``."""
        return {c: {name: by[c]["ess_fraction"] for name, by in self.summary.items()}
                for c in next(iter(self.summary.values()))}

    def table(self):
        """ESS/N per class (rows) and sampler (columns), a pandas DataFrame for display."""
        import pandas as pd

        return pd.DataFrame(self.ess()).T.rename_axis("class")


def class_draws(banks: dict[int, bank.VolumeBank], samplers: Sequence[experiment.Sampler],
                n_per_class: int, *, top_k: int | None, n_boot: int, seed: int) -> ClassDraws:
    """The authors' per-class draw: for each sampler and class, ``n_per_class`` indices into
    that class's bank (``Sampler.indices``: weights normalised within the class, the same count
    in every class), with the sampler's ``as_dict``, ``n``, ``n_distinct``, ESS/N of the class's
    weights (``Sampler.ess_fraction``) and the mean log-volume over the ``top_k`` largest σ of
    the draws (``bootstrap.mean_ci``, ``n_boot`` replicates from ``seed``). Raises ValueError
    as ``Sampler.indices`` does (e.g. ``n_per_class`` above a bank's size without
    replacement)."""
    check_int("n_per_class", n_per_class, low=1)
    picked: dict[str, dict[int, torch.Tensor]] = {}
    summary: dict[str, dict[int, dict[str, Any]]] = {}
    for s in samplers:
        picked[s.name], summary[s.name] = {}, {}
        for c, vb in banks.items():
            idx = s.indices(vb, n_per_class)  # [n]
            log_vol = sampling.log_volume(vb.log_sv, top_k)[idx]  # [n]
            picked[s.name][c] = idx
            summary[s.name][c] = {"sampler": s.as_dict(), "n": int(idx.numel()),
                                  "n_distinct": int(idx.unique().numel()),
                                  "ess_fraction": s.ess_fraction(vb),
                                  "mean_log_volume": bootstrap.mean_ci(log_vol, n_boot, seed)}
    return ClassDraws(picked, summary)


@dataclass(frozen=True)
class ClassReference:
    """Real features per class (``features``: ``{class: [n_c, F]}``, None when skipped), the
    ``classifier`` whose feature space they are in (None when skipped), the JSON-ready
    ``description`` (or ``{"skipped": why}``) and the class ``names`` for figures
    (Fashion-MNIST's, or ``class <id>``)."""

    features: dict[int, torch.Tensor] | None
    classifier: nn.Module | None
    description: dict[str, Any]
    names: dict[int, str]

    @property
    def skipped(self) -> bool:
        """Whether there is no per-class reference (no classifier for this generator)."""
        return self.features is None


def class_reference(G: nn.Module, classifier: nn.Module | None, classes: Sequence[int], *,
                    split: str = "test") -> ClassReference:
    """The per-class real reference: ``class_quality.real_features_by_class(classifier,
    split=split, classes=classes)`` (each class's real Fashion-MNIST images in the classifier's
    feature space) when ``classifier`` is given and G's images are what it reads (one channel,
    28×28, ten classes); otherwise a skipped reference that says why (an ImageNet BigGAN: no
    per-class real images or class-aware feature space ship with the package)."""
    spec = latent.spec_of(G)
    image = models.generate(G, spec.draw(1, seed=0).z, labels=torch.tensor([int(classes[0])]))
    shape = list(image.shape[1:])  # [C, H, W]
    why = None
    if classifier is None:
        why = "no classifier given"
    elif shape != [1, 28, 28] or spec.n_classes != len(data.CLASS_NAMES):
        why = (f"the generator makes {shape} images of {spec.n_classes} classes; the classifier "
               "and the real per-class reference are Fashion-MNIST's ([1, 28, 28], 10 classes)")
    if why is not None:
        return ClassReference(None, None, {"skipped": f"{why}: per-class precision, recall and "
                                                      "FID need a per-class real reference",
                                           "image_shape": shape},
                              {int(c): f"class {int(c)}" for c in classes})
    feats = class_quality.real_features_by_class(classifier, split=split, classes=list(classes))
    return ClassReference(feats, classifier, {
        "dataset": "fashion-mnist", "split": split, "image_shape": shape,
        "n_per_class": {str(c): int(f.shape[0]) for c, f in feats.items()}},
        {int(c): data.CLASS_NAMES[int(c)] for c in classes})


@dataclass(frozen=True)
class ClassSweep:
    """``class_sweep``'s result: per knob name (``rho=<ρ>``, ``truncation=<t>``) and class its
    ``quality`` (``class_quality.per_class_quality``'s entry; empty when the reference is
    skipped) and a seeded random ``n_grid`` of its images (``images`` ``[n_grid, C, H, W]``);
    ``knobs`` maps each name to ``(knob, value)``."""

    quality: dict[str, dict[int, dict[str, Any]]]
    images: dict[str, dict[int, torch.Tensor]]
    knobs: dict[str, tuple[str, float]]

    def names(self, knob: str) -> list[str]:
        """The names of the ``knob`` ("rho" or "truncation") settings, in sweep order."""
        return [n for n, (k, _) in self.knobs.items() if k == knob]

    def values(self, knob: str) -> list[float]:
        """The ``knob`` values, in sweep order."""
        return [self.knobs[n][1] for n in self.names(knob)]

    def intervals(self, c: int, knob: str, metric: str) -> np.ndarray:
        """Class ``c``'s ``metric`` (a metric name or ``"agreement"``) at each ``knob`` setting:
        ``plots.intervals`` ``[n, 3]`` (value, lo, hi). Raises KeyError when the reference was
        skipped (no metrics) or for an unknown metric."""
        qs = [self.quality[n][c] for n in self.names(knob)]
        return plots.intervals([q["agreement"] if metric == "agreement" else q["metrics"][metric]
                                for q in qs])

    def frontier(self, c: int, knob: str
                 ) -> tuple[list[float], np.ndarray, np.ndarray, np.ndarray]:
        """Class ``c``'s frontier along ``knob``: the knob values and recall, precision and FID
        as ``intervals`` arrays ``[n, 3]``: one precision–recall curve per knob."""
        return (self.values(knob), self.intervals(c, knob, "recall"),
                self.intervals(c, knob, "precision"), self.intervals(c, knob, "fid"))

    def table(self, metric: str = "fid"):
        """``metric``'s value per class (rows) and knob setting (columns), a pandas DataFrame
        (``agreement`` reads the classifier agreement); empty when the reference was skipped."""
        import pandas as pd

        def value(q: dict[str, Any]) -> float:
            return (q["agreement"] if metric == "agreement" else q["metrics"][metric])["value"]

        return pd.DataFrame({n: {c: value(q) for c, q in by.items()}
                             for n, by in self.quality.items() if by}).rename_axis("class")

    def record(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The results entry: ``{class: {knob name: quality}}`` with string class keys."""
        classes = sorted({c for by in self.quality.values() for c in by})
        return {str(c): {n: by[c] for n, by in self.quality.items() if c in by} for c in classes}


def class_sweep(G: nn.Module, banks: dict[int, bank.VolumeBank], draws: ClassDraws,
                reference: ClassReference, *, truncations: Sequence[float], n_grid: int,
                n_boot: int, seed: int) -> ClassSweep:
    """Every knob setting, class by class, with the n draws per class of ``draws``: for each ρ
    sampler the images of its drawn latents with their classes (``models.generate(G, z,
    labels=...)``), and for each truncation t n fresh images per class
    (``class_quality.class_images`` of ``plain_generator(G)`` from seed + 2: z ~ t ·
    truncnorm(−2, 2) and the batch-norm statistics of t, never the authors' z scaling), each
    scored by ``class_quality.per_class_quality`` against ``reference`` (``n_boot`` replicates
    from ``seed``). Without a reference only the grid images are made. Keeps ``n_grid`` images
    per class and setting, at the same seeded random positions in each (draws without
    replacement come out ordered by perturbed weight). Raises ValueError as the samplers and
    ``class_images`` do."""
    check_int("n_grid", n_grid, low=1)
    classes = list(banks)
    n_per_class = next(iter(draws.summary.values()))[classes[0]]["n"]  # the same in every class
    n_img = n_per_class if not reference.skipped else min(n_grid, n_per_class)
    show = torch.randperm(n_img, generator=torch.Generator().manual_seed(seed))[:n_grid]
    knobs: dict[str, tuple[str, float]] = {}
    quality: dict[str, dict[int, dict[str, Any]]] = {}
    images: dict[str, dict[int, torch.Tensor]] = {}
    made: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in draws.picked:
        knobs[name] = ("rho", float(draws.summary[name][classes[0]]["sampler"]["rho"]))
        z, labels = draws.latents(banks, name)  # [K·n, d], [K·n]
        keep = torch.cat([torch.arange(i * n_per_class, (i + 1) * n_per_class)[:n_img]
                          for i in range(len(classes))])
        made[name] = (models.generate(G, z[keep], labels=labels[keep]), labels[keep])
    for t in truncations:
        name = truncation_name(t)
        knobs[name] = ("truncation", float(t))
        made[name] = class_quality.class_images(plain_generator(G), classes, n_img,
                                                seed=seed + 2, truncation=t)
    for name, (x, labels) in made.items():
        images[name] = {c: x[labels == c][show] for c in classes}
        quality[name] = {} if reference.skipped else class_quality.per_class_quality(
            x, labels, reference.features, reference.classifier, seed=seed, n_boot=n_boot)
    return ClassSweep(quality, images, knobs)


def class_summary(sweep: ClassSweep, draws: ClassDraws, *, plain: str = "rho=0",
                  magnet: str = "rho=1") -> dict[str, dict[str, Any]]:
    """Per class (string keys): ESS/N of the ``magnet`` sampler and, when both samplers were
    scored, for precision, recall, FID and classifier agreement the ``plain`` and ``magnet``
    intervals, the change (magnet − plain) and whether their 95 % CIs are disjoint. Empty when
    ``plain`` or ``magnet`` is not among the draws (ρ = 0 or 1 left out of the sweep)."""
    out: dict[str, dict[str, Any]] = {}
    if plain not in draws.summary or magnet not in draws.summary:
        return out
    for c in draws.summary[magnet]:
        entry: dict[str, Any] = {"ess_fraction_magnet": draws.summary[magnet][c]["ess_fraction"],
                                 "ess_fraction_plain": draws.summary[plain][c]["ess_fraction"]}
        qp, qm = sweep.quality[plain].get(c), sweep.quality[magnet].get(c)
        if qp is not None and qm is not None:
            for m in SUMMARY_METRICS + ("agreement",):
                a = qp["agreement"] if m == "agreement" else qp["metrics"][m]
                b = qm["agreement"] if m == "agreement" else qm["metrics"][m]
                entry[m] = {"plain": a, "magnet": b, "change": b["value"] - a["value"],
                            "cis_disjoint": cis_disjoint(a, b)}
        out[str(c)] = entry
    return out


def draws_record(draws: ClassDraws) -> dict[str, dict[str, dict[str, Any]]]:
    """``draws.summary`` as a results entry: ``{class: {sampler: record}}`` with string class
    keys (the indices left out; the banks keep the latents)."""
    classes = next(iter(draws.summary.values()))
    return {str(c): {name: by[c] for name, by in draws.summary.items()} for c in classes}


def banks_record(banks: dict[int, bank.VolumeBank], top_k: int | None) -> dict[str, Any]:
    """Per class (string keys) the bank's ``records.volume_record`` plus its folder (``path``,
    ``VolumeBank.load`` reads it) and its identity's generator fingerprint, and the
    ``n_neg_inf`` total (candidates with a zero σ among the ``top_k``: weight zero for
    ρ ≠ 0)."""
    per = {str(c): {**volume_record(vb, top_k), "path": vb.meta.get("path"),
                    "fingerprint": vb.meta["identity"]["generator_fingerprint"]}
           for c, vb in banks.items()}
    return {"per_class": per, "n_neg_inf": int(sum(r["n_neg_inf"] for r in per.values()))}


def summary_table(summary: dict[str, dict[str, Any]], names: dict[int, str] | None = None):
    """``class_summary``'s result as a pandas DataFrame, one row per class (its name from
    ``names``): ESS/N of MaGNET and, where scored, MaGNET − plain for precision, recall, FID and
    agreement with whether their CIs are disjoint (for display)."""
    import pandas as pd

    rows = []
    for c, entry in summary.items():
        row: dict[str, Any] = {"class": (names or {}).get(int(c), c),
                               "ess_fraction_magnet": entry["ess_fraction_magnet"]}
        for m in SUMMARY_METRICS + ("agreement",):
            if m in entry:
                row[f"{m}_change"] = entry[m]["change"]
                row[f"{m}_cis_disjoint"] = entry[m]["cis_disjoint"]
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["class"]).set_index("class")
