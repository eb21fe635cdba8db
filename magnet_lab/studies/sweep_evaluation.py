"""Notebook 03's ρ-sweep study: polarity, exact-uniform MaGNET and truncation ψ samplers, each
scored against its real reference (``sweep_reference``: Fashion-MNIST's held-out test set and
the balanced one, or an RGB generator's real images) with bootstrap CIs, or, without a
reference, recorded with their ESS and images and the metrics marked skipped."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import bootstrap, experiment, plots
from ..models import generate
from ..spectra import SpectraOptions
from .sweep_reference import SweepReference

BALANCED_METRICS = ("precision", "recall", "density", "coverage")


def spectra_options(kind: str, method: str, *, proj_dim: int, seed: int) -> SpectraOptions:
    """The bank's estimator options for a generator of attribute ``kind`` (``SweepReference.kind``):
    ``method`` "exact" or "projected" (``proj_dim`` directions) as given, or "auto":
    exact for a Fashion-MNIST generator ("class": D = 784, d = 32 costs little), the authors'
    projected estimator for an RGB one (a StyleGAN2/3 at 256² and above), all with the
    projection/start ``seed``. Raises ValueError for another method and as ``SpectraOptions``
    does."""
    if method == "auto":
        method = "exact" if kind == "class" else "projected"
    if method not in ("exact", "projected"):
        raise ValueError(f"method must be 'auto', 'exact' or 'projected', got {method!r}")
    return SpectraOptions(method, proj_dim=proj_dim, seed=seed)


def sweep_samplers(rhos: list[float], psis: list[float], *, top_k: int | None, replace: bool,
                   seed: int) -> dict[str, list[experiment.Sampler]]:
    """The study's samplers by group: ``"rho"`` (``rho=<ρ>`` for each ρ, bank draws from seed
    + 1), ``"exact"`` (``magnet_exact``: ρ = 1 with the prior divided out) and ``"psi"``
    (``psi=<ψ>``: fresh latents from seed + 2, the same for every ψ, truncated by ψ)."""
    return {"rho": [experiment.Sampler(f"rho={r:g}", rho=r, top_k=top_k, replace=replace,
                                       seed=seed + 1) for r in rhos],
            "exact": [experiment.Sampler("magnet_exact", rho=1.0, top_k=top_k, exact_uniform=True,
                                         replace=replace, seed=seed + 1)],
            "psi": [experiment.Sampler(f"psi={p:g}", psi=p, fresh_latents=True, seed=seed + 2)
                    for p in psis]}


@dataclass(frozen=True)
class SweepEvaluation:
    """``sweep_evaluation``'s result: per sampler name its evaluation (``evaluations``:
    metrics with CIs, class bias for a classifier, the balanced reference's k-NN metrics when
    there is one, ESS/N for bank samplers, the sampler's specification; ``"metrics":
    {"skipped": why}`` without a reference), its ``images`` ``[n_keep, C, H, W]`` and why the
    metrics were ``skipped`` (None when scored)."""

    evaluations: dict[str, dict[str, Any]]
    images: dict[str, torch.Tensor]
    skipped: str | None = None

    def table(self):
        """``experiment.metric_table`` with an ``ess_fraction`` column (NaN for ψ samplers);
        only the ``ess_fraction`` column when the metrics were skipped."""
        import pandas as pd

        ess = [ev.get("ess_fraction", float("nan")) for ev in self.evaluations.values()]
        if self.skipped is not None:
            return pd.DataFrame({"ess_fraction": ess},
                                index=pd.Index(list(self.evaluations), name="sampler"))
        table = experiment.metric_table(self.evaluations)
        table["ess_fraction"] = ess
        return table[["precision", "recall", "density", "coverage", "fid", "kid",
                      "ess_fraction"]]

    def intervals(self, names: list[str], metric: str) -> np.ndarray:
        """``[len(names), 3]`` (value, lo, hi) of ``metric`` for the named samplers. Raises
        ValueError when the metrics were skipped."""
        if self.skipped is not None:
            raise ValueError(f"no {metric}: the metrics were skipped ({self.skipped})")
        return plots.intervals([self.evaluations[n]["metrics"][metric] for n in names])

    def frontier(self, samplers: list[experiment.Sampler], knob: str
                 ) -> tuple[list[float], np.ndarray, np.ndarray, np.ndarray]:
        """The knob values (``"rho"`` or ``"psi"``) of ``samplers`` and their recall, precision
        and FID as ``intervals`` arrays ``[n, 3]``: one precision–recall frontier."""
        names = [s.name for s in samplers]
        return ([getattr(s, knob) for s in samplers], self.intervals(names, "recall"),
                self.intervals(names, "precision"), self.intervals(names, "fid"))


def sweep_evaluation(G: torch.nn.Module, vb: Any, samplers: list[experiment.Sampler], n: int,
                     reference: SweepReference, *, n_boot: int, seed: int,
                     n_keep: int | None = None) -> SweepEvaluation:
    """For each sampler: ``n`` images of its latents at its ψ (resized to ``reference.size``²,
    ``reference.batch_size`` at a time), ``experiment.evaluate`` against ``reference.real``
    (its features and model, ``n_boot`` replicates from ``seed``), the k-NN metrics against
    ``reference.balanced`` when there is one (FID/KID on the 10k balanced reals would be slow),
    ESS/N for bank samplers, and the sampler's ``as_dict``; the first ``n_keep`` images (None:
    all) are kept. Without a reference (``reference.skipped``) each ``"metrics"`` is
    ``{"skipped": why}`` and only the kept images are generated (the first ``n_keep`` of the
    ``n`` drawn latents). Raises ValueError as the samplers do."""
    evaluations, images_by = {}, {}
    skipped = reference.skipped
    for s in samplers:
        if skipped is None:
            images = s.images(G, vb, n, size=reference.size,
                              batch_size=reference.batch_size)  # [n, C, S, S] at its ψ
            ev = experiment.evaluate(images, reference.real.features, reference.real.model,
                                     n_boot=n_boot, seed=seed, n_classes=reference.real.n_classes)
            feats = ev.pop("features")  # [n, F]
            if reference.balanced is not None:
                ev["balanced_reference"] = bootstrap.bootstrap_ci(
                    reference.balanced, feats, n_boot=n_boot, seed=seed,
                    metrics=BALANCED_METRICS)
            ev.pop("predicted_labels", None)
        else:
            z, labels = s.inputs(vb, n)  # [n, d], [n] or None, as s.images draws them
            keep = slice(0, n_keep)
            images = generate(G, z[keep], psi=s.psi, labels=None if labels is None else
                              labels[keep], size=reference.size, batch_size=reference.batch_size)
            ev = {"metrics": {"skipped": skipped}}
        # a copy, so that the n images' storage is freed (n RGB images at 256² are gigabytes)
        images_by[s.name] = images if n_keep is None else images[:n_keep].clone()
        if not s.fresh_latents:
            ev["ess_fraction"] = s.ess_fraction(vb)
        ev["sampler"] = s.as_dict()
        evaluations[s.name] = ev
    return SweepEvaluation(evaluations, images_by, skipped)
