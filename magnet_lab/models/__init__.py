"""Models magnet_lab samples from and judges with, and what every model needs the same way.

``toy`` (small CPA generators with known targets), ``fmnist`` (the embedded Fashion-MNIST
models), ``readers`` (checkpoint formats). Here: ``eval_mode``; ``batched`` (the one batched,
gradient-free inference loop that generation, classification and feature extraction share);
``truncate`` and ``generate`` for generators; ``fingerprint`` (what a model *is*: its
architecture, configuration and weights), which bank identities and caches key on.
"""
from __future__ import annotations

import contextlib
import inspect
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..validation import check_int, check_real

__all__ = ["batched", "class_vectors", "eval_mode", "fingerprint", "generate",
           "module_device_dtype", "truncate"]


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Run ``model`` in eval mode (dropout off, BatchNorm on running statistics) and restore its
    previous mode afterwards; anything that is not an ``nn.Module`` passes through."""
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def module_device_dtype(model: Any) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a module's first floating parameter or buffer (CPU float32
    for anything else, e.g. a plain function)."""
    if isinstance(model, nn.Module):
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, batch_size: int,
            model: Any = None, device: str | torch.device | None = None,
            dtype: torch.dtype | None = None) -> torch.Tensor:
    """``fn`` applied to ``x`` ``[N, ...]`` in batches of ``batch_size`` rows, without gradients,
    with ``model`` (default: ``fn`` itself) in eval mode; each batch is moved to ``device`` and,
    if floating, cast to ``dtype`` (defaults: the model's), and each output is detached to CPU.
    Returns the outputs concatenated along dim 0. Raises ValueError for an empty ``x``, a
    ``batch_size`` below 1, or an output that does not keep the batch dimension."""
    if not isinstance(x, torch.Tensor) or x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"batched inference needs a non-empty batch [N, ...], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    check_int("batch_size", batch_size, low=1)
    model = fn if model is None else model
    m_device, m_dtype = module_device_dtype(model)
    device = torch.device(device) if device is not None else m_device
    dtype = dtype or m_dtype
    out = []
    with eval_mode(model), torch.no_grad():
        for xb in x.split(batch_size):
            xb = xb.to(device, dtype) if xb.is_floating_point() else xb.to(device)
            yb = fn(xb)
            if not isinstance(yb, torch.Tensor) or yb.ndim == 0 or yb.shape[0] != xb.shape[0]:
                raise ValueError(f"the model must keep the batch dimension: a batch of "
                                 f"{xb.shape[0]} gave "
                                 f"{tuple(yb.shape) if isinstance(yb, torch.Tensor) else type(yb).__name__}")
            out.append(yb.detach().cpu())
    return torch.cat(out)


def _check_psi(psi: Any) -> None:
    check_real("psi", psi, positive=True)


def truncate(G: Any, z: torch.Tensor, psi: float) -> torch.Tensor:
    """Truncation ψ applied to latents ``z`` ``[N, d]`` for generator ``G``.

    A generator with its own ``truncate(z, psi)`` (StyleGAN: in w-space, towards w_avg) is
    asked to do it; for a plain z-space generator with a N(0, I) prior the analogue is ``ψ·z``
    (interpolating towards the prior's mean, 0). ψ = 1 returns ``z`` unchanged; ψ > 1 is allowed
    ("anti-truncation"). A generator whose truncation is a run option (BigGAN-deep's
    ``truncation``: batch-norm statistics and a truncated-normal law for z, never ψ·z) or whose
    latent law is not the Gaussian has no ψ: ψ ≠ 1 raises ValueError saying what to use
    instead. Raises ValueError unless ψ is a finite positive number.
    """
    _check_psi(psi)
    if psi == 1.0:
        return z
    if callable(getattr(G, "truncate", None)):
        return G.truncate(z, psi)
    options = G.options() if callable(getattr(G, "options", None)) else {}
    if "truncation" in options:
        raise ValueError(f"{type(G).__name__} has no truncation psi (got psi={psi:g}): its "
                         "truncation is a run option, load_generator(..., truncation=t) or "
                         "G.with_options(truncation=t), with candidates drawn from its law "
                         "(t · truncnorm(-2, 2)); build the bank at that truncation")
    law = getattr(getattr(G, "latent_spec", None), "law", None)
    if law is not None and getattr(law, "name", "gaussian") != "gaussian":
        raise ValueError(f"psi={psi:g} scales z towards the mean of a N(0, I) prior; this "
                         f"generator's latent law is {law!r}: truncate through its law instead")
    return z * psi


def _accepts_psi(G: Any) -> bool:
    """Whether ``G(z, c, psi=...)`` exists (StyleGAN2/3: truncation in w-space with labels)."""
    try:
        return "psi" in inspect.signature(G.forward if isinstance(G, nn.Module) else G).parameters
    except (TypeError, ValueError):
        return False


def class_vectors(G: Any, labels: torch.Tensor) -> torch.Tensor:
    """One-hot class vectors ``[N, n_classes]`` of integer ``labels`` ``[N]`` for the
    conditional generator ``G``: ``G.one_hot(labels)`` when G has it (BigGAN-deep), else a
    one-hot of ``latent.spec_of(G).n_classes`` in G's dtype. Raises ValueError for an
    unconditional G, labels that are not integers of shape [N] or outside [0, n_classes)."""
    n_classes = _checked_labels(G, labels)
    if callable(getattr(G, "one_hot", None)):
        return G.one_hot(labels)
    device, dtype = module_device_dtype(G)
    return torch.nn.functional.one_hot(labels.long(), n_classes).to(device, dtype)


