"""The ``VolumeBank`` type: log singular values of ``∂G/∂z`` at N latents with their latents,
seeds and labels and a meta dict; saved, loaded (one file, a folder of shards, an authors'
``.npz``) and merged."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

import torch

from ..validation import check_latents
from .formats import TENSOR_NAMES, read_authors_npz, read_safetensors, write_safetensors
from .identity import identity_mismatch


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

    def tensors(self) -> dict[str, torch.Tensor]:
        """The bank's tensors by name (``TENSOR_NAMES``), absent ones left out."""
        return {name: getattr(self, name) for name in TENSOR_NAMES
                if getattr(self, name) is not None}

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

    def save(self, path: str | Path) -> Path:
        """Write the bank to one ``.safetensors`` file (``bank.formats``: format
        ``magnet_lab.bank/1``), atomically (temporary file + rename). Returns the path. Raises
        ValueError for a path not ending in ``.safetensors`` or a ``meta`` that is not
        JSON-serialisable."""
        return write_safetensors(Path(path), self.tensors(), self.meta)

    @classmethod
    def load(cls, path: str | Path) -> VolumeBank:
        """Load a bank from a ``.safetensors`` file, a directory of ``*.safetensors`` shards
        (merged in sorted name order; identities and coverage checked) or an authors' ``.npz``
        file (never unpickled; ``bank.formats``). Raises FileNotFoundError for a missing path
        and ValueError naming the path for an unknown extension, a corrupt/truncated file, a
        wrong format version, missing or unexpected arrays, object arrays, negative/NaN
        singular values, or shards of different identities."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no bank at {path}")
        if path.is_dir():
            shards = sorted(p for p in path.glob("*.safetensors") if p.is_file())
            if not shards:
                raise FileNotFoundError(f"bank directory {path} contains no *.safetensors shards")
            banks = [cls._read(p, read_safetensors) for p in shards]
            for p, b in zip(shards[1:], banks[1:]):
                diff = identity_mismatch(banks[0].meta.get("identity"), b.meta.get("identity"))
                if diff:
                    raise ValueError(f"{path}: shard {p.name} was made differently from "
                                     f"{shards[0].name}: {diff}; these rows are not one bank")
            check_coverage(banks, path)
            return banks[0] if len(banks) == 1 else cls.merge(banks)
        if path.suffix == ".safetensors":
            return cls._read(path, read_safetensors)
        if path.suffix == ".npz":
            return cls._read(path, read_authors_npz)
        raise ValueError(f"unknown bank extension {path.suffix!r} for {path} (expected a "
                         ".safetensors file, a directory of shards, or an authors' .npz)")

    @classmethod
    def _read(cls, path: Path, reader) -> VolumeBank:
        tensors, meta = reader(path)
        try:
            return cls(meta=meta, **tensors)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: invalid bank contents: {err}") from err

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


def check_coverage(banks: Sequence[VolumeBank], path: Path) -> None:
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
