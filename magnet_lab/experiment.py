"""The study pipeline the notebooks share: candidates → bank → samples → images → evaluation.

``candidate_bank`` builds (or resumes from the cache) the volume bank of N seeded candidates
drawn from the generator's latent law (``latent.spec_of(G)``); a ``Sampler`` (ρ, top_k, exact
or authors' weights, with or without replacement, % MaGNET, ψ) turns a bank into indices,
``Sampler.indices(vb, n)``: the one draw path of the notebooks, the explorer and the command
line; ``models.generate`` makes images (truncation ψ is a generation-time setting);
``evaluate`` scores images against a real reference in the classifier's feature space, with
bootstrap CIs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from . import attributes, bank, bootstrap, features, latent, sampling
from .spectra import SpectraOptions, SpeedOptions
from .validation import check_class_ids


def candidate_bank(G: torch.nn.Module, generator_id: str, n: int, *, seed: int,
                   options: SpectraOptions | None = None,
                   shard_size: int = bank.DEFAULT_SHARD_SIZE,
                   directory: str | Path | None = None, latents: torch.Tensor | None = None,
                   labels: torch.Tensor | None = None, classes: Sequence[int] | None = None,
                   progress: bool = False, speed: SpeedOptions | None = None
                   ) -> bank.VolumeBank:
    """The volume bank of ``n`` candidates ``latent.spec_of(G).draw(n, seed=seed,
    classes=classes)`` for ``G`` (its latent law, drawn in float32 and cast to G's dtype; a
    conditional G's classes drawn uniformly over ``classes``, all by default, and stored as the
    bank's labels) or of ``latents`` ``[N, d]`` (with their ``labels`` ``[N]`` for a conditional
    G; e.g. a subset for an estimator comparison), built with ``spectra.log_singular_values(G,
    z, options)`` (``SpectraOptions``; None: exact with the projection/start seed ``seed``) by
    ``bank.build`` into ``directory/<bank.default_path name>`` (default: the cache), so it is
    reused exactly when the bank identity (weights fingerprint, latents and their law, every
    option that changes values, dtype, device) is the same, and resumed when interrupted; the
    spec's run options are recorded with it (``generator_options``) so ``sample`` loads G again
    as it was. ``options.k`` is the number of singular values computed (None: all); ``top_k``
    for the weights is chosen later, per sampler. ``speed`` (``SpeedOptions``) and ``progress``
    (a bar over the latents, advanced shard by shard) change speed and output only: the bank
    and its identity are the same without them (``MAGNET_LAB_PROGRESS=0`` turns the bar off).
    Returns the merged ``VolumeBank``. Raises ValueError as ``latent.spec_of`` and
    ``bank.build`` do."""
    spec = latent.spec_of(G)
    param = next(G.parameters())
    if latents is None:
        drawn = spec.draw(n, seed=seed, classes=classes)
        z, recorded = drawn.z, drawn.bank_arguments()
    else:
        z, recorded = latents, {"latent_law": None}
        if labels is not None:
            recorded |= {"labels": labels, "n_classes": spec.n_classes}
    z = z.to(param.device, param.dtype)
    options = SpectraOptions(seed=seed) if options is None else options
    speed = speed or SpeedOptions()
    if progress:
        speed = speed.replace(progress=True)
    return bank.build(G, z, generator_id=generator_id, shard_size=shard_size,
                      generator_options=spec.run_options, cache_root=directory, options=options,
                      speed=speed, **recorded)


def _check_seed(seed: Any, name: str = "seed") -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{name} must be a non-negative int, got {seed!r}")


CLASS_BALANCES = (None, "equal", "mass")


@dataclass(frozen=True)
class Sampler:
    """One sampler, as data: how to turn a bank (or fresh noise) into ``n`` latents.

    ``name`` labels it in tables and results. Bank samplers (the default) resample the bank's
    candidates with weights ``vol_top_k^rho`` (``top_k`` None: all of the bank's columns;
    ``exact_uniform`` divides out the candidates' prior, the log density of the bank's latent
    law, ``latent.law_of_bank``), with or without ``replace``ment, from
    ``torch.Generator().manual_seed(seed)``; ``magnet_fraction < 1`` is the MaGNET appendix's
    mixture (that fraction weighted, the rest plain, ``sampling.mixture_indices``).
    ``fresh_latents=True`` ignores the weights and draws fresh latents from ``seed`` instead (the
    truncation baseline; ``torch.randn(n, d)`` float32 for a Gaussian bank). ``psi`` is the
    truncation applied when generating images (``models.generate(G, z, psi=sampler.psi)``).

    Classes (a bank with ``labels``, i.e. of a conditional generator): ``classes`` restricts
    the draw to the candidates of those class ids (None: every class the bank holds; the
    weights are renormalised over the kept candidates). ``class_balance`` None pools the
    weights over the kept candidates (polarity may move mass between classes); ``"equal"`` is
    the authors' per-class sampler: weights normalised within each class and ``n`` split
    equally over the K classes (``sampling.equal_class_counts``: the first ``n mod K`` in
    sorted order get one more), each class drawn on its own (``sampling.per_class_indices``;
    the indices come grouped by class in sorted order); ``"mass"`` renormalises the weights
    within classes and gives class c the total mass ``class_mass`` (one entry per class of the
    draw: per entry of ``classes``, or per class the bank holds in sorted order; default the
    candidates' class shares, ``sampling.per_class_log_weights``), then draws once from the
    pooled result. Raises ValueError on construction for a non-finite ``rho``, a ``psi`` that
    is not finite and positive (ψ > 1 is anti-truncation), ``magnet_fraction`` outside
    ``[0, 1]``, a negative or non-integer ``seed``, a fresh-latent sampler with weights (``rho``
    ≠ 0 or ``exact_uniform``), an unknown ``class_balance``, repeated or negative ``classes``,
    a ``class_mass`` without ``class_balance="mass"``, of the wrong length or not non-negative
    with a positive sum, or ``"mass"`` with ``magnet_fraction < 1``.
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
    class_balance: str | None = None
    classes: tuple[int, ...] | None = None
    class_mass: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if isinstance(self.rho, bool) or not isinstance(self.rho, (int, float)) \
                or not math.isfinite(self.rho):
            raise ValueError(f"rho must be a finite number, got {self.rho!r}")
        if isinstance(self.psi, bool) or not isinstance(self.psi, (int, float)) \
                or not (math.isfinite(self.psi) and self.psi > 0):
            raise ValueError(f"psi must be a finite positive number (as models.truncate takes "
                             f"it), got {self.psi!r}")
        if not (isinstance(self.magnet_fraction, (int, float)) and 0 <= self.magnet_fraction <= 1):
            raise ValueError(f"magnet_fraction must be in [0, 1], got {self.magnet_fraction!r}")
        _check_seed(self.seed)
        if self.fresh_latents and (self.rho != 0 or self.exact_uniform):
            raise ValueError(f"sampler {self.name!r}: fresh latents are unweighted; rho and "
                             "exact_uniform apply to bank samplers only")
        self._check_class_options()

    def _check_class_options(self) -> None:
        if self.class_balance not in CLASS_BALANCES:
            raise ValueError(f"class_balance must be one of {list(CLASS_BALANCES)}, got "
                             f"{self.class_balance!r}")
        if self.classes is not None:  # a JSON list back to a tuple
            object.__setattr__(self, "classes", tuple(check_class_ids(self.classes)))
        if self.class_balance == "mass" and self.magnet_fraction != 1:
            raise ValueError("class_balance='mass' draws once from class-massed weights; the % "
                             "MaGNET mixture (magnet_fraction < 1) is per class: use "
                             "class_balance='equal' or None")
        if self.class_mass is None:
            return
        if self.class_balance != "mass":
            raise ValueError(f"class_mass applies to class_balance='mass' only (got "
                             f"class_balance={self.class_balance!r})")
        mass = list(self.class_mass) if isinstance(self.class_mass, (list, tuple)) else None
        if not mass or any(isinstance(m, bool) or not isinstance(m, (int, float))
                           or not math.isfinite(m) or m < 0 for m in mass) or sum(mass) <= 0:
            raise ValueError(f"class_mass must be a tuple of finite non-negative numbers with a "
                             f"positive sum, got {self.class_mass!r}")
        if self.classes is not None and len(mass) != len(self.classes):
            raise ValueError(f"class_mass has {len(mass)} entries but classes has "
                             f"{len(self.classes)}: one mass per requested class")
        object.__setattr__(self, "class_mass", tuple(float(m) for m in mass))

    def as_dict(self) -> dict[str, Any]:
        """The specification as a JSON-ready dict (for a results file); the class options
        appear only when set, so a pooled sampler's record is what it always was."""
        out = asdict(self)
        for key in ("class_balance", "classes", "class_mass"):
            if out[key] is None:
                del out[key]
            elif isinstance(out[key], tuple):
                out[key] = list(out[key])
        return out

    @property
    def per_class(self) -> bool:
        """Whether any class option is set (the draw then needs the bank's labels)."""
        return (self.class_balance, self.classes, self.class_mass) != (None, None, None)

    def draw_classes(self, vb: bank.VolumeBank) -> list[int]:
        """The class ids this sampler draws from bank ``vb``: ``classes`` as given, else every
        class the bank's labels hold, sorted. Raises ValueError for a bank without labels or a
        requested class with no candidate in the bank (naming the ones it has)."""
        if vb.labels is None:
            raise ValueError(f"sampler {self.name!r} has class options but the bank has no "
                             "labels (it is not a conditional generator's bank)")
        present = torch.unique(vb.labels).tolist()
        if self.classes is None:
            return present
        missing = sorted(set(self.classes) - set(present))
        if missing:
            shown = present if len(present) <= 20 else present[:20] + ["..."]
            raise ValueError(f"classes {missing} have no candidate in the bank; its classes are "
                             f"{shown}")
        return list(self.classes)

    def candidates(self, vb: bank.VolumeBank) -> torch.Tensor:
        """Indices ``[M]`` (int64, ascending) of the bank's candidates this sampler draws from:
        those of ``classes``, else all N. Raises ValueError as ``draw_classes`` does."""
        kept, _ = self._kept(vb)
        return torch.arange(len(vb)) if kept is None else kept

    def _kept(self, vb: bank.VolumeBank) -> tuple[torch.Tensor | None, list[int] | None]:
        """(indices ``[M]`` of the candidates of the draw's classes, or None for all of them;
        the draw's classes, or None when no class option is set)."""
        if not self.per_class:
            return None, None
        classes = self.draw_classes(vb)
        if self.classes is None:
            return None, classes
        keep = torch.isin(vb.labels, torch.tensor(classes, dtype=torch.int64))  # [N]
        return torch.nonzero(keep).flatten(), classes

    def _pooled(self, vb: bank.VolumeBank) -> torch.Tensor:
        """Normalised polarity log-weights ``[N]`` of all the bank's candidates (no classes)."""
        log_prior = None
        if self.exact_uniform:
            if vb.latents is None:
                raise ValueError("exact_uniform weights need the bank's latents")
            log_prior = latent.law_of_bank(vb).log_prior(vb.latents)  # [N]
        return sampling.log_weights(vb.log_sv, self.rho, top_k=self.top_k, log_prior=log_prior)

    def _class_mass(self, vb: bank.VolumeBank, labels: torch.Tensor, classes: list[int]
                    ) -> torch.Tensor:
        """Class masses ``[K]`` (float64, sum 1) aligned with ``classes``."""
        if self.class_mass is None:
            counts = torch.tensor([int((labels == c).sum()) for c in classes], dtype=torch.float64)
            return counts / counts.sum()
        if len(self.class_mass) != len(classes):
            raise ValueError(f"class_mass has {len(self.class_mass)} entries but the bank holds "
                             f"{len(classes)} classes {classes}: one mass per class, in that "
                             "order (or pass classes=...)")
        mass = torch.tensor(self.class_mass, dtype=torch.float64)
        return mass / mass.sum()

    def log_weights(self, vb: bank.VolumeBank) -> torch.Tensor:
        """Normalised polarity log-weights ``[N]`` (float64) of the bank's candidates:
        ``sampling.log_weights(vb.log_sv, rho, top_k, log_prior=...)`` with, for
        ``exact_uniform``, the log prior of the bank's latent law at its latents; with class
        options, −inf outside the draw's classes and renormalised over the kept candidates
        (``classes``), within classes to the class masses (``"mass"``), or within classes to
        equal class masses 1/K (``"equal"``, the law of its draws as n grows). Raises
        ValueError for a fresh-latent sampler (no weights over a bank), exact weights on a bank
        without latents or without a known law, class options on a bank without labels or with
        an unknown class, and as ``sampling.log_weights`` does."""
        if self.fresh_latents:
            raise ValueError(f"sampler {self.name!r} draws fresh latents: no weights over a bank")
        kept, classes = self._kept(vb)
        if classes is None:
            return self._pooled(vb)
        sub = vb if kept is None else vb.subset(kept)
        log_w = self._pooled(sub)  # [M]
        if self.class_balance is not None:
            mass = (torch.full((len(classes),), 1 / len(classes), dtype=torch.float64)
                    if self.class_balance == "equal" else self._class_mass(vb, sub.labels, classes))
            log_w = sampling.per_class_log_weights(log_w, _positions(sub.labels, classes), mass)
        return _scatter(log_w, kept, len(vb))

    def drawn_log_weights(self, vb: bank.VolumeBank) -> torch.Tensor:
        """Normalised log-weights ``[N]`` (float64) of the law ``indices`` draws from: the
        polarity weights ``w`` mixed with plain sampling, ``f·w + (1 − f)/M`` for ``f =
        magnet_fraction`` over the M kept candidates (f = 1: ``w`` itself); for ``"equal"`` the
        mixture is within each class (plain: ``1/N_c``), each class with mass 1/K. Raises
        ValueError as ``log_weights``."""
        log_w = self.log_weights(vb)  # [N], logsumexp 0
        f = float(self.magnet_fraction)
        if f == 1:
            return log_w
        kept, classes = self._kept(vb)
        if self.class_balance == "equal":
            labels = vb.labels
            n_c = torch.bincount(labels, minlength=max(classes) + 1).to(torch.float64)  # [C]
            plain = -torch.log(n_c[labels] * len(classes))  # [N] log 1/(K·N_c)
            plain = plain.masked_fill(~_in(labels, classes), -math.inf)
        else:
            m = log_w.numel() if kept is None else kept.numel()
            plain = torch.full_like(log_w, -math.log(m))
            if kept is not None:
                plain = _scatter(plain[kept], kept, len(vb))
        if f == 0:
            return plain
        return torch.logaddexp(math.log(f) + log_w, math.log1p(-f) + plain)

    def ess_fraction(self, vb: bank.VolumeBank) -> float:
        """ESS / M of ``log_weights(vb)`` (``sampling.ess_fraction``), in ``(0, 1]``, with M the
        candidates of the draw's classes (all N without ``classes``)."""
        log_w = self.log_weights(vb)
        kept, _ = self._kept(vb)
        return sampling.ess_fraction(log_w if kept is None else log_w[kept])

    def class_ess(self, vb: bank.VolumeBank, *, fraction: bool = False) -> dict[int, float]:
        """The effective sample size of the polarity weights within each class of the draw:
        ``{class: ESS_c}`` (``fraction``: ``ESS_c / N_c``, in (0, 1]), the number of
        candidates a per-class draw (``"equal"``) effectively chooses from; what matters when
        ``n_c`` draws are asked of class c. Raises ValueError as ``log_weights`` does."""
        log_w = Sampler(self.name, rho=self.rho, top_k=self.top_k,
                        exact_uniform=self.exact_uniform).log_weights(vb)  # [N] pooled
        out = {}
        for c in self.draw_classes(vb):
            sub = log_w[vb.labels == c]  # [N_c]
            if not bool(torch.isfinite(sub).any()):
                out[int(c)] = 0.0
                continue
            out[int(c)] = sampling.ess_fraction(sub) if fraction else sampling.ess(sub)
        return out

    def indices(self, vb: bank.VolumeBank, n: int) -> torch.Tensor:
        """Indices ``[n]`` (int64) into the bank, drawn with ``log_weights(vb)`` by
        ``sampling.resample`` (without replacement: Gumbel-top-n, the authors' procedure;
        ``replace``: i.i.d. draws from the weighted law) or, for ``magnet_fraction < 1``,
        ``sampling.mixture_indices``, from ``torch.Generator().manual_seed(seed)`` (the same
        sampler gives the same indices); ``"equal"`` draws each class on its own with
        ``sampling.per_class_indices`` (indices grouped by class in sorted order); ``classes``
        draws among the kept candidates only. Warns (``sampling.LowESSWarning``) when the
        weights collapse (per class for ``"equal"``). Raises ValueError for a fresh-latent
        sampler, as ``log_weights`` does, and as the resamplers do (e.g. ``n`` above the
        positive-weight candidates, or a class's share of ``n`` above its positive-weight
        candidates, without replacement)."""
        if self.fresh_latents:
            raise ValueError(f"sampler {self.name!r} draws fresh latents, not bank indices")
        log_w = self.log_weights(vb)  # [N]
        rng = torch.Generator().manual_seed(self.seed)
        kept, classes = self._kept(vb)
        if self.class_balance == "equal":
            counts = sampling.equal_class_counts(n, classes)
            for c in classes:
                sampling.check_ess(log_w[vb.labels == c])
            return sampling.per_class_indices(log_w, vb.labels, counts, replace=self.replace,
                                              fraction=self.magnet_fraction, rng=rng)
        sub_w = log_w if kept is None else log_w[kept]  # [M]
        sampling.check_ess(sub_w)
        if self.magnet_fraction == 1:
            idx = sampling.resample(sub_w, n, replace=self.replace, rng=rng)
        else:
            idx = sampling.mixture_indices(sub_w, n, self.magnet_fraction, rng=rng,
                                           replace=self.replace)
        return idx if kept is None else kept[idx]

    def inputs(self, vb: bank.VolumeBank, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The generator inputs of ``n`` draws: latents ``[n, d]`` and their class labels
        (int64 ``[n]``; None for a bank without labels), the bank's at ``indices(vb, n)``. Fresh
        latents come from the bank's latent law seeded with ``seed`` (Gaussian:
        ``torch.randn(n, d)``, float32), and, for a bank with labels, labels from the same
        generator afterwards: ``"equal"`` counts in sorted class order, ``"mass"`` i.i.d. with
        the class masses, else uniform over the draw's classes. Raises ValueError when the bank
        stores no latents, for fresh latents of a bank whose law is unknown, and as
        ``indices`` does."""
        if vb.latents is None:
            raise ValueError("the bank stores no latents (needed to resample them, and for d)")
        if not self.fresh_latents:
            idx = self.indices(vb, n)
            return vb.latents[idx], None if vb.labels is None else vb.labels[idx]
        law, rng = latent.law_of_bank(vb), torch.Generator().manual_seed(self.seed)
        if isinstance(law, latent.GaussianLaw):
            z = torch.randn(n, vb.z_dim, generator=rng)  # [n, d]
        else:
            z = law.sample(n, vb.z_dim, rng=rng)
        if vb.labels is None:
            if self.per_class:
                self.draw_classes(vb)  # raises: no labels
            return z, None
        classes = self.draw_classes(vb)
        if self.class_balance == "equal":
            counts = sampling.equal_class_counts(n, classes)
            labels = torch.cat([torch.full((k,), c, dtype=torch.int64) for c, k in counts.items()])
        else:
            if self.class_balance == "mass":
                mass = self._class_mass(vb, vb.labels[_in(vb.labels, classes)], classes)
            else:
                mass = torch.full((len(classes),), 1.0 / len(classes), dtype=torch.float64)
            pick = torch.multinomial(mass, n, replacement=True, generator=rng)  # [n]
            labels = torch.tensor(classes, dtype=torch.int64)[pick]
        return z, labels

    def latents(self, vb: bank.VolumeBank, n: int) -> torch.Tensor:
        """The latents ``[n, d]`` of ``inputs(vb, n)``: the bank's latents at ``indices(vb,
        n)``, or fresh ones from the bank's latent law seeded with ``seed``. A conditional
        generator also needs the labels: use ``inputs`` or ``images``. Raises as ``inputs``."""
        return self.inputs(vb, n)[0]

    def images(self, G: torch.nn.Module, vb: bank.VolumeBank, n: int, *,
               size: int | None = None, batch_size: int = 500) -> torch.Tensor:
        """Images ``[n, C, H, W]`` of ``inputs(vb, n)``: ``models.generate(G, z, psi=psi,
        labels=labels, size=size, batch_size=batch_size)``, so a conditional generator gets
        each candidate's class. Raises as ``inputs`` and ``models.generate`` do."""
        from . import models

        z, labels = self.inputs(vb, n)
        return models.generate(G, z, psi=self.psi, labels=labels, size=size,
                               batch_size=batch_size)


