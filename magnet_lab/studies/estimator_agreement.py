"""Notebook 03's estimator study: the authors' projected estimator and matrix-free top-k against
the exact volume, in rank and in which candidates MaGNET then picks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import bank, bootstrap, experiment, features, sampling
from ..models import generate
from ..spectra import SpectraOptions
from .sweep_reference import SweepReference

NN_METRICS = ("precision", "recall", "density", "coverage")


@dataclass(frozen=True)
class EstimatorAgreement:
    """``estimator_agreement``'s result: ``results`` (the JSON entry: Spearman CIs, the top-k
    error, selection overlaps, the selections, metrics of the selected samples) and, for the
    scatter plots, the log-volumes over all σ (``log_volume_all``: exact, projected) and over
    the top k (``log_volume_k``: exact, projected, topk), each ``[subset]``."""

    results: dict[str, Any]
    log_volume_all: dict[str, torch.Tensor]
    log_volume_k: dict[str, torch.Tensor]

    def headline(self) -> dict[str, Any]:
        """``results`` without the bulky entries (metrics, selections, log-volumes)."""
        bulky = ("metrics", "selected", "log_volume_exact_topk")
        return {k: v for k, v in self.results.items() if k not in bulky}


def estimator_agreement(G: torch.nn.Module, generator_id: str, vb: bank.VolumeBank,
                        reference: SweepReference, *, subset: int, k: int, tol: float,
                        n_boot: int, seed: int, proj_dim: int = 128) -> EstimatorAgreement:
    """On the first ``subset`` candidates of bank ``vb``: their exact bank (``vb``'s rows when
    ``vb`` is exact, else built on the same latents), banks of the projected estimator
    (``proj_dim`` directions) and of top-k (``k`` σ, tolerance ``tol``) on the same latents
    (``experiment.candidate_bank``), Spearman CIs of their log-volumes against the exact ones
    ("all σ" but those zero at every candidate, ``sampling.all_top_k``; and the top k), the
    largest top-k error in log σ, and MaGNET selections (ρ = 1, ``subset // 4`` (at least 4)
    without replacement, the same Gumbel noise, seed + 3) with their overlap with the exact
    selection and the k-NN metrics of their images against ``reference`` (a
    ``SweepReference``: images resized to its size, in its model's features; ``{"skipped":
    why}`` without a reference)."""
    sub = vb.subset(slice(0, subset))

    def bank_of(options: SpectraOptions) -> bank.VolumeBank:
        return experiment.candidate_bank(G, generator_id, subset, seed=seed, latents=sub.latents,
                                         labels=sub.labels, options=options)

    exact = sub if vb.meta.get("identity", {}).get("method") == "exact" else bank_of(
        SpectraOptions("exact", seed=seed))
    all_k = sampling.all_top_k(exact.log_sv)  # "all σ" but those zero by construction
    est = {
        "exact": exact,
        "projected": bank_of(SpectraOptions("projected", proj_dim=proj_dim, seed=seed)),
        "topk": bank_of(SpectraOptions("topk", k=k, tol=tol, seed=seed)),
    }
    log_vol_all = {n: sampling.log_volume(b.log_sv, all_k) for n, b in est.items() if n != "topk"}
    log_vol_k = {n: sampling.log_volume(b.log_sv, k) for n, b in est.items()}
    n_est = max(subset // 4, 4)
    # The same Gumbel noise (seed) for every estimator: differences come from the weights alone.
    select = {n: experiment.Sampler(n, rho=1.0, top_k=k if n == "topk" else all_k,
                                    seed=seed + 3).indices(b, n_est) for n, b in est.items()}
    select["exact_topk"] = experiment.Sampler("exact_topk", rho=1.0, top_k=k,
                                              seed=seed + 3).indices(exact, n_est)
    exact_set = set(select["exact"].tolist())
    results = {
        "spearman_projected_vs_exact_all": bootstrap.spearman_ci(
            log_vol_all["projected"], log_vol_all["exact"], n_boot, seed),
        "spearman_topk_vs_exact_topk": bootstrap.spearman_ci(log_vol_k["topk"],
                                                             log_vol_k["exact"], n_boot, seed),
        "spearman_exact_topk_vs_exact_all": bootstrap.spearman_ci(
            log_vol_k["exact"], log_vol_all["exact"], n_boot, seed),
        "max_abs_topk_minus_exact_log_sv": float(
            (est["topk"].log_sv - exact.log_sv[:, :k]).abs().max()),
        "selection_overlap_with_exact": {n: len(exact_set & set(i.tolist())) / n_est
                                         for n, i in select.items()},
        "selected": select, "log_volume_exact_topk": log_vol_k["exact"],
        "selection_seed": seed + 3,
        "metrics": selection_metrics(G, sub, select, reference, n_boot=n_boot, seed=seed),
        "n_subset": subset, "n_selected": n_est, "k": k, "tol": tol,
    }
    return EstimatorAgreement(results, log_vol_all, log_vol_k)


def selection_metrics(G: torch.nn.Module, sub: bank.VolumeBank, select: dict[str, torch.Tensor],
                      reference: SweepReference, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Per selection (``{name: indices [n] into sub}``) the k-NN metrics (``NN_METRICS``, 95 %
    bootstrap CIs, ``n_boot`` replicates from ``seed``) of the images of ``sub``'s selected
    candidates (resized to ``reference.size``², with their labels) against ``reference.real``
    in its model's features; ``{"skipped": why}`` when the reference is skipped."""
    if reference.skipped is not None:
        return {"skipped": reference.skipped}
    return {n: bootstrap.bootstrap_ci(
        reference.real.features, features.extract_features(reference.real.model, generate(
            G, sub.latents[i], labels=None if sub.labels is None else sub.labels[i],
            size=reference.size, batch_size=reference.batch_size)),
        n_boot=n_boot, seed=seed, metrics=NN_METRICS) for n, i in select.items()}
