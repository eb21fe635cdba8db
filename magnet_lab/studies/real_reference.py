"""The real images a study compares its samples with, in the feature space it compares them in."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import data, experiment, features


@dataclass(frozen=True)
class RealReference:
    """Real ``features`` ``[N, F]`` (None when skipped), the JSON-ready ``description`` (or
    ``{"skipped": why}``), the feature ``model`` the samples must be scored with (None when
    skipped), ``n_classes`` and ``class_names`` (the classifier's classes for class attributes,
    else None)."""

    features: torch.Tensor | None
    description: dict[str, Any]
    model: Any | None
    n_classes: int | None
    class_names: list[str] | None = None  # the classifier's class names, for class attributes

    @property
    def skipped(self) -> bool:
        """Whether there is no reference (face generator without ``real_images``)."""
        return self.features is None


def real_reference(kind: str, classifier: torch.nn.Module | None, *, seed: int,
                   real_images: str | Path | None = None, n_real: int = 10_000,
                   real_size: int = 256, feature_extractor: str = "inception",
                   extractor_weights: str | Path | None = None,
                   feature_layer: str | None = None,
                   device: str | torch.device | None = None) -> RealReference:
    """The reference for attribute ``kind``: "class" (Fashion-MNIST) is
    ``experiment.fmnist_reference(classifier, seed=seed)`` in the classifier's features;
    otherwise (faces) ``n_real`` images of the folder ``real_images`` at ``real_size``² in the
    ``feature_extractor``'s space (``features.standard_extractor`` from a local
    ``extractor_weights`` file, at its ``feature_layer``, None: the standard one, Inception's
    2048-d pool3), on ``device`` (default: the CPU), or, without ``real_images``, a skipped
    reference that says why. Raises ValueError for class attributes without a classifier and as
    the loaders do."""
    if kind == "class":
        if classifier is None:
            raise ValueError("class attributes need the classifier for their reference")
        feats, ref = experiment.fmnist_reference(classifier, seed=seed)
        return RealReference(feats, ref, classifier, len(data.CLASS_NAMES), list(data.CLASS_NAMES))
    if real_images is None:
        return RealReference(None, {"skipped": "no real_images given: precision/recall/FID "
                                               "need a real reference"}, None, None)
    model = features.standard_extractor(feature_extractor, extractor_weights, layer=feature_layer,
                                        device=device)
    reals = data.image_folder(real_images, n_real, size=real_size)  # [n_real, 3, S, S] uint8
    return RealReference(features.extract_features(model, reals),
                         {"folder": str(real_images), "n": len(reals), "size": real_size,
                          "feature_extractor": feature_extractor, "feature_layer": model.layer},
                         model, None)
