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


def is_transformed(t: torch.Tensor) -> bool:
    """True inside torch.func transforms (vmap/jvp/grad), where values cannot be inspected."""
    probe = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)  # private API
    return bool(probe(t)) if probe is not None else False


def check_model_input(name: str, x: Any, shape: str) -> None:
    """A generator's input ``x`` (described as ``shape`` in messages) must be a floating,
    non-empty tensor with finite values; values go unchecked under torch.func transforms.
    Raises TypeError for a non-tensor or non-float tensor, ValueError otherwise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty {shape}, got shape {tuple(x.shape)}")
    if not is_transformed(x) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains {int((~torch.isfinite(x)).sum())} non-finite "
                         f"values (NaN/inf)")


def check_latent_batch(z: Any, z_dim: int, dtype: torch.dtype) -> torch.Tensor:
    """A mapping network's ``z`` as ``[B, z_dim]`` in ``dtype`` (a single ``[z_dim]`` becomes
    ``[1, z_dim]``), checked by ``check_model_input``; ValueError for another shape."""
    shape = f"[B, z_dim={z_dim}]"
    if isinstance(z, torch.Tensor) and z.ndim == 1 and z.shape[0] == z_dim:
        z = z[None]
    check_model_input("z", z, shape)
    if z.ndim != 2 or z.shape[1] != z_dim:
        raise ValueError(f"z must have shape {shape}, got {tuple(z.shape)}")
    return z.to(dtype)


def check_label_batch(c: Any, batch: int, c_dim: int, dtype: torch.dtype) -> torch.Tensor | None:
    """A mapping network's labels ``c`` as ``[batch, c_dim]`` in ``dtype``, or None for an
    unconditional network (``c_dim`` 0), which refuses labels; a conditional one refuses
    ``c=None`` and any other shape (ValueError, naming the expected shape)."""
    if c_dim == 0:
        if c is not None and (not isinstance(c, torch.Tensor) or c.numel() != 0):
            raise ValueError("this generator is unconditional (c_dim=0); pass c=None")
        return None
    shape = f"[B={batch}, c_dim={c_dim}]"
    if c is None:
        raise ValueError(f"this generator is conditional (c_dim={c_dim}); pass labels c "
                         f"{shape} (e.g. one-hot rows)")
    if isinstance(c, torch.Tensor) and c.ndim == 1 and c.shape[0] == c_dim and batch == 1:
        c = c[None]
    check_model_input("c", c, shape)
    if tuple(c.shape) != (batch, c_dim):
        raise ValueError(f"c must have shape {shape}, got {tuple(c.shape)}")
    return c.to(dtype)


def check_class_ids(classes: Any, n_classes: int | None = None, *,
                    name: str = "classes") -> list[int]:
    """``classes`` (a non-empty sequence of class ids: list, tuple, range) as a list of distinct
    ints in ``[0, n_classes)`` (``n_classes`` None: any id >= 0). Raises ValueError naming
    ``name`` for anything else (a scalar or string, an empty or repeated list, a bool or
    non-integer id, an id out of range), giving the offending class id."""
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
        raise ValueError(f"{name} must be a non-empty list of class ids, got {classes!r}")
    bound = "[0, {}]".format(n_classes - 1) if n_classes is not None else ">= 0"
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0 \
                or (n_classes is not None and c >= n_classes):
            raise ValueError(f"{name} must hold class ids {bound}, got class id {c!r} in "
                             f"{name}={list(classes)!r}")
    out = [int(c) for c in classes]
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must be distinct class ids, got {name}={out}")
    return out
