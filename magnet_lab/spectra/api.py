"""The public entry points: ``log_singular_values``, ``memory_plan`` and ``jacobian``."""
from __future__ import annotations

import itertools
import math
import warnings
from typing import Callable

import torch
from torch import Tensor

from ..validation import check_choice, check_finite, check_latents
from .lanczos import KRYLOV_BLOCK, start_block, topk_chunk
from .memory import MemoryPlan, over_chunks, plan
from .options import SpectraOptions, SpeedOptions
from .products import FlatGenerator, Generator, check_output, jacobian_chunk, precision_flags
from .projection import projected_chunk, projection_matrix

MODES = ("auto", "forward", "reverse")
PerChunk = Callable[[FlatGenerator, Tensor, int], Tensor]


def log_singular_values(G: Generator, z: Tensor, options: SpectraOptions | None = None, *,
                        speed: SpeedOptions | None = None, c: Tensor | None = None) -> Tensor:
    """Log singular values of G's Jacobian ∂G(z)/∂z at each latent: ``[B, r]`` float64 on CPU,
    descending, σ = 0 as -inf.

    ``z: [B, d]``; ``options`` (``SpectraOptions``, None: exact) pick the estimator and every
    option that changes the values; r = min(D, d) for ``exact``, min(proj_dim, d) for
    ``projected`` (P from ``projection_matrix(D, proj_dim, seed)``), k for ``topk``; a given k
    keeps the top k of any method. ``speed`` (``SpeedOptions``) sets chunk/block sizes, the
    memory budget and the progress bar, never the values beyond rounding. ``c [B, ...]``
    (optional) conditions a class-conditional G: it is called as ``G(z, c)`` with c's rows
    chunked together with z's (a floating c is cast to the compute dtype), and the Jacobian is
    with respect to z only. ``topk`` stops each latent at its first Krylov step, once the basis
    holds at least k + oversample directions, in which every top-k σ changed by <= tol relative,
    when the basis spans R^d (exact), or after max_iter steps with a warning. Raises
    TypeError/ValueError for bad z or c (also on the meta device or another device than G's),
    non-finite G(z) (count and latent indices named), G(z) changing the batch size, a reduced
    precision with a dtype other than float32, k above the rank bound or proj_dim > D.
    """
    options, speed = _defaults(options, speed)
    with precision_flags(options.precision):
        z, f, sizes, per_chunk, unsettled = _prepare(G, z, c, options, speed)
        log_sv = over_chunks(f, z, sizes, speed.progress, f"log_sv[{options.method}]", per_chunk)
    if unsettled:
        warnings.warn(f"topk: top-{options.k} singular values of {sum(unsettled)} of {len(z)} "
                      f"latents did not settle to tol={options.tol} in "
                      f"max_iter={options.max_iter} Krylov steps; raise max_iter",
                      RuntimeWarning, stacklevel=2)
    return log_sv


def memory_plan(G: Generator, z: Tensor, options: SpectraOptions | None = None, *,
                speed: SpeedOptions | None = None, c: Tensor | None = None) -> MemoryPlan:
    """The ``MemoryPlan`` (chunk, block, budget and per-latent/per-direction bytes probed on
    z[:1]) that ``log_singular_values(G, z, options, speed=speed, c=c)`` would use, without
    running it. Raises as ``log_singular_values`` does for bad arguments."""
    options, speed = _defaults(options, speed)
    with precision_flags(options.precision):
        return _prepare(G, z, c, options, speed)[2]


