"""Per-class quality of a class-conditional generator, in the classifier's feature space.

For each requested class: images made with that class as the condition (``class_images``),
scored against that class's real images (``real_features_by_class``) as ``experiment.evaluate``
scores images (``bootstrap.bootstrap_ci``: precision, recall, density, coverage, FID with 95 %
bootstrap CIs; KID on request, its bootstrap is the slow one), plus ``agreement``:
the fraction of the images the classifier assigns to the requested class, with its CI
(``per_class_quality``). ``class_quality_table`` lays the result out one row per class.
Everything returned is JSON-able (floats, ints, lists), so a sidecar or results file can keep it.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import attributes, bootstrap, data, features, latent
from .models import batched
from .validation import check_class_ids, check_int, check_real

DEFAULT_METRICS = ("precision", "recall", "density", "coverage", "fid")

__all__ = ["DEFAULT_METRICS", "class_images", "class_quality_table", "per_class_quality", "real_features_by_class"]


def real_features_by_class(classifier: nn.Module, *, split: str = "test",
                           classes: Sequence[int] | None = None,
                           root: str | Path | None = None) -> dict[int, torch.Tensor]:
    """Classifier features of the real Fashion-MNIST images of each class: ``{class: [n_c, F]}``
    (float64, CPU; ``features.extract_features``) of ``split`` ("train" or "test"; the test set
    has 1000 images per class), for ``classes`` (None: all 10). Raises ValueError for an unknown
    split or class id, FileNotFoundError as ``data.fashion_mnist`` does."""
    images, labels = data.fashion_mnist(split, root)  # [N, 28, 28] uint8, [N]
    wanted = check_class_ids(list(range(len(data.CLASS_NAMES))) if classes is None else classes,
                            len(data.CLASS_NAMES))
    return {c: features.extract_features(classifier, data.to_model_range(images[labels == c]))
            for c in wanted}


def class_images(G: nn.Module, classes: list[int], n_per_class: int, *, seed: int,
                 truncation: float | None = None, batch_size: int = 500
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_per_class`` images of each class in ``classes`` from a class-conditional generator:
    ``(images [N, C, H, W] float32 in [-1, 1], labels int64 [N])`` with N = len(classes) ·
    n_per_class, class-major (the first ``n_per_class`` rows are ``classes[0]``). Latents come
    from G's latent law (``latent.spec_of(G)``) in one draw from ``torch.Generator()
    .manual_seed(seed)``; G is called as ``G(z, c)`` with one-hot ``c [B, n_classes]``.
    ``truncation`` (a truncated-normal law only, BigGAN's): z ~ truncation · truncnorm(−b, b)
    and G called with ``truncation=`` (its batch-norm statistics); None: the law and run options
    G has. Raises ValueError for an unconditional G, a class outside [0, n_classes), a bad count
    or seed, or a truncation for a generator whose law is not truncated-normal."""
    spec = latent.spec_of(G)
    if spec.n_classes is None:
        raise ValueError("class_images needs a class-conditional generator (its latent spec has "
                         "n_classes None)")
    classes = check_class_ids(classes, spec.n_classes)
    check_int("n_per_class", n_per_class, low=1)
    check_int("seed", seed, low=0)
    law, call = spec.law, G
    if truncation is not None:
        t = check_real("truncation", truncation, positive=True, high=1.0)
        if not isinstance(law, latent.TruncatedNormalLaw):
            raise ValueError(f"truncation applies to a truncated-normal latent law (BigGAN's); "
                             f"this generator's law is {law.name}: set its own run options "
                             "instead (e.g. G.with_options(psi=...))")
        law = latent.TruncatedNormalLaw(bound=law.bound, scale=t)
        call = G.with_options(truncation=t)
    n = len(classes) * n_per_class
    z = law.sample(n, spec.z_dim, rng=torch.Generator().manual_seed(seed))  # [N, d]
    labels = torch.tensor(classes, dtype=torch.int64).repeat_interleave(n_per_class)  # [N]
    zc = torch.cat([z.double(), F.one_hot(labels, spec.n_classes).double()], dim=1)  # [N, d + K]

    def make(x: torch.Tensor) -> torch.Tensor:
        return call(x[:, :spec.z_dim], x[:, spec.z_dim:]).clamp(-1, 1)  # [b, C, H, W]

    images = batched(make, zc, batch_size=batch_size, model=call).float()
    return images, labels


