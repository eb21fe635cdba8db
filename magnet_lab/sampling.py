"""Polarity / MaGNET weights and resampling on a bank's log singular values (no generator needed).

A ReLU generator ``G`` is continuous piecewise affine: on a region ω, ``G(z) = A_ω z + b_ω``.
Pushing a latent density ``q(z)`` through ``G`` gives, on the learned d-dimensional manifold,
the output density ``q(z) / vol(z)`` at ``x = G(z)``, where
``vol(z) = sqrt(det(JᵀJ)) = ∏_i σ_i(J)`` and ``J = ∂G/∂z``. Everything here works on
``log_sv`` (``[N, r]`` float64, descending ``log σ`` of the Jacobian at N candidate latents, as
stored in a :class:`magnet_lab.bank.VolumeBank`), so a bank computed once serves every ρ, top_k
and mixture. Names: ``k`` is the number of singular values a bank *computed* (``r`` columns, the
argument of ``spectra``); ``top_k <= r`` is the number *used* in the weights.

Weights. ``log_volume`` is ``Σ_{j≤top_k} log σ_ij``; ``log_weights`` returns normalised
``log w_i = ρ · log_volume_i − log_prior_i``
(up to the log-normaliser); ρ=1 is MaGNET, general ρ is Polarity (ρ<0 favours modes / precision,
ρ>0 anti-modes / recall, ρ=0 is plain sampling). Resampling candidates ``z_i ~ q`` with weight
``w_i`` draws (as N → ∞) from the latent law ``∝ q(z) · w(z)``. Two modes:

(a) the authors' released behaviour (``log_prior=None``): candidates ``z ~ p_z`` (Gaussian), so
    the resampled latent law is ``∝ p_z(z) · vol(z)^ρ`` and the output density on the manifold
    is ``∝ p_z(z) · vol(z)^(ρ−1)``. For ρ=1 this is ``p_z`` expressed on the manifold -- *not*
    uniform: the Gaussian prior is not divided out.
(b) the theory's exactly uniform-on-manifold weights: pass the candidates' log density as
    ``log_prior`` (e.g. ``gaussian_log_prior(z)``); the latent law is then ``∝ vol(z)^ρ`` and the
    output density ``∝ vol(z)^(ρ−1)``, uniform on ``G(support)`` for ρ=1. These weights are
    heavy-tailed (``1/p_z`` explodes in the tails): check the effective sample size with
    ``check_ess``. Equivalently, draw candidates uniformly in a latent box
    (``uniform_box_latents``) with ``log_prior=None``: same exactly-uniform result on ``G(box)``.

Non-finite policy (``log_weights``): NaN in the used columns raises (a bug upstream); ``+inf``
raises; ``-inf`` (σ=0: a rank-deficient Jacobian, the region has zero d-volume) keeps the plain
weight when ρ=0 and gets weight zero (excluded, with a ``warnings.warn`` giving the count) when
ρ≠0; if no candidate keeps a positive weight, ValueError. Downstream, ``-inf`` log-weights mean
weight zero everywhere in this module.

Truncation ψ is not a sampling concern: it is a generation-time setting of the generator (it
changes G, hence the bank), so it does not appear here.

Every random draw takes a ``seed`` or a ``torch.Generator`` (keyword ``rng``, so that
``generator`` always means the model); a missing one means seed 0.
"""
from __future__ import annotations

import math
import warnings

import torch

from .validation import check_class_ids, check_finite, check_int, check_latents, check_real

__all__ = [
    "LowESSWarning", "log_volume", "log_weights", "gaussian_latents", "gaussian_log_prior",
    "uniform_box_latents", "latents_from_seeds", "resample", "ess", "ess_fraction",
    "check_ess", "mixture_indices", "per_class_log_weights", "equal_class_counts",
    "per_class_indices", "LOW_ESS_FRACTION",
]