def jacobian(G: Generator, z: Tensor, *, mode: str = "auto", dtype: torch.dtype | None = None,
             precision: str = "highest", speed: SpeedOptions | None = None,
             c: Tensor | None = None) -> Tensor:
    """The full Jacobian ``[B, D, d]`` of G at each latent ``z [B, d]``, output flattened to D,
    in ``dtype`` (None: z's dtype; z is cast).

    ``mode="forward"`` pushes the d basis tangents through JVPs, ``"reverse"`` pulls the D basis
    cotangents through VJPs, ``"auto"`` picks forward when d <= D. Runs on z's device at
    ``precision`` (``PRECISIONS``), ``speed``'s chunk/block (None: sized to the memory budget;
    the returned J counts against it); ``c`` conditions G as in ``log_singular_values``. Raises
    TypeError/ValueError for bad z or c, a non-finite or batch-changing G(z), an unknown mode or
    precision.
    """
    check_choice("mode", mode, MODES)
    options = SpectraOptions(dtype=dtype, precision=precision)
    speed = speed or SpeedOptions()
    with precision_flags(precision):
        z, f, d, D = _setup(G, z, c, options)
        mode = ("forward" if d <= D else "reverse") if mode == "auto" else mode
        s = z.element_size()
        sizes = plan(f, z, d if mode == "forward" else D, speed.chunk, speed.block, speed.memory,
                     fixed=2 * len(z) * D * d * s, dense=2 * D * d * s,
                     products=("jvp",) if mode == "forward" else ("vjp",))
        return over_chunks(f, z, sizes, speed.progress, "jacobian",
                           lambda f_c, z_c, b: jacobian_chunk(f_c, z_c, D, mode, b))


def _defaults(options: SpectraOptions | None, speed: SpeedOptions | None
              ) -> tuple[SpectraOptions, SpeedOptions]:
    options = SpectraOptions() if options is None else options
    speed = SpeedOptions() if speed is None else speed
    if not isinstance(options, SpectraOptions):
        raise TypeError(f"options must be a SpectraOptions, got {type(options).__name__}")
    if not isinstance(speed, SpeedOptions):
        raise TypeError(f"speed must be a SpeedOptions, got {type(speed).__name__}")
    return options, speed


def _prepare(G: Generator, z: Tensor, c: Tensor | None, options: SpectraOptions,
             speed: SpeedOptions
             ) -> tuple[Tensor, FlatGenerator, MemoryPlan, PerChunk, list[int]]:
    """Check the inputs; return (cast z, flattened G, plan, per_chunk(f_c, z_c, block) ->
    log_sv [c, keep], the list that topk fills with each chunk's count of unsettled latents)."""
    method, k, proj_dim = options.method, options.k, options.proj_dim
    z, f, d, D = _setup(G, z, c, options)
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
    sizing = (speed.chunk, speed.block, speed.memory)

    if method == "exact":
        mode = "forward" if d <= D else "reverse"
        sizes = plan(f, z, d if mode == "forward" else D, *sizing, fixed=out_bytes,
                     dense=D * d * (2 * s + 16),  # blocks, J, its float64 copy, SVD workspace
                     products=("jvp",) if mode == "forward" else ("vjp",))

        def per_chunk(f_c: FlatGenerator, z_c: Tensor, b: int) -> Tensor:
            return _log_svdvals(jacobian_chunk(f_c, z_c, D, mode, b), eps)[:, :keep]
    elif method == "projected":
        P = projection_matrix(D, proj_dim, options.seed, z.dtype, z.device)  # [proj_dim, D]
        # P·J from d JVPs (J by columns, then P @ J) when d < proj_dim, else from proj_dim VJPs
        # (rows uᵀJ with u = P[r]): the same matrix up to rounding, at min(d, proj_dim) passes
        mode = "forward" if d < proj_dim else "reverse"
        sizes = plan(f, z, d if mode == "forward" else proj_dim, *sizing,
                     fixed=out_bytes + P.nbytes,
                     dense=(D * d * (2 * s + 16) if mode == "forward" else 0)
                     + proj_dim * d * (2 * s + 16),
                     products=("jvp",) if mode == "forward" else ("vjp",))

        def per_chunk(f_c: FlatGenerator, z_c: Tensor, b: int) -> Tensor:
            return _log_svdvals(projected_chunk(f_c, z_c, P, b, mode), eps)[:, :keep]
    else:
        b = min(KRYLOV_BLOCK, r)  # directions per Krylov step
        tol, max_iter, oversample = options.tol, options.max_iter, options.oversample
        if min(r, max_iter * b) < k:
            raise ValueError(f"topk: max_iter={max_iter} Krylov steps of {b} directions cannot "
                             f"hold k={k} directions; raise max_iter to at least "
                             f"{math.ceil(k / b)}")
        m_est = min(r, k + oversample + 2 * b)  # basis size at a typical stop
        omega = start_block(d, b, options.seed, z)  # [d, b], orthonormal
        sizes = plan(f, z, b, *sizing, fixed=out_bytes,
                     dense=3 * b * D * s + m_est * (d * (4 * s + 16) + 24 * m_est),  # JX; V, W, T
                     products=("jvp", "vjp"))
        floor = min(D, d) * eps  # σ <= floor·σ_max is numerically zero (as _log_svdvals)

        def per_chunk(f_c: FlatGenerator, z_c: Tensor, bl: int) -> Tensor:
            sv, n_unsettled = topk_chunk(f_c, z_c, k, omega, bl, tol, max_iter,
                                         min(k + oversample, r), r)
            sv = torch.where(sv > sv[:, :1] * floor, sv, torch.zeros_like(sv))
            if n_unsettled:
                unsettled.append(n_unsettled)  # only once the chunk succeeded (no OOM retry)
            return torch.log(sv).cpu()[:, :keep]
    return z, f, sizes, per_chunk, unsettled


