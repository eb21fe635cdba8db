"""Input checks shared by the package: errors that name the problem, raised before torch does."""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

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


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (e.g. ``2.5`` or ``True`` for a count). It is a TypeError by
    kind and also a ValueError, so code that treats bad input as ValueError (the command line's
    one-line user errors, older callers) still catches it."""


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None,
              optional: bool = False) -> int | None:
    """``value`` as an int, checked: ``ArgumentTypeError`` unless an integer (bool is not; None
    passes when ``optional``), ValueError naming ``name`` if below ``low`` or above ``high``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an integer, got {value!r} "
                                f"({type(value).__name__})")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {name}={value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {name}={value!r}")
    return int(value)


def check_real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
               positive: bool = False, optional: bool = False) -> float | None:
    """``value`` as a finite float, checked: ``ArgumentTypeError`` unless a real number (bool is
    not; None passes when ``optional``), ValueError naming ``name`` if NaN/inf, not > 0 when
    ``positive``, or outside [``low``, ``high``]."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a real number, got {value!r} "
                                f"({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {name}={value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {name}={value!r}")
    if low is not None and value < low or high is not None and value > high:
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ValueError(f"{name} must be in {bounds}, got {name}={value!r}")
    return float(value)


def check_positive_int(name: str, value: Any, *, optional: bool = False) -> int | None:
    """``check_int(name, value, low=1, optional=optional)``: a count or size of at least 1."""
    return check_int(name, value, low=1, optional=optional)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``; ValueError naming ``name`` and the choices."""
    if value not in tuple(choices):
        raise ValueError(f"unknown {name} {value!r}; expected one of {tuple(choices)}")
    return value