# ESS / N below this is "collapsed": ``check_ess`` warns and the explorer flags it.
LOW_ESS_FRACTION = 1e-3


class LowESSWarning(UserWarning):
    """The importance weights are concentrated on very few candidates (tiny ESS / N)."""


# ----------------------------------------------------------------------------- helpers

def _rng(seed: int | None, rng: torch.Generator | None) -> torch.Generator:
    """``rng`` if given, else a fresh ``torch.Generator`` seeded with ``seed`` (default 0)."""
    if rng is not None:
        if seed is not None:
            raise ValueError("pass either seed or rng, not both")
        if not isinstance(rng, torch.Generator):
            raise TypeError(f"rng must be a torch.Generator, got {type(rng).__name__}")
        return rng
    if seed is None:
        seed = 0
    return torch.Generator().manual_seed(check_int("seed", seed))


def _check_count(n: int, name: str = "n") -> int:
    return check_int(name, n, low=1)


def _check_log_w(log_w: torch.Tensor, name: str = "log_w") -> torch.Tensor:
    """``log_w`` as float64 CPU ``[N]``; NaN and +inf rejected, -inf (zero weight) allowed."""
    if not isinstance(log_w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N], got {type(log_w).__name__}")
    if not log_w.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {log_w.dtype}")
    if log_w.ndim != 1 or log_w.shape[0] == 0:
        raise ValueError(f"{name} must have shape [N] with N >= 1, got shape {tuple(log_w.shape)}")
    log_w = log_w.detach().to("cpu", torch.float64)
    n_nan = int(torch.isnan(log_w).sum())
    n_pinf = int((log_w == math.inf).sum())
    if n_nan or n_pinf:
        raise ValueError(f"{name} has {n_nan} NaN and {n_pinf} +inf entries of {log_w.numel()} "
                         "(only finite values and -inf, meaning zero weight, are allowed)")
    if not bool(torch.isfinite(log_w).any()):
        raise ValueError(f"{name}: all {log_w.numel()} candidates have zero weight (-inf)")
    return log_w


# ----------------------------------------------------------------------------- weights

def _checked_log_sv(log_sv: torch.Tensor, top_k: int | None) -> tuple[torch.Tensor, int]:
    """``log_sv`` as float64 CPU ``[N, r]`` and ``top_k`` resolved (None → r), after the shape,
    dtype and range checks that ``log_volume`` and ``log_weights`` share."""
    if not isinstance(log_sv, torch.Tensor) or not log_sv.is_floating_point():
        raise TypeError(f"log_sv must be a floating-point torch.Tensor [N, r], got "
                        f"{getattr(log_sv, 'dtype', type(log_sv).__name__)}")
    if log_sv.ndim != 2 or log_sv.shape[0] == 0 or log_sv.shape[1] == 0:
        raise ValueError(f"log_sv must have shape [N, r] with N, r >= 1, got {tuple(log_sv.shape)}")
    r = log_sv.shape[1]
    if top_k is None:
        top_k = r
    check_int("top_k", top_k)
    if not 1 <= top_k <= r:
        raise ValueError(f"top_k must be in [1, r={r}] (log_sv has {r} columns), got {top_k}")
    return log_sv.detach().to("cpu", torch.float64), top_k


