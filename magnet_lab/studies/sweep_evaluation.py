"""Notebook 03's ρ-sweep study: polarity, exact-uniform MaGNET and truncation ψ samplers, each
scored against the held-out real reference (and the balanced one) with bootstrap CIs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import bootstrap, experiment, features, latent, plots
from ..models import generate

BALANCED_METRICS = ("precision", "recall", "density", "coverage")


def check_generator_fits(G: torch.nn.Module, generator_id: str,
                         classifier: torch.nn.Module) -> None:
    """Check, before any bank is built, that ``classifier`` reads the images of ``G`` (one image
    of its latent law, seed 0): the study scores every sample in the classifier's feature space
    against the Fashion-MNIST test set. Raises ValueError naming the generator, its image shape
    and where RGB generators go (notebook 02; notebook 00 and the CLI for polarity samples)."""
    image = generate(G, latent.spec_of(G).draw(1, seed=0).z)  # [1, C, H, W]
    try:
        features.extract_features(classifier, image)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"the rho sweep scores samples in the classifier's feature space against the "
            f"Fashion-MNIST test set, and {generator_id} makes {list(image.shape[1:])} images "
            f"({err}); for an RGB StyleGAN2/3 pickle run notebook 02 (precision/recall/FID "
            f"against real_images, face attributes), and notebook 00 or `python -m magnet_lab "
            f"bank`/`sample` for polarity samples") from None


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
    metrics with CIs, class bias, the balanced reference's k-NN metrics, ESS/N for bank
    samplers, the sampler's specification) and its ``images`` ``[n, C, H, W]``."""

    evaluations: dict[str, dict[str, Any]]
    images: dict[str, torch.Tensor]

    def table(self):
        """``experiment.metric_table`` with an ``ess_fraction`` column (NaN for ψ samplers)."""
        table = experiment.metric_table(self.evaluations)
        table["ess_fraction"] = [ev.get("ess_fraction", float("nan"))
                                 for ev in self.evaluations.values()]
        return table[["precision", "recall", "density", "coverage", "fid", "kid",
                      "ess_fraction"]]

    def intervals(self, names: list[str], metric: str) -> np.ndarray:
        """``[len(names), 3]`` (value, lo, hi) of ``metric`` for the named samplers."""
        return plots.intervals([self.evaluations[n]["metrics"][metric] for n in names])

    def frontier(self, samplers: list[experiment.Sampler], knob: str
                 ) -> tuple[list[float], np.ndarray, np.ndarray, np.ndarray]:
        """The knob values (``"rho"`` or ``"psi"``) of ``samplers`` and their recall, precision
        and FID as ``intervals`` arrays ``[n, 3]``: one precision–recall frontier."""
        names = [s.name for s in samplers]
        return ([getattr(s, knob) for s in samplers], self.intervals(names, "recall"),
                self.intervals(names, "precision"), self.intervals(names, "fid"))


def sweep_evaluation(G: torch.nn.Module, vb: Any, samplers: list[experiment.Sampler], n: int,
                     real_feats: torch.Tensor, balanced_feats: torch.Tensor,
                     classifier: torch.nn.Module, *, n_boot: int, seed: int) -> SweepEvaluation:
    """For each sampler: ``n`` images of its latents at its ψ, ``experiment.evaluate`` against
    ``real_feats`` (``n_boot`` replicates from ``seed``), the k-NN metrics against
    ``balanced_feats`` (FID/KID on the 10k balanced reals would be slow), ESS/N for bank
    samplers, and the sampler's ``as_dict``. Raises ValueError as the samplers do."""
    evaluations, images_by = {}, {}
    for s in samplers:
        images = s.images(G, vb, n)  # [n, C, H, W] at its ψ, with the bank's labels
        images_by[s.name] = images
        ev = experiment.evaluate(images, real_feats, classifier, n_boot=n_boot, seed=seed)
        ev["balanced_reference"] = bootstrap.bootstrap_ci(
            balanced_feats, ev.pop("features"), n_boot=n_boot, seed=seed,
            metrics=BALANCED_METRICS)
        ev.pop("predicted_labels")
        if not s.fresh_latents:
            ev["ess_fraction"] = s.ess_fraction(vb)
        ev["sampler"] = s.as_dict()
        evaluations[s.name] = ev
    return SweepEvaluation(evaluations, images_by)
