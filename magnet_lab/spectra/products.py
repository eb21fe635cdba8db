"""Jacobian-vector products of a generator: JVPs and VJPs in blocks, a public product counter,
the precision flags of the products, and G as a function of z alone (flattened, conditioned).

Every estimator in ``magnet_lab.spectra`` reaches G's Jacobian only through ``jvps`` and
``vjps`` here, so ``count_products()`` counts all of them: a benchmark or test reads how many
products a call needed without patching anything.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Callable

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

Generator = Callable[..., Tensor]
PRECISIONS = ("highest", "tf32", "bf16")


@dataclasses.dataclass(eq=False)  # counters are told apart by identity
class ProductCount:
    """Products evaluated inside a ``count_products()`` block, in rows (directions × latents):
    ``jvp`` Jacobian-vector products J·v, ``vjp`` vector-Jacobian products uᵀ·J."""

    jvp: int = 0
    vjp: int = 0

    @property
    def total(self) -> int:
        """JVPs plus VJPs."""
        return self.jvp + self.vjp


_COUNTERS: list[ProductCount] = []  # the open count_products() blocks, innermost last


@contextlib.contextmanager
def count_products() -> Iterator[ProductCount]:
    """Count the JVP and VJP rows (directions × latents) that ``magnet_lab.spectra`` evaluates
    inside the block: yields a ``ProductCount`` that fills in as the block runs (nested blocks
    each count what ran inside them)."""
    count = ProductCount()
    _COUNTERS.append(count)
    try:
        yield count
    finally:
        _COUNTERS.remove(count)


@contextlib.contextmanager
def precision_flags(precision: str) -> Iterator[None]:
    """Within the block, CUDA's TF32 matmuls and cuDNN convolutions are allowed exactly when
    ``precision == "tf32"`` (torch allows them for convolutions by default); restored after.
    Raises ValueError for a precision not in ``PRECISIONS``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class FlatGenerator:
    """G as a function of the latents alone, output flattened to ``[n, D]``: ``G(z)`` or, with
    conditioning ``c [B, ...]`` (rows matching the latents), ``G(z, c)``; under bfloat16
    autocast for ``precision="bf16"`` (output back in float32, so cotangents and the SVDs stay
    float32/float64). ``take(rows)`` is the same function for a subset of the latents."""

    def __init__(self, G: Generator, precision: str, device_type: str,
                 c: Tensor | None = None) -> None:
        self.G, self.precision, self.device_type, self.c = G, precision, device_type, c

    def take(self, rows: slice | Tensor) -> FlatGenerator:
        """This function for the latents ``rows`` (a slice or an index tensor) of the batch."""
        if self.c is None:
            return self
        return FlatGenerator(self.G, self.precision, self.device_type, self.c[rows])

    def raw(self, x: Tensor) -> Tensor:
        """G's output ``[n, ...]`` at latents x, unflattened, at full precision."""
        return self.G(x) if self.c is None else self.G(x, self.c)

    def __call__(self, x: Tensor) -> Tensor:
        if self.precision != "bf16":
            return self.raw(x).reshape(x.shape[0], -1)  # [n, D]
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            y = self.raw(x)
        return y.reshape(x.shape[0], -1).float()  # [n, D]


def jvps(f: Callable[[Tensor], Tensor], z_c: Tensor, tangent: Callable[[int, int], Tensor],
         n: int, block: int) -> Tensor:
    """J·v at latents ``z_c [c, d]`` for n directions, ``block`` vmapped at once (1: plain JVPs,
    no vmap): ``[n, c, D]``; ``tangent(s, e)`` gives directions s..e-1 as ``[e-s, c, d]``."""
    for count in _COUNTERS:
        count.jvp += n * len(z_c)
    push = (vmap(lambda v: jvp(f, (z_c,), (v,))[1]) if block > 1
            else lambda v: jvp(f, (z_c,), (v[0],))[1][None])
    return torch.cat([push(tangent(s, min(s + block, n))) for s in range(0, n, block)])


def vjps(vjp_fn: Callable, cotangent: Callable[[int, int], Tensor], n: int,
         block: int) -> Tensor:
    """uᵀ·J for n directions through ``vjp_fn`` (from ``torch.func.vjp``), ``block`` vmapped at
    once (1: plain VJPs, no vmap): ``[n, c, d]``; ``cotangent(s, e)``: ``[e-s, c, D]``."""
    pull = vmap(lambda u: vjp_fn(u)[0]) if block > 1 else lambda u: vjp_fn(u[0])[0][None]
    out = torch.cat([pull(cotangent(s, min(s + block, n))) for s in range(0, n, block)])
    for count in _COUNTERS:
        count.vjp += n * out.shape[1]
    return out


def basis(s: int, e: int, n: int, c: int, like: Tensor) -> Tensor:
    """Basis vectors e_s .. e_{e-1} of R^n, repeated for c latents: ``[e-s, c, n]``."""
    E = torch.zeros(e - s, n, dtype=like.dtype, device=like.device)
    E[torch.arange(e - s, device=like.device), torch.arange(s, e, device=like.device)] = 1
    return E[:, None, :].expand(-1, c, -1).contiguous()  # stride-0 tangents are slow to push


def jacobian_chunk(f: Callable[[Tensor], Tensor], z_c: Tensor, D: int, mode: str,
                   block: int) -> Tensor:
    """J at latents ``z_c [c, d]``: ``[c, D, d]``, by columns (``mode="forward"``, d JVPs) or
    rows (``"reverse"``, D VJPs)."""
    c, d = z_c.shape
    if mode == "forward":
        cols = jvps(f, z_c, lambda s, e: basis(s, e, d, c, z_c), d, block)  # [d, c, D]
        return cols.permute(1, 2, 0)
    _, vjp_fn = vjp(f, z_c)
    rows = vjps(vjp_fn, lambda s, e: basis(s, e, D, c, z_c), D, block)  # [D, c, d]
    return rows.permute(1, 0, 2)


def check_output(f: FlatGenerator, z_c: Tensor, start: int) -> int:
    """Run G on latents ``z_c [c, d]`` (rows start, start+1, ... of the call); return D, the
    size of one output, or raise TypeError/ValueError naming the problem (not a tensor, batch
    size changed, non-finite values with their latent indices)."""
    with torch.no_grad():
        out = f.raw(z_c)
    if not isinstance(out, Tensor):
        raise TypeError(f"G(z) must return a torch.Tensor, got {type(out).__name__}")
    c = z_c.shape[0]
    if out.ndim == 0 or out.shape[0] != c:
        raise ValueError(f"G(z) must keep the batch dimension: {c} latent(s) gave output "
                         f"shape {tuple(out.shape)}")
    bad = ~torch.isfinite(out.reshape(c, -1))  # [c, D]
    if bool(bad.any()):
        rows = (torch.nonzero(bad.any(1)).flatten() + start).tolist()
        more = " ..." if len(rows) > 10 else ""
        raise ValueError(f"G(z) contains {int(bad.sum())} non-finite values (NaN/inf) at latent "
                         f"indices {rows[:10]}{more}")
    return out[0].numel()