def log_volume(log_sv: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
    """Log-volume ``Σ_{j<top_k} log_sv[:, j]`` ``[N]`` (float64, CPU) of each candidate: the log of
    the product of its ``top_k`` largest singular values (``top_k`` None: all r columns, the full
    ``log sqrt(det JᵀJ)`` when the bank computed all of them). ``log_sv`` is ``[N, r]`` with rows
    sorted descending. Non-finite values pass through (-inf for σ = 0). Raises TypeError/ValueError
    for a ``log_sv`` that is not a floating ``[N, r]`` tensor or ``top_k`` outside ``[1, r]``."""
    full, top_k = _checked_log_sv(log_sv, top_k)
    return full[:, :top_k].sum(1)  # [N]


def all_top_k(log_sv: torch.Tensor) -> int | None:
    """The ``top_k`` that means "all singular values": None (every column) unless some trailing
    columns are zero (-inf) at *every* candidate — a rank deficit of the generator's
    construction, e.g. StyleGAN2 normalises z to the sphere, so J·z = 0 and its last σ is 0
    everywhere — then the number of columns before them. With such a column every weight
    ∏σ^ρ (ρ > 0) would be 0. ``log_sv`` is ``[N, r]``, rows sorted descending."""
    full, _ = _checked_log_sv(log_sv, None)
    dead = torch.isinf(full).all(0)  # [r]; sorted rows: dead columns are trailing
    n_dead = int(dead.sum())
    return None if n_dead == 0 else max(full.shape[1] - n_dead, 1)


def log_weights(log_sv: torch.Tensor, rho: float, top_k: int | None = None, *,
                log_prior: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised Polarity/MaGNET log-weights ``[N]`` float64 (``logsumexp == 0``) from ``log_sv``.

    ``log_sv`` is ``[N, r]`` (descending ``log σ`` per row, natural log); the weight of candidate
    i is ``log w_i = rho · Σ_{j<top_k} log_sv[i, j] − log_prior[i]`` (``top_k`` None: all r
    columns; the first top_k columns are used and must be the largest) and ``log_prior`` the
    candidates' log density ``[N]`` (None: the authors' released behaviour, prior kept -- see
    the module docstring). ρ=1 is MaGNET. Non-finite policy: NaN or +inf in the used columns
    raises ValueError (count named); -inf (σ=0) is ignored for ρ=0 and excluded (weight zero,
    with a warning) for ρ≠0. Raises TypeError/ValueError for a non-2-D or empty ``log_sv``,
    non-finite ``rho``, ``top_k`` outside ``[1, r]``, a ``log_prior`` not of shape ``[N]`` or not
    finite, and when no candidate keeps a positive weight.
    """
    full, top_k = _checked_log_sv(log_sv, top_k)
    check_real("rho", rho)
    n, r = full.shape
    used = full[:, :top_k]  # [N, k]
    n_nan = int(torch.isnan(used).sum())
    if n_nan:
        raise ValueError(f"log_sv has {n_nan} NaN entries in its first {top_k} columns "
                         "(a bug upstream: a Jacobian or SVD failed)")
    n_pinf = int((used == math.inf).sum())
    if n_pinf:
        raise ValueError(f"log_sv has {n_pinf} +inf entries in its first {top_k} columns")
    if top_k < r:
        # strict '>' so that -inf runs (and NaN in unused columns) do not count as ascending
        ascending = full[:, 1:] > full[:, :-1]  # [N, r-1]
        if bool(ascending.any()):
            raise ValueError(f"log_sv rows must be sorted descending for top_k={top_k} to keep the "
                             f"largest values; {int(ascending.any(1).sum())} rows are not")

    if rho == 0:
        log_w = torch.zeros(n, dtype=torch.float64)
    else:
        s = used.sum(1)  # [N] log vol_k
        degenerate = s == -math.inf
        log_w = float(rho) * s
        if bool((~torch.isfinite(log_w) & ~degenerate).any()):
            raise ValueError(f"rho * sum(log_sv) overflows float64 (rho={rho})")
        log_w[degenerate] = -math.inf  # zero volume: excluded whatever the sign of rho
        n_deg = int(degenerate.sum())
        if n_deg:
            warnings.warn(f"{n_deg} of {n} candidates have a zero singular value among the top "
                          f"{top_k} (zero d-volume region) and get weight zero for rho={rho}",
                          stacklevel=2)
    if log_prior is not None:
        if not isinstance(log_prior, torch.Tensor):
            raise TypeError(f"log_prior must be a torch.Tensor of shape [N], got "
                            f"{type(log_prior).__name__}")
        if tuple(log_prior.shape) != (n,):
            raise ValueError(f"log_prior must have shape [{n}] (one per candidate), got "
                             f"{tuple(log_prior.shape)}")
        log_prior = check_finite(log_prior.detach().to("cpu", torch.float64), "log_prior")
        log_w = log_w - log_prior
    if not bool(torch.isfinite(log_w).any()):
        raise ValueError(f"no candidate has a positive weight: all {n} have a zero singular value "
                         f"among the top {top_k} (rho={rho})")
    return log_w - torch.logsumexp(log_w, 0)


# ----------------------------------------------------------------------------- candidates

def gaussian_latents(n: int, z_dim: int, seed: int | None = None, *,
                     rng: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` standard-normal latents ``[n, z_dim]`` of ``dtype`` on CPU, drawn with the
    ``torch.Generator`` ``rng`` or a fresh one seeded with ``seed`` (default 0); drawn in float64
    and cast, so a seed gives the same latents, up to rounding, in every dtype. Raises
    ValueError/TypeError for ``n``/``z_dim`` < 1, a non-float dtype, or both seed and rng given."""
    _check_count(n)
    _check_count(z_dim, "z_dim")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    g = _rng(seed, rng)
    return torch.randn(n, z_dim, generator=g, dtype=torch.float64).to(dtype)


def latents_from_seeds(seeds: torch.Tensor, z_dim: int, *,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Latents ``[N, z_dim]`` where row i is ``gaussian_latents(1, z_dim, seed=seeds[i])``, so any
    latent of a bank with per-latent ``seeds`` can be regenerated alone. ``seeds`` is an integer
    tensor ``[N]`` of non-negative values. Raises TypeError/ValueError otherwise."""
    if not isinstance(seeds, torch.Tensor) or seeds.dtype not in (torch.int64, torch.int32):
        raise TypeError("seeds must be an int64/int32 tensor of shape [N]")
    if seeds.ndim != 1 or seeds.shape[0] == 0:
        raise ValueError(f"seeds must have shape [N] with N >= 1, got {tuple(seeds.shape)}")
    if bool((seeds < 0).any()):
        raise ValueError(f"seeds must be non-negative, got {int((seeds < 0).sum())} negative")
    _check_count(z_dim, "z_dim")
    rows = [gaussian_latents(1, z_dim, seed=int(s), dtype=dtype) for s in seeds.tolist()]
    return torch.cat(rows, 0)  # [N, z_dim]


def gaussian_log_prior(z: torch.Tensor) -> torch.Tensor:
    """Exact standard-normal log density ``log N(z; 0, I)`` of latents ``z [N, d]``, float64 ``[N]``
    (natural log): ``−|z|²/2 − (d/2)·log 2π``. Raises via ``check_latents`` for a bad ``z``."""
    check_latents(z)
    z64 = z.detach().to("cpu", torch.float64)
    d = z64.shape[1]
    return -0.5 * (z64 * z64).sum(1) - 0.5 * d * math.log(2 * math.pi)


def uniform_box_latents(n: int, z_dim: int, half_width: float, seed: int | None = None, *,
                        rng: torch.Generator | None = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` latents ``[n, z_dim]`` uniform in the box ``[−half_width, half_width]^z_dim``.
    With ``log_weights(..., rho=1, log_prior=None)`` on these candidates, resampling is exactly
    uniform on ``G(box)``. Drawn with ``rng`` or a fresh generator seeded with ``seed`` (default
    0). Raises ValueError for a non-positive or non-finite ``half_width``."""
    _check_count(n)
    _check_count(z_dim, "z_dim")
    if not (isinstance(half_width, (int, float)) and math.isfinite(half_width) and half_width > 0):
        raise ValueError(f"half_width must be a finite positive number, got {half_width!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    g = _rng(seed, rng)
    u = torch.rand(n, z_dim, generator=g, dtype=torch.float64)
    return ((2.0 * u - 1.0) * float(half_width)).to(dtype)


# ----------------------------------------------------------------------------- resampling

def resample(log_w: torch.Tensor, n: int, replace: bool = False,
             rng: torch.Generator | None = None) -> torch.Tensor:
    """Indices ``[n]`` (int64) of candidates drawn with probability ∝ ``exp(log_w)`` (``[N]``,
    need not be normalised; -inf = weight zero, never drawn). ``replace=True``: i.i.d. categorical
    draws (inverse CDF on ``exp(log_w − max)`` in float64, no limit on N). ``replace=False``:
    Gumbel-top-n, i.e. argtop-n of ``log_w + Gumbel noise``, which equals sequential sampling
    without replacement with probability ∝ w among the remaining (Plackett–Luce); indices come in
    draw order. ``rng=None`` means a fresh ``torch.Generator().manual_seed(0)``. Raises for
    a non-1-D/empty ``log_w``, NaN/+inf, ``n < 1``, or ``n`` above the number of positive-weight
    candidates when ``replace=False``."""
    log_w = _check_log_w(log_w)
    _check_count(n)
    g = _rng(None, rng)
    n_pos = int(torch.isfinite(log_w).sum())
    if replace:
        p = torch.exp(log_w - log_w.max())  # [N], max weight 1
        cdf = torch.cumsum(p, 0)  # [N]
        u = torch.rand(n, generator=g, dtype=torch.float64) * cdf[-1]  # [n]
        idx = torch.searchsorted(cdf, u, right=True)
        # u can round up to cdf[-1]; fall back to the last positive-weight candidate.
        last = int(torch.nonzero(p > 0)[-1])
        return idx.clamp_(max=last)
    if n > n_pos:
        raise ValueError(f"cannot draw n={n} without replacement: only {n_pos} of "
                         f"{log_w.numel()} candidates have positive weight")
    u = torch.rand(log_w.shape, generator=g, dtype=torch.float64)
    u = u.clamp_(min=torch.finfo(torch.float64).tiny)
    keys = log_w - torch.log(-torch.log(u))  # [N] log w + Gumbel(0, 1)
    return torch.topk(keys, n, sorted=True).indices


def ess(log_w: torch.Tensor) -> float:
    """Effective sample size ``(Σw)² / Σw²`` of the weights ``exp(log_w)`` (``[N]``, any
    normalisation; -inf counts as weight zero), computed in log space; in ``[1, N]``. Raises
    ValueError for NaN/+inf, a bad shape, or all weights zero."""
    log_w = _check_log_w(log_w)
    return float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))


def ess_fraction(log_w: torch.Tensor) -> float:
    """``ess(log_w) / N`` with N all candidates (zero-weight ones included), in ``(0, 1]``."""
    return ess(log_w) / log_w.shape[0]


def check_ess(log_w: torch.Tensor, min_fraction: float = LOW_ESS_FRACTION) -> float:
    """Return ``ess(log_w)`` and warn (``LowESSWarning``) when ``ESS / N < min_fraction``: the
    resampled set is then dominated by a handful of candidates (repeats with replacement, a
    biased tail without), so draw more candidates or use a smaller ``|rho|`` / ``top_k``.
    Raises ValueError for ``min_fraction`` outside ``[0, 1]`` and as ``ess`` does."""
    if not (isinstance(min_fraction, (int, float)) and 0 <= min_fraction <= 1):
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction!r}")
    value = ess(log_w)
    n = log_w.shape[0]
    if value / n < min_fraction:
        warnings.warn(f"effective sample size {value:.3g} of N={n} candidates (ESS/N = "
                      f"{value / n:.2e} < {min_fraction:g}): the weights put almost all mass on "
                      "a few candidates, so the resampled set is not representative of the "
                      "target law; draw more candidates or use a smaller |rho| or top_k",
                      LowESSWarning, stacklevel=2)
    return value


