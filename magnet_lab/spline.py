"""Exact continuous piecewise-affine (CPA) facts for ReLU-type generators.

A network built from affine layers and pointwise piecewise-affine nonlinearities is CPA: on each
latent region ω (a fixed activation pattern) ``G(z) = A_ω z + b_ω``. This module computes, without
autograd, the pattern at ``z``, the region's ``(A_ω, b_ω)``, ``½ log det(A_ωᵀA_ω)``, the analytic
log density of the pushed-forward prior on the learned manifold, and the exact regions crossed by
a latent segment.

Supported networks: an ``nn.Sequential`` (nested Sequentials are flattened), or any module whose
attribute ``net`` is one (its own ``forward`` is then assumed to be ``net(z)``), made of

* affine layers: ``nn.Linear``, ``nn.Conv2d`` (``padding_mode="zeros"``), ``nn.ConvTranspose2d``,
  ``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` in eval mode with running statistics, ``nn.Flatten``,
  ``nn.Unflatten``, ``nn.Identity``, ``nn.Upsample`` (any mode: each interpolation is linear);
* nonlinearities: ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.Hardtanh`` (also ``nn.ReLU6``).

Subclasses are accepted only if they do not override ``forward`` (parametrised weights, e.g.
``torch.nn.utils.parametrize``, are fine). Forward hooks on the layers are not seen.

Pattern codes (``activation_codes``): ReLU/LeakyReLU units are 1 (slope 1) or 0 (slope 0 or
``negative_slope``); Hardtanh units are -1 (clipped at ``min_val``), 0 (linear) or +1 (clipped at
``max_val``). Ties follow torch's own backward: ReLU'(0) = 0, LeakyReLU'(0) = ``negative_slope``,
Hardtanh is clipped (slope 0) at exactly ``min_val`` / ``max_val``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .validation import check_latents

__all__ = [
    "SegmentRegions",
    "activation_codes",
    "activation_pattern",
    "half_logdet",
    "log_density",
    "region_affine",
    "regions_along_segment",
]

_AFFINE = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten,
           nn.Unflatten, nn.Identity, nn.Upsample)
_NONLINEAR = (nn.ReLU, nn.LeakyReLU, nn.Hardtanh)
_SUPPORTED_NAMES = ", ".join(c.__name__ for c in _AFFINE + _NONLINEAR)


# ----------------------------------------------------------------------------- network walking

def _layers(net: nn.Module) -> list[nn.Module]:
    """The flat list of supported layers of ``net``; raises TypeError / ValueError otherwise."""
    if isinstance(net, nn.Sequential):
        seq = net
    elif isinstance(getattr(net, "net", None), nn.Sequential):
        seq = net.net
    else:
        raise TypeError("spline functions take an nn.Sequential or a module whose attribute `net` "
                        f"is an nn.Sequential, got {type(net).__name__}")
    out: list[nn.Module] = []

    def visit(s: nn.Sequential, prefix: str) -> None:
        for name, m in s.named_children():
            where = f"{prefix}{name}"
            if isinstance(m, nn.Sequential):
                visit(m, where + ".")
                continue
            base = next((c for c in _AFFINE + _NONLINEAR if isinstance(m, c)), None)
            if base is None or type(m).forward is not base.forward:
                why = "" if base is None else f" (a subclass of {base.__name__} overriding forward)"
                raise TypeError(f"unsupported module {type(m).__name__} at `{where}`{why}: "
                                f"spline functions support only {_SUPPORTED_NAMES}")
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                if m.training:
                    raise ValueError(f"{type(m).__name__} at `{where}` is in training mode, where "
                                     "it uses batch statistics and is not affine in z; call .eval()")
                if m.running_mean is None or m.running_var is None:
                    raise ValueError(f"{type(m).__name__} at `{where}` has no running statistics "
                                     "(track_running_stats=False) and is not affine in z")
            if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
                raise TypeError(f"unsupported Conv2d at `{where}`: padding_mode="
                                f"{m.padding_mode!r}; only 'zeros' is supported")
            out.append(m)

    visit(seq, "")
    return out


def _input_dim(net: nn.Module, layers: list[nn.Module]) -> int | None:
    """The latent dimension d when it can be read off the net (``z_dim`` or the first layer)."""
    z_dim = getattr(net, "z_dim", None)
    if isinstance(z_dim, int):
        return z_dim
    for m in layers:
        if isinstance(m, nn.Identity):
            continue
        if isinstance(m, nn.Linear):
            return m.in_features
        if isinstance(m, nn.Unflatten) and m.dim == 1:
            return math.prod(m.unflattened_size)
        return None
    return None


def _check_inputs(net: nn.Module, z: Tensor) -> list[nn.Module]:
    layers = _layers(net)
    check_latents(z, _input_dim(net, layers))
    tensors = [p for p in net.parameters()] + [b for b in net.buffers() if b.is_floating_point()]
    if tensors and tensors[0].dtype != z.dtype:
        raise TypeError(f"z has dtype {z.dtype} but the network's parameters are "
                        f"{tensors[0].dtype}; cast one of them")
    if tensors and tensors[0].device != z.device:
        raise ValueError(f"z is on {z.device} but the network is on {tensors[0].device}")
    return layers


def _linear_part(m: nn.Module, x: Tensor) -> Tensor:
    """The bias-free linear part of the affine layer ``m`` applied to ``x`` ([N, *in_shape])."""
    if isinstance(m, nn.Linear):
        return F.linear(x, m.weight)
    if isinstance(m, nn.Conv2d):
        return F.conv2d(x, m.weight, None, m.stride, m.padding, m.dilation, m.groups)
    if isinstance(m, nn.ConvTranspose2d):
        return F.conv_transpose2d(x, m.weight, None, m.stride, m.padding, m.output_padding,
                                  m.groups, m.dilation)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        scale = torch.rsqrt(m.running_var + m.eps)  # [C]
        if m.weight is not None:
            scale = scale * m.weight
        return x * scale.view(-1, *([1] * (x.ndim - 2)))
    return m(x)  # Flatten, Unflatten, Identity, Upsample: linear and bias-free


def _codes(m: nn.Module, pre: Tensor) -> Tensor:
    """Pattern codes (int8) of the nonlinearity ``m`` at pre-activation ``pre``, torch's ties."""
    if isinstance(m, nn.Hardtanh):
        return (pre >= m.max_val).to(torch.int8) - (pre <= m.min_val).to(torch.int8)
    return (pre > 0).to(torch.int8)


