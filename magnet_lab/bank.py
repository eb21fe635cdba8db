"""The persisted volume bank: log singular values of ``∂G/∂z`` at N latents, built once, reused.

A :class:`VolumeBank` holds ``log_sv`` (``[N, r]`` float64, descending natural-log σ per row,
``-inf`` for σ=0) and optionally the latents, per-latent seeds and class labels, plus a ``meta``
dict. :mod:`magnet_lab.sampling` turns ``log_sv`` into weights for any ρ, k or mixture.

On-disk format ``magnet_lab.bank/1``: one ``.safetensors`` file with tensors

=========== ================================= ==============================================
name        dtype / shape                     meaning
=========== ================================= ==============================================
``log_sv``  float64 ``[N, r]``                descending log σ of the Jacobian (−inf: σ=0)
``latents`` float (as built) ``[N, d]``       the latents z (absent when unknown)
``seeds``   int64 ``[N]``                     per-latent seeds (absent when not seeded)
``labels``  int64 ``[N]``                     class labels (absent for unconditional G)
=========== ================================= ==============================================

and the safetensors ``__metadata__`` header entry ``"magnet_lab"``: a JSON string
``{"format": "magnet_lab.bank/1", "meta": {...}}``. ``meta`` keys written by :func:`build`:
``identity`` (see below), ``generator_id`` (the name or path the generator was loaded from, so
``python -m magnet_lab sample`` can load it again), ``spectra_kwargs`` (every argument, defaults
filled in, speed-only ones included), ``shard``, ``shard_range`` ([start, stop) in the requested
z), ``shard_size``, ``n_total`` and ``provenance`` (package versions, git commit, host, time);
merged banks carry ``n_shards`` and ``shard_sizes``.

**Bank identity.** ``identity`` (:func:`bank_identity`) says exactly what produced the rows:
the generator's fingerprint (``models.fingerprint``: class, configuration and every weight), the
estimator and each spectra option that changes values (``method``, ``k``, ``proj_dim``, the
projection/start ``seed``, ``tol``/``max_iter``/``oversample`` for top-k; options that do not
apply to the method are ``None``), the compute ``dtype`` and device kind, and the latents (their
law and seed when known, N, d, dtype and a SHA-256 of all of them). A build refuses to write
into, resume, or sit beside shards of another identity, and loading refuses to merge them; both
errors name the differing field and both values. :func:`default_path` is the one cache-path
rule (``paths.cache_dir()/banks/<generator>-<identity digest>``).

A directory of ``*.safetensors`` shards is a bank too (shards merged in sorted name order), so
many workers can write shards independently; :func:`build` writes ``shard-00000.safetensors``,
... atomically and skips shards already on disk, so an interrupted build resumes. The authors'
released ``.npz`` banks (arrays ``latents``, ``svds`` = singular values, optional ``labels``)
load too, converted to log σ; they are read with ``allow_pickle=False``, never unpickled.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import config, paths
from . import provenance as _prov
from .validation import check_latents

FORMAT = "magnet_lab.bank/1"
META_KEY = "magnet_lab"
TENSOR_NAMES = ("log_sv", "latents", "seeds", "labels")
DEFAULT_SHARD_SIZE = 1024  # latents per shard file: the CLI, notebooks and build share it
# spectra arguments that change speed/progress output only, not the values
SPEED_ONLY_KWARGS = ("chunk", "block", "progress", "memory")
# spectra arguments that matter only for some methods (None in the identity otherwise)
_METHOD_KWARGS = {"proj_dim": ("projected",), "seed": ("projected", "topk"),
                  "tol": ("topk",), "max_iter": ("topk",), "oversample": ("topk",)}

__all__ = ["DEFAULT_SHARD_SIZE", "FORMAT", "VolumeBank", "bank_identity", "build",
           "default_path", "identity_mismatch", "shard_name", "worker_shards"]


def _normalised(obj: Any) -> Any:
    """``obj`` as it reads back from JSON, so in-memory and loaded meta compare equal."""
    return json.loads(json.dumps(_prov.jsonable(obj), allow_nan=False))


@dataclasses.dataclass
class VolumeBank:
    """Log singular values ``log_sv [N, r]`` (float64, CPU, descending, −inf allowed, no NaN/+inf)
    with optional ``latents [N, d]`` (float), ``seeds [N]`` and ``labels [N]`` (int64, labels
    >= 0) and a JSON-serialisable ``meta`` dict. ``__post_init__`` raises TypeError/ValueError
    naming the field for a wrong type, dtype, device, shape or value."""

    log_sv: torch.Tensor
    latents: torch.Tensor | None = None
    seeds: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        x = self.log_sv
        if not isinstance(x, torch.Tensor) or x.dtype != torch.float64:
            raise TypeError(f"log_sv must be a float64 tensor [N, r], got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"log_sv must have shape [N, r] with N, r >= 1, got {tuple(x.shape)}")
        n = x.shape[0]
        for name in TENSOR_NAMES:
            t = getattr(self, name)
            if t is not None and (not isinstance(t, torch.Tensor) or t.device.type != "cpu"):
                raise TypeError(f"{name} must be a CPU torch.Tensor or None")
        n_nan = int(torch.isnan(x).sum())
        n_pinf = int((x == math.inf).sum())
        if n_nan or n_pinf:
            raise ValueError(f"log_sv has {n_nan} NaN and {n_pinf} +inf entries "
                             "(only finite values and -inf for sigma=0 are allowed)")
        bad_rows = int((x[:, 1:] > x[:, :-1]).any(1).sum())
        if bad_rows:
            raise ValueError(f"log_sv rows must be sorted descending; {bad_rows} rows are not")
        if self.latents is not None:
            if self.latents.ndim != 2 or self.latents.shape[0] != n:
                raise ValueError(f"latents must have shape [{n}, d] to match log_sv, got "
                                 f"{tuple(self.latents.shape)}")
            check_latents(self.latents, name="latents")
        for name in ("seeds", "labels"):
            t = getattr(self, name)
            if t is None:
                continue
            if t.dtype != torch.int64:
                raise TypeError(f"{name} must be an int64 tensor, got {t.dtype}")
            if tuple(t.shape) != (n,):
                raise ValueError(f"{name} must have shape [{n}] to match log_sv, got "
                                 f"{tuple(t.shape)}")
        if self.labels is not None and bool((self.labels < 0).any()):
            raise ValueError(f"labels must be >= 0, got {int((self.labels < 0).sum())} negative")
        if not isinstance(self.meta, dict):
            raise TypeError(f"meta must be a dict, got {type(self.meta).__name__}")

    def __len__(self) -> int:
        return self.log_sv.shape[0]

    @property
    def rank(self) -> int:
        """r, the number of log σ columns."""
        return self.log_sv.shape[1]

    @property
    def z_dim(self) -> int | None:
        """d, the latent dimension (None when latents are not stored)."""
        return None if self.latents is None else self.latents.shape[1]

    def subset(self, idx: torch.Tensor | Sequence[int] | slice) -> VolumeBank:
        """A new bank of the rows ``idx`` (int64 indices, repeats allowed, a bool mask ``[N]`` or
        a slice); tensors are copied, ``meta`` is shallow-copied. Raises IndexError/ValueError
        for out-of-range indices or an empty selection."""
        if not isinstance(idx, slice):
            idx = torch.as_tensor(idx)
            if idx.dtype != torch.bool:
                idx = idx.to(torch.int64)
        pick = {name: (None if getattr(self, name) is None else getattr(self, name)[idx].clone())
                for name in TENSOR_NAMES}
        if pick["log_sv"].ndim != 2 or pick["log_sv"].shape[0] == 0:
            raise ValueError("subset selects no rows (or a single row index without a batch dim)")
        return VolumeBank(meta=dict(self.meta), **pick)

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """Write the bank to one ``.safetensors`` file (format in the module docstring),
        atomically (temporary file + rename). Returns the path. Raises ValueError for a path not
        ending in ``.safetensors`` or a ``meta`` that is not JSON-serialisable."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"bank files end in .safetensors, got {path}")
        from safetensors.torch import save as st_save
        try:
            header = json.dumps({"format": FORMAT, "meta": _prov.jsonable(self.meta)}, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"bank meta is not JSON-serialisable: {err}") from err
        tensors = {name: getattr(self, name).contiguous().clone()
                   for name in TENSOR_NAMES if getattr(self, name) is not None}
        return _prov.write_bytes_atomic(path, st_save(tensors, metadata={META_KEY: header}))

    @classmethod
    def load(cls, path: str | Path) -> VolumeBank:
        """Load a bank from a ``.safetensors`` file, a directory of ``*.safetensors`` shards
        (merged in sorted name order) or an authors' ``.npz`` file (``latents``, ``svds``,
        optional ``labels``; σ converted to log σ, 0 → −inf, rows sorted descending; never
        unpickled). Raises FileNotFoundError for a missing path and ValueError naming the path
        for an unknown extension, a corrupt/truncated file, a wrong format version, missing or
        unexpected arrays, object arrays, negative/NaN singular values."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no bank at {path}")
        if path.is_dir():
            shards = sorted(p for p in path.glob("*.safetensors") if p.is_file())
            if not shards:
                raise FileNotFoundError(f"bank directory {path} contains no *.safetensors shards")
            banks = [cls._load_safetensors(p) for p in shards]
            for p, b in zip(shards[1:], banks[1:]):
                diff = identity_mismatch(banks[0].meta.get("identity"), b.meta.get("identity"))
                if diff:
                    raise ValueError(f"{path}: shard {p.name} was made differently from "
                                     f"{shards[0].name}: {diff}; these rows are not one bank")
            _check_coverage(banks, path)
            return banks[0] if len(banks) == 1 else cls.merge(banks)
        if path.suffix == ".safetensors":
            return cls._load_safetensors(path)
        if path.suffix == ".npz":
            return cls._load_npz(path)
        raise ValueError(f"unknown bank extension {path.suffix!r} for {path} (expected a "
                         ".safetensors file, a directory of shards, or an authors' .npz)")

    @classmethod
    def _load_safetensors(cls, path: Path) -> VolumeBank:
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
                tensors = {name: fh.get_tensor(name) for name in fh.keys()}
        except Exception as err:  # the library raises SafetensorError, OSError, ...
            raise ValueError(f"{path} is not a readable safetensors file (corrupt or "
                             f"truncated?): {err}") from err
        if META_KEY not in header:
            raise ValueError(f"{path} is a safetensors file but not a magnet_lab bank (no "
                             f"{META_KEY!r} entry in its metadata header)")
        try:
            info = json.loads(header[META_KEY])
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: bank metadata is not valid JSON: {err}") from err
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            found = info.get("format") if isinstance(info, dict) else info
            raise ValueError(f"{path}: unsupported bank format {found!r} (this version reads "
                             f"{FORMAT!r})")
        unknown = sorted(set(tensors) - set(TENSOR_NAMES))
        if unknown or "log_sv" not in tensors:
            raise ValueError(f"{path}: bank tensors must be log_sv (required) and optionally "
                             f"latents, seeds, labels; found {sorted(tensors)}")
        try:
            return cls(meta=dict(info.get("meta") or {}), **tensors)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: invalid bank contents: {err}") from err

    @classmethod
    def _load_npz(cls, path: Path) -> VolumeBank:
        try:
            with np.load(path, allow_pickle=False) as data:
                present = list(data.files)
                missing = [k for k in ("latents", "svds") if k not in present]
                if missing:
                    raise KeyError(missing)
                arrays = {k: data[k] for k in ("latents", "svds", "labels") if k in present}
        except KeyError as err:
            raise ValueError(f"{path}: authors' npz must contain arrays 'latents' and 'svds'; "
                             f"missing {err.args[0]}, present: {present}") from None
        except ValueError as err:  # object arrays (would need pickle) and non-npz pickles
            raise ValueError(f"{path}: cannot read without unpickling (object arrays are "
                             f"refused, allow_pickle=False): {err}") from err
        except (OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path} is not a readable .npz file (corrupt?): {err}") from err
        svds, latents = arrays["svds"], arrays["latents"]
        if svds.ndim < 2 or not np.issubdtype(svds.dtype, np.floating):
            raise ValueError(f"{path}: 'svds' must be a float array [..., r], got {svds.dtype} "
                             f"{svds.shape}")
        if latents.ndim < 2 or not np.issubdtype(latents.dtype, np.floating):
            raise ValueError(f"{path}: 'latents' must be a float array [..., d], got "
                             f"{latents.dtype} {latents.shape}")
        # The released files may keep their build's batch axes ([shards, batch, r]); the
        # authors' own loader flattens every leading axis, and so do we.
        svds = svds.reshape(-1, svds.shape[-1])  # [N, r]
        latents = latents.reshape(-1, latents.shape[-1])  # [N, d]
        if "labels" in arrays:
            arrays["labels"] = arrays["labels"].reshape(-1)
        if svds.shape[0] != latents.shape[0]:
            raise ValueError(f"{path}: 'svds' has {svds.shape[0]} rows but 'latents' has "
                             f"{latents.shape[0]}")
        # All-zero rows are slots the authors' build never filled; their loader drops them.
        unfilled = ~np.any(svds != 0, axis=1)
        n_unfilled = int(unfilled.sum())
        if n_unfilled:
            warnings.warn(f"{path}: dropping {n_unfilled} all-zero rows of 'svds' (unfilled "
                          f"slots, as the authors' loader does)", stacklevel=3)
            svds, latents = svds[~unfilled], latents[~unfilled]
            if "labels" in arrays:
                arrays["labels"] = arrays["labels"][~unfilled]
            if svds.shape[0] == 0:
                raise ValueError(f"{path}: every row of 'svds' is zero; nothing to load")
        sv = torch.from_numpy(np.array(svds, dtype=np.float64))  # [N, r]
        n_nan, n_inf, n_neg = (int(torch.isnan(sv).sum()), int(torch.isinf(sv).sum()),
                               int((sv < 0).sum()))
        if n_nan or n_inf or n_neg:
            raise ValueError(f"{path}: 'svds' must be finite singular values >= 0; found "
                             f"{n_nan} NaN, {n_inf} inf, {n_neg} negative")
        log_sv = torch.log(sv).sort(dim=1, descending=True).values  # 0 -> -inf, sorted last
        labels = None
        if "labels" in arrays:
            lab = arrays["labels"]
            if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
                raise ValueError(f"{path}: 'labels' must be an integer array [N], got "
                                 f"{lab.dtype} {lab.shape}")
            labels = torch.from_numpy(lab.astype(np.int64))
        meta = {"generator_id": None, "method": "authors_npz", "proj_dim": None, "top_k": None,
                "source": str(path), "npz_arrays": present, "npz_rows_dropped": n_unfilled,
                "provenance": _prov.provenance()}
        try:
            latents = np.array(latents, dtype=latents.dtype.newbyteorder("="))  # native byte order
            return cls(log_sv=log_sv, latents=torch.from_numpy(latents),
                       labels=labels, meta=meta)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: invalid bank contents: {err}") from err

    # ------------------------------------------------------------------ merging

    @classmethod
    def merge(cls, banks: Sequence[VolumeBank]) -> VolumeBank:
        """Concatenate banks (shards) in order into one. They must agree on r, on which optional
        tensors they carry, on d and latent dtype, and on ``meta["identity"]`` (the bank identity,
        field by field; banks without one must all lack it); seeds, when present, must be unique
        over all banks (coverage check). The result's meta is the first bank's plus ``n_shards``
        and ``shard_sizes``. Raises ValueError naming the differing field (with both values) or
        the duplicate seeds."""
        banks = list(banks)
        if not banks or not all(isinstance(b, VolumeBank) for b in banks):
            raise ValueError("merge needs a non-empty sequence of VolumeBank")
        first = banks[0]
        for i, b in enumerate(banks[1:], 1):
            if b.rank != first.rank:
                raise ValueError(f"cannot merge: bank {i} has r={b.rank} log-sigma columns, "
                                 f"bank 0 has r={first.rank}")
            for name in ("latents", "seeds", "labels"):
                if (getattr(b, name) is None) != (getattr(first, name) is None):
                    raise ValueError(f"cannot merge: bank {i} and bank 0 disagree on whether "
                                     f"{name} are stored")
            if first.latents is not None and (b.z_dim != first.z_dim
                                              or b.latents.dtype != first.latents.dtype):
                raise ValueError(f"cannot merge: bank {i} latents are {b.latents.dtype} "
                                 f"[., {b.z_dim}], bank 0 {first.latents.dtype} [., {first.z_dim}]")
            diff = identity_mismatch(first.meta.get("identity"), b.meta.get("identity"))
            if diff:
                raise ValueError(f"cannot merge: bank {i} was made differently from bank 0: "
                                 f"{diff}")
        cat = {name: (None if getattr(first, name) is None
                      else torch.cat([getattr(b, name) for b in banks], 0))
               for name in TENSOR_NAMES}
        if cat["seeds"] is not None:
            values, counts = torch.unique(cat["seeds"], return_counts=True)
            dup = values[counts > 1]
            if dup.numel():
                raise ValueError(f"cannot merge: {dup.numel()} seeds occur more than once across "
                                 f"the banks (overlapping shards?), e.g. {dup[:10].tolist()}")
        meta = {k: v for k, v in first.meta.items()
                if k not in ("shard", "shard_range", "shards_computed")}
        meta["n_shards"] = sum(int(b.meta.get("n_shards", 1)) for b in banks)
        meta["shard_sizes"] = [int(s) for b in banks
                               for s in b.meta.get("shard_sizes", [len(b)])]
        return cls(meta=meta, **cat)


# ---------------------------------------------------------------------- build

def shard_name(index: int) -> str:
    """File name of shard ``index`` in a bank directory: ``shard-00000.safetensors``."""
    return f"shard-{index:05d}.safetensors"


def worker_shards(n: int, shard_size: int, worker: tuple[int, int] = (0, 1)) -> list[int]:
    """The shard indices that ``worker=(i, count)`` computes in a build of ``n`` latents cut into
    shards of ``shard_size`` rows: i, i + count, ... below ``ceil(n / shard_size)`` (empty when
    i is past the last shard). The boundaries depend on ``n`` and ``shard_size`` only, never on
    ``count``, so any number of workers writes the same shards. Raises ValueError for ``n`` or
    ``shard_size`` < 1 or a worker that is not (index, count) with 0 <= index < count."""
    for name, v in (("n", n), ("shard_size", shard_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    w_index, w_count = worker
    if not (isinstance(w_count, int) and isinstance(w_index, int) and 0 <= w_index < w_count):
        raise ValueError(f"worker must be (index, count) with 0 <= index < count, got {worker}")
    return list(range(w_index, math.ceil(n / shard_size), w_count))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _spectra_arguments(spectra_kwargs: dict) -> dict:
    """Every ``spectra.log_singular_values`` argument a bank build passes, defaults filled in
    (without ``G``, ``z`` and ``progress``, which the bank sets). Raises TypeError for unknown
    names or a reserved one."""
    from . import spectra  # lazy: building needs the generator machinery, loading does not

    for reserved in ("G", "z", "progress"):
        if reserved in spectra_kwargs:
            raise TypeError(f"the bank sets {reserved!r} itself; do not pass it")
    bound = inspect.signature(spectra.log_singular_values).bind_partial(**spectra_kwargs)
    bound.apply_defaults()  # TypeError above for unknown argument names
    return {k: v for k, v in bound.arguments.items() if k not in ("G", "z", "progress")}


def latents_digest(z: torch.Tensor) -> str:
    """SHA-256 (hex) of latents ``z`` ``[N, d]``: dtype, shape and every value's bytes."""
    z = z.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{z.dtype}|{tuple(z.shape)}".encode())
    h.update(z.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def bank_identity(G: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *,
                  latent_law: dict | None = None, fingerprint: str | None = None,
                  **spectra_kwargs: Any) -> dict:
    """The identity of the bank that ``build(G, z, ..., **spectra_kwargs)`` writes: a JSON dict
    of ``generator_fingerprint`` (``models.fingerprint(G)``; for a G that is not an
    ``nn.Module`` pass ``fingerprint``), ``method``, ``k``, ``proj_dim``, ``seed``, ``tol``,
    ``max_iter``, ``oversample`` (``None`` where the method ignores them), for ``topk`` its
    ``algorithm`` (``"block-lanczos-8"``), ``precision``, ``dtype`` (compute
    dtype), ``device`` (kind: ``"cpu"``, ``"cuda"``, ...) and ``latents`` = ``latent_law``
    (e.g. ``{"law": "gaussian", "seed": 0}``; default ``{"law": "given"}``) plus ``n``,
    ``z_dim``, ``dtype`` and ``sha256`` of z ``[N, d]``. Speed-only options (``chunk``,
    ``block``, ``progress``, ``memory``) are not part of it. Raises TypeError for unknown spectra arguments
    and ValueError for a non-Module G without ``fingerprint`` or a bad ``latent_law``."""
    from .models import fingerprint as model_fingerprint

    check_latents(z)
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
    opts = {k: v for k, v in _spectra_arguments(spectra_kwargs).items()
            if k not in SPEED_ONLY_KWARGS}
    method = opts.pop("method")
    for key, methods in _METHOD_KWARGS.items():
        if method not in methods:
            opts[key] = None
    dtype = opts.pop("dtype") or z.dtype
    if method == "topk":  # the iteration, not only its arguments, decides the numbers
        from .spectra import KRYLOV_BLOCK
        opts["algorithm"] = f"block-lanczos-{KRYLOV_BLOCK}"
    identity = {"generator_fingerprint": fingerprint, "method": method, **opts,
                "dtype": str(dtype).replace("torch.", ""), "device": z.device.type,
                "latents": {**law, "n": int(z.shape[0]), "z_dim": int(z.shape[1]),
                            "dtype": str(z.dtype).replace("torch.", ""),
                            "sha256": latents_digest(z)}}
    return _normalised(identity)


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
    return root / f"{slug}-{_digest(identity)[:16]}"


def _read_meta(path: Path) -> dict:
    """A shard's ``meta`` from its safetensors header only (no tensors read)."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as fh:
            info = json.loads((fh.metadata() or {})[META_KEY])
        return dict(info["meta"])
    except Exception as err:  # corrupt, truncated, foreign
        raise ValueError(f"{path} is not a readable bank shard (corrupt or truncated? delete it "
                         f"to recompute it): {err}") from err


def _remove_orphans(out_dir: Path, owned: set[str]) -> list[str]:
    """Delete temporary files left by a killed write of a shard this call owns; warn about
    (and leave) other workers' temporary files, which may be in flight."""
    removed, foreign = [], []
    for tmp in out_dir.glob(".shard-*.tmp"):
        target = tmp.name[1:].split(".safetensors.")[0] + ".safetensors"
        if target in owned:
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
        else:
            foreign.append(tmp.name)
    if removed or foreign:
        warnings.warn(f"{out_dir}: removed {len(removed)} temporary file(s) of interrupted "
                      f"writes {removed[:3]}; left {len(foreign)} of other workers' shards "
                      f"{foreign[:3]}", stacklevel=3)
    return removed


def build(G: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
          path: str | Path | None = None, *, generator_id: str,
          shard_size: int = DEFAULT_SHARD_SIZE, seeds: torch.Tensor | None = None,
          labels: torch.Tensor | None = None, worker: tuple[int, int] | None = None,
          latent_law: dict | None = None, fingerprint: str | None = None,
          generator_options: dict | None = None, cache_root: str | Path | None = None,
          progress: bool = False, **spectra_kwargs: Any) -> VolumeBank:
    """Build (or resume) a sharded bank in directory ``path`` (None: ``default_path(identity,
    generator_id, cache_root)``): z
    ``[N, d]`` is split into shards of ``shard_size`` rows; each shard missing on disk gets
    ``spectra.log_singular_values(G, z_shard, progress=False, **spectra_kwargs)`` and is saved
    atomically (then the folder is fsynced) as ``path/shard-00000.safetensors``, ...; shards
    already on disk are verified and skipped. Every shard records ``bank_identity(G, z,
    latent_law=..., fingerprint=..., **spectra_kwargs)``: a build into a folder holding shards
    of another identity (other weights, seeds, dtype, options, ...) is refused, naming the
    field and both values. ``generator_id`` is how the generator is loaded again (a built-in
    name or a path) and ``generator_options`` the ``load_generator`` run options it was loaded
    with (e.g. StyleGAN2's ``psi``), both recorded in the meta. ``seeds``/``labels`` are optional int64 ``[N]``. Temporary files of this
    call's shards left by a killed write are removed. Scale-out: ``worker=(i, n)`` makes this
    call own shards i, i+n, ... only (``worker_shards``; run n processes on the same z and path,
    then ``VolumeBank.load(path)``); it returns the merge of its own shards, whose meta lists the
    recomputed ones under ``shards_computed``. ``progress`` shows a bar over this call's latents,
    advanced shard by shard (``MAGNET_LAB_PROGRESS=0`` silences it). Raises TypeError for
    unknown spectra arguments,
    ValueError for bad inputs, a worker that owns no shard, a mismatching or foreign shard in
    ``path``."""
    from . import spectra  # lazy: building needs the generator machinery, loading does not

    check_latents(z)
    n = z.shape[0]
    if not isinstance(generator_id, str) or not generator_id:
        raise ValueError("generator_id must be a non-empty string naming the generator")
    for name, t in (("seeds", seeds), ("labels", labels)):
        if t is not None and (not isinstance(t, torch.Tensor) or t.dtype != torch.int64
                              or tuple(t.shape) != (n,)):
            raise ValueError(f"{name} must be an int64 tensor of shape [{n}] (one per latent)")
    mine = worker_shards(n, shard_size, (0, 1) if worker is None else worker)
    if not mine:
        raise ValueError(f"worker {worker[0]}/{worker[1]} owns no shard: {n} latents make "
                         f"{math.ceil(n / shard_size)} shard(s) of {shard_size}; start at most "
                         "that many workers (or skip this one)")
    identity = bank_identity(G, z, latent_law=latent_law, fingerprint=fingerprint,
                             **spectra_kwargs)
    recorded = _spectra_arguments(spectra_kwargs)
    out_dir = Path(path) if path is not None else default_path(identity, generator_id, cache_root)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"build writes a directory of shards; {out_dir} is a file")
    out_dir.mkdir(parents=True, exist_ok=True)
    n_shards = math.ceil(n / shard_size)
    names = [shard_name(i) for i in range(n_shards)]
    present = sorted(p for p in out_dir.glob("*.safetensors") if p.is_file())
    foreign = [p.name for p in present if p.name not in names]
    if foreign:
        raise ValueError(f"{out_dir} holds shard files that are not part of this build "
                         f"(N={n}, shard_size={shard_size}): {foreign[:5]}; use a new directory")
    for p in present:  # one identity per folder, whichever worker wrote the shard
        diff = identity_mismatch(_read_meta(p).get("identity"), identity)
        if diff:
            raise ValueError(f"{out_dir} already holds {p.name}, made differently from this "
                             f"build: {diff} (existing vs requested); build into a new "
                             "directory or delete the old shards")
    _remove_orphans(out_dir, {names[i] for i in mine})

    from tqdm.auto import tqdm

    z_cpu = z.detach().to("cpu")
    prov = None
    shards: list[VolumeBank] = []
    computed: list[int] = []
    ranges = [(i * shard_size, min(n, (i + 1) * shard_size)) for i in mine]
    bar = tqdm(total=sum(hi - lo for lo, hi in ranges), desc=f"bank {generator_id}",
               unit="latent",  # the env switch silences bars in reports, as in spectra
               disable=not config.progress_enabled(bool(progress)))
    for i, (lo, hi) in zip(mine, ranges):
        want = {"latents": z_cpu[lo:hi].clone(),
                "seeds": None if seeds is None else seeds[lo:hi].cpu().clone(),
                "labels": None if labels is None else labels[lo:hi].cpu().clone()}
        file = out_dir / names[i]
        if file.exists():
            bank = VolumeBank.load(file)
            _check_resumed_shard(bank, want, file)
        else:
            log_sv = spectra.log_singular_values(G, z[lo:hi], progress=False, **spectra_kwargs)
            log_sv = log_sv.detach().to("cpu", torch.float64)  # [B, r]
            if log_sv.ndim != 2 or log_sv.shape[0] != hi - lo:
                raise ValueError(f"spectra returned shape {tuple(log_sv.shape)} for a shard of "
                                 f"{hi - lo} latents")
            prov = prov or _prov.provenance()
            meta = {"identity": identity, "generator_id": generator_id,
                    "generator_options": _normalised(generator_options or {}),
                    "spectra_kwargs": _normalised(recorded), "shard": i, "shard_range": [lo, hi],
                    "shard_size": shard_size, "n_total": n, "provenance": prov}
            bank = VolumeBank(log_sv=log_sv, meta=meta, **want)
            bank.save(file)
            computed.append(i)
        shards.append(bank)
        bar.update(hi - lo)  # a shard found on disk is only verified: the bar jumps
    bar.close()
    merged = VolumeBank.merge(shards)
    merged.meta["shards_computed"] = computed
    merged.meta["path"] = str(out_dir)
    return merged