def mixture_indices(log_w: torch.Tensor, n: int, fraction: float,
                    rng: torch.Generator | None = None, replace: bool = False
                    ) -> torch.Tensor:
    """The MaGNET appendix's "% MaGNET" mixture: ``[n]`` int64 indices whose first
    ``m = round(fraction · n)`` (half up) are drawn with ``resample(log_w, m, replace)`` and the
    remaining ``n − m`` uniformly over all N candidates (plain sampling, zero-weight candidates
    included); with ``replace=False`` the two parts are disjoint (all n indices distinct).
    ``rng=None`` means seed 0. Raises ValueError for ``fraction`` outside ``[0, 1]``,
    ``n > N`` without replacement, and as ``resample`` does."""
    log_w = _check_log_w(log_w)
    _check_count(n)
    check_real("fraction", fraction, low=0, high=1)
    g = _rng(None, rng)
    n_all = log_w.shape[0]
    if not replace and n > n_all:
        raise ValueError(f"cannot draw n={n} distinct indices from N={n_all} candidates")
    m = int(math.floor(fraction * n + 0.5))
    weighted = resample(log_w, m, replace, g) if m else torch.empty(0, dtype=torch.long)
    if m == n:
        return weighted
    plain = torch.zeros(n_all, dtype=torch.float64)  # [N] uniform
    if not replace:
        plain[weighted] = -math.inf  # disjoint from the weighted draws
    return torch.cat([weighted, resample(plain, n - m, replace, g)])


