"""Jacobian singular values of a generator at latents: exact, projected sketch, matrix-free top-k.

For a generator G mapping latents ``z: [B, d]`` to outputs ``[B, ...]`` (flattened to D), J(z) is
the D x d Jacobian; MaGNET/Polarity weights are built from its singular values, kept here as
``log_sv`` (float64, CPU, descending). Three estimators:

* ``exact``     the full J (d JVPs in forward mode when d <= D, else D VJPs), then all min(D, d)
                singular values. Holds chunk·D·d numbers: for small generators and references.
* ``projected`` the MaGNET authors' estimator: one seeded projection P [proj_dim, D] with
                orthonormal rows (Gaussian then QR, like Keras' ``Orthogonal`` initializer the TF1
                code uses), shared by all latents; σ(P·J) from proj_dim VJPs, or from d JVPs
                (P @ J, the same matrix up to rounding) when d < proj_dim. A sketch of the
                spectrum, not σ(J) itself. P itself is proj_dim·D float64 numbers (3 GiB at
                StyleGAN2-1024 with proj_dim=128).
* ``topk``      block Lanczos on JᵀJ in latent space (Golub & Underwood 1977; randomized block
                Krylov, Musco & Musco 2015) from a seeded Gaussian block of ``KRYLOV_BLOCK``
                directions, fully reorthogonalised: each step costs 8 JVPs + 8 VJPs, the Ritz
                values come from an m × m matrix, J is never formed. The block subspace
                iteration it replaced could not stop before 160 products for k = 30 and settled
                slowly on flat spectra; this took 112-192 products for the top 30 to 1e-6 on
                linear maps with known spectra (tests/test_spectra.py). σ below
                about sqrt(eps)·σ_max are not resolved (Ritz values of JᵀJ): use ``exact`` or
                ``projected`` for rank-deficient tails.

Work runs in two explicit loops so a device-specific fast path can replace either: latent chunks
(``chunk`` latents per pass, with a tqdm bar) and, inside a chunk, tangent blocks (``block``
JVP/VJP directions vmapped at once). Memory: one call aims to stay within ``memory`` bytes (None:
``$MAGNET_LAB_SPECTRA_MEMORY``, e.g. ``4GiB``, else half the free memory of a CUDA device, else
2 GiB on CPU). Before the first chunk a probe runs one latent's vmapped VJP/JVP with a few
directions under a dispatch mode that counts the bytes of live tensor storages (``_LiveBytes``):
this gives G's bytes held per latent (saved forward activations) and per (latent × direction)
(the vmapped backward/forward-mode activations, which dominate for conv nets). With the known
dense arrays (P, J or Q, the outputs) this sizes ``block`` (all directions when they fit) and
then ``chunk`` so that the estimate times ``_SLACK`` (allocator overhead and kernel workspaces
the probe cannot see, calibrated against peak RSS) fits; on a CPU ``chunk`` is then capped so
that one vmapped call's rows hold about ``_CPU_CALL_BYTES`` (128 MiB; at least 1 latent):
bigger calls ran about 2× slower there; in reverse mode with big rows (≥ 1 MiB a direction:
conv generators) it runs plain VJPs, block 1 without vmap, over chunks of
``_CPU_VJP_CALL_BYTES`` of rows (16 MiB), where StyleGAN2's vmapped 128-direction VJP ran at
0.4-0.6× the speed of a loop of backward passes. A given
``chunk``/``block`` wins. If a chunk still runs out of memory (CUDA OOM, ``MemoryError``,
"can't allocate memory"), block and then chunk are halved and that chunk is retried, with one
warning naming the sizes; on Linux CPU an overcommitted process may be killed instead of
raising, which is why the budget comes first.
G must treat batch samples independently (eval mode) and be deterministic (fixed noise).
Precision: float64 is the reference (on CUDA it equals the CPU to ~1e-14). float32 with
``precision="highest"`` (the default) is float32 arithmetic: TF32 is switched off for the call,
because torch lets cuDNN convolutions run in TF32 by default, which moved the embedded DCGAN's
top-10 log σ by up to 0.03. ``"tf32"`` and ``"bf16"`` (autocast) are faster where the device has
the units and are asked for explicitly; ``benchmarks/bench_stylegan2.py`` measures what they cost
in accuracy against float64. Every SVD runs in float64 whatever the products' precision.
Singular values below σ_max·min(m, n)·eps(dtype) of the m x n matrix are numerically zero and
are returned as log 0 = -inf; ``magnet_lab.sampling`` decides what -inf means for the weights.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import math
import numbers
import re
import warnings
from typing import Any, Callable

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from tqdm.auto import tqdm

from . import config
from .validation import check_latents

Generator = Callable[[Tensor], Tensor]
_METHODS = ("exact", "projected", "topk")
_MODES = ("auto", "forward", "reverse")
PRECISIONS = ("highest", "tf32", "bf16")
MEMORY_ENV = "MAGNET_LAB_SPECTRA_MEMORY"
_CPU_MEMORY = 2 << 30  # default budget on CPU (bytes)
_CUDA_FREE_SHARE = 0.5  # default budget on CUDA: this share of the device's free memory
_SLACK = 1.5  # peak RSS / probed live-tensor bytes: allocator slack, kernel workspaces
_PROBE_DIRECTIONS = 4  # directions vmapped in the probe (per-direction cost settles by 4)
KRYLOV_BLOCK = 8  # topk: directions added to the Krylov basis per step (2·8 products a step)
# On a CPU a vmapped JVP/VJP call over chunk × block (latent × direction) rows is fastest when
# the rows' probed bytes stay near cache-sized work, so the budget's chunk is capped there (down
# to 1 latent). Measured on 2 cores, same process, best of 2: the embedded DCGAN (exact, 32 JVPs)
# 0.0146 s/latent at chunk 8 vs 0.0299 at the budget's 86; the embedded StyleGAN2 (projected by
# 32 JVPs) 0.071 s/latent at chunk 4 vs 0.138 at 40; topk k=30 on a 64² StyleGAN2 (below), 8
# directions a call, 3.2 s/latent at chunk 1 (111 MB of rows) vs 4.9 at the old floor of 4.
# Reverse mode with big rows (one latent's VJP activations >= _CPU_PLAIN_VJP_BYTES: conv
# generators, where per-call overheads are negligible) runs plain VJPs without vmap, chunk latents
# a pass, chunk capped to _CPU_VJP_CALL_BYTES of rows. Measured on 2 cores, best of 2-4
# interleaved rounds, projected by 128 VJPs of a StyleGAN2 (channel_base 8192, max 128), 4
# latents, s/latent ÷ torch.autograd.functional.jacobian's in the same process: vmapping all
# 128 directions 0.56× (32²) and 0.41× (64²); vmapped blocks of 4-16 directions 0.75-0.89× in
# the latest runs (1.1-1.2× in an earlier one); plain VJPs over 8 latents (12 MiB) 1.00× at 32²
# and over 2 latents (12 MiB) 1.12× at 64², 4 latents (24 MiB) 0.98-1.03×. Small rows keep the
# vmapped path, which amortises per-call overheads. Forward mode recomputes the primal in every
# call and was fastest at 128 MiB (embedded DCGAN exact, embedded StyleGAN2 projected by 32 JVPs;
# 16-64 MiB were slower).
_CPU_CALL_BYTES = 128 << 20
_CPU_PLAIN_VJP_BYTES = 1 << 20
_CPU_VJP_CALL_BYTES = 16 << 20
_P_CACHE: dict[tuple, Tensor] = {}  # projection_matrix's cache, least recently used first
_P_CACHE_SIZE = 2


def projection_matrix(D: int, proj_dim: int, seed: int, dtype: torch.dtype = torch.float64,
                      device: str | torch.device = "cpu") -> Tensor:
    """A seeded random projection ``[proj_dim, D]`` with orthonormal rows (P Pᵀ = I), cached.

    A standard Gaussian ``[D, proj_dim]`` is drawn in float64 on the CPU from ``torch.Generator``
    seeded with ``seed`` (so P is the same on every device, up to rounding), moved to ``device``
    and orthonormalised there in float64 by CholeskyQR2 (two Cholesky-QR passes; a Householder QR
    if a Cholesky factor fails). Both give the thin QR factor with a positive diagonal in R, i.e.
    the Haar-distributed Q of Keras' ``Orthogonal`` initializer. P is then cast to ``dtype`` and
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
        P = _orthonormal_columns(A).T.to(dtype).contiguous()  # [proj_dim, D]
        del A
        while len(_P_CACHE) >= _P_CACHE_SIZE:
            _P_CACHE.pop(next(iter(_P_CACHE)))
    _P_CACHE[key] = P  # most recently used last
    return P


