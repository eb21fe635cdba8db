"""The options of a spectra call: ``SpectraOptions`` (everything that changes the values, and so
a bank's identity) and ``SpeedOptions`` (sizes, memory and progress: never the values)."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..validation import ArgumentTypeError, check_choice, check_int, check_real
from .lanczos import KRYLOV_BLOCK
from .products import PRECISIONS

METHODS = ("exact", "projected", "topk")
# the fields that matter only for some methods (None in a bank identity otherwise)
_FIELD_METHODS = {"proj_dim": ("projected",), "seed": ("projected", "topk"),
                  "tol": ("topk",), "max_iter": ("topk",), "oversample": ("topk",)}


@dataclasses.dataclass(frozen=True)
class SpectraOptions:
    """Every option that changes the values of ``log_singular_values``: the estimator ``method``
    (``"exact"``, ``"projected"``, ``"topk"``); ``k`` singular values kept (None: all; required
    for topk); ``proj_dim`` rows of the projection (projected); ``seed`` of the projection or
    of the Krylov start block; ``tol``, ``max_iter``, ``oversample`` of topk's stopping rule;
    ``precision`` of the products (``PRECISIONS``; ``"tf32"``/``"bf16"`` need float32);
    ``dtype`` G runs in (None: the latents' dtype). Raises TypeError (``ArgumentTypeError``) for
    a wrong type and ValueError for an unknown method or precision, a missing k for topk, k < 1,
    proj_dim < 1 (projected), max_iter < 1 or oversample < 0 or tol <= 0 (topk)."""

    method: str = "exact"
    k: int | None = None
    proj_dim: int = 128
    seed: int = 0
    tol: float = 1e-6
    max_iter: int = 50
    oversample: int = 10
    precision: str = "highest"
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        method = check_choice("method", self.method, METHODS)
        check_int("k", self.k, low=1, optional=True)
        check_int("proj_dim", self.proj_dim, low=1 if method == "projected" else None)
        check_int("seed", self.seed)
        check_int("max_iter", self.max_iter, low=1 if method == "topk" else None)
        check_int("oversample", self.oversample, low=0 if method == "topk" else None)
        check_real("tol", self.tol)
        check_choice("precision", self.precision, PRECISIONS)
        if method == "topk" and self.k is None:
            raise ValueError("method='topk' needs k, the number of top singular values")
        if method == "topk" and not self.tol > 0:
            raise ValueError(f"topk needs tol > 0, got tol={self.tol}")
        if self.dtype is not None and not (isinstance(self.dtype, torch.dtype)
                                           and self.dtype.is_floating_point):
            raise ArgumentTypeError(f"dtype must be None or a floating-point torch.dtype, got "
                                    f"{self.dtype!r}")

    def replace(self, **changes: Any) -> SpectraOptions:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def identity(self, latent_dtype: torch.dtype | None = None) -> dict:
        """The fields a bank identity records: ``method``, ``k``, ``proj_dim``, ``seed``,
        ``tol``, ``max_iter``, ``oversample`` (None where the method ignores them), ``precision``,
        for topk its ``algorithm`` (``"block-lanczos-8"``: the iteration, not only its
        arguments, decides the numbers), and ``dtype``, the compute dtype as text (``dtype``, else
        ``latent_dtype``; None when both are None)."""
        out = {"method": self.method, "k": self.k}
        for name, methods in _FIELD_METHODS.items():
            out[name] = getattr(self, name) if self.method in methods else None
        out["precision"] = self.precision
        if self.method == "topk":
            out["algorithm"] = f"block-lanczos-{KRYLOV_BLOCK}"
        dtype = self.dtype or latent_dtype
        out["dtype"] = None if dtype is None else str(dtype).replace("torch.", "")
        return out

    def as_dict(self) -> dict:
        """Every field by name (dtype as text), e.g. for a run's recorded options."""
        out = dataclasses.asdict(self)
        out["dtype"] = None if self.dtype is None else str(self.dtype).replace("torch.", "")
        return out


@dataclasses.dataclass(frozen=True)
class SpeedOptions:
    """Options that change how fast a spectra call runs and what it prints, never its values
    (beyond rounding): ``chunk`` latents per pass and ``block`` directions vmapped at once (None:
    sized to the memory budget), ``memory`` the budget in bytes (None: ``memory_budget``'s
    default), ``progress`` a bar (None: on unless ``MAGNET_LAB_PROGRESS=0``). Raises TypeError
    (``ArgumentTypeError``) for a non-integer size or a non-bool progress and ValueError for a
    size below 1."""

    chunk: int | None = None
    block: int | None = None
    memory: int | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        for name in ("chunk", "block", "memory"):
            check_int(name, getattr(self, name), low=1, optional=True)
        if self.progress is not None and not isinstance(self.progress, bool):
            raise ArgumentTypeError(f"progress must be True, False or None, got "
                                    f"{self.progress!r}")

    def replace(self, **changes: Any) -> SpeedOptions:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """Every field by name."""
        return dataclasses.asdict(self)