def per_class_log_weights(log_w: torch.Tensor, labels: torch.Tensor,
                          class_mass: torch.Tensor | None = None) -> torch.Tensor:
    """Renormalise ``log_w [N]`` within classes: returns float64 ``[N]`` (``logsumexp == 0``) whose
    total mass on class c is ``class_mass[c]`` (``[C]``, non-negative, normalised to sum 1) while
    ratios within a class are kept. Default ``class_mass``: each class's share of the candidates,
    so the plain class distribution is preserved and resampling acts only within classes (for
    conditional generators). ``labels`` is an int64 ``[N]`` tensor of values in ``[0, C)``.
    Raises ValueError for bad labels/shapes, a negative or non-finite ``class_mass``, or a class
    with positive mass but no positive-weight candidate."""
    log_w = _check_log_w(log_w)
    n = log_w.shape[0]
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32):
        raise TypeError("labels must be an int64/int32 tensor of shape [N]")
    if tuple(labels.shape) != (n,):
        raise ValueError(f"labels must have shape [{n}] (one per candidate), got "
                         f"{tuple(labels.shape)}")
    labels = labels.to("cpu", torch.int64)
    if bool((labels < 0).any()):
        raise ValueError(f"labels must be >= 0, got {int((labels < 0).sum())} negative")
    counts = torch.bincount(labels).to(torch.float64)  # [C_seen]
    if class_mass is None:
        mass = counts / n
    else:
        if not isinstance(class_mass, torch.Tensor) or class_mass.ndim != 1:
            raise ValueError("class_mass must be a 1-D tensor [C]")
        mass = check_finite(class_mass.detach().to("cpu", torch.float64), "class_mass")
        if int(labels.max()) >= mass.shape[0]:
            raise ValueError(f"labels go up to {int(labels.max())} but class_mass has only "
                             f"{mass.shape[0]} classes")
        if bool((mass < 0).any()) or float(mass.sum()) <= 0:
            raise ValueError("class_mass must be non-negative with a positive sum")
        mass = mass / mass.sum()
    n_cls = mass.shape[0]
    # per-class logsumexp of log_w (scatter over labels, -inf where a class has no weight)
    peak = torch.full((n_cls,), -math.inf, dtype=torch.float64)
    peak = peak.scatter_reduce(0, labels, log_w, reduce="amax")  # [C]
    safe_peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = torch.zeros(n_cls, dtype=torch.float64).index_add_(
        0, labels, torch.exp(log_w - safe_peak[labels]))  # [C]
    class_lse = torch.log(total) + safe_peak  # [C]; -inf for empty / all-zero classes
    missing = (mass > 0) & ~torch.isfinite(class_lse)
    if bool(missing.any()):
        bad = torch.nonzero(missing).flatten().tolist()
        raise ValueError(f"classes {bad[:10]} have positive class_mass but no candidate with "
                         "positive weight")
    out = log_w - class_lse[labels] + torch.log(mass)[labels]
    out[mass[labels] == 0] = -math.inf
    return out - torch.logsumexp(out, 0)


