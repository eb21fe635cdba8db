"""Jacobian singular values of a generator at latents: exact, projected sketch, matrix-free top-k.

For a generator G mapping latents ``z: [B, d]`` to outputs ``[B, ...]`` (flattened to D), J(z) is
the D x d Jacobian; MaGNET/Polarity weights are built from its singular values, kept here as
``log_sv`` (float64, CPU, descending). Three estimators:

* ``exact``     the full J (d JVPs in forward mode when d <= D, else D VJPs), then all min(D, d)
                singular values. Holds chunk·D·d numbers: for small generators and references.
* ``projected`` the MaGNET authors' estimator: one seeded projection P [proj_dim, D] with
                orthonormal rows (Gaussian then QR, like Keras' ``Orthogonal`` initializer the TF1
                code uses), shared by all latents; σ(P·J) from proj_dim VJPs. A sketch of the
                spectrum, not σ(J) itself. P itself is proj_dim·D float64 numbers (3 GiB at
                StyleGAN2-1024 with proj_dim=128).
* ``topk``      randomized block subspace iteration (Halko, Martinsson & Tropp 2011, alg. 4.4)
                with k + oversample directions, re-orthonormalised each sweep; JVPs and VJPs only,
                J is never formed.

Work runs in two explicit loops so a device-specific fast path can replace either: latent chunks
(``chunk`` latents per pass, with a tqdm bar) and, inside a chunk, tangent blocks (``block``
JVP/VJP directions vmapped at once). Peak memory of one block is about chunk·block·(D + the
activations of G) numbers; the defaults keep chunk·block·max(D, d) and each chunk's dense arrays
under ``_BUDGET`` numbers. Lower ``block`` first when G's activations dominate (conv nets).
G must treat batch samples independently (eval mode) and be deterministic (fixed noise).
Singular values below σ_max·min(m, n)·eps(dtype) of the m x n matrix are numerically zero and
are returned as log 0 = -inf; ``magnet_lab.sampling`` decides what -inf means for the weights.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap
from tqdm.auto import tqdm

from .validation import check_latents

Generator = Callable[[Tensor], Tensor]
_METHODS = ("exact", "projected", "topk")
_MODES = ("auto", "forward", "reverse")
_BUDGET = 1 << 25  # numbers per dense block: 256 MiB in float64


def projection_matrix(D: int, proj_dim: int, seed: int, dtype: torch.dtype = torch.float64,
                      device: str | torch.device = "cpu") -> Tensor:
    """A seeded random projection ``[proj_dim, D]`` with orthonormal rows (P Pᵀ = I).

    A standard Gaussian ``[D, proj_dim]`` is drawn on the CPU from ``torch.Generator`` seeded with
    ``seed`` (so P is the same on every device), orthonormalised by QR in float64 with the signs of
    R's diagonal folded in (Haar-distributed), transposed, then cast to ``dtype`` on ``device``.
    Raises ValueError if ``D`` or ``proj_dim`` is below 1 or ``proj_dim > D``.
    """
    if D < 1 or proj_dim < 1:
        raise ValueError(f"D and proj_dim must be >= 1, got D={D}, proj_dim={proj_dim}")
    if proj_dim > D:
        raise ValueError(f"proj_dim={proj_dim} exceeds the output dimension D={D}: "
                         f"at most D orthonormal rows exist")
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(D, proj_dim, generator=gen, dtype=torch.float64)  # [D, proj_dim]
    Q, R = torch.linalg.qr(A)  # Q: [D, proj_dim]
    Q = Q * torch.sign(torch.diagonal(R))
    return Q.T.contiguous().to(dtype=dtype, device=device)  # [proj_dim, D]


def jacobian(G: Generator, z: Tensor, chunk: int | None = None, dtype: torch.dtype | None = None,
             mode: str = "auto", block: int | None = None,
             progress: bool | None = None) -> Tensor:
    """The full Jacobian ``[B, D, d]`` of G at each latent, output flattened to D, in ``dtype``.

    ``mode="forward"`` pushes the d basis tangents through JVPs, ``"reverse"`` pulls the D basis
    cotangents through VJPs, ``"auto"`` picks forward when d <= D. Runs G in ``dtype`` (None: z's
    dtype) on z's device, ``chunk`` latents and ``block`` directions at a time (None: sized by
    ``_BUDGET``). Raises TypeError/ValueError for bad z, a non-finite or batch-changing G(z), an
    unknown mode or a non-positive chunk/block.
    """
    if mode not in _MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {_MODES}")
    z, f, d, D = _setup(G, z, dtype)
    mode = ("forward" if d <= D else "reverse") if mode == "auto" else mode
    chunk = _size("chunk", chunk, len(z), _BUDGET // (D * d))
    n_dir = d if mode == "forward" else D
    block = _size("block", block, n_dir, _BUDGET // (chunk * max(D, d)))
    return _over_chunks(G, z, chunk, progress, "jacobian",
                        lambda z_c: _jacobian_chunk(f, z_c, D, mode, block))


def log_singular_values(G: Generator, z: Tensor, method: str = "exact", k: int | None = None,
                        proj_dim: int = 128, seed: int = 0, chunk: int | None = None,
                        dtype: torch.dtype | None = None, progress: bool | None = None,
                        tol: float = 1e-6, max_iter: int = 50, oversample: int = 10,
                        block: int | None = None) -> Tensor:
    """Log singular values of G's Jacobian at each latent: ``[B, r]`` float64 on CPU, descending.

    ``z: [B, d]``; r = min(D, d) for ``exact``, min(proj_dim, d) for ``projected`` (P from
    ``projection_matrix(D, proj_dim, seed)``), k for ``topk``; a given k keeps the top k of any
    method. G runs in ``dtype`` (None: z's dtype; z is cast), every SVD in float64; σ = 0 gives
    -inf. ``topk`` (k required) starts from a Gaussian ``[d, k + oversample]`` seeded by ``seed``
    and stops each latent after its first sweep in which every top-k σ changed by <= ``tol``
    relative (|Δσ_j| <= tol·σ_j) or after ``max_iter`` sweeps (2(k + oversample) products each,
    with a warning): ``tol`` bounds the last step, not the error, which is about tol·ρ/(1 - ρ) with
    ρ = (σ_{k+oversample+1}/σ_k)², i.e. below tol unless the spectrum is nearly flat past k.
    ``chunk``/``block``: latents per pass and directions vmapped at once (module docstring).
    ``progress`` None means on unless ``MAGNET_LAB_PROGRESS=0``. Raises ValueError (TypeError for
    wrong types) for bad z, non-finite G(z) (count and latent indices named), G(z) changing the
    batch size, unknown method, k < 1 or k above the rank bound, proj_dim < 1 or > D, or
    non-positive tol/max_iter/chunk/block.
    """
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {_METHODS}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive integer (number of singular values), got {k!r}")
    if method == "topk" and k is None:
        raise ValueError("method='topk' needs k, the number of top singular values")
    if method == "projected" and proj_dim < 1:
        raise ValueError(f"proj_dim must be >= 1, got proj_dim={proj_dim}")
    if method == "topk" and not (tol > 0 and max_iter >= 1 and oversample >= 0):
        raise ValueError(f"topk needs tol > 0, max_iter >= 1, oversample >= 0; got tol={tol}, "
                         f"max_iter={max_iter}, oversample={oversample}")
    z, f, d, D = _setup(G, z, dtype)
    if method == "projected":
        if proj_dim > D:
            raise ValueError(f"proj_dim={proj_dim} exceeds the output dimension D={D}")
        r, bound = min(proj_dim, d), f"min(proj_dim, d) = min({proj_dim}, {d})"
    else:
        r, bound = min(D, d), f"min(D, d) = min({D}, {d})"
    if k is not None and k > r:
        raise ValueError(f"k={k} exceeds the rank bound {bound} = {r}")
    keep = k if k is not None else r
    eps = torch.finfo(z.dtype).eps

    if method == "exact":
        mode = "forward" if d <= D else "reverse"
        chunk = _size("chunk", chunk, len(z), _BUDGET // (D * d))
        block = _size("block", block, r, _BUDGET // (chunk * max(D, d)))
        per_chunk = lambda z_c: _log_sv(_jacobian_chunk(f, z_c, D, mode, block), eps)[:, :keep]
    elif method == "projected":
        P = projection_matrix(D, proj_dim, seed, z.dtype, z.device)  # [proj_dim, D]
        chunk = _size("chunk", chunk, len(z), _BUDGET // max(proj_dim * d, D))
        block = _size("block", block, proj_dim, _BUDGET // (chunk * max(D, d)))
        per_chunk = lambda z_c: _log_sv(_projected_chunk(f, z_c, P, block), eps)[:, :keep]
    else:
        width = min(k + oversample, r)  # l: directions per sweep
        gen = torch.Generator().manual_seed(seed)
        omega = torch.randn(d, width, generator=gen, dtype=torch.float64).to(z)  # [d, l]
        chunk = _size("chunk", chunk, len(z), _BUDGET // (D * width))
        block = _size("block", block, width, _BUDGET // (chunk * max(D, d)))

        unsettled = []  # per chunk: latents that hit max_iter

        def per_chunk(z_c: Tensor) -> Tensor:
            Bt, n_unsettled = _topk_chunk(f, z_c, k, omega, block, tol, max_iter)
            unsettled.append(n_unsettled)
            return _log_sv(Bt, eps)[:, :keep]
        log_sv = _over_chunks(G, z, chunk, progress, "log_sv[topk]", per_chunk)
        if sum(unsettled):
            warnings.warn(f"topk: top-{k} singular values of {sum(unsettled)} of {len(z)} latents "
                          f"did not settle to tol={tol} in max_iter={max_iter} sweeps; raise "
                          f"max_iter or oversample", RuntimeWarning, stacklevel=2)
        return log_sv
    return _over_chunks(G, z, chunk, progress, f"log_sv[{method}]", per_chunk)


def _setup(G: Generator, z: Tensor, dtype: torch.dtype | None
           ) -> tuple[Tensor, Generator, int, int]:
    """Check and cast z; return (z, G with flattened output, d, D) after probing G on z[:1]."""
    check_latents(z)
    if dtype is not None:
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
        z = z.to(dtype)
    if isinstance(G, torch.nn.Module) and G.training:
        warnings.warn("G is in training mode (batch norm/dropout couple or randomise samples); "
                      "call G.eval() first", UserWarning, stacklevel=3)
    D = _check_output(G, z[:1], 0)
    f = lambda x: G(x).reshape(x.shape[0], -1)  # [c, D]
    return z, f, z.shape[1], D


def _check_output(G: Generator, z_c: Tensor, start: int) -> int:
    """Run G on one chunk (latents start, start+1, ...); return D or raise naming the problem."""
    with torch.no_grad():
        out = G(z_c)
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


def _size(name: str, value: int | None, n: int, default: int) -> int:
    """A chunk/block size: the user's (checked) or ``default`` clamped to [1, n]."""
    if value is None:
        return max(1, min(n, default))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return min(value, n)


def _over_chunks(G: Generator, z: Tensor, chunk: int, progress: bool | None, desc: str,
                 per_chunk: Callable[[Tensor], Tensor]) -> Tensor:
    """Concatenate ``per_chunk`` over latent chunks, checking each chunk's G(z) first."""
    on = os.environ.get("MAGNET_LAB_PROGRESS", "1") != "0" if progress is None else progress
    out = []
    with torch.no_grad(), tqdm(total=len(z), desc=desc, unit="latent", disable=not on) as bar:
        for start in range(0, len(z), chunk):
            z_c = z[start:start + chunk]  # [c, d]
            _check_output(G, z_c, start)
            out.append(per_chunk(z_c))
            bar.update(len(z_c))
    return torch.cat(out)


def _jvps(f: Generator, z_c: Tensor, tangent: Callable[[int, int], Tensor], n: int,
          block: int) -> Tensor:
    """J·v for n directions, ``block`` vmapped at once: [n, c, D]; tangent(s, e): [e-s, c, d]."""
    push = vmap(lambda v: jvp(f, (z_c,), (v,))[1])
    return torch.cat([push(tangent(s, min(s + block, n))) for s in range(0, n, block)])


def _vjps(vjp_fn: Callable, cotangent: Callable[[int, int], Tensor], n: int,
          block: int) -> Tensor:
    """uᵀ·J for n directions, ``block`` vmapped at once: [n, c, d]; cotangent(s, e): [e-s, c, D]."""
    pull = vmap(lambda u: vjp_fn(u)[0])
    return torch.cat([pull(cotangent(s, min(s + block, n))) for s in range(0, n, block)])


def _basis(s: int, e: int, n: int, c: int, like: Tensor) -> Tensor:
    """Basis vectors e_s .. e_{e-1} of R^n, repeated for c latents: [e-s, c, n]."""
    E = torch.zeros(e - s, n, dtype=like.dtype, device=like.device)
    E[torch.arange(e - s, device=like.device), torch.arange(s, e, device=like.device)] = 1
    return E[:, None, :].expand(-1, c, -1).contiguous()  # stride-0 tangents are slow to push


def _jacobian_chunk(f: Generator, z_c: Tensor, D: int, mode: str, block: int) -> Tensor:
    """J for one chunk: [c, D, d], by columns (forward) or rows (reverse)."""
    c, d = z_c.shape
    if mode == "forward":
        cols = _jvps(f, z_c, lambda s, e: _basis(s, e, d, c, z_c), d, block)  # [d, c, D]
        return cols.permute(1, 2, 0)
    _, vjp_fn = vjp(f, z_c)
    rows = _vjps(vjp_fn, lambda s, e: _basis(s, e, D, c, z_c), D, block)  # [D, c, d]
    return rows.permute(1, 0, 2)


def _projected_chunk(f: Generator, z_c: Tensor, P: Tensor, block: int) -> Tensor:
    """P·J for one chunk: [c, proj_dim, d], row r from the VJP with cotangent P[r]."""
    c = z_c.shape[0]
    _, vjp_fn = vjp(f, z_c)
    rows = _vjps(vjp_fn, lambda s, e: P[s:e, None, :].expand(-1, c, -1).contiguous(), len(P),
                 block)
    return rows.permute(1, 0, 2)  # [c, proj_dim, d]


def _topk_chunk(f: Generator, z_c: Tensor, k: int, omega: Tensor, block: int, tol: float,
                max_iter: int) -> tuple[Tensor, int]:
    """Subspace iteration for one chunk; returns (Jᵀ Q: [c, d, l], number of unsettled latents).

    Each latent stops at its own first settled sweep and leaves the active set, so its result
    does not depend on which other latents share the chunk.
    """
    c, d, l = *z_c.shape, omega.shape[1]
    cols = lambda V: lambda s, e: V[:, :, s:e].permute(2, 0, 1).contiguous()  # -> [e-s, c, n]

    def products(z_a: Tensor):
        _, vjp_fn = vjp(f, z_a)
        J = lambda V: _jvps(f, z_a, cols(V), l, block).permute(1, 2, 0)  # [a, d, l] -> [a, D, l]
        Jt = lambda U: _vjps(vjp_fn, cols(U), l, block).permute(1, 2, 0)  # [a, D, l] -> [a, d, l]
        return J, Jt

    out = z_c.new_empty(c, d, l)
    active = torch.arange(c, device=z_c.device)
    J, Jt = products(z_c)
    Q = torch.linalg.qr(J(omega.expand(c, -1, -1))).Q  # [a, D, l]: range of J·Ω
    prev = None
    for _ in range(max_iter):
        Bt = Jt(Q)  # [a, d, l] = (Qᵀ J)ᵀ; its σ are the Ritz values, lower bounds on σ(J)
        sv = torch.linalg.svdvals(Bt.to(torch.float64))[:, :k]  # [a, k]
        if prev is not None:
            scale = torch.maximum(sv, sv[:, :1] * 1e-12)  # σ_j ~ 0 counts as settled
            settled = ((sv - prev).abs() <= tol * scale).all(1)  # [a]
            out[active[settled]] = Bt[settled]
            if bool(settled.all()):
                return out, 0
            if bool(settled.any()):
                active, Bt, sv = active[~settled], Bt[~settled], sv[~settled]
                J, Jt = products(z_c[active])
        prev = sv
        Q = torch.linalg.qr(J(torch.linalg.qr(Bt).Q)).Q  # one power sweep, re-orthonormalised
    out[active] = Bt
    return out, len(active)


def _log_sv(M: Tensor, eps: float) -> Tensor:
    """log σ of each M [c, m, n] in float64, on CPU; σ <= σ_max·min(m, n)·eps becomes -inf."""
    sv = torch.linalg.svdvals(M.to(torch.float64))  # [c, min(m, n)]
    floor = sv[:, :1] * (min(M.shape[-2:]) * eps)
    return torch.log(torch.where(sv > floor, sv, torch.zeros_like(sv))).cpu()