def _check_coverage(banks: Sequence[VolumeBank], path: Path) -> None:
    """Raise ValueError if shards written by ``build`` leave rows of their build uncovered.

    Shards record ``shard_range`` = [start, stop) and ``n_total``; together they must tile
    [0, n_total) exactly (a worker of a scale-out build may not have finished yet). Shards without
    these fields (hand-made banks) are not checked.
    """
    ranges = [b.meta.get("shard_range") for b in banks]
    totals = {b.meta.get("n_total") for b in banks}
    if any(r is None for r in ranges) or None in totals:
        return
    if len(totals) != 1:
        raise ValueError(f"{path}: shards come from builds of different sizes {sorted(totals)}")
    covered, total = 0, totals.pop()
    for start, stop in sorted(ranges):
        if start != covered:
            what = "overlap" if start < covered else f"missing rows [{covered}, {start})"
            raise ValueError(f"{path}: shards do not tile the build of {total} latents: {what} "
                             "(an unfinished worker? rerun its build to resume)")
        covered = stop
    if covered != total:
        raise ValueError(f"{path}: shards cover {covered} of {total} latents: missing rows "
                         f"[{covered}, {total}) (an unfinished worker? rerun its build)")


def _check_resumed_shard(bank: VolumeBank, want: dict, file: Path) -> None:
    """Raise ValueError if an existing shard does not hold the rows this build would write."""
    hint = "delete it or build into a new directory"
    for name, expected in want.items():
        have = getattr(bank, name)
        if (have is None) != (expected is None):
            raise ValueError(f"existing shard {file} {'lacks' if have is None else 'has'} "
                             f"{name}, unlike this build; {hint}")
        if expected is not None and (have.dtype != expected.dtype or have.shape != expected.shape
                                     or not torch.equal(have, expected)):
            raise ValueError(f"existing shard {file} was built for different {name} than "
                             f"requested now (shape {tuple(have.shape)} {have.dtype} vs "
                             f"{tuple(expected.shape)} {expected.dtype}); {hint}")