def _setup(G: Generator, z: Tensor, c: Tensor | None, options: SpectraOptions
           ) -> tuple[Tensor, FlatGenerator, int, int]:
    """Check and cast z (and c); return (z, G as a flattened function of z, d, D) after
    running G on z[:1]."""
    if isinstance(z, Tensor) and z.device.type == "meta":
        raise ValueError(f"z is on the meta device (shape {tuple(z.shape)}, no values); "
                         f"create the latents on a real device such as 'cpu' or 'cuda'")
    check_latents(z)
    if isinstance(G, torch.nn.Module):
        devices = {t.device for t in itertools.chain(G.parameters(), G.buffers())}
        if devices and z.device not in devices:
            raise ValueError(f"z is on {z.device} but G's parameters and buffers are on "
                             f"{sorted(map(str, devices))}; move z or G to the same device")
    if options.dtype is not None:
        z = z.to(options.dtype)
    if c is not None:
        c = _check_conditioning(c, z)
    if isinstance(G, torch.nn.Module) and G.training:
        warnings.warn("G is in training mode (batch norm/dropout couple or randomise samples); "
                      "call G.eval() first", UserWarning, stacklevel=4)
    if options.precision != "highest" and z.dtype != torch.float32:
        raise ValueError(f"precision={options.precision!r} is a float32 option; the computation "
                         f"is in {z.dtype} (float64 is the reference: use precision='highest')")
    f = FlatGenerator(G, options.precision, z.device.type, c)
    D = check_output(f.take(slice(0, 1)), z[:1], 0)
    return z, f, z.shape[1], D


def _check_conditioning(c: Tensor, z: Tensor) -> Tensor:
    """c ``[B, ...]`` checked against z ``[B, d]`` (a tensor, same rows and device, finite if
    floating) and, if floating, cast to z's dtype."""
    if not isinstance(c, Tensor):
        raise TypeError(f"c must be a torch.Tensor [B, ...] (e.g. one-hot labels), got "
                        f"{type(c).__name__}")
    if c.ndim == 0 or c.shape[0] != z.shape[0]:
        raise ValueError(f"c must have one row per latent: z has {z.shape[0]} rows, c has shape "
                         f"{tuple(c.shape)}")
    if c.device != z.device:
        raise ValueError(f"c is on {c.device} but z is on {z.device}; move them together")
    if c.is_floating_point():
        check_finite(c, "c")
        c = c.to(z.dtype)
    return c


def _log_svdvals(M: Tensor, eps: float) -> Tensor:
    """log σ of each M ``[c, m, n]`` in float64, on CPU; σ <= σ_max·min(m, n)·eps becomes -inf."""
    sv = torch.linalg.svdvals(M.to(torch.float64))  # [c, min(m, n)]
    floor = sv[:, :1] * (min(M.shape[-2:]) * eps)
    return torch.log(torch.where(sv > floor, sv, torch.zeros_like(sv))).cpu()