def equal_class_counts(n: int, classes: list[int] | tuple[int, ...]) -> dict[int, int]:
    """How ``n`` draws split equally over the K distinct ``classes``: ``{class: count}`` in
    sorted class order, each ``n // K``, and the first ``n mod K`` classes in sorted order one
    more (so the counts sum to ``n``; a class may get 0 when ``n < K``). Raises ValueError for
    ``n < 1``, no classes, negative or repeated class ids."""
    _check_count(n)
    ids = check_class_ids(classes)
    base, extra = divmod(n, len(ids))
    return {c: base + (i < extra) for i, c in enumerate(sorted(ids))}


def per_class_indices(log_w: torch.Tensor, labels: torch.Tensor, counts: dict[int, int], *,
                      replace: bool = False, fraction: float = 1.0,
                      rng: torch.Generator | None = None) -> torch.Tensor:
    """The authors' per-class sampler: for each class c of ``counts`` in sorted order,
    ``counts[c]`` indices of candidates with ``labels == c`` drawn with the weights ``log_w``
    renormalised within the class (``resample``; with ``fraction < 1`` the "% MaGNET" mixture
    ``mixture_indices`` within the class), all from the one ``rng`` (None: seed 0). ``log_w``
    is ``[N]`` (any normalisation, -inf = weight zero), ``labels`` int64 ``[N]``. Returns int64
    indices ``[Σ counts]`` into ``log_w``, grouped by class in sorted order. Raises ValueError
    for a class with no candidate, a count above the class's positive-weight candidates
    without replacement (naming the class), and as ``resample`` does."""
    log_w = _check_log_w(log_w, "log_w")
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32) \
            or tuple(labels.shape) != tuple(log_w.shape):
        raise ValueError(f"labels must be an int64 tensor of shape {tuple(log_w.shape)} (one per "
                         f"candidate), got {getattr(labels, 'dtype', type(labels).__name__)} "
                         f"{tuple(getattr(labels, 'shape', ()))}")
    check_real("fraction", fraction, low=0, high=1)
    g = _rng(None, rng)
    labels = labels.to("cpu", torch.int64)
    parts = []
    for c in sorted(counts):
        k = check_int(f"count of class {c}", counts[c], low=0)
        members = torch.nonzero(labels == c).flatten()  # [N_c]
        if members.numel() == 0:
            raise ValueError(f"class {c} has no candidate in the bank")
        if k == 0:
            continue
        sub = log_w[members]  # [N_c]
        n_pos = int(torch.isfinite(sub).sum())
        if n_pos == 0:
            raise ValueError(f"class {c}: none of its {members.numel()} candidates has a "
                             "positive weight")
        if not replace and k > (n_pos if fraction == 1 else members.numel()):
            raise ValueError(f"class {c}: cannot draw {k} without replacement, only {n_pos} of "
                             f"its {members.numel()} candidates have positive weight; lower n, "
                             "draw with replacement, or build a bigger bank")
        pick = (resample(sub, k, replace, g) if fraction == 1
                else mixture_indices(sub, k, fraction, rng=g, replace=replace))
        parts.append(members[pick])
    if not parts:
        raise ValueError("per_class_indices: the counts ask for no draw")
    return torch.cat(parts)
