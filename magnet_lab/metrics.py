"""Sample-quality metrics in a feature space: FID, KID, precision/recall, density/coverage, and CIs.

FID, KID and precision/recall (Kynkäänniemi et al. 2019, k = 3, NVIDIA's pr50k3) are
torch-fidelity 0.4's own code: ``fidelity_metrics`` runs ``torch_fidelity.calculate_metrics`` on
images through a ``features`` extractor (our classifier, or a standard Inception / VGG16
built from a *local* weights file), and ``metrics_from_features`` calls torch-fidelity's
feature-level functions on features you already have. Density and coverage (Naeem et al. 2020) are
written here. Bootstrap CIs of these metrics live in ``magnet_lab.bootstrap`` (which imports this
module, never the reverse). Conventions: torch-fidelity's input1 is the *generated* set, input2 the
*real* set; features are float64 on CPU; nothing here downloads or writes torch-fidelity caches.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import features, paths
from .features import torch_fidelity_api
from .spectra import precision_flags
from .validation import check_finite

__all__ = [
    "ALL_METRICS", "FIDELITY_METRICS", "density_coverage", "fidelity_metrics",
    "metrics_from_features",
]

ALL_METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")
FIDELITY_METRICS = ("fid", "kid", "precision", "recall")  # what calculate_metrics computes
BLOCK_BYTES = 64 * 2**20  # memory per pairwise block (distances, kernels, covariance batches)


def kid_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torch-fidelity's KID kernel (x·y/F + 1)^3 between rows of x [n, F] and y [m, F] → [n, m]."""
    k = torch_fidelity_api().kernel_poly(x.numpy(), y.numpy(), kid_kernel_poly_degree=3,
                                         kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    return torch.from_numpy(k)


def _kid_subset_size(n_real: int, n_fake: int, kid_subset_size: int | None) -> int:
    size = min(1000, n_real, n_fake) if kid_subset_size is None else int(kid_subset_size)
    if size < 2 or size > min(n_real, n_fake):
        raise ValueError(f"kid_subset_size must be in [2, min(n_real, n_fake) = {min(n_real, n_fake)}], "
                         f"got {size}")
    return size


def check_metric_names(metrics: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    """``metrics`` as a tuple; ValueError unless a non-empty subset of ``allowed``."""
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in allowed]
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {allowed}, got {metrics}")
    return metrics


def fidelity_metrics(real_images: torch.Tensor, fake_images: torch.Tensor, extractor: Any, *,
                     metrics: Sequence[str] = FIDELITY_METRICS, k: int = 3, kid_subsets: int = 100,
                     kid_subset_size: int | None = None, feature_layer: str | None = None,
                     batch_size: int = 64, seed: int = 0) -> dict[str, float]:
    """FID, KID, precision and recall by ``torch_fidelity.calculate_metrics`` on two image sets.

    ``real_images`` ``[N, C, H, W]`` and ``fake_images`` ``[M, C, H, W]`` are float in [-1, 1]
    (quantised to uint8, as torch-fidelity requires) or uint8. ``extractor`` is a module with
    ``.features`` (registered as "magnet_lab-classifier"), a name from
    ``features.register_classifier_extractor``, or a ``features.StandardExtractor`` (its weights
    are passed as a sanitised copy through ``feature_extractor_weights_path``). Fake is
    torch-fidelity's input1, real its input2; the file cache is off, nothing is downloaded, the PRC neighbourhood is ``k``,
    KID subsets are seeded by ``seed`` (subset size ``min(1000, N, M)`` by default); on CUDA the
    extractor runs in full float32 (TF32 off). Returns a dict
    with the requested keys among fid, kid_mean, kid_std, precision, recall. Raises ValueError for
    bad images, unknown metric names or an extractor name that would need a download.
    """
    tf = torch_fidelity_api()
    metrics = check_metric_names(metrics, FIDELITY_METRICS)
    features.check_images(real_images, "real_images")
    features.check_images(fake_images, "fake_images")
    if real_images.shape[1:] != fake_images.shape[1:]:
        raise ValueError(f"real and fake images differ in shape: {tuple(real_images.shape)} vs "
                         f"{tuple(fake_images.shape)}")
    n_real, n_fake = real_images.shape[0], fake_images.shape[0]
    want_prc = "precision" in metrics or "recall" in metrics
    if want_prc and min(n_real, n_fake) <= k:
        raise ValueError(f"precision/recall with k={k} need more than k images per set, got "
                         f"{n_real} real and {n_fake} fake")
    subset = _kid_subset_size(n_real, n_fake, kid_subset_size) if "kid" in metrics else 1000
    with features.fidelity_inputs(extractor, real_images, fake_images, feature_layer) as inputs, \
            precision_flags("highest"):  # the extractor in full float32 on CUDA (TF32 off)
        out = tf.calculate_metrics(
            **inputs, fid="fid" in metrics, kid="kid" in metrics, prc=want_prc,
            batch_size=batch_size, prc_neighborhood=k, kid_subsets=kid_subsets,
            kid_subset_size=subset, rng_seed=seed, cache=False,
            cache_root=str(paths.cache_dir() / "torch_fidelity"), datasets_download=False,
            save_cpu_ram=True,  # no DataLoader workers; PRC in blocks
            verbose=False)
    keys = {"fid": [("fid", tf.KEY_FID)],
            "kid": [("kid_mean", tf.KEY_KID_MEAN), ("kid_std", tf.KEY_KID_STD)],
            "precision": [("precision", tf.KEY_PRECISION)], "recall": [("recall", tf.KEY_RECALL)]}
    return {ours: float(out[theirs]) for m in metrics for ours, theirs in keys[m]}


# --------------------------------------------------------------------------- feature-level metrics

def check_features(real_feats: torch.Tensor, fake_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both [n, F] floating, same F, finite, at least 2 rows → float64 CPU contiguous copies."""
    out = []
    for x, name in ((real_feats, "real_feats"), (fake_feats, "fake_feats")):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor [n, F], got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
            raise ValueError(f"{name} must have shape [n, F] with n >= 2, got {tuple(x.shape)}")
        check_finite(x, name)
        out.append(x.detach().to("cpu", torch.float64).contiguous())
    if out[0].shape[1] != out[1].shape[1]:
        raise ValueError(f"real_feats and fake_feats differ in feature dimension: {out[0].shape[1]} vs "
                         f"{out[1].shape[1]}")
    return out[0], out[1]


def check_k(n_real: int, n_fake: int, k: int, dc_k: int, metrics: Sequence[str]) -> None:
    """ValueError unless ``k`` and ``dc_k`` are positive integers and each k-NN metric in
    ``metrics`` has more samples than its neighbour count (a point's k-th neighbour excludes
    itself)."""
    for kk, name in ((k, "k"), (dc_k, "dc_k")):
        if int(kk) != kk or kk < 1:
            raise ValueError(f"{name} must be a positive integer, got {kk}")
    needs = [("precision", n_real, "k", k, "real"), ("recall", n_fake, "k", k, "fake"),
             ("density", n_real, "dc_k", dc_k, "real"), ("coverage", n_real, "dc_k", dc_k, "real")]
    for metric, n, name, kk, which in needs:
        if metric in metrics and n <= kk:
            raise ValueError(f"{metric} needs more {which} samples than its k-NN {name}={kk} "
                             f"(a point's k-th neighbour excludes itself), got {n}")


def rows_per_block(n_cols: int, extra_rows: int = 0) -> int:
    """Rows of an [rows, n_cols] float64 block (plus ``extra_rows`` × rows of work) in BLOCK_BYTES."""
    return max(1, BLOCK_BYTES // (8 * max(1, n_cols + extra_rows)))


def _knn_radii(x: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """``[len(ks), n]``: distance from each row of x to its k-th nearest *other* row, per k.

    As in torch-fidelity (``kthvalue(k + 1)`` of a cdist row including the zero self-distance)
    and Naeem et al. (``NND_k``). Distances by ``torch.cdist``, row blocks of bounded memory.
    """
    n, kmax = x.shape[0], max(ks)
    out = torch.empty(len(ks), n, dtype=x.dtype)
    rows = rows_per_block(n)
    for s in range(0, n, rows):
        d = torch.cdist(x[s:s + rows], x)  # [b, n]
        nearest = torch.topk(d, kmax + 1, dim=1, largest=False).values  # [b, kmax + 1], ascending
        for a, k in enumerate(ks):
            out[a, s:s + rows] = nearest[:, k]
    return out


def point_scores(real: torch.Tensor, fake: torch.Tensor, k: int, dc_k: int,
                 metrics: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per-sample scores whose means are the k-NN metrics; neighbourhoods from the full sets.

    With real radius ``r_j`` (k-th NN distance among the reals), fake radius ``s_i`` and
    ``d_ij = ‖fake_i − real_j‖``: ``precision[i] = any_j d_ij <= r_j(k)``, ``recall[j] = any_i
    d_ij <= s_i(k)`` (Kynkäänniemi et al.; torch-fidelity's ``<=``), ``density[i] = #{j: d_ij <
    r_j(dc_k)} / dc_k`` and ``coverage[j] = min_i d_ij < r_j(dc_k)`` (Naeem et al.'s strict ``<``).
    Each distance compared with a real radius is computed with the real point as cdist's row
    operand, in the same row blocks as the radii (and likewise for fake radii), so a fake that
    duplicates a real point ties with that point's neighbours bit for bit.
    """
    n_real, n_fake = real.shape[0], fake.shape[0]
    precision = torch.zeros(n_fake, dtype=torch.bool)
    density = torch.zeros(n_fake, dtype=torch.float64)
    coverage = torch.zeros(n_real, dtype=torch.bool)
    want_pr, want_dc = "precision" in metrics, "density" in metrics or "coverage" in metrics
    if want_pr or want_dc:
        radii = _knn_radii(real, (k if want_pr else dc_k, dc_k if want_dc else k))
        r_k, r_dc = radii[0], radii[1]  # [N] each
        rows = rows_per_block(n_fake)
        for s in range(0, n_real, rows):
            d = torch.cdist(real[s:s + rows], fake)  # [b, M]
            if want_pr:
                precision |= (d <= r_k[s:s + rows, None]).any(dim=0)
            if want_dc:
                density += (d < r_dc[s:s + rows, None]).sum(dim=0)
                coverage[s:s + rows] = d.min(dim=1).values < r_dc[s:s + rows]
    recall = torch.zeros(n_real, dtype=torch.bool)
    if "recall" in metrics:
        s_k = _knn_radii(fake, (k,))[0]  # [M]
        rows = rows_per_block(n_real)
        for s in range(0, n_fake, rows):
            d = torch.cdist(fake[s:s + rows], real)  # [b, N]
            recall |= (d <= s_k[s:s + rows, None]).any(dim=0)
    return {"precision": precision.to(torch.float64), "density": density / dc_k,
            "recall": recall.to(torch.float64), "coverage": coverage.to(torch.float64)}


def density_coverage(real_feats: torch.Tensor, fake_feats: torch.Tensor, k: int = 5) -> dict[str, float]:
    """Density and coverage (Naeem et al. 2020) of fake features ``[M, F]`` against real ``[N, F]``.

    With ``B_j`` the open ball around real ``x_j`` of radius its k-th nearest-neighbour distance
    among the reals: density = ``1/(k M) Σ_i Σ_j 1[y_i ∈ B_j]`` and coverage =
    ``1/N Σ_j 1[∃ i: y_i ∈ B_j]``. For identical sets in general position density is exactly 1
    (each fake lies in its own ball and in the balls of k−1 other reals) and coverage is 1.
    Raises ValueError for bad shapes, NaN/inf or ``N <= k``.
    """
    real, fake = check_features(real_feats, fake_feats)
    check_k(real.shape[0], fake.shape[0], 1, k, ("density", "coverage"))
    scores = point_scores(real, fake, k, k, ("density", "coverage"))
    return {"density": float(scores["density"].mean()), "coverage": float(scores["coverage"].mean())}


def metrics_from_features(real_feats: torch.Tensor, fake_feats: torch.Tensor, *, k: int = 3,
                          dc_k: int = 5, kid_subsets: int = 100, kid_subset_size: int | None = None,
                          seed: int = 0, metrics: Sequence[str] = ALL_METRICS) -> dict[str, float]:
    """FID, KID, precision/recall (torch-fidelity's feature-level functions) and density/coverage.

    ``real_feats`` ``[N, F]`` and ``fake_feats`` ``[M, F]`` are computed on in float64 on CPU.
    FID: ``fid_features_to_statistics`` + ``fid_statistics_to_metric``; KID:
    ``kid_features_to_metric`` (poly kernel, ``kid_subsets`` subsets of ``min(1000, N, M)`` by
    default, seeded by ``seed``); precision/recall: ``prc_features_to_metric`` with neighbourhood
    ``k`` (fake = its features_1); density/coverage: ``density_coverage`` with ``dc_k``. Returns the
    requested keys among fid, kid_mean, kid_std, precision, recall, density, coverage. Raises
    TypeError/ValueError for bad shapes or dtypes, NaN/inf, or too few samples for k / dc_k.
    """
    tf = torch_fidelity_api()
    metrics = check_metric_names(metrics, ALL_METRICS)
    real, fake = check_features(real_feats, fake_feats)
    check_k(real.shape[0], fake.shape[0], k, dc_k, metrics)
    out: dict[str, float] = {}
    if "fid" in metrics:
        stats_real, stats_fake = tf.fid_features_to_statistics(real), tf.fid_features_to_statistics(fake)
        out["fid"] = float(tf.fid_statistics_to_metric(stats_fake, stats_real, verbose=False)[tf.KEY_FID])
    if "kid" in metrics:
        kid = tf.kid_features_to_metric(
            fake, real, kid_subsets=kid_subsets, verbose=False, rng_seed=seed,
            kid_subset_size=_kid_subset_size(real.shape[0], fake.shape[0], kid_subset_size),
            kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
        out["kid_mean"], out["kid_std"] = float(kid[tf.KEY_KID_MEAN]), float(kid[tf.KEY_KID_STD])
    if "precision" in metrics or "recall" in metrics:
        prc = tf.prc_features_to_metric(fake, real, prc_neighborhood=k, prc_batch_size=10000,
                                        save_cpu_ram=True, verbose=False)
        for m, key in (("precision", tf.KEY_PRECISION), ("recall", tf.KEY_RECALL)):
            if m in metrics:
                out[m] = float(prc[key])
    if "density" in metrics or "coverage" in metrics:
        scores = point_scores(real, fake, k, dc_k, ("density", "coverage"))
        for m in ("density", "coverage"):
            if m in metrics:
                out[m] = float(scores[m].mean())
    return out