def generate(G: nn.Module, z: torch.Tensor, *, psi: float = 1.0,
             labels: torch.Tensor | None = None, batch_size: int = 500,
             size: int | None = None) -> torch.Tensor:
    """Images ``[N, C, H, W]`` (float32, CPU, in [-1, 1]) of latents ``z`` ``[N, d]`` under
    truncation ``psi``: ``batched`` inference on ``G``'s device and dtype, in eval mode. A
    conditional generator (``latent.spec_of(G).n_classes`` set: BigGAN-deep, a StyleGAN2/3 with
    c_dim > 0, a wrapped conditional callable) takes the class ``labels`` (int64 ``[N]``) of
    each latent, passed as ``G(z, class_vectors(G, labels))`` (with ψ: ``G(z, c, psi=ψ)`` for a
    StyleGAN, ``G(ψ·z, c)`` for a plain Gaussian-z generator). ψ is not BigGAN-deep's
    truncation (a run option, ``load_generator(..., truncation=t)``): ψ ≠ 1 there raises
    (``truncate``). Outputs are clamped to [-1, 1], as images are (StyleGAN2's raw synthesis
    output overshoots; the official code clamps when it writes images; spectra differentiate
    the raw G). With ``size``, each batch is resized to ``[size, size]`` (antialiased) on the
    device, so N 1024² images never sit in memory at full size. Raises ValueError for a
    conditional G without labels, labels for an unconditional G, labels that do not match z
    (shape, range), and as ``truncate`` does."""
    _check_psi(psi)  # before any work
    check_int("size", size, low=1, optional=True)

    def resized(x: torch.Tensor) -> torch.Tensor:
        if size is None:
            return x
        from torchvision.transforms.v2.functional import resize
        return resize(x, [size, size], antialias=True).clamp(-1, 1)

    n_classes = _n_classes(G)
    if n_classes is None:
        if labels is not None:
            raise ValueError(f"{type(G).__name__} is unconditional: it takes no labels")

        def make(zb: torch.Tensor) -> torch.Tensor:
            return resized(G(truncate(G, zb, psi)).clamp(-1, 1))  # [b, C, H, W]

        return batched(make, z, batch_size=batch_size, model=G).float()
    if labels is None:
        raise ValueError(f"{type(G).__name__} is class-conditional ({n_classes} classes): pass "
                         "labels=[N] class ids (e.g. a bank's labels at the drawn indices)")
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or not isinstance(labels, torch.Tensor) \
            or labels.shape != z.shape[:1]:
        raise ValueError(f"labels must have shape [N] with N the rows of z; got z "
                         f"{tuple(getattr(z, 'shape', ()))}, labels "
                         f"{tuple(getattr(labels, 'shape', ()))}")
    _checked_labels(G, labels)  # before any work
    if psi != 1 and not _accepts_psi(G):
        truncate(G, z[:1], psi)  # raises for a generator without ψ
    device, dtype = module_device_dtype(G)
    z_cpu, labels_cpu = z.detach().cpu(), labels.detach().cpu()

    def make_c(ib: torch.Tensor) -> torch.Tensor:
        ib = ib.cpu()
        zb = z_cpu[ib].to(device, dtype)  # [b, d]
        cb = class_vectors(G, labels_cpu[ib]).to(device, dtype)  # [b, n_classes]
        if psi == 1:
            x = G(zb, cb)
        elif _accepts_psi(G):
            x = G(zb, cb, psi=psi)
        else:
            x = G(truncate(G, zb, psi), cb)
        return resized(x.clamp(-1, 1))  # [b, C, H, W]

    return batched(make_c, torch.arange(z.shape[0]), batch_size=batch_size, model=G).float()


def _checked_labels(G: Any, labels: Any) -> int:
    """G's number of classes after checking ``labels`` (integers ``[N]`` in range)."""
    from .. import latent

    n_classes = latent.spec_of(G).n_classes
    if n_classes is None:
        raise ValueError(f"{type(G).__name__} is unconditional (no classes): pass no labels")
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() \
            or labels.dtype == torch.bool or labels.ndim != 1:
        raise ValueError(f"labels must be an integer tensor [N], got "
                         f"{getattr(labels, 'dtype', type(labels).__name__)} "
                         f"{tuple(getattr(labels, 'shape', ()))}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"labels must be class ids in [0, {n_classes}), got min "
                         f"{int(labels.min())}, max {int(labels.max())}")
    return n_classes


def _n_classes(G: Any) -> int | None:
    """The classes a generator is conditioned on (``latent_spec.n_classes``, else a positive
    ``c_dim``), None for an unconditional one."""
    spec = getattr(G, "latent_spec", None)
    if spec is not None:
        return spec.n_classes
    c_dim = getattr(G, "c_dim", 0)
    return c_dim if isinstance(c_dim, int) and not isinstance(c_dim, bool) and c_dim > 0 else None


def _config(model: nn.Module) -> Any:
    """The model's class, constructor arguments and run options (``config()``/``options()`` when
    it has them, e.g. StyleGAN2's ψ, cutoff and noise mode), or None where unknown."""
    cfg = getattr(model, "config", None)
    recorded = {"architecture": type(model).__name__, "config": cfg() if callable(cfg) else cfg}
    if callable(getattr(model, "options", None)):
        recorded["options"] = model.options()
    return recorded


def fingerprint(model: nn.Module) -> str:
    """A 16-hex-digit SHA-256 of what ``model`` computes: its class, its configuration and run
    options (``model.config()``/``model.options()`` when it has them: a LeakyReLU slope that no
    tensor holds, StyleGAN2's ψ/cutoff/noise mode) and every
    tensor of its state (names, dtypes, shapes, values). Retrained weights or an edited
    configuration change it, so a bank or cache keyed on it is never reused for another model."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fingerprint needs an nn.Module, got {type(model).__name__}")
    h = hashlib.sha256()
    h.update(json.dumps(_config(model), sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