def clear_projection_cache() -> None:
    """Drop the projections ``projection_matrix`` keeps (frees their host or device memory)."""
    _P_CACHE.clear()


def _orthonormal_columns(A: Tensor) -> Tensor:
    """Q of A's thin QR with R's diagonal positive (A: [D, p] float64, full column rank), by
    CholeskyQR2: exact to rounding for the well-conditioned Gaussian A (cond ≈ 1 + 2√(p/D)), and
    two p×p Gram matrices plus triangular solves, which a GPU does in milliseconds."""
    Q = A
    try:
        for _ in range(2):
            L = torch.linalg.cholesky(Q.T @ Q)  # [p, p], lower
            Q = torch.linalg.solve_triangular(L, Q.T, upper=False).T  # A R⁻¹ with R = Lᵀ
        return Q
    except RuntimeError:  # not positive definite in floating point: fall back to Householder
        Q, R = torch.linalg.qr(A)
        return Q * torch.sign(torch.diagonal(R))


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Chunk and block sizes of one call and the memory estimate behind them (bytes).

    Estimated peak = ``_SLACK``·(fixed + chunk·per_latent + chunk·block·per_direction):
    ``fixed`` the arrays of the whole call (P, the outputs), ``per_latent`` what a chunk holds per
    latent (G's saved forward activations, J or P·J or Q), ``per_direction`` one vmapped
    (latent × direction) of G's JVP/VJP (probed; 0 when the user gave both sizes).
    """

    chunk: int
    block: int
    budget: int
    fixed: int
    per_latent: int
    per_direction: int

    @property
    def estimate(self) -> int:
        """Estimated peak bytes of the call with these sizes."""
        return math.ceil(_SLACK * (self.fixed + self.chunk * self.per_latent
                                   + self.chunk * self.block * self.per_direction))


def memory_budget(device: str | torch.device = "cpu", memory: int | None = None) -> int:
    """Bytes one ``log_singular_values``/``jacobian`` call on ``device`` may use.

    ``memory`` if given; else ``$MAGNET_LAB_SPECTRA_MEMORY`` (bytes, or a number with a binary
    K/M/G/T suffix: ``4GiB``, ``512M``); else half the free memory of a CUDA device
    (``torch.cuda.mem_get_info``); else 2 GiB. Raises TypeError/ValueError for a non-integer or
    non-positive ``memory`` and ValueError for an unreadable environment value.
    """
    if memory is not None:
        return _check_int("memory", memory, 1)
    env = config.get(MEMORY_ENV) or ""
    if env:
        m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([KMGT]?)(?:i?B)?", env, re.IGNORECASE)
        size = float(m[1]) * 1024 ** " KMGT".index(m[2].upper() or " ") if m else 0
        if size < 1:
            raise ValueError(f"{MEMORY_ENV}={env!r} is not a memory size; use bytes or a number "
                             f"with a binary suffix, e.g. 512MiB or 4GiB")
        return int(size)
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * _CUDA_FREE_SHARE)
    return _CPU_MEMORY


def jacobian(G: Generator, z: Tensor, chunk: int | None = None, dtype: torch.dtype | None = None,
             mode: str = "auto", block: int | None = None, progress: bool | None = None,
             memory: int | None = None, precision: str = "highest") -> Tensor:
    """The full Jacobian ``[B, D, d]`` of G at each latent, output flattened to D, in ``dtype``.

    ``mode="forward"`` pushes the d basis tangents through JVPs, ``"reverse"`` pulls the D basis
    cotangents through VJPs, ``"auto"`` picks forward when d <= D. Runs G in ``dtype`` (None: z's
    dtype) on z's device, ``chunk`` latents and ``block`` directions at a time (None: sized to
    ``memory`` bytes, see ``memory_budget``; the returned J counts against it) at ``precision``
    (``PRECISIONS``, see ``log_singular_values``). Raises TypeError/ValueError for bad z (also on
    the meta device or another device than G's), a non-finite or batch-changing G(z), an unknown
    mode or precision or a non-positive chunk/block/memory.
    """
    if mode not in _MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {_MODES}")
    with _precision_flags(precision):
        z, f, d, D = _setup(G, z, dtype, memory, precision)
        mode = ("forward" if d <= D else "reverse") if mode == "auto" else mode
        s = z.element_size()
        plan = _plan(f, z, d if mode == "forward" else D, chunk, block, memory,
                     fixed=2 * len(z) * D * d * s, dense=2 * D * d * s,
                     products=("jvp",) if mode == "forward" else ("vjp",))
        return _over_chunks(G, z, plan, progress, "jacobian",
                            lambda z_c, b: _jacobian_chunk(f, z_c, D, mode, b))


def log_singular_values(G: Generator, z: Tensor, method: str = "exact", k: int | None = None,
                        proj_dim: int = 128, seed: int = 0, chunk: int | None = None,
                        dtype: torch.dtype | None = None, progress: bool | None = None,
                        tol: float = 1e-6, max_iter: int = 50, oversample: int = 10,
                        block: int | None = None, memory: int | None = None,
                        precision: str = "highest") -> Tensor:
    """Log singular values of G's Jacobian at each latent: ``[B, r]`` float64 on CPU, descending.

    ``z: [B, d]``; r = min(D, d) for ``exact``, min(proj_dim, d) for ``projected`` (P from
    ``projection_matrix(D, proj_dim, seed)``), k for ``topk``; a given k keeps the top k of any
    method. G runs in ``dtype`` (None: z's dtype; z is cast), every SVD in float64; σ = 0 gives
    -inf. ``topk`` (k required; module docstring) starts from a Gaussian ``[d, KRYLOV_BLOCK]``
    seeded by ``seed`` and stops each latent at its first Krylov step, once the basis holds at
    least k + ``oversample`` directions, in which every top-k σ changed by <= ``tol`` relative
    (|Δσ_j| <= tol·σ_j), when the basis spans R^d (exact), or after ``max_iter`` steps (16
    products each) with a warning. ``tol`` bounds the last step, not the error; the Ritz values
    converge from below, and in our measurements the error was orders of magnitude below tol.
    ``chunk``/``block``: latents per pass and directions vmapped at once; None sizes them so the
    call's estimated peak stays within ``memory`` bytes (``memory_budget``; module docstring);
    results do not depend on them beyond rounding. ``precision`` is the arithmetic of G's
    products (module docstring, "Precision"): ``"highest"`` (default; on CUDA, TF32 is switched
    off for the call), ``"tf32"`` (float32 with TF32 matmuls/convolutions where the device has
    them) or ``"bf16"`` (G under bfloat16 autocast); the last two need float32 and are part of a
    bank's identity. ``progress`` None means on unless ``MAGNET_LAB_PROGRESS=0``. Raises
    TypeError for wrong types (a non-integer or bool k, proj_dim, seed, max_iter, oversample,
    chunk, block, memory) and ValueError for bad z (also on the meta device or another device
    than G's), non-finite G(z) (count and latent indices named), G(z) changing the batch size,
    unknown method or precision, a reduced precision with a dtype other than float32, k < 1 or k
    above the rank bound, proj_dim < 1 or > D, or non-positive tol/max_iter/chunk/block/memory.
    """
    with _precision_flags(precision):
        z, plan, per_chunk, unsettled = _prepare(G, z, method, k, proj_dim, seed, chunk, dtype,
                                                 tol, max_iter, oversample, block, memory,
                                                 precision)
        log_sv = _over_chunks(G, z, plan, progress, f"log_sv[{method}]", per_chunk)
    if unsettled:
        warnings.warn(f"topk: top-{k} singular values of {sum(unsettled)} of {len(z)} latents "
                      f"did not settle to tol={tol} in max_iter={max_iter} Krylov steps; "
                      f"raise max_iter", RuntimeWarning, stacklevel=2)
    return log_sv


def memory_plan(G: Generator, z: Tensor, method: str = "exact", k: int | None = None,
                proj_dim: int = 128, seed: int = 0, chunk: int | None = None,
                dtype: torch.dtype | None = None, tol: float = 1e-6, max_iter: int = 50,
                oversample: int = 10, block: int | None = None,
                memory: int | None = None, precision: str = "highest") -> MemoryPlan:
    """The ``MemoryPlan`` (chunk, block, budget and per-latent/per-direction bytes probed on
    z[:1]) that ``log_singular_values`` with these arguments would use, without running it.
    Raises as ``log_singular_values`` does for bad arguments."""
    with _precision_flags(precision):
        return _prepare(G, z, method, k, proj_dim, seed, chunk, dtype, tol, max_iter, oversample,
                        block, memory, precision)[1]


def _prepare(G: Generator, z: Tensor, method: str, k: int | None, proj_dim: int, seed: int,
             chunk: int | None, dtype: torch.dtype | None, tol: float, max_iter: int,
             oversample: int, block: int | None, memory: int | None, precision: str
             ) -> tuple[Tensor, MemoryPlan, Callable[[Tensor, int], Tensor], list[int]]:
    """Check arguments; return (cast z, plan, per_chunk(z_c, block) -> log_sv [c, keep], the
    list that topk fills with each chunk's count of unsettled latents)."""
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {_METHODS}")
    if k is not None:
        _check_int("k", k, 1)
    _check_int("proj_dim", proj_dim, 1 if method == "projected" else None)
    _check_int("seed", seed, None)
    _check_int("max_iter", max_iter, 1 if method == "topk" else None)
    _check_int("oversample", oversample, 0 if method == "topk" else None)
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a real number, got {tol!r} ({type(tol).__name__})")
    if method == "topk" and k is None:
        raise ValueError("method='topk' needs k, the number of top singular values")
    if method == "topk" and not tol > 0:
        raise ValueError(f"topk needs tol > 0, got tol={tol}")
    z, f, d, D = _setup(G, z, dtype, memory, precision)
    if method == "projected":
        if proj_dim > D:
            raise ValueError(f"proj_dim={proj_dim} exceeds the output dimension D={D}")
        r, bound = min(proj_dim, d), f"min(proj_dim, d) = min({proj_dim}, {d})"
    else:
        r, bound = min(D, d), f"min(D, d) = min({D}, {d})"
    if k is not None and k > r:
        raise ValueError(f"k={k} exceeds the rank bound {bound} = {r}")
    keep = k if k is not None else r
    unsettled: list[int] = []  # topk: per chunk, latents that hit max_iter
    eps = torch.finfo(z.dtype).eps
    s = z.element_size()
    out_bytes = 2 * len(z) * r * 8  # per-chunk log_sv and their concatenation, float64

    if method == "exact":
        mode = "forward" if d <= D else "reverse"
        plan = _plan(f, z, d if mode == "forward" else D, chunk, block, memory, fixed=out_bytes,
                     dense=D * d * (2 * s + 16),  # blocks, J, its float64 copy, SVD workspace
                     products=("jvp",) if mode == "forward" else ("vjp",))
        per_chunk = lambda z_c, b: _log_sv(_jacobian_chunk(f, z_c, D, mode, b), eps)[:, :keep]
    elif method == "projected":
        P = projection_matrix(D, proj_dim, seed, z.dtype, z.device)  # [proj_dim, D]
        # P·J from d JVPs (J by columns, then P @ J) when d < proj_dim, else from proj_dim VJPs
        # (rows uᵀJ with u = P[r]): the same matrix up to rounding, at min(d, proj_dim) passes
        mode = "forward" if d < proj_dim else "reverse"
        plan = _plan(f, z, d if mode == "forward" else proj_dim, chunk, block, memory,
                     fixed=out_bytes + P.nbytes,
                     dense=(D * d * (2 * s + 16) if mode == "forward" else 0)
                     + proj_dim * d * (2 * s + 16),
                     products=("jvp",) if mode == "forward" else ("vjp",))
        per_chunk = lambda z_c, b: _log_sv(_projected_chunk(f, z_c, P, b, mode), eps)[:, :keep]
    else:
        b = min(KRYLOV_BLOCK, r)  # directions per Krylov step
        if min(r, max_iter * b) < k:
            raise ValueError(f"topk: max_iter={max_iter} Krylov steps of {b} directions cannot "
                             f"hold k={k} directions; raise max_iter to at least "
                             f"{math.ceil(k / b)}")
        m_est = min(r, k + oversample + 2 * b)  # basis size at a typical stop
        gen = torch.Generator().manual_seed(seed)
        omega = torch.linalg.qr(torch.randn(d, b, generator=gen, dtype=torch.float64)).Q
        omega = omega.to(z)  # [d, b], orthonormal
        plan = _plan(f, z, b, chunk, block, memory, fixed=out_bytes,
                     dense=3 * b * D * s + m_est * (d * (4 * s + 16) + 24 * m_est),  # J·X; V, W, T
                     products=("jvp", "vjp"))
        floor = min(D, d) * eps  # σ <= floor·σ_max is numerically zero (as _log_sv)

        def per_chunk(z_c: Tensor, bl: int) -> Tensor:
            sv, n_unsettled = _topk_chunk(f, z_c, k, omega, bl, tol, max_iter,
                                          min(k + oversample, r), r)
            sv = torch.where(sv > sv[:, :1] * floor, sv, torch.zeros_like(sv))
            if n_unsettled:
                unsettled.append(n_unsettled)  # only once the chunk succeeded (no OOM retry)
            return torch.log(sv).cpu()[:, :keep]
    return z, plan, per_chunk, unsettled


def _check_int(name: str, value: Any, low: int | None) -> int:
    """``value`` as an int; TypeError unless an integer (bool is not), ValueError if < ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {name}={value!r}")
    return int(value)


@contextlib.contextmanager
def _precision_flags(precision: str):
    """Within the block, CUDA's TF32 matmuls and cuDNN convolutions are allowed exactly when
    ``precision == "tf32"`` (torch allows them for convolutions by default); restored after."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _flat(G: Generator, precision: str, device_type: str) -> Generator:
    """G with its output flattened to [c, D]; under bfloat16 autocast for ``"bf16"`` (output
    back in float32, so cotangents and the SVDs stay float32/float64)."""
    if precision != "bf16":
        return lambda x: G(x).reshape(x.shape[0], -1)  # [c, D]

    def f(x: Tensor) -> Tensor:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            y = G(x)
        return y.reshape(x.shape[0], -1).float()  # [c, D]
    return f


def _setup(G: Generator, z: Tensor, dtype: torch.dtype | None, memory: int | None,
           precision: str = "highest") -> tuple[Tensor, Generator, int, int]:
    """Check and cast z; return (z, G with flattened output, d, D) after probing G on z[:1]."""
    if isinstance(z, Tensor) and z.device.type == "meta":
        raise ValueError(f"z is on the meta device (shape {tuple(z.shape)}, no values); "
                         f"create the latents on a real device such as 'cpu' or 'cuda'")
    check_latents(z)
    if memory is not None:
        _check_int("memory", memory, 1)
    if isinstance(G, torch.nn.Module):
        devices = {t.device for t in itertools.chain(G.parameters(), G.buffers())}
        if devices and z.device not in devices:
            raise ValueError(f"z is on {z.device} but G's parameters and buffers are on "
                             f"{sorted(map(str, devices))}; move z or G to the same device")
    if dtype is not None:
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
        z = z.to(dtype)
    if isinstance(G, torch.nn.Module) and G.training:
        warnings.warn("G is in training mode (batch norm/dropout couple or randomise samples); "
                      "call G.eval() first", UserWarning, stacklevel=3)
    if precision != "highest" and z.dtype != torch.float32:
        raise ValueError(f"precision={precision!r} is a float32 option; the computation is in "
                         f"{z.dtype} (float64 is the reference: use precision='highest')")
    D = _check_output(G, z[:1], 0)
    return z, _flat(G, precision, z.device.type), z.shape[1], D


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


def _size(name: str, value: int | None, n: int) -> int | None:
    """A user's chunk/block size, checked and clamped to n; None stays None."""
    return None if value is None else min(_check_int(name, value, 1), n)


def _plan(f: Generator, z: Tensor, n_dir: int, chunk: int | None, block: int | None,
          memory: int | None, fixed: int, dense: int, products: tuple[str, ...]) -> MemoryPlan:
    """Sizes for n_dir directions per latent: the user's, else block first (all directions if one
    latent's fit), then chunk, the largest whose estimate (``MemoryPlan``) fits the budget; on a
    CPU then capped to cache-sized calls (``_CPU_CALL_BYTES``; big reverse-mode rows: plain VJPs
    over ``_CPU_VJP_CALL_BYTES`` of latents)."""
    chunk, block = _size("chunk", chunk, len(z)), _size("block", block, n_dir)
    if chunk is not None and block is not None:
        return MemoryPlan(chunk, block, 0, fixed, dense, 0)
    budget = memory_budget(z.device, memory)
    held, item = _probe(f, z[:1], min(n_dir, _PROBE_DIRECTIONS), products)
    latent, item = held + dense, max(item, 1)
    avail = budget / _SLACK - fixed  # bytes left for the chunk's work
    cpu = z.device.type == "cpu"
    plain = (block is None and cpu and products == ("vjp",)
             and item >= _CPU_PLAIN_VJP_BYTES)  # big reverse-mode rows: plain VJPs, no vmap
    if plain:
        block = 1
    elif block is None:
        c = chunk or 1
        block = max(1, min(n_dir, int((avail - c * latent) // (c * item))))
    if chunk is None:
        chunk = max(1, min(len(z), int(avail // (latent + block * item))))
        if cpu:  # big calls are slower on a CPU (_CPU_CALL_BYTES, _CPU_VJP_CALL_BYTES)
            rows = _CPU_VJP_CALL_BYTES if plain else _CPU_CALL_BYTES
            chunk = min(chunk, max(1, rows // (block * item)))
    plan = MemoryPlan(chunk, block, budget, fixed, latent, item)
    if plan.estimate > budget:
        warnings.warn(f"spectra: estimated peak {plan.estimate / 2**20:.0f} MiB with chunk={chunk}, "
                      f"block={block} exceeds the memory budget {budget / 2**20:.0f} MiB "
                      f"({MEMORY_ENV} or memory=)", RuntimeWarning, stacklevel=3)
    return plan


class _LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages that ops under this mode created and that are still alive
    (views and in-place results share a storage and count once); ``peak`` is their maximum."""

    def __init__(self) -> None:
        super().__init__()
        self._refs: dict[int, tuple[StorageWeakRef, int]] = {}  # data_ptr -> (ref, nbytes)
        self.peak = 0

    def live(self) -> int:
        self._refs = {p: r for p, r in self._refs.items() if not r[0].expired()}
        return sum(n for _, n in self._refs.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, Tensor):
                continue
            try:
                storage = t.untyped_storage()
                ptr = storage.data_ptr()
            except (RuntimeError, NotImplementedError):  # a wrapper without its own storage
                continue
            old = self._refs.get(ptr)
            if old is None or old[0].expired():
                self._refs[ptr] = (StorageWeakRef(storage), storage.nbytes())
        self.peak = max(self.peak, self.live())
        return out


def _probe(f: Generator, z1: Tensor, b: int, products: tuple[str, ...]) -> tuple[int, int]:
    """(bytes G's saved forward holds for one latent, peak bytes per direction of a vmapped
    JVP/VJP over ``b`` directions at that latent, the larger of those in ``products``)."""
    try:
        with torch.no_grad(), _LiveBytes() as live:
            y, vjp_fn = vjp(f, z1)  # y: [1, D]
            held = live.live()
            item = 0.0
            for kind in products:
                base, live.peak = live.live(), 0
                if kind == "vjp":
                    vmap(lambda u: vjp_fn(u)[0])(torch.ones((b, *y.shape), dtype=y.dtype,
                                                            device=y.device))  # [b, 1, d]
                else:
                    vmap(lambda v: jvp(f, (z1,), (v,))[1])(torch.ones((b, *z1.shape),
                                                                       dtype=z1.dtype,
                                                                       device=z1.device))
                item = max(item, (live.peak - base) / b)
    except Exception as err:  # noqa: BLE001 - the probe must never be why a call fails
        warnings.warn(f"spectra: the memory probe failed ({type(err).__name__}: {err}); sizing "
                      f"from the output size only", RuntimeWarning, stacklevel=4)
        with torch.no_grad():
            D = f(z1).shape[1]
        return 0, 16 * z1.element_size() * max(z1.shape[1], D)
    return held, math.ceil(item)


def _is_oom(err: BaseException) -> bool:
    """True for an out-of-memory error of any device (CUDA OOM, MemoryError, allocator text)."""
    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "cannot allocate memory"))


def _over_chunks(G: Generator, z: Tensor, plan: MemoryPlan, progress: bool | None, desc: str,
                 per_chunk: Callable[[Tensor, int], Tensor]) -> Tensor:
    """Concatenate ``per_chunk(z_c, block)`` over latent chunks, checking each chunk's G(z) first.

    On an out-of-memory error the same chunk is retried with block halved (at block 1, chunk
    halved); the sizes that finished are named in one warning. Rows are never skipped.
    """
    on = config.progress_enabled(progress)
    chunk, block = plan.chunk, plan.block
    out, start = [], 0
    with torch.no_grad(), tqdm(total=len(z), desc=desc, unit="latent", disable=not on) as bar:
        while start < len(z):
            z_c = z[start:start + chunk]  # [c, d]
            try:
                _check_output(G, z_c, start)
                out.append(per_chunk(z_c, block))
            except Exception as err:  # noqa: BLE001 - anything but out-of-memory is re-raised
                if not _is_oom(err) or block == chunk == 1:
                    raise
                oom = True  # retry below, once err and its frames (big tensors) are released
            else:
                oom = False
            if oom:
                gc.collect()
                if z.device.type == "cuda":
                    torch.cuda.empty_cache()
                block, chunk = (block // 2, chunk) if block > 1 else (block, chunk // 2)
                continue
            bar.update(len(z_c))
            start += len(z_c)
    if (chunk, block) != (plan.chunk, plan.block):
        warnings.warn(f"{desc}: out of memory with chunk={plan.chunk}, block={plan.block}; "
                      f"retried smaller and finished with chunk={chunk}, block={block} (pass "
                      f"these or a smaller memory= to skip the retries)", RuntimeWarning,
                      stacklevel=3)
    return torch.cat(out)


def _jvps(f: Generator, z_c: Tensor, tangent: Callable[[int, int], Tensor], n: int,
          block: int) -> Tensor:
    """J·v for n directions, ``block`` vmapped at once (1: plain JVPs, no vmap): [n, c, D];
    tangent(s, e): [e-s, c, d]."""
    push = (vmap(lambda v: jvp(f, (z_c,), (v,))[1]) if block > 1
            else lambda v: jvp(f, (z_c,), (v[0],))[1][None])
    return torch.cat([push(tangent(s, min(s + block, n))) for s in range(0, n, block)])


def _vjps(vjp_fn: Callable, cotangent: Callable[[int, int], Tensor], n: int,
          block: int) -> Tensor:
    """uᵀ·J for n directions, ``block`` vmapped at once (1: plain VJPs, no vmap): [n, c, d];
    cotangent(s, e): [e-s, c, D]."""
    pull = vmap(lambda u: vjp_fn(u)[0]) if block > 1 else lambda u: vjp_fn(u[0])[0][None]
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


def _projected_chunk(f: Generator, z_c: Tensor, P: Tensor, block: int,
                     mode: str = "reverse") -> Tensor:
    """P·J for one chunk: [c, proj_dim, d]; ``reverse``: row r from the VJP with cotangent P[r];
    ``forward``: P @ J with J from d JVPs (fewer passes when d < proj_dim)."""
    c = z_c.shape[0]
    if mode == "forward":
        J = _jacobian_chunk(f, z_c, P.shape[1], "forward", block)  # [c, D, d]
        return P @ J  # [c, proj_dim, d]
    _, vjp_fn = vjp(f, z_c)
    rows = _vjps(vjp_fn, lambda s, e: P[s:e, None, :].expand(-1, c, -1).contiguous(), len(P),
                 block)
    return rows.permute(1, 0, 2)  # [c, proj_dim, d]


def _topk_chunk(f: Generator, z_c: Tensor, k: int, omega: Tensor, block: int, tol: float,
                max_iter: int, min_dim: int, r: int) -> tuple[Tensor, int]:
    """Block Lanczos on JᵀJ for one chunk; returns (σ_1..k [c, k] float64 descending, the
    number of latents that hit ``max_iter``).

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

    def products(z_a: Tensor) -> Callable[[Tensor], Tensor]:
        _, vjp_fn = vjp(f, z_a)

        def gram(X: Tensor) -> Tensor:  # X: [a, d, b] -> JᵀJ X: [a, d, b]
            n = X.shape[-1]
            Y = _jvps(f, z_a, cols(X), n, block).permute(1, 2, 0)  # [a, D, b]
            return _vjps(vjp_fn, cols(Y), n, block).permute(1, 2, 0)
        return gram

    out = torch.zeros(c, k, dtype=torch.float64, device=z_c.device)
    active = torch.arange(c, device=z_c.device)
    gram = products(z_c)
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
                gram = products(z_c[active])
        prev = sv
        X = Z - V @ (V.mT @ Z)  # the next block: JᵀJ X orthogonal to the basis, twice
        X = X - V @ (V.mT @ X)
        X = torch.linalg.qr(X[..., :min(X.shape[-1], r - m)]).Q
        X = torch.linalg.qr(X - V @ (V.mT @ X)).Q  # [a, d, b'] (a breakdown gives new directions)
    out[active] = sv  # [a, k]: _prepare made sure max_iter steps hold k directions
    return out, len(active)


def _log_sv(M: Tensor, eps: float) -> Tensor:
    """log σ of each M [c, m, n] in float64, on CPU; σ <= σ_max·min(m, n)·eps becomes -inf."""
    sv = torch.linalg.svdvals(M.to(torch.float64))  # [c, min(m, n)]
    floor = sv[:, :1] * (min(M.shape[-2:]) * eps)
    return torch.log(torch.where(sv > floor, sv, torch.zeros_like(sv))).cpu()
