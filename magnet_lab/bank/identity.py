"""A bank's identity: exactly what produced its rows, the one cache-path rule built from it, and
the comparison that names the first differing field.

``bank_identity`` records the generator's fingerprint (``models.fingerprint``: class,
configuration and every weight), the spectra options that change values
(``SpectraOptions.identity``: method, k, the projection/start seed, topk's stopping rule,
precision, compute dtype), the device kind, the latents (their law and seed when known, N, d,
dtype and a SHA-256 of all of them) and, for a class-conditional generator only, the number
of classes and a SHA-256 of the labels. A build refuses to write into, resume, or sit beside
shards of another identity, and loading refuses to merge them; both errors name the differing
field and both values.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable

import torch

from .. import paths, provenance
from ..spectra import SpectraOptions
from ..validation import check_int, check_latents


def normalised(obj: Any) -> Any:
    """``obj`` as it reads back from JSON, so in-memory and loaded meta compare equal."""
    return json.loads(json.dumps(provenance.jsonable(obj), allow_nan=False))


def digest(obj: Any) -> str:
    """SHA-256 (hex) of a JSON-serialisable ``obj`` with sorted keys (an identity's digest)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def latents_digest(z: torch.Tensor) -> str:
    """SHA-256 (hex) of latents ``z`` ``[N, d]``: dtype, shape and every value's bytes."""
    z = z.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{z.dtype}|{tuple(z.shape)}".encode())
    h.update(z.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def bank_identity(G: Callable[..., torch.Tensor], z: torch.Tensor,
                  options: SpectraOptions | None = None, *, latent_law: dict | None = None,
                  fingerprint: str | None = None, n_classes: int | None = None,
                  labels: torch.Tensor | None = None) -> dict:
    """The identity of the bank that ``build(G, z, options=options, ...)`` writes: a JSON dict
    of ``generator_fingerprint`` (``models.fingerprint(G)``; for a G that is not an
    ``nn.Module`` pass ``fingerprint``), the fields of ``options.identity(z.dtype)``
    (``SpectraOptions``, None: exact), ``device`` (kind: ``"cpu"``, ``"cuda"``, ...) and
    ``latents`` = ``latent_law`` (e.g. ``{"law": "gaussian", "seed": 0}``; default
    ``{"law": "given"}``) plus ``n``, ``z_dim``, ``dtype`` and ``sha256`` of z ``[N, d]``; with
    ``n_classes`` (a class-conditional G) also ``n_classes`` and ``labels_sha256`` of the int64
    ``labels [N]`` (required then). Speed options never enter it. Raises TypeError for options
    that are not a ``SpectraOptions`` and ValueError for a non-Module G without
    ``fingerprint``, a bad ``latent_law`` or labels that do not fit ``n_classes``."""
    from ..models import fingerprint as model_fingerprint

    check_latents(z)
    options = SpectraOptions() if options is None else options
    if not isinstance(options, SpectraOptions):
        raise TypeError(f"options must be a SpectraOptions, got {type(options).__name__}")
    if fingerprint is None:
        if not isinstance(G, torch.nn.Module):
            raise ValueError("G is not an nn.Module, so its weights cannot be fingerprinted: pass "
                             "fingerprint='...' naming exactly what G computes (e.g. "
                             "models.fingerprint(model) plus what your wrapper changes)")
        fingerprint = model_fingerprint(G)
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ValueError(f"fingerprint must be a non-empty string, got {fingerprint!r}")
    law = {"law": "given"} if latent_law is None else dict(latent_law)
    if not isinstance(law.get("law"), str):
        raise ValueError(f"latent_law must be a dict with a string 'law', got {latent_law!r}")
    identity = {"generator_fingerprint": fingerprint, **options.identity(z.dtype),
                "device": z.device.type,
                "latents": {**law, "n": int(z.shape[0]), "z_dim": int(z.shape[1]),
                            "dtype": str(z.dtype).replace("torch.", ""),
                            "sha256": latents_digest(z)}}
    if n_classes is not None:
        check_labels(labels, n_classes, int(z.shape[0]))
        identity["n_classes"] = int(n_classes)
        identity["labels_sha256"] = latents_digest(labels.reshape(-1, 1))
    return normalised(identity)


def check_labels(labels: Any, n_classes: Any, n: int) -> torch.Tensor:
    """Class labels of a conditional bank: int64 ``[n]`` in [0, n_classes). Returns them;
    raises TypeError/ValueError naming what is wrong (n_classes < 1 included)."""
    n_classes = check_int("n_classes", n_classes, low=1)
    if labels is None:
        raise ValueError(f"n_classes={n_classes} (a class-conditional generator) needs labels, "
                         f"an int64 tensor [{n}] of each latent's class")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 \
            or tuple(labels.shape) != (n,):
        raise ValueError(f"labels must be an int64 tensor of shape [{n}] (one per latent)")
    bad = int(((labels < 0) | (labels >= n_classes)).sum())
    if bad:
        raise ValueError(f"labels must lie in [0, n_classes={n_classes}); {bad} do not")
    return labels


def identity_mismatch(a: dict | None, b: dict | None) -> str | None:
    """None when two bank identities are equal, else a sentence naming the first differing
    field (dotted for nested ones, e.g. ``latents.seed``) with both values."""
    if a == b:
        return None
    if a is None or b is None:
        return f"one has a bank identity and the other has none ({a!r} vs {b!r})"
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(x, dict) and isinstance(y, dict):
            inner = identity_mismatch(x, y)
            if inner:
                return f"{key}.{inner}"
        elif x != y:
            return f"{key} differs: {x!r} vs {y!r}"
    return None


def default_path(identity: dict, generator_id: str, root: str | Path | None = None) -> Path:
    """The one cache-path rule: ``root/<generator_id slug>-<16 hex digits of the identity>``
    (``root`` None: ``paths.cache_dir()/banks``), so two builds share a folder exactly when their
    identities are equal."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(generator_id)).stem or "generator")[:48]
    root = Path(root) if root is not None else paths.cache_dir() / "banks"
    return root / f"{slug}-{digest(identity)[:16]}"