def _slope_and_offset(m: nn.Module, codes: Tensor,
                      dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """Per-unit slope and (Hardtanh only) constant output of the region given by ``codes``."""
    if isinstance(m, nn.Hardtanh):
        slope = (codes == 0).to(dtype)
        offset = (codes == 1).to(dtype) * m.max_val + (codes == -1).to(dtype) * m.min_val
        return slope, offset
    if isinstance(m, nn.LeakyReLU):
        one = torch.ones((), dtype=dtype, device=codes.device)
        return torch.where(codes == 1, one, one * m.negative_slope), None
    return codes.to(dtype), None


def _forward_codes(layers: list[nn.Module], z: Tensor) -> tuple[list[Tensor], Tensor]:
    codes, x = [], z.clone()  # clone: an in-place first ReLU must not overwrite the caller's z
    for m in layers:
        if isinstance(m, _NONLINEAR):
            codes.append(_codes(m, x))
        x = m(x)
    return codes, x


# ----------------------------------------------------------------------------- public API

@torch.no_grad()
def activation_codes(net: nn.Module, z: Tensor) -> list[Tensor]:
    """Integer pattern codes at latents ``z`` [B, d]: one int8 tensor [B, *unit_shape] per
    nonlinearity (ReLU/LeakyReLU: 0/1; Hardtanh: -1 clipped low, 0 linear, +1 clipped high).
    Two latents lie in the same region iff all their codes agree. Raises TypeError/ValueError for
    an unsupported network or bad ``z``.
    """
    return _forward_codes(_check_inputs(net, z), z)[0]


@torch.no_grad()
def activation_pattern(net: nn.Module, z: Tensor) -> list[Tensor]:
    """The slope of every unit of every nonlinearity at latents ``z`` [B, d]: one tensor
    [B, *unit_shape] per nonlinearity, in the net's dtype, with values in {0, 1} (ReLU, Hardtanh)
    or {negative_slope, 1} (LeakyReLU); ties at a kink take torch's convention (ReLU'(0) = 0).
    Raises TypeError for an unsupported module and ValueError for bad ``z`` or training-mode BN.
    """
    layers = _check_inputs(net, z)
    codes = _forward_codes(layers, z)[0]
    nonlin = [m for m in layers if isinstance(m, _NONLINEAR)]
    return [_slope_and_offset(m, c, z.dtype)[0] for m, c in zip(nonlin, codes)]


@torch.no_grad()
def region_affine(net: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
    """The affine map ``G(z') = A z' + b`` of the region containing each latent of ``z`` [B, d].

    Returns ``A`` [B, D, d] and ``b`` [B, D] (output flattened to D), in the net's dtype, computed
    from the activation pattern alone (no autograd): the d columns of A travel through the bias-free
    linear part of each affine layer as a batch of B·d inputs, b through the full layer, and each
    nonlinearity scales both by its slope pattern (adding the clip constant to b where a Hardtanh
    saturates). Vectorised over the batch; memory O(B·d·width) for the widest layer, so chunk B for
    wide conv nets. Raises TypeError for an unsupported module, ValueError for bad ``z`` or BN in
    training mode.
    """
    layers = _check_inputs(net, z)
    B, d = z.shape
    x = z.clone()  # an in-place first ReLU must not overwrite the caller's z
    A = torch.eye(d, dtype=z.dtype, device=z.device).repeat(B, 1)  # [B*d, d]: column j of sample i
    b = torch.zeros_like(z)  # [B, d]
    for m in layers:
        if isinstance(m, _NONLINEAR):
            slope, offset = _slope_and_offset(m, _codes(m, x), z.dtype)  # [B, *unit_shape]
            A = (A.view(B, d, *slope.shape[1:]) * slope.unsqueeze(1)).view(B * d, *slope.shape[1:])
            b = b * slope if offset is None else b * slope + offset
        else:
            A = _linear_part(m, A)
            b = m(b)
        x = m(x)
    A = A.reshape(B, d, -1).transpose(1, 2)  # [B, D, d]
    return A, b.reshape(B, -1)


def half_logdet(A: Tensor) -> Tensor:
    """``½ log det(AᵀA) = Σ_i log σ_i(A)`` for a batch ``A`` [B, D, d], as float64 [B].

    Singular values are computed in float64 (via ``torch.linalg.svdvals``); a singular value at or
    below ``max(D, d)·eps·σ_max`` counts as zero, so a rank-deficient A (including D < d) gives
    -inf. Raises ValueError for a tensor that is not 3-D or has non-finite entries.
    """
    if not isinstance(A, Tensor) or A.ndim != 3:
        raise ValueError(f"A must be a tensor [B, D, d], got {getattr(A, 'shape', type(A))}")
    if not bool(torch.isfinite(A).all()):
        raise ValueError("A contains non-finite entries")
    B, D, d = A.shape
    A64 = A.detach().to(torch.float64)
    if D < d:
        return torch.full((B,), -math.inf, dtype=torch.float64, device=A.device)
    sv = torch.linalg.svdvals(A64)  # [B, d], descending
    tol = max(D, d) * torch.finfo(torch.float64).eps * sv[:, :1]
    log_sv = torch.where(sv > tol, sv, torch.zeros_like(sv)).log()
    return log_sv.sum(dim=1)


def log_density(net: nn.Module, z: Tensor, prior: str = "gaussian",
                box: float | None = None) -> Tensor:
    """Analytic log density [B] (float64) of the pushed-forward latent distribution at ``G(z)``.

    The density is w.r.t. the d-dimensional Hausdorff (surface) measure on the output manifold:
    ``log p_z(z) − ½ log det(A_ωᵀA_ω)``. It is exact only where G is injective (no other latent
    maps to the same point); otherwise it is the contribution of ``z``'s sheet alone. ``prior`` is
    ``"gaussian"`` (N(0, I_d)) or ``"uniform"`` (uniform on ``[-box, box]^d``, -inf outside, ``box``
    required). A rank-deficient region gives +inf. Raises ValueError for a bad prior/box/``z``.
    """
    if prior not in ("gaussian", "uniform"):
        raise ValueError(f"prior must be 'gaussian' or 'uniform', got {prior!r}")
    if prior == "uniform" and (box is None or not box > 0):
        raise ValueError(f"prior='uniform' needs a positive `box`, got {box!r}")
    A, _ = region_affine(net, z)
    z64 = z.detach().to(torch.float64)
    d = z.shape[1]
    if prior == "gaussian":
        log_pz = -0.5 * (z64 ** 2).sum(dim=1) - 0.5 * d * math.log(2 * math.pi)
    else:
        inside = (z64.abs() <= box).all(dim=1)
        log_pz = torch.where(inside, torch.full_like(z64[:, 0], -d * math.log(2 * box)),
                             torch.full_like(z64[:, 0], -math.inf))
    return log_pz - half_logdet(A).to(z64.device)


@dataclass
class SegmentRegions:
    """The regions crossed by the latent segment ``z(t) = z0 + t (z1 − z0)``, t ∈ [0, 1].

    ``t`` [n+1] float64 breakpoints with ``t[0] = 0`` and ``t[n] = 1``; piece k is (t[k], t[k+1])
    and has pattern ``codes[j][k]`` at nonlinearity j (``codes[j]`` is int8 [n, *unit_shape], as
    in ``activation_codes``). ``z0``/``z1`` are the endpoints.
    """

    t: Tensor
    codes: list[Tensor]
    z0: Tensor
    z1: Tensor

    @property
    def n_regions(self) -> int:
        return int(self.t.numel()) - 1

    def knots(self) -> Tensor:
        """The latents at the breakpoints, [n+1, d] (the net is affine between consecutive ones)."""
        t = self.t.to(self.z0.dtype).unsqueeze(1)
        return self.z0.unsqueeze(0) + t * (self.z1 - self.z0).unsqueeze(0)


def _segment_step(layers: list[nn.Module], z0: Tensor, dz: Tensor, t: float,
                  forced: list[Tensor] | None, t_tol: float
                  ) -> tuple[list[Tensor], float, list[Tensor]]:
    """Pattern on (t, t + δ) and the distance δ to the next kink along the segment.

    Values come from the forward pass at z(t); a unit at its kink (value equal to the threshold,
    or flagged in ``forced`` as having just crossed) takes the state the direction of travel
    leads into. Returns (codes, δ, flags of the units whose crossing is within ``t_tol`` of δ,
    1 = lower/only threshold, 2 = upper Hardtanh threshold).
    """
    x = z0 + t * dz  # [1, d]
    q = dz.clone()  # [1, d]: dx/dt on the current region
    codes, deltas, kinds = [], [], []
    j = 0
    for m in layers:
        if not isinstance(m, _NONLINEAR):
            q = _linear_part(m, q)
            x = m(x)
            continue
        f = forced[j] if forced is not None else torch.zeros_like(x, dtype=torch.int8)
        inf = torch.full_like(x, math.inf)
        if isinstance(m, nn.Hardtanh):
            lo, hi = m.min_val, m.max_val
            at_lo, at_hi = (f == 1) | (x == lo), (f == 2) | (x == hi)
            c = _codes(m, x)
            c = torch.where(at_lo & (q != 0), torch.where(q > 0, 0, -1).to(torch.int8), c)
            c = torch.where(at_hi & (q != 0), torch.where(q < 0, 0, 1).to(torch.int8), c)
            # lo is crossed when falling through the linear part or rising out of the low clip
            to_lo = ((c == 0) & (q < 0)) | ((c == -1) & (q > 0))
            to_hi = ((c == 0) & (q > 0)) | ((c == 1) & (q < 0))
            d_lo = torch.where(to_lo, ((lo - x) / q).clamp_min(0), inf)
            d_hi = torch.where(to_hi, ((hi - x) / q).clamp_min(0), inf)
            delta = torch.minimum(d_lo, d_hi)
            kind = torch.where(d_lo <= d_hi, 1, 2).to(torch.int8)
        else:
            at = (f == 1) | (x == 0)
            c = torch.where(at & (q != 0), (q > 0).to(torch.int8), _codes(m, x))
            moving = ((c == 1) & (q < 0)) | ((c == 0) & (q > 0))
            delta = torch.where(moving, (-x / q).clamp_min(0), inf)
            kind = torch.ones_like(c)
        slope, offset = _slope_and_offset(m, c, x.dtype)
        q = q * slope
        x = m(x)
        codes.append(c)
        deltas.append(delta)
        kinds.append(kind)
        j += 1
    delta_min = min((float(dl.min()) for dl in deltas), default=math.inf)
    next_forced = [torch.where(dl <= delta_min + t_tol, k, torch.zeros_like(k))
                   for dl, k in zip(deltas, kinds)]
    return codes, delta_min, next_forced


@torch.no_grad()
def regions_along_segment(net: nn.Module, z0: Tensor, z1: Tensor, *, t_tol: float = 1e-12,
                          max_regions: int = 1_000_000) -> SegmentRegions:
    """The exact linear regions crossed by the segment from ``z0`` [d] to ``z1`` [d].

    On a region every pre-activation is affine in t, so the next kink is found in closed form as
    the smallest t' > t at which a unit moving towards one of its thresholds reaches it; the walk
    then continues on the one-sided pattern just past t'. Crossings within ``t_tol`` of each other
    are merged into one breakpoint. Works for every supported network (MLPs and conv nets; one
    forward per region). Returns a ``SegmentRegions``; raises the errors of ``region_affine`` and
    RuntimeError past ``max_regions`` pieces.
    """
    for name, v in (("z0", z0), ("z1", z1)):
        if not isinstance(v, Tensor) or v.ndim != 1:
            raise ValueError(f"{name} must be a 1-D tensor [d], got {getattr(v, 'shape', type(v))}")
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have the same shape, got {tuple(z0.shape)} and "
                         f"{tuple(z1.shape)}")
    layers = _check_inputs(net, torch.stack([z0, z1]))
    a, dz = z0.unsqueeze(0), (z1 - z0).unsqueeze(0)  # [1, d]
    codes, delta, forced = _segment_step(layers, a, dz, 0.0, None, t_tol)
    ts, pieces, t = [0.0], [codes], 0.0
    while t + delta < 1.0:
        t = t + delta
        codes, delta, forced = _segment_step(layers, a, dz, t, forced, t_tol)
        if t > ts[-1]:
            ts.append(t)
            pieces.append(codes)
        else:  # a zero-length step: only the pattern at the same breakpoint changed
            pieces[-1] = codes
        if len(pieces) > max_regions:
            raise RuntimeError(f"segment crosses more than max_regions={max_regions} regions")
    ts.append(1.0)
    stacked = [torch.cat([p[j] for p in pieces]) for j in range(len(pieces[0]))]
    return SegmentRegions(t=torch.tensor(ts, dtype=torch.float64), codes=stacked,
                          z0=z0.detach().clone(), z1=z1.detach().clone())
