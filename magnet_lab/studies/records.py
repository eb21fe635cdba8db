"""What a study records about its generator and its bank (the ``generator`` and ``bank`` entries
of a results JSON)."""
from __future__ import annotations

from typing import Any

import torch

from .. import bank, latent, sampling
from ..models import generate


def generator_record(G: torch.nn.Module, spec: str, vb: bank.VolumeBank,
                     kind: str) -> dict[str, Any]:
    """``{"spec", "class", "z_dim", "image_shape" [C, H, W], "attributes", "fingerprint"}`` of
    generator ``G`` loaded from ``spec`` (its image shape from one image of its latent law, its
    fingerprint the one bank ``vb`` records), with attribute ``kind``."""
    drawn = latent.spec_of(G).draw(1, seed=0)  # z [1, d], labels [1] or None
    image = generate(G, drawn.z, labels=drawn.labels)  # [1, C, H, W]
    return {"spec": str(spec), "class": type(G).__name__, "z_dim": G.z_dim,
            "image_shape": list(image.shape[1:]), "attributes": kind,
            "fingerprint": vb.meta["identity"]["generator_fingerprint"]}


def volume_record(vb: bank.VolumeBank, top_k: int | None) -> dict[str, Any]:
    """``{"n", "rank", "log_volume_mean", "log_volume_std", "n_neg_inf"}`` of bank ``vb``: the
    mean and standard deviation of its candidates' log-volumes over the ``top_k`` largest σ
    (``sampling.log_volume``) and how many of them are −inf (a zero σ among the top_k: weight
    zero for ρ ≠ 0)."""
    log_vol = sampling.log_volume(vb.log_sv, top_k)  # [N]
    return {"n": len(vb), "rank": vb.rank, "log_volume_mean": float(log_vol.mean()),
            "log_volume_std": float(log_vol.std()), "n_neg_inf": int(torch.isinf(log_vol).sum())}
