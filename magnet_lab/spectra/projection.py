"""The projected estimator's matrix: a seeded P ``[proj_dim, D]`` with orthonormal rows
(Gaussian, then CholeskyQR2), cached per process, and P·J of a chunk of latents."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.func import vjp

from .products import jacobian_chunk, vjps

_P_CACHE: dict[tuple, Tensor] = {}  # projection_matrix's cache, least recently used first
CACHE_SIZE = 2  # projections kept (each can be GiBs: 3 GiB at StyleGAN2-1024, proj_dim 128)


def projection_matrix(D: int, proj_dim: int, seed: int, dtype: torch.dtype = torch.float64,
                      device: str | torch.device = "cpu") -> Tensor:
    """A seeded random projection ``[proj_dim, D]`` with orthonormal rows (P Pᵀ = I), cached.

    A standard Gaussian ``[D, proj_dim]`` is drawn in float64 on the CPU from ``torch.Generator``
    seeded with ``seed`` (so P is the same on every device, up to rounding), moved to ``device``
    and orthonormalised there in float64 by CholeskyQR2 (``orthonormal_columns``). That is the
    Haar-distributed Q of Keras' ``Orthogonal`` initializer. P is then cast to ``dtype`` and
    kept in a small cache keyed by (D, proj_dim, seed, dtype, device), so a bank build pays the
    draw once per process, not once per shard (at StyleGAN2-1024, D = 3·1024², it is 3 GiB of
    float64 and seconds of CPU work). The cached tensor is shared: do not modify it in place;
    ``clear_projection_cache()`` frees it. Raises ValueError if ``D`` or ``proj_dim`` is below 1
    or ``proj_dim > D``.
    """
    if D < 1 or proj_dim < 1:
        raise ValueError(f"D and proj_dim must be >= 1, got D={D}, proj_dim={proj_dim}")
    if proj_dim > D:
        raise ValueError(f"proj_dim={proj_dim} exceeds the output dimension D={D}: "
                         f"at most D orthonormal rows exist")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (int(D), int(proj_dim), int(seed), dtype, device)
    P = _P_CACHE.pop(key, None)
    if P is None:
        gen = torch.Generator().manual_seed(seed)
        A = torch.randn(D, proj_dim, generator=gen, dtype=torch.float64).to(device)  # [D, p]
        P = orthonormal_columns(A).T.to(dtype).contiguous()  # [proj_dim, D]
        del A
        while len(_P_CACHE) >= CACHE_SIZE:
            _P_CACHE.pop(next(iter(_P_CACHE)))
    _P_CACHE[key] = P  # most recently used last
    return P


def clear_projection_cache() -> None:
    """Drop the projections ``projection_matrix`` keeps (frees their host or device memory)."""
    _P_CACHE.clear()


def orthonormal_columns(A: Tensor) -> Tensor:
    """Q of A's thin QR with R's diagonal positive (``A: [D, p]`` float64, full column rank), by
    CholeskyQR2: exact to rounding for a well-conditioned Gaussian A (cond ≈ 1 + 2√(p/D)), and
    two p×p Gram matrices plus triangular solves, which a GPU does in milliseconds. Falls back
    to a Householder QR if a Cholesky factor fails."""
    Q = A
    try:
        for _ in range(2):
            L = torch.linalg.cholesky(Q.T @ Q)  # [p, p], lower
            Q = torch.linalg.solve_triangular(L, Q.T, upper=False).T  # A R⁻¹ with R = Lᵀ
        return Q
    except RuntimeError:  # not positive definite in floating point: fall back to Householder
        Q, R = torch.linalg.qr(A)
        return Q * torch.sign(torch.diagonal(R))


def projected_chunk(f, z_c: Tensor, P: Tensor, block: int, mode: str = "reverse") -> Tensor:
    """P·J at latents ``z_c [c, d]``: ``[c, proj_dim, d]``; ``reverse``: row r from the VJP with
    cotangent P[r]; ``forward``: P @ J with J from d JVPs (fewer passes when d < proj_dim)."""
    c = z_c.shape[0]
    if mode == "forward":
        J = jacobian_chunk(f, z_c, P.shape[1], "forward", block)  # [c, D, d]
        return P @ J  # [c, proj_dim, d]
    _, vjp_fn = vjp(f, z_c)
    rows = vjps(vjp_fn, lambda s, e: P[s:e, None, :].expand(-1, c, -1).contiguous(), len(P),
                block)  # [proj_dim, c, d]
    return rows.permute(1, 0, 2)  # [c, proj_dim, d]
