"""Input checks shared by the package: errors that name the problem, raised before torch does."""
from __future__ import annotations

import torch


def check_latents(z: torch.Tensor, z_dim: int | None = None, name: str = "z") -> torch.Tensor:
    """Check that ``z`` is a finite floating tensor ``[B, d]`` (d == ``z_dim`` when given).

    Returns ``z`` unchanged. Raises TypeError for a non-tensor or non-float tensor and ValueError
    for a wrong shape, an empty batch or NaN/inf entries, with the offending shape or count named.
    """
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, d], got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {z.dtype}")
    if z.ndim != 2:
        raise ValueError(f"{name} must have shape [B, d] (2-D), got shape {tuple(z.shape)}")
    if z.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(z.shape)})")
    if z_dim is not None and z.shape[1] != z_dim:
        raise ValueError(f"{name} must have shape [B, {z_dim}], got shape {tuple(z.shape)}")
    check_finite(z, name)
    return z


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise ValueError naming ``name`` and the count of NaN/inf entries if ``x`` has any."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        n_nan = int(torch.isnan(x).sum())
        raise ValueError(f"{name} contains non-finite values: {n_nan} NaN and "
                         f"{int(bad.sum()) - n_nan} inf of {x.numel()} entries")
    return x
