"""Percentile bootstrap confidence intervals: for the sample-quality metrics and for any statistic.

``bootstrap_ci`` gives CIs of FID, KID, precision/recall and density/coverage from features,
computing every pairwise distance / kernel block once for all replicates (a replicate only
reweights samples by their resample counts); ``bootstrap_statistic`` resamples one sample for any
statistic given as a function of indices. The small helpers ``mean_ci``, ``spearman_ci`` and
``count_ratio_ci`` are the statistics the notebooks report, so that no notebook writes its own.
Every replicate is drawn from ``torch.Generator().manual_seed(seed)``. This module imports
``magnet_lab.metrics`` (its k-NN scores and input checks); ``metrics`` never imports it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .metrics import (ALL_METRICS, BLOCK_BYTES, check_features, check_k, check_metric_names,
                      kid_kernel, point_scores, rows_per_block)

__all__ = ["bootstrap_ci", "bootstrap_statistic", "count_ratio_ci", "mean_ci", "spearman_ci"]


def _check_bootstrap_args(n_boot: int, level: float) -> None:
    if int(n_boot) != n_boot or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _summarize(values: torch.Tensor, level: float, name: str, keep: bool) -> dict[str, Any]:
    """``values[0]`` is the estimate on the data, ``values[1:]`` the replicates → percentile CI."""
    reps = values[1:]
    bad = int((~torch.isfinite(reps)).sum())
    if bad or not math.isfinite(float(values[0])):
        raise ValueError(f"bootstrap of {name}: {bad} of {reps.numel()} replicates (or the estimate) are "
                         "not finite; make the statistic finite on every resample (e.g. smooth counts)")
    alpha = (1.0 - level) / 2.0
    lo, hi = torch.quantile(reps, torch.tensor([alpha, 1.0 - alpha], dtype=reps.dtype)).tolist()
    out: dict[str, Any] = {"value": float(values[0]), "lo": lo, "hi": hi, "se": float(reps.std()),
                           "n_boot": int(reps.numel()), "level": level}
    if keep:
        out["replicates"] = reps.clone()
    return out


def bootstrap_statistic(values_fn: Callable[[torch.Tensor], float], n: int, n_boot: int = 1000,
                        seed: int = 0, *, level: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap CI of a statistic of one sample of size ``n`` (class KL, ratios, ...).

    ``values_fn(idx)`` gets indices ``[n]`` (int64) into the sample and returns a float (or 0-d
    tensor): ``idx = arange(n)`` for the estimate, then ``n_boot`` resamples with replacement drawn
    from ``torch.Generator().manual_seed(seed)``. Returns ``{"value", "lo", "hi", "se", "n_boot",
    "level"}`` with lo/hi the ``(1 ± level)/2`` quantiles of the replicates. Raises ValueError for
    bad arguments or a non-finite statistic on any resample.
    """
    _check_bootstrap_args(n_boot, level)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    gen = torch.Generator().manual_seed(int(seed))
    values = torch.empty(n_boot + 1, dtype=torch.float64)
    values[0] = float(values_fn(torch.arange(n)))
    for b in range(1, n_boot + 1):
        values[b] = float(values_fn(torch.randint(n, (n,), generator=gen)))
    return _summarize(values, level, "the statistic", keep=False)


