"""The generator's latent law: how its candidates are drawn, their exact log prior, their classes.

A generator states, in one ``LatentSpec``, the law its latents follow (``GaussianLaw``: z ~ N(0,
I_d), every generator so far; ``TruncatedNormalLaw``: each coordinate a normal truncated to
[−bound, bound] times ``scale``, BigGAN's), its latent size, its conditioning (``n_classes``, or
None for an unconditional generator) and its run options (what ``load_generator`` was asked
for, e.g. StyleGAN2's ψ). ``spec_of(G)`` gives the spec of any generator: the one a loader
attached (``G.latent_spec``), else the Gaussian default of a module with an integer ``z_dim``;
``wrap(fn, z_dim, ...)`` turns a user's callable into a generator that carries its spec.

Everything downstream takes the law from here: ``LatentSpec.draw`` makes a bank's candidates
(and their class labels, stored in the bank), ``LatentLaw.identity`` is the ``latents`` law of
the bank identity (the Gaussian's is exactly ``{"law": "gaussian", "seed": s}``, so banks built
before this module keep their identity), and ``law_of_bank`` reads the law back from a bank so
the exact-uniform weights divide out *its* log prior.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from . import sampling
from .validation import check_latents

__all__ = ["Candidates", "GaussianLaw", "LatentLaw", "LatentSpec", "TruncatedNormalLaw",
           "law_from_identity", "law_of_bank", "spec_of", "wrap"]


def _check_count(n: Any, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return n


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return seed


@runtime_checkable
class LatentLaw(Protocol):
    """What a latent law provides: seeded draws, the exact log density, and its bank identity."""

    def sample(self, n: int, z_dim: int, *, rng: torch.Generator,
               dtype: torch.dtype = torch.float32) -> torch.Tensor: ...

    def log_prior(self, z: torch.Tensor) -> torch.Tensor: ...

    def identity(self, seed: int, *, per_row: bool = False) -> dict[str, Any]: ...


@dataclass(frozen=True)
class GaussianLaw:
    """z ~ N(0, I_d): every generator's law unless it says otherwise. ``sample`` is
    ``sampling.gaussian_latents`` (drawn in float64, cast), ``log_prior`` is
    ``sampling.gaussian_log_prior`` and ``identity`` is the bank identity's law as it has always
    been (``{"law": "gaussian", "seed": s}``; per-row seeds: ``{"law": "gaussian_per_row",
    "first_seed": s}``)."""

    name = "gaussian"

    def sample(self, n: int, z_dim: int, *, rng: torch.Generator,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``n`` standard-normal latents ``[n, z_dim]`` of ``dtype`` drawn with ``rng``."""
        return sampling.gaussian_latents(n, z_dim, rng=rng, dtype=dtype)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """``log N(z; 0, I)`` of latents ``z [N, d]``: float64 ``[N]``."""
        return sampling.gaussian_log_prior(z)

    def identity(self, seed: int, *, per_row: bool = False) -> dict[str, Any]:
        """The bank identity's ``latents`` law for candidates drawn from ``seed`` (``per_row``:
        row i from its own seed ``seed + i``)."""
        _check_seed(seed)
        return ({"law": "gaussian_per_row", "first_seed": seed} if per_row
                else {"law": "gaussian", "seed": seed})


