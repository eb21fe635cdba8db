"""The ``topk`` estimator: block Lanczos on JᵀJ in latent space, J never formed.

Golub & Underwood 1977; randomized block Krylov, Musco & Musco 2015. From a seeded Gaussian
block of ``KRYLOV_BLOCK`` directions, fully reorthogonalised: each step costs ``KRYLOV_BLOCK``
JVPs and as many VJPs, the Ritz values come from an m × m matrix. σ below about
sqrt(eps)·σ_max are not resolved (Ritz values of JᵀJ): use ``exact`` or ``projected`` for
rank-deficient tails.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.func import vjp

from .products import FlatGenerator, jvps, vjps

KRYLOV_BLOCK = 8  # directions added to the Krylov basis per step (2·8 products a step)


def start_block(d: int, b: int, seed: int, like: Tensor) -> Tensor:
    """The seeded start of the iteration: a Gaussian ``[d, b]`` drawn in float64 on the CPU from
    ``torch.Generator().manual_seed(seed)``, orthonormalised, in ``like``'s dtype and device."""
    gen = torch.Generator().manual_seed(seed)
    omega = torch.linalg.qr(torch.randn(d, b, generator=gen, dtype=torch.float64)).Q
    return omega.to(like)  # [d, b], orthonormal


def topk_chunk(f: FlatGenerator, z_c: Tensor, k: int, omega: Tensor, block: int, tol: float,
               max_iter: int, min_dim: int, r: int) -> tuple[Tensor, int]:
    """Block Lanczos on JᵀJ at latents ``z_c [c, d]``; returns (σ_1..k ``[c, k]`` float64
    descending, the number of latents that hit ``max_iter``).

    The Krylov space span{Ω, JᵀJΩ, (JᵀJ)²Ω, ...} ⊂ R^d grows by one block of b = ``omega``'s
    width per step: b JVPs (Y = J X) then b VJPs (Z = JᵀY = JᵀJ X). Each new block is Z made
    orthogonal to every earlier block (twice, then QR: full reorthogonalisation, cheap in R^d),
    so V = [X_0, X_1, ...] stays orthonormal and the Ritz values of JᵀJ on it, the eigenvalues
    of T = Vᵀ(JᵀJ V) (m × m, float64), are lower bounds on σ(J)² that converge much faster
    than subspace iteration's (Chebyshev-accelerated). A latent stops at its first step with
    m >= ``min_dim`` at which every top-k σ moved by <= ``tol`` relative, or when V spans R^r
    (then σ are exact); it then leaves the active set, so its result does not depend on which
    other latents share the chunk. ``block`` is how many directions are vmapped at once.
    """
    c, d = z_c.shape
    cols = lambda V: lambda s, e: V[:, :, s:e].permute(2, 0, 1).contiguous()  # -> [e-s, c, n]

    def products(z_a: Tensor, f_a: FlatGenerator) -> Callable[[Tensor], Tensor]:
        _, vjp_fn = vjp(f_a, z_a)

        def gram(X: Tensor) -> Tensor:  # X: [a, d, b] -> JᵀJ X: [a, d, b]
            n = X.shape[-1]
            Y = jvps(f_a, z_a, cols(X), n, block).permute(1, 2, 0)  # [a, D, b]
            return vjps(vjp_fn, cols(Y), n, block).permute(1, 2, 0)
        return gram

    out = torch.zeros(c, k, dtype=torch.float64, device=z_c.device)
    active = torch.arange(c, device=z_c.device)
    gram = products(z_c, f)
    X = omega.expand(c, -1, -1)  # [a, d, b], orthonormal columns
    V, W = X[..., :0], X[..., :0]  # [a, d, m]: the basis and JᵀJ times it
    prev = None
    for _ in range(max_iter):
        Z = gram(X)  # [a, d, b]
        V, W = torch.cat([V, X], -1), torch.cat([W, Z], -1)
        m = V.shape[-1]
        T = V.to(torch.float64).mT @ W.to(torch.float64)  # [a, m, m]
        lam = torch.linalg.eigvalsh((T + T.mT) / 2).flip(-1)[:, :k]  # [a, min(m, k)]
        sv = lam.clamp_min(0).sqrt()
        if m >= min_dim and prev is not None and prev.shape[1] == k or m >= r:
            scale = torch.maximum(sv, sv[:, :1] * 1e-12)  # σ_j ~ 0 counts as settled
            settled = ((sv - prev).abs() <= tol * scale).all(1) if m < r else \
                torch.ones(len(sv), dtype=torch.bool, device=sv.device)
            out[active[settled]] = sv[settled]
            if bool(settled.all()):
                return out, 0
            if bool(settled.any()):
                keep = ~settled
                active, V, W, Z, sv = active[keep], V[keep], W[keep], Z[keep], sv[keep]
                gram = products(z_c[active], f.take(active))
        prev = sv
        X = Z - V @ (V.mT @ Z)  # the next block: JᵀJ X orthogonal to the basis, twice
        X = X - V @ (V.mT @ X)
        X = torch.linalg.qr(X[..., :min(X.shape[-1], r - m)]).Q
        X = torch.linalg.qr(X - V @ (V.mT @ X)).Q  # [a, d, b'] (a breakdown gives new directions)
    out[active] = sv  # [a, k]: the caller made sure max_iter steps hold k directions
    return out, len(active)
