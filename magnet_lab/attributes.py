"""Semantic attributes of generated samples and how biased their distribution is.

For Fashion-MNIST the attribute is the class predicted by the embedded classifier
(``load_classifier("fmnist")``); for faces, gender, age group and smile from ``faces``
(``predict_face_attributes``, re-exported here; ``face_bias_measures``). Bias measures
work on any categorical attribute: the class distribution, its KL divergence to the uniform
distribution (``log C − H(p)``, in nats; 0 means perfectly balanced) and the max/min class
frequency ratio (1 means balanced, ``inf`` when a class never occurs), each with a percentile
bootstrap CI over the samples.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from . import bootstrap, data
from .faces import FACE_ATTRIBUTES, MISSING, age_groups, predict_face_attributes  # noqa: F401
from .models import batched


def predict_classes(classifier: torch.nn.Module, images: torch.Tensor,
                    batch_size: int = 1000) -> torch.Tensor:
    """Predicted class (argmax of the logits) for ``images`` ``[N, C, H, W]`` in [-1, 1]:
    int64 ``[N]`` on CPU. The classifier runs in eval mode without gradients, in batches
    (``models.batched``). Raises ValueError for images that are not ``[N, C, H, W]``, N >= 1."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be [N, C, H, W] with N >= 1, got "
                         f"{tuple(getattr(images, 'shape', ()))}")
    return batched(lambda x: classifier(x).argmax(1), images, batch_size=batch_size,
                   model=classifier)


