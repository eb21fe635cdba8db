"""The study pipeline the notebooks share: candidates → bank → samples → images → evaluation.

``candidate_bank`` builds (or resumes from the cache) the volume bank of N seeded Gaussian
candidates; a ``Sampler`` (ρ, top_k, exact or authors' weights, with or without replacement, ψ)
turns it into MaGNET/polarity samples (``polarity_indices`` / ``polarity_latents`` are the same
as functions); ``models.generate`` makes images (truncation ψ is a generation-time setting);
``evaluate`` scores images against a real reference in the classifier's feature space, with
bootstrap CIs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import attributes, bank, bootstrap, features, sampling
from .spectra import SpectraOptions, SpeedOptions


def candidate_bank(G: torch.nn.Module, generator_id: str, n: int, *, seed: int,
                   options: SpectraOptions | None = None,
                   shard_size: int = bank.DEFAULT_SHARD_SIZE,
                   directory: str | Path | None = None, latents: torch.Tensor | None = None,
                   progress: bool = False, speed: SpeedOptions | None = None
                   ) -> bank.VolumeBank:
    """The volume bank of ``n`` Gaussian candidates ``z = gaussian_latents(n, d, seed)`` for
    ``G`` (or of ``latents`` ``[N, d]``, e.g. a subset for an estimator comparison), built with
    ``spectra.log_singular_values(G, z, options)`` (``SpectraOptions``; None: exact with the
    projection/start seed ``seed``) by ``bank.build`` into ``directory/<bank.default_path
    name>`` (default: the cache), so it is reused exactly when the bank identity (weights
    fingerprint, latents, every option that changes values, dtype, device) is the same, and
    resumed when interrupted. ``options.k`` is the number of singular values computed (None:
    all); ``top_k`` for the weights is chosen later, per sampler. ``speed`` (``SpeedOptions``)
    and ``progress`` (a bar over the latents, advanced shard by shard) change speed and output
    only: the bank and its identity are the same without them (``MAGNET_LAB_PROGRESS=0`` turns
    the bar off). Returns the merged ``VolumeBank``."""
    param = next(G.parameters())
    if latents is None:
        z, law = sampling.gaussian_latents(n, G.z_dim, seed=seed), {"law": "gaussian", "seed": seed}
    else:
        z, law = latents, None
    z = z.to(param.device, param.dtype)
    options = SpectraOptions(seed=seed) if options is None else options
    speed = speed or SpeedOptions()
    if progress:
        speed = speed.replace(progress=True)
    return bank.build(G, z, generator_id=generator_id, shard_size=shard_size, latent_law=law,
                      cache_root=directory, options=options, speed=speed)


def polarity_log_weights(vb: bank.VolumeBank, rho: float, *, top_k: int | None = None,
                         exact_uniform: bool = False) -> torch.Tensor:
    """Normalised log-weights ``[N]`` of the bank's candidates for polarity ρ over the top_k
    largest singular values (ρ = 1: MaGNET). ``exact_uniform`` divides out the candidates' Gaussian
    prior (the theory's exact weights; see ``sampling.log_weights``); it needs the bank's latents.
    Raises ValueError for exact weights without latents and as ``sampling.log_weights`` does."""
    log_prior = None
    if exact_uniform:
        if vb.latents is None:
            raise ValueError("exact_uniform weights need the bank's latents")
        log_prior = sampling.gaussian_log_prior(vb.latents)
    return sampling.log_weights(vb.log_sv, rho, top_k=top_k, log_prior=log_prior)


def polarity_indices(vb: bank.VolumeBank, rho: float, n: int, *, seed: int,
                     top_k: int | None = None, exact_uniform: bool = False,
                     replace: bool = False) -> torch.Tensor:
    """Indices ``[n]`` (int64) of ``n`` candidates resampled with ``polarity_log_weights(vb, rho,
    ...)`` by ``sampling.resample`` with ``rng = torch.Generator().manual_seed(seed)``: without
    replacement (Gumbel-top-n, the authors' procedure, the default) or, with ``replace=True``,
    i.i.d. draws from the weighted law. Warns (``sampling.LowESSWarning``) when the weights
    collapse. Raises as ``sampling.resample`` does (e.g. ``n`` above the positive-weight
    candidates without replacement)."""
    log_w = polarity_log_weights(vb, rho, top_k=top_k, exact_uniform=exact_uniform)
    sampling.check_ess(log_w)
    return sampling.resample(log_w, n, replace=replace, rng=torch.Generator().manual_seed(seed))


def polarity_latents(vb: bank.VolumeBank, rho: float, n: int, *, seed: int,
                     top_k: int | None = None, exact_uniform: bool = False,
                     replace: bool = False) -> torch.Tensor:
    """The latents ``[n, d]`` of ``polarity_indices(vb, rho, n, ...)``. Raises ValueError when the
    bank stores no latents."""
    if vb.latents is None:
        raise ValueError("the bank stores no latents to resample")
    return vb.latents[polarity_indices(vb, rho, n, seed=seed, top_k=top_k,
                                       exact_uniform=exact_uniform, replace=replace)]


@dataclass(frozen=True)
class Sampler:
    """One sampler of a study, as data: how to turn a bank (or fresh noise) into ``n`` latents.

    ``name`` labels it in tables and results. Bank samplers (the default) resample the bank's
    candidates with weights ``vol_top_k^rho`` (``top_k`` None: all of the bank's columns;
    ``exact_uniform`` divides out the Gaussian prior), with or without ``replace``ment, from
    ``torch.Generator().manual_seed(seed)``; ``magnet_fraction < 1`` is the MaGNET appendix's
    mixture (that fraction weighted, the rest plain, ``sampling.mixture_indices``).
    ``fresh_latents=True`` ignores the weights and draws ``torch.randn(n, d)`` (float32) from
    ``seed`` instead: the truncation baseline. ``psi`` is the truncation applied when generating
    images (``models.generate(G, z, psi=sampler.psi)``). Raises ValueError on construction for a
    non-finite ``rho``, a ``psi`` that is not finite and positive (ψ > 1 is anti-truncation), ``magnet_fraction`` outside ``[0, 1]``, or a
    fresh-latent sampler with weights (``rho`` ≠ 0 or ``exact_uniform``).
    """

    name: str
    rho: float = 0.0
    top_k: int | None = None
    exact_uniform: bool = False
    psi: float = 1.0
    replace: bool = False
    magnet_fraction: float = 1.0
    fresh_latents: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if isinstance(self.rho, bool) or not isinstance(self.rho, (int, float)) \
                or not math.isfinite(self.rho):
            raise ValueError(f"rho must be a finite number, got {self.rho!r}")
        if isinstance(self.psi, bool) or not isinstance(self.psi, (int, float)) \
                or not (math.isfinite(self.psi) and self.psi > 0):
            raise ValueError(f"psi must be a finite positive number (as models.truncate takes it), "
                             f"got {self.psi!r}")
        if not (isinstance(self.magnet_fraction, (int, float)) and 0 <= self.magnet_fraction <= 1):
            raise ValueError(f"magnet_fraction must be in [0, 1], got {self.magnet_fraction!r}")
        if self.fresh_latents and (self.rho != 0 or self.exact_uniform):
            raise ValueError(f"sampler {self.name!r}: fresh latents are unweighted; rho and "
                             "exact_uniform apply to bank samplers only")

    def as_dict(self) -> dict[str, Any]:
        """The specification as a JSON-ready dict (for a results file)."""
        return asdict(self)

    def log_weights(self, vb: bank.VolumeBank) -> torch.Tensor:
        """``polarity_log_weights(vb, rho, top_k=..., exact_uniform=...)``: ``[N]`` float64.
        Raises ValueError for a fresh-latent sampler (it has no weights over the bank)."""
        if self.fresh_latents:
            raise ValueError(f"sampler {self.name!r} draws fresh latents: no weights over a bank")
        return polarity_log_weights(vb, self.rho, top_k=self.top_k,
                                    exact_uniform=self.exact_uniform)

    def ess_fraction(self, vb: bank.VolumeBank) -> float:
        """ESS / N of ``log_weights(vb)`` (``sampling.ess_fraction``), in ``(0, 1]``."""
        return sampling.ess_fraction(self.log_weights(vb))

    def indices(self, vb: bank.VolumeBank, n: int) -> torch.Tensor:
        """Indices ``[n]`` (int64) into the bank: ``polarity_indices`` (same seed, same draws) or,
        for ``magnet_fraction < 1``, ``sampling.mixture_indices``. Warns on a collapsed ESS;
        raises ValueError for a fresh-latent sampler and as the resamplers do."""
        if self.fresh_latents:
            raise ValueError(f"sampler {self.name!r} draws fresh latents, not bank indices")
        if self.magnet_fraction == 1:
            return polarity_indices(vb, self.rho, n, seed=self.seed, top_k=self.top_k,
                                    exact_uniform=self.exact_uniform, replace=self.replace)
        log_w = self.log_weights(vb)
        sampling.check_ess(log_w)
        return sampling.mixture_indices(log_w, n, self.magnet_fraction,
                                        rng=torch.Generator().manual_seed(self.seed),
                                        replace=self.replace)

    def latents(self, vb: bank.VolumeBank, n: int) -> torch.Tensor:
        """``n`` latents ``[n, d]``: the bank's latents at ``indices(vb, n)``, or fresh
        ``torch.randn(n, d)`` (float32) seeded with ``seed``. Raises ValueError when the bank
        stores no latents."""
        if vb.latents is None:
            raise ValueError("the bank stores no latents (needed to resample them, and for d)")
        if self.fresh_latents:
            return torch.randn(n, vb.z_dim, generator=torch.Generator().manual_seed(self.seed))
        return vb.latents[self.indices(vb, n)]


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
             n_boot: int = 200, seed: int = 0, n_classes: int | None = 10) -> dict[str, Any]:
    """Score generated ``images`` ``[M, C, H, W]`` against real features ``[N, F]``.

    Returns ``{"metrics": bootstrap.bootstrap_ci(...)}`` (FID, KID, precision, recall, density,
    coverage with 95 % CIs, in the feature space of ``classifier``, any module with
    ``features`` such as ``features.standard_extractor``), the raw ``"features"`` ``[M, F]`` and,
    unless ``n_classes`` is None (a feature extractor without classes), ``"classes"``:
    ``attributes.bias_measures`` of the predicted classes and the ``"predicted_labels"`` ``[M]``.
    """
    feats = features.extract_features(classifier, images)  # [M, F]
    out = {"metrics": bootstrap.bootstrap_ci(real_feats, feats, n_boot=n_boot, seed=seed),
           "features": feats}
    if n_classes is not None:
        labels = attributes.predict_classes(classifier, images)  # [M]
        out["classes"] = attributes.bias_measures(labels, n_classes, n_boot=n_boot, seed=seed)
        out["predicted_labels"] = labels
    return out


def fmnist_reference(classifier: torch.nn.Module, *, seed: int = 0,
                     root: str | Path | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The held-out real reference of the Fashion-MNIST studies: features ``[N, F]`` (float64)
    under ``classifier`` of the **test** set subsampled with the training split's imbalance
    (``data.imbalanced_split(test_labels, seed=seed)``, what the generator was asked to model),
    and a JSON-able description (n, split, seed)."""
    from . import data

    images, labels = data.fashion_mnist("test", root)
    idx = data.imbalanced_split(labels, seed=seed)
    feats = features.extract_features(classifier, data.to_model_range(images[idx]))  # [N, F]
    return feats, {"dataset": "fashion-mnist", "split": "test, imbalanced_split",
                   "split_seed": int(seed), "n": len(idx)}


def _interval(ci: dict[str, Any]) -> dict[str, float]:
    """``{"value", "lo", "hi"}`` of a bootstrap result, as floats (what results files keep)."""
    return {k: float(ci[k]) for k in ("value", "lo", "hi")}


def generator_quality(G: torch.nn.Module, classifier: torch.nn.Module, *, n: int = 2000,
                      seed: int = 1, n_boot: int = 200, reference_seed: int = 0,
                      root: str | Path | None = None) -> dict[str, Any]:
    """A generator's plain-sampling (ρ = 0, ψ = 1) quality, as its sidecar records it: ``n``
    images from ``sampling.gaussian_latents(n, d, seed)`` scored by ``evaluate`` against
    ``fmnist_reference`` (held-out, imbalanced test set) in the classifier's feature space.
    Returns ``{"metrics": {name: {"value", "lo", "hi"}} (precision, recall, density, coverage,
    fid, kid; 95 % percentile bootstrap CIs, n_boot replicates), "kl_to_uniform": {...},
    "n", "seed", "n_boot", "reference": {...}}``. The same function judges every embedded
    generator, so their numbers compare."""
    from . import models

    real, ref = fmnist_reference(classifier, seed=reference_seed, root=root)
    z = sampling.gaussian_latents(n, G.z_dim, seed=seed)  # [n, d]
    ev = evaluate(models.generate(G, z), real, classifier, n_boot=n_boot, seed=seed)
    return {"metrics": {m: _interval(v) for m, v in ev["metrics"].items()},
            "kl_to_uniform": _interval(ev["classes"]["kl_to_uniform"]),
            "n": int(n), "seed": int(seed), "n_boot": int(n_boot), "reference": ref,
            "feature_space": "embedded classifier's penultimate features (128-d)"}


def mixture_evaluations(G: torch.nn.Module, vb: bank.VolumeBank, real_feats: torch.Tensor,
                        classifier: torch.nn.Module, *, psis: list[float],
                        fractions: list[float], n: int, top_k: int | None, seed: int,
                        n_boot: int = 200, replace: bool = False,
                        n_classes: int | None = None, size: int | None = None,
                        batch_size: int = 500) -> list[dict[str, Any]]:
    """The MaGNET appendix's "% MaGNET" table: for each truncation ψ (one row) and each MaGNET
    fraction f (``Sampler(rho=1, magnet_fraction=f)``: f·n MaGNET draws, the rest plain, from the
    same bank), ``n`` images generated at ψ and scored by ``evaluate`` against ``real_feats``
    in ``classifier``'s feature space (``n_classes``: also its class bias, under "classes"),
    after resizing them to ``size``² (``models.generate(size=...)``) when given, e.g. to a real
    set's size; ``batch_size`` images are generated at once.
    Returns ``[{"psi": ψ, "fractions": {str(f): {metric: {"value", "lo", "hi"}}}}, ...]``, one
    entry per ψ in order. The weights are the bank's (volumes of G at ψ = 1, the learned
    manifold); ψ acts at generation time, as in the authors' montage."""
    from . import models

    rows = []
    for psi in psis:
        row: dict[str, Any] = {"psi": float(psi), "fractions": {}}
        for f in fractions:
            s = Sampler(f"{100 * f:g}% MaGNET, psi={psi:g}", rho=1.0, top_k=top_k, psi=psi,
                        replace=replace, magnet_fraction=f, seed=seed)
            images = models.generate(G, s.latents(vb, n), psi=psi, size=size,
                                     batch_size=batch_size)  # [n, C, S, S]
            ev = evaluate(images, real_feats, classifier, n_boot=n_boot, seed=seed,
                          n_classes=n_classes)
            cell = {m: _interval(v) for m, v in ev["metrics"].items()}
            if n_classes is not None:
                cell["kl_to_uniform"] = _interval(ev["classes"]["kl_to_uniform"])
            row["fractions"][f"{f:g}"] = cell
        rows.append(row)
    return rows


def mixture_table(rows: list[dict[str, Any]], metrics: tuple[str, ...] = ("precision", "recall",
                                                                          "fid")):
    """``mixture_evaluations``' rows as a pandas DataFrame: one row per ψ, columns
    ``(metric, "% MaGNET")`` holding "value [lo, hi]" strings (for display)."""
    import pandas as pd

    table = {}
    for row in rows:
        cells = {}
        for f, ms in row["fractions"].items():
            for m in metrics:
                v = ms[m]
                cells[(m, f"{100 * float(f):g}%")] = f"{v['value']:.3f} [{v['lo']:.3f}, {v['hi']:.3f}]"
        table[f"ψ={row['psi']:g}"] = cells
    return pd.DataFrame.from_dict(table, orient="index")