def _interval(ci: dict[str, Any]) -> dict[str, float]:
    return {k: float(ci[k]) for k in ("value", "lo", "hi")}


def per_class_quality(images: torch.Tensor, labels: torch.Tensor,
                      real_by_class: dict[int, torch.Tensor], classifier: nn.Module, *,
                      seed: int = 0, n_boot: int = 200,
                      metrics: Sequence[str] = DEFAULT_METRICS) -> dict[int, dict[str, Any]]:
    """Quality of generated ``images [N, C, H, W]`` requested as classes ``labels [N]``, class by
    class: ``{class: {"n", "metrics": {name: {"value", "lo", "hi"}}, "agreement": {"value", "lo",
    "hi"}, "predicted": [counts per class]}}``. ``metrics`` (names: ``DEFAULT_METRICS``, "kid"
    too on request) is ``bootstrap.bootstrap_ci`` of that class's images' features against
    ``real_by_class[c]`` (``[n_c, F]``, e.g. ``real_features_by_class``), as
    ``experiment.evaluate`` computes it, in ``classifier``'s feature space;
    ``agreement`` is the fraction of them the classifier assigns to c (``bootstrap.mean_ci``);
    all CIs 95 % percentile bootstrap, ``n_boot`` replicates seeded with ``seed``. Raises
    ValueError for mismatched images and labels, or a class missing from ``real_by_class``."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be [N, C, H, W] with N >= 1, got "
                         f"{tuple(getattr(images, 'shape', ()))}")
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be integer [N={images.shape[0]}], got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    labels = labels.long()
    missing = sorted(set(labels.tolist()) - set(real_by_class))
    if missing:
        raise ValueError(f"no real features for class(es) {missing}; real_by_class has "
                         f"{sorted(real_by_class)}")
    out: dict[int, dict[str, Any]] = {}
    for c in sorted(set(labels.tolist())):
        imgs = images[labels == c]  # [n_c, C, H, W]
        feats = features.extract_features(classifier, imgs)  # [n_c, F]
        cis = bootstrap.bootstrap_ci(real_by_class[c], feats, n_boot=n_boot, seed=seed,
                                     metrics=metrics)
        pred = attributes.predict_classes(classifier, imgs)  # [n_c]
        hits = (pred == c).double()
        agreement = bootstrap.mean_ci(hits, n_boot, seed)
        n_out = int(max(int(pred.max()) + 1, len(data.CLASS_NAMES)))
        out[c] = {"n": int(imgs.shape[0]),
                  "metrics": {m: _interval(v) for m, v in cis.items()},
                  "agreement": _interval(agreement),
                  "predicted": torch.bincount(pred, minlength=n_out).tolist()}
    return out


def class_quality_table(quality: dict[int, dict[str, Any]],
                        columns: tuple[str, ...] = ("agreement", "precision", "recall", "fid"),
                        class_names: Sequence[str] | None = None):
    """``per_class_quality``'s result as a pandas DataFrame, one row per class (indexed by its
    name from ``class_names``, default Fashion-MNIST's, or its id), with ``n``, each column's
    value and ``_lo``/``_hi`` 95 % bounds. Raises KeyError naming an unknown column."""
    import pandas as pd

    names = list(data.CLASS_NAMES) if class_names is None else list(class_names)
    rows = []
    for c, q in sorted(quality.items(), key=lambda kv: int(kv[0])):
        c = int(c)
        row: dict[str, Any] = {"class": names[c] if c < len(names) else c, "n": q["n"]}
        for col in columns:
            v = q["agreement"] if col == "agreement" else q["metrics"].get(col)
            if v is None:
                raise KeyError(f"unknown column {col!r}; known: agreement, "
                               f"{sorted(q['metrics'])}")
            row.update({col: v["value"], f"{col}_lo": v["lo"], f"{col}_hi": v["hi"]})
        rows.append(row)
    return pd.DataFrame(rows).set_index("class")
