"""Per-sample realism (Kynkäänniemi et al. 2019) and how it relates to a candidate's log-volume.

The realism score of a generated feature vector φ_g against real features {φ_r} is

    R(φ_g) = max_r  NND_k(φ_r) / ‖φ_g − φ_r‖₂,

where NND_k(φ_r) is the distance from φ_r to its k-th nearest *other* real vector, and only the
real vectors whose radius is at most the ``keep_quantile`` quantile of all radii take part (the
paper discards the half of the hyperspheres with the largest radii, so outliers in the real set
do not make everything look realistic). R ≥ 1 exactly when φ_g lies inside one of the kept
k-NN balls; larger is more typical of the real data. ``volume_realism`` asks whether the
candidates MaGNET favours (high top-k log-volume) are less realistic, per class, with a bootstrap
CI on the rank correlation.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from . import bootstrap, features
from .validation import check_finite

if TYPE_CHECKING:
    import pandas as pd

_BLOCK_ELEMENTS = 1 << 24  # distances held at once (128 MiB of float64)


def _check_feats(x: torch.Tensor, name: str, min_rows: int = 1) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] < min_rows or x.shape[1] < 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a feature matrix [N, F] with N >= {min_rows}, got {shape}")
    return check_finite(x.detach().to("cpu", torch.float64), name)


def knn_radii(feats: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Distance ``[N]`` (float64) from each row of ``feats`` ``[N, F]`` to its k-th nearest other
    row (the row itself excluded, duplicates counted). Raises ValueError for ``k`` outside
    ``[1, N - 1]`` or a bad matrix."""
    x = _check_feats(feats, "feats", 2)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(x) - 1:
        raise ValueError(f"k must be an integer in [1, N - 1 = {len(x) - 1}], got {k!r}")
    rows = max(1, _BLOCK_ELEMENTS // len(x))
    out = []
    for s in range(0, len(x), rows):
        d = torch.cdist(x[s:s + rows], x)  # [b, N]
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")  # not itself
        out.append(d.kthvalue(k, dim=1).values)
    return torch.cat(out)


def realism_scores(real_feats: torch.Tensor, fake_feats: torch.Tensor, *, k: int = 3,
                   keep_quantile: float = 0.5, eps: float = 1e-5) -> torch.Tensor:
    """Realism ``[M]`` (float64) of each row of ``fake_feats`` ``[M, F]`` against ``real_feats``
    ``[N, F]``: ``max_r radius_r / (‖φ_g − φ_r‖ + eps)`` over the real rows whose k-NN radius
    (``knn_radii``) is at most the ``keep_quantile`` quantile of the radii (0.5: the paper's
    choice, the official code's 50th-percentile clamp). ``eps`` keeps a fake that coincides with a
    real vector finite. Raises ValueError for bad shapes, non-finite features, k as
    ``knn_radii`` does, or ``keep_quantile`` outside (0, 1]."""
    real = _check_feats(real_feats, "real_feats", 2)
    fake = _check_feats(fake_feats, "fake_feats")
    if fake.shape[1] != real.shape[1]:
        raise ValueError(f"feature widths differ: real {real.shape[1]}, fake {fake.shape[1]}")
    if not 0.0 < float(keep_quantile) <= 1.0:
        raise ValueError(f"keep_quantile must be in (0, 1], got {keep_quantile!r}")
    if not float(eps) > 0.0:
        raise ValueError(f"eps must be positive, got {eps!r}")
    radii = knn_radii(real, k)  # [N]
    kept = radii <= torch.quantile(radii, float(keep_quantile))
    real, radii = real[kept], radii[kept]  # [N', F], [N']
    rows = max(1, _BLOCK_ELEMENTS // len(real))
    out = [(radii / (torch.cdist(fake[s:s + rows], real) + eps)).amax(dim=1)  # [b]
           for s in range(0, len(fake), rows)]
    return torch.cat(out)


def volume_realism(log_volume: torch.Tensor, realism: torch.Tensor, labels: torch.Tensor, *,
                   class_names: list[str] | None = None, n_boot: int = 1000, seed: int = 0,
                   min_count: int = 10) -> dict[str, Any]:
    """How realism relates to log-volume among the same candidates: Spearman's rank correlation
    between ``log_volume`` ``[N]`` and ``realism`` ``[N]`` (log-realism ranks the same) over all
    candidates and within each class of ``labels`` ``[N]`` (int) holding at least ``min_count``
    candidates, each with a paired-bootstrap 95 % CI (``bootstrap.spearman_ci``), plus the share
    of candidates inside the real manifold (realism ≥ 1) in the top and bottom volume quartiles.
    Returns ``{"all": {...}, "per_class": {name: {...}}, "quartiles": {...}}`` (JSON-able)."""
    lv = torch.as_tensor(log_volume, dtype=torch.float64).flatten()
    rs = torch.as_tensor(realism, dtype=torch.float64).flatten()
    lab = torch.as_tensor(labels).flatten()
    if not (lv.shape == rs.shape == lab.shape) or lv.numel() < 2:
        raise ValueError(f"log_volume, realism and labels must be [N] alike with N >= 2, got "
                         f"{tuple(lv.shape)}, {tuple(rs.shape)}, {tuple(lab.shape)}")
    finite = torch.isfinite(lv) & torch.isfinite(rs)
    if not bool(finite.all()):
        raise ValueError(f"{int((~finite).sum())} candidates have a non-finite log-volume or "
                         "realism; choose a top_k whose singular values are all positive")

    def corr(mask: torch.Tensor) -> dict[str, float]:
        ci = bootstrap.spearman_ci(lv[mask], rs[mask], n_boot=n_boot, seed=seed)
        return {"spearman": float(ci["value"]), "lo": float(ci["lo"]), "hi": float(ci["hi"]),
                "n": int(mask.sum())}

    per_class = {}
    for c in sorted(set(lab.tolist())):
        mask = lab == c
        if int(mask.sum()) >= min_count:
            per_class[class_names[c] if class_names else str(c)] = corr(mask)
    lo_q, hi_q = torch.quantile(lv, 0.25), torch.quantile(lv, 0.75)
    inside = rs >= 1.0
    return {"all": corr(torch.ones_like(lab, dtype=torch.bool)), "per_class": per_class,
            "quartiles": {"inside_top_volume": float(inside[lv >= hi_q].double().mean()),
                          "inside_bottom_volume": float(inside[lv <= lo_q].double().mean()),
                          "mean_log_realism_top_volume": float(rs[lv >= hi_q].log().mean()),
                          "mean_log_realism_bottom_volume": float(rs[lv <= lo_q].log().mean())}}


def candidate_realism(G: torch.nn.Module, z: torch.Tensor, extractor: Any,
                      real_feats: torch.Tensor, *, psi: float = 1.0, k: int = 3,
                      classifier: torch.nn.Module | None = None, size: int | None = None,
                      batch_size: int = 500, class_labels: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Realism ``[N]`` of the images of latents ``z`` ``[N, d]`` (with the classes
    ``class_labels`` ``[N]`` they are generated with, for a conditional G) generated at
    truncation ``psi`` (``models.generate``, resized to ``size``² when given, e.g. a real set's size) in
    ``extractor``'s feature space against ``real_feats`` ``[R, F]`` (``realism_scores`` with
    ``k``), and their class ``[N]`` as ``classifier`` predicts it (all 0 without one)."""
    from . import attributes, models

    images = models.generate(G, z, psi=psi, labels=class_labels, batch_size=batch_size,
                             size=size)  # [N, C, H, W]
    feats = features.extract_features(extractor, images)  # [N, F]
    labels = (attributes.predict_classes(classifier, images, batch_size) if classifier is not None
              else torch.zeros(len(z), dtype=torch.int64))
    return realism_scores(real_feats, feats, k=k), labels


def bank_realism(G: torch.nn.Module, latents: torch.Tensor, log_volume: torch.Tensor,
                 extractor: Any, real_feats: torch.Tensor, *,
                 psis: tuple[float, ...] | list[float] = (1.0, 0.7), k: int = 3,
                 classifier: torch.nn.Module | None = None, class_names: list[str] | None = None,
                 size: int | None = None, n_boot: int = 1000, seed: int = 0,
                 class_labels: torch.Tensor | None = None) -> dict[str, Any]:
    """Realism against log-volume for a bank's candidates: for each truncation ψ in ``psis``, the
    images of ``latents`` ``[N, d]`` (generated with classes ``class_labels`` ``[N]`` for a
    conditional G) at ψ are scored (``candidate_realism``) and related to the
    candidates' ``log_volume`` ``[N]`` (of G at ψ = 1, as the bank holds it) by
    ``volume_realism``, in ``extractor``'s feature space, classes as ``classifier`` predicts
    them at that ψ (one class without it); the mean log-realism gets a bootstrap CI. Returns ``{"psi": {str(ψ): {"summary": volume_realism(...),
    "mean_log_realism": {"value", "lo", "hi"}}}, "arrays": {str(ψ): {"realism", "labels"}}}``;
    "arrays" (tensors) are for plots and are not JSON."""
    out: dict[str, Any] = {"psi": {}, "arrays": {}}
    for psi in psis:
        rs, labels = candidate_realism(G, latents, extractor, real_feats, psi=psi, k=k,
                                       classifier=classifier, size=size,
                                       class_labels=class_labels)
        mean = bootstrap.mean_ci(rs.log(), n_boot=n_boot, seed=seed)
        out["psi"][f"{psi:g}"] = {
            "summary": volume_realism(log_volume, rs, labels, class_names=class_names,
                                      n_boot=n_boot, seed=seed),
            "mean_log_realism": {key: float(mean[key]) for key in ("value", "lo", "hi")}}
        out["arrays"][f"{psi:g}"] = {"realism": rs, "labels": labels}
    return out


def correlation_table(by_psi: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per (ψ, class) of ``bank_realism(...)["psi"]``: Spearman's ρ between log-volume
    and realism with its 95 % CI and n, the "all" row first for each ψ; plus each ψ's mean
    log-realism."""
    import pandas as pd

    rows = []
    for psi, cell in by_psi.items():
        mean = cell["mean_log_realism"]
        summary = cell["summary"]
        for name, c in {"all": summary["all"], **summary["per_class"]}.items():
            rows.append({"psi": psi, "class": name, "n": c["n"],
                         "spearman": f"{c['spearman']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]",
                         "mean log realism (all)": f"{mean['value']:.3f} [{mean['lo']:.3f}, "
                                                   f"{mean['hi']:.3f}]"})
    return pd.DataFrame(rows).set_index(["psi", "class"])