def class_distribution(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Frequency of each class among ``labels`` (int ``[N]`` in 0..n_classes-1): float64
    ``[n_classes]`` summing to 1 (``data.class_frequencies``). Raises ValueError for an empty or
    out-of-range input."""
    return data.class_frequencies(labels, n_classes)


def kl_to_uniform(p: torch.Tensor) -> float:
    """KL(p ‖ uniform) = log C − H(p) in nats for a distribution ``p`` ``[C]`` (0·log 0 = 0)."""
    p = torch.as_tensor(p, dtype=torch.float64)
    if p.ndim != 1 or (p < 0).any() or not math.isclose(float(p.sum()), 1.0, abs_tol=1e-9):
        raise ValueError("p must be a 1-D probability vector")
    nz = p[p > 0]
    return float(math.log(p.numel()) + (nz * nz.log()).sum())


def max_min_ratio(p: torch.Tensor) -> float:
    """max_c p_c / min_c p_c for a distribution ``p`` ``[C]``; ``inf`` if a class has p_c = 0."""
    p = torch.as_tensor(p, dtype=torch.float64)
    lo = float(p.min())
    return math.inf if lo == 0 else float(p.max()) / lo


def bias_measures(labels: torch.Tensor, n_classes: int, *, n_boot: int = 1000,
                  seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Class distribution and bias of ``labels`` (int ``[N]``) with bootstrap CIs.

    Returns ``{"n", "class_freq": [{"value", "lo", "hi", ...}] * C, "kl_to_uniform": {...},
    "max_min_ratio": {...}}``: each entry is ``bootstrap.bootstrap_statistic``'s percentile CI over
    resampled label sets (seeded). A max/min ratio CI is reported as computed; replicates in which
    a rare class vanishes are infinite, so it is computed with the frequency floored at 1/(2N)
    (documented in ``"max_min_ratio"["floor"]``) to keep the interval finite.
    """
    labels = torch.as_tensor(labels).long()
    n = labels.numel()
    dist = lambda idx: class_distribution(labels[idx], n_classes)  # noqa: E731
    floor = 1.0 / (2 * n)
    out: dict[str, Any] = {"n": n}
    out["class_freq"] = [bootstrap.bootstrap_statistic(lambda idx, c=c: float(dist(idx)[c]), n,
                                                       n_boot, seed, level=level)
                         for c in range(n_classes)]
    out["kl_to_uniform"] = bootstrap.bootstrap_statistic(lambda idx: kl_to_uniform(dist(idx)), n,
                                                         n_boot, seed, level=level)
    out["max_min_ratio"] = bootstrap.bootstrap_statistic(
        lambda idx: max_min_ratio(dist(idx).clamp_min(floor)), n, n_boot, seed, level=level)
    out["max_min_ratio"]["floor"] = floor
    return out


def face_bias_measures(face_attributes: dict[str, torch.Tensor], name: str,
                       **kwargs: Any) -> dict[str, Any]:
    """``bias_measures`` of the categorical face attribute ``name`` (a key of
    ``FACE_ATTRIBUTES``) from the dict of ``predict_face_attributes``, over the images where it is
    known (a face was found, and for ``smiling`` its mouth lies inside the image); adds
    ``"classes"`` (the class names) and ``"n_missing"`` (images left out). ``kwargs`` go to
    ``bias_measures``. Raises ValueError for an unknown ``name`` or when no image has a value."""
    if name not in FACE_ATTRIBUTES:
        raise ValueError(f"name must be one of {sorted(FACE_ATTRIBUTES)}, got {name!r}")
    labels = torch.as_tensor(face_attributes[name])
    if not bool((labels != MISSING).any()):
        raise ValueError(f"{name} is missing in all {labels.numel()} images (no face found)")
    return attribute_bias(labels, list(FACE_ATTRIBUTES[name]), **kwargs)


ATTRIBUTE_KINDS = ("class", "face")


def attribute_kind(kind: str, images: torch.Tensor) -> str:
    """Resolve a notebook's ``attributes`` parameter: "class" (the classifier's predicted class),
    "face" (gender, age group, smile) or "auto" — "face" for RGB images ``[N, 3, H, W]``, "class"
    otherwise. Raises ValueError for another value."""
    if kind == "auto":
        return "face" if images.ndim == 4 and images.shape[1] == 3 else "class"
    if kind not in ATTRIBUTE_KINDS:
        raise ValueError(f"attributes must be 'auto' or one of {ATTRIBUTE_KINDS}, got {kind!r}")
    return kind


def kind_of(G: torch.nn.Module, kind: str = "auto") -> str:
    """The attribute kind of generator ``G`` for a notebook's ``attributes`` parameter: ``kind``
    itself when it is "class" or "face", else (``"auto"``) ``attribute_kind`` of one image of G
    (drawn from its latent law, ``latent.spec_of``, seed 0): "face" for RGB, "class" otherwise.
    Raises ValueError for another ``kind``."""
    if kind != "auto":
        return attribute_kind(kind, torch.empty(0))
    from . import latent
    from .models import generate

    drawn = latent.spec_of(G).draw(1, seed=0)  # z [1, d], labels [1] or None
    return attribute_kind(kind, generate(G, drawn.z, labels=drawn.labels))  # [1, C, H, W]


def semantic_attributes(images: torch.Tensor, kind: str,
                        classifier: torch.nn.Module | None = None) -> dict[str, dict[str, Any]]:
    """The categorical attributes of ``images`` ``[N, C, H, W]`` in [-1, 1] behind one interface:
    ``{name: {"labels": int64 [N] (MISSING = -1 where unknown), "classes": [names]}}``. ``kind``
    "class": ``{"class": ...}`` from ``predict_classes(classifier, images)`` (class names from the
    classifier's sidecar); "face": ``gender``, ``age_group`` and ``smiling`` from
    ``predict_face_attributes``. Raises ValueError for an unknown kind or a missing classifier."""
    if kind == "class":
        if classifier is None:
            raise ValueError("attributes 'class' need a classifier")
        names = getattr(classifier, "sidecar", {}).get("class_names") or list(data.CLASS_NAMES)
        return {"class": {"labels": predict_classes(classifier, images), "classes": list(names)}}
    if kind == "face":
        faces = predict_face_attributes(images)
        return {name: {"labels": faces[name], "classes": list(FACE_ATTRIBUTES[name])}
                for name in FACE_ATTRIBUTES}
    raise ValueError(f"kind must be one of {ATTRIBUTE_KINDS}, got {kind!r}")


def attribute_bias(labels: torch.Tensor, classes: list[str], **kwargs: Any) -> dict[str, Any]:
    """``bias_measures`` of one categorical attribute over the samples where it is known (labels
    != MISSING), plus ``"classes"`` and ``"n_missing"``; ``kwargs`` go to ``bias_measures``.
    When no sample has a value (e.g. no face found) it says so: ``n`` 0 and ``class_freq``,
    ``kl_to_uniform``, ``max_min_ratio`` None."""
    labels = torch.as_tensor(labels).long()
    known = labels != MISSING
    if not bool(known.any()):
        return {"n": 0, "class_freq": None, "kl_to_uniform": None, "max_min_ratio": None,
                "classes": list(classes), "n_missing": labels.numel()}
    out = bias_measures(labels[known], len(classes), **kwargs)
    out.update(classes=list(classes), n_missing=int((~known).sum()))
    return out


def latent_attributes(G: torch.nn.Module, z: torch.Tensor, kind: str,
                      classifier: torch.nn.Module | None = None, *, psi: float = 1.0,
                      labels: torch.Tensor | None = None, chunk: int = 256
                      ) -> dict[str, dict[str, Any]]:
    """``semantic_attributes`` of the images ``G`` makes from latents ``z`` ``[N, d]`` (with
    their class ``labels`` ``[N]`` for a conditional G, ``models.generate``) at truncation
    ``psi``, generated ``chunk`` latents at a time and never all held at once (face images are
    made at 512², the face models' working size, 8 per batch), so N may be a whole bank at
    1024². Returns ``{name: {"labels": int64 [N], "classes": [names]}}``."""
    from .models import generate

    size, batch = (512, 8) if kind == "face" else (None, 500)
    given = [None] * len(z.split(chunk)) if labels is None else labels.split(chunk)
    parts = [semantic_attributes(generate(G, zc, psi=psi, labels=yc, size=size,
                                          batch_size=batch), kind, classifier)
             for zc, yc in zip(z.split(chunk), given)]
    return {name: {"labels": torch.cat([p[name]["labels"] for p in parts]),
                   "classes": parts[0][name]["classes"]} for name in parts[0]}
