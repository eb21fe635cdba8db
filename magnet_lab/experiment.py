"""The study pipeline the notebooks share: candidates → bank → samples → images → evaluation.

``candidate_bank`` builds (or resumes from the cache) the volume bank of N seeded Gaussian
candidates; ``polarity_latents`` turns it into MaGNET/polarity samples; ``generate`` makes images
(with truncation ψ as a generation-time setting); ``evaluate`` scores images against a real
reference in the classifier's feature space, with bootstrap CIs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import attributes, bank, features, metrics, sampling


def candidate_bank(G: torch.nn.Module, generator_id: str, n: int, *, seed: int,
                   method: str = "exact", k: int | None = None, proj_dim: int = 128,
                   shard_size: int = bank.DEFAULT_SHARD_SIZE,
                   directory: str | Path | None = None, latents: torch.Tensor | None = None,
                   **spectra_kwargs: Any) -> bank.VolumeBank:
    """The volume bank of ``n`` Gaussian candidates ``z = gaussian_latents(n, d, seed)`` for
    ``G`` (or of ``latents`` ``[N, d]``, e.g. a subset for an estimator comparison), built with
    ``spectra.log_singular_values(method, k, proj_dim, seed, **spectra_kwargs)`` by
    ``bank.build`` into ``directory/<bank.default_path name>`` (default: the cache), so it is
    reused exactly when the bank identity (weights fingerprint, latents, every spectra option,
    dtype, device) is the same, and resumed when interrupted. ``k`` is the number of singular
    values computed (None: all); ``top_k`` for the weights is chosen later, per sampler.
    Returns the merged ``VolumeBank``."""
    param = next(G.parameters())
    if latents is None:
        z, law = sampling.gaussian_latents(n, G.z_dim, seed=seed), {"law": "gaussian", "seed": seed}
    else:
        z, law = latents, None
    z = z.to(param.device, param.dtype)
    options = dict(method=method, k=k, proj_dim=proj_dim, seed=seed, **spectra_kwargs)
    identity = bank.bank_identity(G, z, latent_law=law, **options)
    path = bank.default_path(identity, generator_id)
    if directory is not None:
        path = Path(directory) / path.name
    return bank.build(G, z, path, generator_id=generator_id, shard_size=shard_size,
                      latent_law=law, **options)


def polarity_log_weights(vb: bank.VolumeBank, rho: float, *, top_k: int | None = None,
                         exact_uniform: bool = False) -> torch.Tensor:
    """Normalised log-weights ``[N]`` of the bank's candidates for polarity ρ over the top-k
    singular values (ρ = 1: MaGNET). ``exact_uniform`` divides out the candidates' Gaussian prior
    (the theory's exact weights; see ``sampling.log_weights``); it needs the bank's latents."""
    log_prior = None
    if exact_uniform:
        if vb.latents is None:
            raise ValueError("exact_uniform weights need the bank's latents")
        log_prior = sampling.gaussian_log_prior(vb.latents)
    return sampling.log_weights(vb.log_sv, rho, top_k=top_k, log_prior=log_prior)


def polarity_indices(vb: bank.VolumeBank, rho: float, n: int, *, seed: int,
                     top_k: int | None = None, exact_uniform: bool = False) -> torch.Tensor:
    """Indices ``[n]`` of ``n`` candidates resampled without replacement (Gumbel-top-k, seeded)
    with ``polarity_log_weights(vb, rho, ...)``. Warns (``sampling.LowESSWarning``) when the
    weights collapse."""
    log_w = polarity_log_weights(vb, rho, top_k=top_k, exact_uniform=exact_uniform)
    sampling.check_ess(log_w)
    return sampling.resample(log_w, n, replace=False, generator=torch.Generator().manual_seed(seed))


def polarity_latents(vb: bank.VolumeBank, rho: float, n: int, *, seed: int,
                     top_k: int | None = None, exact_uniform: bool = False) -> torch.Tensor:
    """The latents ``[n, d]`` of ``polarity_indices(vb, rho, n, ...)``."""
    if vb.latents is None:
        raise ValueError("the bank stores no latents to resample")
    return vb.latents[polarity_indices(vb, rho, n, seed=seed, top_k=top_k,
                                       exact_uniform=exact_uniform)]


def metric_table(evaluations: dict[str, dict[str, Any]],
                 columns: tuple[str, ...] = ("precision", "recall", "density", "coverage", "fid",
                                             "kid")):
    """A pandas DataFrame (one row per sampler) of the metric values in ``evaluations``
    (``{sampler: evaluate(...)}``), with ``_lo``/``_hi`` columns for the 95 % CIs."""
    import pandas as pd

    rows = []
    for name, ev in evaluations.items():
        row = {"sampler": name}
        for c in columns:
            m = ev["metrics"][c]
            row.update({c: m["value"], f"{c}_lo": m["lo"], f"{c}_hi": m["hi"]})
        rows.append(row)
    return pd.DataFrame(rows).set_index("sampler")


def evaluate(images: torch.Tensor, real_feats: torch.Tensor, classifier: torch.nn.Module, *,
             n_boot: int = 200, seed: int = 0, n_classes: int = 10) -> dict[str, Any]:
    """Score generated ``images`` ``[M, C, H, W]`` against real features ``[N, F]``.

    Returns ``{"metrics": metrics.bootstrap_ci(...)}`` (FID, KID, precision, recall, density,
    coverage with 95 % CIs, in the classifier's feature space), ``"classes"``:
    ``attributes.bias_measures`` of the predicted classes, and the raw ``"predicted_labels"``
    ``[M]`` and ``"features"`` ``[M, F]`` for further comparisons.
    """
    feats = features.extract_features(classifier, images)  # [M, F]
    labels = attributes.predict_classes(classifier, images)  # [M]
    return {"metrics": metrics.bootstrap_ci(real_feats, feats, n_boot=n_boot, seed=seed),
            "classes": attributes.bias_measures(labels, n_classes, n_boot=n_boot, seed=seed),
            "predicted_labels": labels, "features": feats}