def _weighted_offsets(y: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For count rows ``c`` [R, n] over centred rows ``y`` [n, F]: sizes [R], mean offsets [R, F]
    and covariance traces [R] (ddof 1) of the multisets with row ``y_i`` repeated ``c_i`` times."""
    n = c.sum(dim=1)
    mean = c @ y / n[:, None]
    trace = (c @ (y * y).sum(dim=1) - n * (mean * mean).sum(dim=1)) / (n - 1)
    return n, mean, trace


def _weighted_cov(y: torch.Tensor, c: torch.Tensor, n: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Covariance [F, F] (ddof 1) of rows ``y`` repeated ``c`` times, given its size and mean."""
    return (y.T @ (y * c[:, None]) - n * torch.outer(mean, mean)) / (n - 1)


def _sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues → 0)."""
    evals, evecs = torch.linalg.eigh(s)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def _fid_replicates(real: torch.Tensor, fake: torch.Tensor, c_real: torch.Tensor,
                    c_fake: torch.Tensor) -> torch.Tensor:
    """FID of each count-weighted pair of multisets; ``c_real`` may have a single (fixed) row.

    FID = ‖μ_f − μ_r‖² + tr Σ_f + tr Σ_r − 2 tr (Σ_r^½ Σ_f Σ_r^½)^½; the last trace equals
    torch-fidelity's Σ sqrt eig(Σ_r Σ_f) but uses a symmetric eigensolver. Data are centred at the
    full-sample means first so the means stay accurate for far-apart sets.
    """
    mu_r, mu_f = real.mean(0), fake.mean(0)
    y_r, y_f = real - mu_r, fake - mu_f  # [N, F], [M, F]
    n_f, d_f, tr_f = _weighted_offsets(y_f, c_fake)  # [R], [R, F], [R]
    n_r, d_r, tr_r = _weighted_offsets(y_r, c_real)  # [R or 1], ...
    diff = (mu_f - mu_r) + d_f - d_r  # [R, F]
    out = (diff * diff).sum(dim=1) + tr_f + tr_r  # [R]
    fixed_real = c_real.shape[0] == 1
    if fixed_real:  # Σ_r^½ Σ_f Σ_r^½ is the weighted covariance of z_f = y_f Σ_r^½
        root_r = _sqrtm_psd(_weighted_cov(y_r, c_real[0], n_r[0], d_r[0]))
        z_f, dz_f = y_f @ root_r, d_f @ root_r  # [M, F], [R, F]
    n_rep, n_feat = c_fake.shape[0], fake.shape[1]
    batch = max(1, BLOCK_BYTES // (8 * n_feat * n_feat))
    for s in range(0, n_rep, batch):
        sym = []
        for b in range(s, min(s + batch, n_rep)):
            if fixed_real:
                sym.append(_weighted_cov(z_f, c_fake[b], n_f[b], dz_f[b]))
            else:
                root_r = _sqrtm_psd(_weighted_cov(y_r, c_real[b], n_r[b], d_r[b]))
                sym.append(root_r @ _weighted_cov(y_f, c_fake[b], n_f[b], d_f[b]) @ root_r)
        evals = torch.linalg.eigvalsh(torch.stack(sym))  # [batch, F]
        out[s:s + len(sym)] -= 2 * evals.clamp(min=0).sqrt().sum(dim=1)
    return out


def _weighted_kernel_sums(x: torch.Tensor, y: torch.Tensor, c_x: torch.Tensor, c_y: torch.Tensor,
                          same: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per replicate, ``c_x K(x, y) c_y`` and (``same``) ``Σ_i c_x,i² K_ii``; K in row blocks."""
    quad = torch.zeros(max(c_x.shape[0], c_y.shape[0]), dtype=torch.float64)
    diag = torch.zeros(c_x.shape[0], dtype=torch.float64)
    rows = rows_per_block(y.shape[0], extra_rows=c_y.shape[0])
    for s in range(0, x.shape[0], rows):
        kern = kid_kernel(x[s:s + rows], y)  # [b, n_y]
        quad += ((c_y @ kern.T) * c_x[:, s:s + rows]).sum(dim=1)
        if same:
            idx = torch.arange(kern.shape[0])
            diag += (c_x[:, s:s + rows] ** 2) @ kern[idx, s + idx]
    return quad, diag