@dataclass(frozen=True)
class TruncatedNormalLaw:
    """Each coordinate ``scale · x`` with x a standard normal truncated to [−bound, bound]
    (BigGAN's "truncation trick" draws, bound 2 by default). ``sample`` is exact: the inverse
    CDF of uniforms on [Φ(−bound), Φ(bound)] in float64 (``torch.special.ndtri``), cast to the
    requested dtype. ``log_prior`` is the normalised density ``Σ_j [log φ(z_j/scale) −
    log(Φ(b) − Φ(−b)) − log scale]``, −inf outside the box. Raises ValueError on construction
    for a bound or scale that is not finite and positive."""

    bound: float = 2.0
    scale: float = 1.0
    name = "truncated_normal"

    def __post_init__(self) -> None:
        for key in ("bound", "scale"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    math.isfinite(v) and v > 0):
                raise ValueError(f"{key} must be a finite positive number, got {v!r}")

    def _log_mass(self) -> float:
        """log(Φ(b) − Φ(−b)) = log erf(b / √2), the truncation normaliser of one coordinate."""
        return math.log(math.erf(self.bound / math.sqrt(2.0)))

    def sample(self, n: int, z_dim: int, *, rng: torch.Generator,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``n`` latents ``[n, z_dim]`` of ``dtype`` drawn with ``rng`` (exact inverse CDF)."""
        _check_count(n, "n")
        _check_count(z_dim, "z_dim")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        b = float(self.bound)
        lo = 0.5 * math.erfc(b / math.sqrt(2.0))  # Φ(−b), accurate in the tail
        u = torch.rand(n, z_dim, generator=rng, dtype=torch.float64)  # [n, d] in [0, 1)
        x = torch.special.ndtri(lo + u * (1.0 - 2.0 * lo)).clamp_(-b, b)  # [n, d]
        return (x * float(self.scale)).to(dtype)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """The law's exact log density of latents ``z [N, d]``: float64 ``[N]``, −inf for a row
        outside [−bound·scale, bound·scale]^d. Raises via ``check_latents`` for a bad ``z``."""
        check_latents(z)
        x = z.detach().to("cpu", torch.float64) / float(self.scale)  # [N, d]
        d = x.shape[1]
        per_row = -0.5 * (x * x).sum(1) - d * (0.5 * math.log(2 * math.pi) + self._log_mass()
                                                + math.log(self.scale))  # [N]
        outside = (x.abs() > self.bound).any(1)
        return per_row.masked_fill(outside, -math.inf)

    def identity(self, seed: int, *, per_row: bool = False) -> dict[str, Any]:
        """The bank identity's ``latents`` law: the Gaussian's keys with this law's name, bound
        and scale."""
        _check_seed(seed)
        base = ({"law": "truncated_normal_per_row", "first_seed": seed} if per_row
                else {"law": "truncated_normal", "seed": seed})
        return {**base, "bound": float(self.bound), "scale": float(self.scale)}


_LAWS = {"gaussian": GaussianLaw, "truncated_normal": TruncatedNormalLaw}


def law_from_identity(law: dict[str, Any] | None) -> LatentLaw:
    """The law a bank identity's ``latents`` entry names (``{"law": "gaussian", ...}``,
    ``"truncated_normal"`` with ``bound`` and ``scale``; the ``_per_row`` variants alike).
    Raises ValueError, naming the entry, for latents the bank was given without a law
    (``"given"``), an absent entry or an unknown law."""
    name = (law or {}).get("law")
    base = name[:-len("_per_row")] if isinstance(name, str) and name.endswith("_per_row") else name
    if base not in _LAWS:
        why = {"given": "the bank was built from given latents, so their prior is unknown",
               None: "the bank records no latent law (e.g. an authors' .npz bank)"}
        raise ValueError(f"the bank's latents law is {name!r}: "
                         f"{why.get(name, 'not a law this package knows')} (known laws: "
                         f"{sorted(_LAWS)})")
    if base == "truncated_normal":
        return TruncatedNormalLaw(bound=float(law["bound"]), scale=float(law["scale"]))
    return GaussianLaw()


def law_of_bank(vb: Any) -> LatentLaw:
    """The latent law of bank ``vb``'s candidates, read from its identity
    (``vb.meta["identity"]["latents"]``). Raises ValueError as ``law_from_identity`` does."""
    identity = (getattr(vb, "meta", None) or {}).get("identity") or {}
    return law_from_identity(identity.get("latents"))


@dataclass(frozen=True)
class Candidates:
    """Candidates drawn from a ``LatentSpec``: ``z`` ``[N, d]``, their class ``labels`` (int64
    ``[N]``, None for an unconditional generator), per-row ``seeds`` (int64 ``[N]`` or None) and
    ``law``, the bank identity's ``latents`` law of this draw."""

    z: torch.Tensor
    labels: torch.Tensor | None
    seeds: torch.Tensor | None
    law: dict[str, Any]
    n_classes: int | None = None

    def bank_arguments(self) -> dict[str, Any]:
        """The ``bank.build`` keyword arguments that record this draw: ``latent_law`` and
        ``seeds``, and for a conditional draw ``labels`` and ``n_classes``."""
        out: dict[str, Any] = {"latent_law": self.law, "seeds": self.seeds}
        if self.labels is not None:
            out |= {"labels": self.labels, "n_classes": self.n_classes}
        return out


