"""Notebook 03's real reference, chosen by the generator: a one-channel Fashion-MNIST generator is
scored in the classifier's features against the imbalanced test set (and the balanced one); an
RGB generator (a StyleGAN2/3 pickle) against the user's ``real_images`` in a standard extractor's
features, or, without them, not at all, and the reference says why."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import attributes, experiment, features, latent
from ..models import generate
from ..registry import load_classifier
from .real_reference import RealReference, real_reference

BALANCED_ONLY_FMNIST = ("the balanced second reference exists only for Fashion-MNIST (its whole "
                        "test set, every class equal); an RGB generator is scored against "
                        "real_images alone")


def check_generator_fits(G: torch.nn.Module, generator_id: str,
                         classifier: torch.nn.Module) -> None:
    """Check, before any bank is built, that ``classifier`` reads the images of the one-channel
    generator ``G`` (one image of its latent law, seed 0): its samples are scored in the
    classifier's feature space against the Fashion-MNIST test set. Raises ValueError naming
    the generator, its image shape and what the sweep does with RGB generators."""
    image = generate(G, latent.spec_of(G).draw(1, seed=0).z)  # [1, C, H, W]
    try:
        features.extract_features(classifier, image)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"the rho sweep scores a one-channel generator's samples in the classifier's "
            f"feature space against the Fashion-MNIST test set, and {generator_id} makes "
            f"{list(image.shape[1:])} images ({err}); an RGB generator (a StyleGAN2/3 pickle) "
            f"is scored against real_images in a feature extractor's space instead") from None


@dataclass(frozen=True)
class SweepReference:
    """``sweep_reference``'s result: ``real`` (the ``RealReference`` samples are scored against:
    features ``[N, F]``, the feature ``model``, ``n_classes``; or skipped, saying why),
    ``balanced`` (``[N_bal, F]``, Fashion-MNIST's whole test set in the same space; None for an
    RGB generator), ``kind`` ("class": Fashion-MNIST, "face": RGB, as ``attributes.kind_of``),
    ``size`` (generated images are resized to ``size``² before scoring and showing; None: as
    generated) and ``batch_size`` (images generated at once)."""

    real: RealReference
    balanced: torch.Tensor | None
    kind: str
    size: int | None
    batch_size: int

    @property
    def skipped(self) -> str | None:
        """Why the metrics are skipped (no ``real_images`` for an RGB generator), else None."""
        return self.real.description.get("skipped")

    @property
    def description(self) -> dict[str, Any]:
        """The results JSON's ``reference``: Fashion-MNIST's two sizes (``n_real_imbalanced``,
        ``n_real_balanced``), or the RGB reference's description (folder, n, size, extractor;
        or ``skipped``) with ``balanced_reference`` saying that the pair is Fashion-MNIST's."""
        if self.balanced is not None:
            return {"n_real_imbalanced": self.real.description["n"],
                    "n_real_balanced": len(self.balanced)}
        return {**self.real.description, "balanced_reference": BALANCED_ONLY_FMNIST}

    @property
    def space(self) -> str:
        """The feature space's name for axis labels ("classifier features", "inception
        features")."""
        if self.kind == "class":
            return "classifier features"
        return f"{self.real.description.get('feature_extractor', 'no')} features"

    @property
    def against(self) -> str:
        """The reference's name for titles ("held-out real (imbalanced)", "real_images")."""
        return "held-out real (imbalanced)" if self.kind == "class" else "real_images"


def sweep_reference(G: torch.nn.Module, generator_id: str,
                    classifier: str | os.PathLike | torch.nn.Module, *, seed: int,
                    real_images: str | Path | None = None, n_real: int = 10_000,
                    real_size: int = 256, feature_extractor: str = "inception",
                    extractor_weights: str | Path | None = None,
                    feature_layer: str | None = None,
                    device: str | torch.device | None = None) -> SweepReference:
    """The ρ sweep's reference for generator ``G``, by ``attributes.kind_of(G)``: one channel
    ("class"): ``classifier`` (a module, or a spec for ``load_classifier``) is checked to read
    G's images (``check_generator_fits``), the reference is the Fashion-MNIST test set
    subsampled with the training imbalance (split ``seed``) and ``balanced`` the whole test set,
    images scored as generated, 500 at a time; RGB ("face"): ``real_reference`` of
    ``n_real`` images of ``real_images`` at ``real_size``² in ``feature_extractor``'s space
    (``extractor_weights``, ``feature_layer``) on ``device``, or skipped without ``real_images``, no
    balanced reference, images resized to ``real_size``², 8 at a time. Raises ValueError as
    ``check_generator_fits`` and ``real_reference`` do, FileNotFoundError for a missing folder
    or extractor weights file."""
    kind = attributes.kind_of(G)
    if kind == "class":
        C = classifier if isinstance(classifier, torch.nn.Module) else load_classifier(classifier)
        check_generator_fits(G, generator_id, C)
        real = real_reference("class", C, seed=seed)
        balanced, _ = experiment.fmnist_reference(C, balanced=True)  # [10_000, F]
        return SweepReference(real, balanced, kind, None, 500)
    real = real_reference(kind, None, seed=seed, real_images=real_images, n_real=n_real,
                          real_size=real_size, feature_extractor=feature_extractor,
                          extractor_weights=extractor_weights, feature_layer=feature_layer,
                          device=device)
    return SweepReference(real, None, kind, real_size, 8)