def _kid_replicates(real: torch.Tensor, fake: torch.Tensor, c_real: torch.Tensor,
                    c_fake: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² (KID's poly kernel) of count-weighted multisets, over all sample pairs.

    Within-set sums skip pairs of the *same original sample* (the diagonal and, on a resample,
    its duplicates): ``(cᵀKc − Σ c_i² K_ii) / (n² − Σ c_i²)``; for unit counts this is the usual
    U-statistic ``Σ_{i≠j} K_ij / (n(n−1))`` and the whole is torch-fidelity's ``mmd2`` on the
    full sets (its KID averages the same quantity over random subsets).
    """
    ff, ff_diag = _weighted_kernel_sums(fake, fake, c_fake, c_fake, same=True)
    rr, rr_diag = _weighted_kernel_sums(real, real, c_real, c_real, same=True)
    fr, _ = _weighted_kernel_sums(fake, real, c_fake, c_real, same=False)
    n_f, n_r = c_fake.sum(1), c_real.sum(1)
    within_f = (ff - ff_diag) / (n_f ** 2 - (c_fake ** 2).sum(1))
    within_r = (rr - rr_diag) / (n_r ** 2 - (c_real ** 2).sum(1))
    return within_f + within_r - 2 * fr / (n_f * n_r)


def bootstrap_ci(real_feats: torch.Tensor, fake_feats: torch.Tensor, *, n_boot: int = 1000,
                 level: float = 0.95, seed: int = 0, metrics: Sequence[str] = ALL_METRICS, k: int = 3,
                 dc_k: int = 5, resample_real: bool = True,
                 return_replicates: bool = False) -> dict[str, dict[str, Any]]:
    """Percentile bootstrap CIs of FID, KID, precision, recall, density, coverage from features.

    Replicate b draws fake indices ``randint(M, (M,))`` then real indices ``randint(N, (N,))``
    from one ``torch.Generator().manual_seed(seed)``. Every pairwise distance / kernel block is
    computed once; a replicate only reweights samples by their resample counts, so the k-NN radii
    always come from the full sets and duplicates never shrink a ball. Precision and density are
    means of per-fake scores and resample the fakes; recall and coverage are means of per-real
    scores and resample the reals — each replicate equals the metric recomputed on that resample
    with the neighbourhoods held fixed (the CI is conditional on the k-NN manifold estimate). FID
    and KID resample the fakes, and the reals too when ``resample_real`` (False: the held-out real
    set is fixed, e.g. to compare samplers against one reference). "kid" is the unbiased MMD² on the
    full sets (what torch-fidelity's subset-averaged kid_mean estimates), with same-sample pairs
    skipped on resamples. FID replicates carry FID's small-sample upward bias, so with few samples
    per dimension the interval can sit above the estimate. Returns ``{metric: {"value", "lo", "hi",
    "se", "n_boot", "level"}}`` (+ "replicates" ``[n_boot]`` if asked); value is the estimate on the
    data (FID, precision, recall equal torch-fidelity's). Raises ValueError for bad inputs.
    Cost: one pass over the N², M², NM blocks, O(n_boot·(N+M)) memory for the counts and per k-NN metric,
    O(n_boot·(M F² + F³)) for FID and O(n_boot·(N+M)²) for KID.
    """
    _check_bootstrap_args(n_boot, level)
    metrics = check_metric_names(metrics, ALL_METRICS)
    real, fake = check_features(real_feats, fake_feats)
    n_real, n_fake = real.shape[0], fake.shape[0]
    check_k(n_real, n_fake, k, dc_k, metrics)

    gen = torch.Generator().manual_seed(int(seed))
    c_fake = torch.ones(n_boot + 1, n_fake, dtype=torch.float64)  # row 0: the data itself
    c_real = torch.ones(n_boot + 1, n_real, dtype=torch.float64)
    for b in range(1, n_boot + 1):
        c_fake[b] = torch.bincount(torch.randint(n_fake, (n_fake,), generator=gen), minlength=n_fake)
        c_real[b] = torch.bincount(torch.randint(n_real, (n_real,), generator=gen), minlength=n_real)
    c_real_fid_kid = c_real if resample_real else c_real[:1]

    values: dict[str, torch.Tensor] = {}
    knn = [m for m in metrics if m in ("precision", "recall", "density", "coverage")]
    if knn:
        scores = point_scores(real, fake, k, dc_k, knn)
        for m in knn:
            counts, n = (c_fake, n_fake) if m in ("precision", "density") else (c_real, n_real)
            values[m] = counts @ scores[m] / n  # [n_boot + 1]
    if "fid" in metrics:
        values["fid"] = _fid_replicates(real, fake, c_real_fid_kid, c_fake)
    if "kid" in metrics:
        values["kid"] = _kid_replicates(real, fake, c_real_fid_kid, c_fake)
    return {m: _summarize(values[m], level, m, return_replicates) for m in metrics}


# --------------------------------------------------------------------------- statistics the notebooks report

def _as_vector(x: Any, name: str) -> torch.Tensor:
    """``x`` as a float64 CPU tensor ``[n]`` with n >= 1 (TypeError/ValueError otherwise)."""
    t = torch.as_tensor(x)
    if not (t.is_floating_point() or t.dtype in (torch.int64, torch.int32)):
        raise TypeError(f"{name} must be a real tensor [n], got dtype {t.dtype}")
    if t.ndim != 1 or t.shape[0] == 0:
        raise ValueError(f"{name} must have shape [n] with n >= 1, got {tuple(t.shape)}")
    return t.detach().to("cpu", torch.float64)


def mean_ci(x: torch.Tensor, n_boot: int = 1000, seed: int = 0, *,
            level: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap CI of the mean of ``x`` ``[n]`` (cast to float64): ``bootstrap_statistic``
    of ``x[idx].mean()``, so value is ``x.mean()`` and the replicates are means of resamples drawn
    from ``torch.Generator().manual_seed(seed)``. Returns the ``bootstrap_statistic`` dict. Raises
    TypeError/ValueError for a non-1-D or empty ``x`` and as ``bootstrap_statistic`` does (NaN/inf
    in ``x`` make the replicates non-finite)."""
    v = _as_vector(x, "x")

    def mean(idx: torch.Tensor) -> float:
        return float(v[idx].mean())

    return bootstrap_statistic(mean, v.shape[0], n_boot, seed, level=level)


def spearman_ci(a: torch.Tensor, b: torch.Tensor, n_boot: int = 1000, seed: int = 0, *,
                level: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap CI of Spearman's rank correlation between paired samples ``a`` and
    ``b`` (``[n]`` each, n >= 2): the pairs ``(a_i, b_i)`` are resampled together (one index draw
    per replicate, seeded) and each replicate is ``scipy.stats.spearmanr`` (average ranks for
    ties, which resamples create). Returns the ``bootstrap_statistic`` dict. Raises
    TypeError/ValueError for shapes that differ or are not ``[n]`` with n >= 2, and ValueError when
    a replicate is undefined (a resample with constant ``a`` or ``b``)."""
    from scipy import stats

    x, y = _as_vector(a, "a"), _as_vector(b, "b")
    if x.shape != y.shape or x.shape[0] < 2:
        raise ValueError(f"a and b must be paired samples [n] with n >= 2, got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")

    def spearman(idx: torch.Tensor) -> float:
        return float(stats.spearmanr(x[idx].numpy(), y[idx].numpy()).statistic)

    return bootstrap_statistic(spearman, x.shape[0], n_boot, seed, level=level)


def count_ratio_ci(labels_a: torch.Tensor, labels_b: torch.Tensor, cls: int, n_boot: int = 1000,
                   seed: int = 0, *, floor: float = 0.5, level: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap CI of ``#{labels_a == cls} / max(#{labels_b == cls}, floor)``: how many
    times more often class ``cls`` occurs in sample a than in sample b (for equal sizes, the ratio
    of class frequencies). ``labels_a`` and ``labels_b`` are integer ``[n]`` of the same n, resampled
    with one shared index draw per replicate (seeded); the ``floor`` (default 0.5, half a count)
    keeps replicates in which the class vanishes from b finite. Returns the
    ``bootstrap_statistic`` dict. Raises TypeError/ValueError for non-integer or non-1-D labels of
    different sizes, or a ``floor`` that is not positive."""
    tensors = []
    for lab, name in ((labels_a, "labels_a"), (labels_b, "labels_b")):
        t = torch.as_tensor(lab)
        if t.dtype not in (torch.int64, torch.int32) or t.ndim != 1 or t.shape[0] == 0:
            raise TypeError(f"{name} must be an int64/int32 tensor [n] with n >= 1, got dtype "
                            f"{t.dtype} and shape {tuple(t.shape)}")
        tensors.append(t.to("cpu", torch.int64))
    lab_a, lab_b = tensors
    if lab_a.shape != lab_b.shape:
        raise ValueError(f"labels_a and labels_b must have the same size, got {lab_a.shape[0]} and "
                         f"{lab_b.shape[0]}")
    if not (isinstance(floor, (int, float)) and math.isfinite(floor) and floor > 0):
        raise ValueError(f"floor must be a finite positive number, got {floor!r}")
    hit_a, hit_b = lab_a == int(cls), lab_b == int(cls)  # [n] each

    def ratio(idx: torch.Tensor) -> float:
        return float(hit_a[idx].sum()) / max(float(hit_b[idx].sum()), floor)

    return bootstrap_statistic(ratio, lab_a.shape[0], n_boot, seed, level=level)