@dataclass(frozen=True)
class LatentSpec:
    """How a generator's candidates are drawn: ``law`` (``GaussianLaw``, ``TruncatedNormalLaw``),
    ``z_dim``, ``n_classes`` (None: unconditional; else a candidate's class is drawn with it and
    stored in the bank's labels) and ``run_options`` (the loader's options, e.g. StyleGAN2's
    ``psi``, recorded with a bank so ``sample`` can load the generator again). Raises
    ValueError on construction for a bad ``z_dim``, ``n_classes`` or law."""

    law: LatentLaw
    z_dim: int
    n_classes: int | None = None
    run_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.law, LatentLaw):
            raise ValueError(f"law must be a latent law (GaussianLaw, TruncatedNormalLaw, ...), "
                             f"got {self.law!r}")
        if isinstance(self.z_dim, bool) or not isinstance(self.z_dim, int) or self.z_dim < 1:
            raise ValueError(f"z_dim must be a positive int, got {self.z_dim!r}")
        if self.n_classes is not None and (isinstance(self.n_classes, bool) or not isinstance(
                self.n_classes, int) or self.n_classes < 1):
            raise ValueError(f"n_classes must be a positive int or None, got {self.n_classes!r}")
        if not isinstance(self.run_options, dict):
            raise ValueError(f"run_options must be a dict, got {self.run_options!r}")

    def _classes(self, classes: Sequence[int] | None) -> torch.Tensor | None:
        """The allowed class ids ``[K]`` (int64), checked; None for an unconditional spec."""
        if self.n_classes is None:
            if classes is not None:
                raise ValueError("classes were requested from an unconditional generator "
                                 "(n_classes is None)")
            return None
        allowed = torch.arange(self.n_classes) if classes is None else torch.as_tensor(
            list(classes), dtype=torch.int64)
        if allowed.ndim != 1 or allowed.numel() == 0 or bool(
                ((allowed < 0) | (allowed >= self.n_classes)).any()):
            raise ValueError(f"classes must be a non-empty list of ids in [0, {self.n_classes}), "
                             f"got {classes!r}")
        return allowed

    def draw(self, n: int, *, seed: int, classes: Sequence[int] | None = None,
             per_row: bool = False, dtype: torch.dtype = torch.float32) -> Candidates:
        """``n`` candidates of this spec from ``seed``: latents from ``law.sample`` with
        ``torch.Generator().manual_seed(seed)`` and then, for a conditional spec, class labels
        drawn uniformly over ``classes`` (None: all ``n_classes``) from the same generator, so
        the latents do not depend on the conditioning. ``per_row``: row i is drawn alone from
        seed ``seed + i`` (its latent, then its label), so any candidate can be regenerated
        alone and a larger ``n`` extends a smaller draw. Raises ValueError for classes outside
        ``[0, n_classes)`` or requested from an unconditional spec."""
        _check_count(n, "n")
        _check_seed(seed)
        allowed = self._classes(classes)
        if per_row:
            seeds = torch.arange(seed, seed + n)  # [n]
            rows = [self._one_draw(1, int(s), allowed, dtype) for s in seeds.tolist()]
            z = torch.cat([r[0] for r in rows])  # [n, d]
            labels = None if allowed is None else torch.cat([r[1] for r in rows])  # [n]
        else:
            seeds = None
            z, labels = self._one_draw(n, seed, allowed, dtype)
        law = self.law.identity(seed, per_row=per_row)
        if allowed is not None:
            law = {**law, "n_classes": self.n_classes, "classes": allowed.tolist()}
        return Candidates(z=z, labels=labels, seeds=seeds, law=law, n_classes=self.n_classes)

    def _one_draw(self, n: int, seed: int, allowed: torch.Tensor | None,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = torch.Generator().manual_seed(seed)
        z = self.law.sample(n, self.z_dim, rng=g, dtype=dtype)  # [n, d]
        if allowed is None:
            return z, None
        pick = torch.randint(allowed.numel(), (n,), generator=g)  # [n]
        return z, allowed[pick]

    def as_dict(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (law name and parameters, z_dim, n_classes, options)."""
        law = {k: v for k, v in self.law.identity(0).items() if k not in ("seed",)}
        return {"law": law, "z_dim": self.z_dim, "n_classes": self.n_classes,
                "run_options": dict(self.run_options)}


def spec_of(G: Any) -> LatentSpec:
    """The latent spec of generator ``G``: ``G.latent_spec`` when a loader or ``wrap`` attached
    one, else that of a module with an integer ``z_dim``: its own ``latent_law()`` where it
    has one (BigGAN-deep's truncated normal), otherwise the standard Gaussian (``n_classes``
    from a positive ``c_dim``, ``run_options`` from ``options()``). Raises ValueError for a G that
    states neither (wrap it once with ``latent.wrap(fn, z_dim, ...)``)."""
    spec = getattr(G, "latent_spec", None)
    if spec is not None:
        if not isinstance(spec, LatentSpec):
            raise ValueError(f"G.latent_spec must be a latent.LatentSpec, got {type(spec).__name__}")
        return spec
    z_dim = getattr(G, "z_dim", None)
    if isinstance(z_dim, bool) or not isinstance(z_dim, int):
        raise ValueError(f"{type(G).__name__} has no latent spec and no integer z_dim: wrap it "
                         "once with magnet_lab.latent.wrap(fn, z_dim, law=..., n_classes=...)")
    c_dim = getattr(G, "c_dim", 0)
    options = G.options() if callable(getattr(G, "options", None)) else {}
    own_law = getattr(G, "latent_law", None)  # a family's own law (BigGAN-deep: truncated)
    law = own_law() if callable(own_law) else GaussianLaw()
    n_classes = c_dim if isinstance(c_dim, int) and c_dim > 0 else None
    return LatentSpec(law, z_dim, n_classes=n_classes, run_options=dict(options))


class WrappedGenerator(torch.nn.Module):
    """A user's callable ``fn(z [B, d]) -> images`` (``fn(z, c)`` with one-hot labels ``c [B, C]``
    for a conditional one) as a generator module carrying its ``latent_spec`` and ``z_dim``.
    When ``fn`` is an ``nn.Module`` it is a submodule, so its weights are in the fingerprint."""

    def __init__(self, fn: Callable[..., torch.Tensor], spec: LatentSpec,
                 fingerprint: str | None = None) -> None:
        super().__init__()
        self.fn = fn
        self.latent_spec = spec
        self.z_dim = spec.z_dim
        self.user_fingerprint = fingerprint

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """``fn(z)``, or ``fn(z, c)`` when labels are given."""
        return self.fn(z) if c is None else self.fn(z, c)

    def config(self) -> dict[str, Any]:
        """The spec, the callable's qualified name and the user's fingerprint (for a plain
        function, whose computation no tensor records): part of ``models.fingerprint``."""
        name = getattr(self.fn, "__qualname__", type(self.fn).__qualname__)
        return {"fn": name, "fingerprint": self.user_fingerprint,
                "latent_spec": self.latent_spec.as_dict()}


def wrap(fn: Callable[..., torch.Tensor], z_dim: int, *, law: LatentLaw | None = None,
         n_classes: int | None = None, run_options: dict[str, Any] | None = None,
         fingerprint: str | None = None) -> WrappedGenerator:
    """A user's callable as a generator, wrapped once: ``fn(z [B, z_dim]) -> [B, C, H, W]``
    (``fn(z, c)`` for ``n_classes`` classes) with the latent ``law`` (default ``GaussianLaw()``)
    it expects, so ``spec_of``, banks, the CLI and the explorer take its law from it. A wrapped
    ``nn.Module``'s weights are in the wrapper's ``models.fingerprint`` (and so in the bank
    identity); a plain function's computation is in no tensor, so it needs ``fingerprint``, a
    string naming exactly what it computes (change it when the function changes). Raises
    ValueError as ``LatentSpec`` does, for a ``fn`` that is not callable, or for a plain
    function without ``fingerprint``."""
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {type(fn).__name__}")
    if not isinstance(fn, torch.nn.Module) and not (isinstance(fingerprint, str) and fingerprint):
        raise ValueError("a plain function's weights cannot be fingerprinted: pass "
                         "fingerprint='...' naming exactly what it computes (or wrap an nn.Module)")
    spec = LatentSpec(GaussianLaw() if law is None else law, z_dim, n_classes=n_classes,
                      run_options=dict(run_options or {}))
    return WrappedGenerator(fn, spec, fingerprint)