def _in(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Mask ``[N]`` of the labels among ``classes``."""
    return torch.isin(labels, torch.tensor(classes, dtype=torch.int64))


def _positions(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Each label's position in ``classes`` (int64 ``[N]``; every label must be in it)."""
    lookup = torch.full((max(classes) + 1,), -1, dtype=torch.int64)
    lookup[torch.tensor(classes, dtype=torch.int64)] = torch.arange(len(classes))
    return lookup[labels]


def _scatter(values: torch.Tensor, kept: torch.Tensor | None, n: int) -> torch.Tensor:
    """``values [M]`` at rows ``kept`` of an ``[n]`` tensor of −inf (``kept`` None: as is)."""
    if kept is None:
        return values
    out = torch.full((n,), -math.inf, dtype=values.dtype)
    out[kept] = values
    return out


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
                     root: str | Path | None = None, balanced: bool = False
                     ) -> tuple[torch.Tensor, dict[str, Any]]:
    """The held-out real reference of the Fashion-MNIST studies: features ``[N, F]`` (float64)
    under ``classifier`` of the **test** set subsampled with the training split's imbalance
    (``data.imbalanced_split(test_labels, seed=seed)``, what the generator was asked to model),
    or with ``balanced`` of the whole (balanced) test set, and a JSON-able description (dataset,
    split, seed, n)."""
    from . import data

    images, labels = data.fashion_mnist("test", root)
    if balanced:
        feats = features.extract_features(classifier, data.to_model_range(images))  # [N, F]
        return feats, {"dataset": "fashion-mnist", "split": "test", "n": len(labels)}
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
            images = s.images(G, vb, n, size=size, batch_size=batch_size)  # [n, C, S, S]
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
